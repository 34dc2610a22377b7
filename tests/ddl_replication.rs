//! DDL during streaming (`ddl = "replicate" | "fail"`), on real clusters
//! under pgbench load: every kind of schema change reaches the target in
//! commit order, among the rows of its transaction; a DDL the target
//! refuses fails the migration naming it; `fail` stops at the first one and
//! a switch to `replicate` carries it; a kill -9 right after a DDL loses and
//! repeats nothing. Each ends with identical data and `pg_dump
//! --schema-only`, and no event trigger left on the source.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use common::daemon::{kill9, show, signal, start, start_with_env, wait_exit, wait_log};
use common::streaming::{no_lag, wait_streaming};
use common::{pgmigrate_bin, tmp_dir, write_config, Cluster};

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// pgbench's tpcb-like load for `secs` seconds at a steady rate.
fn load(src: &Cluster, db: &str, secs: u32) -> std::thread::JoinHandle<String> {
    let (port, sock, db) = (src.port(), src.socket_dir().to_path_buf(), db.to_string());
    let bin = src.client_bin_dir().to_path_buf();
    std::thread::spawn(move || {
        let out = Command::new(bin.join("pgbench"))
            .args([
                "-n",
                "-c",
                "2",
                "-j",
                "1",
                "-R",
                "50",
                "-T",
                &secs.to_string(),
            ])
            .arg("-h")
            .arg(&sock)
            .args(["-p", &port.to_string(), "-U", "postgres", &db])
            .output()
            .expect("pgbench");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    })
}

fn source(src: &Cluster, db: &str) {
    src.create_db(db);
    src.pgbench(&["-i", "-q", "-s", "1", db]);
    src.psql(
        db,
        "CREATE TABLE items (id int PRIMARY KEY, name text); \
         INSERT INTO items SELECT g, 'i' || g FROM generate_series(1, 1000) g; \
         CREATE TABLE gone (id int PRIMARY KEY); INSERT INTO gone VALUES (1);",
    );
}

/// Two clusters, the source database, and the config of migration `name`
/// with `extra`.
struct Setup {
    src: Cluster,
    dst: Cluster,
    db: &'static str,
    state: tempfile::TempDir,
    name: &'static str,
    cfg: std::path::PathBuf,
    log: std::path::PathBuf,
}

fn setup(name: &'static str, extra: &str) -> Setup {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    let db = "app";
    source(&src, db);
    let state = tmp_dir();
    let cfg = write_config(state.path(), name, &src, &dst, &[db], extra);
    let log = state.path().join("run.log");
    Setup {
        src,
        dst,
        db,
        state,
        name,
        cfg,
        log,
    }
}

/// Starts the daemon and waits until it streams with nothing to apply.
fn start_caught_up(state: &tempfile::TempDir, name: &str, cfg: &Path, log: &Path) -> Child {
    let mut child = start(cfg, log);
    wait_streaming(
        state.path(),
        name,
        &mut child,
        log,
        Duration::from_secs(180),
        no_lag,
    );
    child
}

fn wait_caught_up(state: &Path, name: &str, child: &mut Child, log: &Path) {
    std::thread::sleep(Duration::from_millis(1500));
    wait_streaming(state, name, child, log, Duration::from_secs(180), no_lag);
}

/// Cuts over and checks the end state: identical rows and schema, nothing
/// of the capture left on the source.
fn cut_over_and_compare(
    src: &Cluster,
    dst: &Cluster,
    db: &str,
    state: &Path,
    name: &str,
    mut child: Child,
    log: &Path,
) {
    wait_caught_up(state, name, &mut child, log);
    signal(&child, "-USR1");
    let status = wait_exit(&mut child, Duration::from_secs(120));
    let doc = show(state, name);
    assert!(
        status.success() && doc["status"] == "Succeeded",
        "{doc}\n{}",
        read(log)
    );
    common::assert_same(src, dst, db);
    common::assert_same_schema(src, dst, db);
    assert_eq!(
        src.psql(db, "SELECT count(*) FROM pg_event_trigger"),
        "0",
        "event triggers left on the source"
    );
    assert_eq!(
        src.psql(
            db,
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pgmigrate%'"
        ),
        "0"
    );
}

#[test]
fn every_kind_of_ddl_under_load_reaches_the_target_in_order() {
    // Keyless pgbench_history goes inserts-only: the main publication
    // lists its tables, so created tables must join it.
    let Setup {
        src,
        dst,
        db,
        state,
        name,
        cfg,
        log,
    } = setup(
        "ddl-kinds",
        "option = \"migrate\"\nddl = \"replicate\"\n[keyless]\ndefault = \"insert_only\"\n",
    );
    let child = start_caught_up(&state, name, &cfg, &log);
    let writes = load(&src, db, 25);
    let steps = [
        // Column add with a default, used at once.
        "ALTER TABLE pgbench_accounts ADD COLUMN note text DEFAULT 'n'; \
         UPDATE pgbench_accounts SET note = 'x' WHERE aid < 50;",
        // A table created under load, filled, indexed concurrently.
        "CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), what text); \
         INSERT INTO events (what) SELECT 'e' || g FROM generate_series(1, 200) g;",
        "CREATE INDEX CONCURRENTLY events_what ON events (what);",
        // Rename and type change of a column, then of the table.
        "ALTER TABLE events RENAME COLUMN what TO kind; \
         ALTER TABLE events ALTER COLUMN kind TYPE varchar(40); \
         UPDATE events SET kind = 'k' WHERE id < 10;",
        "ALTER TABLE events RENAME TO journal; INSERT INTO journal (kind) VALUES ('renamed');",
        // Types, functions, views.
        "CREATE TYPE mood AS ENUM ('ok', 'bad');",
        "ALTER TYPE mood ADD VALUE 'meh';",
        "ALTER TABLE journal ADD COLUMN m mood; UPDATE journal SET m = 'meh' WHERE id < 5;",
        "CREATE FUNCTION plus1(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 + 1'; \
         CREATE VIEW journal_v AS SELECT id, plus1(id::int) AS next FROM journal;",
        // Partitions: create, attach, detach.
        "CREATE TABLE p (id int, k int, PRIMARY KEY (id, k)) PARTITION BY LIST (k); \
         CREATE TABLE p0 PARTITION OF p FOR VALUES IN (0); \
         CREATE TABLE p1 (id int NOT NULL, k int NOT NULL, PRIMARY KEY (id, k)); \
         INSERT INTO p VALUES (1, 0), (2, 0); INSERT INTO p1 VALUES (3, 1);",
        "ALTER TABLE p ATTACH PARTITION p1 FOR VALUES IN (1); INSERT INTO p VALUES (4, 1);",
        "ALTER TABLE p DETACH PARTITION p0; INSERT INTO p0 VALUES (5, 0);",
        // DDL inside a transaction, rows before and after it.
        "BEGIN; INSERT INTO items VALUES (5001, 'before'); \
         ALTER TABLE items ADD COLUMN qty int NOT NULL DEFAULT 7; \
         INSERT INTO items VALUES (5002, 'after', 9); UPDATE items SET qty = 1 WHERE id = 1; COMMIT;",
        // Several statements in one client message (psql's \;).
        "INSERT INTO items VALUES (5003, 'multi', 3) \\; ALTER TABLE items DROP COLUMN name \\; \
         UPDATE items SET qty = 2 WHERE id = 2 \\; ALTER TABLE items ADD COLUMN tag text",
        // A DO block of DDL alone; a drop.
        "DO $$ BEGIN EXECUTE 'ALTER TABLE journal ADD COLUMN extra int'; \
         EXECUTE 'CREATE INDEX journal_extra ON journal (extra)'; END $$;",
        "DROP TABLE gone; COMMENT ON TABLE journal IS 'was events';",
        "CREATE TABLE copied AS SELECT id, kind FROM journal WHERE id < 20;",
        // Temporary objects stay on the source.
        "CREATE TEMP TABLE scratch (a int); DROP TABLE scratch;",
    ];
    for sql in steps {
        src.psql(db, sql);
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = writes.join().expect("pgbench thread");
    assert!(
        out.contains("number of transactions actually processed"),
        "pgbench: {out}"
    );
    assert!(read(&log).contains("DDL applied"), "{}", read(&log));
    cut_over_and_compare(&src, &dst, db, state.path(), name, child, &log);
    assert_eq!(dst.psql(db, "SELECT count(*) FROM copied"), "19");
    assert_eq!(
        dst.psql(db, "SELECT obj_description('journal'::regclass)"),
        "was events"
    );
}

#[test]
fn a_ddl_the_target_refuses_fails_naming_it() {
    let Setup {
        src,
        dst,
        db,
        state,
        name,
        cfg,
        log,
    } = setup("ddl-refused", "option = \"migrate\"\n");
    let mut child = start_caught_up(&state, name, &cfg, &log);
    // Someone made the table on the target behind pgmigrate's back.
    dst.psql(db, "CREATE TABLE clash (id int)");
    src.psql(db, "CREATE TABLE clash (id int PRIMARY KEY, v text)");
    let status = wait_exit(&mut child, Duration::from_secs(120));
    assert!(!status.success());
    let doc = show(state.path(), name);
    let message = doc["databases"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(doc["status"], "Failed", "{doc}");
    assert!(
        message.contains("CREATE TABLE clash") && message.contains("already exists"),
        "{message}"
    );
    let _ = Command::new(pgmigrate_bin())
        .args(["cancel", name, "--state-dir"])
        .arg(state.path())
        .output();
    assert_eq!(src.psql(db, "SELECT count(*) FROM pg_event_trigger"), "0");
}

#[test]
fn ddl_fail_stops_at_the_first_command_and_replicate_then_carries_it() {
    let Setup {
        src,
        dst,
        db,
        state,
        name,
        cfg,
        log,
    } = setup(
        "ddl-fail",
        "ddl = \"fail\"\n[keyless]\ndefault = \"insert_only\"\n",
    );
    let validate = Command::new(pgmigrate_bin())
        .args(["validate", "--json", "--config"])
        .arg(&cfg)
        .output()
        .expect("validate");
    let text = String::from_utf8_lossy(&validate.stdout);
    assert!(
        text.contains("ddl_replication") && text.contains("ddl = \\\"fail\\\""),
        "{text}"
    );
    let mut child = start_caught_up(&state, name, &cfg, &log);
    src.psql(db, "INSERT INTO items VALUES (9001, 'kept'); ALTER TABLE items ADD COLUMN note text; UPDATE items SET note = 'n' WHERE id < 3;");
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(!status.success());
    let doc = show(state.path(), name);
    let message = doc["databases"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("ALTER TABLE items ADD COLUMN note text")
            && message.contains("ddl = \"replicate\""),
        "{doc}"
    );
    // The operator switches to replicate and runs again: it resumes there.
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, text.replace("ddl = \"fail\"", "ddl = \"replicate\"")).expect("config");
    let log2 = state.path().join("run2.log");
    let child = start(&cfg, &log2);
    cut_over_and_compare(&src, &dst, db, state.path(), name, child, &log2);
}

#[test]
fn kill9_right_after_a_ddl_applies_it_once() {
    let Setup {
        src,
        dst,
        db,
        state,
        name,
        cfg,
        log,
    } = setup("ddl-kill", "option = \"migrate\"\n");
    let mut child = start_caught_up(&state, name, &cfg, &log);
    let writes = load(&src, db, 20);
    std::thread::sleep(Duration::from_secs(2));
    src.psql(db, "ALTER TABLE pgbench_branches ADD COLUMN region int DEFAULT 1; UPDATE pgbench_branches SET region = 2;");
    wait_log(&log, "DDL applied", 1, &mut child);
    kill9(child);
    // Published FOR ALL TABLES, a CREATE TABLE AS streams its rows too:
    // the replay fills the table, and those are dropped.
    src.psql(
        db,
        "CREATE TABLE after_kill (id int PRIMARY KEY); INSERT INTO after_kill VALUES (1); \
         CREATE TABLE snap AS SELECT bid, bbalance FROM pgbench_branches;",
    );
    let log2 = state.path().join("run2.log");
    let mut child = start(&cfg, &log2);
    wait_log(&log2, "DDL applied", 1, &mut child);
    let out = writes.join().expect("pgbench thread");
    assert!(
        out.contains("number of transactions actually processed"),
        "pgbench: {out}"
    );
    cut_over_and_compare(&src, &dst, db, state.path(), name, child, &log2);
}

#[test]
fn ddl_ignore_creates_no_trigger_and_show_warns() {
    let Setup {
        src,
        dst: _dst,
        db,
        state,
        name,
        cfg,
        log,
    } = setup("ddl-ignore", "option = \"migrate\"\nddl = \"ignore\"\n");
    let child = start_caught_up(&state, name, &cfg, &log);
    let doc = show(state.path(), name);
    let message = doc["databases"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("ddl = \"ignore\""), "{doc}");
    assert_eq!(src.psql(db, "SELECT count(*) FROM pg_event_trigger"), "0");
    kill9(child);
    let out = Command::new(pgmigrate_bin())
        .args(["cancel", name, "--state-dir"])
        .arg(state.path())
        .output()
        .expect("cancel");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ddl_committed_during_the_copy_is_applied_when_the_stream_starts() {
    let Setup {
        src,
        dst,
        db,
        state,
        name,
        cfg,
        log,
    } = setup(
        "ddl-during-copy",
        "option = \"migrate\"\n[copy]\njobs = 1\n",
    );
    // Every copy transaction pauses after its commit: DDL lands after the
    // snapshot, while the copy still runs (a table being copied makes it
    // wait for its lock, as with pg_dump).
    let mut child = start_with_env(
        &cfg,
        &log,
        &[
            ("PGMIGRATE_TEST_PAUSE_AT", "copy-committed"),
            ("PGMIGRATE_TEST_PAUSE_MS", "1500"),
        ],
    );
    wait_log(&log, "pausing at copy-committed", 1, &mut child);
    src.psql(
        db,
        "CREATE TABLE made_during_copy (id int PRIMARY KEY, v text); \
         INSERT INTO made_during_copy SELECT g, 'v' FROM generate_series(1, 100) g; \
         ALTER TABLE items ADD COLUMN during_copy int DEFAULT 3; \
         UPDATE items SET during_copy = 4 WHERE id < 10;",
    );
    assert!(
        !read(&log).contains("streaming changes"),
        "the DDL was meant to land during the copy: {}",
        read(&log)
    );
    cut_over_and_compare(&src, &dst, db, state.path(), name, child, &log);
    assert_eq!(dst.psql(db, "SELECT count(*) FROM made_during_copy"), "100");
}
