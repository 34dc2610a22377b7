//! One target session running archive entries: batched into few round
//! trips, each batch one implicit transaction, retried when the server
//! picks it as a deadlock or serialization victim, and on any other error
//! narrowed down to the entry that failed, which the error then names.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::conn::{ConnError, ConnectParams, Connection};

use super::done_log::DoneLog;
use super::entry_script::ScriptEntry;
use super::CopyError;

/// SQLSTATE 42P07: the relation (an index) already exists.
pub const SQLSTATE_DUPLICATE_TABLE: &str = crate::conn::sqlstate::DUPLICATE_TABLE;
/// SQLSTATE 42710: the object (constraint, trigger, policy, …) already exists.
pub const SQLSTATE_DUPLICATE_OBJECT: &str = crate::conn::sqlstate::DUPLICATE_OBJECT;

/// Statements sent per simple Query: few round trips, yet a bounded number
/// of locks per implicit transaction (one huge transaction would exhaust
/// the lock table on a schema with thousands of tables).
const STATEMENTS_PER_BATCH: usize = 100;
/// Attempts of one batch that keeps losing deadlocks before giving up.
const MAX_ATTEMPTS: u32 = 8;
/// First wait before a retry; doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The `pg_restore --list` line of each entry, by dump ID, for errors.
pub type EntryLines = HashMap<u32, String>;

/// How a session records and judges its entries.
#[derive(Clone, Default)]
pub struct SessionOptions {
    /// Where finished entries are recorded, for a later resume.
    pub log: Option<Arc<DoneLog>>,
    /// This run resumes an interrupted one: an entry that was in flight
    /// when it stopped may have committed without being recorded, so
    /// "already exists" means done.
    pub resuming: bool,
}

/// A target session that runs archive entries.
pub struct EntrySession {
    conn: Connection,
    /// The settings last established in this session; `None` when unknown
    /// (new session, or a failed transaction rolled its `SET`s back).
    setup: Option<Arc<Vec<String>>>,
    options: SessionOptions,
}

/// True when `code` says an entry's object is already on the target: the
/// interrupted run's statement committed before it could be recorded (a
/// second primary key is refused with a code of its own).
fn already_there(entry: &[&ScriptEntry], code: Option<&str>) -> bool {
    match code {
        Some(SQLSTATE_DUPLICATE_TABLE | SQLSTATE_DUPLICATE_OBJECT) => true,
        Some(crate::conn::sqlstate::INVALID_TABLE_DEFINITION) => entry
            .iter()
            .flat_map(|e| &e.statements)
            .any(|s| s.contains("PRIMARY KEY")),
        _ => false,
    }
}

/// A batch is tried again in the same session: only for what the one
/// classification calls transient and leaves the session usable
/// (deadlocks, serialization failures, a lock or a cancel in the way).
fn retryable(e: &ConnError) -> bool {
    e.retry() == crate::conn::Retry::Transient && !e.is_fatal()
}

impl EntrySession {
    /// Opens a session on the target.
    pub async fn connect(
        params: &ConnectParams,
        db: &str,
        what: &str,
    ) -> Result<EntrySession, CopyError> {
        let conn = Connection::connect(params)
            .await
            .map_err(|e| CopyError::target(db, &format!("connecting for {what}"), e))?;
        Ok(EntrySession {
            conn,
            setup: None,
            options: SessionOptions::default(),
        })
    }

    /// Opens a session on the target that records and judges its entries
    /// as `options` say.
    pub async fn connect_with(
        params: &ConnectParams,
        db: &str,
        what: &str,
        options: SessionOptions,
    ) -> Result<EntrySession, CopyError> {
        let mut s = EntrySession::connect(params, db, what).await?;
        s.options = options;
        Ok(s)
    }

    fn record(&self, batch: &[&ScriptEntry]) -> Result<(), CopyError> {
        match &self.options.log {
            Some(log) => {
                let ids: Vec<u32> = batch.iter().map(|e| e.dump_id).collect();
                log.record(&ids)
            }
            None => Ok(()),
        }
    }

    /// Runs one entry on its own; in a resumed run, an entry whose object
    /// already exists counts as done.
    async fn run_one(
        &mut self,
        one: &[&ScriptEntry],
        lines: &EntryLines,
        db: &str,
        what: &str,
    ) -> Result<(), CopyError> {
        match self.run_batch(one).await {
            Ok(()) => {}
            Err(e) if self.options.resuming && already_there(one, e.code()) => {
                let entry = one.first().and_then(|e| lines.get(&e.dump_id));
                tracing::warn!(entry = ?entry, "already on the target from the interrupted run: {e}");
            }
            Err(e) => return Err(entry_error(one, lines, db, what, e)),
        }
        self.record(one)
    }

    /// The session's connection, for queries of its own.
    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Closes the session.
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }

    /// Runs `entries` in the given order. A failure names the entry.
    pub async fn run(
        &mut self,
        entries: &[&ScriptEntry],
        lines: &EntryLines,
        db: &str,
        what: &str,
    ) -> Result<(), CopyError> {
        let mut start = 0;
        while start < entries.len() {
            let end = batch_end(entries, start);
            let batch = entries.get(start..end).unwrap_or_default();
            match self.run_batch(batch).await {
                Ok(()) => self.record(batch)?,
                // Which entry? The batch rolled back as a whole; run its
                // entries one by one and stop at the one that fails.
                Err(_) => {
                    for one in batch.chunks(1) {
                        self.run_one(one, lines, db, what).await?;
                    }
                }
            }
            start = end;
        }
        Ok(())
    }

    /// One implicit transaction, retried while the server breaks deadlocks
    /// or serialization conflicts with it.
    async fn run_batch(&mut self, batch: &[&ScriptEntry]) -> Result<(), ConnError> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let mut attempt = 0;
        loop {
            let mut text = String::new();
            let resend = !self
                .setup
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &first.setup) || **s == *first.setup);
            if resend {
                for s in first.setup.iter() {
                    text.push_str(s);
                    text.push_str(";\n");
                }
            }
            for s in batch.iter().flat_map(|e| e.statements.iter()) {
                text.push_str(s);
                text.push_str(";\n");
            }
            if text.is_empty() {
                return Ok(());
            }
            match self.conn.execute(&text).await {
                Ok(_) => {
                    self.setup = Some(first.setup.clone());
                    return Ok(());
                }
                Err(e) => {
                    self.setup = None;
                    attempt += 1;
                    if !retryable(&e) || attempt >= MAX_ATTEMPTS {
                        return Err(e);
                    }
                    let wait = FIRST_BACKOFF * 2u32.saturating_pow(attempt - 1);
                    tracing::info!(
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "retrying after {e}"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// End (exclusive) of the batch starting at `start`: whole entries, up to
/// the statement budget, all needing the same session settings.
fn batch_end(entries: &[&ScriptEntry], start: usize) -> usize {
    let Some(first) = entries.get(start) else {
        return start;
    };
    let mut n = 0;
    let mut end = start;
    for e in entries.iter().skip(start) {
        let same = Arc::ptr_eq(&e.setup, &first.setup);
        if end > start && (!same || n + e.statements.len() > STATEMENTS_PER_BATCH) {
            break;
        }
        n += e.statements.len();
        end += 1;
    }
    end
}

fn entry_error(
    batch: &[&ScriptEntry],
    lines: &EntryLines,
    db: &str,
    what: &str,
    source: ConnError,
) -> CopyError {
    let entry = batch
        .first()
        .map(|e| {
            lines
                .get(&e.dump_id)
                .cloned()
                .unwrap_or_else(|| format!("{}; (not in the table of contents)", e.dump_id))
        })
        .unwrap_or_default();
    CopyError::Entry {
        db: db.to_string(),
        context: what.to_string(),
        entry,
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u32, setup: &Arc<Vec<String>>, n: usize) -> ScriptEntry {
        ScriptEntry {
            dump_id: id,
            setup: setup.clone(),
            statements: (0..n).map(|i| format!("SELECT {i}")).collect(),
        }
    }

    #[test]
    fn transient_errors_that_keep_the_session_are_retried_nothing_else() {
        use crate::conn::sqlstate;
        let err = |code: &str, severity: &str| {
            ConnError::Db(Box::new(crate::conn::DbError {
                code: code.into(),
                severity: severity.into(),
                ..Default::default()
            }))
        };
        assert!(retryable(&err(sqlstate::DEADLOCK_DETECTED, "ERROR")));
        assert!(retryable(&err(sqlstate::SERIALIZATION_FAILURE, "ERROR")));
        assert!(retryable(&err(sqlstate::LOCK_NOT_AVAILABLE, "ERROR")));
        assert!(!retryable(&err(SQLSTATE_DUPLICATE_OBJECT, "ERROR")));
        assert!(!retryable(&err("42704", "ERROR")));
        // The session is gone: the copy's own restart handles that.
        assert!(!retryable(&err(sqlstate::ADMIN_SHUTDOWN, "FATAL")));
        assert!(!retryable(&ConnError::Closed));
    }

    #[test]
    fn batches_stop_at_budget_and_setting_changes() {
        let a = Arc::new(vec!["SET x = 1".to_string()]);
        let b = Arc::new(vec!["SET x = 2".to_string()]);
        let es = [
            entry(1, &a, 60),
            entry(2, &a, 30),
            entry(3, &a, 20),
            entry(4, &b, 1),
            entry(5, &b, 500),
        ];
        let refs: Vec<&ScriptEntry> = es.iter().collect();
        assert_eq!(batch_end(&refs, 0), 2);
        assert_eq!(batch_end(&refs, 2), 3);
        assert_eq!(batch_end(&refs, 3), 4);
        // An entry over the budget still goes, alone.
        assert_eq!(batch_end(&refs, 4), 5);
        assert_eq!(batch_end(&refs, 5), 5);
    }
}
