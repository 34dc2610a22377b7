//! Row counts and checksums of many tables, on both servers at once: a
//! small pool of session pairs takes tables from one queue (biggest first),
//! and each pair runs a table's query on the source and the target
//! concurrently, so the slower side sets the pace and neither waits.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tracing::Instrument;

use crate::conn::{ConnError, Connection};

use super::catalog::TableName;
use super::diff::TableSum;
use super::{Side, VerifyError};

/// A table to count and checksum.
#[derive(Debug, Clone)]
pub struct TableJob {
    /// The table.
    pub name: TableName,
    /// Its checksum query (the same on both sides).
    pub sql: String,
    /// The larger of its sizes on both sides, to start big tables first.
    pub bytes: u64,
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
}

/// Runs every job over the session pairs (`source[i]`, `target[i]`) and
/// returns the results sorted by table. The sessions are closed at the end.
pub async fn checksum_tables(
    db: &str,
    source: Vec<Connection>,
    target: Vec<Connection>,
    mut jobs: Vec<TableJob>,
) -> Result<Vec<TableResult>, VerifyError> {
    // Biggest first, so the last table to finish is a small one.
    jobs.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    let queue = Arc::new(Mutex::new(VecDeque::from(jobs)));
    let mut workers = tokio::task::JoinSet::new();
    for (s, t) in source.into_iter().zip(target) {
        let task = worker(db.to_string(), s, t, queue.clone());
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
        done.push(TableResult {
            name: job.name,
            source: s,
            target: t,
        });
    }
    let _ = source.close().await;
    let _ = target.close().await;
    Ok(done)
}

async fn table_sum(conn: &mut Connection, sql: &str) -> Result<TableSum, ConnError> {
    let rows = conn.simple_query(sql).await?;
    let row = rows
        .first()
        .ok_or_else(|| ConnError::Protocol("checksum query returned no row".into()))?;
    Ok(TableSum {
        rows: row.parse(0)?,
        checksum: row.str(1)?.to_string(),
    })
}
