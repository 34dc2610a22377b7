//! What a listener does when `accept` fails.
//!
//! Out of file descriptors (EMFILE/ENFILE), `accept` fails at once and keeps
//! failing until some connection closes: retrying immediately spins a core and
//! logging every failure wrote 19.9 M lines in 60 s. [`AcceptErrors`] turns
//! each failure into a pause that doubles up to [`MAX_BACKOFF`] and a log line
//! at most once per [`LOG_INTERVAL`], carrying the count of failures it did
//! not log; a success resets the pause, and says (within the same rate
//! limit) how many attempts had failed.

use std::io;
use std::time::{Duration, Instant};

/// First pause after a failed accept.
pub const MIN_BACKOFF: Duration = Duration::from_millis(5);

/// Longest pause between two accept attempts while they keep failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// At most one log line per listener per this interval while accepts fail.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Backoff and log rate limit of one listener's accept failures.
#[derive(Debug)]
pub struct AcceptErrors {
    /// Names the listener in log lines ("metrics listener 127.0.0.1:9898").
    what: String,
    /// The pause the next failure gets.
    next_backoff: Duration,
    /// When the last line was logged; `None` before the first.
    last_logged: Option<Instant>,
    /// Failures since the last line that were not logged.
    suppressed: u64,
    /// Failures since the last successful accept.
    failing: u64,
}

/// What to do about one failed accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptFailure {
    /// Sleep this long before accepting again.
    pub pause: Duration,
    /// Log this line (at warn), or stay quiet.
    pub log: Option<String>,
}

impl AcceptErrors {
    /// Failure bookkeeping for the listener described by `what`.
    pub fn new(what: impl Into<String>) -> AcceptErrors {
        AcceptErrors {
            what: what.into(),
            next_backoff: MIN_BACKOFF,
            last_logged: None,
            suppressed: 0,
            failing: 0,
        }
    }

    /// Records a failed accept at `now`: how long to pause, and whether to log.
    pub fn failed(&mut self, error: &io::Error, now: Instant) -> AcceptFailure {
        let pause = self.next_backoff;
        self.next_backoff = (self.next_backoff * 2).min(MAX_BACKOFF);
        self.failing += 1;
        let due = self
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_INTERVAL);
        let log = if due {
            let line = if self.suppressed == 0 {
                format!("{} cannot accept a connection: {error}", self.what)
            } else {
                format!(
                    "{} cannot accept a connection: {error} ({} more failures not logged in the last {}s)",
                    self.what,
                    self.suppressed,
                    LOG_INTERVAL.as_secs()
                )
            };
            self.last_logged = Some(now);
            self.suppressed = 0;
            Some(line)
        } else {
            self.suppressed += 1;
            None
        };
        AcceptFailure { pause, log }
    }

    /// Records a successful accept; returns a line to log when it ends a run
    /// of failures and no line was logged within [`LOG_INTERVAL`]. Near the
    /// limit accepts succeed and fail by turns, so a success resets the
    /// backoff but not the log's rate limit.
    pub fn accepted(&mut self, now: Instant) -> Option<String> {
        self.next_backoff = MIN_BACKOFF;
        if self.failing == 0 {
            return None;
        }
        let due = self
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_INTERVAL);
        if !due {
            return None;
        }
        let line = format!(
            "{} accepts connections again after {} failed attempts",
            self.what, self.failing
        );
        self.failing = 0;
        self.suppressed = 0;
        self.last_logged = Some(now);
        Some(line)
    }

    /// Handles a failed accept in a listener's loop: logs if due, then pauses.
    pub async fn pause_after(&mut self, error: &io::Error) {
        let failure = self.failed(error, Instant::now());
        if let Some(line) = failure.log {
            tracing::warn!("{line}");
        }
        tokio::time::sleep(failure.pause).await;
    }

    /// Handles a successful accept in a listener's loop.
    pub fn note_accepted(&mut self) {
        if let Some(line) = self.accepted(Instant::now()) {
            tracing::info!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(libc::EMFILE)
    }

    #[test]
    fn backoff_doubles_up_to_one_second_and_resets() {
        let mut e = AcceptErrors::new("test listener");
        let now = Instant::now();
        let pauses: Vec<Duration> = (0..12).map(|_| e.failed(&emfile(), now).pause).collect();
        assert_eq!(pauses[0], MIN_BACKOFF);
        assert_eq!(pauses[1], MIN_BACKOFF * 2);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*pauses.last().unwrap(), MAX_BACKOFF);
        assert!(e.accepted(now + LOG_INTERVAL).is_some());
        assert_eq!(e.failed(&emfile(), now).pause, MIN_BACKOFF);
    }

    #[test]
    fn logs_once_per_interval_with_the_suppressed_count() {
        let mut e = AcceptErrors::new("metrics listener 127.0.0.1:1");
        let t0 = Instant::now();
        let first = e.failed(&emfile(), t0).log.unwrap();
        assert!(first.starts_with("metrics listener 127.0.0.1:1 cannot accept"));
        let quiet = (1..1000)
            .filter(|i| {
                e.failed(&emfile(), t0 + Duration::from_millis(*i))
                    .log
                    .is_some()
            })
            .count();
        assert_eq!(quiet, 0, "nothing logged within the interval");
        let next = e.failed(&emfile(), t0 + LOG_INTERVAL).log.unwrap();
        assert!(next.contains("999 more failures not logged"), "{next}");
        // Success and failure by turns: still one line per interval.
        let t1 = t0 + LOG_INTERVAL + Duration::from_millis(1);
        assert_eq!(e.accepted(t1), None);
        assert_eq!(e.failed(&emfile(), t1).log, None);
        let recovered = e.accepted(t0 + LOG_INTERVAL * 2).unwrap();
        assert!(
            recovered.contains("after 1002 failed attempts"),
            "{recovered}"
        );
        let t3 = t0 + LOG_INTERVAL * 3;
        assert_eq!(e.accepted(t3), None, "a success after a success is quiet");
    }
}
