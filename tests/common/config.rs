//! pgmigrate config files for a source/target pair of test clusters.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::cluster::Cluster;

/// Writes `<dir>/<name>.toml` for migrating `databases` from `src` to `dst`
/// and returns its path. The file has DESIGN.md's keys:
///
/// ```toml
/// name = "<name>"
/// mode = "online"
/// option = "validate-and-migrate"
/// databases = [...]
/// state_dir = "<dir>"
/// metrics_listen = ""
/// [source]                  # and [target] likewise
/// host = "<socket dir>"
/// port = <port>
/// user = "postgres"
/// sslmode = "disable"
/// ```
///
/// `extra_toml` is TOML merged over that, key by key and table by table, so
/// it can both add (`[copy]\njobs = 2`, `[apply]\nworkers = 2`,
/// `pg_bin_dir = "..."`) and override (`mode = "offline"`,
/// `[source]\nhost = "localhost"\nsslmode = "verify-full"`). Pass `""` for none.
/// Panics if `extra_toml` does not parse.
pub fn write_config(
    dir: &Path,
    name: &str,
    src: &Cluster,
    dst: &Cluster,
    databases: &[&str],
    extra_toml: &str,
) -> PathBuf {
    let mut doc = Table::new();
    doc.insert("name".into(), name.into());
    doc.insert("mode".into(), "online".into());
    doc.insert("option".into(), "validate-and-migrate".into());
    doc.insert(
        "databases".into(),
        Value::Array(databases.iter().map(|d| (*d).into()).collect()),
    );
    doc.insert("state_dir".into(), dir.display().to_string().into());
    doc.insert("metrics_listen".into(), "".into());
    doc.insert("source".into(), Value::Table(endpoint(src)));
    doc.insert("target".into(), Value::Table(endpoint(dst)));

    let extra: Table = extra_toml
        .parse()
        .unwrap_or_else(|e| panic!("extra_toml for config {name} does not parse: {e}"));
    merge(&mut doc, extra);

    let text =
        toml::to_string(&doc).unwrap_or_else(|e| panic!("cannot serialize config {name}: {e}"));
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

fn endpoint(c: &Cluster) -> Table {
    let mut t = Table::new();
    t.insert("host".into(), c.socket_dir().display().to_string().into());
    t.insert("port".into(), i64::from(c.port()).into());
    t.insert("user".into(), "postgres".into());
    t.insert("sslmode".into(), "disable".into());
    t
}

/// Merges `over` into `base`: tables recursively, everything else replaced.
fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}
