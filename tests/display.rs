//! What an operator reads: `show` compact by default with the validation
//! detail behind `--validation` and always in `--json`; `show`/`list`
//! finding a config's state_dir; `list` on an absent state directory.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::daemon::{start, stop, wait_ready};
use common::{tmp_dir, write_config, Cluster};

fn pgmigrate(args: &[&str]) -> Output {
    Command::new(common::pgmigrate_bin())
        .args(args)
        .env_remove("PGMIGRATE_STATE_DIR")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The fields `show --json` carries (DESIGN.md), which checks outside
/// pgmigrate read.
const TOP_FIELDS: &[&str] = &[
    "name",
    "mode",
    "status",
    "substatus",
    "started_on",
    "ended_on",
    "validation",
    "databases",
];
const DATABASE_FIELDS: &[&str] = &[
    "phase",
    "full_load_queued_tables",
    "full_load_loading_tables",
    "full_load_completed_tables",
    "full_load_errored_tables",
    "rows_copied",
    "bytes_copied",
    "cdc_insert_counter",
    "cdc_update_counter",
    "cdc_delete_counter",
    "cdc_truncate_counter",
    "applied_changes",
    "incoming_changes",
    "latency_seconds",
    "lag_bytes",
    "confirmed_lsn",
    "message",
    "source_retained_wal_bytes",
];

#[test]
fn show_is_compact_validation_is_behind_a_flag_and_json_keeps_every_field() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("shop");
    src.psql(
        "shop",
        "CREATE TABLE orders (id bigserial PRIMARY KEY, item text); \
         INSERT INTO orders (item) SELECT 'o' || g FROM generate_series(1, 5000) g;",
    );
    let state = tmp_dir();
    let cfg = write_config(state.path(), "show-compact", &src, &dst, &["shop"], "");
    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    wait_ready(
        state.path(),
        "show-compact",
        &mut child,
        &log,
        Duration::from_secs(120),
    );

    // Found through the config alone: its name and state_dir.
    let out = pgmigrate(&["show", "--config", path(&cfg)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let compact = text(&out.stdout);
    assert!(
        compact.contains("status:    WaitingForUserAction"),
        "{compact}"
    );
    assert!(compact.contains("\nshop      Streaming"), "{compact}");
    assert!(
        compact.contains("5,000"),
        "rows in readable form: {compact}"
    );
    assert!(
        compact.contains("validation: ") && compact.contains("show --validation for details"),
        "{compact}"
    );
    assert!(
        !compact.contains("wal_level"),
        "no validation rows: {compact}"
    );
    for line in compact.lines() {
        assert!(line.chars().count() <= 100, "line too long: {line}");
        assert!(!line.contains('\x1b'), "escape code: {line:?}");
    }

    let out = pgmigrate(&[
        "show",
        "show-compact",
        "--state-dir",
        path(state.path()),
        "--validation",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let detail = text(&out.stdout);
    assert!(detail.starts_with(&compact), "{detail}");
    assert!(detail.contains("validation checks:"), "{detail}");
    assert!(detail.contains("Succeeded  source_wal_level: "), "{detail}");
    for line in detail.lines() {
        assert!(line.chars().count() <= 100, "line too long: {line}");
    }

    let out = pgmigrate(&["show", "--config", path(&cfg), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in TOP_FIELDS {
        assert!(doc.get(field).is_some(), "no {field} in {doc}");
    }
    let checks = doc["validation"].as_array().unwrap();
    assert!(!checks.is_empty(), "{doc}");
    for check in checks {
        for field in ["id", "result", "message", "fix"] {
            assert!(check.get(field).is_some(), "no {field} in {check}");
        }
    }
    let db = &doc["databases"][0];
    for field in DATABASE_FIELDS {
        assert!(db.get(field).is_some(), "no {field} in {db}");
    }
    assert_eq!(db["rows_copied"], 5000, "{db}");

    // --validation is for humans; --json always has it.
    let out = pgmigrate(&["show", "--config", path(&cfg), "--json", "--validation"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    let out = pgmigrate(&["list", "--config", path(&cfg)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("show-compact"),
        "{}",
        text(&out.stdout)
    );
    stop(child);
}

#[test]
fn list_on_an_absent_state_dir_says_where_it_looked() {
    let root = tmp_dir();
    let absent = root.path().join("nowhere");
    let out = pgmigrate(&["list", "--state-dir", path(&absent)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "no empty header");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "state directory {} does not exist",
            absent.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("--state-dir") && err.contains("--config"),
        "{err}"
    );

    let out = pgmigrate(&["list", "--state-dir", path(&absent), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc, serde_json::json!([]));

    // An existing but empty directory says so too.
    let out = pgmigrate(&["list", "--state-dir", path(root.path())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("no migrations in {}\n", root.path().display())
    );

    let out = pgmigrate(&[
        "list",
        "--state-dir",
        path(root.path()),
        "--filter",
        "active",
    ]);
    assert!(
        text(&out.stdout).starts_with("no active migrations in "),
        "{}",
        text(&out.stdout)
    );

    // show names the directory and the ways out as well (exit 2: unknown NAME).
    let out = pgmigrate(&["show", "m1", "--state-dir", path(&absent)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("does not exist") && err.contains("--config"),
        "{err}"
    );

    // A config that is not there is bad usage.
    let out = pgmigrate(&["list", "--config", path(&root.path().join("x.toml"))]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = pgmigrate(&["show"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn demo_keep_leaves_a_listable_migration_and_says_how_to_clean_up() {
    let out = Command::new(common::pgmigrate_bin())
        .args(["demo", "--keep"])
        .env_remove("PGMIGRATE_STATE_DIR")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    // Whatever happened, the kept servers must go: the commands it printed
    // are the clean-up, so they are tested too.
    let cleanup: Vec<String> = stdout
        .lines()
        .skip_while(|l| l.trim() != "clean up:")
        .skip(1)
        .map(|l| l.trim().to_owned())
        .collect();
    let state_dir = stdout
        .lines()
        .find_map(|l| l.split("the migration's state is in ").nth(1))
        .map(str::to_owned);
    let listed = state_dir
        .as_deref()
        .map(|dir| pgmigrate(&["list", "--state-dir", dir]));
    for command in &cleanup {
        let status = Command::new("sh").arg("-c").arg(command).status().unwrap();
        assert!(status.success(), "{command} failed");
    }
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("pgmigrate show --config "), "{stdout}");
    assert_eq!(cleanup.len(), 3, "{stdout}");
    let listed = listed.expect("the demo names its state directory");
    let rows = text(&listed.stdout);
    assert!(
        rows.lines()
            .any(|l| l.starts_with("demo ") && l.contains("Succeeded")),
        "{rows}"
    );
    let root = cleanup
        .last()
        .and_then(|c| c.strip_prefix("rm -rf "))
        .unwrap();
    assert!(!Path::new(root).exists(), "{root} left behind");
}
