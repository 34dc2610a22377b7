//! Readable units for everything a human reads (`show`, the progress
//! display, the demo): sizes, durations, counts and rates. `--json` and the
//! metrics keep raw numbers; these are for eyes only.

/// A byte count as PostgreSQL's `pg_size_pretty` spells it (powers of
/// 1024, one decimal from kB up): `512 B`, `3.5 MB`, `1.2 GB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A rate in bytes per second: `bytes` with `/s`.
pub fn byte_rate(per_second: f64) -> String {
    format!("{}/s", bytes(non_negative(per_second).round() as u64))
}

/// A duration in seconds, as precise as it is useful: `0.3 s`, `42 s`,
/// `3m05s`, `2h07m`, `3d04h`.
pub fn duration(seconds: f64) -> String {
    let seconds = non_negative(seconds);
    if seconds < 10.0 {
        return format!("{seconds:.1} s");
    }
    let whole = seconds.round() as u64;
    match whole {
        0..=59 => format!("{whole} s"),
        60..=3_599 => format!("{}m{:02}s", whole / 60, whole % 60),
        3_600..=86_399 => format!("{}h{:02}m", whole / 3_600, whole % 3_600 / 60),
        _ => format!("{}d{:02}h", whole / 86_400, whole % 86_400 / 3_600),
    }
}

/// A count with thousands separators: `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count per second, short: `850/s`, `12.3k/s`, `4.1M/s`.
pub fn rate(per_second: f64) -> String {
    let r = non_negative(per_second);
    if r < 1_000.0 {
        format!("{r:.0}/s")
    } else if r < 1_000_000.0 {
        format!("{:.1}k/s", r / 1_000.0)
    } else {
        format!("{:.1}M/s", r / 1_000_000.0)
    }
}

/// `text` cut to at most `max` characters, ending in `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `text` broken at spaces into lines of at most `width` characters (a
/// longer word is cut); control characters
/// become spaces so a server's multi-line error stays readable.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut lines = Vec::new();
    let mut line = String::new();
    let width = width.max(1);
    let words = clean.split_whitespace().flat_map(|word| {
        // A word wider than a line (a long identifier, a path) is cut into
        // line-wide pieces rather than left to overflow.
        let chars: Vec<char> = word.chars().collect();
        chars
            .chunks(width)
            .map(|piece| piece.iter().collect::<String>())
            .collect::<Vec<_>>()
    });
    for word in words {
        let word = word.as_str();
        let needed = line.chars().count() + usize::from(!line.is_empty()) + word.chars().count();
        if !line.is_empty() && needed > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// NaN and negative values (clock steps, counters reset by a restart) read
/// as 0 rather than as nonsense.
fn non_negative(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_follow_pg_size_pretty_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 kB");
        assert_eq!(bytes(3 * 1024 * 1024 + 512 * 1024), "3.5 MB");
        assert_eq!(bytes(90_954_832), "86.7 MB");
        assert_eq!(bytes(223_404_032), "213.1 MB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GB");
        assert_eq!(bytes(u64::MAX), "16384.0 PB");
        assert_eq!(byte_rate(12.5 * 1024.0 * 1024.0), "12.5 MB/s");
        assert_eq!(byte_rate(f64::NAN), "0 B/s");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(0.0), "0.0 s");
        assert_eq!(duration(0.25), "0.2 s");
        assert_eq!(duration(9.94), "9.9 s");
        assert_eq!(duration(42.4), "42 s");
        assert_eq!(duration(185.0), "3m05s");
        assert_eq!(duration(7_620.0), "2h07m");
        assert_eq!(duration(3.0 * 86_400.0 + 4.0 * 3_600.0), "3d04h");
        assert_eq!(duration(-3.0), "0.0 s");
        assert_eq!(duration(f64::INFINITY), "0.0 s");
    }

    #[test]
    fn counts_and_rates() {
        assert_eq!(count(0), "0");
        assert_eq!(count(221), "221");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_000_000), "1,000,000");
        assert_eq!(count(12_345_678_901), "12,345,678,901");
        assert_eq!(rate(850.4), "850/s");
        assert_eq!(rate(12_345.0), "12.3k/s");
        assert_eq!(rate(4_100_000.0), "4.1M/s");
        assert_eq!(rate(-1.0), "0/s");
    }

    #[test]
    fn truncate_and_wrap() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("0123456789abc", 10), "012345678…");
        assert_eq!(
            wrap("COPY public.t failed:\nno space left on device", 20),
            ["COPY public.t", "failed: no space", "left on device"]
        );
        assert_eq!(wrap("", 10), [""]);
        assert_eq!(
            wrap("averyverylongword x", 5),
            ["avery", "veryl", "ongwo", "rd x"]
        );
    }
}
