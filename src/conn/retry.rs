//! The one classification of failures into "try again later" and "will
//! fail the same way every time", used by copy, stream, apply and cutover:
//! every error type's `retry()` ends here.

use super::sqlstate;
use super::ConnError;

/// Whether trying the same work again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The server rejects the work itself (a column the target lacks, a
    /// value it refuses, a missing object): it will fail the same way every
    /// time, so the migration fails at once (the stream allows a second
    /// attempt only to rule out a racing cause).
    Deterministic,
    /// The session, the server or a lock was in the way: retried with
    /// backoff.
    Transient,
}

/// SQLSTATEs whose work succeeds when tried again later. Beyond the
/// contract's list (admin/crash shutdown, cannot connect now, class 08,
/// serialization failure, deadlock): a lock or a statement canceled by an
/// operator, a connection limit reached for a moment, and a slot still
/// held by the walsender of the session we just lost.
const TRANSIENT_CODES: &[&str] = &[
    sqlstate::ADMIN_SHUTDOWN,
    sqlstate::CRASH_SHUTDOWN,
    sqlstate::CANNOT_CONNECT_NOW,
    sqlstate::SERIALIZATION_FAILURE,
    sqlstate::DEADLOCK_DETECTED,
    sqlstate::LOCK_NOT_AVAILABLE,
    sqlstate::QUERY_CANCELED,
    sqlstate::TOO_MANY_CONNECTIONS,
    sqlstate::OBJECT_IN_USE,
];

/// Classifies a SQLSTATE the server sent.
pub fn of_sqlstate(code: &str) -> Retry {
    if code.starts_with(sqlstate::CLASS_CONNECTION_EXCEPTION) || TRANSIENT_CODES.contains(&code) {
        Retry::Transient
    } else {
        Retry::Deterministic
    }
}

/// Classifies a wire error: a lost or refused connection is transient (the
/// server restarts, the network comes back); a server error by its
/// SQLSTATE; what our side cannot do (authenticate without a password,
/// read a value, follow a protocol the server broke) is deterministic.
pub fn of_conn(e: &ConnError) -> Retry {
    match e {
        ConnError::Db(db) => of_sqlstate(&db.code),
        ConnError::Connect { .. }
        | ConnError::Timeout { .. }
        | ConnError::Io(_)
        | ConnError::Closed
        // A handshake cut by the network looks the same as a refused one;
        // validation has already connected with these settings once.
        | ConnError::Tls { .. } => Retry::Transient,
        ConnError::Auth { .. } | ConnError::Protocol(_) | ConnError::Value { .. } => {
            Retry::Deterministic
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::DbError;

    fn db(code: &str) -> ConnError {
        ConnError::Db(Box::new(DbError {
            severity: "ERROR".into(),
            code: code.into(),
            ..DbError::default()
        }))
    }

    #[test]
    fn interruptions_are_transient() {
        for code in [
            sqlstate::ADMIN_SHUTDOWN,
            sqlstate::CRASH_SHUTDOWN,
            sqlstate::CANNOT_CONNECT_NOW,
            sqlstate::SERIALIZATION_FAILURE,
            sqlstate::DEADLOCK_DETECTED,
            sqlstate::CONNECTION_FAILURE,
            sqlstate::PROTOCOL_VIOLATION,
            "08000",
            "08001",
            "08003",
            "08004",
            sqlstate::LOCK_NOT_AVAILABLE,
            sqlstate::QUERY_CANCELED,
            sqlstate::TOO_MANY_CONNECTIONS,
            sqlstate::OBJECT_IN_USE,
        ] {
            assert_eq!(of_conn(&db(code)), Retry::Transient, "{code}");
        }
    }

    #[test]
    fn everything_else_the_server_says_is_deterministic() {
        for code in [
            sqlstate::UNDEFINED_COLUMN,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            sqlstate::INVALID_CATALOG_NAME,
            sqlstate::SYNTAX_ERROR,
            sqlstate::DUPLICATE_TABLE,
            "0A000",
            "22P02",
            "23505",
            "23514",
            "42883",
            "28P01",
            "53100",
            "XX000",
        ] {
            assert_eq!(of_conn(&db(code)), Retry::Deterministic, "{code}");
        }
    }

    #[test]
    fn lost_connections_are_transient_our_own_limits_deterministic() {
        assert_eq!(of_conn(&ConnError::Closed), Retry::Transient);
        assert_eq!(
            of_conn(&ConnError::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset
            ))),
            Retry::Transient
        );
        assert_eq!(
            of_conn(&ConnError::Timeout {
                target: "h:5432".into(),
                seconds: 10
            }),
            Retry::Transient
        );
        assert_eq!(
            of_conn(&ConnError::Auth {
                user: "u".into(),
                reason: "no password".into()
            }),
            Retry::Deterministic
        );
        assert_eq!(
            of_conn(&ConnError::protocol("bad message")),
            Retry::Deterministic
        );
    }
}
