//! Premigration checks: whether the configured migration can run, said
//! check by check with a fix for each problem. Validation only reads: every
//! session is read-only and nothing is created on either server.
//!
//! One session goes to each server for the server-wide facts, and one to
//! each source database (the first reused), read in parallel; the checks are
//! then pure functions of those facts. A session that cannot be opened is
//! explained (refused, timeout, TLS, password, pg_hba) and the checks that
//! depended on it are listed in a `*_checks_skipped` line, never dropped
//! silently.
//!
//! Check ids are stable (scripts match on them). Per-database checks appear
//! once per database, their message naming it.
//!
//! | id | scope | fails when (W = warning only) |
//! | --- | --- | --- |
//! | `source_connectivity` | source (and each database) | cannot connect or log in |
//! | `target_connectivity` | target | cannot connect or log in |
//! | `source_version` | source | major < 12 |
//! | `target_version` | target | major < 15, or < the source's |
//! | `pg_tools_version` | local | pg_dump/pg_restore missing or older than the source |
//! | `source_wal_level` | source | `wal_level` is not `logical` |
//! | `source_replication_slots` | source | fewer free slots than databases (W, online: fewer than twice that, a resumed copy's `<slot>_r` beside each kept slot) |
//! | `source_wal_senders` | source | fewer free WAL senders than databases (W, online: fewer than twice that, for resumed copies) |
//! | `source_max_slot_wal_keep_size` | source | W: unlimited (or PostgreSQL 12) |
//! | `source_replication_privilege` | source | user has neither REPLICATION nor SUPERUSER |
//! | `ddl_replication` | source | online: `ddl` is `replicate` or `fail` but the user is no superuser or the source is older than 14 (W: `ignore`, said why) |
//! | `source_open_transactions` | source | W: prepared transactions, or xids open > 5 min |
//! | `target_create_database` | target | no CREATEDB; or cannot drop a database to overwrite |
//! | `target_session_replication_role` | target | online: may not SET it |
//! | `target_replication_origins` | target | online: may not execute the origin functions |
//! | `target_replication_origin_capacity` | target | online: fewer free origin states than workers × databases (W: fewer than max(copy jobs, workers) × databases, the copy journal's; or cannot count) |
//! | `target_disk_space` | target | local target: less free than the source databases' size (W: remote, cannot measure) |
//! | `source_database_exists` | database | missing on the source |
//! | `target_database_absent` | database | exists on the target (W: with `overwrite_target`) |
//! | `source_table_read` | database | a table or sequence the user cannot SELECT |
//! | `source_publication_privilege` | database | online: not superuser and no CREATE on the database and/or not owner of every table (both said at once) |
//! | `replica_identity` | database | online: a table without primary key or replica identity whose `[keyless]` mode is `fail` (or an `insert_only` partition) |
//! | `keyless_insert_only` | database | W (online, only when used): tables `[keyless]` replicates for INSERTs only |
//! | `keyless_replica_identity_full` | database | W (online, only when used): tables `[keyless]` sets to REPLICA IDENTITY FULL |
//! | `extensions` | database | an extension not available on the target (W: other version) |
//! | `collations` | database | a collation missing on the target (W: locale not listed) |
//! | `encoding_locale` | database | locale provider missing on the target (W: locale not listed) |
//! | `unlogged_tables` | database | W: unlogged tables exist |
//! | `large_objects` | database | W (online): large objects exist |
//! | `user_casts` | database | W: user-defined casts and a non-superuser target user |
//! | `tablespaces` | database | W: objects outside the default tablespace |
//! | `table_filters` | all databases | W: a `[tables]` pattern matches no table |
//! | `table_filters` | database | a foreign key or view of a table on the target reads an excluded table |
//! | `source_checks_skipped` | source | the source checks could not run |
//! | `target_checks_skipped` | target | the target checks could not run |
//! | `database_checks_skipped` | database | a database's checks could not run |

pub mod check;
pub mod connect;
mod database_checks;
pub mod database_facts;
mod ddl_check;
mod disk;
mod keyless_checks;
mod render;
mod server_checks;
pub mod source_facts;
pub mod table_filter_checks;
pub mod target_facts;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::{Config, Endpoint};
use crate::conn::{ConnError, Connection};
use crate::control::state::ValidationCheck;
use crate::control::status::CheckResult;
use crate::copy::pg_tools::PgTools;

use check::{fail, pass};
use connect::{explain, Side};
use database_facts::SourceDatabase;
use source_facts::SourceServer;
use target_facts::TargetServer;

pub use render::{render_json, render_table};
pub use server_checks::{human_bytes, MIN_SOURCE_MAJOR, MIN_TARGET_MAJOR};

/// Source databases read at the same time.
const PARALLEL_DATABASES: usize = 4;

/// The outcome of a validation: every check, in a stable order (servers
/// first, then each database in config order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationReport {
    /// The checks.
    pub checks: Vec<ValidationCheck>,
}

impl ValidationReport {
    /// True when at least one check failed: migrating must not start.
    pub fn failed(&self) -> bool {
        self.failures().next().is_some()
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &ValidationCheck> {
        self.checks
            .iter()
            .filter(|c| c.result == CheckResult::Failed)
    }

    /// The checks with this id (per-database checks appear once per database).
    pub fn by_id<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a ValidationCheck> {
        self.checks.iter().filter(move |c| c.id == id)
    }

    /// Aligned text for people.
    pub fn render_table(&self) -> String {
        render_table(&self.checks)
    }

    /// `{"validation": [...]}` for programs.
    pub fn render_json(&self) -> Result<String, serde_json::Error> {
        render_json(&self.checks)
    }
}

/// Runs every premigration check of `config` against both servers.
/// Changes nothing on either server.
pub async fn validate(config: &Config) -> ValidationReport {
    let (source, target, tools) = tokio::join!(
        read_source(config),
        read_target(config),
        PgTools::locate(config.pg_bin_dir.as_deref()),
    );
    let mut checks = Vec::new();
    checks.extend(source.connectivity);
    checks.extend(target.connectivity);
    let s = source.server.as_ref();
    let t = target.server.as_ref();
    checks.extend(server_wide(config, s, t, &tools, &source.databases));
    if let Some(skipped) = source.skipped {
        checks.push(skipped);
    }
    if let Some(skipped) = target.skipped {
        checks.push(skipped);
    }
    for db in &config.databases {
        let outcome = source
            .databases
            .iter()
            .find(|(name, _)| name == db)
            .map(|(_, r)| r);
        checks.extend(one_database(config, db, outcome, s, t));
    }
    ValidationReport { checks }
}

/// The checks of each server that could be read, and of the two together.
/// The target's disk check needs the sizes of the databases read.
fn server_wide(
    config: &Config,
    s: Option<&SourceServer>,
    t: Option<&TargetServer>,
    tools: &Result<PgTools, crate::copy::pg_tools::ToolError>,
    databases: &[(String, DbRead)],
) -> Vec<ValidationCheck> {
    let mut checks = Vec::new();
    let source_major = s.map(|s| s.major);
    if let Some(s) = s {
        checks.push(server_checks::source_version(s));
    }
    if let Some(t) = t {
        checks.push(server_checks::target_version(source_major, t));
    }
    checks.push(server_checks::pg_tools_version(tools, source_major));
    if let Some(s) = s {
        checks.extend(server_checks::source_server(s, config));
    }
    let read: Vec<&SourceDatabase> = databases
        .iter()
        .filter_map(|(_, r)| match r {
            DbRead::Read(d) => Some(d.as_ref()),
            _ => None,
        })
        .collect();
    if !read.is_empty() {
        let all_read = read.len() == databases.len();
        checks.push(table_filter_checks::patterns(
            &read,
            &config.tables,
            all_read,
        ));
    }
    if let (Some(s), Some(t)) = (s, t) {
        checks.push(server_checks::target_not_source(s, t));
    }
    if let Some(t) = t {
        checks.extend(server_checks::target_server(t, config));
        if !read.is_empty() {
            let needed = read.iter().map(|d| d.size_bytes).sum();
            let free = t
                .data_directory
                .as_ref()
                .and_then(|(dir, port, started)| disk::local_free_bytes(dir, *port, *started));
            checks.push(server_checks::target_disk_space(t, needed, free));
        }
    }
    checks
}

/// The checks of one configured database, given what reading it on the
/// source gave (`None`: no session to the source at all).
fn one_database(
    config: &Config,
    db: &str,
    outcome: Option<&DbRead>,
    s: Option<&SourceServer>,
    t: Option<&TargetServer>,
) -> Vec<ValidationCheck> {
    let mut checks = Vec::new();
    let absent =
        |t: &TargetServer| server_checks::target_database_absent(t, db, config.overwrite_target);
    match outcome {
        Some(DbRead::Read(d)) => {
            checks.push(pass(
                check::SOURCE_DATABASE_EXISTS,
                format!(
                    "database \"{db}\" exists on the source ({})",
                    human_bytes(d.size_bytes)
                ),
            ));
            checks.extend(t.map(absent));
            checks.push(table_filter_checks::dependencies(d, &config.tables));
            // Only the migrated tables are published and replicated.
            let migrated = table_filter_checks::migrated_only(d, &config.tables);
            checks.extend(database_checks::source_only(
                &migrated,
                s,
                config.mode,
                &config.keyless,
                t.map(|t| t.superuser),
            ));
            if let Some(t) = t {
                checks.extend(database_checks::against_target(d, t));
            }
        }
        Some(other) => {
            checks.extend(other.failure(db, &config.source));
            checks.extend(t.map(absent));
            checks.push(fail(
                check::DATABASE_CHECKS_SKIPPED,
                format!(
                    "database \"{db}\": its checks were not run ({})",
                    DATABASE_IDS.join(", ")
                ),
                "fix the problem above and validate again",
            ));
        }
        // No session to the source at all: its skipped line covers this.
        None => checks.extend(t.map(absent)),
    }
    checks
}

/// Per-database checks that need a session on the source database.
const DATABASE_IDS: &[&str] = &[
    check::SOURCE_TABLE_READ,
    check::SOURCE_PUBLICATION_PRIVILEGE,
    check::REPLICA_IDENTITY,
    check::REPLICA_IDENTITY_EQUALITY,
    check::EXTENSIONS,
    check::COLLATIONS,
    check::ENCODING_LOCALE,
    check::UNLOGGED_TABLES,
    check::LARGE_OBJECTS,
    check::USER_CASTS,
    check::TABLESPACES,
    check::NOT_CARRIED,
    check::TABLE_FILTERS,
];

/// What became of one source database.
enum DbRead {
    Read(Box<SourceDatabase>),
    Missing,
    Unreachable(ConnError),
    Failed(ConnError),
}

impl DbRead {
    fn failure(&self, db: &str, endpoint: &Endpoint) -> Option<ValidationCheck> {
        let server = connect::params(endpoint, db).target();
        match self {
            DbRead::Read(_) => None,
            DbRead::Missing => Some(fail(
                check::SOURCE_DATABASE_EXISTS,
                format!("database \"{db}\" does not exist on the source {server}"),
                "fix the databases list in the config",
            )),
            DbRead::Unreachable(e) => {
                let x = explain(Side::Source, &server, &endpoint.user, e);
                Some(fail(
                    check::SOURCE_CONNECTIVITY,
                    format!("database \"{db}\": {}", x.message),
                    x.fix,
                ))
            }
            DbRead::Failed(e) => Some(fail(
                check::SOURCE_DATABASE_EXISTS,
                format!(
                    "database \"{db}\" on the source {server}: reading its catalog failed: {e}"
                ),
                "see the source server's log",
            )),
        }
    }
}

struct SourceSide {
    connectivity: Vec<ValidationCheck>,
    server: Option<SourceServer>,
    skipped: Option<ValidationCheck>,
    databases: Vec<(String, DbRead)>,
}

struct TargetSide {
    connectivity: Vec<ValidationCheck>,
    server: Option<TargetServer>,
    skipped: Option<ValidationCheck>,
}

/// Source server checks listed when they could not run.
const SOURCE_IDS: &[&str] = &[
    check::SOURCE_VERSION,
    check::SOURCE_WAL_LEVEL,
    check::SOURCE_REPLICATION_SLOTS,
    check::SOURCE_WAL_SENDERS,
    check::SOURCE_MAX_SLOT_WAL_KEEP_SIZE,
    check::SOURCE_REPLICATION_PRIVILEGE,
    check::SOURCE_OPEN_TRANSACTIONS,
];

/// Target checks listed when they could not run.
const TARGET_IDS: &[&str] = &[
    check::TARGET_VERSION,
    check::TARGET_CREATE_DATABASE,
    check::TARGET_SESSION_REPLICATION_ROLE,
    check::TARGET_REPLICATION_ORIGINS,
    check::TARGET_REPLICATION_ORIGIN_CAPACITY,
    check::TARGET_DISK_SPACE,
    check::TARGET_DATABASE_ABSENT,
    check::EXTENSIONS,
    check::COLLATIONS,
    check::ENCODING_LOCALE,
];

fn connected(side: Side, conn: &Connection) -> String {
    let p = conn.connect_params();
    let transport = match (&p.host, conn.is_tls()) {
        (crate::conn::Host::Unix(_), _) => "unix socket",
        (_, true) => "TLS",
        (_, false) => "no TLS",
    };
    format!(
        "connected to the {} {} as \"{}\" (PostgreSQL {}, {transport})",
        side.as_str(),
        p.target(),
        p.user,
        conn.parameter("server_version").unwrap_or("?")
    )
}

async fn read_source(config: &Config) -> SourceSide {
    let mut side = SourceSide {
        connectivity: Vec::new(),
        server: None,
        skipped: None,
        databases: Vec::new(),
    };
    let names: Vec<&str> = config.databases.iter().map(String::as_str).collect();
    let skipped = |why: String| {
        fail(
            check::SOURCE_CHECKS_SKIPPED,
            format!(
                "{why}; not checked: {}, and per database: {}",
                SOURCE_IDS.join(", "),
                DATABASE_IDS.join(", ")
            ),
            "fix the problem above and validate again",
        )
    };
    let (mut conn, reached) = match connect::open_server(&config.source, &names).await {
        Ok(c) => c,
        Err(e) => {
            let server =
                connect::params(&config.source, names.first().copied().unwrap_or("postgres"))
                    .target();
            let x = explain(Side::Source, &server, &config.source.user, &e);
            side.connectivity
                .push(fail(check::SOURCE_CONNECTIVITY, x.message, x.fix));
            side.skipped = Some(skipped(format!("no session to the source {server}")));
            return side;
        }
    };
    side.connectivity.push(pass(
        check::SOURCE_CONNECTIVITY,
        connected(Side::Source, &conn),
    ));
    match SourceServer::read(&mut conn).await {
        Ok(s) => side.server = Some(s),
        Err(e) => {
            side.skipped = Some(fail(
                check::SOURCE_CHECKS_SKIPPED,
                format!(
                    "reading the source {} settings failed: {e}; not checked: {}",
                    conn.connect_params().target(),
                    SOURCE_IDS.join(", ")
                ),
                "see the source server's log",
            ))
        }
    }

    let limit = Arc::new(Semaphore::new(PARALLEL_DATABASES));
    let mut reusable = Some(conn);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, db) in config.databases.iter().enumerate() {
        let conn = if *db == reached {
            reusable.take()
        } else {
            None
        };
        let endpoint = config.source.clone();
        let db = db.clone();
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, read_database(&endpoint, &db, conn).await)
        });
    }
    if let Some(c) = reusable {
        let _ = c.close().await;
    }
    let mut results: Vec<(usize, DbRead)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(r) => results.push(r),
            Err(e) => tracing::warn!("a database check task ended abnormally: {e}"),
        }
    }
    results.sort_by_key(|(i, _)| *i);
    side.databases = results
        .into_iter()
        .filter_map(|(i, r)| config.databases.get(i).map(|db| (db.clone(), r)))
        .collect();
    side
}

async fn read_database(endpoint: &Endpoint, db: &str, conn: Option<Connection>) -> DbRead {
    let mut conn = match conn {
        Some(c) => c,
        None => match connect::open(endpoint, db).await {
            Ok(c) => c,
            Err(e) if e.code() == Some(crate::conn::sqlstate::INVALID_CATALOG_NAME) => {
                return DbRead::Missing
            }
            Err(e) => return DbRead::Unreachable(e),
        },
    };
    let r = SourceDatabase::read(&mut conn, db).await;
    let _ = conn.close().await;
    match r {
        Ok(d) => DbRead::Read(Box::new(d)),
        Err(e) => DbRead::Failed(e),
    }
}

async fn read_target(config: &Config) -> TargetSide {
    let mut side = TargetSide {
        connectivity: Vec::new(),
        server: None,
        skipped: None,
    };
    let (mut conn, _) = match connect::open_server(&config.target, &[]).await {
        Ok(c) => c,
        Err(e) => {
            let server = connect::params(&config.target, "postgres").target();
            let x = explain(Side::Target, &server, &config.target.user, &e);
            side.connectivity
                .push(fail(check::TARGET_CONNECTIVITY, x.message, x.fix));
            side.skipped = Some(fail(
                check::TARGET_CHECKS_SKIPPED,
                format!(
                    "no session to the target {server}; not checked: {}",
                    TARGET_IDS.join(", ")
                ),
                "fix the problem above and validate again",
            ));
            return side;
        }
    };
    side.connectivity.push(pass(
        check::TARGET_CONNECTIVITY,
        connected(Side::Target, &conn),
    ));
    match TargetServer::read(&mut conn).await {
        Ok(t) => side.server = Some(t),
        Err(e) => {
            side.skipped = Some(fail(
                check::TARGET_CHECKS_SKIPPED,
                format!(
                    "reading the target {} settings failed: {e}; not checked: {}",
                    conn.connect_params().target(),
                    TARGET_IDS.join(", ")
                ),
                "see the target server's log",
            ))
        }
    }
    let _ = conn.close().await;
    side
}
