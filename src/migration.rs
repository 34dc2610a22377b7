//! Per database: prerequisites → copy → (stream) → done. The only place
//! that knows the order of the phases; everything it calls owns one phase.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::{self, Config, Endpoint, Mode, RunOption};
use crate::conn::{self, ConnError, ConnectParams, Connection};
use crate::control::progress::{spawn_state_flusher, DbProgress, MigrationProgress};
use crate::control::state::MigrationState;
use crate::control::status::{Phase, Status, Substatus};
use crate::control::store::{StateError, StateStore};
use crate::copy::pg_tools::PgTools;
use crate::copy::server_identity::ServerIdentity;
use crate::copy::{self, roles, slot, target_db, CopyError, CopyOptions, DatabaseCopy};
use crate::protocol::lsn::Lsn;
use crate::stream::supervisor::{Event, Supervisor};
use crate::stream::{self, publication, Stream, StreamConfig, StreamError};

/// How a `run` ended; the binary maps it to an exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every database migrated.
    Succeeded,
    /// At least one database failed.
    Failed,
    /// The migration was canceled.
    Canceled,
    /// Premigration validation found a failed check.
    ValidationFailed,
    /// Stopped by SIGTERM/SIGINT; `run` again resumes.
    Stopped,
}

/// Errors that stop `run` before a migration status can be recorded.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// state.json could not be read, locked or written.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Session parameters for `db` on `endpoint`.
pub fn connect_params(endpoint: &Endpoint, db: &str) -> ConnectParams {
    let host = match &endpoint.host {
        config::Host::Tcp(h) => conn::Host::Tcp(h.clone()),
        config::Host::Unix(d) => conn::Host::Unix(d.clone()),
    };
    let mut p = ConnectParams::new(host, endpoint.port, endpoint.user.clone(), db);
    p.password = endpoint.password.as_ref().map(|s| s.expose().to_string());
    p.sslmode = match endpoint.sslmode {
        config::SslMode::Disable => conn::SslMode::Disable,
        config::SslMode::Prefer => conn::SslMode::Prefer,
        config::SslMode::Require => conn::SslMode::Require,
        config::SslMode::VerifyCa => conn::SslMode::VerifyCa,
        config::SslMode::VerifyFull => conn::SslMode::VerifyFull,
    };
    p.sslrootcert = endpoint.sslrootcert.clone();
    p
}

/// Connects to a maintenance database of the target (`postgres`, else
/// `template1`) for CREATE/DROP DATABASE.
pub async fn connect_maintenance(endpoint: &Endpoint) -> Result<Connection, ConnError> {
    match Connection::connect(&connect_params(endpoint, "postgres")).await {
        Err(e) if e.code() == Some("3D000") => {
            Connection::connect(&connect_params(endpoint, "template1")).await
        }
        other => other,
    }
}

/// Everything a database's migration needs from the run.
struct DbContext {
    config: Arc<Config>,
    shutdown: watch::Receiver<bool>,
    /// Turns true when the operator's cutover is accepted.
    cutover: watch::Receiver<bool>,
    /// Online: copy done and initial backlog applied.
    ready: Arc<std::sync::atomic::AtomicBool>,
    store: Arc<StateStore>,
    progress: Arc<DbProgress>,
    db: String,
    work_dir: PathBuf,
}

/// Runs (or resumes) the migration described by `config` until it ends or
/// `shutdown` turns true.
pub async fn run(
    config: Config,
    config_path: &std::path::Path,
    mut shutdown: watch::Receiver<bool>,
    requests: Arc<Requests>,
) -> Result<Outcome, MigrationError> {
    let config = Arc::new(config);
    let store = Arc::new(StateStore::open(&config.state_dir, &config.name)?);
    store.lock()?;
    let previous = store.snapshot();
    if store.existed() {
        match previous.status {
            Status::Succeeded => {
                tracing::info!(name = %config.name, "migration already succeeded");
                return Ok(Outcome::Succeeded);
            }
            Status::Canceled => return Ok(Outcome::Canceled),
            _ => {}
        }
    }
    store.update(|s| {
        if !store.existed() || s.databases.is_empty() {
            *s = MigrationState::new(&config.name, config.mode, &config.databases);
        }
        // Databases added to the config since the last run join in.
        for db in &config.databases {
            if s.database(db).is_none() {
                s.databases
                    .push(crate::control::state::DatabaseState::new(db));
            }
        }
        s.mode = config.mode;
        s.pid = Some(std::process::id());
        s.config_path = std::fs::canonicalize(config_path)
            .ok()
            .map(|p| p.display().to_string());
        s.message = None;
        s.set_status(Status::InProgress, Substatus::PerformingPreRequisiteSteps);
    })?;
    let progress = Arc::new(MigrationProgress::from_state(&store.snapshot()));
    let (console_stop, console_rx) = watch::channel(false);
    {
        let handler = Arc::new(Console {
            store: store.clone(),
            progress: progress.clone(),
            requests: requests.clone(),
        });
        let dir = store.dir().to_path_buf();
        tokio::spawn(async move {
            if let Err(e) = crate::control::serve_console(&dir, handler, console_rx).await {
                tracing::warn!("admin console unavailable: {e}");
            }
        });
    }
    // Ready as soon as state is loaded and locked: the migration itself
    // may take hours, and systemd must not time out the start.
    crate::control::notify::ready(&format!(
        "{} / {}",
        store.snapshot().status,
        store.snapshot().substatus
    ));
    let (flush_tx, flush_rx) = watch::channel(false);
    let flusher = spawn_state_flusher(
        store.clone(),
        progress.clone(),
        Duration::from_secs(1),
        flush_rx,
    );
    let reporter = spawn_progress_line(progress.clone());

    // Validation runs before anything is created; a resumed migration
    // already passed it (and its own target databases would now fail the
    // "absent" check).
    // Past validation already: an interrupted or failed run that created
    // something (its own target databases would now fail the checks).
    let resuming = store.existed()
        && previous.status != Status::ValidationFailed
        && previous
            .databases
            .iter()
            .any(|d| d.resume.target_database_created || d.resume.slot_name.is_some());
    if config.option != RunOption::Migrate && !resuming {
        store.update(|s| s.set_status(Status::InProgress, Substatus::ValidationInProgress))?;
        for p in &progress.dbs {
            p.set_phase(Phase::Validating);
        }
        let report = crate::validate::validate(&config).await;
        for c in report.failures() {
            tracing::error!(check = %c.id, "{} (fix: {})", c.message, c.fix);
        }
        let failed = report.failed();
        store.update(|s| {
            s.validation = report.checks.clone();
            s.pid = None;
            if failed {
                s.message = Some(format!(
                    "{} premigration check(s) failed; see `pgmigrate validate`",
                    report.failures().count()
                ));
                s.set_status(Status::ValidationFailed, Substatus::ValidationInProgress);
            } else if config.option == RunOption::Validate {
                s.set_status(Status::Succeeded, Substatus::Completed);
            }
        })?;
        if failed || config.option == RunOption::Validate {
            reporter.abort();
            let _ = flush_tx.send(true);
            let _ = flusher.await;
            // The flusher rewrote phases; put the final status back.
            store.update(|s| {
                if failed {
                    s.set_status(Status::ValidationFailed, Substatus::ValidationInProgress);
                } else {
                    s.set_status(Status::Succeeded, Substatus::Completed);
                }
            })?;
            return Ok(if failed {
                Outcome::ValidationFailed
            } else {
                Outcome::Succeeded
            });
        }
    }
    store.update(|s| s.set_status(Status::InProgress, Substatus::MigratingData))?;
    // Databases stop on the operator's signal or when another one fails.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (cutover_tx, cutover_rx) = watch::channel(false);
    let ready: std::collections::HashMap<String, Arc<AtomicBool>> = config
        .databases
        .iter()
        .map(|d| (d.clone(), Arc::new(AtomicBool::new(false))))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for db in &config.databases {
        let Some(p) = progress.get(db).cloned() else {
            continue;
        };
        let ctx = DbContext {
            config: config.clone(),
            shutdown: stop_rx.clone(),
            cutover: cutover_rx.clone(),
            ready: ready.get(db).cloned().unwrap_or_default(),
            store: store.clone(),
            progress: p,
            db: db.clone(),
            work_dir: store.dir().join("work").join(sanitize(db)),
        };
        tasks.spawn(async move {
            let r = migrate_database(&ctx).await;
            (ctx, r)
        });
    }

    let mut failures = Vec::new();
    let mut stopped = false;
    let mut canceling: Option<bool> = None;
    let mut waiting = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                None => break,
                Some(Ok((ctx, Ok(DbEnd::Done)))) => {
                    ctx.progress.set_phase(Phase::Done);
                    tracing::info!(db = %ctx.db, "database migrated");
                }
                Some(Ok((ctx, Ok(DbEnd::Stopped)))) => {
                    tracing::info!(db = %ctx.db, "stopped");
                    stopped = true;
                }
                Some(Ok((ctx, Err(e)))) => {
                    let msg = e.to_string();
                    tracing::error!(db = %ctx.db, "{msg}");
                    ctx.progress.set_phase(Phase::Failed);
                    ctx.progress.set_message(Some(msg.clone()));
                    failures.push(msg);
                    let _ = stop_tx.send(true);
                }
                Some(Err(e)) => {
                    failures.push(format!("migration task failed: {e}"));
                    let _ = stop_tx.send(true);
                }
            },
            r = shutdown.wait_for(|s| *s), if !*stop_tx.borrow() => {
                if r.is_ok() {
                    tracing::info!("stopping: progress is kept, run again to resume");
                }
                // A closed signal channel also means: stop.
                let _ = stop_tx.send(true);
            }
            _ = requests.notify.notified() => {
                let status = store.snapshot().status;
                if let Some(drop_target) = requests.take_cancel() {
                    if canceling.is_none() && matches!(status, Status::InProgress | Status::WaitingForUserAction) {
                        tracing::info!(drop_target, "cancel requested");
                        canceling = Some(drop_target);
                        store.update(|s| s.set_status(Status::CleaningUp, Substatus::CancelingRequestedDBMigrations))?;
                        let _ = stop_tx.send(true);
                    }
                }
                if requests.take_cutover() && canceling.is_none() {
                    if status == Status::WaitingForUserAction {
                        tracing::info!("cutover requested");
                        store.update(|s| s.set_status(Status::InProgress, Substatus::CompletingMigration))?;
                        metrics::gauge!(crate::metrics::CUTOVER_READY).set(0.0);
                        let _ = cutover_tx.send(true);
                    } else {
                        tracing::warn!(status = %status, "cutover refused: accepted only in WaitingForUserAction");
                    }
                }
            }
            _ = tick.tick() => {
                publish(&store, &progress);
                let all_ready = config.mode == Mode::Online && ready.values().all(|r| r.load(Ordering::Acquire));
                if all_ready && !waiting && failures.is_empty() && canceling.is_none() {
                    waiting = true;
                    store.update(|s| s.set_status(Status::WaitingForUserAction, Substatus::WaitingForCutoverTrigger))?;
                    metrics::gauge!(crate::metrics::CUTOVER_READY).set(1.0);
                    tracing::info!("every database is streaming with its backlog applied: waiting for cutover");
                } else if waiting && !all_ready && store.snapshot().status == Status::WaitingForUserAction {
                    // A stream stopped applying (restarting, or behind
                    // again after a restart): not ready until it is.
                    waiting = false;
                    store.update(|s| s.set_status(Status::InProgress, Substatus::MigratingData))?;
                    metrics::gauge!(crate::metrics::CUTOVER_READY).set(0.0);
                    tracing::warn!("a stream is not applying: not ready for cutover until it has caught up again");
                }
            }
        }
    }
    reporter.abort();
    let _ = flush_tx.send(true);
    if let Ok(Err(e)) = flusher.await {
        tracing::warn!("final progress write failed: {e}");
    }
    let state = store.snapshot();
    let outcome = if let Some(drop_target) = canceling {
        for d in &state.databases {
            if let Err(e) = clean_up_database(&config, d, drop_target).await {
                failures.push(format!("cancel: {e}"));
            }
        }
        if failures.is_empty() {
            Outcome::Canceled
        } else {
            Outcome::Failed
        }
    } else if !failures.is_empty() {
        // A database whose copy did not finish cannot resume (its snapshot
        // is gone): its slot and publication would only pin WAL.
        for d in state.databases.iter().filter(|d| !d.resume.copy_completed) {
            if let Err(e) = clean_up_database(&config, d, false).await {
                tracing::warn!(db = %d.name, "cleanup after failure: {e}");
            }
        }
        Outcome::Failed
    } else if stopped {
        Outcome::Stopped
    } else {
        Outcome::Succeeded
    };
    store.update(|s| {
        progress.apply_to(s);
        s.pid = None;
        match outcome {
            Outcome::Succeeded => s.set_status(Status::Succeeded, Substatus::Completed),
            Outcome::Canceled => {
                for d in &mut s.databases {
                    d.resume.slot_name = None;
                    d.resume.publication_name = None;
                    d.resume.origin_names.clear();
                    d.phase = Phase::Canceled;
                }
                s.set_status(Status::Canceled, Substatus::Canceled);
            }
            Outcome::Failed => {
                let substatus = if s.status == Status::CleaningUp {
                    Substatus::CancelingRequestedDBMigrations
                } else {
                    s.substatus
                };
                for d in &mut s.databases {
                    if !d.resume.copy_completed {
                        d.resume.slot_name = None;
                        d.resume.publication_name = None;
                        d.resume.origin_names.clear();
                    }
                }
                s.message = Some(failures.join("; "));
                s.set_status(Status::Failed, substatus);
            }
            _ => {}
        }
    })?;
    publish(&store, &progress);
    let _ = console_stop.send(true);
    Ok(outcome)
}

/// The daemon's side of the admin console: answers from live state and
/// registers cutover and cancel requests for the run loop.
struct Console {
    store: Arc<StateStore>,
    progress: Arc<MigrationProgress>,
    requests: Arc<Requests>,
}

impl crate::control::ConsoleHandler for Console {
    fn handle(
        &self,
        cmd: crate::control::ConsoleCommand,
    ) -> Result<crate::control::ConsoleReply, crate::control::ConsoleRefusal> {
        use crate::control::{ConsoleCommand, ConsoleRefusal, ConsoleReply};
        let mut state = self.store.snapshot();
        self.progress.apply_to(&mut state);
        if let Some(reply) = crate::control::show_reply(cmd, &state) {
            return Ok(reply);
        }
        match cmd {
            ConsoleCommand::Cutover if state.status != Status::WaitingForUserAction => {
                Err(ConsoleRefusal::not_in_state(format!(
                    "cutover is accepted only in WaitingForUserAction; the migration is {}/{}",
                    state.status, state.substatus
                )))
            }
            ConsoleCommand::Cutover => {
                self.requests.cutover();
                Ok(ConsoleReply::accepted(cmd))
            }
            ConsoleCommand::Cancel { drop_target } => {
                if matches!(
                    state.status,
                    Status::InProgress | Status::WaitingForUserAction
                ) && state.substatus != Substatus::CompletingMigration
                {
                    self.requests.cancel(drop_target);
                    Ok(ConsoleReply::accepted(cmd))
                } else {
                    Err(ConsoleRefusal::not_in_state(format!(
                        "cancel is accepted while in progress or waiting for cutover; the migration is {}/{}",
                        state.status, state.substatus
                    )))
                }
            }
            _ => Err(ConsoleRefusal::not_in_state("unexpected command")),
        }
    }
}

/// Mirrors the status and table counts into the metrics and systemd.
fn publish(store: &StateStore, progress: &MigrationProgress) {
    let s = store.snapshot();
    crate::metrics::set_status(s.status.as_str(), s.substatus.as_str());
    crate::metrics::set_cutover_ready(s.status == Status::WaitingForUserAction);
    for d in &progress.dbs {
        crate::metrics::set_tables(
            &d.name,
            d.full_load_queued_tables.load(Ordering::Relaxed),
            d.full_load_loading_tables.load(Ordering::Relaxed),
            d.full_load_completed_tables.load(Ordering::Relaxed),
            d.full_load_errored_tables.load(Ordering::Relaxed),
        );
    }
    crate::control::notify::status(&format!("{} / {}", s.status, s.substatus));
}

/// Operator requests reaching a running migration from the console or a
/// signal; the run loop acts on them in its own order.
#[derive(Debug, Default)]
pub struct Requests {
    cutover: AtomicBool,
    cancel: std::sync::Mutex<Option<bool>>,
    notify: tokio::sync::Notify,
}

impl Requests {
    /// Asks for cutover (ignored unless the migration waits for it).
    pub fn cutover(&self) {
        self.cutover.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Asks to cancel, dropping the target databases when `drop_target`.
    pub fn cancel(&self, drop_target: bool) {
        if let Ok(mut c) = self.cancel.lock() {
            *c = Some(c.unwrap_or(false) || drop_target);
        }
        self.notify.notify_one();
    }

    fn take_cutover(&self) -> bool {
        self.cutover.swap(false, Ordering::AcqRel)
    }

    fn take_cancel(&self) -> Option<bool> {
        self.cancel.lock().ok().and_then(|mut c| c.take())
    }
}

fn sanitize(db: &str) -> String {
    db.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Errors of one database's migration.
#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("database {db}: cannot connect to the {side} server {target}: {source}")]
    Connect {
        db: String,
        side: &'static str,
        target: String,
        #[source]
        source: ConnError,
    },
}

impl DbContext {
    /// This database's resume bookkeeping as state.json has it now.
    fn resume(&self) -> crate::control::state::ResumeState {
        self.store
            .snapshot()
            .database(&self.db)
            .map(|d| d.resume.clone())
            .unwrap_or_default()
    }
}

async fn migrate_database(ctx: &DbContext) -> Result<DbEnd, DbError> {
    let db = ctx.db.as_str();
    let cfg = &ctx.config;
    let resume = ctx.resume();
    if !resume.copy_completed {
        let mut shutdown = ctx.shutdown.clone();
        tokio::select! {
            r = copy_phase(ctx, &resume) => r?,
            _ = shutdown.wait_for(|s| *s) => return Ok(DbEnd::Stopped),
        }
    } else {
        tracing::info!(db, "snapshot copy already done");
    }
    if cfg.mode == Mode::Offline {
        return Ok(DbEnd::Done);
    }
    stream_phase(ctx).await
}

/// How one database's migration ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DbEnd {
    /// Copied (offline) or cut over (online).
    Done,
    /// Stopped by a signal; resumable.
    Stopped,
}

/// Prerequisites, slot (and publication), snapshot copy. Starts over from
/// scratch when an earlier run died inside it: its snapshot is gone.
async fn copy_phase(
    ctx: &DbContext,
    resume: &crate::control::state::ResumeState,
) -> Result<(), DbError> {
    let db = ctx.db.as_str();
    let cfg = &ctx.config;
    ctx.progress.set_phase(Phase::CopyingSchema);
    let source_params = connect_params(&cfg.source, db);
    let target_params = connect_params(&cfg.target, db);
    let mut source = Connection::connect(&source_params)
        .await
        .map_err(|e| match e.code() {
            Some("3D000") => DbError::Copy(CopyError::SourceDatabaseMissing {
                db: db.to_string(),
                server: source_params.target(),
            }),
            _ => DbError::Connect {
                db: db.to_string(),
                side: "source",
                target: source_params.target(),
                source: e,
            },
        })?;
    let props = target_db::source_props(&mut source, db).await?;
    let tools = PgTools::locate(cfg.pg_bin_dir.as_deref())
        .await
        .map_err(|e| CopyError::Tool {
            db: db.to_string(),
            source: e,
        })?;
    tools
        .check_source(source.server_major())
        .map_err(|e| CopyError::Tool {
            db: db.to_string(),
            source: e,
        })?;
    let mut maint = connect_maintenance(&cfg.target)
        .await
        .map_err(|e| DbError::Connect {
            db: db.to_string(),
            side: "target",
            target: cfg.target.host.to_string(),
            source: e,
        })?;
    // Before anything that creates or drops a database on the "target".
    let source_id = ServerIdentity::read(&mut source)
        .await
        .map_err(|e| CopyError::source(db, "reading the server identity", e))?;
    let target_id = ServerIdentity::read(&mut maint)
        .await
        .map_err(|e| CopyError::target(db, "reading the server identity", e))?;
    if source_id.same_server(&target_id) {
        return Err(CopyError::TargetIsSource {
            db: db.to_string(),
            target: maint.connect_params().target(),
            source_server: source.connect_params().target(),
            port: target_id.port,
        }
        .into());
    }
    let exists = target_db::exists(&mut maint, db)
        .await
        .map_err(|e| CopyError::target(db, "checking whether the database exists", e))?;
    if exists {
        if resume.target_database_created || cfg.overwrite_target {
            // Ours from an interrupted run (its snapshot is gone, so the
            // copy starts over), or the operator asked to overwrite.
            if !resume.target_database_created {
                target_db::refuse_if_in_use(&mut maint, db).await?;
            }
            tracing::info!(db, "dropping the existing target database");
            target_db::drop(&mut maint, db).await?;
        } else {
            return Err(CopyError::TargetDatabaseExists {
                db: db.to_string(),
                server: maint.connect_params().target(),
            }
            .into());
        }
    }
    let name = slot::object_name(cfg.name.as_str(), props.oid);
    // A slot or publication of an interrupted copy would pin WAL forever.
    slot::drop_if_exists(&mut source, db, &name).await?;
    if cfg.mode == Mode::Online {
        publication::drop_if_exists(&mut source, db, &name).await?;
    }
    let keep_owners = roles::copy_missing(&mut source, &mut maint, db).await?;
    target_db::create(&mut maint, db, &props).await?;
    ctx.store.update(|s| {
        if let Some(d) = s.database_mut(db) {
            d.resume.target_database_created = true;
            d.resume.copy_completed = false;
        }
    })?;

    // Offline needs the slot only for its snapshot: a temporary one goes
    // away with its session, whatever happens to this process.
    let temporary = cfg.mode == Mode::Offline;
    if !temporary {
        // Before the slot, so every change after its snapshot is published.
        publication::create(&mut source, db, &name).await?;
    }
    let origins: Vec<String> = (0..cfg.apply.workers)
        .map(|i| format!("{name}_w{i}"))
        .collect();
    ctx.store.update(|s| {
        if let Some(d) = s.database_mut(db) {
            d.resume.slot_name = (!temporary).then(|| name.clone());
            d.resume.publication_name = (!temporary).then(|| name.clone());
            d.resume.origin_names = if temporary {
                Vec::new()
            } else {
                origins.clone()
            };
        }
    })?;
    let mut exported = slot::create(&source_params, db, &name, temporary).await?;
    ctx.store.update(|s| {
        if let Some(d) = s.database_mut(db) {
            d.resume.consistent_lsn = Some(exported.consistent_lsn.clone());
        }
    })?;
    tracing::info!(db, slot = %name, lsn = %exported.consistent_lsn, snapshot = %exported.snapshot_name, "snapshot exported");

    let copy = DatabaseCopy {
        db,
        source: &source_params,
        target: &target_params,
        tools: &tools,
        work_dir: &ctx.work_dir,
        options: CopyOptions {
            jobs: cfg.copy.jobs,
            index_jobs: cfg.copy.index_jobs,
            split_bytes: cfg.copy.split_tables_larger_than,
        },
        progress: ctx.progress.clone(),
        keep_owners,
        exclude_publication: (!temporary).then_some(name.as_str()),
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
        exported
            .conn
            .execute(&format!("DROP_REPLICATION_SLOT {name}"))
            .await
            .map_err(|e| CopyError::source(db, "dropping the replication slot", e))?;
    }
    let _ = exported.conn.close().await;
    let mut target = Connection::connect(&target_params)
        .await
        .map_err(|e| CopyError::target(db, "connecting for ANALYZE", e))?;
    target
        .execute("ANALYZE")
        .await
        .map_err(|e| CopyError::target(db, "analyzing the copied tables", e))?;
    let _ = std::fs::remove_dir_all(&ctx.work_dir);
    ctx.store.update(|s| {
        if let Some(d) = s.database_mut(db) {
            d.resume.copy_completed = true;
        }
    })?;
    Ok(())
}

/// Streams changes until shutdown or cutover: lag measured every
/// second, and the database marked ready once the backlog since the
/// snapshot is applied.
async fn stream_phase(ctx: &DbContext) -> Result<DbEnd, DbError> {
    let db = ctx.db.as_str();
    let cfg = &ctx.config;
    let resume = ctx.resume();
    let (Some(slot_name), Some(publication_name), Some(lsn)) = (
        resume.slot_name.clone(),
        resume.publication_name.clone(),
        resume.consistent_lsn.clone(),
    ) else {
        return Err(DbError::Stream(StreamError::Other {
            db: db.to_string(),
            message: "state.json lacks the slot, publication or consistent LSN of this database"
                .into(),
        }));
    };
    let start_lsn: Lsn = lsn.parse().map_err(|e| {
        DbError::Stream(StreamError::Other {
            db: db.to_string(),
            message: format!("consistent LSN {lsn:?} in state.json: {e}"),
        })
    })?;
    let source_params = connect_params(&cfg.source, db);
    let mut source = Connection::connect(&source_params)
        .await
        .map_err(|e| DbError::Connect {
            db: db.to_string(),
            side: "source",
            target: source_params.target(),
            source: e,
        })?;
    let origins = if resume.origin_names.is_empty() {
        (0..cfg.apply.workers)
            .map(|i| format!("{slot_name}_w{i}"))
            .collect()
    } else {
        // The worker count is fixed by the first run: tables must stay on
        // the worker whose origin covers them.
        resume.origin_names.clone()
    };
    let stream_cfg = StreamConfig {
        db: db.to_string(),
        source: source_params.clone(),
        target: connect_params(&cfg.target, db),
        slot: slot_name.clone(),
        publication: publication_name.clone(),
        start_lsn,
        origins,
        batch_max_changes: cfg.apply.batch_max_changes,
        batch_max_delay: cfg.apply.batch_max_delay,
        spill_dir: ctx.work_dir.join("spill"),
        protocol_version: stream::protocol_version(source.server_major()),
        binary: stream::binary_possible(&mut source, &publication_name).await,
    };
    ctx.progress.set_phase(Phase::Streaming);
    // Restarts (a server restart, a network cut, a change the target
    // refuses) are the supervisor's: bounded per position, see stream::retry.
    let mut stream =
        Supervisor::start(stream_cfg, ctx.progress.clone()).map_err(DbError::Stream)?;
    let mut catch_up = current_wal_lsn(&mut source, db).await?;
    let mut shutdown = ctx.shutdown.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
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
            let Some(stream) = stream.into_stream() else {
                return Err(DbError::Stream(StreamError::Other {
                    db: db.to_string(),
                    message: "cutover requested while the stream was restarting".into(),
                }));
            };
            cut_over(ctx, &mut source, stream, &slot_name).await?;
            return Ok(DbEnd::Done);
        }
        match stream.check().await.map_err(DbError::Stream)? {
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
                    ctx.progress.set_message(None);
                }
            }
        }
        stream.poke();
        let Some(applied) = report_lag(ctx, &mut source, &source_params, &stream, &slot_name).await
        else {
            continue;
        };
        let ready = stream.applying() && applied >= catch_up;
        if !stream.applying() {
            ctx.ready.store(false, Ordering::Release);
        } else if ready && !ctx.ready.swap(true, Ordering::AcqRel) {
            tracing::info!(db, %applied, "initial backlog applied; ready for cutover");
        }
    }
}

/// Measures and publishes one database's lag (bytes, seconds) and the WAL
/// its slot retains; returns the LSN applied through, or `None` when the
/// source's position could not be read (the session is renewed for the
/// next time).
async fn report_lag(
    ctx: &DbContext,
    source: &mut Connection,
    source_params: &ConnectParams,
    stream: &Supervisor,
    slot_name: &str,
) -> Option<Lsn> {
    let db = ctx.db.as_str();
    let now = match current_wal_lsn(source, db).await {
        Ok(l) => l,
        Err(e) => {
            // Lag is a view: reconnect next time, keep streaming.
            tracing::warn!(db, "cannot read the source's WAL position: {e}");
            if let Ok(c) = Connection::connect(source_params).await {
                *source = c;
            }
            return None;
        }
    };
    let applied = stream.applied();
    let lag = now.saturating_sub(applied);
    ctx.progress.lag_bytes.store(lag, Ordering::Relaxed);
    let latency = stream.latency_seconds();
    ctx.progress.set_latency_seconds(latency);
    metrics::gauge!(crate::metrics::REPLICATION_LAG_BYTES, "database" => db.to_string())
        .set(lag as f64);
    metrics::gauge!(crate::metrics::REPLICATION_LAG_SECONDS, "database" => db.to_string())
        .set(latency);
    if let Ok(rows) = source
        .query(
            "SELECT (pg_catalog.pg_current_wal_lsn() - restart_lsn)::bigint FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[slot_name.into()],
        )
        .await
    {
        if let Some(Ok(Some(bytes))) = rows.first().map(|r| r.opt_parse::<f64>(0)) {
            metrics::gauge!(crate::metrics::SOURCE_RETAINED_WAL_BYTES, "database" => db.to_string()).set(bytes);
        }
    }
    Some(applied)
}

/// Cutover of one database: optionally make the source read-only, record
/// its WAL position, wait until every worker applied through it, stop the
/// stream, set the target's sequences, and remove slot, publication and
/// origins.
async fn cut_over(
    ctx: &DbContext,
    source: &mut Connection,
    stream: Stream,
    slot_name: &str,
) -> Result<(), DbError> {
    let db = ctx.db.as_str();
    let cfg = &ctx.config;
    ctx.progress.set_phase(Phase::CuttingOver);
    if cfg.cutover.lock_source {
        source
            .execute(&format!(
                "ALTER DATABASE {} SET default_transaction_read_only = on",
                crate::conn::quote_ident(db)
            ))
            .await
            .map_err(|e| CopyError::source(db, "making the source database read-only", e))?;
        // Sessions opened before the ALTER keep writing: end them. Our own
        // replication session is a walsender and is left alone.
        source
            .query(
                "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid() AND backend_type = 'client backend'",
                &[db.into()],
            )
            .await
            .map_err(|e| CopyError::source(db, "ending the source's sessions", e))?;
        tracing::info!(db, "source database is read-only now");
    }
    let target_lsn = settled_wal_lsn(source, db).await?;
    tracing::info!(db, lsn = %target_lsn, "cutover: applying everything up to the source's current position");
    let started = Instant::now();
    let mut last_log = Instant::now();
    loop {
        if !stream.is_running() {
            stream.stop().await.map_err(DbError::Stream)?;
            return Err(DbError::Stream(StreamError::Other {
                db: db.to_string(),
                message: "the stream ended during cutover".into(),
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
            tracing::info!(db, %applied, target = %target_lsn, "cutover: waiting for apply");
        }
        stream.poke();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stream.stop().await.map_err(DbError::Stream)?;
    ctx.progress.lag_bytes.store(0, Ordering::Relaxed);
    ctx.progress.set_latency_seconds(0.0);
    let target_params = connect_params(&cfg.target, db);
    let mut target = Connection::connect(&target_params)
        .await
        .map_err(|e| CopyError::target(db, "connecting for sequences", e))?;
    let sequences = copy::catalog::sequences(source, db).await?;
    let n = copy::sequences::sync(source, &mut target, &sequences, db).await?;
    tracing::info!(db, sequences = n, "sequences set to the source's values");
    drop_source_objects(source, db, Some(slot_name), Some(slot_name)).await?;
    let origins = ctx
        .store
        .snapshot()
        .database(db)
        .map(|d| d.resume.origin_names.clone())
        .unwrap_or_default();
    drop_origins(&mut target, db, &origins).await?;
    ctx.store.update(|s| {
        if let Some(d) = s.database_mut(db) {
            d.resume.slot_name = None;
            d.resume.publication_name = None;
            d.resume.origin_names.clear();
        }
    })?;
    tracing::info!(
        db,
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        "cutover done"
    );
    Ok(())
}

/// Drops the slot (waiting for its walsender to let go) and publication.
async fn drop_source_objects(
    source: &mut Connection,
    db: &str,
    slot_name: Option<&str>,
    publication: Option<&str>,
) -> Result<(), CopyError> {
    if let Some(slot_name) = slot_name {
        let mut tries = 0;
        loop {
            match slot::drop_if_exists(source, db, slot_name).await {
                Ok(_) => break,
                // 55006: still active — the walsender is exiting.
                Err(CopyError::Source { source: e, .. })
                    if e.code() == Some("55006") && tries < 100 =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    if let Some(p) = publication {
        publication::drop_if_exists(source, db, p).await?;
    }
    Ok(())
}

/// Drops the apply workers' replication origins on the target.
async fn drop_origins(
    target: &mut Connection,
    db: &str,
    origins: &[String],
) -> Result<(), CopyError> {
    for o in origins {
        let lit = crate::conn::quote_literal(o);
        target
            .execute(&format!(
                "SELECT pg_catalog.pg_replication_origin_drop(roname) FROM pg_catalog.pg_replication_origin WHERE roname = {lit}"
            ))
            .await
            .map_err(|e| CopyError::target(db, &format!("dropping replication origin {o}"), e))?;
    }
    Ok(())
}

/// Removes what a migration created for one database: slot and
/// publication on the source, origins on the target, and with
/// `drop_target` the target database if the migration created it.
pub async fn clean_up_database(
    config: &Config,
    state: &crate::control::state::DatabaseState,
    drop_target: bool,
) -> Result<(), CopyError> {
    let db = state.name.as_str();
    let r = &state.resume;
    if r.slot_name.is_some() || r.publication_name.is_some() {
        let params = connect_params(&config.source, db);
        match Connection::connect(&params).await {
            Ok(mut source) => {
                drop_source_objects(
                    &mut source,
                    db,
                    r.slot_name.as_deref(),
                    r.publication_name.as_deref(),
                )
                .await?
            }
            // The database itself is gone: so are its slot and publication.
            Err(e) if e.code() == Some("3D000") => {}
            Err(e) => return Err(CopyError::source(db, "connecting to clean up", e)),
        }
    }
    let target_dropped = drop_target && r.target_database_created;
    if !r.origin_names.is_empty() && !target_dropped {
        match Connection::connect(&connect_params(&config.target, db)).await {
            Ok(mut target) => drop_origins(&mut target, db, &r.origin_names).await?,
            Err(e) if e.code() == Some("3D000") => {}
            Err(e) => return Err(CopyError::target(db, "connecting to clean up", e)),
        }
    }
    if drop_target && r.target_database_created {
        let mut maint = connect_maintenance(&config.target)
            .await
            .map_err(|e| CopyError::target(db, "connecting to drop the database", e))?;
        target_db::drop(&mut maint, db).await?;
        // Origins are cluster-wide: drop them even with the database gone.
        drop_origins(&mut maint, db, &r.origin_names).await?;
    }
    Ok(())
}

/// Cancels a migration whose daemon is not running: removes slot,
/// publication and origins (and with `drop_target` the target databases),
/// then records `Canceled`. Uses the config file of the last run.
pub async fn cancel_offline(
    state_dir: &std::path::Path,
    name: &config::MigrationName,
    drop_target: bool,
) -> Result<(), CancelError> {
    let store = StateStore::open(state_dir, name)?;
    if !store.existed() {
        return Err(CancelError::NotCancelable(format!(
            "no migration named {name}"
        )));
    }
    store.lock()?;
    let state = store.snapshot();
    if matches!(state.status, Status::Succeeded | Status::Canceled) {
        return Err(CancelError::NotCancelable(format!(
            "migration {name} is {}",
            state.status
        )));
    }
    let path = state.config_path.clone().ok_or_else(|| {
        CancelError::NotCancelable("state.json does not name its config file".into())
    })?;
    let config = Config::from_file(std::path::Path::new(&path))
        .map_err(|e| CancelError::Config(e.to_string()))?;
    store.update(|s| {
        s.set_status(
            Status::CleaningUp,
            Substatus::CancelingRequestedDBMigrations,
        )
    })?;
    for d in &state.databases {
        clean_up_database(&config, d, drop_target).await?;
    }
    store.update(|s| {
        for d in &mut s.databases {
            d.resume.slot_name = None;
            d.resume.publication_name = None;
            d.resume.origin_names.clear();
            d.phase = Phase::Canceled;
        }
        s.set_status(Status::Canceled, Substatus::Canceled);
    })?;
    Ok(())
}

/// Why `cancel` without a daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// The migration is finished or unknown.
    #[error("{0}")]
    NotCancelable(String),
    /// The config file of the last run cannot be read.
    #[error("{0}")]
    Config(String),
    /// state.json failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// Dropping something failed.
    #[error(transparent)]
    Copy(#[from] CopyError),
}

/// A WAL position at or past the commit record of every transaction the
/// source has committed so far. `pg_current_wal_lsn()` alone is not: it is
/// the *write* position, and a transaction committed with
/// `synchronous_commit = off` has returned to its client before its commit
/// record is written, so a cutover stopping there loses it. A transaction
/// of our own that writes WAL and commits with `synchronous_commit = on`
/// flushes the WAL through its commit record, hence through every earlier
/// one. (It must write a record: a transaction with an xid and nothing
/// else commits asynchronously whatever the setting.) The logical message
/// is not published to us: pgoutput only sends messages when asked to.
async fn settled_wal_lsn(source: &mut Connection, db: &str) -> Result<Lsn, DbError> {
    source
        .simple_query(
            "SET synchronous_commit = on; \
             SELECT pg_catalog.pg_logical_emit_message(true, 'pgmigrate', 'cutover')",
        )
        .await
        .map_err(|e| CopyError::source(db, "flushing the source's WAL for cutover", e))?;
    current_wal_lsn(source, db).await
}

async fn current_wal_lsn(source: &mut Connection, db: &str) -> Result<Lsn, DbError> {
    let rows = source
        .simple_query("SELECT pg_catalog.pg_current_wal_lsn()")
        .await
        .map_err(|e| CopyError::source(db, "reading the current WAL position", e))?;
    rows.first()
        .and_then(|r| r.str(0).ok())
        .and_then(|s| s.parse::<Lsn>().ok())
        .ok_or_else(|| {
            DbError::Copy(CopyError::Unexpected {
                db: db.to_string(),
                message: "unreadable pg_current_wal_lsn()".into(),
            })
        })
}

/// Prints a progress line on stderr while tables are being copied: often
/// on a terminal, every 10 seconds into a journal.
fn spawn_progress_line(progress: Arc<MigrationProgress>) -> tokio::task::JoinHandle<()> {
    use std::io::IsTerminal;
    let every = if std::io::stderr().is_terminal() {
        2
    } else {
        10
    };
    tokio::spawn(async move {
        let mut last: Vec<(u64, Instant)> =
            progress.dbs.iter().map(|_| (0, Instant::now())).collect();
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.tick().await;
        loop {
            tick.tick().await;
            for (p, prev) in progress.dbs.iter().zip(last.iter_mut()) {
                if !matches!(p.phase(), Phase::CopyingData | Phase::BuildingIndexes) {
                    continue;
                }
                let bytes = p.bytes_copied.load(Ordering::Relaxed);
                let secs = prev.1.elapsed().as_secs_f64().max(0.001);
                let rate = (bytes.saturating_sub(prev.0)) as f64 / 1e6 / secs;
                *prev = (bytes, Instant::now());
                let done = p.full_load_completed_tables.load(Ordering::Relaxed);
                let total = done
                    + p.full_load_queued_tables.load(Ordering::Relaxed)
                    + p.full_load_loading_tables.load(Ordering::Relaxed)
                    + p.full_load_errored_tables.load(Ordering::Relaxed);
                eprintln!(
                    "{}: {} tables {done}/{total} done, {:.1} MB copied, {rate:.1} MB/s",
                    p.name,
                    p.phase(),
                    bytes as f64 / 1e6
                );
            }
        }
    })
}

/// Re-export for the binary: the copy module's summary type.
pub use copy::CopySummary;
