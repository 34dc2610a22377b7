//! Prerequisites, slot (and publication), snapshot copy. An earlier run
//! that died inside the copy is resumed: after its schema was restored,
//! the data phase goes on under a new snapshot (a temporary slot's) with
//! only the units not yet in; after its rows were in, at post-data. Before
//! the schema was in, the copy starts over.

use std::time::Instant;

use super::database::{DbContext, DbError};
use super::prerequisites::{prepare, Prepared};
use super::replication_objects::{
    drop_exported_slot, origin_names, prepare_ddl_capture, prepare_keyless,
};
use crate::config::{Config, Mode};
use crate::conn::{ConnectParams, Connection};
use crate::control::state::{LateCopy, ResumeState};
use crate::control::status::Phase;
use crate::copy::pg_tools::PgTools;
use crate::copy::{copy_origins, slot, CopyError, CopyOptions, CopySummary, DatabaseCopy};
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
    } else if prepared.schema_restored {
        if super::copy_resume::resume_data_phase(ctx, &mut prepared).await? {
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
        crate::stream::ddl::capture::drop_if_exists(&mut source, &name)
            .await
            .map_err(|e| CopyError::source(db, "dropping an earlier DDL capture", e))?;
    }
    // Offline needs the slot only for its snapshot: a temporary one goes
    // away with its session, whatever happens to this process.
    let temporary = cfg.mode == Mode::Offline;
    if !temporary {
        // Before the slot, so every change after its snapshot is published.
        let insert_only = prepare_keyless(ctx, &mut source, &name).await?;
        publication::create(&mut source, db, &name, &insert_only, &cfg.tables).await?;
        prepare_ddl_capture(ctx, &mut source, &name).await?;
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

    let origins = prepare_copy_origins(ctx, &target_params, &name, true).await?;
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
        copy_origins: &origins,
        consistent_lsn: consistent,
        on_schema_restored: &|| mark_schema_restored(ctx),
        on_data_copied: &|late| mark_data_copied(ctx, late),
        filter: &cfg.tables,
    };
    let started = Instant::now();
    let summary = copy.run(&exported.snapshot_name, consistent).await?;
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
    complete_copy(ctx, &target_params, &summary).await
}

/// The copy workers' origins on the target, recorded before they exist;
/// with `fresh`, an earlier copy's are dropped and made anew. Empty when
/// the target refuses them: the copy then cannot resume.
pub(super) async fn prepare_copy_origins(
    ctx: &DbContext,
    target_params: &ConnectParams,
    object_name: &str,
    fresh: bool,
) -> Result<Vec<String>, DbError> {
    let db = ctx.db.as_str();
    let earlier = ctx.resume().copy_origin_names;
    let mut names = copy_origins::names(object_name, ctx.config.copy.jobs.max(1));
    if !fresh && earlier.len() > names.len() {
        // The journal names workers of the earlier, wider run.
        names = copy_origins::names(object_name, earlier.len());
    }
    let recorded = names.clone();
    ctx.record(move |r| r.copy_origin_names = recorded).await?;
    let mut target = Connection::connect(target_params)
        .await
        .map_err(|e| CopyError::target(db, "connecting for the copy origins", e))?;
    let usable = if fresh {
        copy_origins::create_all(&mut target, &names, db).await?
    } else {
        true
    };
    let _ = target.close().await;
    if usable {
        Ok(names)
    } else {
        ctx.record(|r| r.copy_origin_names.clear()).await?;
        Ok(Vec::new())
    }
}

/// Records that the schema is in and the journal written, so a failure
/// after this point resumes the data phase. Called back from inside the
/// copy, which cannot wait: a restart that misses it copies again.
fn mark_schema_restored(ctx: &DbContext) {
    if let Err(e) = ctx.state.record_soon(&ctx.db, |r| r.schema_restored = true) {
        tracing::warn!(db = %ctx.db, "recording that the schema is restored: {e}");
    }
}

/// Records that every table's rows are in (with the tables read under a
/// later snapshot, which the stream must know), so a failure after this
/// point resumes at post-data instead of copying again. Called back from
/// inside the copy, which cannot wait: written at once but not awaited,
/// which is safe as a restart that misses it resumes the data phase.
pub(super) fn mark_data_copied(ctx: &DbContext, late: Vec<LateCopy>) {
    let update = move |r: &mut ResumeState| {
        r.data_copied = true;
        r.late_copies = late;
    };
    if let Err(e) = ctx.state.record_soon(&ctx.db, update) {
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
        copy_origins: &[],
        consistent_lsn: ctx.resume().consistent_lsn.unwrap_or_default(),
        on_schema_restored: &|| {},
        on_data_copied: &|_| {},
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
    super::copy_resume::end_earlier_sessions(ctx).await?;
    let summary = copy.resume().await?;
    tracing::info!(
        db,
        sequences = summary.sequences,
        large_objects = summary.large_objects,
        "resumed copy done"
    );
    complete_copy(ctx, &target_params, &summary).await?;
    Ok(true)
}

/// The end of a copy: statistics for the planner, the copy origins and
/// work files removed, and the copy recorded as complete (with the tables
/// a resumed copy read late; a resumed post-data has none to add, they
/// were recorded with `data_copied`).
pub(super) async fn complete_copy(
    ctx: &DbContext,
    target_params: &ConnectParams,
    summary: &CopySummary,
) -> Result<(), DbError> {
    let db = ctx.db.as_str();
    crate::copy::analyze::analyze_all(target_params, ctx.config.copy.index_jobs, db).await?;
    let origins = ctx.resume().copy_origin_names;
    if !origins.is_empty() {
        let mut target = Connection::connect(target_params)
            .await
            .map_err(|e| CopyError::target(db, "connecting to drop the copy origins", e))?;
        copy_origins::drop_all(&mut target, &origins, db).await?;
        let _ = target.close().await;
    }
    let _ = std::fs::remove_dir_all(&ctx.work_dir);
    let late = summary.late.clone();
    ctx.record(move |r| {
        r.copy_completed = true;
        r.copy_origin_names.clear();
        if !late.is_empty() {
            r.late_copies = late;
        }
    })
    .await?;
    Ok(())
}

pub(super) fn copy_options(cfg: &Config) -> CopyOptions {
    CopyOptions {
        jobs: cfg.copy.jobs,
        index_jobs: cfg.copy.index_jobs,
        split_bytes: cfg.copy.split_tables_larger_than,
    }
}
