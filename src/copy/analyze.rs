//! Planner statistics for the copied database: what a database-wide
//! `ANALYZE` does, over `jobs` sessions (as `vacuumdb -j`), small tables
//! many to a statement. One `ANALYZE` analyzes thousands of tables one
//! after the other in one backend; side by side, with one round trip per
//! batch, it no longer dominates a migration of many small tables.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::conn::{quote_ident, ConnectParams, Connection};

use super::CopyError;

/// Tables of up to this many pages share a statement.
const SMALL_PAGES: i64 = 1000;
/// Small tables per `ANALYZE` statement (each is still analyzed in its own
/// transaction: ANALYZE of a list commits table by table).
const PER_STATEMENT: usize = 50;
/// First version whose ANALYZE takes a list of tables.
const LIST_SINCE_MAJOR: u32 = 11;

/// The relations a database-wide ANALYZE covers, as `ANALYZE` statements:
/// tables, materialized views and partitioned tables not themselves a
/// partition (their ANALYZE covers their partitions), largest first.
async fn statements(conn: &mut Connection, db: &str) -> Result<Vec<String>, CopyError> {
    let rows = conn
        .simple_query(&format!(
            "SELECT n.nspname, c.relname, c.relkind = 'p' OR c.relpages > {SMALL_PAGES} \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm', 'p') AND NOT c.relispartition \
             AND c.relpersistence <> 't' AND n.nspname !~ '^pg_toast' \
             ORDER BY c.relkind = 'p' DESC, c.relpages DESC, c.oid",
        ))
        .await
        .map_err(|e| CopyError::target(db, "listing tables to analyze", e))?;
    let per_statement = if conn.server_major() >= LIST_SINCE_MAJOR {
        PER_STATEMENT
    } else {
        1
    };
    let mut out = Vec::new();
    let mut small = Vec::new();
    for r in &rows {
        let name = format!(
            "{}.{}",
            quote_ident(r.str(0).map_err(|e| CopyError::target(
                db,
                "listing tables to analyze",
                e
            ))?),
            quote_ident(r.str(1).map_err(|e| CopyError::target(
                db,
                "listing tables to analyze",
                e
            ))?)
        );
        let alone = r
            .bool(2)
            .map_err(|e| CopyError::target(db, "listing tables to analyze", e))?;
        if alone {
            out.push(format!("ANALYZE {name}"));
        } else {
            small.push(name);
        }
    }
    out.extend(
        small
            .chunks(per_statement)
            .map(|c| format!("ANALYZE {}", c.join(", "))),
    );
    Ok(out)
}

/// Analyzes every table of the target database over up to `jobs` sessions.
pub async fn analyze_all(target: &ConnectParams, jobs: usize, db: &str) -> Result<(), CopyError> {
    let mut first = Connection::connect(target)
        .await
        .map_err(|e| CopyError::target(db, "connecting for ANALYZE", e))?;
    let queue: Arc<Mutex<VecDeque<String>>> =
        Arc::new(Mutex::new(statements(&mut first, db).await?.into()));
    let workers = jobs
        .max(1)
        .min(queue.lock().map(|q| q.len()).unwrap_or(1).max(1));
    // The first worker takes the session that listed the tables.
    let mut first = Some(first);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let queue = queue.clone();
        let target = target.clone();
        let db = db.to_string();
        let reuse = first.take();
        set.spawn(async move {
            let mut conn = match reuse {
                Some(c) => c,
                None => Connection::connect(&target)
                    .await
                    .map_err(|e| CopyError::target(&db, "connecting for ANALYZE", e))?,
            };
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(sql) = next else { break };
                conn.execute(&sql)
                    .await
                    .map_err(|e| CopyError::target(&db, "analyzing the copied tables", e))?;
            }
            let _ = conn.close().await;
            Ok::<(), CopyError>(())
        });
    }
    let mut result = Ok(());
    while let Some(r) = set.join_next().await {
        let r = r.unwrap_or_else(|e| {
            Err(CopyError::Unexpected {
                db: db.to_string(),
                message: format!("ANALYZE task failed: {e}"),
            })
        });
        if let (Err(e), Ok(())) = (r, &result) {
            result = Err(e);
        }
    }
    result
}
