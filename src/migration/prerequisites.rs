//! Before any data moves: both servers reachable, the target not the
//! source, the target database (re)created and the roles it needs there.

use super::database::{DbContext, DbError};
use crate::config::Endpoint;
use crate::conn::{ConnError, Connection};
use crate::control::state::ResumeState;
use crate::copy::pg_tools::PgTools;
use crate::copy::server_identity::ServerIdentity;
use crate::copy::target_db::DatabaseProps;
use crate::copy::{roles, target_db, CopyError};

/// SQLSTATE invalid_catalog_name: the database does not exist.
pub(super) use crate::conn::sqlstate::INVALID_CATALOG_NAME;

/// What the prerequisites established for the copy.
pub(super) struct Prepared {
    /// A session on the source database.
    pub(super) source: Connection,
    /// The source database's properties (its OID names our objects).
    pub(super) props: DatabaseProps,
    /// pg_dump and pg_restore of a version that can dump the source.
    pub(super) tools: PgTools,
    /// Whether the target has the source's roles (so ownership is kept).
    pub(super) keep_owners: bool,
    /// The OID of the target database.
    pub(super) target_oid: u32,
    /// The target database is kept from an earlier run whose data phase
    /// finished: the copy resumes at post-data.
    pub(super) data_copied: bool,
    /// The target database is kept from an earlier run that restored the
    /// schema: the data phase resumes.
    pub(super) schema_restored: bool,
}

/// Connects to a maintenance database of the target (`postgres`, else
/// `template1`) for CREATE/DROP DATABASE.
pub async fn connect_maintenance(endpoint: &Endpoint) -> Result<Connection, ConnError> {
    match Connection::connect(&endpoint.connect_params("postgres")).await {
        Err(e) if e.code() == Some(INVALID_CATALOG_NAME) => {
            Connection::connect(&endpoint.connect_params("template1")).await
        }
        other => other,
    }
}

/// Connects, checks the tools and the servers' identities, and creates
/// the target database (dropping an earlier one only when it is ours or
/// the operator asked to overwrite it and no migration uses it).
///
/// With `may_resume`, a target database holding an earlier run's copied
/// data is kept as it is (see [`Prepared::data_copied`]).
pub(super) async fn prepare(
    ctx: &DbContext,
    resume: &ResumeState,
    may_resume: bool,
) -> Result<Prepared, DbError> {
    let db = ctx.db.as_str();
    let cfg = &ctx.config;
    let mut source = connect_source(&cfg.source, db).await?;
    let props = target_db::source_props(&mut source, db).await?;
    let tools = locate_tools(cfg.pg_bin_dir.as_deref(), db, source.server_major()).await?;
    let mut maint = connect_maintenance(&cfg.target)
        .await
        .map_err(|e| DbError::Connect {
            db: db.to_string(),
            side: "target",
            target: cfg.target.host.to_string(),
            source: e,
        })?;
    refuse_same_server(db, &mut source, &mut maint).await?;
    if resume.target_database_created {
        end_interrupted_create(&mut maint, db).await?;
    }
    let exists = target_db::exists(&mut maint, db)
        .await
        .map_err(|e| CopyError::target(db, "checking whether the database exists", e))?;
    let resumable = resume.data_copied || resume.schema_restored;
    if exists && may_resume && resumable && resume.target_database_created {
        let keep_owners = roles::copy_missing(&mut source, &mut maint, db).await?;
        let target_oid = target_db::oid(&mut maint, db).await?;
        return Ok(Prepared {
            source,
            props,
            tools,
            keep_owners,
            target_oid,
            data_copied: resume.data_copied,
            schema_restored: resume.schema_restored,
        });
    }
    if exists {
        if resume.target_database_created || cfg.overwrite_target {
            // Ours from an interrupted run (its snapshot is gone, so the
            // copy starts over), or the operator asked to overwrite.
            if !resume.target_database_created {
                target_db::refuse_if_in_use(&mut maint, db).await?;
            }
            tracing::info!(db, "dropping the existing target database");
            target_db::drop(&mut maint, db).await?;
        } else {
            return Err(CopyError::TargetDatabaseExists {
                db: db.to_string(),
                server: maint.connect_params().target(),
            }
            .into());
        }
    }
    let keep_owners = roles::copy_missing(&mut source, &mut maint, db).await?;
    create_target(ctx, &mut maint, db, &props).await?;
    let target_oid = target_db::oid(&mut maint, db).await?;
    Ok(Prepared {
        source,
        props,
        tools,
        keep_owners,
        target_oid,
        data_copied: false,
        schema_restored: false,
    })
}

/// A session on the source database; a missing database is said as such,
/// not as a failed connection.
async fn connect_source(endpoint: &Endpoint, db: &str) -> Result<Connection, DbError> {
    let source_params = endpoint.connect_params(db);
    Connection::connect(&source_params)
        .await
        .map_err(|e| match e.code() {
            Some(INVALID_CATALOG_NAME) => DbError::Copy(CopyError::SourceDatabaseMissing {
                db: db.to_string(),
                server: source_params.target(),
            }),
            _ => DbError::Connect {
                db: db.to_string(),
                side: "source",
                target: source_params.target(),
                source: e,
            },
        })
}

/// pg_dump and pg_restore, new enough to dump a source of `source_major`.
async fn locate_tools(
    bin_dir: Option<&std::path::Path>,
    db: &str,
    source_major: u32,
) -> Result<PgTools, CopyError> {
    let tool_error = |e| CopyError::Tool {
        db: db.to_string(),
        source: e,
    };
    let tools = PgTools::locate(bin_dir).await.map_err(tool_error)?;
    tools.check_source(source_major).map_err(tool_error)?;
    Ok(tools)
}

/// Ends a killed run's CREATE DATABASE of `db` that the server is still
/// running (its backend notices the lost client only when it next writes
/// to it): left alone it would commit after this run found the name free,
/// and this run's own CREATE would then fail on a database it takes for
/// someone else's.
async fn end_interrupted_create(maint: &mut Connection, db: &str) -> Result<(), CopyError> {
    let pattern = crate::conn::quote_literal(&format!(
        "CREATE DATABASE {} %",
        crate::conn::quote_ident(db)
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    ));
    let ours = format!(
        "FROM pg_catalog.pg_stat_activity WHERE application_name = 'pgmigrate' \
         AND pid <> pg_catalog.pg_backend_pid() AND query LIKE {pattern}"
    );
    let ended = maint
        .simple_query(&format!(
            "SELECT pg_catalog.pg_terminate_backend(pid) {ours}"
        ))
        .await
        .map_err(|e| CopyError::target(db, "ending an interrupted CREATE DATABASE", e))?;
    if ended.is_empty() {
        return Ok(());
    }
    tracing::info!("ended the interrupted run's CREATE DATABASE on the target");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let left = maint
            .simple_query(&format!("SELECT 1 {ours}"))
            .await
            .map_err(|e| CopyError::target(db, "waiting for an interrupted CREATE DATABASE", e))?;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Creates the target database, recording around it whose it is.
async fn create_target(
    ctx: &DbContext,
    maint: &mut Connection,
    db: &str,
    props: &DatabaseProps,
) -> Result<(), DbError> {
    // Recorded before CREATE DATABASE (the name was free a moment ago): a
    // kill between the two must leave a restart that knows the database is
    // its own to drop and recreate, not someone else's to refuse.
    ctx.record(|r| {
        r.target_database_created = true;
        r.copy_completed = false;
        r.data_copied = false;
        r.schema_restored = false;
        r.late_copies.clear();
    })
    .await?;
    crate::chaos::point("target-database-recorded").await;
    if let Err(e) = target_db::create(maint, db, props).await {
        // Not created (a race took the name, or the target refused): it is
        // not ours, and cancel must not drop it.
        ctx.record(|r| r.target_database_created = false).await?;
        return Err(e.into());
    }
    crate::chaos::point("target-database-created").await;
    Ok(())
}

/// Before anything that creates or drops a database on the "target": the
/// identity of the server, not its address, tells whether it is the source.
async fn refuse_same_server(
    db: &str,
    source: &mut Connection,
    maint: &mut Connection,
) -> Result<(), CopyError> {
    let source_id = ServerIdentity::read(source)
        .await
        .map_err(|e| CopyError::source(db, "reading the server identity", e))?;
    let target_id = ServerIdentity::read(maint)
        .await
        .map_err(|e| CopyError::target(db, "reading the server identity", e))?;
    if source_id.same_server(&target_id) {
        return Err(CopyError::TargetIsSource {
            db: db.to_string(),
            target: maint.connect_params().target(),
            source_server: source.connect_params().target(),
            port: target_id.port,
        });
    }
    Ok(())
}
