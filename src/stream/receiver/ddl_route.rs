//! The receiver's part of DDL replication: a captured command becomes an
//! apply message in its place in the transaction, or stops the stream
//! with the statement and what to do.

use std::sync::Arc;

use crate::apply::{ApplyMsg, DdlStatement};
use crate::config::{DdlMode, TableChoice};
use crate::protocol::lsn::{Lsn, RelationId};
use crate::protocol::pgoutput::LogicalMessage;
use crate::stream::ddl::command::PREFIX;
use crate::stream::ddl::{replay_of, DdlCommand, Replay};
use crate::stream::StreamError;

use super::Receiver;

/// Tags whose statement fills the table it creates: replayed, it fills
/// the target's from the same rows, so the stream's inserts of that table
/// in the same transaction (where a publication carried them) are dropped.
const FILLS_TABLE: &[&str] = &["CREATE TABLE AS"];

/// The tables `cmd` creates and fills, by schema and name.
pub(super) fn filled_tables(cmd: &DdlCommand) -> Vec<(String, String)> {
    if !FILLS_TABLE.contains(&cmd.tag.as_str()) {
        return Vec::new();
    }
    cmd.objects
        .iter()
        .filter(|o| o.object_type == "table")
        .filter_map(|o| split_identity(&o.identity))
        .collect()
}

impl Receiver<'_> {
    /// The DDL command `m` carries when this stream carries it; None for
    /// any other logical message. With `ddl = "fail"` the first command
    /// ends the stream here.
    pub(super) fn ddl_message(
        &self,
        m: &LogicalMessage,
        commit: Lsn,
    ) -> Result<Option<DdlCommand>, StreamError> {
        if m.prefix != PREFIX || !m.transactional || !self.cfg.ddl.captures() {
            return Ok(None);
        }
        let cmd = self.command(m)?;
        if self.cfg.ddl == DdlMode::Fail {
            return Err(StreamError::Ddl {
                db: self.cfg.db.clone(),
                lsn: commit,
                statement: cmd.display(),
                why: "ddl = \"fail\" stops the migration at the first schema change. To carry it, set ddl = \"replicate\" and run pgmigrate again (it resumes here and applies it in order); or cancel".into(),
            });
        }
        Ok(Some(cmd))
    }

    fn command(&self, m: &LogicalMessage) -> Result<DdlCommand, StreamError> {
        DdlCommand::parse(&m.content)
            .map_err(|e| StreamError::protocol(&self.cfg.db, format!("at {}: {e}", m.lsn)))
    }

    /// The apply message of a DDL command (routed to worker 0 when the
    /// transaction has no row before it), or None when nothing is run.
    pub(super) fn route_ddl(
        &mut self,
        m: &LogicalMessage,
    ) -> Result<Option<(RelationId, ApplyMsg)>, StreamError> {
        if m.prefix != PREFIX || !m.transactional || !self.cfg.ddl.captures() {
            return Ok(None);
        }
        let cmd = self.command(m)?;
        if self.only_filtered_tables(&cmd) {
            tracing::debug!(statement = %cmd.display(), "DDL of tables not migrated: skipped");
            return Ok(None);
        }
        let fail = |why: String| StreamError::Ddl {
            db: self.cfg.db.clone(),
            lsn: self.txn_commit,
            statement: cmd.display(),
            why,
        };
        let sql = match replay_of(&cmd) {
            Replay::Skip => return Ok(None),
            Replay::Statement(sql) => sql,
            Replay::Whole(sql) if self.txn_rows == 0 => sql,
            Replay::Whole(_) => {
                return Err(fail(format!(
                    "the command ran inside a DO block or a function, in a transaction that also changed rows: replaying the statement would apply those rows twice (command tag {}). Keep DDL run from DO blocks or functions in transactions of their own, then cancel and start the migration again",
                    cmd.tag
                )))
            }
            Replay::Unknown(what) => {
                return Err(fail(format!(
                    "the {what} cannot be told apart. Send DDL as statements of their own (psql and migration tools do), then cancel and start the migration again"
                )))
            }
        };
        let statement = DdlStatement {
            sql,
            search_path: cmd.search_path,
            role: cmd.role,
        };
        Ok(Some((RelationId(0), ApplyMsg::Ddl(Arc::new(statement)))))
    }

    /// True when every object the command touched is a table `[tables]`
    /// leaves out (or copies schema only): its DDL is not the target's.
    fn only_filtered_tables(&self, cmd: &DdlCommand) -> bool {
        let filter = &self.cfg.filter;
        !cmd.objects.is_empty()
            && cmd.objects.iter().all(|o| {
                o.object_type == "table"
                    && split_identity(&o.identity)
                        .is_some_and(|(s, t)| filter.choice(&s, &t) == TableChoice::Exclude)
            })
    }
}

/// `schema.table` as `pg_identify_object` prints it (quoted where needed)
/// into its two names.
fn split_identity(identity: &str) -> Option<(String, String)> {
    let mut names = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = identity.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            '.' if !quoted => names.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    names.push(cur);
    match names.as_slice() {
        [s, t] => Some((s.clone(), t.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::split_identity;

    #[test]
    fn identities_split_into_schema_and_table() {
        assert_eq!(
            split_identity("public.orders"),
            Some(("public".into(), "orders".into()))
        );
        assert_eq!(
            split_identity("\"my.schema\".\"Or\"\"ders\""),
            Some(("my.schema".into(), "Or\"ders".into()))
        );
        assert_eq!(split_identity("orders"), None);
    }
}
