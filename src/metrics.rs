//! The metric names of the contract, in one place, and the helpers that
//! update them where the work happens.

use metrics::{counter, gauge};

/// Bytes of WAL the target is behind the source.
pub const REPLICATION_LAG_BYTES: &str = "pgmigrate_replication_lag_bytes";
/// Age of the oldest source commit not yet applied.
pub const REPLICATION_LAG_SECONDS: &str = "pgmigrate_replication_lag_seconds";
/// WAL the source keeps for our slot.
pub const SOURCE_RETAINED_WAL_BYTES: &str = "pgmigrate_source_retained_wal_bytes";
/// Rows copied by the snapshot copy.
pub const COPY_ROWS_TOTAL: &str = "pgmigrate_copy_rows_total";
/// Bytes copied by the snapshot copy.
pub const COPY_BYTES_TOTAL: &str = "pgmigrate_copy_bytes_total";
/// Tables per copy state (queued, loading, completed, errored).
pub const TABLES: &str = "pgmigrate_tables";
/// Changes applied, by operation.
pub const APPLY_CHANGES_TOTAL: &str = "pgmigrate_apply_changes_total";
/// Target transactions committed by apply.
pub const APPLY_TRANSACTIONS_TOTAL: &str = "pgmigrate_apply_transactions_total";
/// 1 for the current status/substatus pair.
pub const STATUS: &str = "pgmigrate_status";
/// 1 when cutover may be triggered.
pub const CUTOVER_READY: &str = "pgmigrate_cutover_ready";

/// Counts rows copied into `db`.
pub fn copy_rows(db: &str, rows: u64) {
    counter!(COPY_ROWS_TOTAL, "database" => db.to_string()).increment(rows);
}

/// Counts bytes copied into `db`.
pub fn copy_bytes(db: &str, bytes: u64) {
    counter!(COPY_BYTES_TOTAL, "database" => db.to_string()).increment(bytes);
}

/// Publishes the number of tables of `db` in `state`.
pub fn tables(db: &str, state: &'static str, count: u64) {
    gauge!(TABLES, "database" => db.to_string(), "state" => state).set(count as f64);
}

/// Counts changes applied to `db`, by operation.
pub fn applied(db: &str, inserts: u64, updates: u64, deletes: u64) {
    for (op, n) in [
        ("insert", inserts),
        ("update", updates),
        ("delete", deletes),
    ] {
        if n > 0 {
            counter!(APPLY_CHANGES_TOTAL, "database" => db.to_string(), "op" => op).increment(n);
        }
    }
    counter!(APPLY_TRANSACTIONS_TOTAL, "database" => db.to_string()).increment(1);
}
