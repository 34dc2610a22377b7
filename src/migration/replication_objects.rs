//! The objects a migration creates outside the copied data — slot and
//! publications on the source, REPLICA IDENTITY FULL on the keyless tables
//! configured for it, one replication origin per apply worker on the
//! target: named, recorded in state.json before they exist, and dropped
//! (or restored) here only.

use std::time::Duration;

use super::database::{DbContext, DbError};
use super::step_error::StepError;
use crate::config::{DdlMode, MESSAGES_SINCE};
use crate::conn::{sqlstate, Connection};
use crate::control::state::{IdentityChange, ResumeState};
use crate::copy::{slot, target_db, CopyError};
use crate::stream::ddl::capture;
use crate::stream::publication::{self, KeylessPlan};

/// The apply workers' origin names for the slot `slot_name`, applying into
/// the target database of OID `target_db_oid` (which another migration's
/// overwrite then recognizes; state files of older versions name none).
pub(super) fn origin_names(
    slot_name: &str,
    target_db_oid: Option<u32>,
    workers: usize,
) -> Vec<String> {
    let stem = match target_db_oid {
        Some(oid) => format!("{slot_name}{}", target_db::origin_marker(oid)),
        None => format!("{slot_name}_w"),
    };
    (0..workers).map(|i| format!("{stem}{i}")).collect()
}

/// Forgets slot, publication and origins once they are dropped.
pub(super) fn forget(resume: &mut ResumeState) {
    resume.slot_name = None;
    resume.publication_name = None;
    resume.insert_publication_name = None;
    resume.identity_changes.clear();
    resume.origin_names.clear();
    resume.copy_origin_names.clear();
    resume.ddl_capture = None;
}

/// True when something of the migration may be left on the source.
pub(super) fn has_source_objects(resume: &ResumeState) -> bool {
    resume.slot_name.is_some()
        || resume.publication_name.is_some()
        || resume.insert_publication_name.is_some()
        || !resume.identity_changes.is_empty()
        || resume.ddl_capture.is_some()
}

/// Decides the database's `ddl` mode and, when it captures, creates the
/// source's event triggers (recorded first) before the slot, so every
/// command after the slot's snapshot reaches the stream.
pub(super) async fn prepare_ddl_capture(
    ctx: &DbContext,
    source: &mut Connection,
    name: &str,
) -> Result<DdlMode, DbError> {
    let db = ctx.db.as_str();
    let privileged = capture::can_capture(source)
        .await
        .map_err(|e| StepError::source(db, "reading role attributes", e))?;
    let recent = source.server_major() >= MESSAGES_SINCE;
    let mode = DdlMode::resolve(ctx.config.ddl, privileged && recent);
    if mode.captures() && !(privileged && recent) {
        return Err(StepError::DdlCapture {
            db: db.to_string(),
            mode: mode.as_str(),
            needs: if recent {
                "a source user that may create event triggers (a superuser)".into()
            } else {
                format!(
                    "a source of PostgreSQL {MESSAGES_SINCE} or later (this one is {}), whose pgoutput carries logical messages",
                    source.server_major()
                )
            },
            fix: "connect as a superuser, or set ddl = \"ignore\" and keep the schema unchanged until cutover",
        }
        .into());
    }
    let capture_name = mode.captures().then(|| name.to_string());
    ctx.record(move |r| {
        r.ddl_mode = Some(mode);
        r.ddl_capture = capture_name;
    })
    .await?;
    if mode.captures() {
        let ins = publication::insert_publication_name(name);
        capture::create(source, name, &ins)
            .await
            .map_err(|e| StepError::source(db, "creating the DDL capture (event triggers)", e))?;
        tracing::info!(
            mode = mode.as_str(),
            "DDL on the source is captured by an event trigger"
        );
    } else {
        tracing::warn!(
            "ddl = \"ignore\": schema changes on the source are not carried to the target"
        );
    }
    Ok(mode)
}

/// Prepares the keyless tables of an online migration before its
/// publications: sets REPLICA IDENTITY FULL where `[keyless]` says so
/// (recorded first, with the identity to restore) and returns the quoted
/// names of the `insert_only` tables, for the inserts-only publication
/// `publication` gets next to it (also recorded first).
pub(super) async fn prepare_keyless(
    ctx: &DbContext,
    source: &mut Connection,
    publication_name: &str,
) -> Result<Vec<String>, DbError> {
    let db = ctx.db.as_str();
    let tables = publication::keyless_tables(source)
        .await
        .map_err(|e| StepError::source(db, "listing tables without a key", e))?;
    let plan = KeylessPlan::new(&ctx.config.keyless, tables);
    if !plan.is_runnable() {
        let names: Vec<&str> = plan
            .failing
            .iter()
            .chain(&plan.partitions_insert_only)
            .map(|t| t.quoted.as_str())
            .collect();
        tracing::warn!(
            tables = names.join(", "),
            "tables without a key or replica identity are published as they are: the source refuses their UPDATE/DELETE while the migration runs (see [keyless])"
        );
    }
    let insert_only: Vec<String> = plan.insert_only.iter().map(|t| t.quoted.clone()).collect();
    // Published through its root, a partition's old rows arrive under the
    // root's identity: a root that is not FULL already becomes FULL too.
    let mut full: Vec<(String, char)> = Vec::new();
    for t in &plan.full {
        full.push((t.quoted.clone(), t.identity));
        if let (Some(root), Some(identity)) = (&t.partition_of, t.root_identity) {
            if identity != 'f' && !full.iter().any(|(q, _)| q == root) {
                full.push((root.clone(), identity));
            }
        }
    }
    let recorded = full.clone();
    let insert_publication =
        (!insert_only.is_empty()).then(|| publication::insert_publication_name(publication_name));
    ctx.record(move |r| {
        // A restart finds the tables FULL already and so not keyless: the
        // originals recorded by the first run stay.
        for (table, original) in &recorded {
            if !r.identity_changes.iter().any(|c| c.table == *table) {
                r.identity_changes.push(IdentityChange {
                    table: table.clone(),
                    original: *original,
                });
            }
        }
        if insert_publication.is_some() {
            r.insert_publication_name = insert_publication;
        }
    })
    .await?;
    for (table, _) in &full {
        publication::set_identity(source, table, 'f')
            .await
            .map_err(|e| {
                StepError::source(
                    db,
                    format!("setting REPLICA IDENTITY FULL on table {table}"),
                    e,
                )
            })?;
        tracing::info!(table = %table, "REPLICA IDENTITY FULL set for the migration ([keyless])");
    }
    if !insert_only.is_empty() {
        tracing::info!(
            tables = insert_only.join(", "),
            "published for inserts only ([keyless])"
        );
    }
    Ok(insert_only)
}

/// Drops the slot (waiting for its walsender to let go) and publications,
/// then gives the keyless tables their replica identity back (after the
/// publications: a table without identity in a publication that publishes
/// updates would make the source refuse them). Anything may already be
/// gone.
pub(super) async fn drop_source_objects(
    source: &mut Connection,
    db: &str,
    resume: &ResumeState,
) -> Result<(), StepError> {
    if let Some(slot_name) = resume.slot_name.as_deref() {
        let mut tries = 0;
        loop {
            match slot::drop_if_exists(source, db, slot_name).await {
                Ok(_) => break,
                Err(CopyError::Source { source: e, .. })
                    if e.code() == Some(sqlstate::OBJECT_IN_USE) && tries < 100 =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if let Some(name) = resume.ddl_capture.as_deref() {
        capture::drop_if_exists(source, name)
            .await
            .map_err(|e| StepError::source(db, "dropping the DDL capture (event triggers)", e))?;
    }
    for p in [&resume.publication_name, &resume.insert_publication_name]
        .into_iter()
        .flatten()
    {
        publication::drop_if_exists(source, db, p).await?;
    }
    restore_identities(source, &resume.identity_changes)
        .await
        .map_err(|e| StepError::source(db, "restoring replica identities", e))?;
    Ok(())
}

/// Puts back the replica identities `[keyless]` changed, on the source or
/// (at cutover, where the dump carried FULL over) on the target.
pub(super) async fn restore_identities(
    conn: &mut Connection,
    changes: &[IdentityChange],
) -> Result<(), crate::conn::ConnError> {
    if changes.is_empty() {
        return Ok(());
    }
    // A source locked at cutover defaults to read-only.
    conn.execute("SET default_transaction_read_only = off")
        .await?;
    for c in changes {
        if publication::set_identity(conn, &c.table, c.original).await? {
            tracing::info!(
                table = %c.table,
                identity = publication::identity_keyword(c.original),
                "replica identity restored"
            );
        }
    }
    Ok(())
}

/// Drops the apply workers' replication origins on the target (cluster-wide
/// objects: any database of the target server will do); missing ones are
/// skipped.
pub(super) async fn drop_origins(
    target: &mut Connection,
    db: &str,
    origins: &[String],
) -> Result<(), StepError> {
    for o in origins {
        let lit = crate::conn::quote_literal(o);
        target
            .execute(&format!(
                "SELECT pg_catalog.pg_replication_origin_drop(roname) FROM pg_catalog.pg_replication_origin WHERE roname = {lit}"
            ))
            .await
            .map_err(|e| StepError::target(db, format!("dropping replication origin {o}"), e))?;
    }
    Ok(())
}

/// Drops the temporary slot of an offline copy over the replication
/// session that holds it (SQL's `pg_drop_replication_slot` would find it
/// active).
pub(super) async fn drop_exported_slot(
    conn: &mut Connection,
    db: &str,
    name: &str,
) -> Result<(), StepError> {
    conn.execute(&format!("DROP_REPLICATION_SLOT {name}"))
        .await
        .map_err(|e| StepError::source(db, "dropping the replication slot", e))?;
    Ok(())
}
