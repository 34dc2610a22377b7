//! Byte sizes written the way PostgreSQL writes them ("512kB", "1GB").
//!
//! Kept apart from the config conversion so the grammar is tested on its own.

/// Parses a size such as `"1GB"`, `"256MB"`, `"512kB"`, `"4096"` or `"0"`
/// into bytes.
///
/// Units are powers of 1024 as in PostgreSQL (`kB`, `MB`, `GB`, `TB`).
/// Unlike PostgreSQL the unit is matched case-insensitively and its `B` may be
/// left out (`"1G"`), since operators type both; a bare number or a `B` suffix
/// means bytes. The error text says what was wrong, for the caller to prefix
/// with the key.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "\"{text}\" is not a size; expected a whole number with an optional unit kB, MB, GB or TB"
        ));
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("\"{text}\" is too large a size"))?;
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        "t" | "tb" => 1 << 40,
        other => {
            return Err(format!(
                "\"{text}\" has an unknown unit \"{other}\"; expected kB, MB, GB or TB"
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("\"{text}\" is too large a size"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn units_are_powers_of_1024() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10B"), Ok(10));
        assert_eq!(parse_size("512kB"), Ok(512 * 1024));
        assert_eq!(parse_size("256MB"), Ok(256 * 1024 * 1024));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("2TB"), Ok(2 << 40));
    }

    #[test]
    fn unit_case_and_missing_b_are_tolerated() {
        assert_eq!(parse_size("1gb"), Ok(1 << 30));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("3 kb"), Ok(3 * 1024));
        assert_eq!(parse_size(" 1Mb "), Ok(1 << 20));
    }

    #[test]
    fn garbage_is_rejected_with_reason() {
        assert!(parse_size("").unwrap_err().contains("not a size"));
        assert!(parse_size("GB").unwrap_err().contains("not a size"));
        assert!(parse_size("-1GB").unwrap_err().contains("not a size"));
        assert!(parse_size("1.5GB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("1PB")
            .unwrap_err()
            .contains("unknown unit \"pb\""));
        assert!(parse_size("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("17000000TB").unwrap_err().contains("too large"));
    }
}
