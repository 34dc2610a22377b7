//! A copy that survives anything: kill -9 at random points of the data
//! phase under writes (inside a split table, between a unit's journal line
//! and its commit, during post-data), a server restart during the copy.
//! Each time the restarted copy keeps what was done (the log says how much),
//! redoes at most the units in flight, and the end state is identical.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::daemon::{kill9, show, signal, start, start_with_env, wait_exit, wait_log};
use common::streaming::{no_lag, wait_streaming};
use common::{tmp_dir, write_config, Cluster};

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Starts the daemon pausing `ms` at every `point` and returns once it has
/// paused there `times` times.
fn start_paused(cfg: &Path, log: &Path, point: &str, ms: u32, times: usize) -> Child {
    let ms = ms.to_string();
    let mut child = start_with_env(
        cfg,
        log,
        &[
            ("PGMIGRATE_TEST_PAUSE_AT", point),
            ("PGMIGRATE_TEST_PAUSE_MS", &ms),
        ],
    );
    wait_log(log, &format!("pausing at {point}"), times, &mut child);
    child
}

/// Sixteen tables of 20,000 rows and one of 200,000 rows that the config
/// splits into ctid ranges; a partitioned table of four partitions.
fn make_source(src: &Cluster, db: &str) {
    src.create_db(db);
    let mut sql = String::new();
    for i in 0..16 {
        sql.push_str(&format!(
            "CREATE TABLE t{i} (id int PRIMARY KEY, v int, pad text); \
             INSERT INTO t{i} SELECT g, 0, repeat('x', 100) FROM generate_series(1, 20000) g; \
             CREATE INDEX ON t{i} (v);"
        ));
    }
    sql.push_str(
        "CREATE TABLE big (id int PRIMARY KEY, v int, pad text); \
         INSERT INTO big SELECT g, 0, repeat('y', 100) FROM generate_series(1, 200000) g; \
         CREATE TABLE parted (id int, k int, v int, PRIMARY KEY (k, id)) PARTITION BY LIST (k); \
         CREATE TABLE parted_0 PARTITION OF parted FOR VALUES IN (0); \
         CREATE TABLE parted_1 PARTITION OF parted FOR VALUES IN (1); \
         CREATE TABLE parted_2 PARTITION OF parted FOR VALUES IN (2); \
         CREATE TABLE parted_3 PARTITION OF parted FOR VALUES IN (3); \
         INSERT INTO parted SELECT g, g % 4, 0 FROM generate_series(1, 40000) g; \
         CREATE SEQUENCE s; SELECT setval('s', 77); CREATE SEQUENCE ids START 10000000;",
    );
    src.psql(db, &sql);
}

/// Writes to every kind of table (updates that move rows between pages,
/// inserts, deletes, a partition key change) for `secs` seconds.
fn writer(src: &Cluster, db: &str, secs: u32) -> std::thread::JoinHandle<String> {
    let script = tmp_dir();
    let path = script.path().join("writes.sql");
    std::fs::write(
        &path,
        "\\set i random(1, 20000)\n\
         UPDATE t3 SET v = v + 1, pad = pad || 'z' WHERE id = :i;\n\
         INSERT INTO t5 SELECT nextval('ids'), 1, 'new';\n\
         DELETE FROM t7 WHERE id = :i;\n\
         UPDATE big SET v = v + 1, pad = pad || 'w' WHERE id = :i * 10;\n\
         INSERT INTO big SELECT nextval('ids'), 1, 'new';\n\
         UPDATE parted SET k = (k + 1) % 4 WHERE id = :i;\n\
         SELECT nextval('s');\n",
    )
    .expect("pgbench script");
    let (port, sock, db) = (src.port(), src.socket_dir().to_path_buf(), db.to_string());
    std::thread::spawn(move || {
        let bin = common::newest_client_bin_dir();
        let out = std::process::Command::new(bin.join("pgbench"))
            .args([
                "-n",
                "-c",
                "2",
                "-j",
                "1",
                "-R",
                "40",
                "-T",
                &secs.to_string(),
                "-f",
            ])
            .arg(&path)
            .arg("-h")
            .arg(&sock)
            .args(["-p", &port.to_string(), "-U", "postgres", &db])
            .output()
            .expect("pgbench");
        drop(script);
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

/// The config every case uses: two jobs, `big` split into ranges.
fn config(
    state: &Path,
    name: &str,
    src: &Cluster,
    dst: &Cluster,
    db: &str,
    mode: &str,
) -> std::path::PathBuf {
    write_config(
        state,
        name,
        src,
        dst,
        &[db],
        &format!(
            "mode = \"{mode}\"\noption = \"migrate\"\n[copy]\njobs = 2\nsplit_tables_larger_than = \"4MB\"\n"
        ),
    )
}

/// Restarts the daemon, lets it copy and catch up, cuts over and checks
/// that the target is identical and nothing is left behind.
fn finish_online(
    src: &Cluster,
    dst: &Cluster,
    db: &str,
    state: &Path,
    cfg: &Path,
    name: &str,
    w: std::thread::JoinHandle<String>,
) -> String {
    let log2 = state.join("run2.log");
    let mut child = start(cfg, &log2);
    wait_streaming(
        state,
        name,
        &mut child,
        &log2,
        Duration::from_secs(240),
        |_| true,
    );
    let writes = w.join().expect("writer");
    assert!(
        writes.contains("number of transactions actually processed"),
        "pgbench: {writes}"
    );
    wait_streaming(
        state,
        name,
        &mut child,
        &log2,
        Duration::from_secs(120),
        no_lag,
    );
    signal(&child, "-USR1");
    let status = wait_exit(&mut child, Duration::from_secs(120));
    let doc = show(state, name);
    assert!(
        status.success() && doc["status"] == "Succeeded",
        "{doc}\n{}",
        read(&log2)
    );
    common::assert_same(src, dst, db);
    assert_eq!(
        src.psql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
    assert_eq!(
        dst.psql("postgres", "SELECT count(*) FROM pg_replication_origin"),
        "0"
    );
    read(&log2)
}

/// The "kept=N" of the resumed copy's log line.
fn kept(log: &str) -> usize {
    log.lines()
        .find(|l| l.contains("resuming the copy under a new snapshot"))
        .and_then(|l| l.split("kept=").nth(1))
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the restart did not resume the copy:\n{log}"))
}

/// Kills at a pause point after some commits (with writes going on), then
/// restarts: the copy resumes with the committed tables kept.
/// Units commit largest first: `big`'s seven ranges, then the 16 tables,
/// then the partitions. A kill inside `big` keeps nothing (its ranges
/// must come from one snapshot); later kills keep the tables committed
/// but the two in flight.
fn kill_at_commit_and_resume(point: &str, commits_before_kill: usize, min_kept: usize, db: &str) {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    make_source(&src, db);
    let state = tmp_dir();
    let name = format!("resume-{}", db.replace('_', "-"));
    let cfg = config(state.path(), &name, &src, &dst, db, "online");
    let w = writer(&src, db, 20);
    let log = state.path().join("run.log");
    let child = start_paused(&cfg, &log, point, 400, commits_before_kill);
    kill9(child);
    let log2 = finish_online(&src, &dst, db, state.path(), &cfg, &name, w);
    let kept = kept(&log2);
    assert!(
        kept >= min_kept,
        "kept {kept} tables after {commits_before_kill} commits:\n{log2}"
    );
}

#[test]
fn a_kill_after_commits_resumes_keeping_the_committed_tables() {
    kill_at_commit_and_resume("copy-committed", 14, 4, "after_commit");
}

#[test]
fn a_kill_between_journal_and_commit_redoes_only_that_unit() {
    kill_at_commit_and_resume("copy-before-commit", 12, 2, "before_commit");
}

#[test]
fn a_kill_inside_a_split_table_copies_that_table_again_whole() {
    kill_at_commit_and_resume("copy-committed", 3, 0, "inside_split");
}

/// Kills at random moments of the copy, several times in a row, with
/// writes going on; the restarts resume and the result is identical.
#[test]
fn kills_at_random_moments_of_the_copy_resume_to_an_identical_target() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    let db = "random_kills";
    make_source(&src, db);
    let state = tmp_dir();
    let name = "resume-random";
    let cfg = config(state.path(), name, &src, &dst, db, "online");
    let w = writer(&src, db, 20);
    let log = state.path().join("run.log");
    // Seeded by the clock: each run of the suite kills elsewhere.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7);
    for round in 0..3u32 {
        let child = start(&cfg, &log);
        let ms = 800 + u64::from((seed >> (round * 8)) % 1500);
        std::thread::sleep(Duration::from_millis(ms));
        kill9(child);
    }
    finish_online(&src, &dst, db, state.path(), &cfg, name, w);
}

/// Offline: a kill in the middle of the data phase resumes it.
#[test]
fn an_offline_copy_killed_midway_resumes() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    let db = "offline_resume";
    make_source(&src, db);
    let state = tmp_dir();
    let name = "resume-offline";
    let cfg = config(state.path(), name, &src, &dst, db, "offline");
    let log = state.path().join("run.log");
    let child = start_paused(&cfg, &log, "copy-committed", 400, 12);
    kill9(child);
    let log2 = state.path().join("run2.log");
    let mut child = start(&cfg, &log2);
    let status = wait_exit(&mut child, Duration::from_secs(240));
    let doc = show(state.path(), name);
    assert!(
        status.success() && doc["status"] == "Succeeded",
        "{doc}\n{}",
        read(&log2)
    );
    assert!(kept(&read(&log2)) >= 3, "{}", read(&log2));
    // The counters go on from what the journal says is committed, not
    // from the killed run's: they end at the real total, 16 × 20,000 +
    // 200,000 + 40,000 rows.
    assert_eq!(doc["databases"][0]["rows_copied"], 560_000, "{doc}");
    common::assert_same(&src, &dst, db);
    assert_eq!(
        dst.psql("postgres", "SELECT count(*) FROM pg_replication_origin"),
        "0"
    );
}

/// The target restarts in the middle of the copy: the same daemon resumes
/// by itself after a pause, keeping what was committed.
#[test]
fn a_target_restart_during_the_copy_is_resumed_by_the_running_daemon() {
    let src = Cluster::start_default();
    let mut dst = Cluster::start_default();
    let db = "target_restart";
    make_source(&src, db);
    let state = tmp_dir();
    let name = "resume-restart";
    let cfg = config(state.path(), name, &src, &dst, db, "online");
    let log = state.path().join("run.log");
    let mut child = start_paused(&cfg, &log, "copy-committed", 300, 11);
    dst.restart();
    wait_streaming(
        state.path(),
        name,
        &mut child,
        &log,
        Duration::from_secs(300),
        no_lag,
    );
    let text = read(&log);
    assert!(
        text.contains("copy interrupted, resuming after a pause"),
        "{text}"
    );
    assert!(kept(&text) >= 2, "{text}");
    signal(&child, "-USR1");
    let status = wait_exit(&mut child, Duration::from_secs(120));
    assert!(status.success(), "{}", read(&log));
    common::assert_same(&src, &dst, db);
}
