//! The deployment files of DESIGN.md's "Deployment" section keep their
//! contract: the systemd template unit and the commented example config.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use pgmigrate::config::{Config, Mode, RunOption, SslMode};

/// Tests here that set environment variables or spawn processes (which read
/// the environment) take this lock: the environment is process-global.
static ENV_LOCK: Mutex<()> = Mutex::new(());

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_file(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `(section, key, value)` of every assignment of a systemd unit file.
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "line {}: continuation lines are not expected",
            n + 1
        );
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not KEY=VALUE: {line}", n + 1));
        entries.push((
            section.clone(),
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    entries
}

/// Every value of `key` in `[section]`, in file order.
fn values<'a>(entries: &'a [(String, String, String)], section: &str, key: &str) -> Vec<&'a str> {
    entries
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

/// The one value of `key` in `[Service]`.
fn service_value<'a>(entries: &'a [(String, String, String)], key: &str) -> &'a str {
    match values(entries, "Service", key).as_slice() {
        [one] => one,
        other => panic!("[Service] {key}: expected exactly one value, found {other:?}"),
    }
}

const UNIT: &str = "config/pgmigrate@.service";

#[test]
fn unit_keeps_the_deployment_contract() {
    let text = read(UNIT);
    let entries = unit_entries(&text);
    assert_eq!(service_value(&entries, "Type"), "notify");
    assert_eq!(service_value(&entries, "NotifyAccess"), "main");
    assert_eq!(service_value(&entries, "Restart"), "on-failure");
    assert_eq!(service_value(&entries, "StateDirectory"), "pgmigrate");
    assert_eq!(service_value(&entries, "KillSignal"), "SIGTERM");
    assert_eq!(service_value(&entries, "TimeoutStopSec"), "60");
    assert_eq!(
        service_value(&entries, "ExecStart"),
        "/usr/local/bin/pgmigrate run --config /etc/pgmigrate/%i.toml"
    );
    let no_restart: BTreeSet<&str> = service_value(&entries, "RestartPreventExitStatus")
        .split_whitespace()
        .collect();
    assert_eq!(no_restart, BTreeSet::from(["2", "3", "4"]));
    assert!(
        values(&entries, "Service", "Environment")
            .contains(&"PGMIGRATE_STATE_DIR=/var/lib/pgmigrate"),
        "Environment=PGMIGRATE_STATE_DIR=/var/lib/pgmigrate missing"
    );
    // Hardening a network client keeps: no capabilities, and only the
    // address families it uses.
    assert_eq!(service_value(&entries, "CapabilityBoundingSet"), "");
    assert_eq!(service_value(&entries, "NoNewPrivileges"), "yes");
    assert_eq!(service_value(&entries, "ProtectSystem"), "strict");
    assert_eq!(
        service_value(&entries, "RestrictAddressFamilies"),
        "AF_UNIX AF_INET AF_INET6"
    );
    assert!(
        text.contains("systemctl kill -s USR1"),
        "the unit must explain how SIGUSR1 cuts over"
    );
    // Out of descriptors, the listeners stopped answering (issue 11).
    let nofile: u64 = service_value(&entries, "LimitNOFILE")
        .parse()
        .expect("LimitNOFILE is a number");
    assert!(nofile >= 65536, "LimitNOFILE={nofile}");
}

/// A minimal config whose state_dir is `state_dir`; no server is contacted
/// before the state directory is checked.
fn config_with_state_dir(dir: &Path, state_dir: &str) -> PathBuf {
    let path = dir.join("m1.toml");
    let text = format!(
        "name = \"m1\"\ndatabases = [\"app\"]\nstate_dir = \"{state_dir}\"\nmetrics_listen = \"\"\n\
         [source]\nhost = \"127.0.0.1\"\nport = 1\nuser = \"u\"\nsslmode = \"disable\"\n\
         [target]\nhost = \"127.0.0.1\"\nport = 2\nuser = \"u\"\nsslmode = \"disable\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_unusable_state_dir_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // Under a regular file: refused for root too, where mode bits are not.
    for state_dir in ["/dev/null/x".to_owned(), "/proc/pgmigrate-state".to_owned()] {
        let cfg = config_with_state_dir(dir.path(), &state_dir);
        let out = Command::new(env!("CARGO_BIN_EXE_pgmigrate"))
            .args(["run", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{state_dir}: {stderr}");
        assert!(
            stderr.contains(&format!("state_dir {state_dir} ")),
            "{state_dir}: {stderr}"
        );
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let _env = ENV_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(analyze) = on_path("systemd-analyze") else {
        eprintln!("systemd-analyze is not on PATH: only the contract keys were checked");
        return;
    };
    // verify checks that ExecStart is executable, so point it at this build.
    let text = read(UNIT).replace(
        "ExecStart=/usr/local/bin/pgmigrate ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_pgmigrate")),
    );
    assert!(text.contains(env!("CARGO_BIN_EXE_pgmigrate")));
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("pgmigrate@.service"), text).expect("write unit copy");
    // An instance name makes systemd expand %i as it will on a real host.
    let instance = dir.path().join("pgmigrate@deploy-test.service");
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&instance)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown keys and bad values are only warnings (exit 0): any message
    // about our unit fails the test, messages about the host's units do not.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("pgmigrate@"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify {} failed ({}):\n{stderr}",
        instance.display(),
        out.status
    );
}

/// Every key of DESIGN.md's "Config file", per table ("" = top level).
fn design_keys() -> BTreeSet<(String, String)> {
    let endpoint = [
        "host",
        "port",
        "user",
        "password_env",
        "sslmode",
        "sslrootcert",
        "source_type",
    ];
    let mut keys = BTreeSet::new();
    let mut add = |table: &str, names: &[&str]| {
        for name in names {
            keys.insert((table.to_owned(), (*name).to_owned()));
        }
    };
    add(
        "",
        &[
            "name",
            "mode",
            "option",
            "databases",
            "overwrite_target",
            "state_dir",
            "metrics_listen",
            "pg_bin_dir",
        ],
    );
    add("source", &endpoint);
    add("target", &endpoint);
    add("copy", &["jobs", "split_tables_larger_than", "index_jobs"]);
    add(
        "apply",
        &["workers", "batch_max_changes", "batch_max_delay_ms"],
    );
    // reverse_replication: an addition (docs/DESIGN.md, issue 19).
    add("cutover", &["lock_source", "reverse_replication"]);
    // An addition (docs/DESIGN.md, issue 13).
    add(
        "keyless",
        &["default", "insert_only", "replica_identity_full"],
    );
    keys
}

const EXAMPLE: &str = "config/example.toml";

#[test]
fn example_config_shows_every_key() {
    let text = read(EXAMPLE);
    let table: toml::Table = text.parse().expect("example.toml is TOML");
    let mut found = BTreeSet::new();
    for (key, value) in &table {
        match value.as_table() {
            Some(inner) => found.extend(inner.keys().map(|k| (key.clone(), k.clone()))),
            None => {
                found.insert((String::new(), key.clone()));
            }
        }
    }
    assert_eq!(found, design_keys());
    assert!(
        text.contains("password_file = "),
        "the password_file alternative must be shown"
    );
}

#[test]
fn example_config_parses() {
    let _env = ENV_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // The example names these variables; the parser reads them at parse time.
    std::env::set_var("PGMIGRATE_SOURCE_PASSWORD", "source-secret");
    std::env::set_var("PGMIGRATE_TARGET_PASSWORD", "target-secret");
    let parsed = Config::from_file(&repo_file(EXAMPLE));
    std::env::remove_var("PGMIGRATE_SOURCE_PASSWORD");
    std::env::remove_var("PGMIGRATE_TARGET_PASSWORD");
    let config = parsed.unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(config.name.as_str(), "orders-2026");
    assert_eq!(config.mode, Mode::Online);
    assert_eq!(config.option, RunOption::ValidateAndMigrate);
    assert_eq!(config.databases, ["ticketdb", "timedb"]);
    assert!(!config.overwrite_target);
    assert_eq!(config.state_dir, Path::new("/var/lib/pgmigrate"));
    assert_eq!(
        config.metrics_listen,
        Some("127.0.0.1:9898".parse().expect("socket address"))
    );
    assert_eq!(config.pg_bin_dir, None);
    let source_password = config.source.password.as_ref().map(|p| p.expose());
    assert_eq!(source_password, Some("source-secret"));
    let target_password = config.target.password.as_ref().map(|p| p.expose());
    assert_eq!(target_password, Some("target-secret"));
    assert_eq!(config.source.port, 5432);
    assert_eq!(config.target.sslmode, SslMode::VerifyFull);
    assert_eq!(config.copy.jobs, 4);
    assert_eq!(config.copy.split_tables_larger_than, 1 << 30);
    assert_eq!(config.copy.index_jobs, 4);
    assert_eq!(config.apply.workers, 4);
    assert_eq!(config.apply.batch_max_changes, 10_000);
    assert_eq!(config.apply.batch_max_delay, Duration::from_millis(200));
    assert!(!config.cutover.lock_source);
}

#[test]
fn help_lists_exit_codes_and_signals() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgmigrate"))
        .arg("--help")
        .output()
        .expect("pgmigrate --help");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for needle in [
        "Exit status",
        "6  verify found differences",
        "SIGUSR1",
        "SIGTERM",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}:\n{text}");
    }
}
