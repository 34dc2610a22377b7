//! `pgmigrate verify` against two real clusters: identical data (built in a
//! different row order and under different server output settings) is
//! reported identical; a changed row, a dropped index and a sequence left
//! behind are each reported, naming the object.
//!
//! The small cluster helper below stands in for the shared harness in
//! tests/common/ until it lands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PORT: u16 = 5432;
const DB: &str = "verifydb";

/// Runs a PostgreSQL tool as the OS user `postgres` when we are root (the
/// server refuses to run as root).
fn pg_tool(tool: &str) -> Command {
    let path = Path::new(PG_BIN).join(tool);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A throwaway cluster listening only on a unix socket in its own directory.
struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    /// initdb + start, with extra server settings (`-c name=value`).
    fn start(root: &Path, name: &str, settings: &[&str]) -> Cluster {
        let dir = root.join(name);
        std::fs::create_dir(&dir).unwrap();
        if is_root() {
            run_ok(Command::new("chown").arg("postgres").arg(&dir));
        }
        let data = dir.join("data");
        run_ok(pg_tool("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "-N",
        ]));
        let mut opts = format!(
            "-k {} -p {PORT} -c listen_addresses='' -c fsync=off",
            dir.display()
        );
        for s in settings {
            opts.push_str(" -c ");
            opts.push_str(s);
        }
        let cluster = Cluster { dir };
        run_ok(
            pg_tool("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(cluster.dir.join("log"))
                .args(["-w", "-o", &opts, "start"]),
        );
        cluster
    }

    /// Runs SQL through psql against `db`, stopping at the first error.
    fn psql(&self, db: &str, sql: &str) -> String {
        let out = run_ok(
            Command::new(Path::new(PG_BIN).join("psql"))
                .arg("-h")
                .arg(&self.dir)
                .args(["-p", &PORT.to_string(), "-U", "postgres", "-d", db])
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn toml(&self) -> String {
        format!(
            "host = \"{}\"\nport = {PORT}\nuser = \"postgres\"\nsslmode = \"disable\"\n",
            self.dir.display()
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg_tool("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

const SCHEMA: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE SEQUENCE ticket_seq;
CREATE TABLE items (
    id integer PRIMARY KEY,
    name text,
    price double precision,
    qty integer,
    total double precision GENERATED ALWAYS AS (price * qty) STORED,
    feeling mood,
    seen timestamptz,
    span interval,
    blob bytea,
    day date
);
CREATE INDEX items_name_idx ON items (name);
CREATE TABLE events (id bigint, at date NOT NULL, note text) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE empty_one (a int);
";

/// The same rows on both sides; `order` makes the target insert them in
/// the opposite order, so a checksum that depended on order would differ.
fn load(cluster: &Cluster, order: &str) {
    cluster.psql("postgres", &format!("CREATE DATABASE {DB}"));
    cluster.psql(DB, SCHEMA);
    cluster.psql(
        DB,
        &format!(
            "INSERT INTO items (id, name, price, qty, feeling, seen, span, blob, day)
             SELECT g,
                    CASE WHEN g % 7 = 0 THEN NULL ELSE 'item ' || g END,
                    CASE WHEN g % 11 = 0 THEN NULL ELSE g / 3.0 + 0.1 END,
                    g % 5,
                    (ARRAY['sad', 'ok', 'happy']::mood[])[g % 3 + 1],
                    timestamptz '2024-03-01 12:00:00+00' + g * interval '37 minutes',
                    g * interval '1 day 3 hours',
                    CASE WHEN g % 4 = 0 THEN NULL ELSE decode(lpad(to_hex(g), 8, '0'), 'hex') END,
                    date '2024-01-01' + g
             FROM generate_series(1, 2000) g ORDER BY g {order};
             INSERT INTO events
             SELECT g, date '2024-06-01' + (g % 400), 'note ' || g
             FROM generate_series(1, 1500) g ORDER BY g {order};
             SELECT setval('ticket_seq', 42);"
        ),
    );
}

fn verify(config: &Path, json: bool) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgmigrate"));
    cmd.arg("verify").arg("--config").arg(config);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("running pgmigrate verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn verify_reports_identical_then_each_difference() {
    let root = tempfile::tempdir().unwrap();
    if is_root() {
        run_ok(Command::new("chmod").arg("755").arg(root.path()));
    }
    // The target prints values differently by default; verify must not care.
    let source = Cluster::start(root.path(), "source", &[]);
    let target = Cluster::start(
        root.path(),
        "target",
        &[
            "timezone=America/New_York",
            "datestyle='SQL, DMY'",
            "intervalstyle=sql_standard",
            "extra_float_digits=0",
            "bytea_output=escape",
        ],
    );
    load(&source, "ASC");
    load(&target, "DESC");

    let config = root.path().join("verify.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"verify-test\"\ndatabases = [\"{DB}\"]\nstate_dir = \"{}\"\n\
             [source]\n{}[target]\n{}",
            root.path().join("state").display(),
            source.toml(),
            target.toml()
        ),
    )
    .unwrap();

    let (code, out, err) = verify(&config, false);
    assert_eq!(code, 0, "identical data must verify:\n{out}\n{err}");
    assert!(
        out.contains(&format!("{DB}: OK (4 tables, 3500 rows")),
        "{out}"
    );

    let (code, out, err) = verify(&config, true);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(report["identical"], true);
    let db = &report["databases"][0];
    assert_eq!(db["tables_checked"], 4);
    assert_eq!(db["objects"]["partitioned tables"]["source"], 1);
    assert_eq!(db["objects"]["enums"]["target"], 1);
    assert_eq!(db["objects"]["indexes"]["source"], 2);

    // One value of one row changes: same count, different checksum.
    target.psql(DB, "UPDATE items SET qty = qty + 1 WHERE id = 1234");
    let (code, out, err) = verify(&config, false);
    assert_eq!(code, 6, "{out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.contains("public.items"))
        .unwrap_or_else(|| panic!("the changed table is named:\n{out}"));
    assert!(line.contains("checksum"), "{out}");
    assert!(
        !out.contains("row_count"),
        "only the content changed:\n{out}"
    );
    target.psql(DB, "UPDATE items SET qty = qty - 1 WHERE id = 1234");
    let (code, out, err) = verify(&config, false);
    assert_eq!(code, 0, "changed back:\n{out}\n{err}");

    // A row gone from a partition.
    target.psql(DB, "DELETE FROM events WHERE id = 77");
    // An index gone, and a sequence behind the source.
    target.psql(DB, "DROP INDEX items_name_idx");
    source.psql(DB, "SELECT nextval('ticket_seq')");
    let (code, out, err) = verify(&config, true);
    assert_eq!(code, 6, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(report["identical"], false);
    let diffs = report["databases"][0]["differences"]
        .as_array()
        .expect("differences")
        .clone();
    let has = |kind: &str, object: &str, s: &str, t: &str| {
        diffs.iter().any(|d| {
            d["kind"] == kind && d["object"] == object && d["source"] == s && d["target"] == t
        })
    };
    assert!(has("object_count", "indexes", "2", "1"), "{out}");
    assert!(
        has(
            "missing",
            "index public.items_name_idx",
            "present",
            "absent"
        ),
        "{out}"
    );
    assert!(
        has("row_count", "public.events_2024", "855", "854"),
        "{out}"
    );
    assert!(
        has("sequence_value", "sequence public.ticket_seq", "43", "42"),
        "{out}"
    );
}
