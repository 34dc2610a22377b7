//! One database's migration: the order of its phases, and what they share.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::step_error::StepError;
use super::{cutover, reverse, snapshot_copy, stream_phase};
use crate::config::{Config, Mode};
use crate::conn::{ConnError, Retry};
use crate::control::progress::DbProgress;
use crate::control::state::{CutoverStep, ResumeState, ReverseEnd};
use crate::control::store::StateError;
use crate::control::writer::StateHandle;
use crate::copy::CopyError;
use crate::shutdown::Shutdown;
use crate::stream::publication::PublicationError;
use crate::stream::StreamError;

/// Everything a database's migration needs from the run.
pub(super) struct DbContext {
    pub(super) config: Arc<Config>,
    /// Fires on the operator's stop or when another database failed.
    pub(super) shutdown: Shutdown,
    /// Turns true when the operator's cutover is accepted.
    pub(super) cutover: watch::Receiver<bool>,
    /// The operator's `rollback` or `finish` of reverse replication.
    pub(super) reverse_end: watch::Receiver<Option<ReverseEnd>>,
    /// Online: copy done and initial backlog applied.
    pub(super) ready: Arc<AtomicBool>,
    /// The daemon's state writer.
    pub(super) state: StateHandle,
    pub(super) progress: Arc<DbProgress>,
    pub(super) db: String,
    pub(super) work_dir: PathBuf,
}

/// Errors of one database's migration.
#[derive(Debug, thiserror::Error)]
pub(super) enum DbError {
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Publication(#[from] PublicationError),
    #[error("database {db}: cannot connect to the {side} server {target}: {source}")]
    Connect {
        db: String,
        side: &'static str,
        target: String,
        #[source]
        source: ConnError,
    },
}

impl DbError {
    /// Whether the failed step can succeed when tried again.
    pub(super) fn retry(&self) -> Retry {
        match self {
            DbError::Copy(e) => e.retry(),
            DbError::Stream(e) => e.retry(),
            DbError::Step(e) => e.retry(),
            DbError::Publication(e) => e.retry(),
            DbError::Connect { source, .. } => source.retry(),
            DbError::State(_) => Retry::Deterministic,
        }
    }
}

/// Attempts of the copy after interruptions without progress in between
/// (with the backoff below, about eight minutes).
const COPY_ATTEMPTS: u32 = 20;
/// Longest wait between two attempts of the copy.
const COPY_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How one database's migration ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DbEnd {
    /// Copied (offline) or cut over (online).
    Done,
    /// Stopped by a signal; resumable.
    Stopped,
    /// Reverse replication ended in `rollback`.
    RolledBack,
}

impl DbContext {
    /// This database's resume bookkeeping as state.json has it now.
    pub(super) fn resume(&self) -> ResumeState {
        self.state
            .snapshot()
            .database(&self.db)
            .map(|d| d.resume.clone())
            .unwrap_or_default()
    }

    /// Records `update` in this database's resume bookkeeping and returns
    /// once it is durable: what it records guards the step that follows.
    pub(super) async fn record(
        &self,
        update: impl FnOnce(&mut ResumeState) + Send + 'static,
    ) -> Result<(), StateError> {
        self.state.record(&self.db, update).await
    }
}

/// Copy (unless an earlier run finished it), then stream and cut over, or
/// finish a cutover an earlier run was killed in; every log line of it
/// inside a `database{name=…}` span.
pub(super) async fn migrate_database(ctx: &DbContext) -> Result<DbEnd, DbError> {
    let span = tracing::info_span!("database", name = %ctx.db);
    tracing::Instrument::instrument(phases(ctx), span).await
}

async fn phases(ctx: &DbContext) -> Result<DbEnd, DbError> {
    let end = forward(ctx).await?;
    match ctx.resume().reverse {
        Some(r) if end == DbEnd::Done => reverse::reverse_phase(ctx, r).await,
        _ => Ok(end),
    }
}

/// Copy, stream and cutover from the source to the target.
async fn forward(ctx: &DbContext) -> Result<DbEnd, DbError> {
    let db = ctx.db.as_str();
    let resume = ctx.resume();
    match resume.cutover {
        CutoverStep::Done => return Ok(DbEnd::Done),
        CutoverStep::Applied => {
            tracing::info!(db, "finishing the cutover an earlier run began");
            cutover::finish(ctx).await?;
            return Ok(DbEnd::Done);
        }
        CutoverStep::NotRequested | CutoverStep::Requested => {}
    }
    if !resume.copy_completed {
        if copy_with_retries(ctx).await? == DbEnd::Stopped {
            return Ok(DbEnd::Stopped);
        }
    } else {
        tracing::info!(db, "snapshot copy already done");
    }
    if ctx.config.mode == Mode::Offline {
        return Ok(DbEnd::Done);
    }
    stream_phase::stream_phase(ctx).await
}

/// The snapshot copy, tried again after an interruption (a network cut, a
/// server restart): each attempt resumes from what the last one finished.
/// A deterministic error fails at once; interruptions are bounded by
/// [`COPY_ATTEMPTS`] in a row without rows copied in between.
async fn copy_with_retries(ctx: &DbContext) -> Result<DbEnd, DbError> {
    let mut attempts = 0u32;
    let mut first = true;
    let mut rows_at_failure = None;
    loop {
        // The copy stops by being dropped at its next await: a new attempt
        // or run resumes from what state.json and the journal say.
        let resume = ctx.resume();
        let r = tokio::select! {
            r = snapshot_copy::copy_phase(ctx, &resume) => r,
            _ = ctx.shutdown.requested() => return Ok(DbEnd::Stopped),
        };
        let e = match r {
            Ok(()) => return Ok(DbEnd::Done),
            Err(e) => e,
        };
        let rows = ctx.progress.rows_copied.load(Ordering::Relaxed);
        if rows_at_failure != Some(rows) {
            attempts = 0;
        }
        rows_at_failure = Some(rows);
        attempts += 1;
        // Not reaching a server on the first attempt is a wrong address or
        // a server that is down, not an interruption: said at once.
        let never_connected = first && matches!(e, DbError::Connect { .. });
        first = false;
        if never_connected || e.retry() == Retry::Deterministic || attempts >= COPY_ATTEMPTS {
            return Err(e);
        }
        let wait = Duration::from_secs(1u64 << (attempts - 1).min(5)).min(COPY_MAX_BACKOFF);
        tracing::warn!(
            attempt = attempts,
            limit = COPY_ATTEMPTS,
            wait_s = wait.as_secs(),
            "copy interrupted, resuming after a pause: {e}"
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.shutdown.requested() => return Ok(DbEnd::Stopped),
        }
    }
}

/// The directory of database `db`'s temporary files under `state_dir`.
/// Database names may hold any character, so each one not safe in a file
/// name is spelled out as `_xx` hex bytes (and `_` itself as `_5f`): two
/// databases never share a directory, which `remove_dir_all` would empty.
pub(super) fn work_dir(state_dir: &Path, db: &str) -> PathBuf {
    let mut name = String::with_capacity(db.len());
    for b in db.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("_{b:02x}"));
        }
    }
    state_dir.join("work").join(name)
}

#[cfg(test)]
mod tests {
    use super::work_dir;
    use std::path::Path;

    #[test]
    fn work_dirs_of_different_databases_differ() {
        let root = Path::new("/s");
        assert_ne!(work_dir(root, "a.b"), work_dir(root, "a_b"));
        assert_eq!(work_dir(root, "app-1"), Path::new("/s/work/app-1"));
        assert_eq!(work_dir(root, "a b"), Path::new("/s/work/a_20b"));
        assert_eq!(work_dir(root, "ü"), Path::new("/s/work/_c3_bc"));
    }
}
