//! Offline migration end to end on real clusters: two databases (pgbench
//! data and a schema of awkward cases) copied, checked table by table; and
//! each way it can fail ends in `Failed` with the cause and no slot left.

mod common;

use std::process::{Command, Output};

use common::daemon::show;
use common::{assert_same, pgmigrate_bin, tmp_dir, write_config, Cluster};

const AWKWARD: &str = include_str!("sql/awkward.sql");

fn pgmigrate(args: &[&str], config: &std::path::Path) -> Output {
    Command::new(pgmigrate_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("PGMIGRATE_LOG", "info")
        .output()
        .expect("run pgmigrate")
}

fn slots(c: &Cluster) -> String {
    c.psql(
        "postgres",
        "SELECT string_agg(slot_name, ',') FROM pg_replication_slots",
    )
}

#[test]
fn offline_migrates_two_databases_identically() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("bench");
    src.pgbench(&["-i", "-s", "2", "-q", "bench"]);
    src.create_db("awkward db");
    src.psql("awkward db", AWKWARD);
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "offline-1",
        &src,
        &dst,
        &["bench", "awkward db"],
        // A small split size makes pgbench_accounts go in ctid ranges.
        "mode = \"offline\"\noption = \"migrate\"\n[copy]\njobs = 3\nindex_jobs = 2\nsplit_tables_larger_than = \"4MB\"\n",
    );
    let out = pgmigrate(&["run"], &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed: {stderr}");

    assert_same(&src, &dst, "bench");
    assert_same(&src, &dst, "awkward db");
    let verify = pgmigrate(&["verify"], &cfg);
    assert!(
        verify.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    // verify must see a difference the independent check also sees.
    dst.psql(
        "bench",
        "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 7",
    );
    assert_eq!(pgmigrate(&["verify"], &cfg).status.code(), Some(6));
    dst.psql(
        "bench",
        "UPDATE pgbench_accounts SET abalance = abalance - 1 WHERE aid = 7",
    );
    // Generated columns are recomputed, identity columns keep going.
    assert_eq!(
        dst.psql(
            "awkward db",
            "SELECT count(*) FROM typed WHERE doubled = id * 2"
        ),
        src.psql("awkward db", "SELECT count(*) FROM typed")
    );
    dst.psql(
        "awkward db",
        "INSERT INTO \"Ünïcode schema\".\"Tâble \"\"quoted\"\"\" (note) VALUES ('new')",
    );
    assert_eq!(
        dst.psql(
            "awkward db",
            "SELECT max(id) FROM \"Ünïcode schema\".\"Tâble \"\"quoted\"\"\""
        ),
        "501"
    );
    // The same owner on the target.
    assert_eq!(
        dst.psql(
            "awkward db",
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'owned_t'"
        ),
        "app_owner"
    );
    assert_eq!(slots(&src), "", "the slot must be gone");

    let doc = show(state.path(), "offline-1");
    assert_eq!(doc["status"], "Succeeded");
    assert_eq!(doc["substatus"], "Completed");
    let dbs = doc["databases"].as_array().expect("databases");
    assert_eq!(dbs.len(), 2);
    for d in dbs {
        assert_eq!(d["phase"], "Done");
        assert!(d["rows_copied"].as_u64().unwrap_or(0) > 0);
        assert_eq!(d["full_load_errored_tables"], 0);
    }
    assert!(stderr.contains("snapshot copy done"), "{stderr}");

    // A second run of a finished migration does nothing and succeeds.
    let again = pgmigrate(&["run"], &cfg);
    assert!(again.status.success());
}

#[test]
fn overwrite_target_replaces_an_existing_database() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("app");
    src.psql("app", "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g;");
    dst.create_db("app");
    dst.psql("app", "CREATE TABLE stale (x int)");
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "overwrite",
        &src,
        &dst,
        &["app"],
        "mode = \"offline\"\noption = \"migrate\"\noverwrite_target = true\n",
    );
    let out = pgmigrate(&["run"], &cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(&src, &dst, "app");
    assert_eq!(
        dst.psql(
            "app",
            "SELECT count(*) FROM pg_class WHERE relname = 'stale'"
        ),
        "0"
    );
}

#[test]
fn a_target_that_is_the_source_is_never_dropped() {
    let src = Cluster::start_default();
    src.create_db("victimdb");
    src.psql(
        "victimdb",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100);",
    );
    let state = tmp_dir();
    // Validation skipped on purpose: the interlock before any DROP must hold
    // on its own.
    let cfg = write_config(
        state.path(),
        "same-server",
        &src,
        &src,
        &["victimdb"],
        "mode = \"offline\"\noption = \"migrate\"\noverwrite_target = true\n",
    );
    let out = pgmigrate(&["run"], &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("is the source server"), "{stderr}");
    assert_eq!(src.psql("victimdb", "SELECT count(*) FROM t"), "100");
}

#[test]
fn overwrite_target_spares_a_database_another_migration_uses() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("app");
    src.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    dst.create_db("app");
    dst.psql(
        "app",
        "SELECT pg_create_logical_replication_slot('other_migration', 'pgoutput')",
    );
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "spare",
        &src,
        &dst,
        &["app"],
        "mode = \"offline\"\noption = \"migrate\"\noverwrite_target = true\n",
    );
    let out = pgmigrate(&["run"], &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("other_migration"), "{stderr}");
    assert_eq!(
        dst.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'app'"
        ),
        "1"
    );
    dst.psql(
        "postgres",
        "SELECT pg_drop_replication_slot('other_migration')",
    );
    // Origins are cluster-wide: their names carry the OID of the database
    // a (now stopped) migration applies into.
    let oid = dst.psql(
        "postgres",
        "SELECT oid FROM pg_database WHERE datname = 'app'",
    );
    let origin = format!("pgmigrate_stopped_77_d{oid}_w0");
    dst.psql(
        "postgres",
        &format!("SELECT pg_replication_origin_create('{origin}')"),
    );
    let out = pgmigrate(&["run"], &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&origin), "{stderr}");
    assert_eq!(
        dst.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'app'"
        ),
        "1"
    );
    dst.psql(
        "postgres",
        &format!("SELECT pg_replication_origin_drop('{origin}')"),
    );
}

#[test]
fn failures_name_their_cause_and_leave_no_slot() {
    let src = Cluster::builder()
        .hba_line("host all secure_user 127.0.0.1/32 scram-sha-256")
        .start();
    let dst = Cluster::start_default();
    src.psql(
        "postgres",
        "CREATE ROLE secure_user LOGIN SUPERUSER REPLICATION PASSWORD 'right one'",
    );
    src.create_db("app");
    src.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100);",
    );
    dst.create_db("taken");
    src.create_db("taken");
    let state = tmp_dir();
    let pw_file = state.path().join("pw");
    std::fs::write(&pw_file, "wrong one\n").expect("password file");
    let offline = "mode = \"offline\"\noption = \"migrate\"\n";

    let cases: Vec<(&str, Vec<&str>, String, &str)> = vec![
        (
            "wrong-password",
            vec!["app"],
            format!(
                "{offline}[source]\nhost = \"127.0.0.1\"\nuser = \"secure_user\"\npassword_file = \"{}\"\n",
                pw_file.display()
            ),
            "password authentication failed",
        ),
        ("unreachable", vec!["app"], format!("{offline}[source]\nhost = \"127.0.0.1\"\nport = 1\n"), "cannot connect"),
        ("missing-db", vec!["no_such_db"], offline.to_string(), "does not exist on the source"),
        ("target-exists", vec!["taken"], offline.to_string(), "already exists on the target"),
    ];
    for (name, dbs, extra, expected) in cases {
        let cfg = write_config(state.path(), name, &src, &dst, &dbs, &extra);
        let out = pgmigrate(&["run"], &cfg);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{name}: expected {expected:?} in {stderr}"
        );
        let doc = show(state.path(), name);
        assert_eq!(doc["status"], "Failed", "{name}");
        let msg = doc["message"].as_str().unwrap_or("");
        assert!(msg.contains(expected), "{name}: state message {msg:?}");
        assert_eq!(slots(&src), "", "{name}: a slot was left on the source");
    }
    // The existing target database was not touched.
    assert_eq!(
        dst.psql("taken", "SELECT count(*) FROM pg_class WHERE relname = 't'"),
        "0"
    );

    // A config error is exit 2 and names the key.
    let bad = state.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\ndatabases = [\"a\"]\nbogus_key = 1\n[source]\nhost = \"h\"\n[target]\nhost = \"h\"\n").expect("write");
    let out = pgmigrate(&["run"], &bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus_key"));
}

/// A post-data entry that fails on the target (a materialized view whose
/// refresh reads a setting only the source has) fails the migration naming
/// the entry; once the cause is fixed, `run` again resumes there — without
/// copying the rows again — and completes the foreign key, its comment,
/// sequences and large objects.
#[test]
fn a_failed_post_data_entry_is_named_and_run_again_resumes_there() {
    let src = Cluster::builder().conf("pgmigrate.flag", "'1'").start();
    let dst = Cluster::start_default();
    src.create_db("app");
    src.psql(
        "app",
        "CREATE TABLE p (id int PRIMARY KEY);\
         CREATE TABLE c (id serial PRIMARY KEY, p int CONSTRAINT c_p_fk REFERENCES p);\
         COMMENT ON CONSTRAINT c_p_fk ON c IS 'the parent';\
         INSERT INTO p SELECT generate_series(1, 100);\
         INSERT INTO c (p) SELECT generate_series(1, 100);\
         CREATE MATERIALIZED VIEW mv AS SELECT 1 AS x WHERE current_setting('pgmigrate.flag') = '1';\
         SELECT lo_from_bytea(0, 'large object contents');",
    );
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "resume-post",
        &src,
        &dst,
        &["app"],
        "mode = \"offline\"\noption = \"migrate\"\n[copy]\nindex_jobs = 2\n",
    );
    let out = pgmigrate(&["run"], &cfg);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = show(state.path(), "resume-post");
    assert_eq!(doc["status"], "Failed");
    let message = doc["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("MATERIALIZED VIEW DATA public mv") && message.contains("pgmigrate.flag"),
        "the error must name the entry and the SQL error: {message}"
    );

    dst.psql("postgres", "ALTER DATABASE app SET pgmigrate.flag = '1'");
    let again = pgmigrate(&["run"], &cfg);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "resumed run failed: {stderr}");
    assert!(stderr.contains("resuming post-data"), "{stderr}");
    assert!(
        !stderr.contains("copying data"),
        "rows must not be copied again: {stderr}"
    );
    assert_same(&src, &dst, "app");
    assert_eq!(
        dst.psql("app", "SELECT obj_description(oid, 'pg_constraint') FROM pg_constraint WHERE conname = 'c_p_fk'"),
        "the parent"
    );
    assert_eq!(dst.psql("app", "SELECT x FROM mv"), "1");
    assert_eq!(show(state.path(), "resume-post")["status"], "Succeeded");
}
