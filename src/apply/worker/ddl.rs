//! Runs a DDL command from the source inside the apply transaction: with
//! the source session's search_path and role, so names resolve and new
//! objects are owned as they are there; in the same target transaction as
//! the origin's advance, so it is applied exactly once across crashes.

use crate::conn::quote_literal;

use super::super::{ApplyError, DdlStatement, Inconsistency};
use super::Worker;

impl Worker {
    /// Runs `ddl` now, after everything queued before it.
    pub(super) async fn ddl(&mut self, ddl: &DdlStatement) -> Result<(), ApplyError> {
        if !self.open {
            return Err(self.setup_err(Inconsistency::OutsideBatch { lsn: self.current }));
        }
        self.flush_windows()?;
        self.sync().await?;
        let role = quote_literal(&ddl.role);
        let sql = format!(
            "SELECT pg_catalog.set_config('search_path', {}, true); \
             SELECT pg_catalog.set_config('role', r.rolname, true) FROM pg_catalog.pg_roles r \
              WHERE r.rolname = {role} AND pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'); \
             {}; RESET ROLE; RESET search_path",
            quote_literal(&ddl.search_path),
            ddl.sql
        );
        // Tables this changes are read again at their next Relation
        // message; the plans of others stay valid.
        self.conn.execute(&sql).await.map_err(|e| ApplyError::Target {
            db: self.cfg.db.clone(),
            worker: self.cfg.index,
            context: format!(
                "the DDL committed on the source at {} (`{}`) fails on the target; fix the target so it runs, or cancel",
                self.current,
                shorten(&ddl.sql)
            ),
            at: Some(self.batch_first),
            source: Box::new(e),
        })?;
        self.batch_changes += 1;
        tracing::info!(lsn = %self.current, statement = %shorten(&ddl.sql), "DDL applied");
        Ok(())
    }
}

fn shorten(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}
