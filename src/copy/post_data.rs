//! Post-data built in parallel: `index_jobs` target sessions take each
//! table's indexes and constraints as soon as its rows are in, then the
//! rest of post-data, then the foreign keys side by side.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};

use crate::conn::{ConnectParams, Connection};

use super::schema::{filter_statements, is_session_setup, run_script, PostDataPlan, SchemaArchive};
use super::CopyError;

/// Builds each finished table's indexes and constraints until `done`
/// closes; `jobs` sessions work side by side.
pub async fn build_per_table(
    archive: Arc<SchemaArchive>,
    plan: HashMap<u32, Vec<super::pg_tools::TocEntry>>,
    target: &ConnectParams,
    jobs: usize,
    done: mpsc::UnboundedReceiver<u32>,
    db: &str,
) -> Result<(), CopyError> {
    let plan = Arc::new(std::sync::Mutex::new(plan));
    let done = Arc::new(Mutex::new(done));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..jobs.max(1) {
        let (archive, plan, done, target, db) = (
            archive.clone(),
            plan.clone(),
            done.clone(),
            target.clone(),
            db.to_string(),
        );
        set.spawn(async move {
            let mut conn: Option<Connection> = None;
            loop {
                let next = done.lock().await.recv().await;
                let Some(oid) = next else { break };
                let entries = plan.lock().ok().and_then(|mut p| p.remove(&oid));
                let Some(entries) = entries else { continue };
                let sql = archive
                    .sql_for(&entries, &format!("table-{oid}"), &db)
                    .await?;
                if conn.is_none() {
                    conn =
                        Some(Connection::connect(&target).await.map_err(|e| {
                            CopyError::target(&db, "connecting for index builds", e)
                        })?);
                }
                if let Some(c) = conn.as_mut() {
                    run_script(c, &sql, &db, "building indexes and constraints").await?;
                }
            }
            Ok::<(), CopyError>(())
        });
    }
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        let r = r.map_err(|e| CopyError::Unexpected {
            db: db.to_string(),
            message: format!("index build task failed: {e}"),
        })?;
        if let (Err(e), None) = (r, &first_err) {
            first_err = Some(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Runs the post-data that waits for all tables, then the foreign keys in
/// parallel over `jobs` sessions.
pub async fn build_remaining(
    archive: &SchemaArchive,
    plan: &PostDataPlan,
    target: &ConnectParams,
    jobs: usize,
    db: &str,
) -> Result<(), CopyError> {
    let mut conn = Connection::connect(target)
        .await
        .map_err(|e| CopyError::target(db, "connecting for post-data", e))?;
    let sql = archive
        .sql_for(&plan.after_tables, "after-tables", db)
        .await?;
    run_script(
        &mut conn,
        &sql,
        db,
        "restoring post-data (triggers, rules, attachments)",
    )
    .await?;
    if plan.foreign_keys.is_empty() {
        return Ok(());
    }
    let sql = archive
        .sql_for(&plan.foreign_keys, "foreign-keys", db)
        .await?;
    let statements = filter_statements(&mut conn, &sql, db).await?;
    let (setup, work): (Vec<&str>, Vec<&str>) =
        statements.into_iter().partition(|s| is_session_setup(s));
    let setup = setup.iter().map(|s| format!("{s};")).collect::<String>();
    let work = Arc::new(std::sync::Mutex::new(
        work.into_iter().map(str::to_string).collect::<Vec<_>>(),
    ));
    let mut set = tokio::task::JoinSet::new();
    drop(conn);
    for _ in 0..jobs.max(1) {
        let (work, setup, target, db) =
            (work.clone(), setup.clone(), target.clone(), db.to_string());
        set.spawn(async move {
            let mut c = Connection::connect(&target)
                .await
                .map_err(|e| CopyError::target(&db, "connecting for foreign keys", e))?;
            if !setup.is_empty() {
                c.execute(&setup)
                    .await
                    .map_err(|e| CopyError::target(&db, "preparing the session", e))?;
            }
            loop {
                let next = work.lock().ok().and_then(|mut w| w.pop());
                let Some(stmt) = next else { break };
                c.execute(&stmt)
                    .await
                    .map_err(|e| CopyError::target(&db, "adding foreign keys", e))?;
            }
            Ok::<(), CopyError>(())
        });
    }
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        let r = r.map_err(|e| CopyError::Unexpected {
            db: db.to_string(),
            message: format!("foreign key task failed: {e}"),
        })?;
        if let (Err(e), None) = (r, &first_err) {
            first_err = Some(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}
