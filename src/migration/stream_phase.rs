//! Streams changes until shutdown or cutover: lag measured every second,
//! the database marked ready once the backlog since the snapshot is
//! applied, and the stream restarted (with backoff) when it breaks.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::cutover;
use super::database::{DbContext, DbEnd, DbError};
use super::replication_objects::origin_names;
use super::step_error::StepError;
use super::wal_position::current_wal_lsn;
use crate::config::{DdlMode, MESSAGES_SINCE};
use crate::conn::{ConnectParams, Connection};
use crate::control::state::ResumeState;
use crate::control::status::Phase;
use crate::protocol::lsn::Lsn;
use crate::stream::supervisor::{Event, Supervisor};
use crate::stream::{self, StreamConfig, StreamError};

/// Streams until the operator's cutover (then cuts over) or shutdown.
/// Restarts (a server restart, a network cut, a change the target refuses)
/// are the supervisor's: bounded per position, see `stream::retry`.
pub(super) async fn stream_phase(ctx: &DbContext) -> Result<DbEnd, DbError> {
    let db = ctx.db.as_str();
    let (stream_cfg, mut source) = stream_config(ctx).await?;
    let source_params = stream_cfg.source.clone();
    let slot_name = stream_cfg.slot.clone();
    ctx.progress.set_phase(Phase::Streaming);
    let standing = standing_warning(stream_cfg.ddl);
    ctx.progress.set_message(standing.clone());
    let mut stream = Supervisor::start(stream_cfg, ctx.progress.clone(), ctx.shutdown.clone())
        .map_err(DbError::Stream)?;
    let mut catch_up = current_wal_lsn(&mut source, db).await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut report = MinuteReport::new(ctx);
    loop {
        let mut cutover = ctx.cutover.clone();
        let (stop, cut) = tokio::select! {
            biased;
            _ = ctx.shutdown.requested() => (true, false),
            _ = tick.tick() => (false, false),
            r = cutover.wait_for(|c| *c) => (false, r.is_ok()),
        };
        if stop {
            stream.stop().await.map_err(DbError::Stream)?;
            return Ok(DbEnd::Stopped);
        }
        if cut && stream.applying() {
            if let Some(stream) = stream.into_stream() {
                return cutover::cut_over(ctx, &mut source, stream, &slot_name).await;
            }
            return Err(DbError::Stream(StreamError::Ended {
                db: db.to_string(),
                during: " as the cutover began".into(),
            }));
        }
        if cut {
            // The accepted cutover (recorded in state.json) waits for the
            // restarting stream instead of failing.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match stream.check().await.map_err(DbError::Stream)? {
            Event::Stopping => {
                stream.stop().await.map_err(DbError::Stream)?;
                return Ok(DbEnd::Stopped);
            }
            Event::Down { message } => {
                // Not applying: not ready, whatever it was before.
                ctx.ready.store(false, Ordering::Release);
                ctx.progress.set_message(Some(message));
            }
            Event::Restarted => {
                ctx.ready.store(false, Ordering::Release);
                if let Ok(c) = Connection::connect(&source_params).await {
                    source = c;
                }
                // Ready again only once this stream applied what the
                // source holds now.
                if let Ok(l) = current_wal_lsn(&mut source, db).await {
                    catch_up = l;
                }
            }
            Event::Running { recovered } => {
                if recovered {
                    ctx.progress.set_message(standing.clone());
                }
            }
        }
        stream.poke();
        let Some(applied) =
            measure_lag(ctx, &mut source, &source_params, &slot_name, &stream).await
        else {
            continue;
        };
        report.maybe_log(ctx);
        if !stream.applying() {
            ctx.ready.store(false, Ordering::Release);
        } else if applied >= catch_up && !ctx.ready.swap(true, Ordering::AcqRel) {
            tracing::info!(%applied, "initial backlog applied; ready for cutover");
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
        return Err(DbError::Stream(StreamError::NotRecorded {
            db: db.to_string(),
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
    // The inserts-only publication of keyless tables decodes alongside.
    let publications: Vec<String> = std::iter::once(publication_name)
        .chain(resume.insert_publication_name.clone())
        .collect();
    let ddl = ddl_mode(ctx, &resume, source.server_major())?;
    let mut binary = true;
    for p in &publications {
        binary = binary && stream::binary_possible(&mut source, p).await;
    }
    let stream_cfg = StreamConfig {
        db: db.to_string(),
        filter: cfg.tables.clone(),
        source: source_params.clone(),
        target: cfg.target.connect_params(db),
        slot: slot_name,
        publications,
        start_lsn,
        origins,
        batch_max_changes: cfg.apply.batch_max_changes,
        batch_max_delay: cfg.apply.batch_max_delay,
        spill_dir: ctx.work_dir.join("spill"),
        protocol_version: stream::protocol_version(source.server_major()),
        binary,
        late: stream::late_tables::LateTables::new(&resume.late_copies),
        ddl,
    };
    Ok((stream_cfg, source))
}

/// The `ddl` mode of this stream: the config's when it names one (an
/// operator may switch a migration that stopped at a DDL to `replicate`),
/// else the one chosen when the slot was made. Capturing needs the event
/// trigger made then.
fn ddl_mode(ctx: &DbContext, resume: &ResumeState, source_major: u32) -> Result<DdlMode, DbError> {
    let mode = ctx
        .config
        .ddl
        .or(resume.ddl_mode)
        .unwrap_or(DdlMode::Ignore);
    if mode.captures() && (resume.ddl_capture.is_none() || source_major < MESSAGES_SINCE) {
        return Err(StepError::DdlCapture {
            db: ctx.db.clone(),
            mode: mode.as_str(),
            needs: "the event trigger created with the publication, which this migration has not"
                .into(),
            fix: "set ddl = \"ignore\", or cancel and start the migration again with it",
        }
        .into());
    }
    Ok(mode)
}

/// What `show` says while a stream runs without trouble.
fn standing_warning(ddl: DdlMode) -> Option<String> {
    (ddl == DdlMode::Ignore).then(|| {
        "ddl = \"ignore\": schema changes on the source are not carried to the target; \
         a changed table stops the apply"
            .to_string()
    })
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

/// Publishes lag, latency and the slot's retained WAL; returns the applied
/// position, or None when the source cannot be read now (lag is a view:
/// reconnect next time, keep streaming).
pub(super) async fn measure_lag(
    ctx: &DbContext,
    source: &mut Connection,
    source_params: &ConnectParams,
    slot_name: &str,
    stream: &Supervisor,
) -> Option<Lsn> {
    let db = ctx.db.as_str();
    let now = match current_wal_lsn(source, db).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("cannot read the source's WAL position: {e}");
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
    crate::metrics::set_replication_lag(db, lag, latency);
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
        // The gauge and `show` report the same whole number of bytes.
        let bytes = bytes.max(0.0) as u64;
        crate::metrics::set_source_retained_wal(db, bytes);
        ctx.progress
            .source_retained_wal_bytes
            .store(bytes, Ordering::Relaxed);
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
