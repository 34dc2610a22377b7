//! The admin console of a running daemon: a PostgreSQL-protocol server on
//! the unix socket `<state_dir>/<name>/.s.PGSQL.6543`, so operators (and the
//! `show`, `cutover` and `cancel` subcommands) talk to it with psql or any
//! PostgreSQL client, as with pgbouncer's console.
//!
//! The socket's mode (0600, in a 0700 directory) is the access control, so
//! every user and database name is accepted without a password. Only the
//! simple query protocol is served, and only the commands of [`ConsoleCommand`].
//! The daemon answers through a [`ConsoleHandler`], synchronously from its
//! in-memory state: a cutover or cancel is only registered there, so no query
//! ever waits on the migration.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::types::format::FormatOptions;
use thiserror::Error;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::console_session::{self, Admission, SessionLimits};
use crate::conn::sqlstate;
use crate::listen::accept::AcceptErrors;

/// The console's port: the suffix of its socket's name.
pub const CONSOLE_PORT: u16 = 6543;

/// At most this many characters of an unknown command are quoted back.
const ECHO_LIMIT: usize = 200;

/// SQLSTATE of a command the console does not know (`syntax_error`).
pub const SQLSTATE_SYNTAX_ERROR: &str = sqlstate::SYNTAX_ERROR;

/// SQLSTATE of a command refused in the migration's current state
/// (`object_not_in_prerequisite_state`).
pub const SQLSTATE_NOT_IN_PREREQUISITE_STATE: &str = sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE;

/// SQLSTATE of a reply the handler built wrongly (`internal_error`).
const SQLSTATE_INTERNAL_ERROR: &str = sqlstate::INTERNAL_ERROR;

/// What an unknown command's error lists.
const COMMAND_LIST: &str =
    "SHOW STATUS, SHOW DATABASES, SHOW TABLES, CUTOVER, CANCEL, CANCEL DROP TARGET, VERIFY, SHOW VERIFY, ROLLBACK, FINISH";

/// The socket file of the console in `socket_dir` (`<state_dir>/<name>`).
pub fn socket_path(socket_dir: &Path) -> PathBuf {
    socket_dir.join(format!(".s.PGSQL.{CONSOLE_PORT}"))
}

/// A console command, parsed from the query text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleCommand {
    /// `SHOW STATUS`: the migration as a whole, with its state as JSON.
    ShowStatus,
    /// `SHOW DATABASES`: one row per database.
    ShowDatabases,
    /// `SHOW TABLES`: the snapshot copy's table counts per database.
    ShowTables,
    /// `SHOW VERIFY`: the last verify while streaming, its progress or result.
    ShowVerify,
    /// `VERIFY`: compare source and target at one LSN while streaming.
    Verify,
    /// `CUTOVER`: trigger the cutover.
    Cutover,
    /// `ROLLBACK`: end reverse replication back on the source.
    Rollback,
    /// `FINISH`: end reverse replication, the target stays.
    Finish,
    /// `CANCEL` or, with `drop_target`, `CANCEL DROP TARGET`.
    Cancel {
        /// Also drop the target databases this migration created.
        drop_target: bool,
    },
}

impl ConsoleCommand {
    /// Parses a query: case-insensitive words separated by any whitespace,
    /// with surrounding whitespace and one trailing `;` ignored.
    pub fn parse(query: &str) -> Result<ConsoleCommand, UnknownCommand> {
        let trimmed = query.trim();
        let body = trimmed.strip_suffix(';').unwrap_or(trimmed);
        let words: Vec<String> = body
            .split_whitespace()
            .map(|w| w.to_ascii_uppercase())
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["SHOW", "STATUS"] => Ok(ConsoleCommand::ShowStatus),
            ["SHOW", "DATABASES"] => Ok(ConsoleCommand::ShowDatabases),
            ["SHOW", "TABLES"] => Ok(ConsoleCommand::ShowTables),
            ["SHOW", "VERIFY"] => Ok(ConsoleCommand::ShowVerify),
            ["VERIFY"] => Ok(ConsoleCommand::Verify),
            ["CUTOVER"] => Ok(ConsoleCommand::Cutover),
            ["ROLLBACK"] => Ok(ConsoleCommand::Rollback),
            ["FINISH"] => Ok(ConsoleCommand::Finish),
            ["CANCEL"] => Ok(ConsoleCommand::Cancel { drop_target: false }),
            ["CANCEL", "DROP", "TARGET"] => Ok(ConsoleCommand::Cancel { drop_target: true }),
            _ => Err(UnknownCommand {
                query: echo(trimmed),
            }),
        }
    }

    /// The command's text, as a client sends it.
    pub fn as_sql(self) -> &'static str {
        match self {
            ConsoleCommand::ShowStatus => "SHOW STATUS",
            ConsoleCommand::ShowDatabases => "SHOW DATABASES",
            ConsoleCommand::ShowTables => "SHOW TABLES",
            ConsoleCommand::ShowVerify => "SHOW VERIFY",
            ConsoleCommand::Verify => "VERIFY",
            ConsoleCommand::Cutover => "CUTOVER",
            ConsoleCommand::Rollback => "ROLLBACK",
            ConsoleCommand::Finish => "FINISH",
            ConsoleCommand::Cancel { drop_target: false } => "CANCEL",
            ConsoleCommand::Cancel { drop_target: true } => "CANCEL DROP TARGET",
        }
    }
}

impl fmt::Display for ConsoleCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_sql())
    }
}

/// `query` as quoted in an error: its first [`ECHO_LIMIT`] characters.
fn echo(query: &str) -> String {
    match query.char_indices().nth(ECHO_LIMIT) {
        Some((cut, _)) => format!("{}… ({} bytes)", &query[..cut], query.len()),
        None => query.to_owned(),
    }
}

/// A query that is none of the console's commands.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown console command \"{query}\"; the commands are {COMMAND_LIST}")]
pub struct UnknownCommand {
    /// The query as received, trimmed, and cut to its first 200
    /// characters: an error must not echo a huge query back.
    pub query: String,
}

/// A console reply: a result set (possibly empty) and a command tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleReply {
    /// Column names; none for a reply without a result set.
    pub columns: Vec<String>,
    /// Rows, each with one value per column (`None` is SQL NULL).
    pub rows: Vec<Vec<Option<String>>>,
    /// The command tag, e.g. `SHOW` or `CUTOVER`.
    pub tag: String,
}

impl ConsoleReply {
    /// A reply without a result set: only the command tag (`CUTOVER`, `CANCEL`).
    pub fn accepted(command: ConsoleCommand) -> ConsoleReply {
        let tag = match command {
            ConsoleCommand::Cancel { .. } => "CANCEL",
            other => other.as_sql(),
        };
        ConsoleReply {
            columns: Vec::new(),
            rows: Vec::new(),
            tag: tag.to_owned(),
        }
    }
}

/// Why the daemon refused a command; sent as an ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message} (SQLSTATE {sqlstate})")]
pub struct ConsoleRefusal {
    /// Five-character SQLSTATE.
    pub sqlstate: String,
    /// Why, naming the state the migration is in.
    pub message: String,
}

impl ConsoleRefusal {
    /// A refusal because the migration is not in a state that allows the
    /// command (SQLSTATE 55000), e.g. "cutover is accepted only in
    /// WaitingForUserAction; the migration is InProgress/MigratingData".
    pub fn not_in_state(message: impl Into<String>) -> ConsoleRefusal {
        ConsoleRefusal {
            sqlstate: SQLSTATE_NOT_IN_PREREQUISITE_STATE.to_owned(),
            message: message.into(),
        }
    }
}

/// The daemon's side of the console. `handle` runs on the reactor, so it
/// must answer at once: from in-memory state for `SHOW`, and for `CUTOVER`
/// and `CANCEL` by registering the request (see [`ConsoleReply::accepted`]).
pub trait ConsoleHandler: Send + Sync + 'static {
    /// Answers one command.
    fn handle(&self, command: ConsoleCommand) -> Result<ConsoleReply, ConsoleRefusal>;
}

/// Why the console could not be served. Each names the socket.
#[derive(Debug, Error)]
pub enum ConsoleError {
    /// Something other than a socket is where the console's socket goes.
    #[error("{} exists and is not a socket; remove it", path.display())]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// A stale socket file could not be removed.
    #[error("cannot remove the stale console socket {}: {error}", path.display())]
    RemoveStale {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The socket could not be created.
    #[error("cannot listen on the console socket {}: {error}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The socket's mode could not be set to 0600.
    #[error("cannot restrict the console socket {} to mode 0600: {error}", path.display())]
    Chmod {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
}

/// Serves the console on `<socket_dir>/.s.PGSQL.6543` until `shutdown`
/// turns true (or its sender is dropped), then closes every session and
/// removes the socket file. A socket file left by a crashed daemon is
/// replaced; the caller holds the migration's lock, so no live daemon owns it.
/// Sessions are bounded by [`SessionLimits::default`].
pub async fn serve(
    socket_dir: &Path,
    handler: Arc<dyn ConsoleHandler>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ConsoleError> {
    serve_with(socket_dir, handler, shutdown, SessionLimits::default()).await
}

/// [`serve`] with other session limits (tests use short timeouts).
pub async fn serve_with(
    socket_dir: &Path,
    handler: Arc<dyn ConsoleHandler>,
    mut shutdown: watch::Receiver<bool>,
    limits: SessionLimits,
) -> Result<(), ConsoleError> {
    let path = socket_path(socket_dir);
    let listener = bind(&path)?;
    tracing::info!(socket = %path.display(), "admin console listening");
    let handlers = Arc::new(ConsoleHandlers {
        backend: Arc::new(ConsoleBackend { handler }),
    });
    let admission = Arc::new(Admission::new(limits));
    let mut errors = AcceptErrors::new(format!("admin console {}", path.display()));
    let mut sessions = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    errors.note_accepted();
                    // Over the pending limit the connection is closed at
                    // once: it has not even said who it is.
                    if let Some(pending) = admission.pending() {
                        let session = console_session::run(
                            stream,
                            Arc::clone(&handlers),
                            Arc::clone(&admission),
                            pending,
                        );
                        sessions.spawn(session);
                    }
                }
                Err(e) => errors.pause_after(&e).await,
            },
            // Reap finished sessions so the set stays as small as the live ones.
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    // Console sessions hold no work worth finishing: end them now.
    sessions.shutdown().await;
    drop(listener);
    if let Err(e) = fs::remove_file(&path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(socket = %path.display(), error = %e, "cannot remove the console socket");
        }
    }
    tracing::info!(socket = %path.display(), "admin console closed");
    Ok(())
}

/// Replaces a stale socket, binds, and restricts the socket to its owner.
/// Between bind and chmod the socket has the umask's mode, but it lives in
/// the migration's 0700 directory, so nobody else can reach it meanwhile.
fn bind(path: &Path) -> Result<UnixListener, ConsoleError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            fs::remove_file(path).map_err(|error| ConsoleError::RemoveStale {
                path: path.to_owned(),
                error,
            })?;
        }
        Ok(_) => {
            return Err(ConsoleError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(ConsoleError::RemoveStale {
                path: path.to_owned(),
                error,
            })
        }
    }
    let listener = UnixListener::bind(path).map_err(|error| ConsoleError::Bind {
        path: path.to_owned(),
        error,
    })?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|error| {
        ConsoleError::Chmod {
            path: path.to_owned(),
            error,
        }
    })?;
    Ok(listener)
}

/// pgwire's handler set: trust startup and our simple query handler; the
/// extended protocol, COPY and cancel keep pgwire's refusing defaults.
struct ConsoleHandlers {
    backend: Arc<ConsoleBackend>,
}

impl PgWireServerHandlers for ConsoleHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.backend)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.backend)
    }
}

/// Turns queries into [`ConsoleCommand`]s and replies into protocol messages.
struct ConsoleBackend {
    handler: Arc<dyn ConsoleHandler>,
}

impl NoopStartupHandler for ConsoleBackend {}

#[async_trait]
impl SimpleQueryHandler for ConsoleBackend {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let command = ConsoleCommand::parse(query)
            .map_err(|e| user_error(SQLSTATE_SYNTAX_ERROR, e.to_string()))?;
        let reply = self
            .handler
            .handle(command)
            .map_err(|refusal| user_error(&refusal.sqlstate, refusal.message))?;
        Ok(vec![encode_reply(reply)?])
    }
}

fn user_error(sqlstate: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        sqlstate.to_owned(),
        message,
    )))
}

/// A reply with columns becomes a text result set; one without, a bare tag.
fn encode_reply(reply: ConsoleReply) -> PgWireResult<Response> {
    if reply.columns.is_empty() {
        return Ok(Response::Execution(Tag::new(&reply.tag)));
    }
    let fields: Arc<Vec<FieldInfo>> = Arc::new(
        reply
            .columns
            .iter()
            .map(|name| FieldInfo::new(name.clone(), None, None, Type::TEXT, FieldFormat::Text))
            .collect(),
    );
    let options = FormatOptions::default();
    let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
    let mut rows = Vec::with_capacity(reply.rows.len());
    for (i, row) in reply.rows.iter().enumerate() {
        if row.len() != fields.len() {
            return Err(user_error(
                SQLSTATE_INTERNAL_ERROR,
                format!(
                    "console reply row {i} has {} values for {} columns",
                    row.len(),
                    fields.len()
                ),
            ));
        }
        for value in row {
            encoder.encode_field_with_type_and_format(
                value,
                &Type::TEXT,
                FieldFormat::Text,
                &options,
            )?;
        }
        rows.push(Ok(encoder.take_row()));
    }
    let mut response = QueryResponse::new(fields, futures::stream::iter(rows));
    response.set_command_tag(&reply.tag);
    Ok(Response::Query(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command_loosely() {
        let cases = [
            ("SHOW STATUS", ConsoleCommand::ShowStatus),
            ("show status;", ConsoleCommand::ShowStatus),
            ("  Show\t\n Status  ;  ", ConsoleCommand::ShowStatus),
            ("show databases", ConsoleCommand::ShowDatabases),
            ("SHOW TABLES;", ConsoleCommand::ShowTables),
            ("cutover", ConsoleCommand::Cutover),
            ("rollback;", ConsoleCommand::Rollback),
            (" FINISH ", ConsoleCommand::Finish),
            (" CUTOVER ; ", ConsoleCommand::Cutover),
            ("cancel", ConsoleCommand::Cancel { drop_target: false }),
            (
                "Cancel Drop Target;",
                ConsoleCommand::Cancel { drop_target: true },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(ConsoleCommand::parse(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn as_sql_parses_back() {
        for command in [
            ConsoleCommand::ShowStatus,
            ConsoleCommand::ShowDatabases,
            ConsoleCommand::ShowTables,
            ConsoleCommand::Cutover,
            ConsoleCommand::Cancel { drop_target: false },
            ConsoleCommand::Cancel { drop_target: true },
        ] {
            assert_eq!(ConsoleCommand::parse(command.as_sql()), Ok(command));
        }
    }

    #[test]
    fn rejects_everything_else_listing_the_commands() {
        for text in [
            "",
            ";",
            "SHOW",
            "SHOW STATUS;;",
            "SHOW STATUS; CUTOVER",
            "SELECT 1",
            "CANCEL DROP",
            "CANCEL DROP TARGET NOW",
            "CUTOVERR",
            "SHOW_STATUS",
            "ＳＨＯＷ STATUS",
        ] {
            let e = ConsoleCommand::parse(text).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(COMMAND_LIST), "{text:?}: {msg}");
        }
        let e = ConsoleCommand::parse("  select 1; ").unwrap_err();
        assert_eq!(e.query, "select 1;");
        let long = "x".repeat(100_000);
        let e = ConsoleCommand::parse(&long).unwrap_err();
        assert!(e.to_string().len() < 400, "{}", e.to_string().len());
        assert!(e.query.ends_with("… (100000 bytes)"), "{}", e.query);
    }

    #[test]
    fn accepted_replies_carry_the_command_tag() {
        assert_eq!(
            ConsoleReply::accepted(ConsoleCommand::Cutover).tag,
            "CUTOVER"
        );
        let cancel = ConsoleReply::accepted(ConsoleCommand::Cancel { drop_target: true });
        assert_eq!(cancel.tag, "CANCEL");
        assert!(cancel.columns.is_empty() && cancel.rows.is_empty());
    }

    #[test]
    fn refusal_defaults_to_55000() {
        let r = ConsoleRefusal::not_in_state("cutover is accepted only in WaitingForUserAction");
        assert_eq!(r.sqlstate, "55000");
    }

    #[test]
    fn mismatched_rows_are_an_internal_error_not_a_panic() {
        let reply = ConsoleReply {
            columns: vec!["a".into(), "b".into()],
            rows: vec![vec![Some("1".into())]],
            tag: "SHOW".into(),
        };
        let Err(PgWireError::UserError(info)) = encode_reply(reply) else {
            panic!("expected a user error");
        };
        assert_eq!(info.code, "XX000");
    }
}
