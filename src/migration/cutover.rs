//! Cutover of one database: optionally make the source read-only, record
//! its WAL position, wait until every worker applied through it, stop the
//! stream, set the target's sequences, and remove slot, publication and
//! origins.
//!
//! Crash safety: state.json records `Requested` (by the daemon, with the
//! status), `Applied` (after the stream stopped for good) and `Done`. A
//! restart at `Requested` streams and cuts over again (the origins hold
//! what was applied); at `Applied` it only repeats the idempotent finish;
//! the slot is never dropped before `Applied` is on disk, so a restart
//! never waits for a slot that is gone.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::database::{DbContext, DbEnd, DbError};
use super::replication_objects::{drop_origins, drop_source_objects, forget, restore_identities};
use super::step_error::StepError;
use super::wal_position::settled_wal_lsn;
use crate::conn::Connection;
use crate::control::state::CutoverStep;
use crate::control::status::Phase;
use crate::copy;
use crate::stream::{Stream, StreamError};

/// Applies everything the source committed, stops the stream, and
/// finishes the cutover; `Stopped` only when the daemon's stop ended the
/// stream just before the cutover took it over (a restart cuts over).
pub(super) async fn cut_over(
    ctx: &DbContext,
    source: &mut Connection,
    stream: Stream,
    slot_name: &str,
) -> Result<DbEnd, DbError> {
    let db = ctx.db.as_str();
    // Started, a cutover is finished: the daemon's stop waits for it.
    stream.begin_cutover();
    ctx.progress.set_phase(Phase::CuttingOver);
    crate::chaos::point("cutover-requested").await;
    if ctx.config.cutover.lock_source {
        lock_source(source, db).await?;
    }
    let target_lsn = settled_wal_lsn(source, db).await?;
    tracing::info!(slot = slot_name, lsn = %target_lsn, "cutover: applying everything up to the source's current position");
    let mut last_log = Instant::now();
    loop {
        if !stream.is_running() {
            stream.stop().await.map_err(DbError::Stream)?;
            // Ended without an error: the daemon's stop reached the thread
            // before `begin_cutover` did. Left at `requested`, resumed.
            if ctx.shutdown.is_requested() {
                return Ok(DbEnd::Stopped);
            }
            return Err(DbError::Stream(StreamError::Ended {
                db: db.to_string(),
                during: format!(" during cutover, before {target_lsn}"),
            }));
        }
        let applied = stream.applied();
        ctx.progress
            .lag_bytes
            .store(target_lsn.saturating_sub(applied), Ordering::Relaxed);
        if applied >= target_lsn {
            break;
        }
        if last_log.elapsed() >= Duration::from_secs(10) {
            last_log = Instant::now();
            tracing::info!(%applied, target = %target_lsn, "cutover: waiting for apply");
        }
        stream.poke();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stream.stop().await.map_err(DbError::Stream)?;
    // From here on nothing streams again, whatever happens to this process.
    ctx.record(|r| r.cutover = CutoverStep::Applied).await?;
    crate::chaos::point("cutover-applied").await;
    ctx.progress.lag_bytes.store(0, Ordering::Relaxed);
    ctx.progress.set_latency_seconds(0.0);
    finish(ctx).await?;
    Ok(DbEnd::Done)
}

/// The idempotent end of a cutover: sequences, then slot and publication,
/// then origins, then `Done` — repeated whole by a restart.
pub(super) async fn finish(ctx: &DbContext) -> Result<(), DbError> {
    let db = ctx.db.as_str();
    let cfg = &ctx.config;
    let started = Instant::now();
    ctx.progress.set_phase(Phase::CuttingOver);
    let resume = ctx.resume();
    let mut source = Connection::connect(&cfg.source.connect_params(db))
        .await
        .map_err(|e| StepError::source(db, "connecting for sequences", e))?;
    // With `lock_source` new sessions default to read-only; dropping the
    // publication needs this one to write.
    source
        .execute("SET default_transaction_read_only = off")
        .await
        .map_err(|e| StepError::source(db, "preparing to drop the publication", e))?;
    let mut target = Connection::connect(&cfg.target.connect_params(db))
        .await
        .map_err(|e| StepError::target(db, "connecting for sequences", e))?;
    let sequences = copy::catalog::sequences(&mut source, db)
        .await
        .map_err(StepError::from)?;
    // Those owned by an excluded table are not on the target.
    let sequences = copy::table_filter::Choices::read(&mut source, db, &cfg.tables)
        .await
        .map_err(StepError::from)?
        .sequences_of(sequences);
    let n = copy::sequences::sync(&mut source, &mut target, &sequences, db)
        .await
        .map_err(StepError::from)?;
    tracing::info!(sequences = n, "sequences set to the source's values");
    crate::chaos::point("cutover-sequences").await;
    // Before the application may switch: every write it makes on the
    // target is after the reverse slot's consistent point.
    let reversing = cfg.cutover.reverse_replication || resume.reverse.is_some();
    if reversing {
        super::reverse_objects::prepare(ctx, &mut target).await?;
    }
    drop_source_objects(&mut source, db, &resume).await?;
    crate::chaos::point("cutover-slot-dropped").await;
    // Reversing, the target keeps FULL until reverse replication ends.
    if !reversing {
        restore_identities(&mut target, &resume.identity_changes)
            .await
            .map_err(|e| StepError::target(db, "restoring replica identities", e))?;
    }
    drop_origins(&mut target, db, &resume.origin_names).await?;
    crate::chaos::point("cutover-origins-dropped").await;
    ctx.record(|r| {
        forget(r);
        r.cutover = CutoverStep::Done;
    })
    .await?;
    tracing::info!(
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        "cutover done"
    );
    Ok(())
}

/// Makes the source database read-only and ends the sessions opened
/// before that (they would keep writing). Our own replication session is
/// a walsender and is left alone.
async fn lock_source(source: &mut Connection, db: &str) -> Result<(), DbError> {
    source
        .execute(&format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            crate::conn::quote_ident(db)
        ))
        .await
        .map_err(|e| StepError::source(db, "making the source database read-only", e))?;
    source
        .query(
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid() AND backend_type = 'client backend'",
            &[db.into()],
        )
        .await
        .map_err(|e| StepError::source(db, "ending the source's sessions", e))?;
    tracing::info!("source database is read-only now");
    Ok(())
}
