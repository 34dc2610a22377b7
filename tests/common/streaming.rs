//! Waiting for a running migration to catch up with its source, shared by
//! the tests that write on the source while the daemon streams.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::daemon::show;

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
