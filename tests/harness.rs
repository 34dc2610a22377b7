//! Tests of the test harness itself (tests/common): clusters start, accept
//! the connections the migration tests rely on, and clean up after themselves.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{
    dump_bin_dir, installed_extra_majors, parse_major, running_as_root, tmp_dir, write_config,
    Cluster, FULL_18_DIR, SERVER_USER,
};

#[test]
fn default_cluster_is_15_with_logical_wal_and_answers_queries() {
    let c = Cluster::builder().start();
    assert_eq!(c.version(), 15);
    assert_eq!(c.psql("postgres", "SELECT 1 + 1"), "2");
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT current_setting('server_version_num')::int / 10000"
        ),
        "15"
    );
    assert_eq!(c.psql("postgres", "SHOW wal_level"), "logical");
    assert_eq!(c.psql("postgres", "SHOW max_replication_slots"), "20");
    assert_eq!(c.psql("postgres", "SHOW listen_addresses"), "127.0.0.1");
    assert_eq!(
        c.psql("postgres", "SHOW port"),
        c.port().to_string(),
        "the port the harness reports is the one the server uses"
    );

    c.create_db("app db");
    let rows = c.psql(
        "app db",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t VALUES (1, 'a'), (2, 'b');
         SELECT id, v FROM t ORDER BY id;",
    );
    assert_eq!(rows, "1|a\n2|b");

    let err = c
        .try_psql("app db", "SELECT * FROM no_such_table")
        .expect_err("a query on a missing table must fail");
    assert!(err.contains("no_such_table"), "{err}");
    // ON_ERROR_STOP: nothing after the failing statement runs.
    let _ = c.try_psql("app db", "SELECT 1/0; INSERT INTO t VALUES (3, 'c');");
    assert_eq!(c.psql("app db", "SELECT count(*) FROM t"), "2");

    let socket = c.socket_dir().join(format!(".s.PGSQL.{}", c.port()));
    assert!(socket.exists(), "{} missing", socket.display());
    assert!(socket.as_os_str().len() < 107, "socket path too long");
}

#[test]
fn two_clusters_start_at_once_and_are_separate() {
    let a = std::thread::spawn(|| Cluster::builder().start());
    let b = std::thread::spawn(|| Cluster::builder().start());
    let a = a.join().expect("first cluster");
    let b = b.join().expect("second cluster");
    assert_ne!(a.port(), b.port());
    assert_ne!(a.socket_dir(), b.socket_dir());
    a.psql("postgres", "CREATE TABLE only_in_a (x int)");
    assert_eq!(
        b.psql(
            "postgres",
            "SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'"
        ),
        "0"
    );
    assert_eq!(
        a.psql(
            "postgres",
            "SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'"
        ),
        "1"
    );
}

#[test]
fn tls_cluster_passes_verify_full_for_localhost_and_its_ip() {
    let c = Cluster::builder().tls(true).start();
    let ca = c.tls_ca_path().expect("a TLS cluster has a CA");
    let by_name = format!(
        "host=localhost hostaddr=127.0.0.1 port={} sslmode=verify-full sslrootcert={} user=postgres dbname=postgres",
        c.port(),
        ca.display()
    );
    let ssl = c
        .try_psql_conninfo(
            &by_name,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .expect("verify-full by name");
    assert_eq!(ssl, "t");

    let by_ip = format!(
        "host=127.0.0.1 port={} sslmode=verify-full sslrootcert={} user=postgres dbname=postgres",
        c.port(),
        ca.display()
    );
    assert_eq!(
        c.try_psql_conninfo(&by_ip, "SELECT 1")
            .expect("verify-full by IP"),
        "1"
    );

    // A CA that did not sign the server certificate must be refused.
    let other = Cluster::builder().tls(true).start();
    let wrong_ca = format!(
        "host=localhost hostaddr=127.0.0.1 port={} sslmode=verify-full sslrootcert={} user=postgres dbname=postgres",
        c.port(),
        other.tls_ca_path().expect("CA").display()
    );
    let err = c
        .try_psql_conninfo(&wrong_ca, "SELECT 1")
        .expect_err("a foreign CA must not verify the server");
    assert!(err.contains("certificate verify failed"), "{err}");

    let plain = Cluster::builder().start();
    assert!(plain.tls_ca_path().is_none());
    assert_eq!(plain.psql("postgres", "SHOW ssl"), "off");
}

#[test]
fn md5_and_scram_hba_lines_take_precedence_over_trust() {
    let c = Cluster::builder()
        .hba_line("host all md5user 127.0.0.1/32 md5")
        .hba_line("host all scramuser 127.0.0.1/32 scram-sha-256")
        .start();
    c.psql(
        "postgres",
        "SET password_encryption = 'md5';
         CREATE ROLE md5user LOGIN PASSWORD 'md5-secret';
         SET password_encryption = 'scram-sha-256';
         CREATE ROLE scramuser LOGIN PASSWORD 'scram-secret';",
    );
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT rolname, CASE WHEN rolpassword LIKE 'md5%' THEN 'md5' \
             WHEN rolpassword LIKE 'SCRAM-SHA-256$%' THEN 'scram' END \
             FROM pg_authid WHERE rolname IN ('md5user', 'scramuser') ORDER BY 1"
        ),
        "md5user|md5\nscramuser|scram"
    );

    for (user, password) in [("md5user", "md5-secret"), ("scramuser", "scram-secret")] {
        let good = format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname=postgres",
            c.port()
        );
        assert_eq!(
            c.try_psql_conninfo(&good, "SELECT current_user")
                .unwrap_or_else(|e| panic!("{user} with the right password: {e}")),
            user
        );
        let bad = format!(
            "host=127.0.0.1 port={} user={user} password=wrong dbname=postgres",
            c.port()
        );
        let err = c
            .try_psql_conninfo(&bad, "SELECT 1")
            .expect_err("a wrong password must be refused");
        assert!(err.contains("password authentication failed"), "{err}");
    }
}

#[test]
fn pgbench_runs_against_the_cluster() {
    let c = Cluster::builder().start();
    c.create_db("bench");
    c.pgbench(&["-i", "-q", "-s", "1", "bench"]);
    assert_eq!(
        c.psql("bench", "SELECT count(*) FROM pgbench_accounts"),
        "100000"
    );
    let out = c.pgbench(&["-c", "2", "-t", "20", "bench"]);
    assert!(
        out.contains("number of transactions actually processed: 40"),
        "{out}"
    );
}

#[test]
fn stop_restart_keep_data_and_drop_removes_everything() {
    let mut c = Cluster::builder().start();
    c.psql(
        "postgres",
        "CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)",
    );
    let port = c.port();
    c.stop();
    assert!(!c.is_running());
    assert!(
        c.try_psql("postgres", "SELECT 1").is_err(),
        "stopped server answered"
    );
    c.restart();
    assert_eq!(c.port(), port);
    assert_eq!(c.psql("postgres", "SELECT x FROM kept"), "7");
    c.stop_immediate();
    c.restart();
    assert_eq!(c.psql("postgres", "SELECT x FROM kept"), "7");
    assert!(!c.log_contents().is_empty(), "the server log is empty");

    let data_dir = c.data_dir().to_path_buf();
    let pid_file = data_dir.join("postmaster.pid");
    let pid = std::fs::read_to_string(&pid_file).expect("postmaster.pid");
    let pid = pid.lines().next().expect("pid line").trim().to_owned();
    drop(c);
    assert!(!data_dir.exists(), "{} left behind", data_dir.display());
    assert!(
        !process_alive(&pid),
        "postmaster {pid} still runs after drop"
    );
}

/// True while `pid` runs; an exited process that its reaper has not yet
/// collected (a zombie) counts as gone.
fn process_alive(pid: &str) -> bool {
    let status = Path::new("/proc").join(pid).join("status");
    for _ in 0..50 {
        match std::fs::read_to_string(&status) {
            Err(_) => return false,
            Ok(s)
                if s.lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z')) =>
            {
                return false
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    true
}

#[test]
fn conf_values_are_applied_and_quoted() {
    let c = Cluster::builder()
        .conf("work_mem", "8MB")
        .conf("cluster_name", "it's a test")
        .start();
    assert_eq!(c.psql("postgres", "SHOW work_mem"), "8MB");
    assert_eq!(c.psql("postgres", "SHOW cluster_name"), "it's a test");
}

#[test]
fn start_failure_reports_the_server_log() {
    let result = std::panic::catch_unwind(|| {
        Cluster::builder()
            .conf("shared_buffers", "not-a-size")
            .start()
    });
    let payload = result.err().expect("a bad setting must stop the start");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("server log"), "{message}");
    assert!(message.contains("shared_buffers"), "{message}");
}

#[test]
fn servers_run_as_the_unprivileged_user_when_tests_run_as_root() {
    let c = Cluster::builder().start();
    let owner = std::fs::metadata(c.data_dir().join("PG_VERSION"))
        .expect("PG_VERSION")
        .uid();
    if running_as_root() {
        let id = std::process::Command::new("id")
            .args(["-u", SERVER_USER])
            .output()
            .expect("id");
        let uid: u32 = String::from_utf8_lossy(&id.stdout)
            .trim()
            .parse()
            .expect("uid");
        assert_eq!(owner, uid, "data directory not owned by {SERVER_USER}");
    } else {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        assert_eq!(owner, me);
    }
}

#[test]
fn write_config_has_the_contract_keys_and_merges_extra_toml() {
    let src = Cluster::builder().start();
    let dst = Cluster::builder().start();
    let dir = tmp_dir();
    let path = write_config(
        dir.path(),
        "m-1",
        &src,
        &dst,
        &["a", "b"],
        "mode = \"offline\"\n[copy]\njobs = 2\n[target]\nsslmode = \"require\"\n",
    );
    assert_eq!(path, dir.path().join("m-1.toml"));
    let text = std::fs::read_to_string(&path).expect("config written");
    let doc: toml::Table = text.parse().expect("config parses");
    let s = |v: &toml::Value| v.as_str().map(str::to_owned);
    assert_eq!(doc.get("name").and_then(s), Some("m-1".into()));
    assert_eq!(doc.get("mode").and_then(s), Some("offline".into()));
    assert_eq!(
        doc.get("option").and_then(s),
        Some("validate-and-migrate".into())
    );
    assert_eq!(doc.get("metrics_listen").and_then(s), Some(String::new()));
    assert_eq!(
        doc.get("state_dir").and_then(s),
        Some(dir.path().display().to_string())
    );
    assert_eq!(
        doc.get("databases").map(ToString::to_string),
        Some("[\"a\", \"b\"]".into())
    );
    let source = doc
        .get("source")
        .and_then(|v| v.as_table())
        .expect("[source]");
    assert_eq!(
        source.get("host").and_then(s),
        Some(src.socket_dir().display().to_string())
    );
    assert_eq!(
        source.get("port").and_then(|v| v.as_integer()),
        Some(i64::from(src.port()))
    );
    assert_eq!(source.get("user").and_then(s), Some("postgres".into()));
    assert_eq!(source.get("sslmode").and_then(s), Some("disable".into()));
    let target = doc
        .get("target")
        .and_then(|v| v.as_table())
        .expect("[target]");
    assert_eq!(target.get("sslmode").and_then(s), Some("require".into()));
    assert_eq!(
        target.get("port").and_then(|v| v.as_integer()),
        Some(i64::from(dst.port()))
    );
    let copy = doc.get("copy").and_then(|v| v.as_table()).expect("[copy]");
    assert_eq!(copy.get("jobs").and_then(|v| v.as_integer()), Some(2));
}

#[test]
fn parse_major_reads_release_beta_and_distro_versions() {
    assert_eq!(
        parse_major("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
        Some(15)
    );
    assert_eq!(parse_major("postgres (PostgreSQL) 12.22\n"), Some(12));
    assert_eq!(parse_major("postgres (PostgreSQL) 18beta1\n"), Some(18));
    assert_eq!(parse_major("garbage"), None);
}

/// Smoke test of every extra major that `scripts/install-deps --versions`
/// installed: it starts, has logical decoding, and the newest pg_dump can
/// dump it. Majors that are not installed are skipped (and listed).
#[test]
fn every_installed_major_starts_decodes_and_dumps() {
    let mut ran = Vec::new();
    for major in installed_extra_majors() {
        let c = Cluster::builder().version(major).start();
        check_major(&major.to_string(), &c, major);
        ran.push(major.to_string());
    }
    if Path::new(FULL_18_DIR).join("postgres").is_file() {
        let c = Cluster::builder().bin_dir(FULL_18_DIR).start();
        check_major("18-full", &c, 18);
        ran.push("18-full".to_owned());
    }
    let missing: Vec<_> = common::EXTRA_MAJORS
        .iter()
        .filter(|m| !ran.contains(&m.to_string()))
        .collect();
    println!("extra PostgreSQL majors tested: {ran:?}; not installed: {missing:?}");
}

fn check_major(label: &str, c: &Cluster, major: u32) {
    assert_eq!(c.version(), major, "{label}");
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT current_setting('server_version_num')::int / 10000"
        ),
        major.to_string(),
        "{label}"
    );
    c.create_db("smoke");
    c.psql(
        "smoke",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         SELECT pg_create_logical_replication_slot('s', 'pgoutput');
         CREATE PUBLICATION p FOR TABLE t;
         SET synchronous_commit = on;
         INSERT INTO t VALUES (1, 'x');",
    );
    let changes = c.psql(
        "smoke",
        "SELECT count(*) > 0 FROM pg_logical_slot_peek_binary_changes('s', NULL, NULL, \
         'proto_version', '1', 'publication_names', 'p')",
    );
    assert_eq!(changes, "t", "{label}: pgoutput decoded nothing");

    let dump_dir = dump_bin_dir(major);
    let out = std::process::Command::new(dump_dir.join("pg_dump"))
        .arg("--schema-only")
        .arg("-d")
        .arg(c.conninfo("smoke"))
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "{label}: pg_dump from {} failed: {}",
        dump_dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("CREATE TABLE public.t"),
        "{label}: dump lacks table t"
    );
}
