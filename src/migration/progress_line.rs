//! Copy and stream progress for the operator, in one of two forms: on a
//! terminal a live line per database (its own rows/s, MB/s, lag, changes/s)
//! redrawn in place; elsewhere a plain log line per copying database every
//! 10 s (the stream logs its own line a minute, see `stream_phase`).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::control::human;
use crate::control::progress::{DbProgress, MigrationProgress};
use crate::control::status::Phase;
use crate::control::terminal;

/// How often the live lines are redrawn.
const REDRAW: Duration = Duration::from_millis(500);
/// How often a copying database logs a line when not on a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Rates are averaged over this much recent time: steady enough to read,
/// recent enough to show a stall.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Width of the database name column of the live lines.
const NAME: usize = 12;

/// Starts the progress output of `progress`; abort the task to stop it (a
/// live display then leaves its last lines on the screen).
pub(super) fn spawn_progress_line(progress: Arc<MigrationProgress>) -> tokio::task::JoinHandle<()> {
    if terminal::live_display_wanted() {
        tokio::spawn(live_lines(progress))
    } else {
        tokio::spawn(log_lines(progress))
    }
}

/// The counters one line is made of, read at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sample {
    tables_done: u64,
    tables_total: u64,
    rows: u64,
    bytes: u64,
    applied: u64,
    lag_bytes: u64,
    lag_seconds: f64,
}

impl Sample {
    fn of(p: &DbProgress) -> Sample {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let done = load(&p.full_load_completed_tables);
        Sample {
            tables_done: done,
            tables_total: done
                + load(&p.full_load_queued_tables)
                + load(&p.full_load_loading_tables)
                + load(&p.full_load_errored_tables),
            rows: load(&p.rows_copied),
            bytes: load(&p.bytes_copied),
            applied: load(&p.applied_changes),
            lag_bytes: load(&p.lag_bytes),
            lag_seconds: p.latency_seconds(),
        }
    }
}

/// Per-second rates of one database.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Rates {
    rows: f64,
    bytes: f64,
    applied: f64,
}

/// Recent samples of one database, for its own rates.
#[derive(Debug, Default)]
struct Window {
    samples: VecDeque<(Instant, Sample)>,
}

impl Window {
    /// Records `sample` taken at `at` and returns the rates over the window.
    fn push(&mut self, at: Instant, sample: Sample) -> Rates {
        self.samples.push_back((at, sample));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > RATE_WINDOW)
            && self.samples.len() > 2
        {
            self.samples.pop_front();
        }
        let Some((t0, first)) = self.samples.front() else {
            return Rates::default();
        };
        let secs = at.duration_since(*t0).as_secs_f64();
        if secs <= 0.0 {
            return Rates::default();
        }
        // Counters restored by a resumed daemon only grow; saturate anyway.
        let per_second = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        Rates {
            rows: per_second(first.rows, sample.rows),
            bytes: per_second(first.bytes, sample.bytes),
            applied: per_second(first.applied, sample.applied),
        }
    }
}

/// One database's live line (at most ~100 characters).
fn live_line(name: &str, phase: Phase, s: &Sample, r: &Rates) -> String {
    let name = human::truncate(name, NAME);
    let head = format!("{name:<NAME$} {:<15}", phase.to_string());
    let copy = format!(
        "tables {}/{}  rows {} ({})  {} ({})",
        s.tables_done,
        s.tables_total,
        human::count(s.rows),
        human::rate(r.rows),
        human::bytes(s.bytes),
        human::byte_rate(r.bytes)
    );
    let stream = format!(
        "lag {}, {}  applied {} ({})",
        human::bytes(s.lag_bytes),
        human::duration(s.lag_seconds),
        human::count(s.applied),
        human::rate(r.applied)
    );
    let body = match phase {
        Phase::Validating | Phase::CopyingSchema => String::new(),
        Phase::CopyingData | Phase::BuildingIndexes => copy,
        Phase::Streaming | Phase::CuttingOver => stream,
        Phase::Done | Phase::Failed | Phase::Canceled => format!(
            "tables {}/{}  rows {}  applied {}",
            s.tables_done,
            s.tables_total,
            human::count(s.rows),
            human::count(s.applied)
        ),
    };
    format!("{head} {body}").trim_end().to_owned()
}

/// One copying database's log line when not on a terminal.
fn log_copy(name: &str, phase: Phase, s: &Sample, r: &Rates) {
    tracing::info!(
        db = %name,
        phase = %phase,
        tables = format!("{}/{}", s.tables_done, s.tables_total),
        rows = s.rows,
        rows_per_second = format!("{:.0}", r.rows),
        copied = %human::bytes(s.bytes),
        rate = %human::byte_rate(r.bytes),
        "copying"
    );
}

async fn log_lines(progress: Arc<MigrationProgress>) {
    let mut windows: Vec<Window> = progress.dbs.iter().map(|_| Window::default()).collect();
    let mut tick = tokio::time::interval(LOG_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        for (p, window) in progress.dbs.iter().zip(windows.iter_mut()) {
            let sample = Sample::of(p);
            // Over a 10 s tick the window holds the previous sample only.
            let rates = window.push(now, sample);
            let phase = p.phase();
            if matches!(phase, Phase::CopyingData | Phase::BuildingIndexes) {
                log_copy(&p.name, phase, &sample, &rates);
            }
        }
    }
}

/// The live bars; on drop (the task aborted) they are drawn once more with
/// the final values (the phase reached, not the one of the last tick) and
/// left on the screen, and output goes straight to the terminal again.
struct Bars {
    bars: Vec<ProgressBar>,
    progress: Arc<MigrationProgress>,
}

impl Drop for Bars {
    fn drop(&mut self) {
        for (p, bar) in self.progress.dbs.iter().zip(&self.bars) {
            let sample = Sample::of(p);
            bar.finish_with_message(live_line(&p.name, p.phase(), &sample, &Rates::default()));
        }
        terminal::set_drawing(false);
        // indicatif leaves the cursor at the end of the last line.
        eprintln!();
    }
}

async fn live_lines(progress: Arc<MigrationProgress>) {
    let style = ProgressStyle::with_template("{spinner} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bars = Bars {
        bars: progress
            .dbs
            .iter()
            .map(|_| {
                terminal::multi()
                    .add(ProgressBar::new_spinner())
                    .with_style(style.clone())
            })
            .collect(),
        progress: Arc::clone(&progress),
    };
    terminal::set_drawing(true);
    let mut windows: Vec<Window> = progress.dbs.iter().map(|_| Window::default()).collect();
    let mut tick = tokio::time::interval(REDRAW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        for ((p, window), bar) in progress.dbs.iter().zip(windows.iter_mut()).zip(&bars.bars) {
            let sample = Sample::of(p);
            let rates = window.push(now, sample);
            bar.set_message(live_line(&p.name, p.phase(), &sample, &rates));
            bar.tick();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_database_over_the_window() {
        let t0 = Instant::now();
        let mut w = Window::default();
        let s = |rows, bytes, applied| Sample {
            rows,
            bytes,
            applied,
            ..Sample::default()
        };
        assert_eq!(w.push(t0, s(0, 0, 0)), Rates::default());
        let r = w.push(t0 + Duration::from_secs(2), s(2_000, 4 << 20, 10));
        assert_eq!(r.rows, 1_000.0);
        assert_eq!(r.bytes, (2 << 20) as f64);
        assert_eq!(r.applied, 5.0);
        // Samples older than the window drop out: a stall shows as 0.
        w.push(t0 + Duration::from_secs(6), s(2_000, 4 << 20, 10));
        let r = w.push(t0 + Duration::from_secs(12), s(2_000, 4 << 20, 10));
        assert_eq!(r, Rates::default());
    }

    #[test]
    fn lines_show_what_the_phase_is_about() {
        let s = Sample {
            tables_done: 3,
            tables_total: 4,
            rows: 1_234_567,
            bytes: 120 << 20,
            applied: 12_345,
            lag_bytes: 90_954_832,
            lag_seconds: 0.3,
        };
        let r = Rates {
            rows: 45_200.0,
            bytes: 12.5 * 1024.0 * 1024.0,
            applied: 310.0,
        };
        assert_eq!(
            live_line("shop", Phase::CopyingData, &s, &r),
            "shop         CopyingData     tables 3/4  rows 1,234,567 (45.2k/s)  120.0 MB (12.5 MB/s)"
        );
        assert_eq!(
            live_line("inventory", Phase::Streaming, &s, &r),
            "inventory    Streaming       lag 86.7 MB, 0.3 s  applied 12,345 (310/s)"
        );
        assert_eq!(
            live_line("a-very-long-database-name", Phase::Validating, &s, &r),
            "a-very-long… Validating"
        );
        let worst = Sample {
            tables_done: 99_999,
            tables_total: 99_999,
            rows: 99_999_999_999,
            bytes: 999 << 40,
            ..s
        };
        let fast = Rates {
            rows: 9.9e6,
            bytes: 9.9e9,
            applied: 0.0,
        };
        let line = live_line(
            "a-very-long-database-name",
            Phase::BuildingIndexes,
            &worst,
            &fast,
        );
        assert!(line.chars().count() <= 100, "{line}");
    }
}
