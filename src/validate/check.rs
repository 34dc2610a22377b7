//! The check identifiers and the three ways a check can end. Ids are part of
//! the contract (`show --json`, `validate --json`): never rename one.

use crate::control::state::ValidationCheck;
use crate::control::status::CheckResult;

/// Connect and log in to the source server.
pub const SOURCE_CONNECTIVITY: &str = "source_connectivity";
/// Connect and log in to the target server.
pub const TARGET_CONNECTIVITY: &str = "target_connectivity";
/// Source major version supported (12 or later).
pub const SOURCE_VERSION: &str = "source_version";
/// Target major version supported and not older than the source's.
pub const TARGET_VERSION: &str = "target_version";
/// pg_dump/pg_restore at least as new as the source.
pub const PG_TOOLS_VERSION: &str = "pg_tools_version";
/// `wal_level = logical` on the source.
pub const SOURCE_WAL_LEVEL: &str = "source_wal_level";
/// Free replication slots on the source, one per database.
pub const SOURCE_REPLICATION_SLOTS: &str = "source_replication_slots";
/// Free WAL senders on the source, one per database.
pub const SOURCE_WAL_SENDERS: &str = "source_wal_senders";
/// `max_slot_wal_keep_size` bounds what a stalled slot may retain.
pub const SOURCE_MAX_SLOT_WAL_KEEP_SIZE: &str = "source_max_slot_wal_keep_size";
/// The source user has REPLICATION or is superuser.
pub const SOURCE_REPLICATION_PRIVILEGE: &str = "source_replication_privilege";
/// Which `ddl` mode an online migration runs with, and why.
pub const DDL_REPLICATION: &str = "ddl_replication";
/// Long-running or prepared transactions that stall slot creation.
pub const SOURCE_OPEN_TRANSACTIONS: &str = "source_open_transactions";
/// The target is another server than the source (by server identity).
pub const TARGET_NOT_SOURCE: &str = "target_not_source";
/// The target user can create (and, to overwrite, drop) the databases.
pub const TARGET_CREATE_DATABASE: &str = "target_create_database";
/// The target user may set `session_replication_role`.
pub const TARGET_SESSION_REPLICATION_ROLE: &str = "target_session_replication_role";
/// The target user may use replication origins.
pub const TARGET_REPLICATION_ORIGINS: &str = "target_replication_origins";
/// The target has room for one replication origin per apply worker.
pub const TARGET_REPLICATION_ORIGIN_CAPACITY: &str = "target_replication_origin_capacity";
/// Free disk space for the data on the target.
pub const TARGET_DISK_SPACE: &str = "target_disk_space";
/// A configured database exists on the source (per database).
pub const SOURCE_DATABASE_EXISTS: &str = "source_database_exists";
/// A configured database does not yet exist on the target (per database).
pub const TARGET_DATABASE_ABSENT: &str = "target_database_absent";
/// The source user can read every table and sequence (per database).
pub const SOURCE_TABLE_READ: &str = "source_table_read";
/// The source user can create the publication (per database).
pub const SOURCE_PUBLICATION_PRIVILEGE: &str = "source_publication_privilege";
/// Every table has a primary key or replica identity (per database).
pub const REPLICA_IDENTITY: &str = "replica_identity";
/// Keyless tables replicated for INSERTs only (`[keyless]`; per database).
pub const KEYLESS_INSERT_ONLY: &str = "keyless_insert_only";
/// Keyless tables given REPLICA IDENTITY FULL for the migration
/// (`[keyless]`; per database).
pub const KEYLESS_REPLICA_IDENTITY_FULL: &str = "keyless_replica_identity_full";
/// Replica identity columns of a type without equality (composites holding
/// point or json, for instance): how the target finds the old rows.
pub const REPLICA_IDENTITY_EQUALITY: &str = "replica_identity_equality";
/// Extensions installed on the source are available on the target.
pub const EXTENSIONS: &str = "extensions";
/// Collations used by columns, indexes and domains exist on the target.
pub const COLLATIONS: &str = "collations";
/// The database's encoding and locale can be created on the target.
pub const ENCODING_LOCALE: &str = "encoding_locale";
/// Unlogged tables (not replicated).
pub const UNLOGGED_TABLES: &str = "unlogged_tables";
/// Large objects (copied at the snapshot only).
pub const LARGE_OBJECTS: &str = "large_objects";
/// User-defined casts.
pub const USER_CASTS: &str = "user_casts";
/// Objects in tablespaces other than the default.
pub const TABLESPACES: &str = "tablespaces";
/// Objects the migration cannot carry (subscriptions, security labels,
/// inheritance children's column order).
pub const NOT_CARRIED: &str = "not_carried";
/// `[tables]`: patterns that match no table, and foreign keys or views of
/// migrated tables reading excluded ones.
pub const TABLE_FILTERS: &str = "table_filters";
/// The source's lock table holds a lock on every table at once.
pub const SOURCE_LOCK_CAPACITY: &str = "source_lock_capacity";
/// Checks of the source server that could not run (no connection).
pub const SOURCE_CHECKS_SKIPPED: &str = "source_checks_skipped";
/// Checks of the target server that could not run (no connection).
pub const TARGET_CHECKS_SKIPPED: &str = "target_checks_skipped";
/// Checks of one database that could not run.
pub const DATABASE_CHECKS_SKIPPED: &str = "database_checks_skipped";

/// A check that passed.
pub fn pass(id: &str, message: impl Into<String>) -> ValidationCheck {
    make(id, CheckResult::Succeeded, message.into(), String::new())
}

/// A check that passed with a caveat the operator should know.
pub fn warn(id: &str, message: impl Into<String>, fix: impl Into<String>) -> ValidationCheck {
    make(id, CheckResult::Warning, message.into(), fix.into())
}

/// A check that blocks migrating.
pub fn fail(id: &str, message: impl Into<String>, fix: impl Into<String>) -> ValidationCheck {
    make(id, CheckResult::Failed, message.into(), fix.into())
}

fn make(id: &str, result: CheckResult, message: String, fix: String) -> ValidationCheck {
    ValidationCheck {
        id: id.to_string(),
        result,
        message,
        fix,
    }
}

/// Most names listed in one message; the rest are counted.
pub const LIST_LIMIT: usize = 20;

/// `a, b, c and 12 more`: a list short enough to read in one line.
pub fn list(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(LIST_LIMIT).map(String::as_str).collect();
    let mut s = shown.join(", ");
    if names.len() > LIST_LIMIT {
        s.push_str(&format!(" and {} more", names.len() - LIST_LIMIT));
    }
    s
}

/// `1 table` / `2 tables`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
