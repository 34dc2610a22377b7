//! The source's WAL position, as lag and cutover need it.

use super::step_error::{Side, StepError};
use crate::conn::Connection;
use crate::protocol::lsn::Lsn;

/// A WAL position at or past the commit record of every transaction the
/// source has committed so far. `pg_current_wal_lsn()` alone is not: it is
/// the *write* position, and a transaction committed with
/// `synchronous_commit = off` has returned to its client before its commit
/// record is written, so a cutover stopping there loses it. A transaction
/// of our own that writes WAL and commits with `synchronous_commit = on`
/// flushes the WAL through its commit record, hence through every earlier
/// one. (It must write a record: a transaction with an xid and nothing
/// else commits asynchronously whatever the setting.) The logical message
/// is not published to us: pgoutput only sends messages when asked to.
pub(super) async fn settled_wal_lsn(source: &mut Connection, db: &str) -> Result<Lsn, StepError> {
    source
        .simple_query(
            "SET synchronous_commit = on; \
             SELECT pg_catalog.pg_logical_emit_message(true, 'pgmigrate', 'cutover')",
        )
        .await
        .map_err(|e| StepError::source(db, "flushing the source's WAL for cutover", e))?;
    current_wal_lsn(source, db).await
}

pub(super) async fn current_wal_lsn(source: &mut Connection, db: &str) -> Result<Lsn, StepError> {
    let rows = source
        .simple_query("SELECT pg_catalog.pg_current_wal_lsn()")
        .await
        .map_err(|e| StepError::source(db, "reading the current WAL position", e))?;
    rows.first()
        .and_then(|r| r.str(0).ok())
        .and_then(|s| s.parse::<Lsn>().ok())
        .ok_or_else(|| StepError::Unreadable {
            db: db.to_string(),
            side: Side::Source,
            what: "pg_current_wal_lsn()",
        })
}
