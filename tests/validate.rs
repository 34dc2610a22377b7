//! `pgmigrate validate` against real servers: a clean pair passes every
//! check, each Failed check of the issue is tripped by a server set up for
//! it, and no validation leaves anything behind on either server.
//!
//! Two clusters serve every scenario (a PostgreSQL 15 source and a 17
//! target, swapped for "target older than source"), so the test stays
//! cheap on a small machine.

// ---- minimal local cluster helper (to be replaced by tests/common) ----

use std::path::{Path, PathBuf};
use std::process::Command;

use pgmigrate::conn::{ConnectParams, Connection, Host};

const PG15: &str = "/usr/lib/postgresql/15/bin";
const PG17: &str = "/opt/pgmigrate-pg/17/bin";

/// A throwaway cluster: data directory and unix socket in one short temp
/// directory, listening on 127.0.0.1 on a free port. Stopped on drop.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a server binary, as the `postgres` OS user when we are root
/// (the server refuses to run as root).
fn run_pg(bin: &Path, tool: &str, args: &[&str]) {
    let exe = bin.join(tool);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = cmd.args(args).output().expect("run server binary");
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Cluster {
    fn start(bin: &str, settings: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("pgv")
            .tempdir_in("/tmp")
            .expect("temp dir");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("chmod");
        let c = Cluster {
            bin: PathBuf::from(bin),
            dir,
            port: free_port(),
        };
        let data = c.data();
        run_pg(
            &c.bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "-N",
            ],
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             host all hba_blocked 127.0.0.1/32 reject\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("pg_hba.conf");
        let mut conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n",
            c.port,
            c.dir.path().display()
        );
        for s in settings {
            conf.push_str(s);
            conf.push('\n');
        }
        c.append_conf(&conf);
        c.pg_ctl("start");
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    fn append_conf(&self, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data().join("postgresql.conf"))
            .expect("postgresql.conf");
        f.write_all(text.as_bytes()).expect("write conf");
    }

    fn pg_ctl(&self, action: &str) {
        let data = self.data();
        let log = self.dir.path().join("log");
        run_pg(
            &self.bin,
            "pg_ctl",
            &[
                action,
                "-w",
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-m",
                "fast",
            ],
        );
    }

    /// Later lines of postgresql.conf win: append and restart.
    fn restart_with(&self, setting: &str) {
        self.append_conf(&format!("\n{setting}\n"));
        self.pg_ctl("restart");
    }

    async fn connect(&self, db: &str) -> Connection {
        let p = ConnectParams::new(
            Host::Unix(self.socket_dir().to_path_buf()),
            self.port,
            "postgres",
            db,
        );
        Connection::connect(&p).await.expect("connect as postgres")
    }

    async fn sql(&self, db: &str, sql: &str) {
        let mut c = self.connect(db).await;
        c.execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = c.close().await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = Command::new(if is_root() { "runuser" } else { "true" })
            .args(if is_root() {
                vec!["-u", "postgres", "--"]
            } else {
                vec![]
            })
            .arg(self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(data)
            .output();
    }
}

// ---- the scenarios ----

use pgmigrate::config::Config;
use pgmigrate::control::status::CheckResult;
use pgmigrate::validate::{validate, ValidationReport};

/// Where a config's servers are and how to log in.
struct Login<'a> {
    cluster: &'a Cluster,
    user: &'a str,
    password: Option<&'a str>,
    tcp: bool,
}

impl<'a> Login<'a> {
    fn superuser(cluster: &'a Cluster) -> Login<'a> {
        Login {
            cluster,
            user: "postgres",
            password: None,
            tcp: false,
        }
    }

    fn toml(&self, section: &str, dir: &Path) -> String {
        let host = if self.tcp {
            "127.0.0.1".to_string()
        } else {
            self.cluster.socket_dir().display().to_string()
        };
        let mut s = format!(
            "[{section}]\nhost = \"{host}\"\nport = {}\nuser = \"{}\"\nsslmode = \"disable\"\n",
            self.cluster.port, self.user
        );
        if let Some(pw) = self.password {
            let file = dir.join(format!("{section}.pass"));
            std::fs::write(&file, pw).expect("password file");
            s.push_str(&format!("password_file = \"{}\"\n", file.display()));
        }
        s
    }
}

/// The config text, with its password files in the returned directory.
fn config_text(
    source: &Login,
    target: &Login,
    databases: &[&str],
    extra: &str,
) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("config dir");
    let dbs: Vec<String> = databases.iter().map(|d| format!("\"{d}\"")).collect();
    let text = format!(
        "name = \"validate-test\"\ndatabases = [{}]\nmetrics_listen = \"\"\n\
         state_dir = \"{}\"\npg_bin_dir = \"{PG15}\"\n{extra}\n{}\n{}",
        dbs.join(", "),
        dir.path().display(),
        source.toml("source", dir.path()),
        target.toml("target", dir.path()),
    );
    (dir, text)
}

fn config(source: &Login, target: &Login, databases: &[&str], extra: &str) -> Config {
    let (dir, text) = config_text(source, target, databases, extra);
    Config::from_toml_str(&text, dir.path()).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn overwrite_onto(source: &Login, target: &Login) -> Config {
    config(source, target, &["app1", "app2"], "overwrite_target = true")
}

/// `pgmigrate validate --config FILE --json`: exit status and document.
fn cli_validate(text: &str, dir: &Path) -> (i32, serde_json::Value) {
    let file = dir.join("migration.toml");
    std::fs::write(&file, text).expect("config file");
    let out = Command::new(env!("CARGO_BIN_EXE_pgmigrate"))
        .args(["validate", "--json", "--config"])
        .arg(&file)
        .output()
        .expect("run pgmigrate");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json)
}

/// What validation must never leave behind, as text to compare.
async fn footprint(cluster: &Cluster) -> String {
    let mut c = cluster.connect("postgres").await;
    let mut out = String::new();
    for sql in [
        "SELECT coalesce(string_agg(slot_name, ',' ORDER BY slot_name), '') FROM pg_replication_slots",
        "SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') FROM pg_database",
        "SELECT coalesce(string_agg(rolname, ',' ORDER BY rolname), '') FROM pg_roles",
        "SELECT coalesce(string_agg(roname, ',' ORDER BY roname), '') FROM pg_replication_origin",
        "SELECT count(*) FROM pg_prepared_xacts",
    ] {
        let rows = c.simple_query(sql).await.expect(sql);
        out.push_str(rows[0].str(0).unwrap());
        out.push('|');
    }
    let dbs = c
        .simple_query("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")
        .await
        .expect("databases");
    let _ = c.close().await;
    for row in dbs {
        let db = row.str(0).unwrap().to_string();
        let mut d = cluster.connect(&db).await;
        let rows = d
            .simple_query("SELECT coalesce(string_agg(pubname, ',' ORDER BY pubname), '') FROM pg_publication")
            .await
            .expect("publications");
        out.push_str(&format!("{db}:{}|", rows[0].str(0).unwrap()));
        let _ = d.close().await;
    }
    out
}

/// Validates and proves nothing was left on either server, and that no
/// validation session outlives the call.
async fn validate_cleanly(servers: &[&Cluster], config: &Config) -> ValidationReport {
    let mut before = Vec::new();
    for s in servers {
        before.push(footprint(s).await);
    }
    let report = validate(config).await;
    for (s, b) in servers.iter().zip(&before) {
        assert_eq!(&footprint(s).await, b, "validation changed a server");
        let mut c = s.connect("postgres").await;
        let mut lingering = 1;
        for _ in 0..50 {
            let rows = c
                .simple_query("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgmigrate-validate'")
                .await
                .expect("pg_stat_activity");
            lingering = rows[0].parse::<i64>(0).unwrap();
            if lingering == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(lingering, 0, "validation sessions left open");
        let _ = c.close().await;
    }
    report
}

fn result(report: &ValidationReport, id: &str) -> CheckResult {
    let checks: Vec<_> = report.by_id(id).collect();
    assert!(
        !checks.is_empty(),
        "no {id} check in\n{}",
        report.render_table()
    );
    // The worst of the per-database entries.
    checks
        .iter()
        .map(|c| c.result)
        .max_by_key(|r| match r {
            CheckResult::Succeeded => 0,
            CheckResult::Warning => 1,
            CheckResult::Failed => 2,
        })
        .unwrap()
}

fn failed_with(report: &ValidationReport, id: &str, needles: &[&str]) {
    let table = report.render_table();
    let c = report
        .by_id(id)
        .find(|c| c.result == CheckResult::Failed)
        .unwrap_or_else(|| panic!("{id} did not fail:\n{table}"));
    for n in needles {
        assert!(
            c.message.contains(n) || c.fix.contains(n),
            "{id}: {n:?} missing from {c:?}"
        );
    }
    assert!(!c.fix.is_empty(), "{id} has no fix");
    assert!(report.failed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_against_real_servers() {
    let (source, target) = tokio::task::spawn_blocking(|| {
        (
            Cluster::start(
                PG15,
                &["wal_level = logical", "max_slot_wal_keep_size = 1GB"],
            ),
            Cluster::start(PG17, &[]),
        )
    })
    .await
    .expect("start clusters");
    let servers = [&source, &target];
    source.sql("postgres", "CREATE DATABASE app1").await;
    source.sql("postgres", "CREATE DATABASE app2").await;
    source
        .sql(
            "app1",
            "CREATE TABLE public.orders (id bigserial PRIMARY KEY, note text COLLATE \"C\", v int); \
             INSERT INTO public.orders (note, v) SELECT 'n' || g, g FROM generate_series(1, 1000) g; \
             CREATE TABLE public.items (a int NOT NULL, b int); \
             CREATE UNIQUE INDEX items_a ON public.items (a); \
             ALTER TABLE public.items REPLICA IDENTITY USING INDEX items_a;",
        )
        .await;
    source
        .sql(
            "app2",
            "CREATE EXTENSION hstore; CREATE TABLE t (id int PRIMARY KEY, h hstore);",
        )
        .await;
    let su_source = Login::superuser(&source);
    let su_target = Login::superuser(&target);
    let clean = config(
        &su_source,
        &su_target,
        &["app1", "app2"],
        "mode = \"online\"",
    );

    // A clean pair: every check Succeeded.
    let report = validate_cleanly(&servers, &clean).await;
    println!("{}", report.render_table());
    for c in &report.checks {
        assert_eq!(
            c.result,
            CheckResult::Succeeded,
            "\n{}",
            report.render_table()
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&report.render_json().unwrap()).expect("json");
    assert_eq!(
        json["validation"].as_array().map(Vec::len),
        Some(report.checks.len())
    );
    let (dir, text) = config_text(&su_source, &su_target, &["app1", "app2"], "");
    let (code, doc) = cli_validate(&text, dir.path());
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["validation"][0]["id"], "source_connectivity");
    assert_eq!(doc["validation"][0]["result"], "Succeeded");
    let (code, _) = cli_validate("name = \"x\"\nbogus = 1\n", dir.path());
    assert_eq!(code, 2, "a bad config exits 2");

    // A table without a key, online: Failed with the statement to fix it;
    // offline it does not matter. Unlogged tables and large objects warn.
    source
        .sql(
            "app1",
            "CREATE TABLE public.nokey (a int); CREATE UNLOGGED TABLE public.scratch (id int PRIMARY KEY); \
             SELECT lo_create(0);",
        )
        .await;
    let report = validate_cleanly(&servers, &clean).await;
    failed_with(
        &report,
        "replica_identity",
        &[
            "public.nokey",
            "ALTER TABLE public.nokey REPLICA IDENTITY FULL;",
        ],
    );
    assert_eq!(result(&report, "unlogged_tables"), CheckResult::Warning);
    assert_eq!(result(&report, "large_objects"), CheckResult::Warning);
    let offline = config(
        &su_source,
        &su_target,
        &["app1", "app2"],
        "mode = \"offline\"",
    );
    let report = validate_cleanly(&servers, &offline).await;
    assert_eq!(result(&report, "replica_identity"), CheckResult::Succeeded);
    assert!(!report.failed(), "\n{}", report.render_table());
    source
        .sql(
            "app1",
            "DROP TABLE public.nokey, public.scratch; SELECT lo_unlink(oid) FROM pg_largeobject_metadata;",
        )
        .await;

    // Identity columns: a composite key streams (typed parameters); a
    // FULL identity table with a composite holding a point or json is
    // matched by text form: a warning naming the column.
    source
        .sql(
            "app1",
            "CREATE TYPE public.pair AS (a int, b text); CREATE TYPE public.shape AS (p point, j json); \
             CREATE TABLE public.ck (k public.pair PRIMARY KEY); \
             CREATE TABLE public.shapes (id int, s public.shape); ALTER TABLE public.shapes REPLICA IDENTITY FULL;",
        )
        .await;
    let report = validate_cleanly(&servers, &clean).await;
    let c = report
        .checks
        .iter()
        .find(|c| c.id == "replica_identity_equality" && c.message.contains("app1"))
        .expect("replica_identity_equality for app1");
    assert_eq!(c.result, CheckResult::Warning, "{c:?}");
    assert!(
        c.message.contains("public.shapes.s") && !c.message.contains("public.ck"),
        "{c:?}"
    );
    source
        .sql(
            "app1",
            "DROP TABLE public.ck, public.shapes; DROP TYPE public.pair, public.shape;",
        )
        .await;

    // What the copy needs beside the stream: a resumed copy's <slot>_r on
    // the source (7 of 10 slots taken: 3 free, 2 to run, 4 to resume
    // both databases) and one origin per copy job on the target (17's
    // 10 states: 8 copy jobs × 2 databases do not fit, 4 workers × 2 do).
    source
        .sql(
            "postgres",
            "SELECT pg_create_physical_replication_slot('held_' || g) FROM generate_series(1, 7) g",
        )
        .await;
    let wide = config(
        &su_source,
        &su_target,
        &["app1", "app2"],
        "mode = \"online\"\n[copy]\njobs = 8",
    );
    let report = validate_cleanly(&servers, &wide).await;
    assert!(!report.failed(), "\n{}", report.render_table());
    let slots = report
        .by_id("source_replication_slots")
        .next()
        .expect("slots");
    assert_eq!(slots.result, CheckResult::Warning, "{slots:?}");
    assert!(
        slots.message.contains("<slot>_r") && slots.fix.contains("max_replication_slots = 11"),
        "{slots:?}"
    );
    let origins = report
        .by_id("target_replication_origin_capacity")
        .next()
        .expect("origins");
    assert_eq!(origins.result, CheckResult::Warning, "{origins:?}");
    assert!(
        origins.message.contains("16 needed") && origins.fix.contains("copy.jobs"),
        "{origins:?}"
    );
    source
        .sql(
            "postgres",
            "SELECT pg_drop_replication_slot('held_' || g) FROM generate_series(1, 7) g",
        )
        .await;

    // An extension missing on the target (adminpack is gone in 17).
    source.sql("app2", "CREATE EXTENSION adminpack").await;
    let report = validate_cleanly(&servers, &clean).await;
    failed_with(&report, "extensions", &["adminpack", "app2"]);
    source.sql("app2", "DROP EXTENSION adminpack").await;

    // A target database that exists already; with overwrite_target a warning.
    target.sql("postgres", "CREATE DATABASE app1").await;
    let report = validate_cleanly(&servers, &clean).await;
    failed_with(
        &report,
        "target_database_absent",
        &["app1", "overwrite_target"],
    );
    let overwrite = config(
        &su_source,
        &su_target,
        &["app1", "app2"],
        "overwrite_target = true",
    );
    let report = validate_cleanly(&servers, &overwrite).await;
    assert_eq!(
        result(&report, "target_database_absent"),
        CheckResult::Warning
    );
    assert!(!report.failed(), "\n{}", report.render_table());
    target.sql("postgres", "DROP DATABASE app1").await;

    // The source server itself as the target: refused by server identity,
    // whatever overwrite_target says (overwriting would drop the source
    // database).
    let report = validate_cleanly(&servers, &overwrite_onto(&su_source, &su_source)).await;
    failed_with(&report, "target_not_source", &["is the source server"]);
    assert_eq!(result(&report, "target_not_source"), CheckResult::Failed);
    let report = validate_cleanly(&servers, &clean).await;
    assert_eq!(result(&report, "target_not_source"), CheckResult::Succeeded);

    // A source user without REPLICATION, over TCP with a password.
    source
        .sql("postgres", "CREATE ROLE norepl LOGIN PASSWORD 'secret-1'")
        .await;
    let norepl = Login {
        cluster: &source,
        user: "norepl",
        password: Some("secret-1"),
        tcp: true,
    };
    let report = validate_cleanly(&servers, &config(&norepl, &su_target, &["app1"], "")).await;
    assert_eq!(
        result(&report, "source_connectivity"),
        CheckResult::Succeeded
    );
    failed_with(
        &report,
        "source_replication_privilege",
        &["norepl", "REPLICATION"],
    );
    failed_with(&report, "source_table_read", &["public.orders"]);
    // Every privilege this user lacks, in the same round, each with the
    // statement naming the objects: replication above, SELECT and schema
    // USAGE, CREATE on the database and ownership of the tables.
    source
        .sql(
            "app1",
            "CREATE SCHEMA secret; CREATE TABLE secret.s (id int PRIMARY KEY);",
        )
        .await;
    let report = validate_cleanly(&servers, &config(&norepl, &su_target, &["app1"], "")).await;
    println!("{}", report.render_table());
    failed_with(
        &report,
        "source_replication_privilege",
        &["ALTER ROLE \"norepl\" REPLICATION;"],
    );
    failed_with(
        &report,
        "source_table_read",
        &[
            "secret.s",
            "GRANT USAGE ON SCHEMA secret TO \"norepl\";",
            "GRANT SELECT ON public.items, public.orders",
        ],
    );
    failed_with(
        &report,
        "source_publication_privilege",
        &[
            "lacks CREATE",
            "does not own 3 tables",
            "GRANT CREATE ON DATABASE \"app1\" TO \"norepl\";",
            "GRANT postgres TO \"norepl\";",
        ],
    );
    source.sql("app1", "DROP SCHEMA secret CASCADE").await;

    // A wrong password: explained, and the dependent checks said skipped.
    let wrong = Login {
        password: Some("not-the-password"),
        ..norepl
    };
    let report = validate_cleanly(&servers, &config(&wrong, &su_target, &["app1"], "")).await;
    failed_with(
        &report,
        "source_connectivity",
        &["password authentication failed", "norepl"],
    );
    assert_eq!(
        result(&report, "source_checks_skipped"),
        CheckResult::Failed
    );
    assert_eq!(
        result(&report, "target_connectivity"),
        CheckResult::Succeeded
    );

    // pg_hba.conf rejects, and nothing listens: told apart.
    let blocked = Login {
        user: "hba_blocked",
        ..wrong
    };
    let report = validate_cleanly(&servers, &config(&blocked, &su_target, &["app1"], "")).await;
    failed_with(&report, "source_connectivity", &["pg_hba.conf"]);
    let nobody = Cluster {
        bin: PathBuf::from(PG15),
        dir: tempfile::tempdir().expect("dir"),
        port: free_port(),
    };
    let refused = Login {
        cluster: &nobody,
        user: "postgres",
        password: Some("x"),
        tcp: true,
    };
    let report = validate(&config(&su_source, &refused, &["app1"], "")).await;
    failed_with(&report, "target_connectivity", &["connection refused"]);
    assert_eq!(
        result(&report, "target_checks_skipped"),
        CheckResult::Failed
    );
    drop(nobody);

    // A target older than the source: the 17 server as source, 15 as target.
    let report = validate_cleanly(
        &servers,
        &config(
            &su_target,
            &su_source,
            &["postgres"],
            "overwrite_target = true",
        ),
    )
    .await;
    failed_with(
        &report,
        "target_version",
        &["older than the source's PostgreSQL 17"],
    );
    failed_with(&report, "pg_tools_version", &[PG15, "17"]);
    println!("{}", report.render_table());

    // wal_level = replica on the source.
    source.restart_with("wal_level = replica");
    let report = validate_cleanly(&servers, &clean).await;
    failed_with(
        &report,
        "source_wal_level",
        &["replica", "wal_level = logical"],
    );
    let (code, doc) = cli_validate(&text, dir.path());
    assert_eq!(code, 4, "a failed check exits 4: {doc}");
}
