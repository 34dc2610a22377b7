//! Errors of the migration's own steps outside the snapshot copy: the
//! cutover, the replication objects (slot, publication, origins), the
//! source's WAL position and cleanup. Each keeps the wire error typed with
//! the database, the server and what was being done.

use crate::conn::{ConnError, Retry};
use crate::copy::CopyError;
use crate::stream::publication::PublicationError;

pub use crate::side::Side;

/// Why a step of the migration outside the copy failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A connect or statement failed on one server.
    #[error("database {db}: {doing} on the {side}: {source}")]
    Server {
        /// Database.
        db: String,
        /// The server.
        side: Side,
        /// What was being done (`dropping replication origin x_w0`, …).
        doing: String,
        /// The wire error.
        #[source]
        source: Box<ConnError>,
    },
    /// The server answered with something that does not read as what the
    /// query returns.
    #[error("database {db}: unreadable {what} from the {side}")]
    Unreadable {
        /// Database.
        db: String,
        /// The server.
        side: Side,
        /// The value (`pg_current_wal_lsn()`).
        what: &'static str,
    },
    /// `ddl` asks for a capture the source cannot give.
    #[error("database {db}: ddl = \"{mode}\" needs {needs}; {fix}")]
    DdlCapture {
        /// Database.
        db: String,
        /// The configured mode.
        mode: &'static str,
        /// What is missing.
        needs: String,
        /// What to do.
        fix: &'static str,
    },
    /// A copy-owned object (sequences, slot, publication, target database)
    /// could not be set or dropped.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// The publication could not be dropped.
    #[error(transparent)]
    Publication(#[from] PublicationError),
}

impl StepError {
    /// A failure on the source while `doing`.
    pub(crate) fn source(db: &str, doing: impl Into<String>, e: ConnError) -> StepError {
        StepError::server(db, Side::Source, doing, e)
    }

    /// A failure on the target while `doing`.
    pub(crate) fn target(db: &str, doing: impl Into<String>, e: ConnError) -> StepError {
        StepError::server(db, Side::Target, doing, e)
    }

    fn server(db: &str, side: Side, doing: impl Into<String>, e: ConnError) -> StepError {
        StepError::Server {
            db: db.to_string(),
            side,
            doing: doing.into(),
            source: Box::new(e),
        }
    }

    /// The SQLSTATE when a server reported the error.
    pub fn code(&self) -> Option<&str> {
        match self {
            StepError::Server { source, .. } => source.code(),
            StepError::Copy(
                CopyError::Source { source, .. } | CopyError::Target { source, .. },
            ) => source.code(),
            StepError::Publication(e) => e.code(),
            _ => None,
        }
    }

    /// Whether the step can succeed when tried again.
    pub fn retry(&self) -> Retry {
        match self {
            StepError::Server { source, .. } => source.retry(),
            StepError::Unreadable { .. } | StepError::DdlCapture { .. } => Retry::Deterministic,
            StepError::Copy(e) => e.retry(),
            StepError::Publication(e) => e.retry(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{sqlstate, DbError};

    #[test]
    fn a_step_names_database_server_and_what_it_did_and_keeps_the_sqlstate() {
        let e = StepError::target(
            "shop",
            "dropping replication origin x_w0",
            ConnError::Db(Box::new(DbError {
                severity: "ERROR".into(),
                code: sqlstate::INSUFFICIENT_PRIVILEGE.into(),
                message: "permission denied".into(),
                ..DbError::default()
            })),
        );
        assert_eq!(
            e.to_string(),
            "database shop: dropping replication origin x_w0 on the target: ERROR 42501: permission denied"
        );
        assert_eq!(e.code(), Some(sqlstate::INSUFFICIENT_PRIVILEGE));
        assert_eq!(e.retry(), Retry::Deterministic);
        let lost = StepError::source(
            "shop",
            "reading the current WAL position",
            ConnError::Closed,
        );
        assert_eq!(lost.retry(), Retry::Transient);
    }
}
