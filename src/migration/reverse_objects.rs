//! The objects of reverse replication: a publication (and an inserts-only
//! one for keyless tables) and a slot on the target, origins on the
//! source. Names are recorded in state.json before anything exists; each
//! step is idempotent so a restart repeats it.

use super::database::{DbContext, DbError};
use super::replication_objects::{
    drop_origins, drop_source_objects, origin_names, restore_identities,
};
use super::step_error::{Side, StepError};
use crate::conn::{quote_literal, Connection};
use crate::control::state::{ResumeState, ReverseState};
use crate::protocol::lsn::Lsn;
use crate::stream::publication;

/// The reverse slot's name next to the forward slot `slot`.
fn reverse_slot_name(slot: &str) -> String {
    let mut base = slot.to_string();
    base.truncate(63 - "_rev_w00".len());
    format!("{base}_rev")
}

/// Names the reverse objects (recorded first), then creates publication
/// and slot on the target unless they exist. Called at cutover after the
/// forward stream stopped and sequences are set, before the application
/// is told to switch: the slot's consistent point precedes every write of
/// the application on the target.
pub(super) async fn prepare(ctx: &DbContext, target: &mut Connection) -> Result<(), DbError> {
    let db = ctx.db.as_str();
    let resume = ctx.resume();
    let reverse = match resume.reverse.clone() {
        Some(r) => r,
        None => {
            let slot = reverse_slot_name(resume.slot_name.as_deref().unwrap_or("pgmigrate"));
            let keyless = publication::keyless_tables(target)
                .await
                .map_err(|e| StepError::target(db, "listing keyless tables", e))?;
            let has_keyless = keyless.iter().any(|t| t.partition_of.is_none());
            let r = ReverseState {
                slot_name: slot.clone(),
                publication_name: slot.clone(),
                insert_publication_name: has_keyless
                    .then(|| publication::insert_publication_name(&slot)),
                origin_names: origin_names(&slot, None, ctx.config.apply.workers),
                identity_changes: resume.identity_changes.clone(),
                ..ReverseState::default()
            };
            let recorded = r.clone();
            ctx.record(move |s| s.reverse = Some(recorded)).await?;
            r
        }
    };
    // Keyless tables publish inserts only: an UPDATE on the new server of a
    // table without identity in a publication of updates would fail.
    let insert_only: Vec<String> = publication::keyless_tables(target)
        .await
        .map_err(|e| StepError::target(db, "listing keyless tables", e))?
        .into_iter()
        .filter(|t| t.partition_of.is_none())
        .map(|t| t.quoted)
        .collect();
    if !insert_only.is_empty() {
        tracing::warn!(
            tables = insert_only.len(),
            "tables without a key stream back to the source for inserts only"
        );
    }
    publication::create(
        target,
        db,
        &reverse.publication_name,
        &insert_only,
        &ctx.config.tables,
    )
    .await?;
    let lsn = create_slot(target, db, &reverse.slot_name).await?;
    ctx.record(move |s| {
        if let Some(r) = s.reverse.as_mut() {
            r.consistent_lsn.get_or_insert(lsn);
        }
    })
    .await?;
    tracing::info!(slot = %reverse.slot_name, %lsn, "reverse replication slot and publication on the target");
    Ok(())
}

/// Creates the logical slot unless it exists; its consistent (or confirmed)
/// position.
async fn create_slot(target: &mut Connection, db: &str, slot: &str) -> Result<Lsn, StepError> {
    let lit = quote_literal(slot);
    let rows = target
        .simple_query(&format!(
            "SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots WHERE slot_name = {lit}"
        ))
        .await
        .map_err(|e| StepError::target(db, "looking up the reverse slot", e))?;
    let rows = if rows.is_empty() {
        target
            .simple_query(&format!(
                "SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot({lit}, 'pgoutput')"
            ))
            .await
            .map_err(|e| StepError::target(db, "creating the reverse replication slot", e))?
    } else {
        rows
    };
    rows.first()
        .and_then(|r| r.opt_str(0).ok().flatten())
        .and_then(|s| s.parse::<Lsn>().ok())
        .ok_or_else(|| StepError::Unreadable {
            db: db.to_string(),
            side: Side::Target,
            what: "the reverse slot's position",
        })
}

/// Drops the reverse slot and publications on the target and the origins
/// on the source; anything may already be gone.
pub(super) async fn drop_all(
    target: &mut Connection,
    source: &mut Connection,
    db: &str,
    reverse: &ReverseState,
) -> Result<(), StepError> {
    let as_forward = ResumeState {
        slot_name: Some(reverse.slot_name.clone()),
        publication_name: Some(reverse.publication_name.clone()),
        insert_publication_name: reverse.insert_publication_name.clone(),
        ..ResumeState::default()
    };
    drop_source_objects(target, db, &as_forward).await?;
    // After the publications: a keyless table in a publication of updates
    // would make the target refuse them.
    restore_identities(target, &reverse.identity_changes)
        .await
        .map_err(|e| StepError::target(db, "restoring replica identities", e))?;
    drop_origins(source, db, &reverse.origin_names).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn reverse_slot_names_fit() {
        assert_eq!(super::reverse_slot_name("pgm_x"), "pgm_x_rev");
        let long = "s".repeat(63);
        assert!(super::reverse_slot_name(&long).len() + "_w00".len() <= 63);
    }
}
