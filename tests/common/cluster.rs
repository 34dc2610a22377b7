//! A real, throwaway PostgreSQL cluster per test.
//!
//! Each cluster lives in its own directory under `/tmp` (data directory,
//! unix socket directory, TLS files), listens on 127.0.0.1 on a port of its
//! own and is stopped and removed when the [`Cluster`] is dropped, so tests
//! can start clusters from parallel threads.
//!
//! ```ignore
//! let src = Cluster::builder().version(13).conf("max_wal_size", "64MB").start();
//! let dst = Cluster::builder().tls(true).start();
//! src.create_db("app");
//! src.psql("app", "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);");
//! assert_eq!(src.psql("app", "SELECT count(*) FROM t"), "1");
//! ```

use std::collections::HashSet;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use tempfile::TempDir;

use super::run::{check, client_command, give_to_server_user, run_with_stdin, server_command};
use super::tls::make_pki;
use super::versions::{self, major_of, newest_client_bin_dir, server_bin_dir};

/// Settings every test cluster gets; `ClusterBuilder::conf` entries come
/// after them and win. Durability is off: a test cluster is never recovered.
const DEFAULT_CONF: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("wal_level", "logical"),
    ("max_replication_slots", "20"),
    ("max_wal_senders", "20"),
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("shared_buffers", "128MB"),
    ("max_connections", "100"),
    ("logging_collector", "off"),
    ("log_line_prefix", "%m [%p] %q%u@%d "),
];

/// pg_hba.conf lines after any `ClusterBuilder::hba_line` entries.
const DEFAULT_HBA: &[&str] = &[
    "local all all trust",
    "host all all 127.0.0.1/32 trust",
    "local replication all trust",
    "host replication all 127.0.0.1/32 trust",
];

/// Attempts at finding a free port before giving up.
const PORT_ATTEMPTS: usize = 20;

/// Seconds `pg_ctl -w` waits for a start or stop; generous for a loaded 2-core CI.
const PG_CTL_TIMEOUT_SECS: &str = "180";

/// The settings file the harness owns, included from postgresql.conf.
const HARNESS_CONF: &str = "pgmigrate_harness.conf";

/// The server log, inside the data directory.
const LOG_FILE: &str = "server.log";

/// How to make a [`Cluster`]; get one from [`Cluster::builder`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    version: u32,
    bin_dir: Option<PathBuf>,
    conf: Vec<(String, String)>,
    hba: Vec<String>,
    tls: bool,
}

impl ClusterBuilder {
    /// PostgreSQL major to run (default 15, Debian's). Other majors come from
    /// `/opt/pgmigrate-pg/<major>/bin` (`scripts/install-deps --versions`).
    pub fn version(mut self, major: u32) -> Self {
        self.version = major;
        self
    }

    /// Runs the server from this directory instead of the one `version`
    /// picks (e.g. `/opt/pgmigrate-pg/18-full/bin`); the major is read from it.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Adds a postgresql.conf setting. The value is quoted by the harness,
    /// so pass it bare: `.conf("work_mem", "64MB")`, `.conf("log_statement", "all")`.
    pub fn conf(mut self, key: &str, value: &str) -> Self {
        self.conf.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Adds a pg_hba.conf line before the default trust lines, so it wins for
    /// the connections it matches: `.hba_line("host all md5user 127.0.0.1/32 md5")`.
    pub fn hba_line(mut self, line: &str) -> Self {
        self.hba.push(line.to_owned());
        self
    }

    /// Turns on TLS (`ssl = on`) with a fresh test CA and a server certificate
    /// for `localhost` and `127.0.0.1`; see [`Cluster::tls_ca_path`].
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Creates, configures and starts the cluster; returns once it accepts
    /// connections. Panics with the server log if it cannot start.
    pub fn start(self) -> Cluster {
        let bin_dir = self
            .bin_dir
            .clone()
            .unwrap_or_else(|| server_bin_dir(self.version));
        let postgres = bin_dir.join("postgres");
        assert!(
            postgres.is_file(),
            "no PostgreSQL server at {} (major {} requested): \
             run scripts/install-deps --versions",
            postgres.display(),
            self.version
        );
        let version = major_of(&postgres);
        let client_bin_dir = if bin_dir.join("psql").is_file() && bin_dir.join("pgbench").is_file()
        {
            bin_dir.clone()
        } else {
            newest_client_bin_dir()
        };

        // /tmp, not $TMPDIR: the socket path must stay short (107 bytes) and
        // the server user must be able to reach it.
        let base = tempfile::Builder::new()
            .prefix("pgm")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("cannot create a cluster directory in /tmp: {e}"));
        let root = base.path().to_path_buf();
        set_mode(&root, 0o755);
        let socket_dir = root.join("sock");
        make_dir(&socket_dir, 0o755);
        give_to_server_user(&root);
        let data_dir = root.join("data");

        let mut initdb = server_command(&bin_dir.join("initdb"));
        initdb
            .current_dir(&root)
            .arg("-D")
            .arg(&data_dir)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync");
        check(initdb.output(), &format!("initdb (PostgreSQL {version})"));

        let mut conf: Vec<(String, String)> = DEFAULT_CONF
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        conf.push((
            "unix_socket_directories".to_owned(),
            socket_dir.display().to_string(),
        ));
        let tls_ca = if self.tls {
            let pki = make_pki(&root.join("tls"));
            give_to_server_user(&root.join("tls"));
            conf.push(("ssl".to_owned(), "on".to_owned()));
            conf.push((
                "ssl_cert_file".to_owned(),
                pki.server_cert.display().to_string(),
            ));
            conf.push((
                "ssl_key_file".to_owned(),
                pki.server_key.display().to_string(),
            ));
            Some(pki.ca_cert)
        } else {
            None
        };
        conf.extend(self.conf);

        let mut hba = self.hba.join("\n");
        for line in DEFAULT_HBA {
            hba.push('\n');
            hba.push_str(line);
        }
        hba.push('\n');
        write_file(&data_dir.join("pg_hba.conf"), &hba);
        append_file(
            &data_dir.join("postgresql.conf"),
            &format!("\ninclude '{HARNESS_CONF}'\n"),
        );

        let mut cluster = Cluster {
            data_dir,
            socket_dir,
            bin_dir,
            client_bin_dir,
            version,
            port: 0,
            tls_ca,
            conf,
            running: false,
            base,
        };
        cluster.start_on_free_port();
        cluster
    }
}

/// A running throwaway cluster; superuser `postgres`, trust auth by default.
/// Dropping it stops the server (`pg_ctl stop -m immediate`) and removes its files.
pub struct Cluster {
    data_dir: PathBuf,
    socket_dir: PathBuf,
    bin_dir: PathBuf,
    client_bin_dir: PathBuf,
    version: u32,
    port: u16,
    tls_ca: Option<PathBuf>,
    conf: Vec<(String, String)>,
    running: bool,
    // Last, so the directory goes only after Drop::drop stopped the server.
    base: TempDir,
}

impl Cluster {
    /// A builder with the defaults: PostgreSQL 15, no TLS, trust auth.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            version: versions::DEFAULT_MAJOR,
            bin_dir: None,
            conf: Vec::new(),
            hba: Vec::new(),
            tls: false,
        }
    }

    /// Starts a default cluster: `Cluster::builder().start()`.
    pub fn start_default() -> Cluster {
        Cluster::builder().start()
    }

    /// The TCP port on 127.0.0.1 (the unix socket uses the same number).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The unix socket directory: use it as `host` for libpq or the config.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory of the server's programs (postgres, pg_ctl, initdb).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The directory the harness takes psql and pgbench from: the server's
    /// own when it has them, else the newest installed client.
    pub fn client_bin_dir(&self) -> &Path {
        &self.client_bin_dir
    }

    /// The server's major version (read from `postgres --version`).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The CA certificate that signed the server certificate, when TLS is on.
    pub fn tls_ca_path(&self) -> Option<&Path> {
        self.tls_ca.as_deref()
    }

    /// Whether the server is running (false after [`Cluster::stop`]).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// libpq conninfo over the unix socket as `postgres`.
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={}",
            conninfo_value(&self.socket_dir.display().to_string()),
            self.port,
            conninfo_value(db)
        )
    }

    /// libpq conninfo over TCP to 127.0.0.1 as `postgres`.
    pub fn tcp_conninfo(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    /// Runs `sql` (any number of statements, psql meta-commands allowed) in
    /// `db` as superuser `postgres` over the unix socket and returns the
    /// output unaligned, tuples only: rows on lines, columns split by `|`,
    /// without the final newline. Panics with psql's stderr on any error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql).unwrap_or_else(|e| {
            panic!(
                "psql on port {} db {db} failed: {e}\nSQL:\n{sql}",
                self.port
            )
        })
    }

    /// [`Cluster::psql`] that returns psql's stderr instead of panicking.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        self.try_psql_conninfo(&self.conninfo(db), sql)
    }

    /// Runs `sql` with psql connected by a libpq conninfo string of the
    /// caller's (e.g. `"host=localhost hostaddr=127.0.0.1 port=… sslmode=verify-full
    /// sslrootcert=… user=… password=… dbname=…"`); same output as [`Cluster::psql`].
    pub fn try_psql_conninfo(&self, conninfo: &str, sql: &str) -> Result<String, String> {
        let mut cmd = client_command(&self.client_bin_dir.join("psql"));
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            conninfo,
        ]);
        let out = run_with_stdin(cmd, sql, "psql")?;
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            Ok(text.strip_suffix('\n').unwrap_or(&text).to_owned())
        } else {
            Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            ))
        }
    }

    /// Creates database `name` (quoted as an identifier).
    pub fn create_db(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        );
    }

    /// Runs pgbench against this cluster over the unix socket as `postgres`;
    /// `args` are pgbench's own, the database name last:
    /// `c.pgbench(&["-i", "-s", "1", "bench"])`. Returns stdout; panics on failure.
    pub fn pgbench(&self, args: &[&str]) -> String {
        let mut cmd = client_command(&self.client_bin_dir.join("pgbench"));
        cmd.arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres"])
            .args(args);
        let out = check(cmd.output(), &format!("pgbench {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server log so far.
    pub fn log_contents(&self) -> String {
        fs::read(self.data_dir.join(LOG_FILE))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(no server log: {e})"))
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`); the files stay.
    pub fn stop(&mut self) {
        self.pg_ctl_stop("fast");
    }

    /// Stops the server the way a crash would (`pg_ctl stop -m immediate`):
    /// no shutdown checkpoint, recovery runs on the next start.
    pub fn stop_immediate(&mut self) {
        self.pg_ctl_stop("immediate");
    }

    /// Starts the server again on the same port (stopping it first if it runs).
    pub fn restart(&mut self) {
        if self.running {
            self.stop();
        }
        if let Err(e) = self.pg_ctl_start() {
            panic!("{e}");
        }
    }

    fn pg_ctl_stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let out = self.pg_ctl(&["stop", "-m", mode]);
        let out = out.unwrap_or_else(|e| panic!("pg_ctl stop: {e}"));
        assert!(
            out.status.success(),
            "pg_ctl stop -m {mode} failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_contents()
        );
        self.running = false;
    }

    fn pg_ctl(&self, action: &[&str]) -> std::io::Result<std::process::Output> {
        let mut cmd = server_command(&self.bin_dir.join("pg_ctl"));
        cmd.current_dir(self.base.path())
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.data_dir.join(LOG_FILE))
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS])
            .args(action);
        cmd.output()
    }

    /// Picks ports until the server binds one: two clusters (or anything else
    /// on the machine) may have probed the same port at the same moment.
    fn start_on_free_port(&mut self) {
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port();
            self.write_harness_conf();
            let log_before = self.log_contents().len();
            match self.pg_ctl_start() {
                Ok(()) => return,
                Err(e) => {
                    let new_log = self
                        .log_contents()
                        .get(log_before..)
                        .unwrap_or("")
                        .to_owned();
                    if !new_log.contains("Address already in use") {
                        panic!("{e}");
                    }
                    last_error = e;
                }
            }
        }
        panic!("no free port after {PORT_ATTEMPTS} attempts; last error: {last_error}");
    }

    fn pg_ctl_start(&mut self) -> Result<(), String> {
        let out = self
            .pg_ctl(&["start"])
            .map_err(|e| format!("cannot run pg_ctl start: {e}"))?;
        if out.status.success() {
            self.running = true;
            return Ok(());
        }
        Err(format!(
            "PostgreSQL {} in {} did not start on port {}:\npg_ctl: {}{}\nserver log:\n{}",
            self.version,
            self.data_dir.display(),
            self.port,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_contents()
        ))
    }

    fn write_harness_conf(&self) {
        let mut text = format!("port = {}\n", self.port);
        for (key, value) in &self.conf {
            text.push_str(&format!("{key} = '{}'\n", value.replace('\'', "''")));
        }
        write_file(&self.data_dir.join(HARNESS_CONF), &text);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            // Best effort: a failure here must not hide the test's own panic.
            let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
            self.running = false;
        }
    }
}

/// `name` as a double-quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` quoted for a libpq conninfo string (`'...'`, with `\\` and `'` escaped).
pub fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A port in 20000..32000 (below Linux's ephemeral range, so outgoing
/// connections do not take it) that this process has not handed out before
/// and that is free right now.
fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let candidate = 20000 + (random_u64() % 12000) as u16;
        let mut used = handed.lock().unwrap_or_else(|p| p.into_inner());
        if used.contains(&candidate) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, candidate)).is_ok() {
            used.insert(candidate);
            return candidate;
        }
    }
}

/// Randomness without a crate: std seeds each `RandomState` from the OS.
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

fn make_dir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    set_mode(path, mode);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

fn write_file(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn append_file(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("cannot append to {}: {e}", path.display()));
}
