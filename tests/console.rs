//! The admin console of DESIGN.md's "Admin console" section, served in
//! process with a test handler and spoken to by real psql and by the
//! `show`, `cutover` and `cancel` subcommands.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgmigrate::config::{MigrationName, Mode};
use pgmigrate::conn::{ConnectParams, Connection, Host, SslMode};
use pgmigrate::control::console::{socket_path, SQLSTATE_NOT_IN_PREREQUISITE_STATE};
use pgmigrate::control::console_client::{self, ConsoleClientError, StateSource};
use pgmigrate::control::console_session::SessionLimits;
use pgmigrate::control::store::StateStore;
use pgmigrate::control::{
    serve_console, serve_console_with, show_reply, ConsoleCommand, ConsoleHandler, ConsoleRefusal,
    ConsoleReply, MigrationState, Phase, Status, Substatus,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const NAME: &str = "m1";

/// Puts a stand-in's state at a pair directly (the daemon's own moves go
/// through the status machine; a stand-in jumps, e.g. cutover to done).
/// The fields are private to the crate, so the stand-in edits the document.
fn set_status(state: &mut MigrationState, status: Status, substatus: Substatus) {
    let mut doc = serde_json::to_value(&*state).unwrap();
    doc["status"] = serde_json::to_value(status).unwrap();
    doc["substatus"] = serde_json::to_value(substatus).unwrap();
    *state = serde_json::from_value(doc).unwrap();
}

/// A daemon stand-in: answers SHOW from its state, accepts CUTOVER only in
/// WaitingForUserAction (and then "completes" it at once), and CANCEL in
/// any non-terminal status (ending Canceled).
struct TestDaemon {
    state: Mutex<MigrationState>,
    commands: Mutex<Vec<ConsoleCommand>>,
}

impl TestDaemon {
    fn new(status: Status, substatus: Substatus) -> Arc<TestDaemon> {
        let name = MigrationName::new(NAME).unwrap();
        let mut state = MigrationState::new(&name, Mode::Online, &["app".into(), "ops".into()]);
        set_status(&mut state, status, substatus);
        state.databases[0].phase = Phase::Streaming;
        state.databases[0].lag_bytes = 4096;
        state.databases[0].full_load_completed_tables = 7;
        Arc::new(TestDaemon {
            state: Mutex::new(state),
            commands: Mutex::new(Vec::new()),
        })
    }

    fn commands(&self) -> Vec<ConsoleCommand> {
        self.commands.lock().unwrap().clone()
    }
}

impl ConsoleHandler for TestDaemon {
    fn handle(&self, command: ConsoleCommand) -> Result<ConsoleReply, ConsoleRefusal> {
        self.commands.lock().unwrap().push(command);
        let mut state = self.state.lock().unwrap();
        if let Some(reply) = show_reply(command, &state) {
            return Ok(reply);
        }
        match command {
            ConsoleCommand::Cutover if state.status() != Status::WaitingForUserAction => {
                Err(ConsoleRefusal::not_in_state(format!(
                    "cutover is accepted only in WaitingForUserAction; the migration is {}/{}",
                    state.status(),
                    state.substatus()
                )))
            }
            ConsoleCommand::Cutover => {
                set_status(&mut state, Status::Succeeded, Substatus::Completed);
                Ok(ConsoleReply::accepted(command))
            }
            _ if state.status().is_terminal() => Err(ConsoleRefusal::not_in_state(format!(
                "migration is {} and not cancelable",
                state.status()
            ))),
            _ => {
                set_status(&mut state, Status::Canceled, Substatus::Canceled);
                Ok(ConsoleReply::accepted(command))
            }
        }
    }
}

/// A console served in this process until dropped.
struct Served {
    state_dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), pgmigrate::control::ConsoleError>>>,
}

impl Served {
    async fn start(daemon: Arc<TestDaemon>) -> Served {
        Served::start_with(daemon, SessionLimits::default()).await
    }

    async fn start_with(daemon: Arc<TestDaemon>, limits: SessionLimits) -> Served {
        let state_dir = common::tmp_dir();
        let dir = state_dir.path().join(NAME);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(async move { serve_console_with(&dir, daemon, rx, limits).await });
        let served = Served {
            state_dir,
            stop,
            task: Some(task),
        };
        for _ in 0..200 {
            if served.socket().exists() {
                return served;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "console socket {} never appeared",
            served.socket().display()
        );
    }

    fn dir(&self) -> PathBuf {
        self.state_dir.path().join(NAME)
    }

    fn socket(&self) -> PathBuf {
        socket_path(&self.dir())
    }

    async fn stop(mut self) {
        self.stop.send(true).unwrap();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("serve did not return after shutdown")
            .unwrap()
            .unwrap();
    }
}

async fn psql(dir: &Path, sql: &str) -> Output {
    tokio::process::Command::new(common::newest_client_bin_dir().join("psql"))
        .args(["-X", "-h"])
        .arg(dir)
        .args([
            "-p",
            "6543",
            "-U",
            "x",
            "-v",
            "VERBOSITY=verbose",
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
            "pgmigrate",
        ])
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .output()
        .await
        .unwrap()
}

async fn pgmigrate(args: &[&str], state_dir: &Path) -> Output {
    tokio::process::Command::new(common::pgmigrate_bin())
        .args(args)
        .arg("--state-dir")
        .arg(state_dir)
        .output()
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_shows_status_databases_and_tables() {
    let daemon = TestDaemon::new(Status::InProgress, Substatus::MigratingData);
    let served = Served::start(daemon.clone()).await;

    let mode = std::fs::metadata(served.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    let out = psql(&served.dir(), "show status;").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let fields: Vec<&str> = stdout.trim_end().split('|').collect();
    assert_eq!(fields.len(), 8, "{stdout}");
    assert_eq!(
        &fields[..4],
        ["m1", "online", "InProgress", "MigratingData"]
    );
    assert_eq!(fields[5], "", "ended_on is NULL");
    let state: MigrationState = serde_json::from_str(fields[7]).unwrap();
    assert_eq!(state, *daemon.state.lock().unwrap());

    let out = psql(&served.dir(), "  SHOW DATABASES  ").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(rows[0].starts_with("app|Streaming|0|0|7|0|"), "{stdout}");
    assert!(rows[0].contains("|4096|"), "{stdout}");
    assert!(rows[1].starts_with("ops|Validating|"), "{stdout}");

    let out = psql(&served.dir(), "Show Tables").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "app|0|0|7|0|7\nops|0|0|0|0|0\n");

    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_command_is_a_42601_listing_the_commands() {
    let daemon = TestDaemon::new(Status::InProgress, Substatus::MigratingData);
    let served = Served::start(daemon.clone()).await;
    let out = psql(&served.dir(), "SELECT 1").await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("42601"), "{stderr}");
    assert!(
        stderr.contains(
            "SHOW STATUS, SHOW DATABASES, SHOW TABLES, CUTOVER, CANCEL, CANCEL DROP TARGET"
        ),
        "{stderr}"
    );
    // Not a command: the handler never saw it.
    assert!(daemon.commands().is_empty());
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_refusal_reaches_psql_and_the_client() {
    let daemon = TestDaemon::new(Status::InProgress, Substatus::MigratingData);
    let served = Served::start(daemon.clone()).await;

    let out = psql(&served.dir(), "cutover;").await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("55000"), "{stderr}");
    assert!(
        stderr.contains(
            "cutover is accepted only in WaitingForUserAction; the migration is InProgress/MigratingData"
        ),
        "{stderr}"
    );

    let name = MigrationName::new(NAME).unwrap();
    let e = console_client::send(served.state_dir.path(), &name, ConsoleCommand::Cutover)
        .await
        .unwrap_err();
    let ConsoleClientError::Refused { sqlstate, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(sqlstate, SQLSTATE_NOT_IN_PREREQUISITE_STATE);

    // The CLI maps the refusal to exit 5 and prints the reason.
    let out = pgmigrate(&["cutover", NAME], served.state_dir.path()).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the migration is InProgress/MigratingData"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(daemon.commands(), [ConsoleCommand::Cutover; 3]);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_cutover_wait_and_show_use_the_console() {
    let daemon = TestDaemon::new(
        Status::WaitingForUserAction,
        Substatus::WaitingForCutoverTrigger,
    );
    let served = Served::start(daemon.clone()).await;
    let state_dir = served.state_dir.path().to_owned();

    // No state.json at all: show's answer can only come from the console.
    let out = pgmigrate(&["show", NAME, "--json"], &state_dir).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown: MigrationState = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown.status(), Status::WaitingForUserAction);
    let name = MigrationName::new(NAME).unwrap();
    let (_, source) = console_client::read_state(&state_dir, &name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(source, StateSource::Console);

    let out = pgmigrate(&["cutover", NAME, "--wait", "--timeout", "30"], &state_dir).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Succeeded"),
        "{}",
        text(&out.stdout)
    );
    let cutovers = |d: &TestDaemon| {
        d.commands()
            .iter()
            .filter(|c| **c == ConsoleCommand::Cutover)
            .count()
    };
    assert_eq!(cutovers(&daemon), 1);
    // --wait polled with SHOW STATUS after the cutover.
    assert_eq!(daemon.commands().last(), Some(&ConsoleCommand::ShowStatus));

    // A second cutover is refused: the migration has Succeeded.
    let out = pgmigrate(&["cutover", NAME], &state_dir).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_cancel_through_the_console_waits_for_canceled() {
    let daemon = TestDaemon::new(Status::InProgress, Substatus::MigratingData);
    let served = Served::start(daemon.clone()).await;
    let out = pgmigrate(
        &["cancel", NAME, "--drop-target-databases"],
        served.state_dir.path(),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        daemon.commands().first(),
        Some(&ConsoleCommand::Cancel { drop_target: true })
    );
    let out = pgmigrate(&["cancel", NAME], served.state_dir.path()).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not cancelable"),
        "{}",
        text(&out.stderr)
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_removes_the_socket_and_a_stale_one_is_replaced() {
    let daemon = TestDaemon::new(Status::InProgress, Substatus::MigratingData);
    let served = Served::start(daemon.clone()).await;
    let socket = served.socket();
    let state_dir = served.state_dir.path().to_owned();
    // Keep the directory: stop() consumes `served` but not the TempDir's path.
    let Served {
        state_dir: keep,
        stop,
        task,
    } = served;
    stop.send(true).unwrap();
    task.unwrap().await.unwrap().unwrap();
    assert!(!socket.exists(), "socket left behind after shutdown");

    // A crashed daemon's socket: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(std::fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_socket());
    let name = MigrationName::new(NAME).unwrap();
    let e = console_client::send(&state_dir, &name, ConsoleCommand::ShowStatus)
        .await
        .unwrap_err();
    assert!(matches!(e, ConsoleClientError::NotRunning { .. }), "{e:?}");

    let (stop, rx) = watch::channel(false);
    let dir = state_dir.join(NAME);
    let task = tokio::spawn(async move { serve_console(&dir, daemon, rx).await });
    let mut state = None;
    for _ in 0..200 {
        match console_client::fetch_state(&state_dir, &name).await {
            Ok(s) => {
                state = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert_eq!(state.map(|s| s.status()), Some(Status::InProgress));
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    drop(keep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_without_daemon() {
    let state_dir = common::tmp_dir();
    let out = pgmigrate(&["cutover", NAME], state_dir.path()).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("migration m1 is not running"),
        "{}",
        text(&out.stderr)
    );

    let out = pgmigrate(&["show", NAME], state_dir.path()).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // show falls back to state.json; cancel refuses a finished migration.
    let name = MigrationName::new(NAME).unwrap();
    let store = StateStore::open(state_dir.path(), &name).unwrap();
    store.lock().unwrap();
    store
        .update(|s| set_status(s, Status::Succeeded, Substatus::Completed))
        .unwrap();
    drop(store);
    let out = pgmigrate(&["show", NAME, "--json"], state_dir.path()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown: MigrationState = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown.status(), Status::Succeeded);
    let out = pgmigrate(&["cancel", NAME], state_dir.path()).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not cancelable"),
        "{}",
        text(&out.stderr)
    );
}

/// Sixteen clients that finished their startup and then sit idle: what an
/// operator's forgotten psql windows or a stuck monitoring script look like.
async fn idle_sessions(served: &Served, n: usize) -> Vec<Connection> {
    let mut params = ConnectParams::new(Host::Unix(served.dir()), 6543, "x", "pgmigrate");
    params.sslmode = SslMode::Disable;
    params.application_name = "idle-client".into();
    let mut idle = Vec::new();
    for _ in 0..n {
        idle.push(Connection::connect(&params).await.unwrap());
    }
    idle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_over_the_limit_are_refused_with_53300_but_cutover_gets_through() {
    let daemon = TestDaemon::new(
        Status::WaitingForUserAction,
        Substatus::WaitingForCutoverTrigger,
    );
    let served = Served::start(daemon.clone()).await;
    let idle = idle_sessions(&served, 16).await;
    let out = psql(&served.dir(), "SHOW STATUS").await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("at most 16 sessions"), "{stderr}");
    // The CLI uses a reserved session: no "Broken pipe", no refusal.
    let out = pgmigrate(&["cutover", NAME], served.state_dir.path()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(daemon.commands().contains(&ConsoleCommand::Cutover));
    let out = pgmigrate(&["show", NAME, "--json"], served.state_dir.path()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    drop(idle);
    // Freed slots serve again once the server notices the hang-ups.
    let mut ok = false;
    for _ in 0..100 {
        if psql(&served.dir(), "SHOW STATUS").await.status.success() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "console did not recover after idle clients left");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_gets_through_while_idle_sessions_hold_every_slot() {
    let daemon = TestDaemon::new(Status::InProgress, Substatus::MigratingData);
    let served = Served::start(daemon.clone()).await;
    let _idle = idle_sessions(&served, 16).await;
    let out = pgmigrate(&["cancel", NAME], served.state_dir.path()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("Broken pipe"));
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_dropped_after_their_timeouts() {
    let daemon = TestDaemon::new(Status::InProgress, Substatus::MigratingData);
    let limits = SessionLimits {
        startup_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(1),
        ..SessionLimits::default()
    };
    let served = Served::start_with(daemon, limits).await;
    // More silent sockets than there are sessions: none sends a startup.
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(UnixStream::connect(served.socket()).await.unwrap());
    }
    let mut idle = idle_sessions(&served, 15).await;
    let started = Instant::now();
    for s in &mut silent {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .expect("a silent connection must be closed by the console")
            .unwrap();
        assert_eq!(n, 0, "nothing is sent to a client that never started");
    }
    // An idle session is told why before it is closed.
    let mut raw = raw_session(&served).await;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut reply))
        .await
        .expect("an idle session must be closed by the console")
        .unwrap();
    let reply = text(&reply);
    assert!(reply.contains("57P05") && reply.contains("idle"), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(8));
    // The idle sessions from before were closed too.
    assert!(idle[0].simple_query("SHOW STATUS").await.is_err());
    drop(idle);
    assert!(psql(&served.dir(), "SHOW STATUS").await.status.success());
    served.stop().await;
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Startup by hand, then read until ReadyForQuery.
async fn raw_session(served: &Served) -> UnixStream {
    let mut s = UnixStream::connect(served.socket()).await.unwrap();
    let mut body = 196_608u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0x\0database\0pgmigrate\0\0");
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    s.write_all(&packet).await.unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !seen.ends_with(b"Z\0\0\0\x05I") {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "console closed during startup");
        seen.extend_from_slice(&chunk[..n]);
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mb_query_is_refused_with_a_short_error_and_flat_memory() {
    let daemon = TestDaemon::new(Status::InProgress, Substatus::MigratingData);
    let served = Served::start(daemon).await;
    let mut s = raw_session(&served).await;
    let before = rss_kib();
    let size: u32 = 200 * 1024 * 1024;
    let (mut read, mut write) = s.split();
    let sender = async {
        let mut header = vec![b'Q'];
        header.extend_from_slice(&(size + 4).to_be_bytes());
        write.write_all(&header).await?;
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..200 {
            write.write_all(&chunk).await?;
        }
        std::io::Result::Ok(())
    };
    let receiver = async {
        let mut reply = Vec::new();
        let _ = read.read_to_end(&mut reply).await;
        reply
    };
    let (sent, reply) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(sender, receiver)
    })
    .await
    .expect("the console must answer at once");
    // The console discards the body (so the client reads the error rather
    // than failing its write) without keeping any of it.
    let _ = sent;
    let after = rss_kib();
    let text = String::from_utf8_lossy(&reply).into_owned();
    eprintln!(
        "RSS {before} kB -> {after} kB; reply {} bytes: {text:?}",
        reply.len()
    );
    assert!(reply.first() == Some(&b'E'), "{text}");
    assert!(reply.len() < 300, "{text}");
    assert!(
        text.contains("54000") && text.contains("exceeds the limit"),
        "{text}"
    );
    assert!(
        after < before + 20 * 1024,
        "RSS grew from {before} to {after} kB"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_with_a_long_unknown_or_oversized_query_gets_a_short_error() {
    let daemon = TestDaemon::new(Status::InProgress, Substatus::MigratingData);
    let served = Served::start(daemon).await;
    let dir = common::tmp_dir();
    for (len, expect) in [(60_000, "42601"), (5_000_000, "54000")] {
        let file = dir.path().join(format!("q{len}.sql"));
        std::fs::write(&file, "x".repeat(len)).unwrap();
        let out = psql(&served.dir(), &format!("\\i {}", file.display())).await;
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expect), "{len}: {stderr}");
        assert!(
            stderr.len() < 1000,
            "{len}: error of {} bytes",
            stderr.len()
        );
    }
    assert!(psql(&served.dir(), "SHOW STATUS").await.status.success());
    served.stop().await;
}
