//! Where each PostgreSQL major lives on a test machine.
//!
//! Major 15 comes from Debian (`/usr/lib/postgresql/15/bin`); the others are
//! put under `/opt/pgmigrate-pg/<major>/bin` by `scripts/install-deps
//! --versions`. Those are server-only builds (initdb, pg_ctl, postgres), so
//! client programs come from the newest full installation instead:
//! `/opt/pgmigrate-pg/18-full/bin` (psql, pgbench, pg_dump, pg_restore of 18)
//! when present, else Debian's 15.

use std::path::{Path, PathBuf};

/// The major that Debian provides and that clusters use by default.
pub const DEFAULT_MAJOR: u32 = 15;

/// Majors that `scripts/install-deps --versions` tries to install.
pub const EXTRA_MAJORS: &[u32] = &[12, 13, 14, 16, 17, 18];

/// Root of the extra majors.
pub const EXTRA_ROOT: &str = "/opt/pgmigrate-pg";

/// The full PostgreSQL 18 (with pg_dump/pg_restore) from the PyPI wheel.
pub const FULL_18_DIR: &str = "/opt/pgmigrate-pg/18-full/bin";

/// Debian's PostgreSQL 15 programs.
pub const DEBIAN_15_DIR: &str = "/usr/lib/postgresql/15/bin";

/// The directory holding `postgres` for `major`, whether or not it exists.
pub fn server_bin_dir(major: u32) -> PathBuf {
    if major == DEFAULT_MAJOR {
        PathBuf::from(DEBIAN_15_DIR)
    } else {
        Path::new(EXTRA_ROOT).join(major.to_string()).join("bin")
    }
}

/// True when `major`'s server programs are installed.
pub fn is_installed(major: u32) -> bool {
    server_bin_dir(major).join("postgres").is_file()
}

/// The majors other than 15 that are installed, ascending.
pub fn installed_extra_majors() -> Vec<u32> {
    EXTRA_MAJORS
        .iter()
        .copied()
        .filter(|m| is_installed(*m))
        .collect()
}

/// The newest directory with psql and pgbench: 18-full if installed, else 15.
/// Newer clients talk to older servers, so this serves every test cluster.
pub fn newest_client_bin_dir() -> PathBuf {
    let full = Path::new(FULL_18_DIR);
    if full.join("psql").is_file() && full.join("pgbench").is_file() {
        full.to_path_buf()
    } else {
        PathBuf::from(DEBIAN_15_DIR)
    }
}

/// A directory whose pg_dump/pg_restore can dump a source of `source_major`
/// (pg_dump refuses servers newer than itself). Use it as `pg_bin_dir` in a
/// config when the source is newer than 15. Panics naming the install step.
pub fn dump_bin_dir(source_major: u32) -> PathBuf {
    if source_major <= DEFAULT_MAJOR && Path::new(DEBIAN_15_DIR).join("pg_dump").is_file() {
        return PathBuf::from(DEBIAN_15_DIR);
    }
    let full = Path::new(FULL_18_DIR);
    assert!(
        source_major <= 18 && full.join("pg_dump").is_file(),
        "no pg_dump able to dump PostgreSQL {source_major}: expected {} \
         (run scripts/install-deps --versions)",
        full.display()
    );
    full.to_path_buf()
}

/// Reads the major from `postgres --version` ("postgres (PostgreSQL) 15.18 (Debian ...)").
pub fn major_of(postgres: &Path) -> u32 {
    let out = std::process::Command::new(postgres)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} --version: {e}", postgres.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    parse_major(&text).unwrap_or_else(|| {
        panic!(
            "cannot read a major version from `{} --version`: {text:?}",
            postgres.display()
        )
    })
}

/// The major in a `--version` line, `None` when there is none.
pub fn parse_major(version_line: &str) -> Option<u32> {
    let after = version_line.split(')').nth(1)?.trim_start();
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}
