//! kill -9 during the cutover itself: at each recorded step (held open by
//! the daemon's test pause points) and at random moments. The restarted
//! daemon must finish the cutover — `Succeeded`, sequences set, slot,
//! publication and origins gone, data identical — and never fail or loop.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::daemon::{kill9, show, signal, start, start_with_env, wait_log, wait_ready};
use common::{tmp_dir, write_config, Cluster};

/// Waits for the restarted daemon to end. A kill that came before the
/// daemon accepted the signal leaves no cutover recorded: the operator
/// then asks again, as they would.
fn finish(state: &Path, name: &str, child: &mut Child, log: &Path) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut asked = false;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        let doc = show(state, name);
        if !asked
            && doc["pid"].as_u64() == Some(u64::from(child.id()))
            && doc["status"] == "WaitingForUserAction"
        {
            signal(child, "-USR1");
            asked = true;
        }
        assert!(
            Instant::now() < deadline,
            "restart did not end: {doc}\n{}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Restarts the killed daemon of `name` and waits for it to end: it must
/// end `Succeeded`. `log` is the killed run's, for the message.
fn restart_to_success(state: &Path, cfg: &Path, name: &str, log: &Path, when: &str) {
    let log2 = state.join("run2.log");
    let mut child = start(cfg, &log2);
    let status = finish(state, name, &mut child, &log2);
    let doc = show(state, name);
    assert!(
        status.success() && doc["status"] == "Succeeded",
        "restart after a kill {when} must finish: exit {status}, {doc}\nfirst run:\n{}\nrestart:\n{}",
        read(log),
        read(&log2)
    );
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// How the daemon is killed during its cutover.
enum Kill {
    /// At a named pause point.
    At(&'static str),
    /// This long after the cutover signal.
    After(Duration),
}

/// One migration of database `db`, killed during cutover as `kill`, then
/// restarted until it ends: it must have cut over completely.
fn cutover_survives(src: &Cluster, dst: &Cluster, db: &str, kill: Kill) {
    src.create_db(db);
    src.psql(
        db,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, item text); \
         INSERT INTO orders (item) SELECT 'o' || g FROM generate_series(1, 500) g;",
    );
    let state = tmp_dir();
    let name = format!("crash-{db}");
    let cfg = write_config(
        state.path(),
        &name,
        src,
        dst,
        &[db],
        "option = \"migrate\"\n[apply]\nworkers = 2\n",
    );
    let log = state.path().join("run.log");
    let mut child = match &kill {
        Kill::At(point) => start_with_env(
            &cfg,
            &log,
            &[
                ("PGMIGRATE_TEST_PAUSE_AT", point),
                ("PGMIGRATE_TEST_PAUSE_MS", "20000"),
            ],
        ),
        Kill::After(_) => start(&cfg, &log),
    };
    wait_ready(
        state.path(),
        &name,
        &mut child,
        &log,
        Duration::from_secs(90),
    );
    src.psql(
        db,
        "INSERT INTO orders (item) SELECT 'late' || g FROM generate_series(1, 300) g",
    );
    signal(&child, "-USR1");
    match &kill {
        Kill::At(point) => wait_log(&log, &format!("pausing at {point}"), 1, &mut child),
        Kill::After(d) => std::thread::sleep(*d),
    }
    kill9(child);
    restart_to_success(
        state.path(),
        &cfg,
        &name,
        &log,
        &format!("during cutover ({db})"),
    );
    assert_eq!(
        src.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_replication_slots WHERE database = '{db}'")
        ),
        "0",
        "{db}: slot left behind"
    );
    assert_eq!(src.psql(db, "SELECT count(*) FROM pg_publication"), "0");
    assert_eq!(
        dst.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE '%{}%'",
                name.replace('-', "_")
            )
        ),
        "0",
        "{db}: origins left behind"
    );
    common::assert_same(src, dst, db);
    dst.psql(db, "INSERT INTO orders (item) VALUES ('after cutover')");
    assert_eq!(
        dst.psql(db, "SELECT max(id) FROM orders"),
        "801",
        "{db}: sequence"
    );
}

#[test]
fn a_kill_at_any_step_of_the_cutover_is_finished_by_the_restart() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    let points = [
        "cutover-requested",
        "cutover-applied",
        "cutover-sequences",
        "cutover-slot-dropped",
        "cutover-origins-dropped",
    ];
    for (i, point) in points.iter().enumerate() {
        cutover_survives(&src, &dst, &format!("step{i}"), Kill::At(point));
    }
}

#[test]
fn a_kill_at_a_random_moment_of_the_cutover_is_finished_by_the_restart() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    // Spread over the cutover's first second, where its steps are: a
    // cheap pseudo-random sequence, different on every run.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7);
    for i in 0..4u32 {
        let ms = u64::from(seed.wrapping_mul(2_654_435_761).wrapping_add(i * 97) % 600);
        eprintln!("trial {i}: kill {ms} ms after the cutover signal");
        cutover_survives(
            &src,
            &dst,
            &format!("rand{i}"),
            Kill::After(Duration::from_millis(ms)),
        );
    }
}

/// A kill right before and right after the target database's CREATE
/// DATABASE: the restart knows the database is its own (recorded before
/// the CREATE), drops and recreates it instead of refusing it as an
/// operator's, and the migration succeeds.
#[test]
fn a_kill_around_create_database_is_resumed_not_refused() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    for (i, point) in ["target-database-recorded", "target-database-created"]
        .iter()
        .enumerate()
    {
        let db = format!("create{i}");
        src.create_db(&db);
        src.psql(
            &db,
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100);",
        );
        let state = tmp_dir();
        let name = format!("create-{i}");
        let cfg = write_config(
            state.path(),
            &name,
            &src,
            &dst,
            &[db.as_str()],
            "mode = \"offline\"\noption = \"migrate\"\n",
        );
        let log = state.path().join("run.log");
        let mut child = start_with_env(
            &cfg,
            &log,
            &[
                ("PGMIGRATE_TEST_PAUSE_AT", point),
                ("PGMIGRATE_TEST_PAUSE_MS", "20000"),
            ],
        );
        wait_log(&log, &format!("pausing at {point}"), 1, &mut child);
        kill9(child);
        restart_to_success(state.path(), &cfg, &name, &log, &format!("at {point}"));
        common::assert_same(&src, &dst, &db);
    }
}
