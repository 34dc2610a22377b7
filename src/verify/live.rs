//! Verify while streaming, in the daemon (console `VERIFY`): per database,
//! a temporary slot created with EXPORT_SNAPSHOT gives a source snapshot
//! and its consistent LSN `L`; the stream's hold point (`stream::hold`)
//! applies every transaction committed before `L`, flushes and holds; a
//! target snapshot is exported at that moment and the hold released. The
//! two snapshots are then compared at leisure while the stream catches up:
//! the stream stops only for the flush and one `pg_export_snapshot()`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::Config;
use crate::conn::Connection;
use crate::protocol::lsn::Lsn;
use crate::shutdown::Shutdown;
use crate::stream::hold;

use super::tables::Limits;
use super::VerifyReport;
use super::{open_session, verify_database, DatabaseReport, Side, Snapshots, VerifyError};

/// How long the stream may take to reach the slot's consistent point (it
/// may lag behind the source when verify starts).
const REACH_TIMEOUT: Duration = Duration::from_secs(120);

/// What `SHOW VERIFY` reports.
#[derive(Debug, Clone, Default)]
pub struct LiveStatus {
    /// Run number, from 1; 0 before the first.
    pub id: u64,
    /// `idle`, `running`, `identical`, `differences` or `failed`.
    pub state: &'static str,
    /// When the run started (RFC 3339).
    pub started_on: Option<String>,
    /// Tables compared so far, all databases.
    pub tables_done: usize,
    /// Tables to compare, all databases (known once each is snapshotted).
    pub tables_total: usize,
    /// Longest time a stream was held, in milliseconds.
    pub held_ms: u64,
    /// Why the run failed.
    pub message: Option<String>,
    /// The report, as `verify --json` prints it, once done.
    pub report_json: Option<String>,
}

/// The daemon's verify runs: one at a time.
pub struct LiveVerify {
    config: Arc<Config>,
    status: Mutex<LiveStatus>,
    limits: Mutex<Vec<Limits>>,
    held_ms: AtomicU64,
    /// Ends a run in progress when the daemon exits.
    stopping: Shutdown,
    /// The run in progress (or the last one), joined by [`LiveVerify::join`].
    task: Mutex<Option<JoinHandle<()>>>,
}

impl LiveVerify {
    /// No run yet; a run ends when `stopping` fires.
    pub fn new(config: Arc<Config>, stopping: Shutdown) -> Arc<LiveVerify> {
        Arc::new(LiveVerify {
            config,
            stopping,
            task: Mutex::new(None),
            status: Mutex::new(LiveStatus {
                state: "idle",
                ..LiveStatus::default()
            }),
            limits: Mutex::new(Vec::new()),
            held_ms: AtomicU64::new(0),
        })
    }

    /// Starts a run in the background and returns its id; the id of the
    /// run in progress when one is.
    pub fn start(self: &Arc<Self>) -> u64 {
        let Ok(mut status) = self.status.lock() else {
            return 0;
        };
        if status.state == "running" {
            return status.id;
        }
        let limits: Vec<Limits> = self
            .config
            .databases
            .iter()
            .map(|_| Limits {
                rows_per_second: self.config.verify.max_rows_per_second,
                ..Limits::default()
            })
            .collect();
        if let Ok(mut l) = self.limits.lock() {
            l.clone_from(&limits);
        }
        self.held_ms.store(0, Ordering::Relaxed);
        *status = LiveStatus {
            id: status.id + 1,
            state: "running",
            started_on: Some(crate::control::now_rfc3339()),
            ..LiveStatus::default()
        };
        crate::metrics::set_verify_running(true);
        let id = status.id;
        let me = self.clone();
        let span = tracing::info_span!("verify", run = id);
        let stop = self.stopping.clone();
        let handle = tokio::spawn(
            async move {
                // Dropping the run closes its sessions: the temporary slot
                // goes with its connection, and a held stream is released
                // by the stream's own shutdown.
                tokio::select! {
                    result = me.run(limits) => me.finish(result),
                    () = stop.requested() => me.finish(Err(VerifyError::Stopped)),
                }
            }
            .instrument(span),
        );
        if let Ok(mut task) = self.task.lock() {
            // The previous run has finished (one at a time): nothing to join.
            *task = Some(handle);
        }
        id
    }

    /// Waits for the run in progress, if any, to end (the daemon's exit
    /// has fired its stop); a panic in it is logged, not lost.
    pub async fn join(&self) {
        let handle = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle {
            if let Err(e) = handle.await {
                tracing::warn!("verify task failed: {e}");
            }
        }
    }

    /// The current or last run for `show`; None before the first.
    pub fn progress(&self) -> Option<crate::control::state::VerifyProgress> {
        let s = self.status();
        (s.id > 0).then(|| crate::control::state::VerifyProgress {
            id: s.id,
            state: s.state.to_string(),
            tables_done: s.tables_done,
            tables_total: s.tables_total,
            held_ms: s.held_ms,
        })
    }

    /// The current or last run.
    pub fn status(&self) -> LiveStatus {
        let mut s = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        if let Ok(limits) = self.limits.lock() {
            s.tables_done = limits
                .iter()
                .map(|l| l.tables_done.load(Ordering::Relaxed))
                .sum();
            s.tables_total = limits
                .iter()
                .map(|l| l.tables_total.load(Ordering::Relaxed))
                .sum();
        }
        s.held_ms = self.held_ms.load(Ordering::Relaxed);
        s
    }

    fn finish(&self, result: Result<VerifyReport, VerifyError>) {
        let Ok(mut status) = self.status.lock() else {
            return;
        };
        match result {
            Ok(report) => {
                status.state = if report.identical {
                    "identical"
                } else {
                    "differences"
                };
                tracing::info!(identical = report.identical, "verify while streaming done");
                status.report_json = serde_json::to_string(&report).ok();
            }
            Err(e) => {
                tracing::warn!("verify while streaming failed: {e}");
                status.state = "failed";
                status.message = Some(e.to_string());
            }
        }
        crate::metrics::set_verify_running(false);
    }

    async fn run(&self, limits: Vec<Limits>) -> Result<VerifyReport, VerifyError> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut names = std::collections::HashMap::new();
        for (i, (db, limits)) in self.config.databases.iter().zip(limits).enumerate() {
            let config = self.config.clone();
            let name = db.clone();
            let span = tracing::info_span!("database", name = %name);
            let handle = tasks.spawn(
                async move { (i, verify_streaming(&config, &name, limits).await) }.instrument(span),
            );
            names.insert(handle.id(), db.clone());
        }
        let mut reports: Vec<Option<DatabaseReport>> = vec![None; self.config.databases.len()];
        while let Some(joined) = tasks.join_next().await {
            let (i, result) = joined.map_err(|source| VerifyError::Task {
                db: names.get(&source.id()).cloned().unwrap_or_default(),
                source,
            })?;
            let (report, held) = result?;
            self.held_ms
                .fetch_max(held.as_millis() as u64, Ordering::Relaxed);
            if let Some(slot) = reports.get_mut(i) {
                *slot = Some(report);
            }
        }
        Ok(VerifyReport::new(reports.into_iter().flatten().collect()))
    }
}

/// One database at one LSN; also returns how long its stream was held.
async fn verify_streaming(
    config: &Config,
    db: &str,
    limits: Limits,
) -> Result<(DatabaseReport, Duration), VerifyError> {
    let hold_error = |message: String| VerifyError::Hold {
        db: db.to_string(),
        message,
    };
    let point = hold::for_db(db);
    let guard = point
        .arm()
        .ok_or_else(|| hold_error("another verify holds this stream".into()))?;
    let slot = slot_name(db);
    // The stream pauses while the slot is created (it waits for the
    // source's running transactions): bounded like the receiver's pause.
    let params = config.source.connect_params(db);
    let create = crate::copy::slot::create(&params, db, &slot, true);
    let exported = tokio::time::timeout(hold::MAX_PENDING, create)
        .await
        .map_err(|_| {
            hold_error(format!(
                "creating the temporary slot {slot} took over {}s (a long transaction on the source?)",
                hold::MAX_PENDING.as_secs()
            ))
        })?
        .map_err(|e| hold_error(format!("creating the temporary slot {slot}: {e}")))?;
    let lsn: Lsn = exported.consistent_lsn.parse().map_err(|_| {
        hold_error(format!(
            "unexpected consistent point {:?}",
            exported.consistent_lsn
        ))
    })?;
    if !guard.set_point(lsn) {
        return Err(hold_error(
            "the stream gave up waiting while the slot was created".into(),
        ));
    }
    if !guard.wait_held(REACH_TIMEOUT).await {
        return Err(hold_error(format!(
            "the stream did not reach {lsn} (is it streaming?); state {:?}",
            guard.state()
        )));
    }
    let held = Instant::now();
    let target = target_snapshot(config, db).await;
    guard.release();
    let held = held.elapsed();
    let (target_conn, target_snapshot) = target?;
    tracing::info!(%lsn, held_ms = held.as_millis() as u64, "source and target snapshots taken");
    let snapshots = Snapshots {
        source: exported.snapshot_name,
        target: target_snapshot,
        limits,
        exporters: std::sync::Mutex::new(vec![exported.conn, target_conn]),
    };
    let mut report = verify_database(config, db, Some(&snapshots)).await?;
    report.lsn = Some(lsn.to_string());
    Ok((report, held))
}

/// A target session in a snapshot taken now, and that snapshot's name.
async fn target_snapshot(config: &Config, db: &str) -> Result<(Connection, String), VerifyError> {
    let mut conn = open_session(&config.target, db, Side::Target).await?;
    let failed = |source| VerifyError::Query {
        side: Side::Target,
        db: db.to_string(),
        what: "exporting the target snapshot".into(),
        source,
    };
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(failed)?;
    let rows = conn
        .simple_query("SELECT pg_catalog.pg_export_snapshot()")
        .await
        .map_err(failed)?;
    let name = rows
        .first()
        .and_then(|r| r.str(0).ok())
        .map(str::to_string)
        .ok_or_else(|| VerifyError::Hold {
            db: db.to_string(),
            message: "pg_export_snapshot() returned nothing".into(),
        })?;
    Ok((conn, name))
}

/// A slot name unique to this daemon, run and database.
fn slot_name(db: &str) -> String {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let tag: String = db
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(20)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("pgmigrate_verify_{}_{n}_{tag}", std::process::id())
}
