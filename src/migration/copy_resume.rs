//! Resuming a data phase an earlier run (or an earlier attempt of this
//! one) left: the slot created at the start is kept (online, so the stream
//! still begins at its consistent point), a temporary slot exports the new
//! snapshot the rest is read under, and only the units not yet in are
//! copied.

use std::time::{Duration, Instant};

use super::database::{DbContext, DbError};
use super::prerequisites::Prepared;
use super::replication_objects::drop_exported_slot;
use super::snapshot_copy::{complete_copy, copy_options, mark_data_copied, prepare_copy_origins};
use crate::config::Mode;
use crate::conn::{quote_literal, Connection};
use crate::copy::{slot, CopyError, DatabaseCopy};
use crate::protocol::lsn::Lsn;

/// Resumes the data phase; false when what it needs is gone (the slot,
/// the journal or the schema archive): the copy then starts over.
pub(super) async fn resume_data_phase(
    ctx: &DbContext,
    prepared: &mut Prepared,
) -> Result<bool, DbError> {
    let db = ctx.db.as_str();
    let cfg = &ctx.config;
    let resume = ctx.resume();
    let name = slot::object_name(cfg.name.as_str(), prepared.props.oid);
    let online = cfg.mode == Mode::Online;
    let Some(consistent) = resume.consistent_lsn else {
        return Ok(false);
    };
    if online && !slot_exists(&mut prepared.source, db, &name).await? {
        tracing::warn!(db, slot = %name, "the slot of the interrupted copy is gone: copying again");
        return Ok(false);
    }
    let source_params = cfg.source.connect_params(db);
    let target_params = cfg.target.connect_params(db);
    let origins = prepare_copy_origins(ctx, &target_params, &name, false).await?;
    let copy = DatabaseCopy {
        db,
        source: &source_params,
        target: &target_params,
        tools: &prepared.tools,
        work_dir: &ctx.work_dir,
        options: copy_options(cfg),
        progress: ctx.progress.clone(),
        keep_owners: prepared.keep_owners,
        exclude_publication: online.then_some(name.as_str()),
        copy_origins: &origins,
        consistent_lsn: consistent,
        on_schema_restored: &|| {},
        on_data_copied: &|late| mark_data_copied(ctx, late),
        filter: &cfg.tables,
    };
    if !copy.can_resume_data() {
        tracing::warn!(
            db,
            "the interrupted copy's journal or schema archive is gone: copying again"
        );
        return Ok(false);
    }
    if !online {
        tracing::warn!(
            db,
            "offline: tables the earlier run finished keep the rows of its snapshot; \
             anything written to the source since is only in the tables copied now"
        );
    }
    // Offline, the main slot was temporary and is gone with its session:
    // the new one can take its name. Online it stays and streams later.
    let temporary_name = if online {
        format!("{name}_r")
    } else {
        name.clone()
    };
    let mut exported = slot::create(&source_params, db, &temporary_name, true).await?;
    let lsn: Lsn = exported
        .consistent_lsn
        .parse()
        .map_err(|e| CopyError::Unexpected {
            db: db.to_string(),
            message: format!(
                "the new snapshot's consistent point {:?}: {e}",
                exported.consistent_lsn
            ),
        })?;
    let started = Instant::now();
    let summary = copy.resume_data(&exported.snapshot_name, lsn).await?;
    tracing::info!(
        db,
        rows = summary.rows,
        mb = summary.bytes / 1_000_000,
        late_snapshots = summary.late.len(),
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        "resumed copy done"
    );
    drop_exported_slot(&mut exported.conn, db, &temporary_name).await?;
    let _ = exported.conn.close().await;
    complete_copy(ctx, &target_params, &summary).await?;
    Ok(true)
}

/// Ends the sessions a killed run left on the target database before
/// anything resumes there. The server notices a dead client only when it
/// next writes to it: an index build or constraint of the killed run goes
/// on and commits unrecorded, and the resumed run's own then collides with
/// it. The database is this migration's, and every session of ours says
/// `application_name = pgmigrate`.
pub(super) async fn end_earlier_sessions(ctx: &DbContext) -> Result<(), DbError> {
    let db = ctx.db.as_str();
    let mut target = Connection::connect(&ctx.config.target.connect_params(db))
        .await
        .map_err(|e| CopyError::target(db, "connecting to end the earlier run's sessions", e))?;
    let ours = "FROM pg_catalog.pg_stat_activity WHERE datname = pg_catalog.current_database() \
                AND application_name = 'pgmigrate' AND pid <> pg_catalog.pg_backend_pid()";
    let ended = target
        .simple_query(&format!(
            "SELECT pg_catalog.pg_terminate_backend(pid) {ours}"
        ))
        .await
        .map_err(|e| CopyError::target(db, "ending the earlier run's sessions", e))?;
    if !ended.is_empty() {
        tracing::info!(
            db,
            sessions = ended.len(),
            "ended the interrupted run's sessions on the target"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = target
            .simple_query(&format!("SELECT 1 {ours}"))
            .await
            .map_err(|e| CopyError::target(db, "waiting for the earlier run's sessions", e))?;
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = target.close().await;
    Ok(())
}

async fn slot_exists(source: &mut Connection, db: &str, name: &str) -> Result<bool, CopyError> {
    let rows = source
        .simple_query(&format!(
            "SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
            quote_literal(name)
        ))
        .await
        .map_err(|e| CopyError::source(db, "looking for the slot", e))?;
    Ok(!rows.is_empty())
}
