//! The `pgmigrate` binary: parses the command line, calls the library and
//! maps the outcome to the exit status of the contract. No migration logic
//! lives here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::task::JoinSet;

use pgmigrate::config::{Config, MigrationName, DEFAULT_STATE_DIR, STATE_DIR_ENV};
use pgmigrate::control::console_client::{self, ConsoleClientError};
use pgmigrate::control::locate;
use pgmigrate::control::report::{
    absent_state_dir, list_migrations, render_json, render_list, render_show, render_validation,
    ListFilter,
};
use pgmigrate::control::state::MigrationState;
use pgmigrate::control::state_dir;
use pgmigrate::control::status::{Status, Substatus};
use pgmigrate::control::ConsoleCommand;
use pgmigrate::migration::{self, Outcome};
use pgmigrate::shutdown::{Shutdown, ShutdownTrigger};
use pgmigrate::validate;
use pgmigrate::verify;

/// Exit statuses of the contract.
mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const CANCELED: u8 = 3;
    pub const VALIDATION_FAILED: u8 = 4;
    pub const NOT_ALLOWED: u8 = 5;
    pub const DIFFERENCES: u8 = 6;
}

#[derive(Parser)]
#[command(
    name = "pgmigrate",
    version,
    about = "Move a live PostgreSQL database to another server",
    after_help = "\
Exit status:
  0  succeeded (run, cutover --wait, cancel), no failed check (validate), identical (verify)
  1  the migration failed
  2  bad usage or configuration (also an unusable state_dir)
  3  canceled
  4  a premigration check failed
  5  not in a state that allows it (cutover, cancel, rollback, finish)
  6  verify found differences

Signals to `pgmigrate run`:
  SIGUSR1          cut over (same as `pgmigrate cutover NAME`)
  SIGTERM, SIGINT  stop gracefully: progress is kept, exit 0; `run` again resumes

Contract: /usr/share/doc/pgmigrate/DESIGN.md (docs/DESIGN.md in the repository)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start throwaway servers, migrate sample data online under writes, cut over, verify.
    Demo {
        /// Leave the servers running and the state in place (for `list`/`show`);
        /// prints how to look at them and how to clean up.
        #[arg(long)]
        keep: bool,
    },
    /// Run (or resume) the migration described by a config file.
    Run {
        /// The migration's TOML config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Premigration checks only; changes nothing on either server.
    Validate {
        /// The migration's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List the migrations under the state directory.
    List {
        /// State directory (default: $PGMIGRATE_STATE_DIR, else /var/lib/pgmigrate).
        #[arg(long, conflicts_with = "config")]
        state_dir: Option<PathBuf>,
        /// A migration's TOML config: list its state_dir (secrets are not read).
        #[arg(long)]
        config: Option<PathBuf>,
        /// active | all
        #[arg(long, default_value = "all")]
        filter: ListFilter,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show a migration's status and per-database progress.
    Show {
        /// Migration name (default: the name in --config).
        #[arg(required_unless_present = "config")]
        name: Option<String>,
        /// State directory (default: $PGMIGRATE_STATE_DIR, else /var/lib/pgmigrate).
        #[arg(long, conflicts_with = "config")]
        state_dir: Option<PathBuf>,
        /// The migration's TOML config: its name and state_dir (secrets are not read).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also every validation check with its message and fix.
        #[arg(long, conflicts_with = "json")]
        validation: bool,
        /// One JSON document on stdout (always has the validation checks).
        #[arg(long)]
        json: bool,
    },
    /// Trigger the cutover of a migration waiting for it.
    Cutover {
        /// Migration name.
        name: String,
        /// State directory (default: $PGMIGRATE_STATE_DIR, else /var/lib/pgmigrate).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Return only when the migration has Succeeded (0) or Failed (1).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (exit 1).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Roll back a cut-over migration streaming back to the source
    /// (`[cutover] reverse_replication`): RolledBack.
    Rollback {
        /// Migration name.
        name: String,
        /// State directory (default: $PGMIGRATE_STATE_DIR, else /var/lib/pgmigrate).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Return only when the migration has RolledBack (0) or Failed (1).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (exit 1).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// End reverse replication of a cut-over migration: Succeeded.
    Finish {
        /// Migration name.
        name: String,
        /// State directory (default: $PGMIGRATE_STATE_DIR, else /var/lib/pgmigrate).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Return only when the migration has Succeeded (0) or Failed (1).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (exit 1).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Cancel a migration that is in progress.
    Cancel {
        /// Migration name.
        name: String,
        /// State directory (default: $PGMIGRATE_STATE_DIR, else /var/lib/pgmigrate).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Also drop the target databases this migration created.
        #[arg(long)]
        drop_target_databases: bool,
    },
    /// Compare source and target: schema objects, row counts and a content
    /// checksum per table.
    Verify {
        /// The migration's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn state_dir(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| {
        std::env::var_os(STATE_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGMIGRATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Log lines go above the live progress display, never through it.
        .with_writer(pgmigrate::control::terminal::LogWriter)
        // journald and `2>&1 | tee` get plain text, a terminal colour.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    // On a terminal the demo shows the progress display, not the log; off
    // one, the log's plain lines are its progress.
    let quiet = matches!(cli.command, Command::Demo { .. })
        && pgmigrate::control::terminal::live_display_wanted();
    init_logging(if quiet { "warn" } else { "info" });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgmigrate: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("pgmigrate: {e:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}

/// Many COPY and apply connections, spill files and listener sessions: use
/// the hard limit of open files, not the (often 1024) soft one.
fn raise_open_files_limit() {
    match pgmigrate::listen::rlimit::raise_nofile() {
        Ok(l) if l.after > l.before => {
            tracing::debug!(from = l.before, to = l.after, "raised the open files limit");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
}

fn load_config(path: &Path) -> Result<Config, u8> {
    Config::from_file(path).map_err(|e| {
        eprintln!("pgmigrate: {e}");
        exit::USAGE
    })
}

async fn dispatch(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Demo { keep } => Ok(run_demo(keep).await),
        Command::Run { config } => run_migration(config).await,
        Command::Validate { config, json } => run_validate(config, json).await,
        Command::List {
            state_dir: dir,
            config,
            filter,
            json,
        } => list(dir, config, filter, json),
        Command::Show {
            name,
            state_dir: dir,
            config,
            validation,
            json,
        } => show(name, dir, config, validation, json).await,
        Command::Cutover {
            name,
            state_dir: dir,
            wait,
            timeout,
        } => {
            let Some(name) = migration_name(&name) else {
                return Ok(exit::USAGE);
            };
            let timeout = timeout.map(Duration::from_secs);
            cutover(&state_dir(dir), &name, wait.then_some(timeout)).await
        }
        Command::Rollback {
            name,
            state_dir: dir,
            wait,
            timeout,
        } => end_reverse(&name, dir, ConsoleCommand::Rollback, wait, timeout).await,
        Command::Finish {
            name,
            state_dir: dir,
            wait,
            timeout,
        } => end_reverse(&name, dir, ConsoleCommand::Finish, wait, timeout).await,
        Command::Cancel {
            name,
            state_dir: dir,
            drop_target_databases,
        } => {
            let Some(name) = migration_name(&name) else {
                return Ok(exit::USAGE);
            };
            cancel(&state_dir(dir), &name, drop_target_databases).await
        }
        Command::Verify { config, json } => run_verify(config, json).await,
    }
}

/// `demo`: its failure is reported, not an error of pgmigrate itself.
async fn run_demo(keep: bool) -> u8 {
    match pgmigrate::demo::run(pgmigrate::demo::DemoOptions { keep }).await {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("pgmigrate: {e}");
            exit::FAILED
        }
    }
}

/// `run`: the daemon, until the migration ends or a signal stops it.
async fn run_migration(config: PathBuf) -> anyhow::Result<u8> {
    let config_path = config.clone();
    let config = match load_config(&config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if let Err(e) = state_dir::check_writable(&config.state_dir) {
        eprintln!("pgmigrate: {e}");
        return Ok(exit::USAGE);
    }
    raise_open_files_limit();
    // One stop for the whole daemon: the signals fire it, the run loop
    // listens, and its firing after the run ends the signal tasks.
    let (stop, stopping) = Shutdown::new();
    let stop = Arc::new(stop);
    let mut signal_tasks = JoinSet::new();
    stop_on_signals(&mut signal_tasks, stop.clone(), stopping.clone())?;
    if let Some(addr) = config.metrics_listen {
        // A busy port must not stop a migration: metrics are a view.
        if let Err(e) = pgmigrate::metrics::install(addr, &mut signal_tasks, &stopping) {
            tracing::warn!("metrics on {addr} disabled: {e}");
        }
    }
    let requests = Arc::new(migration::Requests::default());
    cutover_on_sigusr1(&mut signal_tasks, requests.clone(), stopping.clone())?;
    let outcome = migration::run(config, &config_path, stopping, requests).await;
    stop.trigger();
    while let Some(joined) = signal_tasks.join_next().await {
        if let Err(e) = joined {
            tracing::warn!("daemon task (signals, metrics) failed: {e}");
        }
    }
    let outcome = outcome.context("migration")?;
    Ok(match outcome {
        Outcome::Succeeded | Outcome::Stopped | Outcome::RolledBack => exit::OK,
        Outcome::Failed => exit::FAILED,
        Outcome::Canceled => exit::CANCELED,
        Outcome::ValidationFailed => exit::VALIDATION_FAILED,
    })
}

/// `validate`: the checks' report, failing the exit code if one failed.
async fn run_validate(config: PathBuf, json: bool) -> anyhow::Result<u8> {
    let config = match load_config(&config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let report = validate::validate(&config).await;
    if json {
        print!("{}", report.render_json()?);
    } else {
        print!("{}", report.render_table());
    }
    Ok(if report.failed() {
        exit::VALIDATION_FAILED
    } else {
        exit::OK
    })
}

/// `verify`: source against target, failing the exit code on a difference.
async fn run_verify(config: PathBuf, json: bool) -> anyhow::Result<u8> {
    let config = match load_config(&config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let report = match verify::verify_auto(&config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgmigrate: {e}");
            return Ok(exit::FAILED);
        }
    };
    if json {
        print!("{}", verify::render_json(&report)?);
    } else {
        print!("{}", verify::render_text(&report));
    }
    Ok(if report.identical {
        exit::OK
    } else {
        exit::DIFFERENCES
    })
}

/// `list`: the migrations under the state directory (of `--config`, else
/// `--state-dir`, else the default), or why there are none to see.
fn list(
    dir: Option<PathBuf>,
    config: Option<PathBuf>,
    filter: ListFilter,
    json: bool,
) -> anyhow::Result<u8> {
    let dir = match config {
        Some(path) => match locate::from_config(&path) {
            Ok(found) => found.state_dir,
            Err(e) => {
                eprintln!("pgmigrate: {e}");
                return Ok(exit::USAGE);
            }
        },
        None => state_dir(dir),
    };
    if !dir.exists() {
        // Not an error (DESIGN.md: list exits 0), but an empty
        // header would hide that the wrong place was looked at.
        eprintln!("pgmigrate: {}", absent_state_dir(&dir));
        if json {
            print!("{}", render_json(&Vec::<()>::new())?);
        }
        return Ok(exit::OK);
    }
    let states = list_migrations(&dir, filter)?;
    if json {
        print!("{}", render_json(&states)?);
    } else if states.is_empty() && filter == ListFilter::Active {
        println!(
            "no active migrations in {} (--filter all lists the ended ones too)",
            dir.display()
        );
    } else if states.is_empty() {
        println!("no migrations in {}", dir.display());
    } else {
        print!("{}", render_list(&states));
    }
    Ok(exit::OK)
}

/// `show`: finds the migration (by name and state directory, or through
/// its config) and prints it.
async fn show(
    name: Option<String>,
    dir: Option<PathBuf>,
    config: Option<PathBuf>,
    validation: bool,
    json: bool,
) -> anyhow::Result<u8> {
    let located = match config.as_deref().map(locate::from_config).transpose() {
        Ok(found) => found,
        Err(e) => {
            eprintln!("pgmigrate: {e}");
            return Ok(exit::USAGE);
        }
    };
    let name = match (name, &located) {
        (Some(text), _) => match migration_name(&text) {
            Some(n) => n,
            None => return Ok(exit::USAGE),
        },
        (None, Some(found)) => found.name.clone(),
        (None, None) => return Ok(exit::USAGE),
    };
    let dir = match located {
        Some(found) => found.state_dir,
        None => state_dir(dir),
    };
    let Some((state, source)) = console_client::read_state(&dir, &name).await? else {
        if dir.exists() {
            eprintln!(
                "pgmigrate: no migration named {name} in {}; pass --state-dir DIR or \
                 --config FILE (the migration's config, for its state_dir)",
                dir.display()
            );
        } else {
            eprintln!(
                "pgmigrate: no migration named {name}: {}",
                absent_state_dir(&dir)
            );
        }
        return Ok(exit::USAGE);
    };
    if json {
        print!("{}", render_json(&state)?);
        return Ok(exit::OK);
    }
    print!("{}", render_show(&state));
    if validation {
        print!("{}", render_validation(&state));
    }
    // The file holds what a daemon last wrote; nothing acts on a non-final
    // status until one runs again (a cutover is refused).
    if source == console_client::StateSource::File && !state.status().is_terminal() {
        println!(
            "\ndaemon: not running; the status above is as last written. \
             `pgmigrate run` (or the service) resumes it"
        );
    }
    Ok(exit::OK)
}

fn migration_name(text: &str) -> Option<MigrationName> {
    let name = MigrationName::new(text).ok();
    if name.is_none() {
        eprintln!("pgmigrate: {text:?} is not a valid migration name");
    }
    name
}

/// How long `cancel` waits for the daemon to finish canceling.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(300);

/// `cutover`: asks the daemon over its console; with `wait` (holding the
/// optional timeout) polls until the migration ends.
async fn cutover(
    state_dir: &Path,
    name: &MigrationName,
    wait: Option<Option<Duration>>,
) -> anyhow::Result<u8> {
    if let Some(code) = request(state_dir, name, ConsoleCommand::Cutover).await? {
        return Ok(code);
    }
    let Some(timeout) = wait else {
        println!("cutover of migration {name} accepted");
        return Ok(exit::OK);
    };
    // With reverse replication the cutover is done (the application may
    // switch) once the target's changes stream back: `finish` or
    // `rollback` end the migration later, from another command.
    let done = |s: &MigrationState| {
        matches!(
            s.status(),
            Status::Succeeded | Status::Failed | Status::RolledBack
        ) || s.substatus() == Substatus::WaitingForRollbackOrFinish
    };
    match console_client::wait_for(state_dir, name, done, timeout).await {
        Ok(state)
            if state.status() == Status::Succeeded
                || state.substatus() == Substatus::WaitingForRollbackOrFinish =>
        {
            println!("migration {name} {}/{}", state.status(), state.substatus());
            Ok(exit::OK)
        }
        other => report_wait_failure(name, other),
    }
}

/// `rollback` / `finish`: asks the daemon over its console; with `wait`
/// polls until the migration ends.
async fn end_reverse(
    name: &str,
    dir: Option<PathBuf>,
    command: ConsoleCommand,
    wait: bool,
    timeout: Option<u64>,
) -> anyhow::Result<u8> {
    let Some(name) = migration_name(name) else {
        return Ok(exit::USAGE);
    };
    let (state_dir, name) = (&state_dir(dir), &name);
    let wait = wait.then_some(timeout.map(Duration::from_secs));
    if let Some(code) = request(state_dir, name, command).await? {
        return Ok(code);
    }
    let Some(timeout) = wait else {
        println!(
            "{} of migration {name} accepted",
            command.as_sql().to_ascii_lowercase()
        );
        return Ok(exit::OK);
    };
    let done = if command == ConsoleCommand::Rollback {
        Status::RolledBack
    } else {
        Status::Succeeded
    };
    await_end(state_dir, name, &[done, Status::Failed], timeout).await
}

/// `cancel`: asks the daemon over its console and waits for it to finish;
/// with no daemon running, cancels offline.
async fn cancel(state_dir: &Path, name: &MigrationName, drop_target: bool) -> anyhow::Result<u8> {
    let command = ConsoleCommand::Cancel { drop_target };
    match console_client::send(state_dir, name, command).await {
        Ok(_) => {
            await_end(
                state_dir,
                name,
                &[Status::Canceled, Status::Failed],
                Some(CANCEL_TIMEOUT),
            )
            .await
        }
        Err(ConsoleClientError::NotRunning { .. }) => {
            cancel_without_daemon(state_dir, name, drop_target).await
        }
        Err(e @ ConsoleClientError::Refused { .. }) => {
            eprintln!("pgmigrate: {e}");
            Ok(exit::NOT_ALLOWED)
        }
        Err(e) => Err(e.into()),
    }
}

async fn cancel_without_daemon(
    state_dir: &Path,
    name: &MigrationName,
    drop_target: bool,
) -> anyhow::Result<u8> {
    use pgmigrate::control::store::{StateError, StateStore};
    use pgmigrate::migration::CancelError;
    match StateStore::read(state_dir, name)? {
        Some(state) if matches!(state.status(), Status::Succeeded | Status::Canceled) => {
            eprintln!(
                "pgmigrate: migration {name} is {} and not cancelable",
                state.status()
            );
            return Ok(exit::NOT_ALLOWED);
        }
        _ => {}
    }
    match migration::cancel_offline(state_dir, name, drop_target).await {
        Ok(()) => {
            println!("migration {name} canceled");
            Ok(exit::OK)
        }
        Err(
            e @ (CancelError::NotCancelable(_)
            | CancelError::State(StateError::AlreadyRunning { .. })),
        ) => {
            eprintln!("pgmigrate: {e}");
            Ok(exit::NOT_ALLOWED)
        }
        Err(e) => {
            eprintln!("pgmigrate: canceling migration {name}: {e}");
            Ok(exit::FAILED)
        }
    }
}

/// Sends `command`; `Some(exit status)` when it was not accepted.
async fn request(
    state_dir: &Path,
    name: &MigrationName,
    command: ConsoleCommand,
) -> anyhow::Result<Option<u8>> {
    match console_client::send(state_dir, name, command).await {
        Ok(_) => Ok(None),
        Err(e @ ConsoleClientError::NotRunning { .. }) => {
            // Say what the migration is, not only that no daemon answers.
            match pgmigrate::control::store::StateStore::read(state_dir, name) {
                Ok(Some(state)) if state.status().is_terminal() => eprintln!(
                    "pgmigrate: migration {name} is {}/{}; there is nothing to do",
                    state.status(), state.substatus()
                ),
                Ok(Some(state)) => eprintln!(
                    "pgmigrate: {e} (it is {}/{}): start it with `pgmigrate run` or its service first",
                    state.status(), state.substatus()
                ),
                _ => eprintln!(
                    "pgmigrate: {e}: there is no migration named {name} in {} (yet); pass the --state-dir of its config",
                    state_dir.display()
                ),
            }
            Ok(Some(exit::NOT_ALLOWED))
        }
        Err(e @ ConsoleClientError::Refused { .. }) => {
            eprintln!("pgmigrate: {e}");
            Ok(Some(exit::NOT_ALLOWED))
        }
        Err(e) => Err(e.into()),
    }
}

/// Waits for one of `ends` (the first is success, exit 0; else exit 1).
async fn await_end(
    state_dir: &Path,
    name: &MigrationName,
    ends: &[Status],
    timeout: Option<Duration>,
) -> anyhow::Result<u8> {
    match console_client::wait_for_status(state_dir, name, ends, timeout).await {
        Ok(state) if Some(&state.status()) == ends.first() => {
            println!("migration {name} {}", state.status());
            Ok(exit::OK)
        }
        other => report_wait_failure(name, other),
    }
}

/// A wait that ended anywhere but in success: exit 1 with the reason.
fn report_wait_failure(
    name: &MigrationName,
    waited: Result<MigrationState, console_client::WaitError>,
) -> anyhow::Result<u8> {
    match waited {
        Ok(state) => {
            let why = state.message.as_deref().unwrap_or("see pgmigrate show");
            eprintln!(
                "pgmigrate: migration {name} {}/{}: {why}",
                state.status(),
                state.substatus()
            );
            Ok(exit::FAILED)
        }
        Err(e) => {
            eprintln!("pgmigrate: {e}");
            Ok(exit::FAILED)
        }
    }
}

/// SIGUSR1 asks for cutover, as `pgmigrate cutover` does, until the
/// daemon stops.
fn cutover_on_sigusr1(
    tasks: &mut JoinSet<()>,
    requests: Arc<migration::Requests>,
    stopping: Shutdown,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    tasks.spawn(async move {
        loop {
            tokio::select! {
                got = usr1.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!("SIGUSR1: cutover requested");
                    requests.cutover();
                }
                _ = stopping.requested() => return,
            }
        }
    });
    Ok(())
}

/// SIGTERM and SIGINT fire the daemon's one [`Shutdown`]; the task also
/// ends when something else fired it (the migration is over). Later
/// signals find tokio's handler still installed and change nothing.
fn stop_on_signals(
    tasks: &mut JoinSet<()>,
    stop: Arc<ShutdownTrigger>,
    stopping: Shutdown,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tasks.spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = stopping.requested() => return,
        }
        pgmigrate::control::notify::stopping();
        stop.trigger();
    });
    Ok(())
}
