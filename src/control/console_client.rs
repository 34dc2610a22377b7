//! The client side of the admin console, for the `show`, `cutover` and
//! `cancel` subcommands: one short session per command with our own wire
//! client, and a poll that falls back to state.json when no daemon answers.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::console::{ConsoleCommand, CONSOLE_PORT};
use super::console_session::CLI_APPLICATION_NAME;
use super::state::MigrationState;
use super::status::Status;
use super::store::{StateError, StateStore};
use crate::config::MigrationName;
use crate::conn::{ConnError, ConnectParams, Connection, Host, Row, SslMode};

/// How long to wait for a console that exists to answer the startup.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLSTATE of a console with every session taken.
use crate::conn::sqlstate::TOO_MANY_CONNECTIONS as SQLSTATE_TOO_MANY;

/// Tries, POLL_INTERVAL apart, while the console has no free session.
const BUSY_ATTEMPTS: u32 = 10;

/// Pause between two looks at the status while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Why a console command did not get its answer.
#[derive(Debug, Error)]
pub enum ConsoleClientError {
    /// No daemon listens on the migration's console socket.
    #[error("migration {name} is not running")]
    NotRunning {
        /// The migration.
        name: String,
    },
    /// The daemon answered with an error (a refusal or an unknown command).
    #[error("{message}")]
    Refused {
        /// The migration.
        name: String,
        /// The SQLSTATE of the error, e.g. 55000 for a state that forbids it.
        sqlstate: String,
        /// The daemon's reason.
        message: String,
    },
    /// Talking to the console failed otherwise.
    #[error("admin console of migration {name}: {error}")]
    Conn {
        /// The migration.
        name: String,
        /// What failed.
        error: ConnError,
    },
    /// The console's answer is not what the command returns.
    #[error("admin console of migration {name} sent an unexpected reply: {reason}")]
    BadReply {
        /// The migration.
        name: String,
        /// What was wrong.
        reason: String,
    },
}

/// The console's connection parameters for migration `name`.
pub fn console_params(state_dir: &Path, name: &MigrationName) -> ConnectParams {
    let mut params = ConnectParams::new(
        Host::Unix(state_dir.join(name.as_str())),
        CONSOLE_PORT,
        "pgmigrate",
        "pgmigrate",
    );
    params.sslmode = SslMode::Disable;
    params.connect_timeout = CONNECT_TIMEOUT;
    // Lets the console admit us to a reserved session when other clients
    // hold all the ordinary ones.
    params.application_name = CLI_APPLICATION_NAME.to_owned();
    params
}

/// Sends `command` to the daemon of migration `name` and returns its rows.
pub async fn send(
    state_dir: &Path,
    name: &MigrationName,
    command: ConsoleCommand,
) -> Result<Vec<Row>, ConsoleClientError> {
    let conn_err = |error: ConnError| classify(name, error);
    let params = console_params(state_dir, name);
    let mut attempt = 1;
    let mut conn = loop {
        match Connection::connect(&params).await {
            Ok(conn) => break conn,
            // Every session, the reserved ones included, is taken: they are
            // short, so one frees up soon.
            Err(ConnError::Db(db)) if db.code == SQLSTATE_TOO_MANY && attempt < BUSY_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            Err(e) => return Err(conn_err(e)),
        }
    };
    let rows = conn
        .simple_query(command.as_sql())
        .await
        .map_err(conn_err)?;
    // The answer is in hand; a failed goodbye changes nothing.
    let _ = conn.close().await;
    Ok(rows)
}

/// The live state of migration `name` from its daemon's `SHOW STATUS`.
pub async fn fetch_state(
    state_dir: &Path,
    name: &MigrationName,
) -> Result<MigrationState, ConsoleClientError> {
    let rows = send(state_dir, name, ConsoleCommand::ShowStatus).await?;
    let bad = |reason: String| ConsoleClientError::BadReply {
        name: name.to_string(),
        reason,
    };
    let row = rows
        .first()
        .ok_or_else(|| bad("SHOW STATUS returned no row".into()))?;
    // state_json is the last column of SHOW STATUS.
    let last = row
        .len()
        .checked_sub(1)
        .ok_or_else(|| bad("SHOW STATUS returned no column".into()))?;
    let json = row
        .opt_str(last)
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("state_json is NULL".into()))?;
    serde_json::from_str(json).map_err(|e| bad(format!("state_json: {e}")))
}

/// Where a state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateSource {
    /// The running daemon's console.
    Console,
    /// state.json (no daemon answered).
    File,
}

/// Why no state could be read at all.
#[derive(Debug, Error)]
pub enum ReadStateError {
    /// The console answered wrongly.
    #[error(transparent)]
    Console(ConsoleClientError),
    /// state.json could not be read.
    #[error(transparent)]
    File(#[from] StateError),
}

/// The freshest state of migration `name`: the daemon's, else state.json's;
/// `None` when neither exists (an unknown migration).
pub async fn read_state(
    state_dir: &Path,
    name: &MigrationName,
) -> Result<Option<(MigrationState, StateSource)>, ReadStateError> {
    match fetch_state(state_dir, name).await {
        Ok(state) => return Ok(Some((state, StateSource::Console))),
        Err(ConsoleClientError::NotRunning { .. }) => {}
        // A console that exists but fails must not hide the state on disk.
        Err(e) => tracing::debug!(error = %e, "falling back to state.json"),
    }
    Ok(StateStore::read(state_dir, name)?.map(|s| (s, StateSource::File)))
}

/// Why waiting for a status ended without reaching it.
#[derive(Debug, Error)]
pub enum WaitError {
    /// The time ran out; carries the last status seen.
    #[error("timed out after {}s waiting for migration {name}; it is {last}", timeout.as_secs())]
    Timeout {
        /// The migration.
        name: String,
        /// The limit that passed.
        timeout: Duration,
        /// `status/substatus` when the time ran out.
        last: String,
    },
    /// The state could not be read.
    #[error(transparent)]
    Read(#[from] ReadStateError),
    /// The migration's state vanished.
    #[error("migration {name} has no state any more")]
    Gone {
        /// The migration.
        name: String,
    },
}

/// Polls migration `name` until its status is one of `until`, returning that
/// state, or until `timeout` (if any) passes. A daemon that exits meanwhile leaves
/// its last word in state.json, which is read instead.
pub async fn wait_for_status(
    state_dir: &Path,
    name: &MigrationName,
    until: &[Status],
    timeout: Option<Duration>,
) -> Result<MigrationState, WaitError> {
    wait_for(state_dir, name, |s| until.contains(&s.status()), timeout).await
}

/// Polls migration `name` until `done` holds for its state (status and
/// substatus), returning that state, or until `timeout` (if any) passes.
pub async fn wait_for(
    state_dir: &Path,
    name: &MigrationName,
    done: impl Fn(&MigrationState) -> bool,
    timeout: Option<Duration>,
) -> Result<MigrationState, WaitError> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let Some((state, _)) = read_state(state_dir, name).await? else {
            return Err(WaitError::Gone {
                name: name.to_string(),
            });
        };
        if done(&state) {
            return Ok(state);
        }
        let mut pause = POLL_INTERVAL;
        if let (Some(deadline), Some(timeout)) = (deadline, timeout) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WaitError::Timeout {
                    name: name.to_string(),
                    timeout,
                    last: format!("{}/{}", state.status(), state.substatus()),
                });
            }
            pause = pause.min(left);
        }
        tokio::time::sleep(pause).await;
    }
}

/// A missing or dead socket means no daemon; a server error is a refusal.
fn classify(name: &MigrationName, error: ConnError) -> ConsoleClientError {
    let name = name.to_string();
    match error {
        ConnError::Connect { ref source, .. }
            if matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            ConsoleClientError::NotRunning { name }
        }
        ConnError::Db(db) => ConsoleClientError::Refused {
            name,
            sqlstate: db.code,
            message: db.message,
        },
        error => ConsoleClientError::Conn { name, error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::DbError;

    fn name() -> MigrationName {
        MigrationName::new("m1").unwrap()
    }

    #[test]
    fn params_point_at_the_socket() {
        let p = console_params(Path::new("/var/lib/pgmigrate"), &name());
        assert_eq!(p.target(), "/var/lib/pgmigrate/m1/.s.PGSQL.6543");
        assert_eq!(p.sslmode, SslMode::Disable);
    }

    #[test]
    fn missing_or_dead_socket_is_not_running() {
        for kind in [io::ErrorKind::NotFound, io::ErrorKind::ConnectionRefused] {
            let e = ConnError::Connect {
                target: "x".into(),
                source: io::Error::from(kind),
            };
            let c = classify(&name(), e);
            assert!(matches!(c, ConsoleClientError::NotRunning { .. }), "{c:?}");
            assert_eq!(c.to_string(), "migration m1 is not running");
        }
        let e = ConnError::Connect {
            target: "x".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert!(matches!(
            classify(&name(), e),
            ConsoleClientError::Conn { .. }
        ));
    }

    #[test]
    fn server_error_is_a_refusal_with_its_reason() {
        let db = DbError {
            severity: "ERROR".into(),
            code: "55000".into(),
            message: "cutover is accepted only in WaitingForUserAction".into(),
            ..DbError::default()
        };
        let c = classify(&name(), ConnError::Db(Box::new(db)));
        let ConsoleClientError::Refused { sqlstate, .. } = &c else {
            panic!("{c:?}");
        };
        assert_eq!(sqlstate, "55000");
        assert_eq!(
            c.to_string(),
            "cutover is accepted only in WaitingForUserAction"
        );
    }

    #[tokio::test]
    async fn without_daemon_state_comes_from_the_file() {
        let root = tempfile::tempdir().unwrap();
        assert!(read_state(root.path(), &name()).await.unwrap().is_none());
        let store = StateStore::open(root.path(), &name()).unwrap();
        store.lock().unwrap();
        store
            .update(|s| {
                s.force_pair(Status::Canceled, crate::control::Substatus::Canceled);
            })
            .unwrap();
        let (state, source) = read_state(root.path(), &name()).await.unwrap().unwrap();
        assert_eq!(
            (state.status(), source),
            (Status::Canceled, StateSource::File)
        );
        let done = wait_for_status(
            root.path(),
            &name(),
            &[Status::Canceled],
            Some(Duration::from_secs(1)),
        )
        .await
        .unwrap();
        assert_eq!(done.status(), Status::Canceled);
        let e = wait_for_status(
            root.path(),
            &name(),
            &[Status::Succeeded],
            Some(Duration::from_millis(50)),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().ends_with("it is Canceled/Canceled"), "{e}");
    }
}
