//! Driving `pgmigrate run` as a daemon from tests: start it, read its
//! state, stop it gracefully or with kill -9, and run `verify`.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::pgmigrate_bin;

/// Starts `pgmigrate run --config <config>` with its log (stderr) in `log`.
pub fn start(config: &Path, log: &Path) -> Child {
    start_with_env(config, log, &[])
}

/// [`start`] with extra environment variables (e.g. the crash tests'
/// pause points).
pub fn start_with_env(config: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    Command::new(pgmigrate_bin())
        .args(["run", "--config"])
        .arg(config)
        .env("PGMIGRATE_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("start pgmigrate run")
}

/// `pgmigrate show NAME --json` (console first, state.json otherwise);
/// `Null` when there is nothing to show yet.
pub fn show(state: &Path, name: &str) -> serde_json::Value {
    let out = Command::new(pgmigrate_bin())
        .args(["show", name, "--json", "--state-dir"])
        .arg(state)
        .output()
        .expect("run pgmigrate show");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Waits for the daemon to exit, panicking after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        assert!(Instant::now() < deadline, "pgmigrate did not exit in time");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, which must end the daemon with exit 0 within 30 s.
pub fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "graceful stop must exit 0, got {status}");
}

/// kill -9, as a crash.
pub fn kill9(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `signal` (e.g. "-USR1") to the daemon.
pub fn signal(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .arg(signal)
        .arg(child.id().to_string())
        .status();
}

/// `pgmigrate verify --config <cfg>` must report no difference.
pub fn verify_ok(cfg: &Path) {
    let out = Command::new(pgmigrate_bin())
        .args(["verify", "--config"])
        .arg(cfg)
        .output()
        .expect("run pgmigrate verify");
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until this daemon reports `WaitingForUserAction` (the state must
/// come from `child`: right after a restart the file still holds what a
/// killed one wrote), panicking with its log if it exits or `limit` passes.
pub fn wait_ready(state: &Path, name: &str, child: &mut Child, log: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "pgmigrate exited early ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        let doc = show(state, name);
        if doc["pid"].as_u64() == Some(u64::from(child.id()))
            && doc["status"] == "WaitingForUserAction"
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not ready in time: {doc}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `needle` appears `times` times in the daemon's log,
/// panicking with the log if the daemon exits first or two minutes pass.
pub fn wait_log(log: &Path, needle: &str, times: usize, child: &mut Child) {
    let read = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(120);
    while read().matches(needle).count() < times {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("pgmigrate exited ({status}) before {needle:?}: {}", read());
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} x{times} in the log: {}",
            read()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
