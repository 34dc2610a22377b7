//! The config file exactly as TOML spells it, before any rule is checked.
//!
//! serde rejects unknown keys and wrong types here (toml's errors carry the
//! line and column); every other rule lives in the conversion to the typed
//! [`Config`](super::Config), so there is one place that decides validity.

use serde::Deserialize;

use super::{DdlMode, KeylessMode, Mode, RunOption, SourceType, SslMode};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub name: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub option: RunOption,
    pub databases: Vec<String>,
    #[serde(default)]
    pub overwrite_target: bool,
    pub state_dir: Option<String>,
    pub metrics_listen: Option<String>,
    pub pg_bin_dir: Option<String>,
    pub source: RawEndpoint,
    pub target: RawEndpoint,
    #[serde(default)]
    pub copy: RawCopy,
    #[serde(default)]
    pub apply: RawApply,
    #[serde(default)]
    pub cutover: RawCutover,
    #[serde(default)]
    pub keyless: RawKeyless,
    #[serde(default)]
    pub tables: RawTables,
    pub ddl: Option<DdlMode>,
    #[serde(default)]
    pub verify: RawVerify,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerify {
    pub max_rows_per_second: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub host: String,
    pub port: Option<i64>,
    pub user: Option<String>,
    /// Only read to reject it with a message that points at the allowed keys.
    pub password: Option<toml::Value>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    #[serde(default)]
    pub sslmode: SslMode,
    pub sslrootcert: Option<String>,
    #[serde(default)]
    pub source_type: SourceType,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCopy {
    pub jobs: Option<i64>,
    /// A size string, or a plain integer of bytes.
    pub split_tables_larger_than: Option<toml::Value>,
    pub index_jobs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApply {
    pub workers: Option<i64>,
    pub batch_max_changes: Option<i64>,
    pub batch_max_delay_ms: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCutover {
    #[serde(default)]
    pub lock_source: bool,
    #[serde(default)]
    pub reverse_replication: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeyless {
    #[serde(default)]
    pub default: KeylessMode,
    #[serde(default)]
    pub insert_only: Vec<String>,
    #[serde(default)]
    pub replica_identity_full: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTables {
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub schema_only: Vec<String>,
}
