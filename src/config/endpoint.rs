//! `[source]` and `[target]`: where a server is and how to log in to it.
//!
//! The password is resolved here, once, from the environment or a file, and
//! from then on travels only inside [`Secret`], which never prints itself.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::raw::RawEndpoint;
use super::{ConfigError, Ctx};

/// How to reach and log in to one PostgreSQL server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// TCP host name / IP address, or the directory of a unix socket.
    pub host: Host,
    /// TCP port, also the number in the unix socket's file name.
    pub port: u16,
    /// Login role.
    pub user: String,
    /// Password from `password_env` or `password_file`; `None` when the
    /// server needs none (trust, peer) or it comes from elsewhere.
    pub password: Option<Secret>,
    /// TLS policy, with libpq's meaning of each mode.
    pub sslmode: SslMode,
    /// CA bundle for `verify-ca` / `verify-full`. When `None` those modes
    /// verify against the system's root certificates, as libpq does with
    /// `sslrootcert=system`; a private CA therefore needs this set.
    pub sslrootcert: Option<PathBuf>,
    /// Where the server runs; informational only (shown, never acted on).
    pub source_type: SourceType,
}

// One `Host` and one `SslMode` for the whole crate: the wire client owns
// them and the config parses into them, so no mapping can drift.
pub use crate::conn::{Host, SslMode};

/// Where a server runs, in the cloud service's words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceType {
    /// Own hardware (`"on-premises"`).
    #[default]
    OnPremises,
    /// A virtual machine (`"vm"`).
    Vm,
    /// A managed cloud database (`"cloud"`).
    Cloud,
}

/// A password. Its `Debug` and `Display` print `***`, so it cannot leak into
/// logs, `show` output or error messages by accident; [`Secret::expose`] is
/// the one way to read it, and is easy to grep for.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself, for the authentication exchange only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Endpoint {
    /// Checks a raw `[source]`/`[target]` table; `section` names it in errors.
    pub(super) fn from_raw(
        raw: RawEndpoint,
        section: &str,
        ctx: &Ctx<'_>,
    ) -> Result<Endpoint, ConfigError> {
        let key = |k: &str| format!("{section}.{k}");
        if raw.password.is_some() {
            return Err(ctx.invalid(
                &key("password"),
                "passwords are not allowed in the config file; use password_env (name of an \
                 environment variable) or password_file (path of a file) instead",
            ));
        }
        let host = parse_host(&raw.host).map_err(|m| ctx.invalid(&key("host"), m))?;
        let port = match raw.port {
            None => 5432,
            Some(p) => u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| ctx.invalid(&key("port"), format!("must be 1 to 65535, got {p}")))?,
        };
        let user = match raw.user {
            None => "postgres".to_owned(),
            Some(u) if u.is_empty() => return Err(ctx.invalid(&key("user"), "must not be empty")),
            Some(u) if u.contains('\0') => {
                return Err(ctx.invalid(&key("user"), "must not contain a NUL character"))
            }
            Some(u) => u,
        };
        let password = match (raw.password_env, raw.password_file) {
            (Some(_), Some(_)) => {
                return Err(ctx.invalid(
                    &key("password_env"),
                    "password_env and password_file are both set; use one of them",
                ))
            }
            (Some(var), None) => Some(password_from_env(&var, &key("password_env"), ctx)?),
            (None, Some(file)) => Some(password_from_file(&file, &key("password_file"), ctx)?),
            (None, None) => None,
        };
        let sslrootcert = match raw.sslrootcert {
            None => None,
            Some(p) if p.is_empty() => None,
            Some(p) => Some(ctx.resolve(&p)),
        };
        Ok(Endpoint {
            host,
            port,
            user,
            password,
            sslmode: raw.sslmode,
            sslrootcert,
            source_type: raw.source_type,
        })
    }
}

fn parse_host(value: &str) -> Result<Host, String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.contains('\0') {
        return Err("must not contain a NUL character".to_owned());
    }
    if value.starts_with('/') {
        Ok(Host::Unix(PathBuf::from(value)))
    } else {
        Ok(Host::Tcp(value.to_owned()))
    }
}

fn password_from_env(var: &str, key: &str, ctx: &Ctx<'_>) -> Result<Secret, ConfigError> {
    if var.is_empty() {
        return Err(ctx.invalid(key, "must name an environment variable"));
    }
    match (ctx.env)(var) {
        None => Err(ctx.invalid(key, format!("environment variable {var} is not set"))),
        Some(value) if value.is_empty() => {
            Err(ctx.invalid(key, format!("environment variable {var} is empty")))
        }
        Some(value) => Ok(Secret::new(value)),
    }
}

fn password_from_file(file: &str, key: &str, ctx: &Ctx<'_>) -> Result<Secret, ConfigError> {
    if file.is_empty() {
        return Err(ctx.invalid(key, "must be the path of a file"));
    }
    let path = ctx.resolve(file);
    let contents = std::fs::read_to_string(&path).map_err(|e| {
        ctx.invalid(
            key,
            format!("cannot read password file {}: {e}", path.display()),
        )
    })?;
    // Editors and `echo` add a final newline that is not part of the password.
    let password = contents
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&contents);
    if password.is_empty() {
        return Err(ctx.invalid(key, format!("password file {} is empty", path.display())));
    }
    Ok(Secret::new(password.to_owned()))
}

impl Endpoint {
    /// Session parameters for database `db` on this server.
    pub fn connect_params(&self, db: &str) -> crate::conn::ConnectParams {
        let mut p =
            crate::conn::ConnectParams::new(self.host.clone(), self.port, self.user.clone(), db);
        p.password = self.password.as_ref().map(|s| s.expose().to_string());
        p.sslmode = self.sslmode;
        p.sslrootcert = self.sslrootcert.clone();
        p
    }
}
