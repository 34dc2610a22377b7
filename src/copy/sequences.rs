//! Sequences are not transactional and not in the snapshot: their current
//! values are read from the source and set on the target after the copy
//! (and again at cutover in online mode).

use crate::conn::{quote_literal, Connection};

use super::catalog::Sequence;
use super::CopyError;

/// Sequences read or set per round trip.
const PER_BATCH: usize = 500;

/// Sets every target sequence to the source's current value; returns how
/// many were set.
pub async fn sync(
    source: &mut Connection,
    target: &mut Connection,
    sequences: &[Sequence],
    db: &str,
) -> Result<usize, CopyError> {
    let mut done = 0;
    for batch in sequences.chunks(PER_BATCH) {
        let read: Vec<String> = batch
            .iter()
            .map(|s| format!("SELECT last_value, is_called FROM {}", s.qualified()))
            .collect();
        let rows = source
            .simple_query(&read.join(" UNION ALL "))
            .await
            .map_err(|e| CopyError::source(db, "reading sequence values", e))?;
        if rows.len() != batch.len() {
            return Err(CopyError::Unexpected {
                db: db.to_string(),
                message: format!(
                    "read {} sequence values for {} sequences",
                    rows.len(),
                    batch.len()
                ),
            });
        }
        let mut write = String::new();
        for (s, r) in batch.iter().zip(&rows) {
            let value: i64 = r
                .parse(0)
                .map_err(|e| CopyError::source(db, "reading sequence values", e))?;
            let called = r
                .bool(1)
                .map_err(|e| CopyError::source(db, "reading sequence values", e))?;
            write.push_str(&format!(
                "SELECT pg_catalog.setval({}::regclass, {value}, {called});",
                quote_literal(&s.qualified())
            ));
        }
        target
            .execute(&write)
            .await
            .map_err(|e| CopyError::target(db, "setting sequence values", e))?;
        done += batch.len();
    }
    Ok(done)
}
