//! Errors of the snapshot copy, each naming the database (and table) involved.

use crate::conn::ConnError;

use super::pg_tools::ToolError;

/// Why copying a database failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A statement on the source failed.
    #[error("database {db}: {context} on the source: {source}")]
    Source {
        /// Database being migrated.
        db: String,
        /// What we were doing.
        context: String,
        /// The wire error.
        #[source]
        source: Box<ConnError>,
    },
    /// A statement on the target failed.
    #[error("database {db}: {context} on the target: {source}")]
    Target {
        /// Database being migrated.
        db: String,
        /// What we were doing.
        context: String,
        /// The wire error.
        #[source]
        source: Box<ConnError>,
    },
    /// One archive entry of the schema failed on the target.
    #[error("database {db}: {context}: archive entry \"{entry}\" failed on the target: {source}")]
    Entry {
        /// Database being migrated.
        db: String,
        /// What we were doing.
        context: String,
        /// The entry's `pg_restore --list` line.
        entry: String,
        /// The wire error.
        #[source]
        source: Box<ConnError>,
    },
    /// Copying one table failed.
    #[error("database {db}, table {table}: {context}: {source}")]
    Table {
        /// Database being migrated.
        db: String,
        /// `schema.table`.
        table: String,
        /// What we were doing.
        context: String,
        /// The wire error.
        #[source]
        source: Box<ConnError>,
    },
    /// pg_dump or pg_restore failed.
    #[error("database {db}: {source}")]
    Tool {
        /// Database being migrated.
        db: String,
        /// The tool's error.
        #[source]
        source: ToolError,
    },
    /// The database does not exist on the source.
    #[error("database {db} does not exist on the source server {server}")]
    SourceDatabaseMissing {
        /// Database name.
        db: String,
        /// Source address.
        server: String,
    },
    /// The database exists on the target and overwrite_target is off.
    #[error("database {db} already exists on the target server {server}; drop it or set overwrite_target = true")]
    TargetDatabaseExists {
        /// Database name.
        db: String,
        /// Target address.
        server: String,
    },
    /// The target connection reaches the source server itself: creating or
    /// dropping "the target database" there would destroy the source.
    #[error("database {db}: the target {target} is the source server {source_server} (same postmaster, port {port}); point [target] at another server")]
    TargetIsSource {
        /// Database name.
        db: String,
        /// Target address as configured.
        target: String,
        /// Source address as configured.
        source_server: String,
        /// The server's port as it reports it.
        port: String,
    },
    /// overwrite_target would drop a database another migration uses.
    #[error("database {db} on the target server {server} is in use by another migration and is not overwritten: {why}")]
    TargetDatabaseInUse {
        /// Database name.
        db: String,
        /// Target address.
        server: String,
        /// The slots or sessions found.
        why: String,
    },
    /// A local file operation failed.
    #[error("database {db}: {path}: {source}")]
    Io {
        /// Database being migrated.
        db: String,
        /// File involved.
        path: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The copy was stopped by shutdown or cancel.
    #[error("database {db}: copy interrupted")]
    Interrupted {
        /// Database being migrated.
        db: String,
    },
    /// Something the server sent made no sense for the copy.
    #[error("database {db}: {message}")]
    Unexpected {
        /// Database being migrated.
        db: String,
        /// What was wrong.
        message: String,
    },
}

impl CopyError {
    pub(crate) fn source(db: &str, context: &str, source: ConnError) -> CopyError {
        CopyError::Source {
            db: db.to_string(),
            context: context.to_string(),
            source: Box::new(source),
        }
    }

    pub(crate) fn target(db: &str, context: &str, source: ConnError) -> CopyError {
        CopyError::Target {
            db: db.to_string(),
            context: context.to_string(),
            source: Box::new(source),
        }
    }

    pub(crate) fn tool(db: &str, source: ToolError) -> CopyError {
        CopyError::Tool {
            db: db.to_string(),
            source,
        }
    }

    pub(crate) fn io(db: &str, path: &std::path::Path, source: std::io::Error) -> CopyError {
        CopyError::Io {
            db: db.to_string(),
            path: path.display().to_string(),
            source,
        }
    }
}

impl CopyError {
    /// Whether the copy step can succeed when tried again: a server error
    /// by its SQLSTATE ([`crate::conn::retry`]); what the configuration or
    /// the servers' contents decide, deterministic.
    pub fn retry(&self) -> crate::conn::Retry {
        use crate::conn::Retry;
        match self {
            CopyError::Source { source, .. }
            | CopyError::Target { source, .. }
            | CopyError::Entry { source, .. }
            | CopyError::Table { source, .. } => source.retry(),
            CopyError::Io { .. } | CopyError::Interrupted { .. } => Retry::Transient,
            CopyError::Tool { .. }
            | CopyError::SourceDatabaseMissing { .. }
            | CopyError::TargetDatabaseExists { .. }
            | CopyError::TargetIsSource { .. }
            | CopyError::TargetDatabaseInUse { .. }
            | CopyError::Unexpected { .. } => Retry::Deterministic,
        }
    }
}
