//! What becomes of the tables without a primary key or replica identity in
//! an online migration, per `[keyless]`: which mode applies to which table
//! and the risk each mode carries. Pure functions over the facts.

use crate::config::{KeylessPolicy, Mode};
use crate::control::state::ValidationCheck;
use crate::stream::publication::{KeylessPlan, KeylessTable};

use super::check::{self, count, fail, list, pass, warn, LIST_LIMIT};
use super::database_facts::SourceDatabase;

/// `replica_identity`, plus `keyless_insert_only` and
/// `keyless_replica_identity_full` when `[keyless]` gives tables those
/// modes.
pub fn keyless(d: &SourceDatabase, mode: Mode, policy: &KeylessPolicy) -> Vec<ValidationCheck> {
    let db = &d.name;
    if mode == Mode::Offline {
        return vec![pass(
            check::REPLICA_IDENTITY,
            format!("database \"{db}\": replica identities are not needed in offline mode"),
        )];
    }
    if d.without_identity.is_empty() {
        return vec![pass(
            check::REPLICA_IDENTITY,
            format!("database \"{db}\": every table has a primary key or replica identity"),
        )];
    }
    let plan = KeylessPlan::new(policy, d.without_identity.clone());
    let mut out = vec![blocking(db, &plan)];
    if !plan.insert_only.is_empty() {
        out.push(warn(
            check::KEYLESS_INSERT_ONLY,
            format!(
                "database \"{db}\": {} without a key replicated for INSERTs only ([keyless] insert_only): {}; \
                 their UPDATE, DELETE and TRUNCATE on the source are not carried and the target diverges silently",
                count(plan.insert_only.len(), "table"),
                list(&names(&plan.insert_only))
            ),
            "use insert_only only for tables nothing updates or deletes during the migration (logs, history); else give them a primary key or use replica_identity_full",
        ));
    }
    if !plan.full.is_empty() {
        out.push(warn(
            check::KEYLESS_REPLICA_IDENTITY_FULL,
            format!(
                "database \"{db}\": {} without a key get REPLICA IDENTITY FULL on the source for the migration ([keyless] replica_identity_full; restored at cutover and cancel): {}; \
                 each UPDATE/DELETE on them writes the whole old row to WAL, and the target finds the row by comparing every column (slow on large tables without an index)",
                count(plan.full.len(), "table"),
                list(&names(&plan.full))
            ),
            "give frequently updated ones a primary key; the source user must own them (ALTER TABLE)",
        ));
    }
    out
}

fn names(tables: &[KeylessTable]) -> Vec<String> {
    tables.iter().map(|t| t.quoted.clone()).collect()
}

/// Failed for the tables in mode `fail` (and `insert_only` partitions),
/// else a pass saying how many keyless tables `[keyless]` handles.
fn blocking(db: &str, plan: &KeylessPlan) -> ValidationCheck {
    let id = check::REPLICA_IDENTITY;
    if plan.is_runnable() {
        return pass(
            id,
            format!(
                "database \"{db}\": {} without a primary key or replica identity, each handled by [keyless] (insert_only: {}, replica_identity_full: {})",
                count(plan.insert_only.len() + plan.full.len(), "table"),
                plan.insert_only.len(),
                plan.full.len()
            ),
        );
    }
    let mut parts = Vec::new();
    let mut fixes = Vec::new();
    if !plan.failing.is_empty() {
        let failing = names(&plan.failing);
        parts.push(format!(
            "{} without a primary key or replica identity; their updates and deletes cannot be replicated, and the source would refuse them while the migration publishes them: {}",
            count(failing.len(), "table"),
            list(&failing)
        ));
        let statements: Vec<String> = failing
            .iter()
            .take(LIST_LIMIT)
            .map(|t| format!("ALTER TABLE {t} REPLICA IDENTITY FULL;"))
            .collect();
        let more = failing.len().saturating_sub(LIST_LIMIT);
        let plain: Vec<String> = plan
            .failing
            .iter()
            .take(LIST_LIMIT)
            .map(|t| format!("\"{}.{}\"", t.schema, t.table))
            .collect();
        fixes.push(format!(
            "add a primary key, or choose per table in the config: [keyless] insert_only = [{}] (only for tables never updated or deleted) or replica_identity_full = [...] (pgmigrate sets and restores it), or run: {}{}",
            plain.join(", "),
            statements.join(" "),
            if more > 0 {
                format!(" (and the same for {more} more)")
            } else {
                String::new()
            }
        ));
    }
    if !plan.partitions_insert_only.is_empty() {
        let described: Vec<String> = plan
            .partitions_insert_only
            .iter()
            .map(|t| {
                format!(
                    "{} (of {})",
                    t.quoted,
                    t.partition_of.as_deref().unwrap_or("?")
                )
            })
            .collect();
        parts.push(format!(
            "{} configured insert_only, which a partition cannot be (it publishes through its partitioned table): {}",
            count(described.len(), "partition"),
            list(&described)
        ));
        fixes.push("list these partitions under [keyless] replica_identity_full instead".into());
    }
    fail(
        id,
        format!("database \"{db}\": {}", parts.join("; ")),
        fixes.join("; "),
    )
}
