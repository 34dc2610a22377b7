//! The integration-test harness: real, throwaway PostgreSQL clusters and the
//! files pgmigrate needs to migrate between them. Every `tests/*.rs` file
//! starts with `mod common;`.
//!
//! Needs `scripts/install-deps` (PostgreSQL 15, openssl, and the OS user
//! `pgmigrate-test` that runs servers when the tests run as root), and
//! `scripts/install-deps --versions` for other majors.
//!
//! ```ignore
//! mod common;
//! use common::{pgmigrate_bin, tmp_dir, write_config, Cluster};
//!
//! let src = Cluster::builder().start();
//! let dst = Cluster::builder().version(16).start();
//! src.create_db("app");
//! let state = tmp_dir();
//! let cfg = write_config(state.path(), "m1", &src, &dst, &["app"], "[copy]\njobs = 2\n");
//! let status = std::process::Command::new(pgmigrate_bin())
//!     .args(["validate", "--config"]).arg(&cfg).status().unwrap();
//! ```

// Each test binary uses a different part of the harness.
#![allow(dead_code, unused_imports)]

mod cluster;
mod compare;
mod config;
pub mod daemon;
pub mod regress;
mod run;
pub mod scrape;
pub mod streaming;
mod tls;
mod versions;

use std::path::PathBuf;

pub use cluster::{conninfo_value, quote_ident, Cluster, ClusterBuilder};
pub use compare::{assert_same, assert_same_except, assert_same_schema, fingerprint, schema_dump};
pub use config::write_config;
pub use run::{running_as_root, SERVER_USER};
pub use versions::{
    dump_bin_dir, installed_extra_majors, is_installed, newest_client_bin_dir, parse_major,
    server_bin_dir, DEFAULT_MAJOR, EXTRA_MAJORS, FULL_18_DIR,
};

/// The pgmigrate binary cargo built for this test run.
pub fn pgmigrate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pgmigrate"))
}

/// A fresh directory for state, configs and other files of one test, removed
/// on drop. It is under `/tmp` (short paths: pgmigrate's admin socket lives
/// in it) and mode 0755, so a test server running as `pgmigrate-test` can
/// read files the test puts there.
pub fn tmp_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pgmt")
        .tempdir_in("/tmp")
        .unwrap_or_else(|e| panic!("cannot create a test directory in /tmp: {e}"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", dir.path().display()));
    dir
}

/// A fresh directory owned by the server user (`pgmigrate-test` when the
/// tests run as root), for files the server itself must write, such as a
/// tablespace location. Removed on drop.
pub fn server_owned_dir() -> tempfile::TempDir {
    let dir = tmp_dir();
    run::give_to_server_user(dir.path());
    dir
}
