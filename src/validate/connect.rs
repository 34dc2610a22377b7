//! Opening the validation sessions and explaining why one could not be
//! opened: refused, timeout, TLS, wrong password, pg_hba, missing database.
//!
//! Every session is opened with `default_transaction_read_only = on`, so a
//! check that tried to write would fail instead of changing a server.

use std::io::ErrorKind;

use crate::config::Endpoint;
use crate::conn::{sqlstate, ConnError, ConnectParams, Connection};

/// Which server a session goes to, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The server migrated from.
    Source,
    /// The server migrated to.
    Target,
}

impl Side {
    /// `source` / `target`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

/// Session parameters for validation: read-only, named so a DBA sees who
/// is connected.
pub fn params(endpoint: &Endpoint, db: &str) -> ConnectParams {
    let mut p = endpoint.connect_params(db);
    p.application_name = "pgmigrate-validate".into();
    p.options
        .push(("default_transaction_read_only".into(), "on".into()));
    p
}

/// Opens a read-only session to `db`.
pub async fn open(endpoint: &Endpoint, db: &str) -> Result<Connection, ConnError> {
    Connection::connect(&params(endpoint, db)).await
}

/// Opens a read-only session to the first of `databases` that exists, else
/// to `postgres`, else `template1`. Returns the database it reached.
pub async fn open_server(
    endpoint: &Endpoint,
    databases: &[&str],
) -> Result<(Connection, String), ConnError> {
    let mut last = None;
    for db in databases.iter().copied().chain(["postgres", "template1"]) {
        match open(endpoint, db).await {
            Ok(c) => return Ok((c, db.to_string())),
            // Only a missing database is worth another try: any other
            // failure (password, pg_hba, network) would repeat.
            Err(e) if e.code() == Some(crate::conn::sqlstate::INVALID_CATALOG_NAME) => {
                last = Some(e)
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(ConnError::Closed))
}

/// A connection failure put in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// What happened, naming the server.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

/// Explains why a session to `server` (`host:port` or socket) as `user` on
/// `side` failed.
pub fn explain(side: Side, server: &str, user: &str, err: &ConnError) -> Explained {
    let s = side.as_str();
    let (reason, fix) = match err {
        ConnError::Connect { source, .. } => match source.kind() {
            ErrorKind::ConnectionRefused => (
                "connection refused".to_string(),
                format!("check that PostgreSQL runs on the {s} and listens on this address and port (listen_addresses, port) and that no firewall rejects it"),
            ),
            ErrorKind::NotFound => (
                "no server socket there".to_string(),
                format!("check the {s} host (socket directory) and port, and that the server runs"),
            ),
            _ => (
                format!("cannot reach the server: {source}"),
                format!("check the {s} host name, network route and firewall"),
            ),
        },
        ConnError::Timeout { seconds, .. } => (
            format!("timed out after {seconds}s"),
            format!("check the network path and firewall to the {s}, and that the server is not overloaded"),
        ),
        ConnError::Tls { reason, .. } => (
            format!("TLS failed: {reason}"),
            format!("check [{s}] sslmode and sslrootcert against the server's certificate and its ssl setting"),
        ),
        ConnError::Auth { reason, .. } => (
            format!("authentication as \"{user}\" failed: {reason}"),
            format!("set [{s}] password_env or password_file, or allow a supported method in pg_hba.conf"),
        ),
        ConnError::Db(e) => match e.code.as_str() {
            sqlstate::INVALID_PASSWORD => (
                format!("password authentication failed for user \"{user}\""),
                format!("check the password in [{s}] password_env / password_file"),
            ),
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION if e.message.contains("pg_hba.conf") => (
                format!("rejected by pg_hba.conf: {}", e.message),
                format!("add a pg_hba.conf line on the {s} allowing user \"{user}\" from this host (with hostssl if TLS is required), then reload"),
            ),
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION => (
                format!("login as \"{user}\" refused: {}", e.message),
                format!("check that role \"{user}\" exists on the {s} and has LOGIN"),
            ),
            sqlstate::INVALID_CATALOG_NAME => (
                e.message.clone(),
                format!("create the database on the {s} or fix the databases list"),
            ),
            sqlstate::INSUFFICIENT_PRIVILEGE => (
                e.message.clone(),
                format!("GRANT CONNECT on the database to \"{user}\" on the {s}"),
            ),
            sqlstate::TOO_MANY_CONNECTIONS => (
                e.message.clone(),
                format!("free connections on the {s} or raise max_connections"),
            ),
            sqlstate::CANNOT_CONNECT_NOW => (
                e.message.clone(),
                format!("wait until the {s} has started and accepts connections"),
            ),
            _ => (e.to_string(), format!("see the {s} server's log")),
        },
        other => (other.to_string(), format!("see the {s} server's log")),
    };
    Explained {
        message: format!("cannot connect to the {s} {server} as \"{user}\": {reason}"),
        fix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::DbError;

    fn db_err(code: &str, message: &str) -> ConnError {
        ConnError::Db(Box::new(DbError {
            severity: "FATAL".into(),
            code: code.into(),
            message: message.into(),
            ..DbError::default()
        }))
    }

    #[test]
    fn reasons_are_told_apart() {
        let e = explain(
            Side::Source,
            "db1:5432",
            "app",
            &db_err("28P01", "password authentication failed for user \"app\""),
        );
        assert!(e.message.contains("source db1:5432"), "{e:?}");
        assert!(e.message.contains("password authentication failed"));
        assert!(e.fix.contains("password_file"));

        let e = explain(
            Side::Target,
            "db2:5432",
            "app",
            &db_err("28000", "no pg_hba.conf entry for host \"10.0.0.1\""),
        );
        assert!(e.message.contains("rejected by pg_hba.conf"), "{e:?}");
        assert!(e.fix.contains("pg_hba.conf"));

        let refused = ConnError::Connect {
            target: "db1:1".into(),
            source: std::io::Error::from(ErrorKind::ConnectionRefused),
        };
        let e = explain(Side::Source, "db1:1", "app", &refused);
        assert!(e.message.contains("connection refused"), "{e:?}");

        let t = ConnError::Timeout {
            target: "db1:1".into(),
            seconds: 15,
        };
        assert!(explain(Side::Source, "db1:1", "app", &t)
            .message
            .contains("timed out after 15s"));

        let tls = ConnError::Tls {
            target: "db1:1".into(),
            reason: "server does not support TLS".into(),
        };
        let e = explain(Side::Target, "db1:1", "app", &tls);
        assert!(e.message.contains("TLS failed"), "{e:?}");
        assert!(e.fix.contains("sslmode"));
    }
}
