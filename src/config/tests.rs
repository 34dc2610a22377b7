//! Every config rule, accepted and rejected.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// DESIGN.md's example, with `[target]` filled in.
const FULL: &str = r#"
name = "orders-2026"            # letters, digits and '-'; not starting with '-'; unique in state_dir
mode = "online"                 # "online" (default) | "offline"
option = "validate-and-migrate" # "validate" | "validate-and-migrate" (default) | "migrate"
databases = ["ticketdb", "timedb"]
overwrite_target = false        # drop and recreate a target database that already exists
state_dir = "/var/lib/pgmigrate"
metrics_listen = "127.0.0.1:9898"   # Prometheus /metrics; "" disables
pg_bin_dir = ""                 # where pg_dump/pg_restore live; "" = the newest
                                # /usr/lib/postgresql/*/bin, else PATH

[source]
host = "10.1.2.3"               # name, IP, or a directory for a unix socket
port = 5432
user = "postgres"
password_env = "PGMIGRATE_SOURCE_PASSWORD"   # or password_file = "/etc/pgmigrate/src.pass"
sslmode = "prefer"              # disable | prefer | require | verify-ca | verify-full
sslrootcert = "/etc/ssl/certs/ca.pem"        # for verify-ca / verify-full
source_type = "on-premises"     # informational: on-premises | vm | cloud

[target]
host = "/run/postgresql"
port = 5433
user = "migrator"
sslmode = "verify-full"
source_type = "cloud"

[copy]
jobs = 4                        # parallel COPY streams
split_tables_larger_than = "1GB"  # larger tables are copied in parallel ctid ranges
index_jobs = 4                  # parallel index / constraint builds

[apply]
workers = 4                     # parallel apply workers (per database)
batch_max_changes = 10000       # group source transactions into one target transaction…
batch_max_delay_ms = 200        # …until either bound is hit

[cutover]
lock_source = false             # true: make the source databases read-only and end their sessions at cutover
reverse_replication = false     # true: after cutover, stream the target's changes back to the source until `rollback` or `finish`
"#;

const MINIMAL: &str = r#"
name = "m1"
databases = ["db"]
[source]
host = "src"
[target]
host = "dst"
"#;

fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse_with(text: &str, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
    let lookup = |var: &str| env.get(var).cloned();
    Config::parse(
        text,
        Path::new("/etc/pgmigrate/t.toml"),
        Path::new("/etc/pgmigrate"),
        &lookup,
    )
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with(text, &env_of(&[("PGMIGRATE_SOURCE_PASSWORD", "s3cret")]))
}

/// The error text of a config that must be rejected.
fn rejected(text: &str) -> String {
    match parse(text) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// MINIMAL with `line` added at the top level (before any table).
fn minimal_with(line: &str) -> String {
    format!("{line}\n{MINIMAL}")
}

/// MINIMAL with `line` added to `[section]`.
fn minimal_in(section: &str, line: &str) -> String {
    let header = format!("[{section}]");
    if MINIMAL.contains(&header) {
        MINIMAL.replace(&header, &format!("{header}\n{line}"))
    } else {
        format!("{MINIMAL}\n{header}\n{line}\n")
    }
}

#[test]
fn full_example_parses() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.name.as_str(), "orders-2026");
    assert_eq!(c.mode, Mode::Online);
    assert_eq!(c.option, RunOption::ValidateAndMigrate);
    assert_eq!(
        c.databases,
        vec!["ticketdb".to_owned(), "timedb".to_owned()]
    );
    assert!(!c.overwrite_target);
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/pgmigrate"));
    assert_eq!(
        c.metrics_listen,
        Some("127.0.0.1:9898".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(c.pg_bin_dir, None);

    assert_eq!(c.source.host, Host::Tcp("10.1.2.3".to_owned()));
    assert_eq!(c.source.port, 5432);
    assert_eq!(c.source.user, "postgres");
    assert_eq!(
        c.source.password.as_ref().map(Secret::expose),
        Some("s3cret")
    );
    assert_eq!(c.source.sslmode, SslMode::Prefer);
    assert_eq!(
        c.source.sslrootcert,
        Some(PathBuf::from("/etc/ssl/certs/ca.pem"))
    );
    assert_eq!(c.source.source_type, SourceType::OnPremises);

    assert_eq!(c.target.host, Host::Unix(PathBuf::from("/run/postgresql")));
    assert_eq!(c.target.port, 5433);
    assert_eq!(c.target.user, "migrator");
    assert_eq!(c.target.password, None);
    assert_eq!(c.target.sslmode, SslMode::VerifyFull);
    assert_eq!(c.target.sslrootcert, None);
    assert_eq!(c.target.source_type, SourceType::Cloud);

    assert_eq!(
        c.copy,
        CopyConfig {
            jobs: 4,
            split_tables_larger_than: 1 << 30,
            index_jobs: 4
        }
    );
    assert_eq!(
        c.apply,
        ApplyConfig {
            workers: 4,
            batch_max_changes: 10_000,
            batch_max_delay: Duration::from_millis(200)
        }
    );
    assert!(!c.cutover.lock_source);
}

#[test]
fn defaults_apply_when_keys_are_absent() {
    let c = parse_with(MINIMAL, &env_of(&[])).unwrap();
    assert_eq!(c.mode, Mode::Online);
    assert_eq!(c.option, RunOption::ValidateAndMigrate);
    assert!(!c.overwrite_target);
    assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(c.metrics_listen, Some(DEFAULT_METRICS_LISTEN));
    assert_eq!(c.source.port, 5432);
    assert_eq!(c.source.user, "postgres");
    assert_eq!(c.source.sslmode, SslMode::Prefer);
    assert_eq!(c.source.source_type, SourceType::OnPremises);
    assert_eq!(c.copy.jobs, 4);
    assert_eq!(c.copy.index_jobs, 4);
    assert_eq!(c.copy.split_threshold(), Some(1 << 30));
    assert_eq!(c.apply.workers, 4);
    assert_eq!(c.apply.batch_max_changes, 10_000);
    assert_eq!(c.apply.batch_max_delay, Duration::from_millis(200));
    assert!(!c.cutover.lock_source);
}

#[test]
fn enum_values_parse() {
    let c = parse(&minimal_with("mode = \"offline\"\noption = \"validate\"")).unwrap();
    assert_eq!((c.mode, c.option), (Mode::Offline, RunOption::Validate));
    let c = parse(&minimal_with("option = \"migrate\"")).unwrap();
    assert_eq!(c.option, RunOption::Migrate);
    for (text, mode) in [
        ("disable", SslMode::Disable),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
    ] {
        let c = parse(&minimal_in("source", &format!("sslmode = \"{text}\""))).unwrap();
        assert_eq!(c.source.sslmode, mode);
    }
    let c = parse(&minimal_in("source", "source_type = \"vm\"")).unwrap();
    assert_eq!(c.source.source_type, SourceType::Vm);
    assert!(rejected(&minimal_with("mode = \"hybrid\"")).contains("hybrid"));
    assert!(rejected(&minimal_in("source", "sslmode = \"allow\"")).contains("allow"));
}

#[test]
fn state_dir_comes_from_env_then_default_and_relative_is_beside_config() {
    let c = parse_with(MINIMAL, &env_of(&[(STATE_DIR_ENV, "/srv/pgm")])).unwrap();
    assert_eq!(c.state_dir, PathBuf::from("/srv/pgm"));
    let c = parse_with(
        &minimal_with("state_dir = \"state\""),
        &env_of(&[(STATE_DIR_ENV, "/srv/pgm")]),
    )
    .unwrap();
    assert_eq!(c.state_dir, PathBuf::from("/etc/pgmigrate/state"));
}

#[test]
fn metrics_listen_empty_disables_and_garbage_is_rejected() {
    let c = parse(&minimal_with("metrics_listen = \"\"")).unwrap();
    assert_eq!(c.metrics_listen, None);
    let c = parse(&minimal_with("metrics_listen = \"[::1]:9000\"")).unwrap();
    assert_eq!(c.metrics_listen, Some("[::1]:9000".parse().unwrap()));
    let e = rejected(&minimal_with("metrics_listen = \"localhost\""));
    assert!(e.contains("metrics_listen") && e.contains("IP:port"), "{e}");
}

#[test]
fn pg_bin_dir_set() {
    let c = parse(&minimal_with("pg_bin_dir = \"/usr/lib/postgresql/17/bin\"")).unwrap();
    assert_eq!(
        c.pg_bin_dir,
        Some(PathBuf::from("/usr/lib/postgresql/17/bin"))
    );
}

#[test]
fn bad_names_are_rejected() {
    for (name, why) in [
        ("", "must not be empty"),
        ("-x", "must not start with '-'"),
        ("a_b", "only letters, digits and '-'"),
        ("a b", "only letters, digits and '-'"),
        ("é", "only letters, digits and '-'"),
    ] {
        let e = rejected(&MINIMAL.replace("name = \"m1\"", &format!("name = \"{name}\"")));
        assert!(e.contains("name:") && e.contains(why), "{name}: {e}");
    }
    let long = "a".repeat(64);
    let e = rejected(&MINIMAL.replace("name = \"m1\"", &format!("name = \"{long}\"")));
    assert!(e.contains("at most 63"), "{e}");
    assert!(MigrationName::new(&"a".repeat(63)).is_ok());
    assert!(MigrationName::new("Orders-2026-x").is_ok());
}

#[test]
fn bad_database_lists_are_rejected() {
    let with = |list: &str| MINIMAL.replace("databases = [\"db\"]", &format!("databases = {list}"));
    assert!(rejected(&with("[]")).contains("at least one database"));
    assert!(rejected(&with("[\"a\", \"\"]")).contains("database name is empty"));
    assert!(rejected(&with("[\"a\\u0000b\"]")).contains("NUL"));
    assert!(rejected(&with("[\"a\", \"b\", \"a\"]")).contains("\"a\" is listed twice"));
}

#[test]
fn unknown_keys_are_named() {
    let e = rejected(&minimal_with("colour = \"blue\""));
    assert!(
        e.contains("colour") && e.contains("/etc/pgmigrate/t.toml"),
        "{e}"
    );
    assert!(rejected(&minimal_in("source", "hots = \"x\"")).contains("hots"));
    assert!(rejected(&minimal_in("copy", "jbos = 2")).contains("jbos"));
    assert!(rejected(&minimal_in("apply", "worker = 2")).contains("worker"));
    assert!(rejected(&minimal_in("cutover", "lock = true")).contains("lock"));
    assert!(rejected(&format!("{MINIMAL}\n[extra]\na = 1\n")).contains("extra"));
}

#[test]
fn syntax_errors_carry_position() {
    let e = rejected("name = \"m1\"\ndatabases = [\n");
    assert!(e.contains("line"), "{e}");
    assert!(
        rejected("databases = [\"a\"]\n[source]\nhost=\"a\"\n[target]\nhost=\"b\"\n")
            .contains("missing field `name`")
    );
}

#[test]
fn password_key_points_to_env_and_file() {
    let e = rejected(&minimal_in("source", "password = \"hunter2\""));
    assert!(
        e.contains("source.password") && e.contains("password_env") && e.contains("password_file"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn password_from_env_must_exist_and_be_non_empty() {
    let text = minimal_in("target", "password_env = \"TGT_PW\"");
    let e = parse_with(&text, &env_of(&[])).unwrap_err().to_string();
    assert!(
        e.contains("target.password_env") && e.contains("TGT_PW is not set"),
        "{e}"
    );
    let e = parse_with(&text, &env_of(&[("TGT_PW", "")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("TGT_PW is empty"), "{e}");
    let c = parse_with(&text, &env_of(&[("TGT_PW", "pw")])).unwrap();
    assert_eq!(c.target.password.as_ref().map(Secret::expose), Some("pw"));
}

#[test]
fn password_from_file_is_trimmed_and_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "p4ss word\r\n").unwrap();
    let text = minimal_in("source", &format!("password_file = \"{}\"", file.display()));
    let c = parse(&text).unwrap();
    assert_eq!(
        c.source.password.as_ref().map(Secret::expose),
        Some("p4ss word")
    );

    // Relative to the config file's directory.
    std::fs::write(dir.path().join("rel"), "x\n").unwrap();
    let lookup = |_: &str| None;
    let c = Config::parse(
        &minimal_in("source", "password_file = \"rel\""),
        Path::new("t.toml"),
        dir.path(),
        &lookup,
    )
    .unwrap();
    assert_eq!(c.source.password.as_ref().map(Secret::expose), Some("x"));

    std::fs::write(&file, "\n").unwrap();
    assert!(rejected(&text).contains("is empty"));

    let missing = dir.path().join("missing");
    let e = rejected(&minimal_in(
        "source",
        &format!("password_file = \"{}\"", missing.display()),
    ));
    assert!(
        e.contains("source.password_file") && e.contains(&missing.display().to_string()),
        "{e}"
    );
}

#[test]
fn both_password_sources_are_rejected() {
    let e = rejected(&minimal_in(
        "source",
        "password_env = \"A\"\npassword_file = \"/x\"",
    ));
    assert!(e.contains("both set"), "{e}");
}

#[test]
fn secret_never_prints() {
    let c = parse(&minimal_in(
        "source",
        "password_env = \"PGMIGRATE_SOURCE_PASSWORD\"",
    ))
    .unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(debug.contains("***"));
    let secret = Secret::new("abc".to_owned());
    assert_eq!(format!("{secret}"), "***");
    assert_eq!(format!("{secret:?}"), "***");
    assert_eq!(secret.expose(), "abc");
}

#[test]
fn endpoint_rules() {
    assert!(rejected(&MINIMAL.replace("host = \"src\"", "host = \"\""))
        .contains("source.host: must not be empty"));
    assert!(rejected(&minimal_in("source", "port = 0"))
        .contains("source.port: must be 1 to 65535, got 0"));
    assert!(rejected(&minimal_in("target", "port = 70000")).contains("target.port"));
    assert!(
        rejected(&minimal_in("source", "user = \"\"")).contains("source.user: must not be empty")
    );
    let c = parse(&minimal_in("source", "sslrootcert = \"ca.pem\"")).unwrap();
    assert_eq!(
        c.source.sslrootcert,
        Some(PathBuf::from("/etc/pgmigrate/ca.pem"))
    );
}

#[test]
fn copy_rules() {
    let c = parse(&minimal_in("copy", "split_tables_larger_than = \"0\"")).unwrap();
    assert_eq!(c.copy.split_threshold(), None);
    let c = parse(&minimal_in(
        "copy",
        "split_tables_larger_than = \"256MB\"\njobs = 8\nindex_jobs = 2",
    ))
    .unwrap();
    assert_eq!(
        c.copy,
        CopyConfig {
            jobs: 8,
            split_tables_larger_than: 256 << 20,
            index_jobs: 2
        }
    );
    let c = parse(&minimal_in("copy", "split_tables_larger_than = 4096")).unwrap();
    assert_eq!(c.copy.split_tables_larger_than, 4096);
    let e = rejected(&minimal_in("copy", "split_tables_larger_than = \"lots\""));
    assert!(
        e.contains("copy.split_tables_larger_than") && e.contains("not a size"),
        "{e}"
    );
    assert!(
        rejected(&minimal_in("copy", "split_tables_larger_than = true"))
            .contains("expected a size")
    );
    assert!(
        rejected(&minimal_in("copy", "jobs = 0")).contains("copy.jobs: must be at least 1, got 0")
    );
    assert!(rejected(&minimal_in("copy", "index_jobs = -3"))
        .contains("copy.index_jobs: must be at least 1"));
}

#[test]
fn apply_rules() {
    let c = parse(&minimal_in(
        "apply",
        "workers = 64\nbatch_max_changes = 1\nbatch_max_delay_ms = 0",
    ))
    .unwrap();
    assert_eq!(
        c.apply,
        ApplyConfig {
            workers: 64,
            batch_max_changes: 1,
            batch_max_delay: Duration::ZERO
        }
    );
    assert!(rejected(&minimal_in("apply", "workers = 0"))
        .contains("apply.workers: must be 1 to 64, got 0"));
    assert!(rejected(&minimal_in("apply", "workers = 65"))
        .contains("apply.workers: must be 1 to 64, got 65"));
    assert!(
        rejected(&minimal_in("apply", "batch_max_changes = 0")).contains("apply.batch_max_changes")
    );
    assert!(rejected(&minimal_in("apply", "batch_max_delay_ms = -1"))
        .contains("apply.batch_max_delay_ms"));
}

#[test]
fn cutover_lock_source() {
    let c = parse(&minimal_in("cutover", "lock_source = true")).unwrap();
    assert!(c.cutover.lock_source);
}

#[test]
fn from_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    let e = Config::from_file(&path).unwrap_err().to_string();
    assert!(
        e.contains("cannot read config file") && e.contains("m.toml"),
        "{e}"
    );
    std::fs::write(&path, minimal_in("copy", "jobs = 0")).unwrap();
    let e = Config::from_file(&path).unwrap_err().to_string();
    assert!(
        e.contains(&path.display().to_string()) && e.contains("copy.jobs"),
        "{e}"
    );
    std::fs::write(&path, MINIMAL).unwrap();
    let c = Config::from_file(&path).unwrap();
    assert_eq!(c.name.as_str(), "m1");
    let c = Config::from_toml_str(MINIMAL, dir.path()).unwrap();
    assert_eq!(c.databases, vec!["db".to_owned()]);
}

#[test]
fn keyless_section() {
    use super::KeylessMode;
    let c = parse(MINIMAL).unwrap();
    assert!(c.keyless.is_default());
    let c = parse(&format!(
        "{MINIMAL}\n[keyless]\ndefault = \"insert_only\"\ninsert_only = [\"public.h\"]\nreplica_identity_full = [\"audit.*\"]\n"
    ))
    .unwrap();
    assert_eq!(c.keyless.mode_for("public", "h"), KeylessMode::InsertOnly);
    assert_eq!(
        c.keyless.mode_for("audit", "x"),
        KeylessMode::ReplicaIdentityFull
    );
    assert_eq!(c.keyless.mode_for("other", "x"), KeylessMode::InsertOnly);
    let e = rejected(&format!(
        "{MINIMAL}\n[keyless]\ninsert_only = [\"nodot\"]\n"
    ));
    assert!(
        e.contains("keyless.insert_only") && e.contains("schema.table"),
        "{e}"
    );
    let e = rejected(&format!("{MINIMAL}\n[keyless]\ndefault = \"ignore\"\n"));
    assert!(e.contains("insert_only"), "{e}");
    let e = rejected(&format!(
        "{MINIMAL}\n[keyless]\ninsert_only = [\"a.b\"]\nreplica_identity_full = [\"a.b\"]\n"
    ));
    assert!(e.contains("both"), "{e}");
}

#[test]
fn tables_section() {
    use super::TableChoice;
    let c = parse(MINIMAL).unwrap();
    assert!(c.tables.is_default());
    let c = parse(&format!(
        "{MINIMAL}\n[tables]\ninclude = [\"public.*\"]\nexclude = [\"public.tmp_*\"]\nschema_only = [\"public.audit\"]\n"
    ))
    .unwrap();
    assert_eq!(c.tables.choice("public", "a"), TableChoice::Migrate);
    assert_eq!(c.tables.choice("public", "tmp_1"), TableChoice::Exclude);
    assert_eq!(c.tables.choice("public", "audit"), TableChoice::SchemaOnly);
    assert_eq!(c.tables.choice("other", "a"), TableChoice::Exclude);
    let e = rejected(&format!("{MINIMAL}\n[tables]\ninclude = [\"nodot\"]\n"));
    assert!(e.contains("tables.include"), "{e}");
    let e = rejected(&format!("{MINIMAL}\n[tables]\nexclde = [\"a.b\"]\n"));
    assert!(e.contains("exclde"), "{e}");
    let e = rejected(&format!(
        "{MINIMAL}\n[tables]\nexclude = [\"a.b\"]\nschema_only = [\"a.b\"]\n"
    ));
    assert!(e.contains("both") && e.contains("a.b"), "{e}");
}

#[test]
fn verify_rate_limit_defaults_to_none_and_must_not_be_negative() {
    assert_eq!(parse(MINIMAL).unwrap().verify.max_rows_per_second, 0);
    let c = parse(&minimal_in("verify", "max_rows_per_second = 50000")).unwrap();
    assert_eq!(c.verify.max_rows_per_second, 50_000);
    let e = rejected(&minimal_in("verify", "max_rows_per_second = -1"));
    assert!(e.contains("verify.max_rows_per_second"), "{e}");
}
