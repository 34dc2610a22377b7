//! The online lifecycle through each trigger: cutover by CLI and by psql
//! on the admin console (SIGUSR1 is in tests/online.rs), cancel during
//! copy and during streaming, cancel with no daemon, SIGTERM then resume.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use common::daemon::{show, signal, start, wait_exit};
use common::{assert_same, newest_client_bin_dir, pgmigrate_bin, tmp_dir, write_config, Cluster};

fn cli(args: &[&str], state: &Path) -> Output {
    Command::new(pgmigrate_bin())
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("pgmigrate")
}

fn wait_status(
    state: &Path,
    name: &str,
    child: &mut Child,
    log: &Path,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let doc = show(state, name);
        if pred(&doc) {
            return doc;
        }
        if let Ok(Some(s)) = child.try_wait() {
            panic!(
                "pgmigrate exited ({s}): {doc}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "timed out: {doc}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ready(doc: &serde_json::Value) -> bool {
    doc["status"] == "WaitingForUserAction"
        && doc["pid"].as_u64().is_some()
        && doc["databases"]
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["lag_bytes"] == 0))
}

fn console_psql(state: &Path, name: &str, sql: &str) -> Output {
    Command::new(newest_client_bin_dir().join("psql"))
        .arg("-h")
        .arg(state.join(name))
        .args([
            "-p",
            "6543",
            "-U",
            "admin",
            "-X",
            "-A",
            "-t",
            "-v",
            "VERBOSITY=verbose",
            "-c",
            sql,
            "pgmigrate",
        ])
        .output()
        .expect("psql")
}

fn leftovers(src: &Cluster, dst: &Cluster, db: &str) -> (String, String, String) {
    (
        src.psql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        src.try_psql(db, "SELECT count(*) FROM pg_publication")
            .unwrap_or_else(|_| "no db".into()),
        dst.psql("postgres", "SELECT count(*) FROM pg_replication_origin"),
    )
}

fn pair(db: &str, rows: u32) -> (Cluster, Cluster) {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db(db);
    src.psql(
        db,
        &format!(
            "CREATE TABLE items (id bigserial PRIMARY KEY, v text, n int); \
             INSERT INTO items (v, n) SELECT md5(g::text), g FROM generate_series(1, {rows}) g;"
        ),
    );
    (src, dst)
}

#[test]
fn cutover_by_cli_and_by_console() {
    for via in ["cli", "console"] {
        let (src, dst) = pair("app", 5000);
        let state = tmp_dir();
        let name = format!("cut-{via}");
        let cfg = write_config(
            state.path(),
            &name,
            &src,
            &dst,
            &["app"],
            "option = \"migrate\"\n",
        );
        let log: PathBuf = state.path().join("run.log");
        let mut child = start(&cfg, &log);
        // Refused while copying or catching up (exit 5), unless already ready.
        // Refused before the copy is done (or before the console is up).
        let early = cli(&["cutover", &name], state.path());
        let why = String::from_utf8_lossy(&early.stderr);
        assert_eq!(early.status.code(), Some(5), "{why}");
        assert!(
            why.contains("WaitingForUserAction") || why.contains("not running"),
            "{why}"
        );
        wait_status(state.path(), &name, &mut child, &log, ready);
        src.psql("app", "INSERT INTO items (v, n) SELECT 'late', g FROM generate_series(1, 100) g; UPDATE items SET n = -n WHERE id < 50;");
        match via {
            "cli" => {
                let out = cli(
                    &["cutover", &name, "--wait", "--timeout", "60"],
                    state.path(),
                );
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "cutover --wait: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            _ => {
                let out = console_psql(state.path(), &name, "CUTOVER");
                assert!(
                    out.status.success(),
                    "psql CUTOVER: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        assert!(
            wait_exit(&mut child, Duration::from_secs(90)).success(),
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert_eq!(show(state.path(), &name)["status"], "Succeeded");
        assert_same(&src, &dst, "app");
        assert_eq!(
            leftovers(&src, &dst, "app"),
            ("0".into(), "0".into(), "0".into())
        );
        dst.psql("app", "INSERT INTO items (v) VALUES ('after')");
        assert_eq!(dst.psql("app", "SELECT max(id) FROM items"), "5101");
        // A finished migration cannot be cut over or canceled.
        assert_eq!(
            cli(&["cutover", &name], state.path()).status.code(),
            Some(5)
        );
        assert_eq!(cli(&["cancel", &name], state.path()).status.code(), Some(5));
    }
}

#[test]
fn cancel_during_copy_drops_everything_it_created() {
    let (src, dst) = pair("big", 2_000_000);
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "cancel-copy",
        &src,
        &dst,
        &["big"],
        "option = \"migrate\"\n[copy]\njobs = 1\n",
    );
    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    wait_status(state.path(), "cancel-copy", &mut child, &log, |d| {
        d["databases"][0]["phase"] == "CopyingData"
            || d["databases"][0]["phase"] == "BuildingIndexes"
    });
    let out = cli(
        &["cancel", "cancel-copy", "--drop-target-databases"],
        state.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "cancel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(90)).code(),
        Some(3)
    );
    assert_eq!(show(state.path(), "cancel-copy")["status"], "Canceled");
    let (slots, pubs, origins) = leftovers(&src, &dst, "big");
    assert_eq!(
        (slots.as_str(), pubs.as_str(), origins.as_str()),
        ("0", "0", "0")
    );
    assert_eq!(
        dst.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'big'"
        ),
        "0"
    );
}

#[test]
fn cancel_while_streaming_by_console_keeps_the_target() {
    let (src, dst) = pair("app", 1000);
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "cancel-stream",
        &src,
        &dst,
        &["app"],
        "option = \"migrate\"\n",
    );
    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    wait_status(state.path(), "cancel-stream", &mut child, &log, ready);
    let out = console_psql(state.path(), "cancel-stream", "CANCEL");
    assert!(
        out.status.success(),
        "psql CANCEL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(90)).code(),
        Some(3)
    );
    assert_eq!(show(state.path(), "cancel-stream")["status"], "Canceled");
    assert_eq!(
        leftovers(&src, &dst, "app"),
        ("0".into(), "0".into(), "0".into())
    );
    assert_eq!(dst.psql("app", "SELECT count(*) FROM items"), "1000");
}

#[test]
fn sigterm_resume_cutover_and_cancel_without_daemon() {
    let (src, dst) = pair("app", 1000);
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "term",
        &src,
        &dst,
        &["app"],
        "option = \"migrate\"\n",
    );
    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    wait_status(state.path(), "term", &mut child, &log, ready);
    src.psql("app", "UPDATE items SET n = n + 1");
    signal(&child, "-TERM");
    assert!(
        wait_exit(&mut child, Duration::from_secs(90)).success(),
        "SIGTERM must exit 0"
    );
    src.psql("app", "DELETE FROM items WHERE id % 3 = 0");
    let mut child = start(&cfg, &log);
    wait_status(state.path(), "term", &mut child, &log, ready);
    let out = cli(&["cutover", "term", "--wait"], state.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(wait_exit(&mut child, Duration::from_secs(90)).success());
    assert_same(&src, &dst, "app");

    // A stopped migration is canceled from state.json alone.
    let (src2, dst2) = pair("other", 100);
    let cfg2 = write_config(
        state.path(),
        "offline-cancel",
        &src2,
        &dst2,
        &["other"],
        "option = \"migrate\"\n",
    );
    let mut child = start(&cfg2, &log);
    wait_status(state.path(), "offline-cancel", &mut child, &log, ready);
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(90)).success());
    assert_eq!(
        src2.psql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "1"
    );
    let out = cli(
        &["cancel", "offline-cancel", "--drop-target-databases"],
        state.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(show(state.path(), "offline-cancel")["status"], "Canceled");
    assert_eq!(
        src2.psql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
    assert_eq!(
        src2.psql("other", "SELECT count(*) FROM pg_publication"),
        "0"
    );
    assert_eq!(
        dst2.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'other'"
        ),
        "0"
    );
    assert_eq!(
        dst2.psql("postgres", "SELECT count(*) FROM pg_replication_origin"),
        "0"
    );
}

#[test]
fn cutover_with_lock_source_makes_the_source_read_only() {
    let (src, dst) = pair("app", 500);
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "locked",
        &src,
        &dst,
        &["app"],
        "option = \"migrate\"\n[cutover]\nlock_source = true\n",
    );
    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    wait_status(state.path(), "locked", &mut child, &log, ready);
    let out = cli(&["cutover", "locked", "--wait"], state.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(wait_exit(&mut child, Duration::from_secs(90)).success());
    let err = src
        .try_psql("app", "INSERT INTO items (v) VALUES ('too late')")
        .expect_err("the source must refuse writes");
    assert!(err.contains("read-only"), "{err}");
    assert_same(&src, &dst, "app");
}

#[test]
fn option_validate_checks_and_changes_nothing() {
    let (src, dst) = pair("app", 10);
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "check-only",
        &src,
        &dst,
        &["app"],
        "option = \"validate\"\n",
    );
    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    let status = wait_exit(&mut child, Duration::from_secs(90));
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let doc = show(state.path(), "check-only");
    assert_eq!(doc["status"], "Succeeded");
    assert!(doc["validation"].as_array().is_some_and(|v| !v.is_empty()));
    assert_eq!(
        dst.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'app'"
        ),
        "0"
    );
    assert_eq!(
        src.psql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );

    // A table without a key fails online validation: exit 4, nothing created.
    src.psql("app", "CREATE TABLE loose (a int)");
    let cfg = write_config(state.path(), "check-fail", &src, &dst, &["app"], "");
    let mut child = start(&cfg, &log);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(90)).code(),
        Some(4)
    );
    let doc = show(state.path(), "check-fail");
    assert_eq!(doc["status"], "ValidationFailed");
    assert_eq!(
        dst.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'app'"
        ),
        "0"
    );
    assert_eq!(
        src.psql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
}
