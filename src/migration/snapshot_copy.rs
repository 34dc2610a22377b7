//! Prerequisites, slot (and publication), snapshot copy. Starts over from
//! scratch when an earlier run died inside it: its snapshot is gone.

use std::time::Instant;

use super::database::{DbContext, DbError};
use super::prerequisites::{prepare, Prepared};
use super::replication_objects::{drop_exported_slot, origin_names, prepare_keyless};
use crate::config::{Config, Mode};
use crate::conn::ConnectParams;
use crate::control::state::ResumeState;
use crate::control::status::Phase;
use crate::copy::pg_tools::PgTools;
use crate::copy::{slot, CopyError, CopyOptions, DatabaseCopy};
use crate::protocol::lsn::Lsn;
use crate::stream::publication;

/// Copies schema and data of one database from one snapshot, then records
/// the copy as done.
pub(super) async fn copy_phase(ctx: &DbContext, resume: &ResumeState) -> Result<(), DbError> {
    let db = ctx.db.as_str();
    let cfg = &ctx.config;
    ctx.progress.set_phase(Phase::CopyingSchema);
    let source_params = cfg.source.connect_params(db);
    let target_params = cfg.target.connect_params(db);
    let mut prepared = prepare(ctx, resume, true).await?;
    if prepared.data_copied {
        if resume_copy(ctx, &prepared.tools, prepared.keep_owners).await? {
            return Ok(());
        }
        prepared = prepare(ctx, resume, false).await?;
    }
    let Prepared {
        mut source,
        props,
        tools,
        keep_owners,
        target_oid,
        ..
    } = prepared;
    let name = slot::object_name(cfg.name.as_str(), props.oid);
    // A slot or publication of an interrupted copy would pin WAL forever.
    slot::drop_if_exists(&mut source, db, &name).await?;
    if cfg.mode == Mode::Online {
        publication::drop_if_exists(&mut source, db, &name).await?;
        let ins = publication::insert_publication_name(&name);
        publication::drop_if_exists(&mut source, db, &ins).await?;
    }
    // Offline needs the slot only for its snapshot: a temporary one goes
    // away with its session, whatever happens to this process.
    let temporary = cfg.mode == Mode::Offline;
    if !temporary {
        // Before the slot, so every change after its snapshot is published.
        let insert_only = prepare_keyless(ctx, &mut source, &name).await?;
        publication::create(&mut source, db, &name, &insert_only, &cfg.tables).await?;
    }
    let created = (!temporary).then(|| name.clone());
    let origins = if temporary {
        Vec::new()
    } else {
        origin_names(&name, Some(target_oid), cfg.apply.workers)
    };
    ctx.record(move |r| {
        r.slot_name = created.clone();
        r.publication_name = created;
        r.origin_names = origins;
    })
    .await?;
    let mut exported = slot::create(&source_params, db, &name, temporary).await?;
    let consistent: Lsn = exported
        .consistent_lsn
        .parse()
        .map_err(|e| CopyError::Unexpected {
            db: db.to_string(),
            message: format!(
                "the slot's consistent point {:?}: {e}",
                exported.consistent_lsn
            ),
        })?;
    ctx.record(move |r| r.consistent_lsn = Some(consistent))
        .await?;
    tracing::info!(db, slot = %name, lsn = %exported.consistent_lsn, snapshot = %exported.snapshot_name, "snapshot exported");

    let copy = DatabaseCopy {
        db,
        source: &source_params,
        target: &target_params,
        tools: &tools,
        work_dir: &ctx.work_dir,
        options: copy_options(cfg),
        progress: ctx.progress.clone(),
        keep_owners,
        exclude_publication: (!temporary).then_some(name.as_str()),
        on_data_copied: &|| mark_data_copied(ctx),
        filter: &cfg.tables,
    };
    let started = Instant::now();
    let summary = copy.run(&exported.snapshot_name).await?;
    tracing::info!(
        db,
        tables = summary.tables,
        rows = summary.rows,
        mb = summary.bytes / 1_000_000,
        sequences = summary.sequences,
        large_objects = summary.large_objects,
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        "snapshot copy done"
    );
    if temporary {
        drop_exported_slot(&mut exported.conn, db, &name).await?;
    }
    let _ = exported.conn.close().await;
    complete_copy(ctx, &target_params).await
}

/// Records that every table's rows are in, so a failure after this point
/// resumes at post-data instead of copying again. Called back from inside
/// the copy, which cannot wait: written at once but not awaited, which is
/// safe as a restart that misses it only copies the data again.
fn mark_data_copied(ctx: &DbContext) {
    if let Err(e) = ctx.state.record_soon(&ctx.db, |r| r.data_copied = true) {
        tracing::warn!(db = %ctx.db, "recording that the data is copied: {e}");
    }
}

/// Resumes a copy whose data phase finished in an earlier run: the rest of
/// post-data, sequences, large objects. False when its work files are gone
/// (the copy then starts over).
async fn resume_copy(ctx: &DbContext, tools: &PgTools, keep_owners: bool) -> Result<bool, DbError> {
    let db = ctx.db.as_str();
    let cfg = &ctx.config;
    let source_params = cfg.source.connect_params(db);
    let target_params = cfg.target.connect_params(db);
    let name = ctx.resume().publication_name;
    let copy = DatabaseCopy {
        db,
        source: &source_params,
        target: &target_params,
        tools,
        work_dir: &ctx.work_dir,
        options: copy_options(cfg),
        progress: ctx.progress.clone(),
        keep_owners,
        exclude_publication: name.as_deref(),
        on_data_copied: &|| {},
        filter: &cfg.tables,
    };
    if !copy.can_resume() {
        tracing::warn!(
            db,
            "the earlier run's schema archive is gone: copying again"
        );
        return Ok(false);
    }
    ctx.progress.set_phase(Phase::BuildingIndexes);
    let summary = copy.resume().await?;
    tracing::info!(
        db,
        sequences = summary.sequences,
        large_objects = summary.large_objects,
        "resumed copy done"
    );
    complete_copy(ctx, &target_params).await?;
    Ok(true)
}

/// The end of a copy: statistics for the planner, work files removed, and
/// the copy recorded as complete.
async fn complete_copy(ctx: &DbContext, target_params: &ConnectParams) -> Result<(), DbError> {
    let db = ctx.db.as_str();
    crate::copy::analyze::analyze_all(target_params, ctx.config.copy.index_jobs, db).await?;
    let _ = std::fs::remove_dir_all(&ctx.work_dir);
    ctx.record(|r| r.copy_completed = true).await?;
    Ok(())
}

fn copy_options(cfg: &Config) -> CopyOptions {
    CopyOptions {
        jobs: cfg.copy.jobs,
        index_jobs: cfg.copy.index_jobs,
        split_bytes: cfg.copy.split_tables_larger_than,
    }
}
