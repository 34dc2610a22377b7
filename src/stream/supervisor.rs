//! Keeps one database's stream going: notices a stream that stopped (or a
//! worker that did), restarts it from the origins with backoff within the
//! bounds of [`super::retry`], and tells the truth meanwhile: whether the
//! stream is applying, how far it got, and how old the oldest change not
//! yet applied is, also while no stream runs.

use std::sync::Arc;
use std::time::Instant;

use crate::control::progress::DbProgress;
use crate::protocol::lsn::Lsn;
use crate::protocol::timestamp::PgTimestamp;
use crate::shutdown::Shutdown;

use super::retry::{Position, RetryBudget, Verdict};
use super::{Stream, StreamConfig, StreamError};

/// What [`Supervisor::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The stream runs. `recovered`: for the first time past the position
    /// of the last failure.
    Running {
        /// The failure is behind us: its message may go.
        recovered: bool,
    },
    /// No stream applies now; it restarts later. The message says why.
    Down {
        /// The failure and the attempt, for `show`.
        message: String,
    },
    /// A new stream was started just now.
    Restarted,
    /// The daemon is stopping: the stream ends (or ended) by itself and
    /// is not restarted.
    Stopping,
}

/// One database's stream and its restarts.
pub struct Supervisor {
    cfg: StreamConfig,
    counters: Arc<DbProgress>,
    /// The daemon's stop, handed to every stream started.
    shutdown: Shutdown,
    stream: Option<Stream>,
    budget: RetryBudget,
    restart_at: Instant,
    message: String,
    /// The LSN everything was applied through when last known.
    applied: Lsn,
    /// The oldest change not applied when a stream failed: still waiting.
    carried: Option<(Lsn, PgTimestamp)>,
    /// Where the last failure was, until the stream gets past it.
    failed_at: Option<Lsn>,
}

impl Supervisor {
    /// Starts the stream; it and every restart end with `shutdown`.
    pub fn start(
        cfg: StreamConfig,
        counters: Arc<DbProgress>,
        shutdown: Shutdown,
    ) -> Result<Supervisor, StreamError> {
        let stream = Stream::start(cfg.clone(), counters.clone(), shutdown.clone())?;
        Ok(Supervisor {
            applied: cfg.start_lsn,
            cfg,
            counters,
            shutdown,
            stream: Some(stream),
            budget: RetryBudget::default(),
            restart_at: Instant::now(),
            message: String::new(),
            carried: None,
            failed_at: None,
        })
    }

    /// Looks at the stream: notices a failure and decides on it, or
    /// restarts a failed stream when its wait is over. An error means the
    /// stream gave up: the migration fails with it.
    pub async fn check(&mut self) -> Result<Event, StreamError> {
        // A stream that ended because the daemon stops did not fail.
        if self.shutdown.is_requested() {
            return Ok(Event::Stopping);
        }
        let Some(stream) = &self.stream else {
            if Instant::now() < self.restart_at {
                return Ok(Event::Down {
                    message: self.message.clone(),
                });
            }
            self.stream = Some(Stream::start(
                self.cfg.clone(),
                self.counters.clone(),
                self.shutdown.clone(),
            )?);
            return Ok(Event::Restarted);
        };
        if !stream.failed() {
            let mut recovered = false;
            if stream.applying() {
                self.applied = stream.applied();
                if self.carried.is_some_and(|(lsn, _)| lsn <= self.applied) {
                    self.carried = None;
                }
                if self.failed_at.is_some_and(|lsn| lsn < self.applied) {
                    self.failed_at = None;
                    recovered = true;
                }
            }
            return Ok(Event::Running { recovered });
        }
        let Some(stream) = self.stream.take() else {
            return Ok(Event::Restarted);
        };
        if let Some(oldest) = stream.oldest_unapplied() {
            self.carried = Some(self.carried.unwrap_or(oldest));
        }
        let err = match stream.stop().await {
            Err(e) => e,
            Ok(()) => StreamError::Ended {
                db: self.cfg.db.clone(),
                during: String::new(),
            },
        };
        let at = match &err {
            StreamError::Worker(e) => e.position().map(|(worker, lsn)| Position {
                worker: Some(worker),
                lsn,
            }),
            _ => None,
        }
        .unwrap_or(Position {
            worker: None,
            lsn: self.applied,
        });
        self.failed_at = Some(at.lsn);
        if matches!(err, StreamError::TextNeeded { .. }) {
            // Not a failure: binary was right until this table appeared.
            self.cfg.binary = false;
            self.restart_at = Instant::now();
            tracing::info!("{err}");
            return Ok(Event::Down {
                message: err.to_string(),
            });
        }
        match self.budget.failed(at, err.retry()) {
            Verdict::GiveUp { attempts } => Err(StreamError::GaveUp {
                attempts,
                last: Box::new(err),
            }),
            Verdict::Retry {
                wait,
                attempt,
                limit,
            } => {
                self.restart_at = Instant::now() + wait;
                self.message = format!(
                    "stream interrupted (attempt {attempt} of {limit} at {}), restarting in {}s: {err}",
                    at.lsn,
                    wait.as_secs()
                );
                tracing::warn!(attempt, limit, at = %at.lsn, wait_s = wait.as_secs(), "stream interrupted, restarting: {err}");
                Ok(Event::Down {
                    message: self.message.clone(),
                })
            }
        }
    }

    /// True while a stream runs with every worker ready and none failed.
    pub fn applying(&self) -> bool {
        self.stream.as_ref().is_some_and(Stream::applying)
    }

    /// The LSN every worker has applied through; while no stream applies,
    /// the last one known.
    pub fn applied(&self) -> Lsn {
        match &self.stream {
            Some(s) if s.applying() => s.applied(),
            _ => self.applied,
        }
    }

    /// Seconds since the oldest source commit not yet applied, counting
    /// one a failed stream left behind: it grows while nothing applies.
    pub fn latency_seconds(&self) -> f64 {
        let live = self
            .stream
            .as_ref()
            .filter(|s| s.applying())
            .map_or(0.0, Stream::latency_seconds);
        let left = self
            .carried
            .filter(|(lsn, _)| *lsn > self.applied())
            .map_or(0.0, |(_, t)| {
                t.elapsed_at(std::time::SystemTime::now()).as_secs_f64()
            });
        live.max(left)
    }

    /// Asks the source for a keepalive (see [`Stream::poke`]).
    pub fn poke(&self) {
        if let Some(s) = &self.stream {
            s.poke();
        }
    }

    /// The running stream, for the cutover; `None` while it restarts.
    pub fn into_stream(mut self) -> Option<Stream> {
        self.stream.take()
    }

    /// Stops the stream, if one runs.
    pub async fn stop(mut self) -> Result<(), StreamError> {
        match self.stream.take() {
            Some(s) => s.stop().await,
            None => Ok(()),
        }
    }
}
