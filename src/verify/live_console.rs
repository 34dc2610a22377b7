//! The console's `VERIFY` and `SHOW VERIFY`, as the daemon answers them:
//! `VERIFY` starts a run (or names the one in progress) and returns its
//! id at once; `SHOW VERIFY` reports progress and, once done, the report.

use crate::control::status::{Status, Substatus};
use crate::control::{ConsoleCommand, ConsoleRefusal, ConsoleReply, MigrationState};

use super::live::LiveVerify;

/// Columns of `SHOW VERIFY`, in order.
pub const SHOW_VERIFY_COLUMNS: [&str; 8] = [
    "id",
    "state",
    "started_on",
    "tables_done",
    "tables_total",
    "held_ms",
    "message",
    "report_json",
];

/// Answers `VERIFY` or `SHOW VERIFY`.
pub fn reply(
    verify: &std::sync::Arc<LiveVerify>,
    cmd: ConsoleCommand,
    state: &MigrationState,
) -> Result<ConsoleReply, ConsoleRefusal> {
    if cmd == ConsoleCommand::ShowVerify {
        return Ok(show(verify));
    }
    // Only a streaming migration has a stream to hold; otherwise the
    // client compares the live tables itself, as without a daemon.
    let streaming = matches!(
        state.status(),
        Status::InProgress | Status::WaitingForUserAction
    ) && state.substatus() != Substatus::CompletingMigration
        && !state.databases.is_empty()
        && state
            .databases
            .iter()
            .all(|d| d.phase == crate::control::Phase::Streaming);
    if !streaming {
        return Err(ConsoleRefusal::not_in_state(format!(
            "verify is accepted while every database streams; the migration is {}/{}",
            state.status(),
            state.substatus()
        )));
    }
    let id = verify.start();
    Ok(ConsoleReply {
        columns: vec!["id".into()],
        rows: vec![vec![Some(id.to_string())]],
        tag: "VERIFY".into(),
    })
}

fn show(verify: &LiveVerify) -> ConsoleReply {
    let s = verify.status();
    ConsoleReply {
        columns: SHOW_VERIFY_COLUMNS.iter().map(|c| c.to_string()).collect(),
        rows: vec![vec![
            Some(s.id.to_string()),
            Some(s.state.to_string()),
            s.started_on,
            Some(s.tables_done.to_string()),
            Some(s.tables_total.to_string()),
            Some(s.held_ms.to_string()),
            s.message,
            s.report_json,
        ]],
        tag: "SHOW".into(),
    }
}
