//! PostgreSQL's own regression database (every test of `parallel_schedule`
//! from the PostgreSQL 15 sources, as pg_upgrade's test uses it: hundreds
//! of tables, partition and inheritance trees, dropped columns, RLS
//! policies, rules, publications, large objects, comments on everything)
//! migrated offline and then online under writes. Both must leave every
//! table, the normalised `pg_dump --schema-only`, sequences and large
//! objects identical, and `pgmigrate verify` must agree.
//!
//! The database is built once (one test function, about 20-80 s) and reused:
//! the online run migrates a copy made from it as a template, and it is
//! restored into PostgreSQL 12 and 18 sources (as much as they accept) that
//! migrate into 15 and 18.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::{start, verify_ok, wait_exit, wait_ready};
use common::regress::build_regression_db;
use common::{
    assert_same, assert_same_schema, dump_bin_dir, is_installed, pgmigrate_bin, server_owned_dir,
    tmp_dir, write_config, Cluster, FULL_18_DIR,
};

fn pgmigrate(args: &[&str]) -> Output {
    Command::new(pgmigrate_bin())
        .args(args)
        .env("PGMIGRATE_LOG", "info")
        .output()
        .expect("run pgmigrate")
}

/// Every check of the issue: tables, schema dump, sequences and large
/// objects (both in `assert_same`), and verify.
fn assert_identical(src: &Cluster, dst: &Cluster, db: &str, cfg: &Path) {
    assert_same(src, dst, db);
    assert_same_schema(src, dst, db);
    verify_ok(cfg);
}

fn offline(src: &Cluster) {
    let dst = Cluster::start_default();
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "regress-offline",
        src,
        &dst,
        &["regression"],
        "mode = \"offline\"\n[copy]\njobs = 2\nindex_jobs = 4\n",
    );
    let started = Instant::now();
    let out = pgmigrate(&["run", "--config", &cfg.display().to_string()]);
    eprintln!("offline migration took {:.1?}", started.elapsed());
    assert!(
        out.status.success(),
        "offline run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_identical(src, &dst, "regression", &cfg);

    // verify sees what only it compares: a dropped policy, a large object's
    // contents, a comment's text.
    dst.psql(
        "regression",
        "DO $$ DECLARE p record; BEGIN SELECT polname, polrelid::regclass AS t INTO p \
         FROM pg_policy ORDER BY 1 LIMIT 1; \
         EXECUTE format('DROP POLICY %I ON %s', p.polname, p.t); END $$;\
         SELECT lo_put(oid, 0, '\\x00') FROM pg_largeobject_metadata ORDER BY oid LIMIT 1;\
         COMMENT ON CONSTRAINT comment_test_child_fk ON comment_test_child IS 'changed';",
    );
    let out = pgmigrate(&["verify", "--config", &cfg.display().to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(6), "{text}");
    for what in [
        "policy ",
        "large object ",
        "comment on constraint comment_test_child_fk",
    ] {
        assert!(text.contains(what), "verify must name the {what}: {text}");
    }
}

/// Writes to a keyed table and a keyless one until `stop`.
fn writer(src: &Cluster, db: &str, stop: Arc<AtomicBool>) -> usize {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) && i < 2000 {
        let id = 100_000 + i;
        src.psql(
            db,
            &format!(
                "INSERT INTO public.mvtest_t VALUES ({id}, 'x', {i});\
                 UPDATE public.mvtest_t SET amt = amt + 1 WHERE id = {prev};\
                 DELETE FROM public.mvtest_t WHERE id = {old};\
                 INSERT INTO public.int8_tbl VALUES ({id}, -{id});\
                 UPDATE public.int8_tbl SET q2 = q2 - 1 WHERE q1 = {prev};\
                 DELETE FROM public.int8_tbl WHERE q1 = {old};",
                prev = id - 1,
                old = id - 2,
            ),
        );
        i += 1;
    }
    i
}

fn online(src: &Cluster) {
    const DB: &str = "regression_online";
    src.psql(
        "postgres",
        &format!("CREATE DATABASE {DB} TEMPLATE regression"),
    );
    // Logical replication needs a replica identity on every table written.
    src.psql(
        DB,
        "DO $$ DECLARE r record; BEGIN FOR r IN SELECT c.oid::regclass AS t FROM pg_class c \
         WHERE c.relkind IN ('r', 'p') AND c.relreplident = 'd' \
           AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace) \
           AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
         LOOP EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', r.t); END LOOP; END $$",
    );
    let dst = Cluster::start_default();
    let state = tmp_dir();
    let name = "regress-online";
    let cfg = write_config(
        state.path(),
        name,
        src,
        &dst,
        &[DB],
        "option = \"migrate\"\n[copy]\njobs = 2\nindex_jobs = 4\n[apply]\nworkers = 2\n",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writes = std::thread::scope(|scope| {
        let w = {
            let stop = stop.clone();
            scope.spawn(move || writer(src, DB, stop))
        };
        let log = state.path().join("run.log");
        let mut child = start(&cfg, &log);
        wait_ready(
            state.path(),
            name,
            &mut child,
            &log,
            Duration::from_secs(300),
        );
        stop.store(true, Ordering::Relaxed);
        let writes = w.join().expect("writer");
        let out = pgmigrate(&[
            "cutover",
            name,
            "--state-dir",
            &state.path().display().to_string(),
            "--wait",
            "--timeout",
            "120",
        ]);
        assert!(
            out.status.success(),
            "cutover failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let status = wait_exit(&mut child, Duration::from_secs(60));
        assert!(status.success(), "run exited {status}");
        writes
    });
    eprintln!(
        "online migration with {writes} write rounds took {:.1?}",
        started.elapsed()
    );
    assert!(writes > 0, "no writes happened during the online run");
    assert_identical(src, &dst, DB, &cfg);
}

/// The 15 database restored into a `source_major` server (as much of it as
/// that major accepts: C functions of the 15 `regress.so` and newer syntax
/// fail there) and migrated offline into `target_major`.
fn cross_version(src15: &Cluster, source_major: u32, target_major: u32) {
    let src = Cluster::builder().version(source_major).start();
    let roles = src15.psql(
        "postgres",
        "SELECT coalesce(string_agg(format('CREATE ROLE %I;', rolname), ' '), '') FROM pg_roles \
         WHERE rolname !~ '^pg_' AND rolname <> 'postgres'",
    );
    src.psql("postgres", &format!("{roles} CREATE DATABASE regression"));
    let dir = tmp_dir();
    let dump = dir.path().join("regression.dump");
    let tools = Path::new(FULL_18_DIR);
    let out = Command::new(tools.join("pg_dump"))
        .args(["-Fc", "--no-sync", "-h"])
        .arg(src15.socket_dir())
        .args(["-p", &src15.port().to_string(), "-U", "postgres", "-f"])
        .arg(&dump)
        .arg("regression")
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Errors are expected (see above); what matters is what got in.
    let _ = Command::new(tools.join("pg_restore"))
        .args(["-h"])
        .arg(src.socket_dir())
        .args([
            "-p",
            &src.port().to_string(),
            "-U",
            "postgres",
            "-d",
            "regression",
        ])
        .arg(&dump)
        .output()
        .expect("run pg_restore");
    let tables: u32 = src
        .psql("regression", "SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")
        .parse()
        .unwrap_or(0);
    assert!(
        tables > 300,
        "only {tables} tables restored into PostgreSQL {source_major}"
    );

    let dst = Cluster::builder().version(target_major).start();
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        &format!("regress-{source_major}-{target_major}"),
        &src,
        &dst,
        &["regression"],
        &format!(
            "mode = \"offline\"\npg_bin_dir = \"{}\"\n[copy]\njobs = 2\nindex_jobs = 4\n",
            dump_bin_dir(source_major).display()
        ),
    );
    let out = pgmigrate(&["run", "--config", &cfg.display().to_string()]);
    assert!(
        out.status.success(),
        "{source_major} -> {target_major}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(&src, &dst, "regression");
    if source_major == target_major {
        assert_same_schema(&src, &dst, "regression");
    }
    verify_ok(&cfg);
}

#[test]
fn regression_database_migrates_identically_offline_and_online() {
    let src = Cluster::start_default();
    let out = server_owned_dir();
    let took = build_regression_db(&src, "regression", out.path());
    eprintln!("regression database built in {took:.1?}");
    offline(&src);
    online(&src);
    for (from, to) in [(12, 15), (18, 18)] {
        if is_installed(from)
            && is_installed(to)
            && Path::new(FULL_18_DIR).join("pg_restore").is_file()
        {
            let started = Instant::now();
            cross_version(&src, from, to);
            eprintln!("PostgreSQL {from} -> {to} took {:.1?}", started.elapsed());
        } else {
            eprintln!("PostgreSQL {from} or {to} not installed (scripts/install-deps --versions): {from} -> {to} skipped");
        }
    }
}
