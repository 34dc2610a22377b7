//! PostgreSQL's own regression database, built the way pg_upgrade's test
//! builds it: `pg_regress --schedule=parallel_schedule` from the PostgreSQL
//! 15 sources against a running cluster, with `regress.so` built from
//! `regress.c`. `scripts/install-deps` prepares all of it under
//! [`REGRESS_ROOT`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::run::{check, give_to_server_user, server_command};

/// Where `scripts/install-deps` puts the suite, `regress.so` and pg_regress.
pub const REGRESS_ROOT: &str = "/opt/pgmigrate-pg/regress-15";

/// The suite's directory (`sql/`, `expected/`, `data/`, `parallel_schedule`).
pub fn regress_input_dir() -> PathBuf {
    Path::new(REGRESS_ROOT).join("src/test/regress")
}

/// True when `scripts/install-deps` prepared the suite.
pub fn regress_installed() -> bool {
    Path::new(REGRESS_ROOT).join(".verified").is_file()
        && regress_input_dir().join("parallel_schedule").is_file()
        && Path::new(REGRESS_ROOT).join("lib/regress.so").is_file()
}

/// Runs the whole parallel schedule against `c`, leaving database `db`
/// behind, and returns how long it took. Test failures (output diffs) do
/// not matter, only the database they leave; pg_regress not finishing does.
pub fn build_regression_db(c: &Cluster, db: &str, out_dir: &Path) -> Duration {
    assert!(
        regress_installed(),
        "the PostgreSQL 15 regression suite is not in {REGRESS_ROOT}: run scripts/install-deps"
    );
    give_to_server_user(out_dir);
    let started = Instant::now();
    // As the server's OS user: some tests have the server write files into
    // the output directory, which pg_regress creates.
    let mut cmd = server_command(&Path::new(REGRESS_ROOT).join("bin/pg_regress"));
    cmd.current_dir(regress_input_dir())
        .arg(format!("--inputdir={}", regress_input_dir().display()))
        .arg(format!("--outputdir={}", out_dir.display()))
        .arg(format!("--bindir={}", c.client_bin_dir().display()))
        .arg(format!("--dlpath={REGRESS_ROOT}/lib"))
        .arg(format!("--host={}", c.socket_dir().display()))
        .arg(format!("--port={}", c.port()))
        .args(["--user=postgres", "--schedule=parallel_schedule"])
        .arg(format!("--dbname={db}"))
        // Bounded, so two cores shared with other test binaries keep up.
        .arg("--max-connections=6");
    let out = cmd.output();
    let out = match out {
        Ok(o) if o.status.code() == Some(1) => o, // some tests' output differed
        other => check(other, "pg_regress --schedule=parallel_schedule"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tests passed") || text.contains("tests failed"),
        "pg_regress did not run the schedule:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}
