//! Many objects (issue 15): a database of 1,000 small tables, a table of
//! 200 partitions, a 1,600-column table and 2,000 sequences migrates
//! identically, offline and online, within a generous bound. Small tables
//! share target transactions and their indexes go in batches, so a lost or
//! half-copied group would show here as a difference.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{self, show};
use common::{assert_same, pgmigrate_bin, tmp_dir, write_config, Cluster};

const TABLES: usize = 1000;
const PARTITIONS: usize = 200;
const SEQUENCES: usize = 2000;
/// Far above what the machine needs (≈ 30 s calm), far below a per-table
/// cost gone quadratic.
const BOUND: Duration = Duration::from_secs(400);

/// Builds the many-objects database, in transactions of 250 tables (their
/// locks must fit the lock table).
fn build(src: &Cluster) {
    src.create_db("many");
    for from in (1..=TABLES).step_by(250) {
        src.psql(
            "many",
            &format!(
                "DO $$ BEGIN FOR i IN {from}..{to} LOOP
                   EXECUTE format('CREATE TABLE t_%s (id int PRIMARY KEY, k int NOT NULL, v text)', i);
                   EXECUTE format('CREATE INDEX ON t_%s (k)', i);
                   EXECUTE format('INSERT INTO t_%s SELECT g, g %% 7, md5((g * %s)::text) FROM generate_series(1, 20) g', i, i);
                 END LOOP; END $$",
                to = from + 249
            ),
        );
    }
    // Inheritance trees among the small tables: a transaction's TRUNCATE
    // of a parent must not empty a child copied before it in the group.
    src.psql(
        "many",
        "CREATE TABLE inh_p (id int, v text); INSERT INTO inh_p VALUES (0, 'parent');
         CREATE TABLE inh_a () INHERITS (inh_p); INSERT INTO inh_a VALUES (1, 'a');
         CREATE TABLE inh_b (extra int) INHERITS (inh_p); INSERT INTO inh_b VALUES (2, 'b', 2);
         CREATE TABLE inh_z (v text, id int); INSERT INTO inh_z VALUES ('z', 3);
         ALTER TABLE inh_z INHERIT inh_p;",
    );
    // One table over the size that shares a transaction, between the small ones.
    src.psql(
        "many",
        "CREATE TABLE big (id int PRIMARY KEY, v text); \
         INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 20000) g",
    );
    src.psql(
        "many",
        &format!(
            "CREATE TABLE parts (k int NOT NULL, id int NOT NULL, v text, PRIMARY KEY (k, id)) PARTITION BY RANGE (k);
             CREATE INDEX ON parts (id);
             DO $$ BEGIN FOR i IN 0..{last} LOOP
               EXECUTE format('CREATE TABLE parts_%s PARTITION OF parts FOR VALUES FROM (%s) TO (%s)', i, i, i + 1);
             END LOOP; END $$;
             INSERT INTO parts SELECT k, g, md5(g::text) FROM generate_series(0, {last}) k, generate_series(1, 50) g",
            last = PARTITIONS - 1
        ),
    );
    let cols: Vec<String> = (1..1600).map(|i| format!("c{i} int")).collect();
    src.psql(
        "many",
        &format!(
            "CREATE TABLE wide (id int PRIMARY KEY, {}); \
             INSERT INTO wide (id, c1, c800, c1599) SELECT g, g, -g, g * 2 FROM generate_series(1, 500) g",
            cols.join(", ")
        ),
    );
    src.psql(
        "many",
        &format!(
            "DO $$ BEGIN FOR i IN 1..{SEQUENCES} LOOP
               EXECUTE format('CREATE SEQUENCE s_%s', i);
               PERFORM setval(format('s_%s', i), i * 3);
             END LOOP; END $$"
        ),
    );
    src.psql("many", "ANALYZE");
}

fn count(c: &Cluster, sql: &str) -> String {
    c.psql("many", sql)
}

/// What `assert_same` does not look at: the per-table sums and the
/// sequences' values all at once.
fn assert_counts(src: &Cluster, dst: &Cluster, with_sequences: bool) {
    let sums = "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace), \
                (SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'public'::regnamespace), \
                (SELECT sum(c1) + sum(c800) + sum(c1599) FROM wide), \
                (SELECT count(*) FROM parts)";
    assert_eq!(count(src, sums), count(dst, sums));
    if with_sequences {
        let seqs = "SELECT sum(last_value) FROM pg_sequences WHERE schemaname = 'public'";
        assert_eq!(count(src, seqs), count(dst, seqs));
    }
}

#[test]
fn offline_many_tables_partitions_columns_and_sequences_are_identical() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    build(&src);
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "many-off",
        &src,
        &dst,
        &["many"],
        "mode = \"offline\"\noption = \"migrate\"\n[copy]\njobs = 2\nindex_jobs = 2\n",
    );
    let started = Instant::now();
    let out = Command::new(pgmigrate_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("PGMIGRATE_LOG", "info")
        .output()
        .expect("run pgmigrate");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < BOUND, "offline took {took:?}");
    eprintln!("offline migration of {TABLES} tables + {PARTITIONS} partitions: {took:?}");
    assert_same(&src, &dst, "many");
    assert_counts(&src, &dst, true);
    let s = show(state.path(), "many-off");
    assert_eq!(s["status"], "Succeeded", "{s}");
}

#[test]
fn online_many_tables_reach_ready_identical_and_show_answers_fast() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    build(&src);
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "many-on",
        &src,
        &dst,
        &["many"],
        "option = \"migrate\"\n[copy]\njobs = 2\nindex_jobs = 2\n",
    );
    let log = state.path().join("daemon.log");
    let started = Instant::now();
    let mut child = daemon::start(&cfg, &log);
    daemon::wait_ready(state.path(), "many-on", &mut child, &log, BOUND);
    eprintln!(
        "online ready for {TABLES} tables + {PARTITIONS} partitions: {:?}",
        started.elapsed()
    );
    // A change made while streaming arrives in one of the many tables.
    src.psql("many", "UPDATE t_500 SET v = 'changed' WHERE id = 3");
    let asked = Instant::now();
    let s = show(state.path(), "many-on");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "show took {:?}",
        asked.elapsed()
    );
    assert_eq!(s["status"], "WaitingForUserAction", "{s}");
    let out = Command::new(pgmigrate_bin())
        .args([
            "cutover",
            "many-on",
            "--wait",
            "--timeout",
            "300",
            "--state-dir",
        ])
        .arg(state.path())
        .output()
        .expect("run cutover");
    assert!(
        out.status.success(),
        "cutover: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    daemon::wait_exit(&mut child, Duration::from_secs(60));
    assert_same(&src, &dst, "many");
    assert_counts(&src, &dst, true);
    assert_eq!(count(&dst, "SELECT v FROM t_500 WHERE id = 3"), "changed");
}
