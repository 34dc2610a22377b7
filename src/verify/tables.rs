//! Row counts and checksums of many tables, on both servers at once: a
//! small pool of session pairs takes tables from one queue (biggest first),
//! and each pair runs a table's query on the source and the target
//! concurrently, so the slower side sets the pace and neither waits.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Instrument;

use crate::conn::{ConnError, Connection};

use super::catalog::{Column, TableName};
use super::diff::TableSum;
use super::keys::Narrow;
use super::report::Difference;
use super::{Side, VerifyError};

/// How hard verify reads, and where it counts its progress.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// `[verify] max_rows_per_second`; 0 is no limit.
    pub rows_per_second: u64,
    /// Tables done so far (shown by `SHOW VERIFY`).
    pub tables_done: Arc<AtomicUsize>,
    /// Tables to do.
    pub tables_total: Arc<AtomicUsize>,
}

impl Limits {
    /// Sleeps as long as reading `rows` takes at the limit: a query that
    /// read them is then followed by enough idle time that the average
    /// stays under it. A single statement cannot be slowed, so the limit
    /// holds over tables and key ranges, not within one query.
    pub async fn pause(&self, rows: u64) {
        if self.rows_per_second == 0 || rows == 0 {
            return;
        }
        let secs = rows as f64 / self.rows_per_second as f64;
        tokio::time::sleep(Duration::from_secs_f64(secs.min(3600.0))).await;
    }
}

/// A table to count and checksum.
#[derive(Debug, Clone)]
pub struct TableJob {
    /// The table.
    pub name: TableName,
    /// Its checksum query (the same on both sides).
    pub sql: String,
    /// The larger of its sizes on both sides, to start big tables first.
    pub bytes: u64,
    /// The compared columns with their source types, to narrow a
    /// difference down to keys.
    pub columns: Vec<Column>,
}

/// A table's sums on both sides.
#[derive(Debug, Clone)]
pub struct TableResult {
    /// The table.
    pub name: TableName,
    /// On the source.
    pub source: TableSum,
    /// On the target.
    pub target: TableSum,
    /// Rows that differ, by key, when the sums differ.
    pub keys: Vec<Difference>,
}

/// Runs every job over the session pairs (`source[i]`, `target[i]`) and
/// returns the results sorted by table. The sessions are closed at the end.
pub async fn checksum_tables(
    db: &str,
    source: Vec<Connection>,
    target: Vec<Connection>,
    mut jobs: Vec<TableJob>,
    limits: &Limits,
) -> Result<Vec<TableResult>, VerifyError> {
    limits.tables_total.store(jobs.len(), Ordering::Relaxed);
    // Biggest first, so the last table to finish is a small one.
    jobs.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    let queue = Arc::new(Mutex::new(VecDeque::from(jobs)));
    let mut workers = tokio::task::JoinSet::new();
    for (s, t) in source.into_iter().zip(target) {
        let task = worker(db.to_string(), s, t, queue.clone(), limits.clone());
        workers.spawn(task.instrument(tracing::Span::current()));
    }
    let mut results = Vec::new();
    while let Some(joined) = workers.join_next().await {
        let done = joined.map_err(|source| VerifyError::Task {
            db: db.to_string(),
            source,
        })??;
        results.extend(done);
    }
    results.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(results)
}

async fn worker(
    db: String,
    mut source: Connection,
    mut target: Connection,
    queue: Arc<Mutex<VecDeque<TableJob>>>,
    limits: Limits,
) -> Result<Vec<TableResult>, VerifyError> {
    let mut done = Vec::new();
    // A poisoned lock means another worker panicked; its error surfaces
    // through the join, so this one just stops taking work.
    while let Some(job) = queue.lock().ok().and_then(|mut q| q.pop_front()) {
        let started = std::time::Instant::now();
        let span = tracing::debug_span!("table", name = %job.name);
        let (s, t) = async {
            tokio::join!(
                table_sum(&mut source, &job.sql),
                table_sum(&mut target, &job.sql)
            )
        }
        .instrument(span.clone())
        .await;
        let failed = |side, source| VerifyError::Query {
            side,
            db: db.clone(),
            what: format!("checksumming table {}", job.name),
            source,
        };
        let s = s.map_err(|e| failed(Side::Source, e))?;
        let t = t.map_err(|e| failed(Side::Target, e))?;
        span.in_scope(|| {
            tracing::debug!(
                rows = s.rows,
                ms = started.elapsed().as_millis() as u64,
                "table checksummed"
            )
        });
        limits.pause(s.rows.max(t.rows)).await;
        let keys = if s == t {
            Vec::new()
        } else {
            let narrow = Narrow {
                table: &job.name,
                columns: &job.columns,
            };
            narrow
                .run(&mut source, &mut target, (&s, &t), &limits)
                .instrument(span.clone())
                .await
                .map_err(|(side, e)| failed(side, e))?
        };
        limits.tables_done.fetch_add(1, Ordering::Relaxed);
        crate::metrics::verify_table_checked(&db);
        done.push(TableResult {
            name: job.name,
            source: s,
            target: t,
            keys,
        });
    }
    let _ = source.close().await;
    let _ = target.close().await;
    Ok(done)
}

/// Runs a count-and-checksum query.
pub(super) async fn table_sum(conn: &mut Connection, sql: &str) -> Result<TableSum, ConnError> {
    let rows = conn.simple_query(sql).await?;
    let row = rows
        .first()
        .ok_or_else(|| ConnError::Protocol("checksum query returned no row".into()))?;
    Ok(TableSum {
        rows: row.parse(0)?,
        checksum: row.str(1)?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pause_takes_as_long_as_the_rows_at_the_limit() {
        let limits = Limits {
            rows_per_second: 1_000,
            ..Limits::default()
        };
        let started = std::time::Instant::now();
        limits.pause(80).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(80), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        let started = std::time::Instant::now();
        Limits::default().pause(1_000_000).await;
        assert!(started.elapsed() < Duration::from_millis(50));
    }
}
