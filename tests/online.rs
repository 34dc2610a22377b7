//! Online migration: copy, then stream under load until the target is
//! identical; kill -9 at several moments and resume with nothing lost or
//! applied twice; the awkward cases of logical replication.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::daemon::{kill9, show, signal, start, stop, verify_ok as verify, wait_exit};
use common::streaming::{assert_failed_near, no_lag, wait_streaming};
use common::{assert_same_except, tmp_dir, write_config, Cluster};

/// Waits until every database streams with no lag (and the migration
/// waits for cutover), or panics with the daemon's log.
fn wait_caught_up(state: &Path, name: &str, child: &mut Child, log: &Path, limit: Duration) {
    wait_streaming(state, name, child, log, limit, |d| {
        no_lag(d) && d["latency_seconds"].as_f64() == Some(0.0)
    });
}

/// Writes the config of migration `name` (`servers`: source, target),
/// starts the daemon with its log in `state`/run.log and waits until it
/// caught up; returns the config, the log and the daemon.
fn start_caught_up(
    state: &Path,
    name: &str,
    servers: (&Cluster, &Cluster),
    databases: &[&str],
    extra_toml: &str,
) -> (PathBuf, PathBuf, Child) {
    let cfg = write_config(state, name, servers.0, servers.1, databases, extra_toml);
    let log = state.join("run.log");
    let mut child = start(&cfg, &log);
    wait_caught_up(state, name, &mut child, &log, Duration::from_secs(60));
    (cfg, log, child)
}

#[test]
fn streams_under_pgbench_load_and_survives_kill_9() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("bench");
    src.pgbench(&["-i", "-s", "4", "-q", "bench"]);
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "online-load",
        &src,
        &dst,
        &["bench"],
        "option = \"migrate\"\n[copy]\njobs = 2\n[apply]\nworkers = 3\nbatch_max_changes = 500\n",
    );
    let log = state.path().join("run.log");
    // Load from before the copy to after several kills.
    let (src_port, sock) = (src.port(), src.socket_dir().to_path_buf());
    let load = std::thread::spawn(move || {
        let bin = common::newest_client_bin_dir();
        Command::new(bin.join("pgbench"))
            .args(["-n", "-c", "4", "-j", "2", "-T", "25", "-h"])
            .arg(&sock)
            .args(["-p", &src_port.to_string(), "-U", "postgres", "bench"])
            .output()
            .expect("pgbench")
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut child = start(&cfg, &log);
    // Kill during the copy, during streaming, and again right after a restart.
    std::thread::sleep(Duration::from_millis(1200));
    kill9(child);
    for pause in [4000, 2500, 300, 3000] {
        child = start(&cfg, &log);
        std::thread::sleep(Duration::from_millis(pause));
        kill9(child);
    }
    child = start(&cfg, &log);
    let out = load.join().expect("load thread");
    assert!(
        out.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_caught_up(
        state.path(),
        "online-load",
        &mut child,
        &log,
        Duration::from_secs(120),
    );
    assert_same_except(&src, &dst, "bench", &["sequences"]);
    verify(&cfg);
    // Nothing lost, nothing doubled: history rows are one per transaction.
    let tx = src.psql("bench", "SELECT count(*) FROM pgbench_history");
    assert!(
        tx.parse::<u64>().unwrap_or(0) > 1000,
        "too little load: {tx}"
    );
    assert_eq!(
        dst.psql("bench", "SELECT count(*) FROM pgbench_history"),
        tx
    );
    stop(child);
    // A graceful stop keeps the slot for the next run.
    assert_eq!(
        src.psql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "1"
    );
}

#[test]
fn streams_awkward_changes_intact() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("cases");
    src.psql("cases", include_str!("sql/stream_cases.sql"));
    let state = tmp_dir();
    let (cfg, log, child) = start_caught_up(
        state.path(),
        "online-cases",
        (&src, &dst),
        &["cases"],
        "option = \"migrate\"\n[apply]\nworkers = 4\n",
    );
    src.psql("cases", include_str!("sql/stream_changes.sql"));
    // Stop in the middle of the big transaction's apply, then resume.
    std::thread::sleep(Duration::from_millis(1500));
    kill9(child);
    let mut child = start(&cfg, &log);
    wait_caught_up(
        state.path(),
        "online-cases",
        &mut child,
        &log,
        Duration::from_secs(180),
    );
    assert_same_except(&src, &dst, "cases", &["sequences"]);
    assert_eq!(dst.psql("cases", "SELECT count(*) FROM bulk"), "1000000");
    assert_eq!(
        dst.psql(
            "cases",
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM trunc_me"
        ),
        "1000"
    );
    assert_eq!(dst.psql("cases", "SELECT count(*) FROM parts_hi"), "10");
    assert_eq!(
        dst.psql("cases", "SELECT count(*) FROM nokey WHERE b = 'changed'"),
        "1"
    );
    assert_eq!(
        dst.psql(
            "cases",
            "SELECT string_agg(id || v, ',' ORDER BY id) FROM inh_child"
        ),
        "1c,2c"
    );
    // The 200 updates of five rows in one transaction were folded per key:
    // the target saw a handful of row updates, not 200 (statistics reach
    // the view within a second or so of the workers going idle).
    let mut updates = 0u64;
    for _ in 0..50 {
        updates = dst
            .psql(
                "cases",
                "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'hot'",
            )
            .parse()
            .unwrap_or(0);
        if updates > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        (1..100).contains(&updates),
        "hot rows updated {updates} times on the target"
    );
    stop(child);
}

#[test]
fn cutover_by_sigusr1_syncs_sequences_and_leaves_nothing_behind() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("shop");
    src.psql(
        "shop",
        "CREATE TABLE orders (id bigserial PRIMARY KEY, item text); \
         INSERT INTO orders (item) SELECT 'o' || g FROM generate_series(1, 1000) g;",
    );
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "cutover-usr1",
        &src,
        &dst,
        &["shop"],
        "option = \"migrate\"\n",
    );
    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    // From the first sample of streaming on, the lag is at most the WAL
    // the source wrote since the copy (tiny here), never the whole LSN
    // (tens of MB on a fresh cluster) while no worker has reported yet.
    let total = src.psql("postgres", "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn");
    let total: f64 = total.parse().expect("numeric LSN");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let doc = show(state.path(), "cutover-usr1");
        if doc["pid"].as_u64() == Some(u64::from(child.id())) {
            let d = &doc["databases"][0];
            if d["phase"] == "Streaming" {
                let lag = d["lag_bytes"].as_f64().unwrap_or(0.0);
                assert!(
                    lag < 4e6 && lag < total / 2.0,
                    "lag {lag} B at stream start: {doc}"
                );
            }
            if doc["status"] == "WaitingForUserAction" {
                break;
            }
        }
        assert!(Instant::now() < deadline, "never ready: {doc}");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_caught_up(
        state.path(),
        "cutover-usr1",
        &mut child,
        &log,
        Duration::from_secs(60),
    );
    src.psql(
        "shop",
        "INSERT INTO orders (item) SELECT 'late' || g FROM generate_series(1, 500) g",
    );
    // Cut over right away: cutover itself must apply what is still in flight.
    signal(&child, "-USR1");
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(
        status.success(),
        "cutover run exit {status}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let doc = show(state.path(), "cutover-usr1");
    assert_eq!(doc["status"], "Succeeded");
    // Not a terminal: no colour escapes for journald.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains('\x1b'),
        "escape codes in a non-terminal log: {text}"
    );
    assert_eq!(doc["substatus"], "Completed");
    assert_eq!(
        src.psql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
    assert_eq!(src.psql("shop", "SELECT count(*) FROM pg_publication"), "0");
    assert_eq!(
        dst.psql("postgres", "SELECT count(*) FROM pg_replication_origin"),
        "0"
    );
    common::assert_same(&src, &dst, "shop");
    verify(&cfg);
    // The target's sequence continues after the source's last value.
    dst.psql("shop", "INSERT INTO orders (item) VALUES ('after cutover')");
    assert_eq!(dst.psql("shop", "SELECT max(id) FROM orders"), "1501");
}

#[test]
fn survives_source_and_target_restarts() {
    let mut src = Cluster::start_default();
    let mut dst = Cluster::start_default();
    src.create_db("app");
    src.psql("app", "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, 0 FROM generate_series(1, 1000) g;");
    let state = tmp_dir();
    let (_, log, mut child) = start_caught_up(
        state.path(),
        "restarts",
        (&src, &dst),
        &["app"],
        "option = \"migrate\"\n",
    );
    src.psql("app", "UPDATE t SET v = v + 1 WHERE id <= 500");
    src.restart();
    src.psql("app", "UPDATE t SET v = v + 1 WHERE id > 500");
    dst.restart();
    src.psql(
        "app",
        "INSERT INTO t SELECT g, 7 FROM generate_series(1001, 1100) g",
    );
    // The state may still show the lag of before the restarts: wait for the
    // last change itself.
    let deadline = Instant::now() + Duration::from_secs(120);
    while dst
        .try_psql("app", "SELECT count(*) FROM t")
        .unwrap_or_default()
        != "1100"
    {
        assert!(
            Instant::now() < deadline,
            "not applied after restarts: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_caught_up(
        state.path(),
        "restarts",
        &mut child,
        &log,
        Duration::from_secs(120),
    );
    common::assert_same(&src, &dst, "app");
    stop(child);
}

fn vm_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_large_transaction_keeps_memory_bounded() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("big");
    src.psql(
        "big",
        "CREATE TABLE wide (id bigint PRIMARY KEY, payload text)",
    );
    let state = tmp_dir();
    let (_, log, child) = start_caught_up(
        state.path(),
        "bigtx",
        (&src, &dst),
        &["big"],
        "option = \"migrate\"\n",
    );
    // About 400 MB of WAL in one transaction: several times the 64 MB
    // in-memory budget, so it goes through the spill file.
    src.psql(
        "big",
        "INSERT INTO wide SELECT g, repeat(md5(g::text), 16) FROM generate_series(1, 700000) g",
    );
    let deadline = Instant::now() + Duration::from_secs(240);
    while dst.psql("big", "SELECT count(*) FROM wide") != "700000" {
        assert!(
            Instant::now() < deadline,
            "large transaction not applied: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let peak_mb = vm_kb(child.id(), "VmHWM:") / 1024;
    assert!(peak_mb > 0, "cannot read the daemon's memory");
    assert!(
        peak_mb < 256,
        "daemon peak RSS {peak_mb} MB for a 400 MB transaction"
    );
    assert!(std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("spilled to disk"));
    common::assert_same(&src, &dst, "big");
    stop(child);
}

/// Composite keys, a domain over a composite, an enum key, arrays of
/// composites, and composites holding types without equality under
/// REPLICA IDENTITY FULL: every UPDATE and DELETE finds its row on the
/// target (an untyped parameter would fail with 0A000 and stall the stream).
#[test]
fn streams_composite_domain_and_enum_keys() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("typed");
    src.psql(
        "typed",
        "CREATE SCHEMA \"Other\"; \
         CREATE TYPE \"Other\".\"Pair\" AS (a int, b text); \
         CREATE DOMAIN \"Other\".dpair AS \"Other\".\"Pair\"; \
         CREATE TYPE ptj AS (p point, j json); \
         CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); \
         CREATE TABLE ck (k \"Other\".\"Pair\" PRIMARY KEY, v int); \
         CREATE TABLE dk (k \"Other\".dpair PRIMARY KEY, v int); \
         CREATE TABLE ek (k mood PRIMARY KEY, v int); \
         CREATE TABLE ak (k \"Other\".\"Pair\"[] PRIMARY KEY, v int); \
         CREATE TABLE fullc (id int, c ptj, arr \"Other\".\"Pair\"[], v int); \
         ALTER TABLE fullc REPLICA IDENTITY FULL; \
         INSERT INTO ck SELECT ROW(g, 'b ' || g)::\"Other\".\"Pair\", 0 FROM generate_series(1, 20) g; \
         INSERT INTO dk SELECT ROW(g, 'd,' || g)::\"Other\".\"Pair\", 0 FROM generate_series(1, 20) g; \
         INSERT INTO ek VALUES ('sad', 0), ('ok', 0), ('happy', 0); \
         INSERT INTO ak SELECT ARRAY[ROW(g, 'x')::\"Other\".\"Pair\", ROW(g, 'y \"q\"')::\"Other\".\"Pair\"], 0 FROM generate_series(1, 20) g; \
         INSERT INTO fullc SELECT g, ROW(point(g, g), '{\"g\": 1}')::ptj, ARRAY[ROW(g, 'f')::\"Other\".\"Pair\"], 0 FROM generate_series(1, 20) g;",
    );
    let state = tmp_dir();
    let (_, log, mut child) = start_caught_up(
        state.path(),
        "typed-keys",
        (&src, &dst),
        &["typed"],
        "option = \"migrate\"\n[apply]\nworkers = 2\n",
    );
    // Single changes, several in one transaction, a key change, deletes.
    for t in ["ck", "dk", "ek", "ak", "fullc"] {
        src.psql(
            "typed",
            &format!("UPDATE {t} SET v = v + 1 WHERE v = 0 AND ctid = (SELECT min(ctid) FROM {t})"),
        );
        src.psql("typed", &format!("BEGIN; UPDATE {t} SET v = 7; DELETE FROM {t} WHERE ctid = (SELECT max(ctid) FROM {t}); COMMIT"));
    }
    src.psql(
        "typed",
        "UPDATE ck SET k = ROW((k).a + 100, (k).b)::\"Other\".\"Pair\" WHERE (k).a = 1; \
         UPDATE dk SET k = ROW((k).a + 100, 'moved')::\"Other\".\"Pair\" WHERE (k).a = 2; \
         UPDATE ek SET k = 'happy' WHERE k = 'ok' AND NOT EXISTS (SELECT 1 FROM ek WHERE k = 'happy'); \
         DELETE FROM ek WHERE k = 'sad'; \
         UPDATE fullc SET c = ROW(point(0, 0), '{}')::ptj WHERE id = 3; \
         DELETE FROM fullc WHERE id = 4; \
         INSERT INTO ck VALUES (ROW(999, 'new')::\"Other\".\"Pair\", 1); \
         INSERT INTO ak VALUES (ARRAY[ROW(999, NULL)::\"Other\".\"Pair\"], 1);",
    );
    // Lag 0 can be read before the last changes arrive: wait for the rows.
    let tables = ["ck", "dk", "ek", "ak", "fullc"];
    let contents = |c: &Cluster| -> Vec<String> {
        tables
            .iter()
            .map(|t| {
                c.psql(
                    "typed",
                    &format!("SELECT string_agg(t::text, ';' ORDER BY t::text) FROM {t} t"),
                )
            })
            .collect()
    };
    let want = contents(&src);
    let deadline = Instant::now() + Duration::from_secs(60);
    while contents(&dst) != want {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "pgmigrate exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "target differs: {:?} vs {want:?}: {}\n{}",
            contents(&dst),
            show(state.path(), "typed-keys"),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let doc = show(state.path(), "typed-keys");
    assert_eq!(doc["status"], "WaitingForUserAction", "{doc}");
    assert!(
        doc["databases"][0]["cdc_update_counter"]
            .as_u64()
            .unwrap_or(0)
            >= 10,
        "updates not counted: {doc}"
    );
    // The key changes and deletes happened (not only the compare above).
    assert_eq!(
        dst.psql("typed", "SELECT count(*) FROM dk WHERE (k).b = 'moved'"),
        "1"
    );
    assert_eq!(
        dst.psql("typed", "SELECT count(*) FROM fullc WHERE id = 4"),
        "0"
    );
    assert_eq!(
        dst.psql("typed", "SELECT count(*) FROM ek WHERE k = 'sad'"),
        "0"
    );
    assert_same_except(&src, &dst, "typed", &["sequences"]);
    stop(child);
}

/// `GET /metrics` over HTTP/1.0 (the body ends at EOF); "" while the
/// listener is not up.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The value of an unlabelled metric.
fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// A migration streaming and caught up, its metrics served at `addr`.
struct Metered {
    state: tempfile::TempDir,
    addr: String,
    log: PathBuf,
    child: Child,
}

/// Starts migration `name` of database `db` with a metrics listener and
/// waits until it caught up.
fn start_metered(src: &Cluster, dst: &Cluster, db: &str, name: &str) -> Metered {
    let state = tmp_dir();
    let addr = free_addr();
    let (_, log, child) = start_caught_up(
        state.path(),
        name,
        (src, dst),
        &[db],
        &format!("option = \"migrate\"\nmetrics_listen = \"{addr}\"\n"),
    );
    Metered {
        state,
        addr,
        log,
        child,
    }
}

/// A change the target refuses (here a CHECK constraint only the target
/// has) fails the migration within seconds, naming database, table, row
/// and LSN; the daemon exits 1 and never says it is ready meanwhile.
#[test]
fn a_change_the_target_refuses_fails_the_migration_with_table_key_and_lsn() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("refuse");
    src.psql(
        "refuse",
        "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, 0 FROM generate_series(1, 10) g;",
    );
    let Metered {
        state,
        addr,
        log,
        mut child,
    } = start_metered(&src, &dst, "refuse", "refused");
    assert_eq!(metric(&scrape(&addr), "pgmigrate_cutover_ready"), Some(1.0));
    dst.psql(
        "refuse",
        "ALTER TABLE t ADD CONSTRAINT v_small CHECK (v < 100) NOT VALID",
    );
    let lsn = src.psql(
        "refuse",
        "UPDATE t SET v = 1000 WHERE id = 3 RETURNING pg_current_wal_insert_lsn()",
    );
    let started = Instant::now();
    let mut saw_ready = false;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        let body = scrape(&addr);
        if metric(&body, "pgmigrate_cutover_ready") == Some(1.0)
            && started.elapsed() > Duration::from_secs(3)
        {
            saw_ready = true;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still running after 60 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let elapsed = started.elapsed();
    assert_eq!(
        status.code(),
        Some(1),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        !saw_ready,
        "cutover_ready stayed 1 while the change was refused"
    );
    // The reported commit LSN is the UPDATE's (at or before the WAL
    // position the source reported while it ran).
    assert_failed_near(
        state.path(),
        "refused",
        &src,
        "refuse",
        &lsn,
        &[
            "refuse",
            "public.t",
            "(id)=(3)",
            "committed at ",
            "23514",
            "attempts",
        ],
    );
    eprintln!(
        "refused change failed the migration after {:.1} s",
        elapsed.as_secs_f64()
    );
}

/// While the target is down the stream cannot apply: the migration leaves
/// WaitingForUserAction, cutover_ready is 0 and the lag in seconds grows;
/// once the target is back it catches up and is ready again.
#[test]
fn not_ready_while_the_stream_cannot_apply() {
    let src = Cluster::start_default();
    let mut dst = Cluster::start_default();
    src.create_db("down");
    src.psql("down", "CREATE TABLE t (id int PRIMARY KEY, v int)");
    let Metered {
        state,
        addr,
        log,
        mut child,
    } = start_metered(&src, &dst, "down", "target-down");
    dst.stop();
    src.psql("down", "INSERT INTO t VALUES (1, 1)");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut not_ready, mut max_latency) = (false, 0.0f64);
    while Instant::now() < deadline && !(not_ready && max_latency >= 5.0) {
        let doc = show(state.path(), "target-down");
        let ready = metric(&scrape(&addr), "pgmigrate_cutover_ready");
        not_ready = doc["status"] == "InProgress" && ready == Some(0.0);
        max_latency = max_latency.max(
            doc["databases"][0]["latency_seconds"]
                .as_f64()
                .unwrap_or(0.0),
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        not_ready && max_latency >= 5.0,
        "not ready {not_ready}, latency {max_latency}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    dst.restart();
    wait_caught_up(
        state.path(),
        "target-down",
        &mut child,
        &log,
        Duration::from_secs(90),
    );
    assert_eq!(metric(&scrape(&addr), "pgmigrate_cutover_ready"), Some(1.0));
    assert_eq!(dst.psql("down", "SELECT v FROM t WHERE id = 1"), "1");
    stop(child);
}
