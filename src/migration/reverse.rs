//! Reverse replication after cutover: the target's changes stream back to
//! the source (the forward machinery with the sides swapped) until the
//! operator's `rollback` or `finish`.
//!
//! Crash safety: the stream's position is in the origins on the source, so
//! a restart resumes where the last commit left. The operator's choice is
//! recorded (`reverse.end`) before it is acted on and `reverse.ended` after
//! the objects are gone; every step between is idempotent.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::database::{DbContext, DbEnd, DbError};
use super::reverse_objects;
use super::step_error::StepError;
use super::stream_phase::measure_lag;
use super::wal_position::settled_wal_lsn;
use crate::config::DdlMode;
use crate::conn::Connection;
use crate::control::state::{ReverseEnd, ReverseState};
use crate::control::status::Phase;
use crate::copy;
use crate::stream::supervisor::{Event, Supervisor};
use crate::stream::{self, StreamConfig, StreamError};

/// Streams target → source until `rollback`, `finish` or shutdown.
pub(super) async fn reverse_phase(
    ctx: &DbContext,
    reverse: ReverseState,
) -> Result<DbEnd, DbError> {
    if reverse.ended {
        return Ok(end_of(reverse.end));
    }
    if reverse.end == Some(ReverseEnd::Finish) {
        return finish(ctx, &reverse).await;
    }
    if reverse.drained {
        return roll_back(ctx, &reverse).await;
    }
    let db = ctx.db.as_str();
    let cfg = stream_config(ctx, &reverse).await?;
    let mut target = Connection::connect(&cfg.source)
        .await
        .map_err(|e| StepError::target(db, "connecting for the reverse lag", e))?;
    let target_params = cfg.source.clone();
    let slot = cfg.slot.clone();
    ctx.progress.set_phase(Phase::Streaming);
    ctx.progress.set_message(None);
    let mut stream = Supervisor::start(cfg, ctx.progress.clone(), ctx.shutdown.clone())
        .map_err(DbError::Stream)?;
    tracing::info!(slot = %slot, "reverse replication: streaming the target's changes to the source");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut rollback_from: Option<crate::protocol::lsn::Lsn> = None;
    loop {
        let mut ends = ctx.reverse_end.clone();
        let stop = tokio::select! {
            biased;
            _ = ctx.shutdown.requested() => true,
            _ = tick.tick() => false,
            r = ends.wait_for(|e| e.is_some()), if rollback_from.is_none() => r.is_err(),
        };
        if stop {
            stream.stop().await.map_err(DbError::Stream)?;
            return Ok(DbEnd::Stopped);
        }
        let asked = *ctx.reverse_end.borrow();
        match asked {
            Some(ReverseEnd::Finish) => {
                stream.stop().await.map_err(DbError::Stream)?;
                return finish(ctx, &reverse).await;
            }
            Some(ReverseEnd::Rollback) if rollback_from.is_none() => {
                let lsn = settled_wal_lsn(&mut target, db).await?;
                tracing::info!(%lsn, "rollback: applying everything up to the target's current position");
                rollback_from = Some(lsn);
            }
            _ => {}
        }
        match stream.check().await.map_err(DbError::Stream)? {
            Event::Stopping => {
                stream.stop().await.map_err(DbError::Stream)?;
                return Ok(DbEnd::Stopped);
            }
            Event::Down { message } => ctx.progress.set_message(Some(message)),
            Event::Restarted => {
                if let Ok(c) = Connection::connect(&target_params).await {
                    target = c;
                }
            }
            Event::Running { .. } => ctx.progress.set_message(None),
        }
        stream.poke();
        let applied = measure_lag(ctx, &mut target, &target_params, &slot, &stream).await;
        if let (Some(goal), Some(applied)) = (rollback_from, applied) {
            if applied >= goal && stream.applying() {
                stream.stop().await.map_err(DbError::Stream)?;
                // From here on nothing streams back again: the slot may go.
                ctx.record(|r| {
                    if let Some(rev) = r.reverse.as_mut() {
                        rev.drained = true;
                    }
                })
                .await?;
                return roll_back(ctx, &reverse).await;
            }
        }
    }
}

fn end_of(end: Option<ReverseEnd>) -> DbEnd {
    match end {
        Some(ReverseEnd::Rollback) => DbEnd::RolledBack,
        _ => DbEnd::Done,
    }
}

/// The reverse stream's settings: the target is read, the source applied.
async fn stream_config(ctx: &DbContext, reverse: &ReverseState) -> Result<StreamConfig, DbError> {
    let db = ctx.db.as_str();
    let cfg = &ctx.config;
    let Some(start_lsn) = reverse.consistent_lsn else {
        return Err(DbError::Stream(StreamError::NotRecorded {
            db: db.to_string(),
        }));
    };
    let target_params = cfg.target.connect_params(db);
    let mut target = Connection::connect(&target_params)
        .await
        .map_err(|e| StepError::target(db, "connecting for reverse replication", e))?;
    let publications: Vec<String> = std::iter::once(reverse.publication_name.clone())
        .chain(reverse.insert_publication_name.clone())
        .collect();
    let mut binary = true;
    for p in &publications {
        binary = binary && stream::binary_possible(&mut target, p).await;
    }
    Ok(StreamConfig {
        db: db.to_string(),
        filter: cfg.tables.clone(),
        source: target_params,
        target: cfg.source.connect_params(db),
        slot: reverse.slot_name.clone(),
        publications,
        start_lsn,
        origins: reverse.origin_names.clone(),
        batch_max_changes: cfg.apply.batch_max_changes,
        batch_max_delay: cfg.apply.batch_max_delay,
        spill_dir: ctx.work_dir.join("reverse-spill"),
        protocol_version: stream::protocol_version(target.server_major()),
        binary,
        late: stream::late_tables::LateTables::new(&[]),
        ddl: DdlMode::Ignore,
    })
}

/// Sessions on both sides; the source's may write whatever `lock_source`
/// set as the database default.
async fn connect_both(ctx: &DbContext) -> Result<(Connection, Connection), DbError> {
    Ok(connect_sides(&ctx.config, &ctx.db).await?)
}

async fn connect_sides(
    config: &crate::config::Config,
    db: &str,
) -> Result<(Connection, Connection), StepError> {
    let mut source = Connection::connect(&config.source.connect_params(db))
        .await
        .map_err(|e| StepError::source(db, "connecting to end reverse replication", e))?;
    source
        .execute("SET default_transaction_read_only = off")
        .await
        .map_err(|e| StepError::source(db, "preparing to write", e))?;
    let target = Connection::connect(&config.target.connect_params(db))
        .await
        .map_err(|e| StepError::target(db, "connecting to end reverse replication", e))?;
    Ok((source, target))
}

/// After everything the target had is applied: sequences from the
/// target, the source writable again, the reverse objects dropped.
async fn roll_back(ctx: &DbContext, reverse: &ReverseState) -> Result<DbEnd, DbError> {
    let db = ctx.db.as_str();
    let started = Instant::now();
    let (mut source, mut target) = connect_both(ctx).await?;
    let sequences = copy::catalog::sequences(&mut target, db)
        .await
        .map_err(StepError::from)?;
    let n = copy::sequences::sync(&mut target, &mut source, &sequences, db)
        .await
        .map_err(StepError::from)?;
    tracing::info!(
        sequences = n,
        "rollback: source sequences set to the target's values"
    );
    if ctx.config.cutover.lock_source {
        source
            .execute(&format!(
                "ALTER DATABASE {} RESET default_transaction_read_only",
                crate::conn::quote_ident(db)
            ))
            .await
            .map_err(|e| StepError::source(db, "making the source database writable", e))?;
        tracing::info!("rollback: source database is writable again");
    }
    end_objects(ctx, &mut target, &mut source, reverse).await?;
    tracing::info!(
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        "rolled back"
    );
    Ok(DbEnd::RolledBack)
}

/// Drops the reverse objects of `db` (cancel, cleanup).
pub(super) async fn drop_reverse_objects(
    config: &crate::config::Config,
    db: &str,
    reverse: &ReverseState,
) -> Result<(), StepError> {
    let (mut source, mut target) = connect_sides(config, db).await?;
    reverse_objects::drop_all(&mut target, &mut source, db, reverse).await
}

/// `finish`: the target stays the primary; the reverse objects go.
async fn finish(ctx: &DbContext, reverse: &ReverseState) -> Result<DbEnd, DbError> {
    let (mut source, mut target) = connect_both(ctx).await?;
    end_objects(ctx, &mut target, &mut source, reverse).await?;
    tracing::info!("reverse replication finished; its objects are dropped");
    Ok(DbEnd::Done)
}

/// Drops the reverse objects, records the end and zeroes the lag.
async fn end_objects(
    ctx: &DbContext,
    target: &mut Connection,
    source: &mut Connection,
    reverse: &ReverseState,
) -> Result<(), DbError> {
    reverse_objects::drop_all(target, source, ctx.db.as_str(), reverse).await?;
    ctx.record(|r| {
        if let Some(rev) = r.reverse.as_mut() {
            rev.ended = true;
        }
    })
    .await?;
    ctx.progress.lag_bytes.store(0, Ordering::Relaxed);
    ctx.progress.set_latency_seconds(0.0);
    Ok(())
}
