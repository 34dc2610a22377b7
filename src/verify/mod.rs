//! `pgmigrate verify`: compares source and target, database by database
//! (all at once): schema objects by kind and name, per table a row count
//! and an order-independent content checksum computed on both servers in
//! parallel, and sequence values. It only reads; every difference found is
//! listed in a [`VerifyReport`].
//!
//! Row text must come out byte-identical on both servers for equal rows, so
//! every session gets the same output settings (see [`SESSION_SETTINGS`]),
//! and each side reads all its tables in one exported snapshot, so counts of
//! different tables are consistent with each other.

mod catalog;
mod diff;
mod filtered;
mod keys;
pub mod live;
mod live_client;
mod more_objects;
mod report;
pub use live_client::verify as verify_auto;
pub mod live_console;
mod tables;

use std::sync::Arc;

use tracing::Instrument;

use crate::config::{Config, Endpoint};
use crate::conn::{quote_literal, ConnError, Connection};

pub use report::{
    render_json, render_text, DatabaseReport, DiffKind, Difference, ObjectCount, VerifyReport,
};

use catalog::{read_catalog, CatalogError};
use diff::{checksum_sql, compared_columns, diff_objects, diff_sequences, diff_sums};
use tables::{checksum_tables, TableJob};

/// Output settings that make a row's text depend only on its values. The
/// wire client already sets DateStyle, IntervalStyle, extra_float_digits and
/// client_encoding at startup; they are repeated so this list is complete.
/// The timeouts are cleared because a role default must not cut a long
/// checksum short, and sessions idle in their snapshot transaction while
/// others work. Only pg_catalog is searched, so a user's operator or
/// function (the regression database has `text || "char"`) never captures
/// one the queries mean.
pub const SESSION_SETTINGS: &str = "SET search_path = pg_catalog; \
     SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
     SET lc_monetary = 'C'; SET statement_timeout = 0; SET lock_timeout = 0; \
     SET idle_in_transaction_session_timeout = 0";

pub use crate::side::Side;

/// Why verification could not finish (differences are not errors).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The daemon stopped while a verify ran in it.
    #[error("verify stopped: the daemon is exiting")]
    Stopped,
    /// A session could not be opened.
    #[error("cannot connect to database \"{db}\" on the {side}: {source}")]
    Connect {
        /// Which server.
        side: Side,
        /// The database.
        db: String,
        /// What failed.
        #[source]
        source: ConnError,
    },
    /// A query failed.
    #[error("{what} in database \"{db}\" on the {side}: {source}")]
    Query {
        /// Which server.
        side: Side,
        /// The database.
        db: String,
        /// What was being done, naming the table if any.
        what: String,
        /// The server's or the client's error.
        #[source]
        source: ConnError,
    },
    /// A verifying task ended abnormally.
    #[error("verifying database \"{db}\" stopped: {source}")]
    Task {
        /// The database.
        db: String,
        /// How the task ended (panicked or canceled).
        #[source]
        source: tokio::task::JoinError,
    },
    /// The stream could not be held at the verify point.
    #[error("verifying database \"{db}\" while streaming: {message}")]
    Hold {
        /// The database.
        db: String,
        /// What went wrong.
        message: String,
    },
    /// The daemon's verify could not be asked or followed.
    #[error("verify while streaming: {0}")]
    Daemon(String),
    /// No session could be opened on one side.
    #[error("verifying database \"{db}\": no session opened")]
    NoSession {
        /// The database.
        db: String,
    },
}

/// Compares every database of `config` on source and target.
pub async fn verify(config: &Config) -> Result<VerifyReport, VerifyError> {
    let config = Arc::new(config.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let mut names = std::collections::HashMap::new();
    for (i, db) in config.databases.iter().enumerate() {
        let config = config.clone();
        let span = tracing::info_span!("database", name = %db);
        let task = {
            let db = db.clone();
            async move { (i, verify_database(&config, &db, None).await) }
        };
        let handle = tasks.spawn(task.instrument(span));
        names.insert(handle.id(), db.clone());
    }
    let mut reports: Vec<Option<DatabaseReport>> = vec![None; config.databases.len()];
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined.map_err(|e| VerifyError::Task {
            db: names.get(&e.id()).cloned().unwrap_or_default(),
            source: e,
        })?;
        if let Some(slot) = reports.get_mut(i) {
            *slot = Some(result?);
        }
    }
    Ok(VerifyReport::new(reports.into_iter().flatten().collect()))
}

/// Snapshots exported elsewhere, one per side, that every session imports
/// instead of exporting its own (verify while streaming).
pub struct Snapshots {
    /// The source's snapshot name.
    pub source: String,
    /// The target's snapshot name.
    pub target: String,
    /// Where progress is counted.
    pub limits: tables::Limits,
    /// The idle sessions that exported them, closed as soon as every
    /// session imported: the source's is the temporary slot, which would
    /// otherwise retain WAL for the whole comparison.
    pub exporters: std::sync::Mutex<Vec<Connection>>,
}

/// Compares one database, in `snapshots` when given.
async fn verify_database(
    config: &Config,
    db: &str,
    snapshots: Option<&Snapshots>,
) -> Result<DatabaseReport, VerifyError> {
    let jobs = config.copy.jobs.max(1);
    let (mut source, mut target) = tokio::try_join!(
        open_pool(
            &config.source,
            db,
            Side::Source,
            jobs,
            snapshots.map(|s| s.source.as_str())
        ),
        open_pool(
            &config.target,
            db,
            Side::Target,
            jobs,
            snapshots.map(|s| s.target.as_str())
        ),
    )?;
    if let Some(s) = snapshots {
        let exporters = s.exporters.lock().map(|mut e| std::mem::take(&mut *e));
        drop(exporters);
    }
    let (mut source_catalog, target_catalog) = match (source.first_mut(), target.first_mut()) {
        (Some(s), Some(t)) => {
            let (sc, tc) = tokio::join!(read_catalog(s), read_catalog(t));
            (
                sc.map_err(|e| catalog_error(Side::Source, db, e))?,
                tc.map_err(|e| catalog_error(Side::Target, db, e))?,
            )
        }
        _ => return Err(VerifyError::NoSession { db: db.to_string() }),
    };
    // Only what `[tables]` puts on the target is compared.
    if let Some(s) = source.first_mut() {
        filtered::Filtered::read(s, &config.tables)
            .await
            .map_err(|e| catalog_error(Side::Source, db, e))?
            .apply(&mut source_catalog);
    }

    let (objects, mut differences) = diff_objects(&source_catalog, &target_catalog);
    let mut work = Vec::new();
    for (name, s) in &source_catalog.tables {
        let Some(t) = target_catalog.tables.get(name) else {
            continue; // listed by diff_objects as missing
        };
        let (columns, diff) = compared_columns(name, &s.columns, &t.columns);
        differences.extend(diff);
        let typed = s
            .columns
            .iter()
            .filter(|c| columns.contains(&c.name))
            .cloned()
            .collect();
        work.push(TableJob {
            name: name.clone(),
            sql: checksum_sql(name, &columns),
            bytes: s.bytes.max(t.bytes),
            columns: typed,
        });
    }
    let tables_checked = work.len();
    let limits = tables::Limits {
        rows_per_second: config.verify.max_rows_per_second,
        ..snapshots.map(|s| s.limits.clone()).unwrap_or_default()
    };
    let results = checksum_tables(db, source, target, work, &limits).await?;
    let mut rows_checked = 0u64;
    for r in &results {
        rows_checked = rows_checked.saturating_add(r.source.rows);
        differences.extend(diff_sums(&r.name, &r.source, &r.target));
        differences.extend(r.keys.iter().cloned());
    }
    // While streaming, the target's sequences only catch up at cutover.
    if snapshots.is_none() {
        differences.extend(diff_sequences(
            &source_catalog.sequences,
            &target_catalog.sequences,
        ));
    }
    tracing::info!(
        tables = tables_checked,
        rows = rows_checked,
        differences = differences.len(),
        "verified"
    );
    Ok(DatabaseReport::new(
        db,
        tables_checked,
        rows_checked,
        objects,
        differences,
    ))
}

fn catalog_error(side: Side, db: &str, e: CatalogError) -> VerifyError {
    VerifyError::Query {
        side,
        db: db.to_string(),
        what: e.what.to_string(),
        source: e.source,
    }
}

/// Opens `size` sessions on one side, all in one read-only snapshot: the
/// first exports it, the others import it. Where a snapshot cannot be
/// exported (a server in recovery), each session reads its own. With
/// `import`, every session imports that snapshot instead.
async fn open_pool(
    endpoint: &Endpoint,
    db: &str,
    side: Side,
    size: usize,
    import: Option<&str>,
) -> Result<Vec<Connection>, VerifyError> {
    let query_error = |what: &str, source| VerifyError::Query {
        side,
        db: db.to_string(),
        what: what.to_string(),
        source,
    };
    if let Some(snapshot) = import {
        return import_pool(endpoint, db, side, size, snapshot.to_string()).await;
    }
    let mut first = open_session(endpoint, db, side).await?;
    first
        .execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| query_error("starting the snapshot transaction", e))?;
    let snapshot = match first
        .simple_query("SELECT pg_catalog.pg_export_snapshot()")
        .await
    {
        Ok(rows) => rows.first().and_then(|r| r.str(0).ok()).map(str::to_string),
        Err(e) if !e.is_fatal() => {
            tracing::warn!(%side, "cannot export a snapshot, tables are read in separate snapshots: {e}");
            first
                .execute("ROLLBACK; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(|e| query_error("restarting the snapshot transaction", e))?;
            None
        }
        Err(e) => return Err(query_error("exporting a snapshot", e)),
    };

    let mut pool = vec![first];
    if let Some(s) = snapshot {
        pool.extend(import_pool(endpoint, db, side, size.saturating_sub(1), s).await?);
    } else {
        for _ in 1..size {
            let mut conn = open_session(endpoint, db, side).await?;
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(|e| query_error("starting the snapshot transaction", e))?;
            pool.push(conn);
        }
    }
    Ok(pool)
}

/// `size` sessions that all import `snapshot`.
async fn import_pool(
    endpoint: &Endpoint,
    db: &str,
    side: Side,
    size: usize,
    snapshot: String,
) -> Result<Vec<Connection>, VerifyError> {
    let snapshot = Some(snapshot);
    let mut others = tokio::task::JoinSet::new();
    for _ in 0..size {
        let endpoint = endpoint.clone();
        let db = db.to_string();
        let snapshot = snapshot.clone();
        others.spawn(async move {
            let mut conn = open_session(&endpoint, &db, side).await?;
            let mut sql = String::from("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
            if let Some(s) = &snapshot {
                sql.push_str(&format!("; SET TRANSACTION SNAPSHOT {}", quote_literal(s)));
            }
            conn.execute(&sql)
                .await
                .map_err(|source| VerifyError::Query {
                    side,
                    db: db.clone(),
                    what: "importing the snapshot".into(),
                    source,
                })?;
            Ok::<_, VerifyError>(conn)
        });
    }
    let mut pool = Vec::new();
    while let Some(joined) = others.join_next().await {
        let conn = joined.map_err(|source| VerifyError::Task {
            db: db.to_string(),
            source,
        })??;
        pool.push(conn);
    }
    Ok(pool)
}

/// One session with the output settings of [`SESSION_SETTINGS`].
async fn open_session(
    endpoint: &Endpoint,
    db: &str,
    side: Side,
) -> Result<Connection, VerifyError> {
    let mut conn = Connection::connect(&endpoint.connect_params(db))
        .await
        .map_err(|source| VerifyError::Connect {
            side,
            db: db.to_string(),
            source,
        })?;
    conn.execute(SESSION_SETTINGS)
        .await
        .map_err(|source| VerifyError::Query {
            side,
            db: db.to_string(),
            what: "setting session parameters".into(),
            source,
        })?;
    Ok(conn)
}
