//! Waiting for a running migration to catch up with its source, shared by
//! the tests that write on the source while the daemon streams.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::daemon::show;
use super::Cluster;

/// Waits until this very daemon (right after a restart, the state file
/// still holds what the killed one wrote last) waits for cutover and every
/// database satisfies `caught_up`, or panics with the daemon's log.
pub fn wait_streaming(
    state: &Path,
    name: &str,
    child: &mut Child,
    log: &Path,
    limit: Duration,
    caught_up: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "pgmigrate exited early ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        let doc = show(state, name);
        let dbs = doc["databases"].as_array().cloned().unwrap_or_default();
        if doc["pid"].as_u64() == Some(u64::from(child.id()))
            && doc["status"] == "WaitingForUserAction"
            && !dbs.is_empty()
            && dbs.iter().all(&caught_up)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not caught up in time: {doc}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A database of `pgmigrate show` with nothing left to receive.
pub fn no_lag(db: &Value) -> bool {
    db["lag_bytes"].as_u64() == Some(0)
}

/// Asserts that migration `name` is Failed with a message holding every
/// one of `parts` and naming, after "committed at ", a commit LSN close to
/// `lsn` (the WAL insert position the source reported for the failing
/// change: the write position may lag it by the unflushed WAL);
/// returns the message.
pub fn assert_failed_near(
    state: &Path,
    name: &str,
    src: &Cluster,
    db: &str,
    lsn: &str,
    parts: &[&str],
) -> String {
    let doc = show(state, name);
    assert_eq!(doc["status"], "Failed", "{doc}");
    let message = doc["message"].as_str().unwrap_or_default().to_string();
    for part in parts {
        assert!(message.contains(part), "{part:?} missing from {message:?}");
    }
    let reported = message
        .split("committed at ")
        .nth(1)
        .and_then(|r| r.split([' ', ':', ',']).next())
        .unwrap_or_default()
        .to_string();
    assert!(!reported.is_empty(), "{message}");
    let cmp = src.psql(
        db,
        &format!(
            "SELECT '{reported}'::pg_lsn <= '{lsn}'::pg_lsn + 4096 \
             AND '{reported}'::pg_lsn >= '{lsn}'::pg_lsn - 65536"
        ),
    );
    assert_eq!(cmp, "t", "reported {reported}, change at {lsn}: {message}");
    message
}
