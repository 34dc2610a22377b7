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
    use common::daemon::{kill9, start};
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
    kill9(child);
}
