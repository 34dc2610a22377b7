//! How often a failed stream is restarted: attempts are counted at one
//! position (the first transaction a worker could not apply, or where the
//! stream stood), never reset by progress elsewhere, so a change that
//! cannot be applied ends the migration instead of looping forever.

use std::time::Duration;

use crate::conn::Retry;
use crate::protocol::lsn::Lsn;

/// Attempts at one position for a change the target refuses: the second
/// rules out a refusal caused by something that was racing it.
pub const DETERMINISTIC_ATTEMPTS: u32 = 2;
/// Attempts at one position for an interruption (a server restart, a
/// network cut): with the backoff below about eight minutes.
pub const TRANSIENT_ATTEMPTS: u32 = 20;
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where a stream failed: the worker and the commit LSN of the first
/// transaction it could not apply, or (`worker: None`) the LSN every worker
/// had applied through when the failure is not a worker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The worker, when one failed.
    pub worker: Option<usize>,
    /// The LSN.
    pub lsn: Lsn,
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Restart after this wait; this is attempt `attempt` of `limit` here.
    Retry {
        /// How long to wait.
        wait: Duration,
        /// Attempts at this position so far.
        attempt: u32,
        /// The most there will be.
        limit: u32,
    },
    /// Give up: the migration fails.
    GiveUp {
        /// Attempts made at this position.
        attempts: u32,
    },
}

/// Attempts made at the current failure position.
#[derive(Debug, Default)]
pub struct RetryBudget {
    position: Option<Position>,
    attempts: u32,
    deterministic: u32,
}

impl RetryBudget {
    /// Records a failure at `at` and says whether to try again.
    pub fn failed(&mut self, at: Position, retry: Retry) -> Verdict {
        if self.position != Some(at) {
            self.position = Some(at);
            self.attempts = 0;
            self.deterministic = 0;
        }
        self.attempts += 1;
        if retry == Retry::Deterministic {
            self.deterministic += 1;
        }
        let (count, limit) = match retry {
            Retry::Deterministic => (self.deterministic, DETERMINISTIC_ATTEMPTS),
            Retry::Transient => (self.attempts, TRANSIENT_ATTEMPTS),
        };
        if count >= limit {
            return Verdict::GiveUp {
                attempts: self.attempts,
            };
        }
        let wait = match retry {
            // Only to let a racing cause pass; the answer comes quickly.
            Retry::Deterministic => Duration::from_secs(1),
            Retry::Transient => {
                Duration::from_secs(1u64 << self.attempts.saturating_sub(1).min(5)).min(MAX_BACKOFF)
            }
        };
        Verdict::Retry {
            wait,
            attempt: self.attempts,
            limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(worker: Option<usize>, lsn: u64) -> Position {
        Position {
            worker,
            lsn: Lsn(lsn),
        }
    }

    #[test]
    fn a_refused_change_gives_up_on_the_second_attempt() {
        let mut b = RetryBudget::default();
        assert!(matches!(
            b.failed(at(Some(1), 100), Retry::Deterministic),
            Verdict::Retry { attempt: 1, .. }
        ));
        assert_eq!(
            b.failed(at(Some(1), 100), Retry::Deterministic),
            Verdict::GiveUp { attempts: 2 }
        );
    }

    #[test]
    fn interruptions_back_off_and_are_bounded_at_one_position() {
        let mut b = RetryBudget::default();
        let mut waits = Vec::new();
        for _ in 1..TRANSIENT_ATTEMPTS {
            match b.failed(at(None, 7), Retry::Transient) {
                Verdict::Retry { wait, .. } => waits.push(wait.as_secs()),
                v => panic!("gave up early: {v:?}"),
            }
        }
        assert_eq!(&waits[..7], &[1, 2, 4, 8, 16, 30, 30]);
        assert!(matches!(
            b.failed(at(None, 7), Retry::Transient),
            Verdict::GiveUp { .. }
        ));
    }

    #[test]
    fn only_a_new_position_starts_the_count_again() {
        let mut b = RetryBudget::default();
        b.failed(at(Some(0), 5), Retry::Deterministic);
        // Another worker failing elsewhere is a new position…
        assert!(matches!(
            b.failed(at(Some(1), 9), Retry::Transient),
            Verdict::Retry { attempt: 1, .. }
        ));
        // …and an interruption between two refusals at one position does
        // not reset the refusals.
        b.failed(at(Some(0), 5), Retry::Deterministic);
        b.failed(at(Some(0), 5), Retry::Transient);
        assert!(matches!(
            b.failed(at(Some(0), 5), Retry::Deterministic),
            Verdict::GiveUp { .. }
        ));
    }
}
