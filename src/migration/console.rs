//! The admin console, as the daemon answers it.

use std::sync::Arc;

use super::requests::Requests;
use crate::control::progress::MigrationProgress;
use crate::control::state::ReverseEnd;
use crate::control::status::{Status, Substatus};
use crate::control::store::StateStore;

/// The daemon's side of the admin console: answers from live state and
/// registers cutover and cancel requests for the run loop.
pub(super) struct Console {
    pub(super) store: Arc<StateStore>,
    pub(super) progress: Arc<MigrationProgress>,
    pub(super) requests: Arc<Requests>,
    /// Verify while streaming (`VERIFY`, `SHOW VERIFY`).
    pub(super) verify: Arc<crate::verify::live::LiveVerify>,
}

impl crate::control::ConsoleHandler for Console {
    fn handle(
        &self,
        cmd: crate::control::ConsoleCommand,
    ) -> Result<crate::control::ConsoleReply, crate::control::ConsoleRefusal> {
        use crate::control::{ConsoleCommand, ConsoleRefusal, ConsoleReply};
        let mut state = self.store.snapshot();
        self.progress.apply_to(&mut state);
        state.verify = self.verify.progress();
        if let Some(reply) = crate::control::show_reply(cmd, &state) {
            return Ok(reply);
        }
        match cmd {
            ConsoleCommand::Cutover if state.status() != Status::WaitingForUserAction => {
                Err(ConsoleRefusal::not_in_state(format!(
                    "cutover is accepted only in WaitingForUserAction; the migration is {}/{}",
                    state.status(),
                    state.substatus()
                )))
            }
            ConsoleCommand::Cutover => {
                self.requests.cutover();
                Ok(ConsoleReply::accepted(cmd))
            }
            ConsoleCommand::Rollback | ConsoleCommand::Finish
                if state.substatus() != Substatus::WaitingForRollbackOrFinish =>
            {
                Err(ConsoleRefusal::not_in_state(format!(
                    "{} is accepted only in WaitingForUserAction/WaitingForRollbackOrFinish (cutover with [cutover] reverse_replication); the migration is {}/{}",
                    cmd.as_sql().to_ascii_lowercase(),
                    state.status(),
                    state.substatus()
                )))
            }
            ConsoleCommand::Rollback => {
                self.requests.end_reverse(ReverseEnd::Rollback);
                Ok(ConsoleReply::accepted(cmd))
            }
            ConsoleCommand::Finish => {
                self.requests.end_reverse(ReverseEnd::Finish);
                Ok(ConsoleReply::accepted(cmd))
            }
            ConsoleCommand::Verify | ConsoleCommand::ShowVerify => {
                crate::verify::live_console::reply(&self.verify, cmd, &state)
            }
            ConsoleCommand::Cancel { drop_target }
                if state.substatus() == Substatus::WaitingForRollbackOrFinish =>
            {
                if drop_target {
                    return Err(ConsoleRefusal::not_in_state(
                        "the target database is the migrated one after cutover: CANCEL (without DROP TARGET) ends reverse replication",
                    ));
                }
                self.requests.cancel(false);
                Ok(ConsoleReply::accepted(cmd))
            }
            ConsoleCommand::Cancel { drop_target } => {
                if matches!(
                    state.status(),
                    Status::InProgress | Status::WaitingForUserAction
                ) && !matches!(
                    state.substatus(),
                    Substatus::CompletingMigration | Substatus::WaitingForRollbackOrFinish
                )
                {
                    self.requests.cancel(drop_target);
                    Ok(ConsoleReply::accepted(cmd))
                } else {
                    Err(ConsoleRefusal::not_in_state(format!(
                        "cancel is accepted while in progress or waiting for cutover; the migration is {}/{}",
                        state.status(), state.substatus()
                    )))
                }
            }
            _ => Err(ConsoleRefusal::not_in_state("unexpected command")),
        }
    }
}
