//! The config file, parsed once into a [`Config`] that is valid by
//! construction: every rule of DESIGN.md's "Config file" is checked here and
//! nowhere else, and secrets are read from the environment or a file at parse
//! time and never again.
//!
//! Relative paths in the file (`state_dir`, `pg_bin_dir`, `password_file`,
//! `sslrootcert`) are relative to the config file's directory, so a unit's
//! working directory does not change their meaning.

mod ddl;
mod endpoint;
mod keyless;
mod raw;
mod size;
mod tables;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use ddl::{DdlMode, MESSAGES_SINCE};
pub use endpoint::{Endpoint, Host, Secret, SourceType, SslMode};
pub use keyless::{KeylessMode, KeylessPolicy, TablePattern};
pub use tables::{FilterList, TableChoice, TableFilter};

use raw::{RawApply, RawConfig, RawCopy, RawKeyless, RawTables};

/// Environment variable naming the default state directory.
pub const STATE_DIR_ENV: &str = "PGMIGRATE_STATE_DIR";
/// State directory when neither the config nor [`STATE_DIR_ENV`] sets one.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/pgmigrate";
/// Prometheus listen address when `metrics_listen` is not set.
pub const DEFAULT_METRICS_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9898,
));

/// A whole migration, as described by its config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Unique within `state_dir`; names the state directory.
    pub name: MigrationName,
    /// Online (stream changes until cutover) or offline (copy once).
    pub mode: Mode,
    /// Validate only, validate then migrate, or migrate without validating.
    pub option: RunOption,
    /// Databases to migrate: non-empty, distinct, each non-empty without NUL.
    pub databases: Vec<String>,
    /// Drop and recreate a target database that already exists.
    pub overwrite_target: bool,
    /// Parent of `<name>/state.json`.
    pub state_dir: PathBuf,
    /// Prometheus `/metrics` listen address; `None` disables the exporter.
    pub metrics_listen: Option<SocketAddr>,
    /// Directory of `pg_dump`/`pg_restore`; `None` means the newest
    /// `/usr/lib/postgresql/*/bin`, else `PATH`.
    pub pg_bin_dir: Option<PathBuf>,
    /// The server migrated from.
    pub source: Endpoint,
    /// The server migrated to.
    pub target: Endpoint,
    /// `[copy]`.
    pub copy: CopyConfig,
    /// `[apply]`.
    pub apply: ApplyConfig,
    /// `[cutover]`.
    pub cutover: CutoverConfig,
    /// `[keyless]`: per-table handling of tables without a key.
    pub keyless: KeylessPolicy,
    /// `[tables]`: which tables are migrated, schema only, or left out.
    pub tables: TableFilter,
    /// `ddl`: schema changes during streaming; `None` picks by privilege
    /// ([`DdlMode::resolve`]).
    pub ddl: Option<DdlMode>,
    /// `[verify]`.
    pub verify: VerifyConfig,
}

/// `[verify]`: how hard `verify` may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VerifyConfig {
    /// Rows read per second per side at most, on average over each
    /// table or key range; 0 means no limit.
    pub max_rows_per_second: u64,
}

/// `[copy]`: the snapshot copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyConfig {
    /// Parallel COPY streams; at least 1.
    pub jobs: usize,
    /// Tables larger than this many bytes are copied in parallel ctid ranges;
    /// 0 means never split (see [`CopyConfig::split_threshold`]).
    pub split_tables_larger_than: u64,
    /// Parallel index / constraint builds; at least 1.
    pub index_jobs: usize,
}

impl CopyConfig {
    /// The size above which a table is split, or `None` when splitting is off.
    pub fn split_threshold(&self) -> Option<u64> {
        Some(self.split_tables_larger_than).filter(|b| *b != 0)
    }
}

/// `[apply]`: the change stream's apply workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyConfig {
    /// Apply workers per database; 1 to [`MAX_APPLY_WORKERS`].
    pub workers: usize,
    /// Most source changes grouped into one target transaction; at least 1.
    pub batch_max_changes: usize,
    /// Longest a batch waits for more changes before committing.
    pub batch_max_delay: Duration,
}

/// Upper bound of `apply.workers`: each worker holds a target connection and
/// a replication origin, both limited server-side.
pub const MAX_APPLY_WORKERS: usize = 64;

/// `[cutover]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutoverConfig {
    /// Make the source databases read-only and end their sessions at cutover.
    pub lock_source: bool,
    /// After cutover, stream the target's changes back to the source until
    /// `rollback` or `finish`.
    pub reverse_replication: bool,
}

/// `mode`: whether changes are streamed after the copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Copy, then stream changes until cutover (`"online"`).
    #[default]
    Online,
    /// Copy once; the source must not change meanwhile (`"offline"`).
    Offline,
}

impl Mode {
    /// The config / state.json spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Online => "online",
            Mode::Offline => "offline",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `option`: how much of the job to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunOption {
    /// Premigration checks only (`"validate"`).
    Validate,
    /// Checks, then migrate if none failed (`"validate-and-migrate"`).
    #[default]
    ValidateAndMigrate,
    /// Migrate without checks (`"migrate"`).
    Migrate,
}

/// A migration's name: ASCII letters, digits and '-', not starting with '-',
/// 1 to [`MigrationName::MAX_LEN`] characters. Safe as a directory name and,
/// after mapping, inside PostgreSQL identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MigrationName(String);

impl MigrationName {
    /// Longest name accepted (PostgreSQL's identifier limit).
    pub const MAX_LEN: usize = 63;

    /// Checks `name` against the naming rule.
    pub fn new(name: &str) -> Result<MigrationName, InvalidName> {
        let reason = if name.is_empty() {
            "must not be empty".to_owned()
        } else if name.len() > Self::MAX_LEN {
            format!(
                "is {} characters long; at most {} are allowed",
                name.len(),
                Self::MAX_LEN
            )
        } else if name.starts_with('-') {
            "must not start with '-'".to_owned()
        } else if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            format!("contains {c:?}; only letters, digits and '-' are allowed")
        } else {
            return Ok(MigrationName(name.to_owned()));
        };
        Err(InvalidName {
            name: name.to_owned(),
            reason,
        })
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MigrationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for MigrationName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MigrationName::new(s)
    }
}

impl TryFrom<String> for MigrationName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        MigrationName::new(&s)
    }
}

impl From<MigrationName> for String {
    fn from(name: MigrationName) -> String {
        name.0
    }
}

/// A string that breaks the migration naming rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid migration name {name:?}: {reason}")]
pub struct InvalidName {
    /// The rejected text.
    pub name: String,
    /// Which rule it breaks.
    pub reason: String,
}

/// Why a config file was rejected. Every variant names the file.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// Not TOML, a wrong type, a missing or an unknown key (toml's message,
    /// with line and column).
    #[error("config file {}: {message}", path.display())]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// toml's description, including the position.
        message: String,
    },
    /// A value breaks one of the config rules.
    #[error("config file {}: {key}: {message}", path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Dotted key, e.g. `source.password_env`.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

impl Config {
    /// Reads and checks the config file at `path`; relative paths inside are
    /// resolved against its directory, secrets are read from the process
    /// environment and files now.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        let env = |var: &str| std::env::var(var).ok();
        Config::parse(&text, path, base_dir, &env)
    }

    /// Checks config text not read from a file (errors name it `<string>`);
    /// relative paths are resolved against `base_dir`.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let env = |var: &str| std::env::var(var).ok();
        Config::parse(text, Path::new("<string>"), base_dir, &env)
    }

    /// The conversion itself, with the environment passed in so tests need
    /// not mutate the process environment.
    fn parse(
        text: &str,
        path: &Path,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let ctx = Ctx {
            path,
            base_dir,
            env,
        };
        let name = MigrationName::new(&raw.name).map_err(|e| ctx.invalid("name", e.reason))?;
        let databases = check_databases(raw.databases, &ctx)?;
        let state_dir = match raw.state_dir.filter(|s| !s.is_empty()) {
            Some(dir) => ctx.resolve(&dir),
            None => (ctx.env)(STATE_DIR_ENV)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        };
        let metrics_listen = match raw.metrics_listen.as_deref() {
            None => Some(DEFAULT_METRICS_LISTEN),
            Some("") => None,
            Some(addr) => Some(addr.parse::<SocketAddr>().map_err(|_| {
                ctx.invalid(
                    "metrics_listen",
                    format!("\"{addr}\" is not an IP:port address (e.g. \"127.0.0.1:9898\"); \"\" disables metrics"),
                )
            })?),
        };
        let pg_bin_dir = raw
            .pg_bin_dir
            .filter(|s| !s.is_empty())
            .map(|dir| ctx.resolve(&dir));
        Ok(Config {
            name,
            mode: raw.mode,
            option: raw.option,
            databases,
            overwrite_target: raw.overwrite_target,
            state_dir,
            metrics_listen,
            pg_bin_dir,
            source: Endpoint::from_raw(raw.source, "source", &ctx)?,
            target: Endpoint::from_raw(raw.target, "target", &ctx)?,
            copy: copy_config(raw.copy, &ctx)?,
            apply: apply_config(raw.apply, &ctx)?,
            cutover: CutoverConfig {
                lock_source: raw.cutover.lock_source,
                reverse_replication: raw.cutover.reverse_replication,
            },
            keyless: keyless_policy(raw.keyless, &ctx)?,
            tables: table_filter(raw.tables, &ctx)?,
            ddl: raw.ddl,
            verify: VerifyConfig {
                max_rows_per_second: match raw.verify.max_rows_per_second {
                    None => 0,
                    Some(n) if n >= 0 => n as u64,
                    Some(_) => {
                        return Err(ctx
                            .invalid("verify.max_rows_per_second", "must be 0 (no limit) or more"))
                    }
                },
            },
        })
    }
}

/// What every rule check needs: where errors point and how to resolve paths
/// and environment variables.
struct Ctx<'a> {
    path: &'a Path,
    base_dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Ctx<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn resolve(&self, path: &str) -> PathBuf {
        self.base_dir.join(path)
    }

    /// An integer key with a default and inclusive bounds.
    fn count(
        &self,
        key: &str,
        value: Option<i64>,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        usize::try_from(v)
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                if max == usize::MAX {
                    self.invalid(key, format!("must be at least {min}, got {v}"))
                } else {
                    self.invalid(key, format!("must be {min} to {max}, got {v}"))
                }
            })
    }
}

fn check_databases(databases: Vec<String>, ctx: &Ctx<'_>) -> Result<Vec<String>, ConfigError> {
    if databases.is_empty() {
        return Err(ctx.invalid("databases", "must list at least one database"));
    }
    for (i, db) in databases.iter().enumerate() {
        if db.is_empty() {
            return Err(ctx.invalid("databases", "a database name is empty"));
        }
        if db.contains('\0') {
            return Err(ctx.invalid(
                "databases",
                format!("database name {db:?} contains a NUL character"),
            ));
        }
        if databases.iter().take(i).any(|earlier| earlier == db) {
            return Err(ctx.invalid("databases", format!("database \"{db}\" is listed twice")));
        }
    }
    Ok(databases)
}

fn copy_config(raw: RawCopy, ctx: &Ctx<'_>) -> Result<CopyConfig, ConfigError> {
    const KEY: &str = "copy.split_tables_larger_than";
    let split_tables_larger_than = match raw.split_tables_larger_than {
        None => 1 << 30,
        Some(toml::Value::String(s)) => size::parse_size(&s).map_err(|m| ctx.invalid(KEY, m))?,
        Some(toml::Value::Integer(n)) => u64::try_from(n)
            .map_err(|_| ctx.invalid(KEY, format!("must not be negative, got {n}")))?,
        Some(other) => {
            return Err(ctx.invalid(
                KEY,
                format!("expected a size such as \"1GB\", got {}", other.type_str()),
            ))
        }
    };
    Ok(CopyConfig {
        jobs: ctx.count("copy.jobs", raw.jobs, 4, 1, usize::MAX)?,
        split_tables_larger_than,
        index_jobs: ctx.count("copy.index_jobs", raw.index_jobs, 4, 1, usize::MAX)?,
    })
}

fn apply_config(raw: RawApply, ctx: &Ctx<'_>) -> Result<ApplyConfig, ConfigError> {
    let delay_ms = match raw.batch_max_delay_ms {
        None => 200,
        Some(ms) => u64::try_from(ms).map_err(|_| {
            ctx.invalid(
                "apply.batch_max_delay_ms",
                format!("must not be negative, got {ms}"),
            )
        })?,
    };
    Ok(ApplyConfig {
        workers: ctx.count("apply.workers", raw.workers, 4, 1, MAX_APPLY_WORKERS)?,
        batch_max_changes: ctx.count(
            "apply.batch_max_changes",
            raw.batch_max_changes,
            10_000,
            1,
            usize::MAX,
        )?,
        batch_max_delay: Duration::from_millis(delay_ms),
    })
}

fn patterns(key: &str, list: Vec<String>, ctx: &Ctx<'_>) -> Result<Vec<TablePattern>, ConfigError> {
    list.iter()
        .map(|p| TablePattern::parse(p).map_err(|m| ctx.invalid(key, m)))
        .collect()
}

fn table_filter(raw: RawTables, ctx: &Ctx<'_>) -> Result<TableFilter, ConfigError> {
    TableFilter::new(
        patterns("tables.include", raw.include, ctx)?,
        patterns("tables.exclude", raw.exclude, ctx)?,
        patterns("tables.schema_only", raw.schema_only, ctx)?,
    )
    .map_err(|m| ctx.invalid("tables", m))
}

fn keyless_policy(raw: RawKeyless, ctx: &Ctx<'_>) -> Result<KeylessPolicy, ConfigError> {
    let patterns = |key: &str, list: Vec<String>| patterns(key, list, ctx);
    let insert_only = patterns("keyless.insert_only", raw.insert_only)?;
    let full = patterns("keyless.replica_identity_full", raw.replica_identity_full)?;
    KeylessPolicy::new(raw.default, insert_only, full).map_err(|m| ctx.invalid("keyless", m))
}
