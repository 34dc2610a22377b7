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
    if std::env::var_os("STATE_WRITES_DUMP").is_some() {
        println!("{text}");
    }
    let lines: Vec<&str> = text.lines().collect();
    let is_fsync = |l: &str| l.contains("fsync(") || l.contains("fdatasync(");
    let is_state_rename = |l: &str| l.contains("rename") && l.contains("state.json\"");
    let renames = lines.iter().filter(|l| is_state_rename(l)).count();
    let fsyncs = lines.iter().filter(|l| is_fsync(l)).count();
    // The store fsyncs the temp file just before its rename and the
    // directory just after (strace lines start with the thread id).
    let tid = |l: &str| l.split_whitespace().next().unwrap_or("").to_owned();
    let mut file_syncs = 0;
    let mut dir_syncs = 0;
    for (i, l) in lines.iter().enumerate() {
        if !is_state_rename(l) {
            continue;
        }
        let same = |j: usize| lines.get(j).filter(|m| tid(m) == tid(l) && is_fsync(m));
        file_syncs += usize::from(i > 0 && same(i - 1).is_some());
        // A fsync followed by another rename is the next write's file.
        let next_write = lines
            .get(i + 2)
            .is_some_and(|m| tid(m) == tid(l) && is_state_rename(m));
        dir_syncs += usize::from(same(i + 1).is_some() && !next_write);
    }
    println!(
        "offline migration of 2000 tables: {renames} state.json writes ({file_syncs} file fsyncs, \
         {dir_syncs} directory fsyncs), {fsyncs} fsyncs in all, {seconds:.1} s"
    );
}
