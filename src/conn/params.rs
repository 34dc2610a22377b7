//! Where and how to connect: the wire client's own view of an endpoint,
//! independent of the migration config it is usually built from.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::tls::SslMode;

/// The server's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A host name or IP address, reached over TCP.
    Tcp(String),
    /// A directory holding the server's unix socket `.s.PGSQL.<port>`.
    Unix(PathBuf),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(name) => f.write_str(name),
            Host::Unix(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// Everything needed to open one session.
#[derive(Clone)]
pub struct ConnectParams {
    /// Server address.
    pub host: Host,
    /// TCP port, also the suffix of the unix socket's name.
    pub port: u16,
    /// Address to connect to instead of resolving `host`, which is then
    /// only the name the certificate is checked against (libpq's hostaddr).
    pub hostaddr: Option<std::net::IpAddr>,
    /// Role to log in as.
    pub user: String,
    /// Password for cleartext, md5 or SCRAM; never printed.
    pub password: Option<String>,
    /// Database to connect to.
    pub database: String,
    /// TLS policy (ignored for unix sockets, as libpq does).
    pub sslmode: SslMode,
    /// PEM file of trusted CAs for verify-ca/verify-full.
    pub sslrootcert: Option<PathBuf>,
    /// Shown in `pg_stat_activity`.
    pub application_name: String,
    /// Open a logical replication session (`replication=database`).
    pub replication: bool,
    /// Extra startup parameters (GUCs such as `DateStyle`).
    pub options: Vec<(String, String)>,
    /// Limit for connect, TLS and authentication together.
    pub connect_timeout: Duration,
}

impl ConnectParams {
    /// Parameters with libpq-like defaults for the given address.
    pub fn new(
        host: Host,
        port: u16,
        user: impl Into<String>,
        database: impl Into<String>,
    ) -> ConnectParams {
        ConnectParams {
            host,
            port,
            hostaddr: None,
            user: user.into(),
            password: None,
            database: database.into(),
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            application_name: "pgmigrate".into(),
            replication: false,
            options: Vec::new(),
            connect_timeout: Duration::from_secs(15),
        }
    }

    /// `host:port` or the socket path, for messages.
    pub fn target(&self) -> String {
        match &self.host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}", self.port),
            Host::Tcp(h) => format!("{h}:{}", self.port),
            Host::Unix(dir) => dir
                .join(format!(".s.PGSQL.{}", self.port))
                .display()
                .to_string(),
        }
    }
}

impl fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .field("sslmode", &self.sslmode)
            .field("replication", &self.replication)
            .finish()
    }
}
