//! `pgmigrate demo`: the whole product in one command on a fresh machine.
//! Starts a throwaway source and target server, loads two databases, runs
//! an online migration under live writes with a progress display, waits
//! for the lag to reach zero, stops the writes, cuts over, verifies and
//! prints a summary. Everything it starts, it stops and removes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::control::human;
use crate::control::state::MigrationState;
use crate::control::status::Status;
use crate::control::store::StateStore;
use crate::control::terminal::say;
use crate::migration::{self, Outcome, Requests};

/// Why the demo could not finish.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A setup step failed.
    #[error("demo: {0}")]
    Setup(String),
    /// The migration did not succeed.
    #[error("demo: the migration ended {0:?}; see the log above")]
    Migration(Outcome),
    /// Verification found differences.
    #[error("demo: verify found differences:\n{0}")]
    Verify(String),
}

fn setup(msg: impl Into<String>) -> DemoError {
    DemoError::Setup(msg.into())
}

/// The newest PostgreSQL server binaries on this machine.
fn server_bin_dir() -> Result<PathBuf, DemoError> {
    if let Some(dir) = std::env::var_os("PGMIGRATE_DEMO_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| setup(format!("no PostgreSQL under /usr/lib/postgresql ({e}); run scripts/demo, which installs it")))?
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, d)| d)
        .ok_or_else(|| setup("no initdb under /usr/lib/postgresql/*/bin; run scripts/demo, which installs PostgreSQL"))
}

/// The OS user servers run as: PostgreSQL refuses to run as root. The
/// demo creates no user itself; scripts/demo's install-deps does, and says
/// so first.
fn server_user() -> Result<Option<String>, DemoError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    for user in ["pgmigrate-test", "postgres"] {
        if Command::new("id")
            .arg("-u")
            .arg(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Ok(Some(user.to_string()));
        }
    }
    Err(setup(
        "running as root and neither the OS user pgmigrate-test nor postgres exists: \
         PostgreSQL refuses to run as root. Run scripts/demo (its install-deps creates \
         pgmigrate-test, saying so first) or run the demo as an ordinary user",
    ))
}

struct Server {
    bin: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    port: u16,
    user: Option<String>,
}

fn as_user(user: &Option<String>, program: &Path) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.arg("-u").arg(u).arg("--").arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn run_ok(mut cmd: Command, what: &str) -> Result<String, DemoError> {
    let out = cmd.output().map_err(|e| setup(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(setup(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn free_port() -> Result<u16, DemoError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| setup(format!("finding a free port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| setup(format!("finding a free port: {e}")))
}

impl Server {
    fn start(
        bin: &Path,
        root: &Path,
        name: &str,
        user: &Option<String>,
    ) -> Result<Server, DemoError> {
        let data = root.join(name);
        let sock = root.join("sock");
        std::fs::create_dir_all(&sock).map_err(|e| setup(format!("{}: {e}", sock.display())))?;
        if let Some(u) = user {
            let mut c = Command::new("chown");
            c.arg(u).arg(&sock);
            run_ok(c, "chown of the socket directory")?;
        }
        let port = free_port()?;
        let mut init = as_user(user, &bin.join("initdb"));
        init.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run_ok(init, &format!("initdb of the {name} server"))?;
        let conf = format!(
            "port = {port}\nlisten_addresses = ''\nunix_socket_directories = '{}'\nwal_level = logical\n\
             max_replication_slots = 10\nmax_wal_senders = 10\nshared_buffers = 256MB\nfsync = off\n\
             synchronous_commit = off\nmax_wal_size = 4GB\nlog_min_messages = warning\n",
            sock.display()
        );
        let conf_path = data.join("postgresql.auto.conf");
        let mut existing = std::fs::read_to_string(&conf_path).unwrap_or_default();
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing)
            .map_err(|e| setup(format!("{}: {e}", conf_path.display())))?;
        let mut ctl = as_user(user, &bin.join("pg_ctl"));
        ctl.arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(data.join("server.log"))
            .args(["-w", "start"]);
        if let Err(e) = run_ok(ctl, &format!("starting the {name} server")) {
            let log = std::fs::read_to_string(data.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(setup(format!(
                "{e}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )));
        }
        Ok(Server {
            bin: bin.to_path_buf(),
            data,
            sock,
            port,
            user: user.clone(),
        })
    }

    fn client(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.arg("-h")
            .arg(&self.sock)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres"]);
        c
    }

    fn psql(&self, db: &str, sql: &str) -> Result<String, DemoError> {
        let mut c = self.client("psql");
        c.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ]);
        run_ok(c, &format!("psql on {db}"))
    }

    fn stop(&self) {
        let mut ctl = as_user(&self.user, &self.bin.join("pg_ctl"));
        ctl.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"]);
        let _ = ctl.output();
    }
}

/// What `pgmigrate demo` was asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct DemoOptions {
    /// Leave the servers running and the state directory in place, so
    /// `list`/`show` (and psql) can look at the migration afterwards.
    pub keep: bool,
}

/// Stops the writers, and unless asked to keep them, removes the demo's
/// servers and files, whatever happens.
struct Cleanup {
    root: PathBuf,
    servers: Vec<Server>,
    writers: Vec<Child>,
    keep: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for w in &mut self.writers {
            let _ = w.kill();
            let _ = w.wait();
        }
        if self.keep {
            return;
        }
        for s in &self.servers {
            s.stop();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

const INVENTORY: &str = "
CREATE TABLE warehouses (id serial PRIMARY KEY, name text NOT NULL UNIQUE, opened date);
CREATE TYPE item_state AS ENUM ('active', 'discontinued');
CREATE TABLE items (id bigserial PRIMARY KEY, warehouse int REFERENCES warehouses, sku text NOT NULL,
                    qty int NOT NULL, state item_state NOT NULL DEFAULT 'active', attrs jsonb,
                    updated timestamptz NOT NULL DEFAULT now());
CREATE INDEX items_sku ON items (sku);
INSERT INTO warehouses (name, opened) SELECT 'wh-' || g, DATE '2020-01-01' + g FROM generate_series(1, 20) g;
INSERT INTO items (warehouse, sku, qty, attrs)
  SELECT 1 + g % 20, 'sku-' || g, g % 500, jsonb_build_object('color', (ARRAY['red','green','blue'])[1 + g % 3], 'n', g)
  FROM generate_series(1, 200000) g;
";

const INVENTORY_WRITES: &str = "\\set id random(1, 200000)\n\
UPDATE items SET qty = qty + 1, updated = now() WHERE id = :id;\n\
INSERT INTO items (warehouse, sku, qty) VALUES (1 + :id % 20, 'new-' || :id, 1);\n";

/// Runs the demo; prints its steps and a summary on stdout (progress is
/// the migration's own display on stderr).
pub async fn run(options: DemoOptions) -> Result<(), DemoError> {
    let started = Instant::now();
    let bin = server_bin_dir()?;
    let user = server_user()?;
    let root = make_root(&user)?;
    let mut cleanup = Cleanup {
        root: root.clone(),
        servers: Vec::new(),
        writers: Vec::new(),
        keep: options.keep,
    };
    say(&format!(
        "pgmigrate demo: PostgreSQL from {}",
        bin.display()
    ));
    if let Some(u) = &user {
        say(&format!(
            "  servers run as the OS user {u} (PostgreSQL refuses to run as root)"
        ));
    }
    cleanup
        .servers
        .push(Server::start(&bin, &root, "source", &user)?);
    cleanup
        .servers
        .push(Server::start(&bin, &root, "target", &user)?);
    let (Some(source), Some(target)) = (cleanup.servers.first(), cleanup.servers.get(1)) else {
        return Err(setup("servers did not start"));
    };
    say(&format!(
        "  source server on port {}, target server on port {}",
        source.port, target.port
    ));
    load_sample_data(source)?;
    let state_dir = root.join("state");
    let (config_path, config) = write_config(&root, &state_dir, source, target)?;
    say("  starting live writes on the source (pgbench on shop, item updates on inventory)");
    start_writers(source, &root, &mut cleanup.writers)?;

    let (report, copied_at) =
        migrate_and_verify(&config, &config_path, &state_dir, &mut cleanup.writers).await?;
    let state = StateStore::read(&state_dir, &config.name)
        .ok()
        .flatten()
        .unwrap_or_default();
    print_summary(&state, &report, started.elapsed(), copied_at);
    if options.keep {
        let (Some(source), Some(target)) = (cleanup.servers.first(), cleanup.servers.get(1)) else {
            return Err(setup("servers did not start"));
        };
        print!(
            "{}",
            kept_help(&root, &config_path, &bin, &user, source, target)
        );
    } else {
        println!("  cleaned up: servers stopped, files removed");
    }
    Ok(())
}

/// A fresh directory for the demo's servers and files, owned by the OS user
/// the servers run as (they must be able to create their sockets in it).
fn make_root(user: &Option<String>) -> Result<PathBuf, DemoError> {
    let root = std::env::temp_dir().join(format!("pgmigrate-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).map_err(|e| setup(format!("{}: {e}", root.display())))?;
    if let Some(u) = user {
        run_ok(
            {
                let mut c = Command::new("chown");
                c.arg(u).arg(&root);
                c
            },
            "chown of the demo directory",
        )?;
    }
    Ok(root)
}

/// Creates the two sample databases on the source.
fn load_sample_data(source: &Server) -> Result<(), DemoError> {
    say("  loading sample data: database shop (pgbench, scale 10) and inventory (200,000 items)");
    source.psql("postgres", "CREATE DATABASE shop")?;
    source.psql("postgres", "CREATE DATABASE inventory")?;
    run_ok(
        {
            let mut c = source.client("pgbench");
            c.args(["-i", "-s", "10", "-q", "shop"]);
            c
        },
        "pgbench -i",
    )?;
    source.psql("inventory", INVENTORY)?;
    // pgbench_history has no key; validation would (rightly) fail the
    // online migration until the DBA applies its suggested fix, as here.
    source.psql("shop", "ALTER TABLE pgbench_history REPLICA IDENTITY FULL")?;
    Ok(())
}

/// Writes the demo's config file and reads it back through the normal
/// parser, so the demo runs exactly what a user's file would.
fn write_config(
    root: &Path,
    state_dir: &Path,
    source: &Server,
    target: &Server,
) -> Result<(PathBuf, Config), DemoError> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| setup(format!("{}: {e}", state_dir.display())))?;
    let config_text = format!(
        "name = \"demo\"\nmode = \"online\"\noption = \"validate-and-migrate\"\ndatabases = [\"shop\", \"inventory\"]\n\
         state_dir = \"{}\"\nmetrics_listen = \"\"\n\n[source]\nhost = \"{}\"\nport = {}\nuser = \"postgres\"\nsslmode = \"disable\"\n\n\
         [target]\nhost = \"{}\"\nport = {}\nuser = \"postgres\"\nsslmode = \"disable\"\n\n[copy]\njobs = 2\nindex_jobs = 2\n\n[apply]\nworkers = 2\n",
        state_dir.display(),
        source.sock.display(),
        source.port,
        target.sock.display(),
        target.port
    );
    let config_path = root.join("demo.toml");
    std::fs::write(&config_path, &config_text)
        .map_err(|e| setup(format!("{}: {e}", config_path.display())))?;
    let config = Config::from_file(&config_path).map_err(|e| setup(e.to_string()))?;
    Ok((config_path, config))
}

/// Starts the pgbench writers that keep both databases busy during the
/// migration, so the demo shows streaming catch-up rather than an idle copy.
/// They go straight into `writers` so the cleanup stops them even if a
/// later one fails to start.
fn start_writers(source: &Server, root: &Path, writers: &mut Vec<Child>) -> Result<(), DemoError> {
    let script = root.join("inventory.sql");
    std::fs::write(&script, INVENTORY_WRITES)
        .map_err(|e| setup(format!("{}: {e}", script.display())))?;
    for (db, extra) in [
        ("shop", vec!["-N".to_string()]),
        (
            "inventory",
            vec!["-f".to_string(), script.display().to_string()],
        ),
    ] {
        let mut c = source.client("pgbench");
        c.args(["-n", "-c", "2", "-T", "900", "-R", "300"])
            .args(extra)
            .arg(db);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        writers.push(
            c.spawn()
                .map_err(|e| setup(format!("starting pgbench: {e}")))?,
        );
    }
    Ok(())
}

/// Runs the migration to a successful cutover (driving it like a DBA would)
/// and verifies the result. Returns the verify report and how long copy and
/// catch-up took.
async fn migrate_and_verify(
    config: &Config,
    config_path: &Path,
    state_dir: &Path,
    writers: &mut [Child],
) -> Result<(crate::verify::VerifyReport, Option<Duration>), DemoError> {
    let requests = Arc::new(Requests::default());
    // Never fired: the demo ends the migration by cutting over.
    let (_stop, stop_rx) = crate::shutdown::Shutdown::new();
    let name = config.name.clone();
    let migration = {
        let (config, path, requests) =
            (config.clone(), config_path.to_path_buf(), requests.clone());
        tokio::spawn(async move { migration::run(config, &path, stop_rx, requests).await })
    };

    say("  migrating online (progress below on a terminal, in the log otherwise)");
    let copied_at = drive(state_dir, &name, &migration, &requests, writers).await;
    let outcome = migration
        .await
        .map_err(|e| setup(format!("migration task: {e}")))?
        .map_err(|e| setup(e.to_string()))?;
    if outcome != Outcome::Succeeded {
        return Err(DemoError::Migration(outcome));
    }
    say("  verifying source against target…");
    let report = crate::verify::verify(config)
        .await
        .map_err(|e| setup(e.to_string()))?;
    if !report.identical {
        return Err(DemoError::Verify(crate::verify::render_text(&report)));
    }
    Ok((report, copied_at))
}

/// Watches the migration: once the copy is done and the backlog applied,
/// streams under load a few seconds, stops the writers, and cuts over when
/// the lag is 0. Returns how long copy and catch-up took.
async fn drive(
    state_dir: &Path,
    name: &crate::config::MigrationName,
    migration: &tokio::task::JoinHandle<Result<Outcome, migration::MigrationError>>,
    requests: &Requests,
    writers: &mut [Child],
) -> Option<Duration> {
    let copy_started = Instant::now();
    let mut copied_at: Option<Duration> = None;
    let mut writes_stopped = false;
    let mut cutover_sent = false;
    while !migration.is_finished() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(Some(state)) = StateStore::read(state_dir, name) else {
            continue;
        };
        if state.status() == Status::WaitingForUserAction && copied_at.is_none() {
            copied_at = Some(copy_started.elapsed());
            say(&format!(
                "  copy done and backlog applied in {}; streaming under load for a few seconds",
                human::duration(copy_started.elapsed().as_secs_f64())
            ));
        }
        if let (Some(at), false) = (copied_at, writes_stopped) {
            if copy_started.elapsed() > at + Duration::from_secs(5) {
                say("  stopping the writes");
                for w in writers.iter_mut() {
                    let _ = w.kill();
                    let _ = w.wait();
                }
                writes_stopped = true;
            }
        }
        let caught_up = state
            .databases
            .iter()
            .all(|d| d.lag_bytes == 0 && d.latency_seconds == 0.0);
        if writes_stopped
            && !cutover_sent
            && caught_up
            && state.status() == Status::WaitingForUserAction
        {
            say("  lag is 0: cutting over");
            requests.cutover();
            cutover_sent = true;
        }
    }
    copied_at
}

/// What `--keep` left and how to look at it and remove it.
fn kept_help(
    root: &Path,
    config: &Path,
    bin: &Path,
    user: &Option<String>,
    source: &Server,
    target: &Server,
) -> String {
    let as_user = user
        .as_ref()
        .map(|u| format!("runuser -u {u} -- "))
        .unwrap_or_default();
    let psql = bin.join("psql");
    format!(
        "  kept (--keep): both servers still run, the migration's state is in {state}
  look at it:
    pgmigrate list --state-dir {state}
    pgmigrate show --config {config}
    {psql} -h {sock} -p {sport} -U postgres shop      # the source
    {psql} -h {sock} -p {tport} -U postgres shop      # the target
  clean up:
    {as_user}{pg_ctl} -D {sdata} -m fast stop
    {as_user}{pg_ctl} -D {tdata} -m fast stop
    rm -rf {root}
",
        state = root.join("state").display(),
        config = config.display(),
        psql = psql.display(),
        sock = source.sock.display(),
        sport = source.port,
        tport = target.port,
        pg_ctl = bin.join("pg_ctl").display(),
        sdata = source.data.display(),
        tdata = target.data.display(),
        root = root.display(),
    )
}

fn print_summary(
    state: &MigrationState,
    report: &crate::verify::VerifyReport,
    total: Duration,
    copied: Option<Duration>,
) {
    println!("\n  ───────────────── summary ─────────────────");
    println!(
        "  status:              {} / {}",
        state.status(),
        state.substatus()
    );
    if let Some(c) = copied {
        println!(
            "  copy + catch-up:     {}",
            human::duration(c.as_secs_f64())
        );
    }
    for d in &state.databases {
        println!(
            "  {:<10} {} tables, {} rows, {} copied; {} changes streamed (ins {}, upd {}, del {})",
            d.name,
            d.full_load_completed_tables,
            human::count(d.rows_copied),
            human::bytes(d.bytes_copied),
            human::count(d.applied_changes),
            human::count(d.cdc_insert_counter),
            human::count(d.cdc_update_counter),
            human::count(d.cdc_delete_counter)
        );
    }
    for d in &report.databases {
        println!(
            "  verify {:<10} identical: {} tables, {} rows checked",
            d.database,
            d.tables_checked,
            human::count(d.rows_checked)
        );
    }
    println!(
        "  total demo time:     {}",
        human::duration(total.as_secs_f64())
    );
}
