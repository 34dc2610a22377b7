//! Apply: per-table workers, each on its own thread and target session,
//! grouping many source transactions into one target transaction and
//! recording progress in the same transaction through a replication
//! origin. Never reads from the source.

pub mod arrays;
pub mod column_types;
pub mod failure;
pub mod relation;
pub mod statements;
pub mod target_table;
pub mod window;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::conn::Retry;
use crate::protocol::lsn::Lsn;
use crate::protocol::pgoutput::{OldTuple, TupleData};
use crate::protocol::timestamp::PgTimestamp;

pub use relation::RelationInfo;
pub use worker::{spawn, WorkerConfig};

/// One row change, with the table it belongs to.
#[derive(Debug, Clone)]
pub enum Change {
    /// A row inserted.
    Insert {
        /// The table.
        rel: Arc<RelationInfo>,
        /// The new row.
        new: TupleData,
    },
    /// A row updated.
    Update {
        /// The table.
        rel: Arc<RelationInfo>,
        /// The old key or row, when the source sent one.
        old: Option<OldTuple>,
        /// The new row (unchanged TOAST values marked as such).
        new: TupleData,
    },
    /// A row deleted.
    Delete {
        /// The table.
        rel: Arc<RelationInfo>,
        /// The old key or row.
        old: OldTuple,
    },
}

/// What the router sends a worker.
#[derive(Debug)]
pub enum ApplyMsg {
    /// A source transaction with changes for this worker starts.
    Begin {
        /// The transaction's commit LSN.
        commit_lsn: Lsn,
    },
    /// A change of the current transaction.
    Change(Change),
    /// Tables truncated by the current transaction (whole transaction
    /// routed to this worker alone).
    Truncate {
        /// All tables the source truncated together.
        rels: Vec<Arc<RelationInfo>>,
        /// CASCADE was given.
        cascade: bool,
        /// RESTART IDENTITY was given.
        restart_identity: bool,
    },
    /// A DDL command of the current transaction, in its place among the
    /// rows (whole transaction routed to this worker alone, the others
    /// committed before it and waiting).
    Ddl(Arc<DdlStatement>),
    /// The current transaction commits.
    Commit {
        /// Commit LSN (start of the commit record).
        commit_lsn: Lsn,
        /// End of the commit record: what the origin records, and where
        /// a restarted stream resumes after this transaction.
        end_lsn: Lsn,
        /// Commit time on the source.
        commit_time: PgTimestamp,
    },
    /// Every transaction committed at or before `upto` has been delivered.
    Progress {
        /// The LSN.
        upto: Lsn,
    },
    /// Commit whatever is open now, then answer (a barrier).
    Flush(crossbeam_channel::Sender<()>),
}

/// A DDL statement to run on the target as the source ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdlStatement {
    /// The statement.
    pub sql: String,
    /// The source session's search_path when it ran.
    pub search_path: String,
    /// The role that ran it: objects it creates are owned by the same
    /// role where the target has it.
    pub role: String,
}

/// A worker's progress, read by the stream for feedback and lag.
#[derive(Debug, Default)]
pub struct WorkerProgress {
    /// All transactions for this worker up to here are committed on the target.
    pub applied: AtomicU64,
    /// … and that commit is flushed to the target's disk.
    pub durable: AtomicU64,
    /// Set when the worker stopped on an error (the error itself is the
    /// thread's result). A report, not a stop request: workers take no
    /// stop flag, they end when the receiver (which listens to the
    /// daemon's `Shutdown`) closes their queues.
    pub failed: std::sync::atomic::AtomicBool,
    /// Set once the worker is connected and knows its origin's position:
    /// until then `applied` says nothing.
    pub started: std::sync::atomic::AtomicBool,
}

impl WorkerProgress {
    /// Applied LSN.
    pub fn applied(&self) -> Lsn {
        Lsn(self.applied.load(Ordering::Acquire))
    }

    /// Durable LSN.
    pub fn durable(&self) -> Lsn {
        Lsn(self.durable.load(Ordering::Acquire))
    }

    /// True once the worker stopped on an error.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// True once the worker is ready to apply.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }
}

/// Errors of an apply worker.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A statement failed on the target.
    #[error("database {db}: apply worker {worker}: {context}: {source}")]
    Target {
        /// Database.
        db: String,
        /// Worker index.
        worker: usize,
        /// What it was doing (names the table and LSN).
        context: String,
        /// Commit LSN of the first transaction of the batch it was applying,
        /// when it was applying one.
        at: Option<Lsn>,
        /// The wire error.
        #[source]
        source: Box<crate::conn::ConnError>,
    },
    /// A change the target refused, named: the statement, the table, the
    /// row's identity and the transaction it belongs to.
    #[error(transparent)]
    Change(Box<failure::RefusedChange>),
    /// Something inconsistent in what the worker was given (not the target's
    /// doing): retrying cannot help.
    #[error("database {db}: apply worker {worker}: {what}")]
    Setup {
        /// Database.
        db: String,
        /// Worker index.
        worker: usize,
        /// What was wrong.
        #[source]
        what: Inconsistency,
    },
}

/// What can be wrong with the worker itself or what it was sent.
#[derive(Debug, thiserror::Error)]
pub enum Inconsistency {
    /// Its runtime could not be built.
    #[error("starting its runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The thread panicked.
    #[error("the worker thread panicked")]
    Panicked,
    /// The target reported an origin position that is no LSN.
    #[error("origin progress {value:?}: {source}")]
    OriginProgress {
        /// What the target sent.
        value: String,
        /// Why it is no LSN.
        #[source]
        source: crate::protocol::lsn::ParseLsnError,
    },
    /// A row whose width differs from its table's Relation message.
    #[error("table {table}: a row with {got} columns but the Relation message has {expected}")]
    RowWidth {
        /// `schema.table`.
        table: String,
        /// Columns in the row.
        got: usize,
        /// Columns of the table.
        expected: usize,
    },
    /// A change arrived with no batch open.
    #[error("a change of the transaction committed at {lsn} arrived outside a batch")]
    OutsideBatch {
        /// Commit LSN of its transaction.
        lsn: Lsn,
    },
    /// An UPDATE or DELETE of a table with neither key nor FULL identity:
    /// nothing finds the old row, and `WHERE true` would change every row.
    #[error("{kind} of table {table} in the transaction committed at {lsn}: the table has no primary key or replica identity, so the row cannot be found on the target (is it a [keyless] insert_only table that is updated?)")]
    NoIdentity {
        /// `an UPDATE` or `a DELETE`.
        kind: &'static str,
        /// `schema.table`.
        table: String,
        /// Commit LSN of its transaction.
        lsn: Lsn,
    },
    /// A fold window of a table the worker had not read.
    #[error("table {table} was folded unread")]
    FoldedUnread {
        /// `schema.table`.
        table: String,
    },
}

impl ApplyError {
    /// Whether another attempt at the same change can succeed.
    pub fn retry(&self) -> Retry {
        match self {
            ApplyError::Target { source, .. } => source.retry(),
            ApplyError::Change(c) => c.source.retry(),
            ApplyError::Setup { .. } => Retry::Deterministic,
        }
    }

    /// The worker and the commit LSN of the first transaction it could not
    /// apply, when known: the same on every attempt that gets no further.
    pub fn position(&self) -> Option<(usize, Lsn)> {
        match self {
            ApplyError::Change(c) => Some((c.worker, c.batch_start)),
            ApplyError::Target {
                worker,
                at: Some(at),
                ..
            } => Some((*worker, *at)),
            _ => None,
        }
    }
}
