//! `[tables]` on real clusters: an excluded table (with its index and
//! owned sequence) is absent on the target, a schema_only table is there
//! and empty, included tables are identical.

mod common;

use std::process::Command;

use common::{pgmigrate_bin, tmp_dir, write_config, Cluster};

const SCHEMA: &str = "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);\n\
    INSERT INTO users (name) SELECT 'u' || g FROM generate_series(1, 500) g;\n\
    CREATE VIEW user_names AS SELECT name FROM users;\n\
    CREATE TABLE logs (id serial PRIMARY KEY, msg text);\n\
    CREATE INDEX logs_msg ON logs (msg);\n\
    COMMENT ON TABLE logs IS 'scratch';\n\
    INSERT INTO logs (msg) SELECT 'm' || g FROM generate_series(1, 300) g;\n\
    CREATE SCHEMA audit;\n\
    CREATE TABLE audit.events (id bigserial PRIMARY KEY, what text);\n\
    CREATE INDEX events_what ON audit.events (what);\n\
    INSERT INTO audit.events (what) SELECT 'e' || g FROM generate_series(1, 200) g;\n";

#[test]
fn offline_include_exclude_schema_only() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("app");
    src.psql("app", SCHEMA);
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "filters-off",
        &src,
        &dst,
        &["app"],
        "mode = \"offline\"\noption = \"migrate\"\n[tables]\nexclude = [\"public.logs\"]\nschema_only = [\"audit.*\"]\n",
    );
    let out = Command::new(pgmigrate_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("run pgmigrate");
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = "SELECT count(*), sum(id), string_agg(name, ',' ORDER BY id) FROM users";
    assert_eq!(dst.psql("app", q), src.psql("app", q));
    assert_eq!(dst.psql("app", "SELECT count(*) FROM user_names"), "500");
    assert_eq!(
        dst.psql(
            "app",
            "SELECT count(*) FROM pg_class WHERE relname IN ('logs', 'logs_msg', 'logs_id_seq', 'logs_pkey')"
        ),
        "0"
    );
    assert_eq!(dst.psql("app", "SELECT count(*) FROM audit.events"), "0");
    assert_eq!(
        dst.psql(
            "app",
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'events_what'"
        ),
        "1"
    );
}

#[test]
fn online_schema_only_stays_empty_under_writes() {
    use common::daemon::{signal, start, verify_ok, wait_exit};
    use common::streaming::{no_lag, wait_streaming};
    use std::time::Duration;
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("app");
    src.psql("app", SCHEMA);
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "filters-on",
        &src,
        &dst,
        &["app"],
        "option = \"migrate\"\n[tables]\nexclude = [\"public.logs\"]\nschema_only = [\"audit.events\"]\n",
    );
    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    let limit = Duration::from_secs(120);
    wait_streaming(state.path(), "filters-on", &mut child, &log, limit, no_lag);
    src.psql(
        "app",
        "INSERT INTO users (name) VALUES ('late'); UPDATE users SET name = 'x' WHERE id = 3; \
         INSERT INTO logs (msg) VALUES ('late'); INSERT INTO audit.events (what) VALUES ('late'); \
         UPDATE audit.events SET what = 'y' WHERE id = 1; TRUNCATE logs;",
    );
    std::thread::sleep(Duration::from_secs(1));
    wait_streaming(state.path(), "filters-on", &mut child, &log, limit, no_lag);
    let q = "SELECT count(*), sum(id), string_agg(name, ',' ORDER BY id) FROM users";
    assert_eq!(dst.psql("app", q), src.psql("app", q));
    assert_eq!(dst.psql("app", "SELECT count(*) FROM audit.events"), "0");
    assert_eq!(
        dst.psql(
            "app",
            "SELECT count(*) FROM pg_class WHERE relname = 'logs'"
        ),
        "0"
    );
    // Cutover sets only the sequences on the target (logs_id_seq went
    // with logs), and verify compares only what [tables] put there:
    // audit.events' schema but not its rows.
    signal(&child, "-USR1");
    let status = wait_exit(&mut child, limit);
    assert!(
        status.success(),
        "cutover run exit {status}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let seq = "SELECT last_value FROM users_id_seq";
    assert_eq!(dst.psql("app", seq), src.psql("app", seq));
    verify_ok(&cfg);
}

/// `pgmigrate validate --json` with `[tables]`: the checks of the issue
/// against a real source.
fn validate_json(cfg: &std::path::Path) -> (i32, Vec<serde_json::Value>) {
    let out = Command::new(pgmigrate_bin())
        .args(["validate", "--json", "--config"])
        .arg(cfg)
        .output()
        .expect("run pgmigrate validate");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "validate --json: {e}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let checks = doc["validation"].as_array().cloned().unwrap_or_default();
    (out.status.code().unwrap_or(-1), checks)
}

fn checks_with<'a>(checks: &'a [serde_json::Value], id: &str) -> Vec<&'a serde_json::Value> {
    checks.iter().filter(|c| c["id"] == id).collect()
}

#[test]
fn validate_checks_patterns_and_what_a_filter_cuts() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("app");
    src.psql(
        "app",
        &format!(
            "{SCHEMA}\
             CREATE TABLE orders (id int PRIMARY KEY, log_id int REFERENCES logs (id));\n\
             CREATE MATERIALIZED VIEW log_counts AS SELECT count(*) FROM logs;\n\
             CREATE VIEW recent_logs AS SELECT id FROM logs;\n\
             CREATE VIEW recent_log_ids AS SELECT id FROM recent_logs;\n\
             CREATE TABLE scratch (a int);\n"
        ),
    );
    let state = tmp_dir();
    // logs excluded: the foreign key of orders and the matview reading it
    // would be cut; nope.* matches nothing; the keyless scratch is
    // excluded, so replica_identity does not count it.
    let cut = write_config(
        state.path(),
        "filters-cut",
        &src,
        &dst,
        &["app"],
        "[tables]\nexclude = [\"public.logs\", \"public.scratch\", \"nope.*\"]\nschema_only = [\"audit.*\"]\n",
    );
    let (code, checks) = validate_json(&cut);
    assert_ne!(code, 0, "{checks:#?}");
    let filters = checks_with(&checks, "table_filters");
    assert_eq!(filters.len(), 2, "{filters:#?}");
    let pattern = filters
        .iter()
        .find(|c| c["result"] == "Warning")
        .unwrap_or_else(|| panic!("{filters:#?}"));
    let msg = pattern["message"].as_str().unwrap();
    assert!(
        msg.contains("tables.exclude \"nope.*\"") && !msg.contains("public.logs"),
        "{msg}"
    );
    let cut_check = filters
        .iter()
        .find(|c| c["result"] == "Failed")
        .unwrap_or_else(|| panic!("{filters:#?}"));
    let msg = cut_check["message"].as_str().unwrap();
    assert!(
        msg.contains("orders_log_id_fkey of public.orders references excluded public.logs")
            && msg.contains("materialized view public.log_counts reads excluded public.logs")
            // A view over a view over the excluded table: the chain is named.
            && msg.contains(
                "view public.recent_log_ids reads view public.recent_logs, which reads excluded public.logs"
            ),
        "{msg}"
    );
    let fix = cut_check["fix"].as_str().unwrap();
    assert!(
        fix.contains("include public.logs")
            && fix.contains("schema only")
            && fix.contains("public.orders"),
        "{fix}"
    );
    let identity = checks_with(&checks, "replica_identity");
    assert_eq!(identity[0]["result"], "Succeeded", "{identity:#?}");

    // Excluding the dependent table too and keeping logs' schema clears it
    // (the matview reads an empty schema-only table: fine).
    let ok = write_config(
        state.path(),
        "filters-ok",
        &src,
        &dst,
        &["app"],
        "[tables]\nexclude = [\"public.orders\", \"public.scratch\"]\nschema_only = [\"audit.*\", \"public.logs\"]\n",
    );
    // orders migrated with logs schema only: its key cannot be created.
    let empty = write_config(
        state.path(),
        "filters-empty",
        &src,
        &dst,
        &["app"],
        "[tables]\nexclude = [\"public.scratch\"]\nschema_only = [\"public.logs\"]\n",
    );
    let (_, checks) = validate_json(&empty);
    let failed: Vec<_> = checks_with(&checks, "table_filters")
        .into_iter()
        .filter(|c| c["result"] == "Failed")
        .collect();
    assert_eq!(failed.len(), 1, "{checks:#?}");
    let msg = failed[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("orders_log_id_fkey of public.orders references schema-only public.logs"),
        "{msg}"
    );
    let (code, checks) = validate_json(&ok);
    for c in checks_with(&checks, "table_filters") {
        assert_eq!(c["result"], "Succeeded", "{c:#?}");
    }
    assert_eq!(code, 0, "{checks:#?}");
}
