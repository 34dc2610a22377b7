//! How failures end a migration, or do not: a change the target cannot
//! take because the source's schema moved on fails the migration at once
//! (not after minutes of retries), naming database, table, LSN and
//! SQLSTATE; an interruption (sessions terminated) is retried and the
//! stream goes on.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::daemon::start;
use common::streaming::{assert_failed_near, no_lag, wait_streaming};
use common::{tmp_dir, write_config, Cluster};

/// Waits until the migration streams with no lag, or panics with the log.
fn wait_caught_up(state: &Path, name: &str, child: &mut Child, log: &Path, limit: Duration) {
    wait_streaming(state, name, child, log, limit, no_lag);
}

/// A migration of database `shop` (table `orders`, ids 1 to 10) between
/// two fresh clusters, streaming and caught up.
struct Shop {
    src: Cluster,
    dst: Cluster,
    state: tempfile::TempDir,
    log: PathBuf,
    child: Child,
}

/// Starts the migration `name` of [`Shop`] (config additions `extra`) and
/// waits until it caught up.
fn shop_streaming(name: &str, extra: &str) -> Shop {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("shop");
    src.psql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, amount int); \
         INSERT INTO orders SELECT g, g FROM generate_series(1, 10) g;",
    );
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        name,
        &src,
        &dst,
        &["shop"],
        &format!("option = \"migrate\"\n{extra}"),
    );
    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    wait_caught_up(
        state.path(),
        name,
        &mut child,
        &log,
        Duration::from_secs(60),
    );
    Shop {
        src,
        dst,
        state,
        log,
        child,
    }
}

/// With `ddl = "ignore"`, DDL on the source (a column the target lacks)
/// makes every apply of the next insert fail with 42703: deterministic, so
/// the migration fails within a minute, its message naming database,
/// table, commit LSN and SQLSTATE, and the daemon exits 1.
#[test]
fn a_column_missing_on_the_target_fails_the_migration_at_once() {
    let Shop {
        src,
        dst: _dst,
        state,
        log,
        mut child,
    } = shop_streaming("ddl", "ddl = \"ignore\"\n");
    let lsn = src.psql(
        "shop",
        "ALTER TABLE orders ADD COLUMN note text; \
         INSERT INTO orders VALUES (11, 11, 'new') RETURNING pg_current_wal_insert_lsn()",
    );
    let started = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still running after 60 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let elapsed = started.elapsed();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{log_text}");
    let message = assert_failed_near(
        state.path(),
        "ddl",
        &src,
        "shop",
        &lsn,
        &[
            "database shop",
            "public.orders",
            "committed at ",
            "42703",
            "note",
            "gave up after 2 attempts",
        ],
    );
    // One retry only: the log says it was interrupted at most once.
    let interruptions = log_text.matches("stream interrupted").count();
    assert!(interruptions <= 1, "{interruptions} restarts: {log_text}");
    eprintln!(
        "a missing column failed the migration after {:.1} s: {message}",
        elapsed.as_secs_f64()
    );
}

/// An interruption is transient: the target's sessions terminated by an
/// administrator (57P01, FATAL, or the broken pipe seen first) are retried
/// with backoff, the stream
/// resumes from the origins, and the migration keeps running with the
/// rows the source wrote meanwhile on the target, none twice.
#[test]
fn terminated_target_sessions_are_retried_and_the_stream_resumes() {
    let Shop {
        src,
        dst,
        state,
        log,
        mut child,
    } = shop_streaming("admin", "");
    let terminated = dst.psql(
        "shop",
        "SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity \
         WHERE datname = 'shop' AND application_name = 'pgmigrate' AND pid <> pg_catalog.pg_backend_pid()",
    );
    assert_ne!(terminated, "0", "no apply session to terminate");
    src.psql(
        "shop",
        "INSERT INTO orders SELECT g, g FROM generate_series(11, 20) g",
    );
    wait_caught_up(
        state.path(),
        "admin",
        &mut child,
        &log,
        Duration::from_secs(60),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while dst.psql("shop", "SELECT count(*) FROM orders") != "20" {
        assert!(Instant::now() < deadline, "rows 11..20 never arrived");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(dst.psql("shop", "SELECT sum(amount) FROM orders"), "210");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    // The worker usually meets the closed socket (broken pipe) before it
    // reads the server's FATAL 57P01: either is an interruption.
    assert!(
        log_text.contains("stream interrupted") && log_text.contains("limit=20"),
        "the termination was not seen as an interruption: {log_text}"
    );
    assert!(child.try_wait().ok().flatten().is_none(), "{log_text}");
    common::daemon::stop(child);
}
