//! Running PostgreSQL programs as the right OS user.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root (CI does)
//! every server-side program (initdb, pg_ctl, postgres) runs as the
//! unprivileged user that `scripts/install-deps` creates, and the directories
//! it writes are handed to that user. As a normal user everything runs as
//! that user. Client programs (psql, pgbench) always run as the test process.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The OS user that runs test servers when the tests run as root.
pub const SERVER_USER: &str = "pgmigrate-test";

/// Environment variables that would silently redirect a client program away
/// from the cluster a test means (a developer's own `PGHOST`, say).
const PG_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGAPPNAME",
    "PGDATA",
    "PGTZ",
];

/// True when the test process is root, so servers must run as [`SERVER_USER`].
pub fn running_as_root() -> bool {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and
    // cannot fail (POSIX: "shall always be successful").
    unsafe { libc::geteuid() == 0 }
}

/// A command for a server-side program, run as [`SERVER_USER`] when we are root.
pub fn server_command(program: &Path) -> Command {
    let mut cmd = if running_as_root() {
        ensure_server_user();
        let mut c = Command::new("runuser");
        c.args(["-u", SERVER_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    clean_env(&mut cmd);
    cmd
}

/// A command for a client program (psql, pgbench), run as the test process.
pub fn client_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    clean_env(&mut cmd);
    cmd
}

fn clean_env(cmd: &mut Command) {
    for var in PG_ENV {
        cmd.env_remove(var);
    }
    cmd.env("PGCONNECT_TIMEOUT", "10").stdin(Stdio::null());
}

fn ensure_server_user() {
    let known = Command::new("id")
        .args(["-u", SERVER_USER])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        known,
        "the tests run as root, so test servers run as the OS user `{SERVER_USER}`, \
         which does not exist: run scripts/install-deps"
    );
}

/// Hands `path` (recursively) to [`SERVER_USER`] when we are root; a no-op otherwise.
pub fn give_to_server_user(path: &Path) {
    if !running_as_root() {
        return;
    }
    ensure_server_user();
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{SERVER_USER}:"))
        .arg(path)
        .output();
    check(out, &format!("chown -R {SERVER_USER}: {}", path.display()));
}

/// Runs `cmd`, feeding it `stdin` from a separate thread so that a large
/// input and a large output cannot block each other. Errors carry stderr.
pub fn run_with_stdin(mut cmd: Command, stdin: &str, what: &str) -> Result<Output, String> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let writer = child.stdin.take().map(|mut pipe| {
        let input = stdin.to_owned();
        // A program that exits early closes its end; the error that causes
        // here is not the interesting one, its exit status is.
        std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        })
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{what}: cannot wait: {e}"))?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ok(out)
}

/// Panics with the program's stdout and stderr unless it ran and exited 0.
pub fn check(out: std::io::Result<Output>, what: &str) -> Output {
    match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!(
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("{what}: cannot run: {e}"),
    }
}
