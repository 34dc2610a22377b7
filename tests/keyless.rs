//! `[keyless]` on real servers: an `insert_only` table streams its inserts
//! through an inserts-only publication while the source may still update
//! it; a `replica_identity_full` table streams updates and deletes and gets
//! its identity back after cutover and after a cancel (also by a process
//! that did not set it); `validate` says which mode applies and its risk.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::daemon::{kill9, show, start, wait_exit, wait_ready};
use common::{assert_same, pgmigrate_bin, tmp_dir, write_config, Cluster};

fn cli(args: &[&str], state: &Path) -> Output {
    Command::new(pgmigrate_bin())
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("pgmigrate")
}

fn validate_json(cfg: &Path) -> (i32, serde_json::Value) {
    let out = Command::new(pgmigrate_bin())
        .args(["validate", "--json", "--config"])
        .arg(cfg)
        .output()
        .expect("pgmigrate validate");
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), doc)
}

/// The validation entry `id` (the first), as (result, message).
fn entry(doc: &serde_json::Value, id: &str) -> (String, String) {
    let c = doc["validation"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no {id} in {doc}"));
    (
        c["result"].as_str().unwrap_or("").to_string(),
        format!("{} {}", c["message"], c["fix"]),
    )
}

fn cutover(state: &Path, name: &str) {
    let out = cli(&["cutover", name, "--wait", "--timeout", "90"], state);
    assert_eq!(
        out.status.code(),
        Some(0),
        "cutover: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn identity(c: &Cluster, db: &str, table: &str) -> String {
    c.psql(
        db,
        &format!("SELECT relreplident FROM pg_class WHERE oid = '{table}'::regclass"),
    )
}

#[test]
fn insert_only_streams_inserts_and_the_source_may_still_update() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("app");
    src.psql(
        "app",
        "CREATE TABLE items (id serial PRIMARY KEY, v text); \
         INSERT INTO items (v) SELECT 'i' || g FROM generate_series(1, 100) g; \
         CREATE TABLE history (at timestamptz NOT NULL DEFAULT now(), n int, note text); \
         INSERT INTO history (n) SELECT g FROM generate_series(1, 100) g;",
    );
    let state = tmp_dir();
    let keyless = "[keyless]\ninsert_only = [\"public.history\"]\n";
    // Without [keyless] validation fails and names the way out.
    let plain = write_config(state.path(), "ins-plain", &src, &dst, &["app"], "");
    let (code, doc) = validate_json(&plain);
    assert_eq!(code, 4, "{doc}");
    let (result, text) = entry(&doc, "replica_identity");
    assert_eq!(result, "Failed", "{text}");
    assert!(
        text.contains("public.history") && text.contains("[keyless] insert_only"),
        "{text}"
    );
    // With it: the mode and its risk, and nothing fails for it.
    let cfg = write_config(state.path(), "ins", &src, &dst, &["app"], keyless);
    let (_, doc) = validate_json(&cfg);
    assert_eq!(entry(&doc, "replica_identity").0, "Succeeded", "{doc}");
    let (result, text) = entry(&doc, "keyless_insert_only");
    assert_eq!(result, "Warning");
    assert!(
        text.contains("public.history") && text.contains("diverges silently"),
        "{text}"
    );

    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    wait_ready(
        state.path(),
        "ins",
        &mut child,
        &log,
        Duration::from_secs(120),
    );
    // A restarted daemon streams through both publications again.
    src.psql("app", "INSERT INTO history (n) VALUES (1000)");
    kill9(child);
    let mut child = start(&cfg, &log);
    wait_ready(
        state.path(),
        "ins",
        &mut child,
        &log,
        Duration::from_secs(120),
    );
    let pubs = src.psql(
        "app",
        "SELECT string_agg(pubname || ':' || pubinsert || pubupdate || pubdelete, ',' ORDER BY pubname) FROM pg_publication",
    );
    assert!(pubs.contains("_ins:truefalsefalse"), "{pubs}");
    // The source's own UPDATE and DELETE of the keyless table still work:
    // no publication that publishes them lists it.
    src.try_psql("app", "UPDATE history SET note = note WHERE n = 1")
        .expect("the source refused an UPDATE of an insert_only table");
    src.psql(
        "app",
        "INSERT INTO history (n) SELECT g FROM generate_series(101, 150) g; \
         UPDATE items SET v = 'changed' WHERE id <= 10; DELETE FROM items WHERE id > 95;",
    );
    cutover(state.path(), "ins");
    assert!(wait_exit(&mut child, Duration::from_secs(90)).success());
    assert_eq!(show(state.path(), "ins")["status"], "Succeeded");
    assert_eq!(dst.psql("app", "SELECT count(*) FROM history"), "151");
    assert_same(&src, &dst, "app");
    assert_eq!(src.psql("app", "SELECT count(*) FROM pg_publication"), "0");
    assert_eq!(dst.psql("app", "SELECT count(*) FROM pg_publication"), "0");
    assert_eq!(
        src.psql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
}

fn full_source() -> (Cluster, Cluster) {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("app");
    src.psql(
        "app",
        "CREATE TABLE items (id serial PRIMARY KEY, v text); \
         INSERT INTO items (v) SELECT 'i' || g FROM generate_series(1, 100) g; \
         CREATE TABLE nokey (a int, b text); \
         INSERT INTO nokey SELECT g, 'b' || g FROM generate_series(1, 200) g; \
         INSERT INTO nokey SELECT 1, 'b1'; \
         CREATE TABLE nothing (a int, b text); ALTER TABLE nothing REPLICA IDENTITY NOTHING; \
         INSERT INTO nothing SELECT g, 'n' FROM generate_series(1, 50) g; \
         CREATE TABLE parted (a int, b text) PARTITION BY RANGE (a); \
         CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100); \
         CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (100) TO (1000); \
         INSERT INTO parted SELECT g, 'p' FROM generate_series(1, 300) g;",
    );
    (src, dst)
}

const FULL: &str = "[keyless]\nreplica_identity_full = [\"public.*\"]\n";

#[test]
fn replica_identity_full_streams_updates_and_is_restored_at_cutover() {
    let (src, dst) = full_source();
    let state = tmp_dir();
    let cfg = write_config(state.path(), "full", &src, &dst, &["app"], FULL);
    let (code, doc) = validate_json(&cfg);
    let (result, text) = entry(&doc, "keyless_replica_identity_full");
    assert_eq!(result, "Warning", "{doc}");
    assert!(
        text.contains("public.nokey") && text.contains("public.nothing") && text.contains("WAL"),
        "{text}"
    );
    assert_eq!(entry(&doc, "replica_identity").0, "Succeeded", "{doc}");
    assert_ne!(code, 4, "{doc}");

    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    wait_ready(
        state.path(),
        "full",
        &mut child,
        &log,
        Duration::from_secs(120),
    );
    assert_eq!(identity(&src, "app", "nokey"), "f");
    assert_eq!(identity(&src, "app", "nothing"), "f");
    let file = std::fs::read(state.path().join("full").join("state.json")).expect("state.json");
    let doc: serde_json::Value = serde_json::from_slice(&file).expect("state.json is JSON");
    let changes = &doc["databases"][0]["resume"]["identity_changes"];
    // The partitions and, as they publish through it, their root.
    assert_eq!(changes.as_array().map(Vec::len), Some(5), "{changes}");
    assert_eq!(identity(&src, "app", "parted"), "f");
    // Updates and deletes of keyless rows, duplicates included.
    src.psql(
        "app",
        "UPDATE nokey SET b = 'changed' WHERE a % 10 = 0; DELETE FROM nokey WHERE a > 190; \
         DELETE FROM nokey WHERE ctid = (SELECT ctid FROM nokey WHERE a = 1 LIMIT 1); \
         UPDATE nothing SET b = 'x' WHERE a < 5; DELETE FROM nothing WHERE a > 45; \
         INSERT INTO nokey VALUES (500, 'late'); \
         UPDATE parted SET b = 'u' WHERE a % 7 = 0; DELETE FROM parted WHERE a > 290; \
         UPDATE parted SET a = a + 100 WHERE a = 50;",
    );
    cutover(state.path(), "full");
    assert!(wait_exit(&mut child, Duration::from_secs(90)).success());
    assert_eq!(show(state.path(), "full")["status"], "Succeeded");
    assert_eq!(dst.psql("app", "SELECT count(*) FROM nokey"), "191");
    assert_eq!(
        dst.psql("app", "SELECT count(*) FROM nokey WHERE b = 'changed'"),
        "19"
    );
    // Restored on both sides.
    for c in [&src, &dst] {
        assert_eq!(identity(c, "app", "nokey"), "d");
        assert_eq!(identity(c, "app", "nothing"), "n");
        assert_eq!(identity(c, "app", "parted"), "d");
        assert_eq!(identity(c, "app", "parted_2"), "d");
    }
    assert_eq!(
        dst.psql("app", "SELECT count(*) FROM parted WHERE b = 'u'"),
        "41"
    );
    assert_same(&src, &dst, "app");
}

#[test]
fn replica_identity_full_is_restored_by_cancel_after_a_kill() {
    let (src, dst) = full_source();
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "full-cancel",
        &src,
        &dst,
        &["app"],
        &format!("option = \"migrate\"\n{FULL}"),
    );
    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    wait_ready(
        state.path(),
        "full-cancel",
        &mut child,
        &log,
        Duration::from_secs(120),
    );
    src.psql("app", "UPDATE nokey SET b = 'c' WHERE a < 20");
    assert_eq!(identity(&src, "app", "nokey"), "f");
    // The process that set it is gone: state.json alone says what to restore.
    kill9(child);
    let out = cli(
        &["cancel", "full-cancel", "--drop-target-databases"],
        state.path(),
    );
    assert!(
        out.status.success(),
        "cancel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(show(state.path(), "full-cancel")["status"], "Canceled");
    assert_eq!(identity(&src, "app", "nokey"), "d");
    assert_eq!(identity(&src, "app", "nothing"), "n");
    assert_eq!(src.psql("app", "SELECT count(*) FROM pg_publication"), "0");
    assert_eq!(
        src.psql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
}
