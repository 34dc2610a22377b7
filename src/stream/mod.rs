//! The change stream of one database: the receiver thread (replication
//! session, decoder, router) and the apply worker threads, started and
//! watched from the async side, which also measures lag. Never applies;
//! only routes.

pub mod ddl;
pub mod hold;
pub mod late_tables;
pub mod publication;
mod receiver;
pub mod retry;
pub mod supervisor;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::apply::{self, ApplyError, WorkerConfig, WorkerProgress};
use crate::conn::{ConnError, ConnectParams, Retry};
use crate::control::progress::DbProgress;
use crate::protocol::lsn::Lsn;
use crate::protocol::timestamp::PgTimestamp;
use crate::shutdown::Shutdown;
use crate::spill::SpillError;

pub use receiver::Shared;

/// Messages queued per worker: bounds memory, and a full queue slows the
/// receiver, which slows feedback: the backpressure the source sees.
const QUEUE_DEPTH: usize = 20_000;
/// Bytes of one transaction kept in memory before spilling.
const TXN_MEMORY_BUDGET: usize = 64 << 20;

/// Errors of the change stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The source failed.
    #[error("database {db}: {context}: {source}")]
    Source {
        /// Database.
        db: String,
        /// What we were doing.
        context: String,
        /// The wire error.
        #[source]
        source: Box<ConnError>,
    },
    /// The stream carried something malformed or unexpected.
    #[error("database {db}: replication stream: {message}")]
    Protocol {
        /// Database.
        db: String,
        /// What was wrong, with the LSN.
        message: String,
    },
    /// The source ended the replication stream on its own.
    #[error("database {db}: the source ended the replication stream")]
    SourceEnded {
        /// Database.
        db: String,
    },
    /// An apply worker stopped (its own error, [`StreamError::Worker`],
    /// is what [`Stream::stop`] reports).
    #[error("database {db}: apply worker {worker} stopped")]
    WorkerStopped {
        /// Database.
        db: String,
        /// Worker index.
        worker: usize,
    },
    /// An apply worker stopped on this error (the root cause of whatever
    /// the receiver saw next).
    #[error("{0}")]
    Worker(Box<ApplyError>),
    /// A large transaction could not be spilled to disk or read back.
    #[error("database {db}: spilling the transaction {xid}: {source}")]
    Spill {
        /// Database.
        db: String,
        /// The source transaction.
        xid: u32,
        /// What failed.
        #[source]
        source: SpillError,
    },
    /// A thread or its runtime could not be started.
    #[error("database {db}: starting the {thread}: {source}")]
    Start {
        /// Database.
        db: String,
        /// `receiver`, `apply worker 2`, …
        thread: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A stream thread panicked, or its join failed.
    #[error("database {db}: the {thread} thread panicked")]
    Panicked {
        /// Database.
        db: String,
        /// `receiver`, `stream`.
        thread: &'static str,
    },
    /// The stream stopped without an error while it should have run.
    #[error("database {db}: the stream ended unexpectedly{during}")]
    Ended {
        /// Database.
        db: String,
        /// When, said when it matters (`" during cutover, before 0/1A"`).
        during: String,
    },
    /// state.json lacks what a stream starts from.
    #[error(
        "database {db}: state.json lacks the slot, publication or consistent LSN of this database"
    )]
    NotRecorded {
        /// Database.
        db: String,
    },
    /// The stream failed at one position as often as it may.
    #[error("{last} (gave up after {attempts} attempts at this position)")]
    GaveUp {
        /// Attempts made there.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Box<StreamError>,
    },
    /// A DDL command captured on the source cannot be carried.
    #[error("database {db}: DDL committed on the source at {lsn}: `{statement}`: {why}")]
    Ddl {
        /// Database.
        db: String,
        /// Commit LSN of its transaction.
        lsn: Lsn,
        /// The statement, shortened.
        statement: String,
        /// Why, and what to do.
        why: String,
    },
    /// A table's Relation message names a column type that binary
    /// transfer cannot carry (a table or column created by DDL after the
    /// stream started): the stream restarts in text.
    #[error("database {db}: table {table} has a column of type {type_oid}, which streams only as text: restarting the stream in text")]
    TextNeeded {
        /// Database.
        db: String,
        /// `schema.table`.
        table: String,
        /// The column's type OID on the source.
        type_oid: u32,
    },
    /// Stopped on request while waiting.
    #[error("stream stopped")]
    Stopped,
}

impl StreamError {
    fn source(db: &str, context: &str, e: ConnError) -> StreamError {
        StreamError::Source {
            db: db.to_string(),
            context: context.to_string(),
            source: Box::new(e),
        }
    }

    /// Whether restarting the stream at the same position can get further:
    /// a server error by its SQLSTATE ([`crate::conn::retry`]); a stream
    /// that is malformed, or a state that lacks what it starts from, will
    /// be the same next time; a lost thread, a full spill disk or a stream
    /// that just ended are taken as transient, bounded by the attempts at
    /// one position.
    pub fn retry(&self) -> Retry {
        match self {
            StreamError::Source { source, .. } => source.retry(),
            StreamError::Worker(e) => e.retry(),
            StreamError::GaveUp { last, .. } => last.retry(),
            StreamError::Protocol { .. }
            | StreamError::NotRecorded { .. }
            | StreamError::Ddl { .. } => Retry::Deterministic,
            StreamError::SourceEnded { .. }
            | StreamError::WorkerStopped { .. }
            | StreamError::Spill { .. }
            | StreamError::Start { .. }
            | StreamError::Panicked { .. }
            | StreamError::Ended { .. }
            | StreamError::TextNeeded { .. }
            | StreamError::Stopped => Retry::Transient,
        }
    }

    fn protocol(db: &str, message: String) -> StreamError {
        StreamError::Protocol {
            db: db.to_string(),
            message,
        }
    }
}

/// The pgoutput protocol version a source major offers.
pub fn protocol_version(source_major: u32) -> u32 {
    match source_major {
        0..=13 => 1,
        14 => 2,
        15 => 3,
        _ => 4,
    }
}

/// Whether the published tables of `publication` can stream in binary:
/// the source offers it (14+) and every column is of a built-in type with
/// one binary form everywhere, and none that REPLICA IDENTITY FULL must
/// compare as text.
pub async fn binary_possible(source: &mut crate::conn::Connection, publication: &str) -> bool {
    if source.server_major() < 14 {
        return false;
    }
    let rows = source
        .query(
            "SELECT DISTINCT a.atttypid FROM pg_catalog.pg_publication_tables pt \
             JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE pt.pubname = $1",
            &[publication.into()],
        )
        .await;
    match rows {
        Ok(rows) => rows.iter().all(|r| {
            r.parse::<u32>(0)
                .is_ok_and(crate::pgtypes::streams_in_binary)
        }),
        Err(_) => false,
    }
}

// Here rather than beside the struct: receiver.rs is the receiver's loop.
impl Shared {
    /// Shared state of a new stream that stops with `shutdown`.
    pub fn new(shutdown: Shutdown) -> Shared {
        Shared {
            stop: std::sync::atomic::AtomicBool::new(false),
            shutdown: shutdown.flag(),
            cutting_over: std::sync::atomic::AtomicBool::new(false),
            want_reply: std::sync::atomic::AtomicBool::new(false),
            received: std::sync::atomic::AtomicU64::new(0),
            unapplied: std::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Whether the receiver should end now.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
            || (self.shutdown.load(Ordering::Acquire) && !self.cutting_over.load(Ordering::Acquire))
    }
}

/// What a stream needs.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Database.
    pub db: String,
    /// `[tables]`: changes of tables not migrated are dropped.
    pub filter: crate::config::TableFilter,
    /// Source session for the database.
    pub source: ConnectParams,
    /// Target session for the database.
    pub target: ConnectParams,
    /// Slot.
    pub slot: String,
    /// Publications to decode through: the main one, and the inserts-only
    /// one of keyless tables when there is one.
    pub publications: Vec<String>,
    /// The slot's consistent point: the stream starts there (the server
    /// moves it up to what it was last told is flushed).
    pub start_lsn: Lsn,
    /// One replication origin per worker; their number is the worker count.
    pub origins: Vec<String>,
    /// Batch bounds.
    pub batch_max_changes: usize,
    /// Batch bounds.
    pub batch_max_delay: Duration,
    /// Where large transactions spill.
    pub spill_dir: PathBuf,
    /// pgoutput protocol version.
    pub protocol_version: u32,
    /// Ask for values in binary format (only when every published column
    /// is of a built-in type both servers encode alike).
    pub binary: bool,
    /// Tables a resumed copy read late, whose earlier changes are dropped.
    pub late: late_tables::LateTables,
    /// What DDL captured on the source does to the stream.
    pub ddl: crate::config::DdlMode,
}

/// A running stream.
pub struct Stream {
    db: String,
    shared: Arc<Shared>,
    workers: Vec<Arc<WorkerProgress>>,
    receiver: Option<std::thread::JoinHandle<Result<(), StreamError>>>,
    threads: Vec<std::thread::JoinHandle<Result<(), ApplyError>>>,
}

impl Stream {
    /// Starts the workers and the receiver; the receiver ends by itself
    /// once `shutdown` is requested (the workers follow it: their queues
    /// close), or when [`Stream::stop`] stops this stream alone.
    pub fn start(
        cfg: StreamConfig,
        counters: Arc<DbProgress>,
        shutdown: Shutdown,
    ) -> Result<Stream, StreamError> {
        let mut senders = Vec::new();
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for (index, origin) in cfg.origins.iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded(QUEUE_DEPTH);
            let progress = Arc::new(WorkerProgress::default());
            let wc = WorkerConfig {
                db: cfg.db.clone(),
                index,
                origin: origin.clone(),
                target: cfg.target.clone(),
                batch_max_changes: cfg.batch_max_changes,
                batch_max_delay: cfg.batch_max_delay,
                start_lsn: cfg.start_lsn,
            };
            let handle = apply::spawn(wc, rx, progress.clone(), counters.clone()).map_err(|e| {
                StreamError::Start {
                    db: cfg.db.clone(),
                    thread: format!("apply worker {index}"),
                    source: e,
                }
            })?;
            senders.push(tx);
            workers.push(progress);
            threads.push(handle);
        }
        let shared = Arc::new(Shared::new(shutdown));
        let rc = receiver::ReceiverConfig {
            db: cfg.db.clone(),
            source: cfg.source.clone(),
            slot: cfg.slot.clone(),
            publications: cfg.publications.clone(),
            start_lsn: cfg.start_lsn,
            protocol_version: cfg.protocol_version,
            binary: cfg.binary,
            memory_budget: TXN_MEMORY_BUDGET,
            spill_dir: cfg.spill_dir.clone(),
            late: cfg.late.clone(),
            filter: cfg.filter.clone(),
            ddl: cfg.ddl,
        };
        let (sh, wp, cn) = (shared.clone(), workers.clone(), counters);
        let receiver = std::thread::Builder::new()
            .name("receiver".into())
            .spawn({
                // The thread runs its own runtime: it logs in the span of
                // the database that started it.
                let span = tracing::info_span!("receiver");
                move || span.in_scope(|| receiver::run_thread(rc, senders, wp, cn, sh))
            })
            .map_err(|e| StreamError::Start {
                db: cfg.db.clone(),
                thread: "receiver".into(),
                source: e,
            })?;
        Ok(Stream {
            db: cfg.db,
            shared,
            workers,
            receiver: Some(receiver),
            threads,
        })
    }

    /// The LSN every worker has applied through.
    pub fn applied(&self) -> Lsn {
        self.workers
            .iter()
            .map(|w| w.applied())
            .min()
            .unwrap_or(Lsn(0))
    }

    /// Asks the server for a keepalive, so idle workers learn how far the
    /// stream has gone.
    pub fn poke(&self) {
        self.shared.want_reply.store(true, Ordering::Release);
    }

    /// Seconds since the oldest source commit not yet applied; 0 when
    /// everything received is applied.
    pub fn latency_seconds(&self) -> f64 {
        self.oldest_unapplied()
            .map(|(_, t)| t.elapsed_at(std::time::SystemTime::now()).as_secs_f64())
            .unwrap_or(0.0)
    }

    /// The oldest source transaction received and not yet applied
    /// everywhere: its commit LSN and time.
    pub fn oldest_unapplied(&self) -> Option<(Lsn, PgTimestamp)> {
        let applied = self.applied();
        let mut q = self.shared.unapplied.lock().ok()?;
        while q.front().is_some_and(|(lsn, _)| *lsn <= applied) {
            q.pop_front();
        }
        q.front().copied()
    }

    /// True while the stream can apply: the receiver runs, and every
    /// worker is connected (knows its origin's position) and has not
    /// stopped on an error.
    pub fn applying(&self) -> bool {
        self.is_running() && self.workers.iter().all(|w| w.started() && !w.failed())
    }

    /// True once the receiver stopped or a worker stopped on an error (a
    /// receiver with nothing to send would not notice that for a while).
    pub fn failed(&self) -> bool {
        !self.is_running() || self.workers.iter().any(|w| w.failed())
    }

    /// True while the receiver thread runs.
    pub fn is_running(&self) -> bool {
        self.receiver.as_ref().is_some_and(|r| !r.is_finished())
    }

    /// From now on the daemon's stop no longer ends this stream: the
    /// cutover that calls this runs to its end and then stops it.
    pub fn begin_cutover(&self) {
        self.shared.cutting_over.store(true, Ordering::Release);
    }

    /// Stops the stream (committing what the workers hold) and waits for
    /// every thread; returns the first error any of them hit.
    pub async fn stop(mut self) -> Result<(), StreamError> {
        self.shared.stop.store(true, Ordering::Release);
        let receiver = self.receiver.take();
        let threads = std::mem::take(&mut self.threads);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let r = match receiver {
                Some(h) => h.join().unwrap_or_else(|_| {
                    Err(StreamError::Panicked {
                        db: db.clone(),
                        thread: "receiver",
                    })
                }),
                None => Ok(()),
            };
            let receiver_error = r.err().filter(|e| !matches!(e, StreamError::Stopped));
            // A worker's error comes first: what the receiver reports
            // after it ("worker 1 stopped") is its consequence.
            let mut first = None;
            for (worker, t) in threads.into_iter().enumerate() {
                let w = t.join().unwrap_or_else(|_| {
                    Err(ApplyError::Setup {
                        db: db.clone(),
                        worker,
                        what: apply::Inconsistency::Panicked,
                    })
                });
                if let (Err(e), None) = (w, &first) {
                    first = Some(StreamError::Worker(Box::new(e)));
                }
            }
            first.or(receiver_error).map_or(Ok(()), Err)
        })
        .await
        .map_err(|_| StreamError::Panicked {
            db: self.db.clone(),
            thread: "stream",
        })?
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{sqlstate, DbError};

    fn server(code: &str) -> ConnError {
        ConnError::Db(Box::new(DbError {
            severity: "ERROR".into(),
            code: code.into(),
            ..DbError::default()
        }))
    }

    #[test]
    fn the_daemons_stop_ends_a_stream_unless_its_cutover_began() {
        let (trigger, shutdown) = Shutdown::new();
        let plain = Shared::new(shutdown.clone());
        let cutting = Shared::new(shutdown);
        cutting.cutting_over.store(true, Ordering::Release);
        assert!(!plain.stopping() && !cutting.stopping());
        trigger.trigger();
        assert!(plain.stopping());
        assert!(!cutting.stopping(), "a begun cutover is finished");
        cutting.stop.store(true, Ordering::Release);
        assert!(cutting.stopping(), "Stream::stop still ends it");
    }

    #[test]
    fn stream_errors_classify_through_the_one_table() {
        let lost = StreamError::source("shop", "reading the replication stream", ConnError::Closed);
        assert_eq!(lost.retry(), Retry::Transient);
        let gone = StreamError::source("shop", "starting replication", server("58P01"));
        assert_eq!(gone.retry(), Retry::Deterministic);
        let busy = StreamError::source(
            "shop",
            "starting replication",
            server(sqlstate::OBJECT_IN_USE),
        );
        assert_eq!(busy.retry(), Retry::Transient);
        let refused = StreamError::Worker(Box::new(ApplyError::Target {
            db: "shop".into(),
            worker: 1,
            context: "insert into public.orders".into(),
            at: Some(Lsn(7)),
            source: Box::new(server(sqlstate::UNDEFINED_COLUMN)),
        }));
        assert_eq!(refused.retry(), Retry::Deterministic);
        let gave_up = StreamError::GaveUp {
            attempts: 2,
            last: Box::new(refused),
        };
        assert_eq!(gave_up.retry(), Retry::Deterministic);
        assert!(gave_up.to_string().contains("42703"), "{gave_up}");
        assert_eq!(
            StreamError::protocol("shop", "Commit without Begin".into()).retry(),
            Retry::Deterministic
        );
        let panicked = StreamError::Worker(Box::new(ApplyError::Setup {
            db: "shop".into(),
            worker: 2,
            what: apply::Inconsistency::Panicked,
        }));
        assert_eq!(
            panicked.to_string(),
            "database shop: apply worker 2: the worker thread panicked"
        );
    }
}
