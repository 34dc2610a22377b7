//! The `pgmigrate` binary: parses the command line, calls the library and
//! maps the outcome to the exit status of the contract. No migration logic
//! lives here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use pgmigrate::config::{Config, MigrationName, DEFAULT_STATE_DIR, STATE_DIR_ENV};
use pgmigrate::control::report::{
    list_migrations, render_json, render_list, render_show, ListFilter,
};
use pgmigrate::control::store::StateStore;
use pgmigrate::migration::{self, Outcome};
use pgmigrate::validate;
use pgmigrate::verify;

/// Exit statuses of the contract.
mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const CANCELED: u8 = 3;
    pub const VALIDATION_FAILED: u8 = 4;
    pub const DIFFERENCES: u8 = 6;
}

#[derive(Parser)]
#[command(
    name = "pgmigrate",
    version,
    about = "Move a live PostgreSQL database to another server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start throwaway servers, migrate sample data online under writes, cut over, verify.
    Demo,
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
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// active | all
        #[arg(long, default_value = "all")]
        filter: ListFilter,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show a migration's status and per-database progress.
    Show {
        /// Migration name.
        name: String,
        /// State directory (default: $PGMIGRATE_STATE_DIR, else /var/lib/pgmigrate).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGMIGRATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
    init_logging();
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

fn load_config(path: &Path) -> Result<Config, u8> {
    Config::from_file(path).map_err(|e| {
        eprintln!("pgmigrate: {e}");
        exit::USAGE
    })
}

async fn dispatch(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Demo => match pgmigrate::demo::run().await {
            Ok(()) => Ok(exit::OK),
            Err(e) => {
                eprintln!("pgmigrate: {e}");
                Ok(exit::FAILED)
            }
        },
        Command::Run { config } => {
            let config_path = config.clone();
            let config = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let shutdown = shutdown_on_signals()?;
            if let Some(addr) = config.metrics_listen {
                // A busy port must not stop a migration: metrics are a view.
                if let Err(e) = pgmigrate::metrics::install(addr) {
                    tracing::warn!("metrics on {addr} disabled: {e}");
                }
            }
            let requests = Arc::new(migration::Requests::default());
            cutover_on_sigusr1(requests.clone())?;
            let outcome = migration::run(config, &config_path, shutdown, requests)
                .await
                .context("migration")?;
            Ok(match outcome {
                Outcome::Succeeded | Outcome::Stopped => exit::OK,
                Outcome::Failed => exit::FAILED,
                Outcome::Canceled => exit::CANCELED,
                Outcome::ValidationFailed => exit::VALIDATION_FAILED,
            })
        }
        Command::Validate { config, json } => {
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
        Command::List {
            state_dir: dir,
            filter,
            json,
        } => {
            let states = list_migrations(&state_dir(dir), filter)?;
            if json {
                print!("{}", render_json(&states)?);
            } else {
                print!("{}", render_list(&states));
            }
            Ok(exit::OK)
        }
        Command::Show {
            name,
            state_dir: dir,
            json,
        } => {
            let Ok(name) = MigrationName::new(&name) else {
                eprintln!("pgmigrate: {name:?} is not a valid migration name");
                return Ok(exit::USAGE);
            };
            let Some(state) = StateStore::read(&state_dir(dir), &name)? else {
                eprintln!("pgmigrate: no migration named {name}");
                return Ok(exit::USAGE);
            };
            if json {
                print!("{}", render_json(&state)?);
            } else {
                print!("{}", render_show(&state));
            }
            Ok(exit::OK)
        }
        Command::Verify { config, json } => {
            let config = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let report = match verify::verify(&config).await {
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
    }
}

/// SIGUSR1 asks for cutover, as `pgmigrate cutover` does.
fn cutover_on_sigusr1(requests: Arc<migration::Requests>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            tracing::info!("SIGUSR1: cutover requested");
            requests.cutover();
        }
    });
    Ok(())
}

/// SIGTERM and SIGINT ask for a graceful stop.
fn shutdown_on_signals() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        pgmigrate::control::notify::stopping();
        let _ = tx.send(true);
    });
    Ok(rx)
}
