//! `verify` while `run` streams under pgbench load: the daemon compares
//! source and target at one LSN (console VERIFY), so a busy source still
//! verifies identical; rows changed, deleted or added on the target behind
//! pgmigrate's back are named by table and key; the stream's lag stays
//! bounded while verify runs.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::{show, start, stop};
use common::streaming::{no_lag, wait_streaming};
use common::{pgmigrate_bin, tmp_dir, write_config, Cluster};

fn verify_json(cfg: &Path) -> (Option<i32>, serde_json::Value, String) {
    let out: Output = Command::new(pgmigrate_bin())
        .args(["verify", "--json", "--config"])
        .arg(cfg)
        .output()
        .expect("run pgmigrate verify");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let doc = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "verify --json: {e}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), doc, text)
}

/// Highest lag_seconds `show` reports while `busy` stays set.
fn watch_lag(state: &Path, name: &str, busy: Arc<AtomicBool>) -> std::thread::JoinHandle<f64> {
    let (state, name) = (state.to_path_buf(), name.to_string());
    std::thread::spawn(move || {
        let mut worst = 0.0f64;
        while busy.load(Ordering::Acquire) {
            let doc = show(&state, &name);
            for d in doc["databases"].as_array().cloned().unwrap_or_default() {
                worst = worst.max(d["latency_seconds"].as_f64().unwrap_or(0.0));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        worst
    })
}

#[test]
fn verifies_at_one_lsn_under_load_and_names_tampered_rows() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("bench");
    src.pgbench(&["-i", "-s", "2", "-q", "bench"]);
    // A table pgbench leaves alone, big enough to be narrowed in ranges.
    src.psql(
        "bench",
        "CREATE TABLE extra (id int PRIMARY KEY, v text); \
         INSERT INTO extra SELECT g, md5(g::text) FROM generate_series(1, 20000) g",
    );
    let state = tmp_dir();
    let name = "verify-live";
    let cfg = write_config(
        state.path(),
        name,
        &src,
        &dst,
        &["bench"],
        "option = \"migrate\"\n[apply]\nworkers = 2\n[verify]\nmax_rows_per_second = 2000000\n",
    );
    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    wait_streaming(
        state.path(),
        name,
        &mut child,
        &log,
        Duration::from_secs(90),
        no_lag,
    );

    let (src_port, sock) = (src.port(), src.socket_dir().to_path_buf());
    let load = std::thread::spawn(move || {
        let bin = common::newest_client_bin_dir();
        Command::new(bin.join("pgbench"))
            .args(["-n", "-c", "3", "-j", "1", "-T", "30", "-h"])
            .arg(&sock)
            .args(["-p", &src_port.to_string(), "-U", "postgres", "bench"])
            .output()
            .expect("pgbench")
    });
    std::thread::sleep(Duration::from_secs(3));

    // Identical at one LSN although the source never stops changing.
    let busy = Arc::new(AtomicBool::new(true));
    let lag = watch_lag(state.path(), name, busy.clone());
    let started = Instant::now();
    let (code, doc, text) = verify_json(&cfg);
    let took = started.elapsed();
    assert_eq!(code, Some(0), "verify under load: {text}");
    let lsn = doc["databases"][0]["lsn"].as_str().unwrap_or_default();
    assert!(!lsn.is_empty(), "compared by the daemon at one LSN: {text}");

    // Behind pgmigrate's back on the target: no trigger, no stream.
    dst.psql(
        "bench",
        "SET session_replication_role = replica; \
         UPDATE extra SET v = 'changed' WHERE id = 7777; \
         DELETE FROM extra WHERE id = 12345; \
         INSERT INTO extra VALUES (30000, 'added')",
    );
    let (code, doc, text) = verify_json(&cfg);
    busy.store(false, Ordering::Release);
    let worst_lag = lag.join().expect("lag watcher");
    assert_eq!(code, Some(6), "tampered target: {text}");
    let diffs = doc["databases"][0]["differences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let rows: Vec<(String, String, String, String)> = diffs
        .iter()
        .filter(|d| d["kind"] == "row")
        .map(|d| {
            (
                d["table"].as_str().unwrap_or_default().to_string(),
                d["key"]["id"].as_str().unwrap_or_default().to_string(),
                d["source"].as_str().unwrap_or_default().to_string(),
                d["target"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let keys: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert!(
        rows.iter().all(|r| r.0 == "public.extra"),
        "only the tampered table differs: {text}"
    );
    for k in ["7777", "12345", "30000"] {
        assert!(keys.contains(&k), "key {k} named: {text}");
    }
    assert_eq!(rows.len(), 3, "exactly the tampered rows: {text}");
    let deleted = rows.iter().find(|r| r.1 == "12345").expect("deleted row");
    assert_eq!(deleted.3, "absent");
    let added = rows.iter().find(|r| r.1 == "30000").expect("added row");
    assert_eq!(added.2, "absent");
    assert!(
        diffs.iter().all(|d| d["object"]
            .as_str()
            .unwrap_or_default()
            .contains("public.extra")),
        "pgbench's tables compare equal under load: {text}"
    );

    let out = load.join().expect("load thread");
    assert!(out.status.success(), "pgbench: {:?}", out);
    // An idle source: the stream reaches the point through keepalives.
    let (code, doc, text) = verify_json(&cfg);
    assert_eq!(code, Some(6), "idle source, tampered target: {text}");
    let idle_keys: Vec<String> = doc["databases"][0]["differences"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|d| d["kind"] == "row")
        .map(|d| d["key"]["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(idle_keys.len(), 3, "the same rows when idle: {text}");
    eprintln!("verify under load took {took:?}; worst lag while verifying {worst_lag:.1}s");
    assert!(
        worst_lag < 10.0,
        "the stream stayed within its lag bound while verify ran: {worst_lag}s"
    );
    // `show` has the last run.
    let doc = show(state.path(), name);
    assert_eq!(doc["verify"]["state"], "differences", "{doc}");
    assert_eq!(doc["verify"]["id"], 3, "{doc}");
    let held = doc["verify"]["held_ms"].as_u64().unwrap_or(u64::MAX);
    eprintln!("stream held {held} ms at the last verify");
    assert!(held < 5_000, "the stream is held only for a moment: {doc}");
    stop(child);
    // The temporary verify slots went with their sessions.
    assert_eq!(
        src.psql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "1"
    );
}

/// The oldest source (12: the slot syntax without options list) and a
/// composite key, on an idle stream (the hold is reached by keepalive).
#[test]
fn verifies_a_pg12_source_with_a_composite_key() {
    let src = Cluster::builder().version(12).start();
    let dst = Cluster::start_default();
    src.create_db("app");
    src.psql(
        "app",
        "CREATE TABLE pairs (a int, b text, v numeric, PRIMARY KEY (a, b)); \
         INSERT INTO pairs SELECT g / 10, 'k' || (g % 10), g FROM generate_series(1, 12000) g",
    );
    let state = tmp_dir();
    let name = "verify-live-12";
    let cfg = write_config(
        state.path(),
        name,
        &src,
        &dst,
        &["app"],
        "option = \"migrate\"\n",
    );
    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    wait_streaming(
        state.path(),
        name,
        &mut child,
        &log,
        Duration::from_secs(90),
        no_lag,
    );
    src.psql("app", "UPDATE pairs SET v = v + 1 WHERE a < 100");
    let (code, doc, text) = verify_json(&cfg);
    assert_eq!(code, Some(0), "identical: {text}");
    assert!(doc["databases"][0]["lsn"].is_string(), "{text}");
    dst.psql(
        "app",
        "SET session_replication_role = replica; UPDATE pairs SET v = 0 WHERE a = 500 AND b = 'k3'",
    );
    let (code, doc, text) = verify_json(&cfg);
    assert_eq!(code, Some(6), "tampered: {text}");
    let rows: Vec<&serde_json::Value> = doc["databases"][0]["differences"]
        .as_array()
        .map(|a| a.iter().filter(|d| d["kind"] == "row").collect())
        .unwrap_or_default();
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!(rows[0]["object"], "public.pairs (a, b)=(500, k3)", "{text}");
    assert_eq!(rows[0]["key"]["b"], "k3", "{text}");

    // A long transaction on the source: the slot cannot be created soon,
    // so verify gives up after a few seconds and the stream goes on.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            src.psql(
                "app",
                "BEGIN; SELECT pg_catalog.txid_current(); SELECT pg_catalog.pg_sleep(12); COMMIT",
            )
        });
        std::thread::sleep(Duration::from_secs(1));
        let started = Instant::now();
        let out = Command::new(pgmigrate_bin())
            .args(["verify", "--config"])
            .arg(&cfg)
            .output()
            .expect("run pgmigrate verify");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("long transaction"), "{stderr}");
        assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
        src.psql("app", "UPDATE pairs SET v = v + 1 WHERE a = 1");
        wait_streaming(
            state.path(),
            name,
            &mut child,
            &log,
            Duration::from_secs(5),
            no_lag,
        );
    });
    stop(child);
}
