//! The objects a migration creates outside the copied data — slot and
//! publication on the source, one replication origin per apply worker on
//! the target: named, recorded in state.json before they exist, and
//! dropped here only.

use std::time::Duration;

use super::step_error::StepError;
use crate::conn::{sqlstate, Connection};
use crate::control::state::ResumeState;
use crate::copy::{slot, target_db, CopyError};
use crate::stream::publication;

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
    resume.origin_names.clear();
}

/// Drops the slot (waiting for its walsender to let go) and publication;
/// either may already be gone.
pub(super) async fn drop_source_objects(
    source: &mut Connection,
    db: &str,
    slot_name: Option<&str>,
    publication: Option<&str>,
) -> Result<(), StepError> {
    if let Some(slot_name) = slot_name {
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
    if let Some(p) = publication {
        publication::drop_if_exists(source, db, p).await?;
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
