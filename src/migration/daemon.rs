//! The run loop of `pgmigrate run`: state, console, validation, one task
//! per database, operator requests, and the final status.
//!
//! The loop owns the [`StateWriter`] (the only writer of state.json while
//! it runs) and two [`Shutdown`]s: `stop` ends the databases' work (signal,
//! cancel, a failed database), `exit` ends the console and the progress
//! line once the final status is written. Every task it starts is joined.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::cleanup::clean_up_database;
use super::console::Console;
use super::database::{migrate_database, work_dir, DbContext, DbEnd, DbError};
use super::progress_line::spawn_progress_line;
use super::replication_objects::forget;
use super::requests::Requests;
use super::{MigrationError, Outcome};
use crate::config::{Config, Mode, RunOption};
use crate::control::progress::MigrationProgress;
use crate::control::state::{CutoverStep, DatabaseState, MigrationState, ReverseEnd};
use crate::control::status::{Phase, Stage, Status};
use crate::control::store::{StateError, StateStore};
use crate::control::writer::{StateHandle, StateWriter};
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::verify::live::LiveVerify;

/// How often live counters reach state.json.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Runs (or resumes) the migration described by `config` until it ends or
/// `signals` (the daemon's stop: SIGTERM, SIGINT) is requested.
pub async fn run(
    config: Config,
    config_path: &std::path::Path,
    signals: Shutdown,
    requests: Arc<Requests>,
) -> Result<Outcome, MigrationError> {
    let config = Arc::new(config);
    let store = Arc::new(StateStore::open(&config.state_dir, &config.name)?);
    store.lock()?;
    let previous = store.snapshot();
    if store.existed() {
        match previous.status() {
            Status::Succeeded => {
                tracing::info!(name = %config.name, "migration already succeeded");
                return Ok(Outcome::Succeeded);
            }
            Status::Canceled => return Ok(Outcome::Canceled),
            _ => {}
        }
    }
    let opening = Opening {
        config: config.clone(),
        existed: store.existed(),
        config_path: std::fs::canonicalize(config_path)
            .ok()
            .map(|p| p.display().to_string()),
    };
    // The counters continue from the state as this run opens it.
    let mut opened = previous.clone();
    opening.apply(&mut opened)?;
    let progress = Arc::new(MigrationProgress::from_state(&opened));
    let writer = StateWriter::start(store.clone(), progress.clone(), PROGRESS_INTERVAL)?;
    let state = writer.handle();
    state.change(move |s| opening.apply(s)).await?;
    let (exit, exit_rx) = Shutdown::new();
    let (console, verify) = start_console(&store, &progress, &requests, &exit_rx, &config);
    // Ready as soon as state is loaded and locked: the migration itself
    // may take hours, and systemd must not time out the start.
    let s = state.snapshot();
    crate::control::notify::ready(&format!("{} / {}", s.status(), s.substatus()));
    let reporter = spawn_progress_line(progress.clone(), exit_rx);
    let daemon = Daemon {
        config,
        state,
        progress,
        requests,
    };
    let ended = match daemon.validate_unless_resuming(&previous).await {
        Ok(Some(outcome)) => Ok(outcome),
        Ok(None) => daemon.migrate(signals).await,
        Err(e) => Err(e),
    };
    let recorded = match ended {
        Ok(ended) => daemon.record_outcome(ended).await,
        Err(e) => Err(e),
    };
    let finished = writer.finish().await;
    exit.trigger();
    join_quietly("progress line", reporter).await;
    join_quietly("admin console", console).await;
    verify.join().await;
    let ended = recorded?;
    finished?;
    Ok(ended.into())
}

/// Awaits a helper task so its panic is logged, not lost.
async fn join_quietly(what: &str, task: JoinHandle<()>) {
    if let Err(e) = task.await {
        tracing::warn!("{what} task failed: {e}");
    }
}

/// How the migration ended, with what the final state write needs.
#[derive(Debug, Clone)]
enum Ended {
    Succeeded,
    Canceled,
    Failed(Vec<String>),
    Stopped,
    ValidationFailed(usize),
    Validated,
    RolledBack,
}

impl From<Ended> for Outcome {
    fn from(e: Ended) -> Outcome {
        match e {
            Ended::Succeeded | Ended::Validated => Outcome::Succeeded,
            Ended::Canceled => Outcome::Canceled,
            Ended::Failed(_) => Outcome::Failed,
            Ended::Stopped => Outcome::Stopped,
            Ended::ValidationFailed(_) => Outcome::ValidationFailed,
            Ended::RolledBack => Outcome::RolledBack,
        }
    }
}

/// What opening the state for this run changes.
struct Opening {
    config: Arc<Config>,
    existed: bool,
    config_path: Option<String>,
}

impl Opening {
    /// Creates or resumes state.json's document for this run.
    fn apply(&self, s: &mut MigrationState) -> Result<(), StateError> {
        let config = &self.config;
        if !self.existed || s.databases.is_empty() {
            *s = MigrationState::new(&config.name, config.mode, &config.databases);
        }
        // Databases added to the config since the last run join in.
        for db in &config.databases {
            if s.database(db).is_none() {
                s.databases.push(DatabaseState::new(db));
            }
        }
        s.mode = config.mode;
        s.pid = Some(std::process::id());
        s.config_path.clone_from(&self.config_path);
        s.message = None;
        // An accepted cutover stays accepted across a restart: the
        // status says so until the daemon finishes it.
        let stage = if cutover_accepted(s) {
            Stage::CompletingMigration
        } else {
            Stage::Prerequisites
        };
        Ok(s.transition(stage)?)
    }
}

fn cutover_accepted(s: &MigrationState) -> bool {
    s.databases
        .iter()
        .any(|d| d.resume.cutover != CutoverStep::NotRequested)
}

fn start_console(
    store: &Arc<StateStore>,
    progress: &Arc<MigrationProgress>,
    requests: &Arc<Requests>,
    exit: &Shutdown,
    config: &Arc<Config>,
) -> (JoinHandle<()>, Arc<LiveVerify>) {
    let verify = LiveVerify::new(config.clone(), exit.clone());
    let handler = Arc::new(Console {
        store: store.clone(),
        progress: progress.clone(),
        requests: requests.clone(),
        verify: verify.clone(),
    });
    let dir = store.dir().to_path_buf();
    let stop = exit.watch();
    let task = tokio::spawn(async move {
        if let Err(e) = crate::control::serve_console(&dir, handler, stop).await {
            tracing::warn!("admin console unavailable: {e}");
        }
    });
    (task, verify)
}

/// What the run loop shares.
struct Daemon {
    config: Arc<Config>,
    state: StateHandle,
    progress: Arc<MigrationProgress>,
    requests: Arc<Requests>,
}

/// What the run loop tracks while the databases migrate.
#[derive(Default)]
struct LoopState {
    failures: Vec<String>,
    stopped: bool,
    canceling: Option<bool>,
    waiting: bool,
    rolled_back: bool,
}

/// The run loop's senders to the database tasks.
struct Channels {
    cutover: watch::Sender<bool>,
    reverse: watch::Sender<Option<ReverseEnd>>,
}

/// The `rollback` or `finish` state.json records as accepted.
fn recorded_reverse_end(s: &MigrationState) -> Option<ReverseEnd> {
    s.databases
        .iter()
        .find_map(|d| d.resume.reverse.as_ref().and_then(|r| r.end))
}

impl Daemon {
    /// Validation runs before anything is created; a migration past it
    /// (an interrupted or failed run that created something: its own
    /// target databases would now fail the checks) skips it. Some outcome
    /// when the run ends here.
    async fn validate_unless_resuming(
        &self,
        previous: &MigrationState,
    ) -> Result<Option<Ended>, StateError> {
        let resuming = self.state.store().existed()
            && previous.status() != Status::ValidationFailed
            && previous
                .databases
                .iter()
                .any(|d| d.resume.target_database_created || d.resume.slot_name.is_some());
        if self.config.option == RunOption::Migrate || resuming {
            return Ok(None);
        }
        self.state.transition(Stage::Validating).await?;
        for p in &self.progress.dbs {
            p.set_phase(Phase::Validating);
        }
        let report = crate::validate::validate(&self.config).await;
        for c in report.failures() {
            tracing::error!(check = %c.id, "{} (fix: {})", c.message, c.fix);
        }
        let checks = report.checks.clone();
        self.state
            .change(move |s| {
                s.validation = checks;
                Ok(())
            })
            .await?;
        Ok(if report.failed() {
            Some(Ended::ValidationFailed(report.failures().count()))
        } else if self.config.option == RunOption::Validate {
            Some(Ended::Validated)
        } else {
            None
        })
    }

    /// One task per database, and the loop that supervises them.
    async fn migrate(&self, signals: Shutdown) -> Result<Ended, StateError> {
        self.state
            .change(|s| {
                if !cutover_accepted(s) {
                    s.transition(Stage::MigratingData)?;
                }
                Ok(())
            })
            .await?;
        // Databases stop on the operator's signal or when another one fails.
        let (stop, stop_rx) = Shutdown::new();
        // A cutover accepted before a restart goes on at once.
        let (cutover_tx, cutover_rx) = watch::channel(cutover_accepted(&self.state.snapshot()));
        let ready: HashMap<String, Arc<AtomicBool>> = self
            .config
            .databases
            .iter()
            .map(|d| (d.clone(), Arc::new(AtomicBool::new(false))))
            .collect();
        // A rollback or finish accepted before a restart goes on at once.
        let (reverse_tx, reverse_rx) = watch::channel(recorded_reverse_end(&self.state.snapshot()));
        let mut tasks = self.spawn_databases(&stop_rx, &cutover_rx, &reverse_rx, &ready);
        let chans = Channels {
            cutover: cutover_tx,
            reverse: reverse_tx,
        };
        let looped = self
            .supervise(&mut tasks, signals, &stop, &chans, &ready)
            .await;
        if looped.is_err() {
            // The state cannot be written: stop, but still join every task.
            stop.trigger();
            while tasks.join_next().await.is_some() {}
        }
        Ok(self.settle(looped?).await)
    }

    /// Until every database task ended: their ends, the operator's signal
    /// and requests, readiness for cutover.
    async fn supervise(
        &self,
        tasks: &mut JoinSet<(DbContext, Result<DbEnd, DbError>)>,
        signals: Shutdown,
        stop: &ShutdownTrigger,
        chans: &Channels,
        ready: &HashMap<String, Arc<AtomicBool>>,
    ) -> Result<LoopState, StateError> {
        let cutover_tx = &chans.cutover;
        let mut st = LoopState::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                next = tasks.join_next() => match next {
                    None => break,
                    Some(next) => if self.on_database_end(next, &mut st) {
                        stop.trigger();
                    },
                },
                _ = signals.requested(), if !stop.fired() => {
                    tracing::info!("stopping: progress is kept, run again to resume");
                    stop.trigger();
                }
                _ = self.requests.notify.notified() => {
                    self.on_request(&mut st, stop, cutover_tx).await?;
                    self.on_reverse_request(&chans.reverse).await?;
                }
                _ = tick.tick() => {
                    publish(&self.state, &self.progress);
                    self.maybe_reversing().await?;
                    let all_ready = self.config.mode == Mode::Online
                        && ready.values().all(|r| r.load(Ordering::Acquire));
                    if all_ready && !st.waiting && st.failures.is_empty() && st.canceling.is_none()
                        && !*cutover_tx.borrow()
                    {
                        st.waiting = true;
                        self.state.transition(Stage::WaitingForCutover).await?;
                        crate::metrics::set_cutover_ready(true);
                        tracing::info!("every database is streaming with its backlog applied: waiting for cutover");
                    } else if st.waiting && !all_ready && !*cutover_tx.borrow()
                        && self.state.snapshot().status() == Status::WaitingForUserAction
                    {
                        // A stream stopped applying (restarting, or behind
                        // again after a restart): not ready until it is.
                        st.waiting = false;
                        self.state.transition(Stage::MigratingData).await?;
                        crate::metrics::set_cutover_ready(false);
                        tracing::warn!("a stream is not applying: not ready for cutover until it has caught up again");
                    }
                }
            }
        }
        Ok(st)
    }

    fn spawn_databases(
        &self,
        stop_rx: &Shutdown,
        cutover_rx: &watch::Receiver<bool>,
        reverse_rx: &watch::Receiver<Option<ReverseEnd>>,
        ready: &HashMap<String, Arc<AtomicBool>>,
    ) -> JoinSet<(DbContext, Result<DbEnd, DbError>)> {
        let mut tasks = JoinSet::new();
        for db in &self.config.databases {
            let Some(p) = self.progress.get(db).cloned() else {
                continue;
            };
            let ctx = DbContext {
                config: self.config.clone(),
                shutdown: stop_rx.clone(),
                cutover: cutover_rx.clone(),
                reverse_end: reverse_rx.clone(),
                ready: ready.get(db).cloned().unwrap_or_default(),
                state: self.state.clone(),
                progress: p,
                db: db.clone(),
                work_dir: work_dir(self.state.store().dir(), db),
            };
            tasks.spawn(async move {
                let r = migrate_database(&ctx).await;
                (ctx, r)
            });
        }
        tasks
    }

    /// Books one database's end; true when the others must stop.
    fn on_database_end(
        &self,
        next: Result<(DbContext, Result<DbEnd, DbError>), tokio::task::JoinError>,
        st: &mut LoopState,
    ) -> bool {
        match next {
            Ok((ctx, Ok(DbEnd::Done))) => {
                ctx.progress.set_phase(Phase::Done);
                tracing::info!(db = %ctx.db, "database migrated");
                false
            }
            Ok((ctx, Ok(DbEnd::RolledBack))) => {
                ctx.progress.set_phase(Phase::Done);
                tracing::info!(db = %ctx.db, "database rolled back to the source");
                st.rolled_back = true;
                false
            }
            Ok((ctx, Ok(DbEnd::Stopped))) => {
                tracing::info!(db = %ctx.db, "stopped");
                st.stopped = true;
                false
            }
            Ok((ctx, Err(e))) => {
                let msg = e.to_string();
                tracing::error!(db = %ctx.db, "{msg}");
                ctx.progress.set_phase(Phase::Failed);
                ctx.progress.set_message(Some(msg.clone()));
                st.failures.push(msg);
                true
            }
            Err(e) => {
                st.failures.push(format!("migration task failed: {e}"));
                true
            }
        }
    }

    /// Acts on the operator's cancel or cutover request.
    async fn on_request(
        &self,
        st: &mut LoopState,
        stop: &ShutdownTrigger,
        cutover_tx: &watch::Sender<bool>,
    ) -> Result<(), StateError> {
        let status = self.state.snapshot().status();
        // Reversing, a cancel drops the reverse objects (never the target).
        let reversing = self.state.snapshot().stage().ok() == Some(Stage::Reversing);
        if let Some(drop_target) = self.requests.take_cancel() {
            let drop_target = drop_target && !reversing;
            if st.canceling.is_none()
                && matches!(status, Status::InProgress | Status::WaitingForUserAction)
                && (!*cutover_tx.borrow() || reversing)
            {
                tracing::info!(drop_target, "cancel requested");
                st.canceling = Some(drop_target);
                self.state.transition(Stage::CleaningUp).await?;
                stop.trigger();
            }
        }
        if self.requests.take_cutover() && st.canceling.is_none() {
            if status == Status::WaitingForUserAction {
                tracing::info!("cutover requested");
                // Status and every database's step in one write: a restart
                // after this point finishes the cutover.
                self.state
                    .change(|s| {
                        s.transition(Stage::CompletingMigration)?;
                        for d in &mut s.databases {
                            if d.resume.cutover == CutoverStep::NotRequested {
                                d.resume.cutover = CutoverStep::Requested;
                            }
                        }
                        Ok(())
                    })
                    .await?;
                crate::metrics::set_cutover_ready(false);
                let _ = cutover_tx.send(true);
            } else {
                tracing::warn!(status = %status, "cutover refused: accepted only in WaitingForUserAction");
            }
        }
        Ok(())
    }

    /// `WaitingForRollbackOrFinish` once every database streams back.
    async fn maybe_reversing(&self) -> Result<(), StateError> {
        let s = self.state.snapshot();
        let reversing = !s.databases.is_empty()
            && s.databases.iter().all(|d| {
                d.resume.cutover == CutoverStep::Done
                    && d.resume
                        .reverse
                        .as_ref()
                        .is_some_and(|r| r.consistent_lsn.is_some() && !r.ended)
            });
        if reversing && s.stage().ok() == Some(Stage::CompletingMigration) {
            self.state.transition(Stage::Reversing).await?;
            tracing::info!("cut over with reverse replication: the application may switch; `pgmigrate rollback` or `pgmigrate finish` ends it");
        }
        Ok(())
    }

    /// Acts on the operator's `rollback` or `finish`.
    async fn on_reverse_request(
        &self,
        reverse_tx: &watch::Sender<Option<ReverseEnd>>,
    ) -> Result<(), StateError> {
        let Some(end) = self.requests.take_reverse_end() else {
            return Ok(());
        };
        if self.state.snapshot().stage().ok() != Some(Stage::Reversing)
            || reverse_tx.borrow().is_some()
        {
            tracing::warn!(
                ?end,
                "refused: accepted only in WaitingForRollbackOrFinish, once"
            );
            return Ok(());
        }
        tracing::info!(?end, "end of reverse replication requested");
        self.state
            .change(move |s| {
                for d in &mut s.databases {
                    if let Some(r) = d.resume.reverse.as_mut() {
                        r.end = Some(end);
                    }
                }
                Ok(())
            })
            .await?;
        let _ = reverse_tx.send(Some(end));
        Ok(())
    }

    /// After every task ended: cancel's cleanup, or a failed copy's.
    async fn settle(&self, mut st: LoopState) -> Ended {
        let state = self.state.snapshot();
        if let Some(drop_target) = st.canceling {
            for d in &state.databases {
                if let Err(e) = clean_up_database(&self.config, d, drop_target).await {
                    st.failures.push(format!("cancel: {e}"));
                }
            }
            return if st.failures.is_empty() {
                Ended::Canceled
            } else {
                Ended::Failed(st.failures)
            };
        }
        if !st.failures.is_empty() {
            // A database whose copy cannot resume (it failed before its
            // schema was in): its slot and publication would only pin WAL.
            for d in state.databases.iter().filter(|d| !d.resume.can_resume()) {
                if let Err(e) = clean_up_database(&self.config, d, false).await {
                    tracing::warn!(db = %d.name, "cleanup after failure: {e}");
                }
            }
            return Ended::Failed(st.failures);
        }
        if st.stopped {
            Ended::Stopped
        } else if st.rolled_back {
            Ended::RolledBack
        } else {
            Ended::Succeeded
        }
    }

    /// The final status, in one durable write with the last counters.
    async fn record_outcome(&self, ended: Ended) -> Result<Ended, StateError> {
        let phase = matches!(ended, Ended::Canceled).then_some(Phase::Canceled);
        for d in self.progress.dbs.iter().filter(|_| phase.is_some()) {
            d.set_phase(Phase::Canceled);
        }
        let outcome = ended.clone();
        self.state
            .change(move |s| {
                s.pid = None;
                final_status(s, &outcome)
            })
            .await?;
        publish(&self.state, &self.progress);
        Ok(ended)
    }
}

/// The status an ended run leaves; the machine refuses what the contract
/// does not have (e.g. `Succeeded` straight from the prerequisites).
fn final_status(s: &mut MigrationState, ended: &Ended) -> Result<(), StateError> {
    match ended {
        Ended::Succeeded | Ended::Validated => s.transition(Stage::Succeeded)?,
        Ended::ValidationFailed(n) => {
            s.message = Some(format!(
                "{n} premigration check(s) failed; see `pgmigrate validate`"
            ));
            s.transition(Stage::ValidationFailed)?;
        }
        Ended::Canceled => {
            for d in &mut s.databases {
                forget(&mut d.resume);
                d.resume.reverse = None;
            }
            s.transition(Stage::Canceled)?;
        }
        Ended::Failed(failures) => {
            for d in &mut s.databases {
                if !d.resume.can_resume() {
                    forget(&mut d.resume);
                }
            }
            s.message = Some(failures.join("; "));
            let failed = s.stage().unwrap_or(Stage::Prerequisites).failed();
            s.transition(failed)?;
        }
        Ended::RolledBack => s.transition(Stage::RolledBack)?,
        Ended::Stopped => {}
    }
    Ok(())
}

/// Mirrors the status and table counts into the metrics and systemd.
fn publish(state: &StateHandle, progress: &MigrationProgress) {
    let s = state.snapshot();
    crate::metrics::set_status(s.status().as_str(), s.substatus().as_str());
    crate::metrics::set_cutover_ready(s.stage().ok() == Some(Stage::WaitingForCutover));
    for d in &progress.dbs {
        crate::metrics::set_tables(
            &d.name,
            d.full_load_queued_tables.load(Ordering::Relaxed),
            d.full_load_loading_tables.load(Ordering::Relaxed),
            d.full_load_completed_tables.load(Ordering::Relaxed),
            d.full_load_errored_tables.load(Ordering::Relaxed),
        );
    }
    crate::control::notify::status(&format!("{} / {}", s.status(), s.substatus()));
}
