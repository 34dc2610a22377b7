//! Per database: prerequisites → snapshot copy → (stream → cutover) →
//! done, supervised by the daemon's run loop. One file per phase and its
//! owner; only `database` knows the order of the phases.

mod cleanup;
mod console;
mod copy_resume;
mod cutover;
mod daemon;
mod database;
mod prerequisites;
mod progress_line;
mod replication_objects;
mod requests;
mod reverse;
mod reverse_objects;
mod snapshot_copy;
mod step_error;
mod stream_phase;
mod wal_position;

use crate::control::store::StateError;

pub use cleanup::{cancel_offline, clean_up_database, CancelError};
pub use daemon::run;
pub use prerequisites::connect_maintenance;
pub use requests::Requests;
pub use step_error::{Side, StepError};

/// Re-export for the binary: the copy module's summary type.
pub use crate::copy::CopySummary;

/// How a `run` ended; the binary maps it to an exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every database migrated.
    Succeeded,
    /// At least one database failed.
    Failed,
    /// The migration was canceled.
    Canceled,
    /// Premigration validation found a failed check.
    ValidationFailed,
    /// Stopped by SIGTERM/SIGINT; `run` again resumes.
    Stopped,
    /// Reverse replication ended in `rollback`.
    RolledBack,
}

/// Errors that stop `run` before a migration status can be recorded.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// state.json could not be read, locked or written.
    #[error(transparent)]
    State(#[from] StateError),
}
