//! How often a daemon writes state.json during an offline migration of many
//! small tables (issue 14): run by hand with
//! `cargo test --test state_writes -- --ignored --nocapture`; needs strace.

mod common;

use std::process::Command;

use common::{pgmigrate_bin, tmp_dir, write_config, Cluster};

#[test]
#[ignore = "measurement; needs strace and takes a minute"]
fn count_state_writes_of_an_offline_migration_of_2000_tables() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("many");
    src.psql(
        "many",
        "DO $$ BEGIN FOR i IN 1..2000 LOOP \
           EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, v text)', i); \
           EXECUTE format('INSERT INTO t%s VALUES (1, ''x'')', i); \
         END LOOP; END $$;",
    );
    let state = tmp_dir();
    let cfg = write_config(
        state.path(),
        "many",
        &src,
        &dst,
        &["many"],
        "mode = \"offline\"\noption = \"migrate\"\n",
    );
    let trace = state.path().join("strace.out");
    let started = std::time::Instant::now();
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2",
            "-o",
        ])
        .arg(&trace)
        .arg(pgmigrate_bin())
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run strace");
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&trace).expect("read strace output");
    let renames = text
        .lines()
        .filter(|l| l.contains("rename") && l.contains("state.json\""))
        .count();
    let fsyncs = text
        .lines()
        .filter(|l| l.contains("fsync(") || l.contains("fdatasync("))
        .count();
    println!(
        "offline migration of 2000 tables: {renames} state.json writes, {fsyncs} fsyncs in all, {seconds:.1} s"
    );
}
