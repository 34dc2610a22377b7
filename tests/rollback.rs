//! Reverse replication after cutover (`[cutover] reverse_replication`):
//! writes on the new server stream back to the old one across a kill -9,
//! then `rollback` leaves the source identical, writable and with nothing
//! of the migration left; `finish` drops the reverse objects.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::daemon::{kill9, show, signal, start, wait_exit, wait_ready};
use common::scrape::{free_port, sample, scrape};
use common::{
    assert_same, assert_same_except, dump_bin_dir, is_installed, pgmigrate_bin, tmp_dir,
    write_config, Cluster,
};

const DB: &str = "shop";

fn setup(src: &Cluster, db: &str) {
    src.create_db(db);
    src.psql(
        db,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, item text, qty int); \
         CREATE TABLE stock (sku text PRIMARY KEY, n int); \
         CREATE TABLE audit (at int, note text); \
         INSERT INTO audit SELECT g, 'a' || g FROM generate_series(1, 100) g; \
         INSERT INTO orders (item, qty) SELECT 'o' || g, g FROM generate_series(1, 300) g; \
         INSERT INTO stock SELECT 's' || g, g FROM generate_series(1, 50) g;",
    );
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits until the daemon `child` says WaitingForRollbackOrFinish.
fn wait_reversing(state: &Path, name: &str, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let doc = show(state, name);
        if doc["pid"].as_u64() == Some(u64::from(child.id()))
            && doc["substatus"] == "WaitingForRollbackOrFinish"
        {
            assert_eq!(doc["status"], "WaitingForUserAction");
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "daemon ended ({status}) before reversing: {doc}\n{}",
                read(log)
            );
        }
        assert!(
            Instant::now() < deadline,
            "not reversing: {doc}\n{}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Application writes on the new server.
fn target_writes(dst: &Cluster, db: &str, round: i32) {
    dst.psql(
        db,
        &format!(
            "INSERT INTO orders (item, qty) SELECT 'r{round}-' || g, g FROM generate_series(1, 200) g; \
             UPDATE orders SET qty = qty + {round} WHERE id % 7 = 0; \
             DELETE FROM orders WHERE id % 11 = {round}; \
             UPDATE stock SET n = n - 1 WHERE sku LIKE 's1%'; \
             INSERT INTO stock VALUES ('new{round}', {round}); \
             UPDATE audit SET note = note || '-r{round}' WHERE at % 5 = {round}; \
             DELETE FROM audit WHERE at % 13 = {round}; \
             INSERT INTO audit VALUES ({round}, 'new');"
        ),
    );
}

/// Waits until the source holds as many orders as the target.
fn wait_caught_up(src: &Cluster, dst: &Cluster, db: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let q = "SELECT count(*) || ':' || coalesce(sum(qty), 0) FROM orders";
    loop {
        let want = dst.psql(db, q);
        if src.psql(db, q) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the source did not catch up with the target ({want})\n{}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `pgmigrate ARGS --state-dir STATE`, which must succeed (the
/// daemon's `log` is shown if not); its output.
fn cli_ok(args: &[&str], state: &Path, log: &Path) -> std::process::Output {
    let out = cli(args, state);
    assert!(
        out.status.success(),
        "{}: {}{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        read(log)
    );
    out
}

/// `rollback --wait`, then the daemon exits 0.
fn roll_back(state: &Path, name: &str, child: &mut Child, log: &Path) {
    cli_ok(&["rollback", name, "--wait", "--timeout", "90"], state, log);
    let status = wait_exit(child, Duration::from_secs(30));
    assert!(status.success(), "daemon exit {status}\n{}", read(log));
}

fn cli(args: &[&str], state: &Path) -> std::process::Output {
    Command::new(pgmigrate_bin())
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("pgmigrate")
}

/// Starts a migration with reverse replication and cuts it over.
fn cut_over_reversing(
    src: &Cluster,
    dst: &Cluster,
    state: &Path,
    name: &str,
    by_cli: bool,
) -> (Child, std::path::PathBuf) {
    cut_over_reversing_with(src, dst, state, name, by_cli, "")
}

/// [`cut_over_reversing`] with `extra` top-level config lines.
fn cut_over_reversing_with(
    src: &Cluster,
    dst: &Cluster,
    state: &Path,
    name: &str,
    by_cli: bool,
    extra: &str,
) -> (Child, std::path::PathBuf) {
    setup(src, DB);
    let cfg = write_config(
        state,
        name,
        src,
        dst,
        &[DB],
        &format!("{extra}option = \"migrate\"\n[apply]\nworkers = 2\n[cutover]\nlock_source = true\nreverse_replication = true\n\
         [keyless]\nreplica_identity_full = [\"public.audit\"]\n"
        ),
    );
    let log = state.join("run.log");
    let mut child = start(&cfg, &log);
    wait_ready(state, name, &mut child, &log, Duration::from_secs(90));
    src.psql(
        DB,
        "INSERT INTO orders (item, qty) SELECT 'late' || g, 1 FROM generate_series(1, 100) g",
    );
    if by_cli {
        // `cutover --wait` returns once the cutover is done and the target
        // streams back: the application may switch then.
        let out = cli_ok(&["cutover", name, "--wait", "--timeout", "90"], state, &log);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("WaitingForRollbackOrFinish"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    } else {
        signal(&child, "-USR1");
    }
    wait_reversing(state, name, &mut child, &log);
    (child, cfg)
}

fn assert_nothing_left(src: &Cluster, dst: &Cluster) {
    // The keyless table's identity is back to DEFAULT on both servers.
    let identity = "SELECT relreplident FROM pg_class WHERE oid = 'audit'::regclass";
    assert_eq!(src.psql(DB, identity), "d", "source identity");
    assert_eq!(dst.psql(DB, identity), "d", "target identity");
    assert_eq!(
        dst.psql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0",
        "slot left on the target"
    );
    assert_eq!(dst.psql(DB, "SELECT count(*) FROM pg_publication"), "0");
    assert_eq!(src.psql(DB, "SELECT count(*) FROM pg_publication"), "0");
    assert_eq!(
        src.psql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
    assert_eq!(
        src.psql("postgres", "SELECT count(*) FROM pg_replication_origin"),
        "0",
        "origins left on the source"
    );
    assert_eq!(
        dst.psql("postgres", "SELECT count(*) FROM pg_replication_origin"),
        "0",
        "origins left on the target"
    );
}

#[test]
fn rollback_after_cutover_survives_kill9() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    let state = tmp_dir();
    let name = "rb-shop";
    let addr = free_port();
    let (mut child, cfg) = cut_over_reversing_with(
        &src,
        &dst,
        state.path(),
        name,
        false,
        &format!("metrics_listen = \"{addr}\"\n"),
    );
    let log = state.path().join("run.log");
    // Prometheus says so (published each second), and gives the reverse lag.
    let series = "pgmigrate_status{status=\"WaitingForUserAction\",substatus=\"WaitingForRollbackOrFinish\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut body = scrape(addr);
    while sample(&body, series) != Some(1.0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        body = scrape(addr);
    }
    assert_eq!(sample(&body, series), Some(1.0), "{body}");
    assert!(
        sample(&body, "pgmigrate_replication_lag_bytes{database=\"shop\"}").is_some(),
        "{body}"
    );
    assert_eq!(
        sample(&body, "pgmigrate_cutover_ready"),
        Some(0.0),
        "{body}"
    );
    // The source is read-only for the application (lock_source).
    assert!(src
        .try_psql(DB, "INSERT INTO stock VALUES ('x', 1)")
        .is_err());
    target_writes(&dst, DB, 1);
    wait_caught_up(&src, &dst, DB, &log);
    let doc = show(state.path(), name);
    assert!(doc["databases"][0]["lag_bytes"].is_u64(), "{doc}");

    // kill -9 while reversing, then more writes while it is down.
    kill9(child);
    target_writes(&dst, DB, 2);
    let log2 = state.path().join("run2.log");
    child = start(&cfg, &log2);
    wait_reversing(state.path(), name, &mut child, &log2);
    target_writes(&dst, DB, 3);

    roll_back(state.path(), name, &mut child, &log2);
    let doc = show(state.path(), name);
    assert_eq!(doc["status"], "RolledBack", "{doc}");
    assert_eq!(doc["substatus"], "RolledBack", "{doc}");
    assert_same(&src, &dst, DB);
    assert_nothing_left(&src, &dst);
    // Writable again, and its sequences continue after the target's rows.
    src.psql(DB, "INSERT INTO orders (item, qty) VALUES ('after', 1)");
    assert_eq!(
        src.psql(DB, "SELECT count(*) FROM orders WHERE item = 'after' AND id > (SELECT max(id) FROM orders WHERE item <> 'after')"),
        "1"
    );
    // Not reversing any more: refused.
    let out = cli(&["rollback", name], state.path());
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn finish_ends_reverse_replication() {
    let mut src = Cluster::start_default();
    let mut dst = Cluster::start_default();
    let state = tmp_dir();
    let name = "fin-shop";
    let (mut child, _cfg) = cut_over_reversing(&src, &dst, state.path(), name, true);
    let log = state.path().join("run.log");
    target_writes(&dst, DB, 1);
    wait_caught_up(&src, &dst, DB, &log);
    // Either server restarts while reversing: the stream comes back by
    // itself and applies every change once.
    dst.stop_immediate();
    dst.restart();
    target_writes(&dst, DB, 2);
    src.restart();
    target_writes(&dst, DB, 3);
    wait_caught_up(&src, &dst, DB, &log);
    // Sequences reach the source only with `rollback`.
    assert_same_except(&src, &dst, DB, &["sequences"]);
    cli_ok(
        &["finish", name, "--wait", "--timeout", "60"],
        state.path(),
        &log,
    );
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "daemon exit {status}\n{}", read(&log));
    assert_eq!(show(state.path(), name)["status"], "Succeeded");
    assert_nothing_left(&src, &dst);
    // The source stays locked: the target is the primary now.
    assert!(src
        .try_psql(DB, "INSERT INTO stock VALUES ('x', 1)")
        .is_err());
}

#[test]
fn cancel_while_reversing_drops_the_reverse_objects() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    let state = tmp_dir();
    let name = "cx-shop";
    let (mut child, _cfg) = cut_over_reversing(&src, &dst, state.path(), name, false);
    let log = state.path().join("run.log");
    target_writes(&dst, DB, 1);
    // DROP TARGET is refused: the target is the migrated database now.
    let out = cli(&["cancel", name, "--drop-target-databases"], state.path());
    assert_eq!(out.status.code(), Some(5), "{}", read(&log));
    cli_ok(&["cancel", name], state.path(), &log);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(show(state.path(), name)["status"], "Canceled");
    assert!(status.code().is_some(), "{}", read(&log));
    assert_nothing_left(&src, &dst);
    assert_eq!(dst.psql(DB, "SELECT count(*) > 0 FROM orders"), "t");
}

#[test]
fn schema_change_on_the_target_fails_clearly_and_resumes_once_mended() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    let state = tmp_dir();
    let name = "ddl-shop";
    let (mut child, cfg) = cut_over_reversing(&src, &dst, state.path(), name, false);
    let log = state.path().join("run.log");
    target_writes(&dst, DB, 1);
    wait_caught_up(&src, &dst, DB, &log);
    // Not carried back: the source has no such column.
    dst.psql(
        DB,
        "ALTER TABLE stock ADD COLUMN note text; \
         UPDATE stock SET note = 'x' WHERE sku = 's1'",
    );
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let doc = show(state.path(), name);
    assert_eq!(doc["status"], "Failed", "{doc}\n{}", read(&log));
    assert_eq!(doc["substatus"], "WaitingForRollbackOrFinish", "{doc}");
    let message = doc["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("note") && message.contains("stock"),
        "the message names the table and column: {message}"
    );
    assert!(!status.success(), "{}", read(&log));
    // The same change on the source, and `run` again goes on from there.
    src.psql(
        DB,
        "SET default_transaction_read_only = off; ALTER TABLE stock ADD COLUMN note text",
    );
    let log2 = state.path().join("run2.log");
    child = start(&cfg, &log2);
    wait_reversing(state.path(), name, &mut child, &log2);
    target_writes(&dst, DB, 2);
    wait_caught_up(&src, &dst, DB, &log2);
    roll_back(state.path(), name, &mut child, &log2);
    assert_eq!(src.psql(DB, "SELECT note FROM stock WHERE sku = 's1'"), "x");
    assert_same(&src, &dst, DB);
    assert_nothing_left(&src, &dst);
}

/// The way back crosses versions too: a PostgreSQL 18 target streams back
/// into a PostgreSQL 12 source (pgoutput v1 of the source is not involved:
/// the reverse stream reads the 18 server).
#[test]
fn rollback_from_18_into_12() {
    if !is_installed(12) || !is_installed(18) {
        eprintln!("skipped: PostgreSQL 12 or 18 not installed (scripts/install-deps --versions)");
        return;
    }
    let src = Cluster::builder().version(12).start();
    let dst = Cluster::builder().version(18).start();
    let state = tmp_dir();
    let name = "v12-back";
    let bin = format!("pg_bin_dir = \"{}\"\n", dump_bin_dir(12).display());
    let (mut child, _cfg) = cut_over_reversing_with(&src, &dst, state.path(), name, true, &bin);
    let log = state.path().join("run.log");
    target_writes(&dst, DB, 1);
    target_writes(&dst, DB, 2);
    wait_caught_up(&src, &dst, DB, &log);
    roll_back(state.path(), name, &mut child, &log);
    assert_same(&src, &dst, DB);
    assert_nothing_left(&src, &dst);
}
