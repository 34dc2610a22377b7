//! Online migration: copy, then stream under load until the target is
//! identical; kill -9 at several moments and resume with nothing lost or
//! applied twice; the awkward cases of logical replication.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::daemon::{kill9, show, signal, start, stop, verify_ok as verify, wait_exit};
use common::{assert_same_except, tmp_dir, write_config, Cluster};

/// Waits until every database streams with no lag (and the migration
/// waits for cutover), or panics with the daemon's log.
fn wait_caught_up(state: &Path, name: &str, child: &mut Child, log: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "pgmigrate exited early ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        let doc = show(state, name);
        let dbs = doc["databases"].as_array().cloned().unwrap_or_default();
        // The state must come from this process: right after a restart,
        // the file still holds what the killed one wrote last.
        let caught_up = doc["pid"].as_u64() == Some(u64::from(child.id()))
            && doc["status"] == "WaitingForUserAction"
            && !dbs.is_empty()
            && dbs.iter().all(|d| {
                d["lag_bytes"].as_u64() == Some(0) && d["latency_seconds"].as_f64() == Some(0.0)
            });
        if caught_up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not caught up in time: {doc}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
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
    let cfg = write_config(
        state.path(),
        "online-cases",
        &src,
        &dst,
        &["cases"],
        "option = \"migrate\"\n[apply]\nworkers = 4\n",
    );
    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    wait_caught_up(
        state.path(),
        "online-cases",
        &mut child,
        &log,
        Duration::from_secs(60),
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
    let cfg = write_config(
        state.path(),
        "restarts",
        &src,
        &dst,
        &["app"],
        "option = \"migrate\"\n",
    );
    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    wait_caught_up(
        state.path(),
        "restarts",
        &mut child,
        &log,
        Duration::from_secs(60),
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
    let cfg = write_config(
        state.path(),
        "bigtx",
        &src,
        &dst,
        &["big"],
        "option = \"migrate\"\n",
    );
    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    wait_caught_up(
        state.path(),
        "bigtx",
        &mut child,
        &log,
        Duration::from_secs(60),
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
