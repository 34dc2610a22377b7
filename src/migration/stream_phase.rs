//! Streams changes until shutdown or cutover: lag measured every second,
//! the database marked ready once the backlog since the snapshot is
//! applied, and the stream restarted (with backoff) when it breaks.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::cutover;
use super::database::{DbContext, DbEnd, DbError};
use super::replication_objects::origin_names;
use super::wal_position::current_wal_lsn;
use crate::conn::{ConnectParams, Connection};
use crate::control::status::Phase;
use crate::protocol::lsn::Lsn;
use crate::stream::{self, Stream, StreamConfig, StreamError};

/// A server restart or a network cut must not end a migration that can
/// resume: the stream restarts from the origins, with backoff, until it
/// fails this many times in a row without applying anything.
const MAX_RETRIES: u32 = 20;

/// Streams until the operator's cutover (then cuts over) or shutdown.
pub(super) async fn stream_phase(ctx: &DbContext) -> Result<DbEnd, DbError> {
    let db = ctx.db.as_str();
    let (stream_cfg, mut source) = stream_config(ctx).await?;
    let source_params = stream_cfg.source.clone();
    let slot_name = stream_cfg.slot.clone();
    ctx.progress.set_phase(Phase::Streaming);
    let mut stream =
        Stream::start(stream_cfg.clone(), ctx.progress.clone()).map_err(DbError::Stream)?;
    let catch_up = current_wal_lsn(&mut source, db).await?;
    let mut shutdown = ctx.shutdown.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut retries = 0u32;
    let mut applied_at_restart = stream.applied();
    let mut report = MinuteReport::new(ctx);
    loop {
        let mut cutover = ctx.cutover.clone();
        let (stop, cut) = tokio::select! {
            _ = tick.tick() => (false, false),
            r = shutdown.wait_for(|s| *s) => (r.is_ok(), false),
            r = cutover.wait_for(|c| *c) => (false, r.is_ok()),
        };
        if stop {
            stream.stop().await.map_err(DbError::Stream)?;
            return Ok(DbEnd::Stopped);
        }
        if cut {
            cutover::cut_over(ctx, &mut source, stream, &slot_name).await?;
            return Ok(DbEnd::Done);
        }
        if !stream.is_running() {
            let err = match stream.stop().await {
                Err(e) => e,
                Ok(()) => StreamError::Other {
                    db: db.to_string(),
                    message: "the stream ended unexpectedly".into(),
                },
            };
            retries += 1;
            if retries > MAX_RETRIES {
                return Err(DbError::Stream(err));
            }
            if !back_off(ctx, retries, &err).await {
                return Ok(DbEnd::Stopped);
            }
            if let Ok(c) = Connection::connect(&source_params).await {
                source = c;
            }
            stream =
                Stream::start(stream_cfg.clone(), ctx.progress.clone()).map_err(DbError::Stream)?;
            applied_at_restart = stream.applied();
            continue;
        }
        if retries > 0 && stream.applied() > applied_at_restart {
            retries = 0;
            ctx.progress.set_message(None);
        }
        stream.poke();
        let Some(applied) =
            measure_lag(ctx, &mut source, &source_params, &slot_name, &stream).await
        else {
            continue;
        };
        report.maybe_log(ctx);
        if applied >= catch_up && !ctx.ready.swap(true, Ordering::AcqRel) {
            tracing::info!(db, %applied, "initial backlog applied; ready for cutover");
        }
    }
}

/// The stream's settings from state.json and the config, and a session on
/// the source for lag and cutover.
async fn stream_config(ctx: &DbContext) -> Result<(StreamConfig, Connection), DbError> {
    let db = ctx.db.as_str();
    let cfg = &ctx.config;
    let resume = ctx.resume();
    let (Some(slot_name), Some(publication_name), Some(start_lsn)) = (
        resume.slot_name.clone(),
        resume.publication_name.clone(),
        resume.consistent_lsn,
    ) else {
        return Err(DbError::Stream(StreamError::Other {
            db: db.to_string(),
            message: "state.json lacks the slot, publication or consistent LSN of this database"
                .into(),
        }));
    };
    let source_params = cfg.source.connect_params(db);
    let mut source = connect_source(db, &source_params).await?;
    let origins = if resume.origin_names.is_empty() {
        origin_names(&slot_name, None, cfg.apply.workers)
    } else {
        // The worker count is fixed by the first run: tables must stay on
        // the worker whose origin covers them.
        resume.origin_names.clone()
    };
    let stream_cfg = StreamConfig {
        db: db.to_string(),
        source: source_params.clone(),
        target: cfg.target.connect_params(db),
        slot: slot_name,
        publication: publication_name.clone(),
        start_lsn,
        origins,
        batch_max_changes: cfg.apply.batch_max_changes,
        batch_max_delay: cfg.apply.batch_max_delay,
        spill_dir: ctx.work_dir.join("spill"),
        protocol_version: stream::protocol_version(source.server_major()),
        binary: stream::binary_possible(&mut source, &publication_name).await,
    };
    Ok((stream_cfg, source))
}

async fn connect_source(db: &str, params: &ConnectParams) -> Result<Connection, DbError> {
    Connection::connect(params)
        .await
        .map_err(|e| DbError::Connect {
            db: db.to_string(),
            side: "source",
            target: params.target(),
            source: e,
        })
}

/// Waits before restart `retry`; false when shutdown came first.
async fn back_off(ctx: &DbContext, retry: u32, err: &StreamError) -> bool {
    let wait = Duration::from_secs((1u64 << retry.min(5)).min(30));
    tracing::warn!(
        db = %ctx.db,
        retry,
        wait_s = wait.as_secs(),
        "stream interrupted, restarting: {err}"
    );
    ctx.progress
        .set_message(Some(format!("stream interrupted (retry {retry}): {err}")));
    let mut shutdown = ctx.shutdown.clone();
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        r = shutdown.wait_for(|s| *s) => r.is_err(),
    }
}

/// Publishes lag, latency and the slot's retained WAL; returns the applied
/// position, or None when the source cannot be read now (lag is a view:
/// reconnect next time, keep streaming).
async fn measure_lag(
    ctx: &DbContext,
    source: &mut Connection,
    source_params: &ConnectParams,
    slot_name: &str,
    stream: &Stream,
) -> Option<Lsn> {
    let db = ctx.db.as_str();
    let now = match current_wal_lsn(source, db).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(db, "cannot read the source's WAL position: {e}");
            if let Ok(c) = Connection::connect(source_params).await {
                *source = c;
            }
            return None;
        }
    };
    // Before the workers report (at every stream start and restart) their
    // position is unknown, not 0: the slot's confirmed position is applied
    // for sure, so the lag is never more than the WAL truly behind.
    let confirmed = slot_position(ctx, source, slot_name).await;
    let applied = stream.applied();
    let lag = now.saturating_sub(applied.max(confirmed.unwrap_or(applied)));
    ctx.progress.lag_bytes.store(lag, Ordering::Relaxed);
    let latency = stream.latency_seconds();
    ctx.progress.set_latency_seconds(latency);
    metrics::gauge!(crate::metrics::REPLICATION_LAG_BYTES, "database" => db.to_string())
        .set(lag as f64);
    metrics::gauge!(crate::metrics::REPLICATION_LAG_SECONDS, "database" => db.to_string())
        .set(latency);
    Some(applied)
}

/// The slot's confirmed flush position, publishing the WAL it retains on
/// the way; None when it cannot be read now.
async fn slot_position(ctx: &DbContext, source: &mut Connection, slot_name: &str) -> Option<Lsn> {
    let db = ctx.db.as_str();
    let rows = source
        .query(
            "SELECT (pg_catalog.pg_current_wal_lsn() - restart_lsn)::bigint, confirmed_flush_lsn::text \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[slot_name.into()],
        )
        .await
        .ok()?;
    let row = rows.first()?;
    if let Ok(Some(bytes)) = row.opt_parse::<f64>(0) {
        metrics::gauge!(crate::metrics::SOURCE_RETAINED_WAL_BYTES, "database" => db.to_string())
            .set(bytes);
        ctx.progress
            .source_retained_wal_bytes
            .store(bytes as u64, Ordering::Relaxed);
    }
    row.opt_str(1).ok().flatten().and_then(|s| s.parse().ok())
}

/// One journal line a minute while streaming, so a quiet journal means a
/// quiet daemon and not a stuck one.
struct MinuteReport {
    since: std::time::Instant,
    applied: u64,
}

impl MinuteReport {
    const EVERY: Duration = Duration::from_secs(60);

    fn new(ctx: &DbContext) -> MinuteReport {
        MinuteReport {
            since: std::time::Instant::now(),
            applied: ctx.progress.applied_changes.load(Ordering::Relaxed),
        }
    }

    fn maybe_log(&mut self, ctx: &DbContext) {
        let elapsed = self.since.elapsed();
        if elapsed < Self::EVERY {
            return;
        }
        let applied = ctx.progress.applied_changes.load(Ordering::Relaxed);
        let rate = applied.saturating_sub(self.applied) as f64 / elapsed.as_secs_f64();
        tracing::info!(
            db = %ctx.db,
            lag_bytes = ctx.progress.lag_bytes.load(Ordering::Relaxed),
            lag_seconds = format!("{:.1}", ctx.progress.latency_seconds()),
            applied_changes = applied,
            changes_per_second = format!("{rate:.0}"),
            "streaming"
        );
        self.since = std::time::Instant::now();
        self.applied = applied;
    }
}
