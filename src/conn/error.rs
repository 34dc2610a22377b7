//! Typed errors of the wire client. A server error keeps every field the
//! server sent (SQLSTATE first) so callers can match on it instead of on text.

use std::fmt;
use std::io;

use postgres_protocol::message::backend::ErrorFields;

/// An ErrorResponse or NoticeResponse from the server, field by field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbError {
    /// `ERROR`, `FATAL`, `PANIC`, `WARNING`, `NOTICE`, …
    pub severity: String,
    /// Five-character SQLSTATE, e.g. `28P01` for a wrong password.
    pub code: String,
    /// Primary human-readable message.
    pub message: String,
    /// Optional secondary message.
    pub detail: Option<String>,
    /// Optional suggestion what to do about the problem.
    pub hint: Option<String>,
    /// Character position in the query, 1-based.
    pub position: Option<String>,
    /// Call stack context.
    pub where_: Option<String>,
    /// Schema of the object involved.
    pub schema: Option<String>,
    /// Table of the object involved.
    pub table: Option<String>,
    /// Column involved.
    pub column: Option<String>,
    /// Constraint involved.
    pub constraint: Option<String>,
}

impl DbError {
    /// Builds a `DbError` from the fields of an ErrorResponse/NoticeResponse.
    pub(crate) fn from_fields(mut fields: ErrorFields<'_>) -> Result<DbError, ConnError> {
        use fallible_iterator::FallibleIterator;
        let mut e = DbError::default();
        while let Some(field) = fields
            .next()
            .map_err(|err| ConnError::protocol(format!("malformed error response: {err}")))?
        {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => e.severity = value,
                b'S' if e.severity.is_empty() => e.severity = value,
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                b'P' => e.position = Some(value),
                b'W' => e.where_ = Some(value),
                b's' => e.schema = Some(value),
                b't' => e.table = Some(value),
                b'c' => e.column = Some(value),
                b'n' => e.constraint = Some(value),
                _ => {}
            }
        }
        Ok(e)
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " (detail: {d})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DbError {}

/// Everything that can go wrong talking to a PostgreSQL server.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// TCP/unix connect failed: refused, unreachable, no such socket.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// `host:port` or the socket path.
        target: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Connect plus startup did not finish in time.
    #[error("timed out after {seconds}s connecting to {target}")]
    Timeout {
        /// `host:port` or the socket path.
        target: String,
        /// The limit that passed.
        seconds: u64,
    },
    /// TLS negotiation failed or was required but refused.
    #[error("TLS with {target}: {reason}")]
    Tls {
        /// `host:port`.
        target: String,
        /// What went wrong, e.g. a certificate error.
        reason: String,
    },
    /// Authentication could not proceed on our side (no password, method
    /// not supported). A wrong password arrives as [`ConnError::Db`] 28P01.
    #[error("authentication as user \"{user}\": {reason}")]
    Auth {
        /// The role we tried to log in as.
        user: String,
        /// Why it failed.
        reason: String,
    },
    /// The server answered with an ErrorResponse.
    #[error("{0}")]
    Db(Box<DbError>),
    /// Reading or writing the socket failed.
    #[error("connection I/O: {0}")]
    Io(#[from] io::Error),
    /// The server sent something the protocol does not allow here.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The server closed the connection.
    #[error("server closed the connection unexpectedly")]
    Closed,
    /// A value the server sent could not be read as the expected type.
    #[error("unexpected value in column {column}: {reason}")]
    Value {
        /// Column index or name.
        column: String,
        /// What was wrong.
        reason: String,
    },
}

impl ConnError {
    pub(crate) fn protocol(msg: impl Into<String>) -> ConnError {
        ConnError::Protocol(msg.into())
    }

    /// The SQLSTATE when the server reported the error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ConnError::Db(e) => Some(&e.code),
            _ => None,
        }
    }

    /// Whether the same work can succeed when tried again.
    pub fn retry(&self) -> super::Retry {
        super::retry::of_conn(self)
    }

    /// True when the connection can no longer be used (socket gone,
    /// protocol out of sync or a FATAL error).
    pub fn is_fatal(&self) -> bool {
        match self {
            ConnError::Db(e) => e.severity == "FATAL" || e.severity == "PANIC",
            _ => true,
        }
    }
}
