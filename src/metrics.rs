//! The metric names of the contract, in one place, and the helpers that
//! update them where the work happens.
//!
//! Without [`install`] the helpers record into `metrics`' no-op recorder, so
//! library code and tests call them freely; `run` installs the Prometheus
//! exporter once, when `metrics_listen` is set.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder};
use thiserror::Error;

use tokio::task::JoinSet;

use crate::listen::http::{self, HttpLimits};
use crate::shutdown::Shutdown;

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

/// 1 while a verify runs in the daemon (console `VERIFY`).
pub const VERIFY_RUNNING: &str = "pgmigrate_verify_running";
/// Tables compared by verify.
pub const VERIFY_TABLES_CHECKED_TOTAL: &str = "pgmigrate_verify_tables_checked_total";

/// Publishes whether a verify runs in the daemon.
pub fn set_verify_running(running: bool) {
    gauge!(VERIFY_RUNNING).set(if running { 1.0 } else { 0.0 });
}

/// Counts a table compared by verify in `db`.
pub fn verify_table_checked(db: &str) {
    counter!(VERIFY_TABLES_CHECKED_TOTAL, "database" => db.to_string()).increment(1);
}

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

/// Publishes the copy state of every table of `db` at once
/// (`pgmigrate_tables{database,state}` for queued, loading, completed and
/// errored).
pub fn set_tables(db: &str, queued: u64, loading: u64, completed: u64, errored: u64) {
    for (state, count) in [
        ("queued", queued),
        ("loading", loading),
        ("completed", completed),
        ("errored", errored),
    ] {
        tables(db, state, count);
    }
}

/// Publishes how far the target is behind the source for `db`.
pub fn set_replication_lag(db: &str, bytes: u64, seconds: f64) {
    gauge!(REPLICATION_LAG_BYTES, "database" => db.to_string()).set(bytes as f64);
    gauge!(REPLICATION_LAG_SECONDS, "database" => db.to_string()).set(seconds);
}

/// Publishes the WAL the source retains for the slot of `db`.
pub fn set_source_retained_wal(db: &str, bytes: u64) {
    gauge!(SOURCE_RETAINED_WAL_BYTES, "database" => db.to_string()).set(bytes as f64);
}

/// Publishes whether cutover may be triggered now.
pub fn set_cutover_ready(ready: bool) {
    gauge!(CUTOVER_READY).set(if ready { 1.0 } else { 0.0 });
}

/// The status/substatus pair last published, so the next change can zero it.
static CURRENT_STATUS: Mutex<Option<(String, String)>> = Mutex::new(None);

/// Publishes the migration's status: `pgmigrate_status{status,substatus}`
/// becomes 1 for this pair and 0 for the pair published before, so a query
/// for `== 1` always finds exactly one series.
pub fn set_status(status: &str, substatus: &str) {
    // A poisoned lock only means another thread panicked mid-update; the
    // stored pair is still a complete value.
    let mut current = CURRENT_STATUS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((old_status, old_substatus)) = current.take() {
        if old_status != status || old_substatus != substatus {
            gauge!(STATUS, "status" => old_status, "substatus" => old_substatus).set(0.0);
        }
    }
    gauge!(STATUS, "status" => status.to_string(), "substatus" => substatus.to_string()).set(1.0);
    *current = Some((status.to_owned(), substatus.to_owned()));
}

/// Registers the help text (and unit) of every contract metric, so a scrape
/// explains each series. Call after [`install`]; descriptions given before a
/// recorder is installed are lost.
pub fn describe() {
    describe_gauge!(
        VERIFY_RUNNING,
        "1 while a verify (console VERIFY) runs in the daemon, else 0."
    );
    describe_counter!(
        VERIFY_TABLES_CHECKED_TOTAL,
        "Tables compared by verify while streaming, per database."
    );
    describe_gauge!(
        REPLICATION_LAG_BYTES,
        Unit::Bytes,
        "Bytes of source WAL not yet applied to the target, per database."
    );
    describe_gauge!(
        REPLICATION_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest source commit not yet applied to the target, per database."
    );
    describe_gauge!(
        SOURCE_RETAINED_WAL_BYTES,
        Unit::Bytes,
        "WAL the source keeps on disk for the migration's replication slot, per database."
    );
    describe_counter!(
        COPY_ROWS_TOTAL,
        Unit::Count,
        "Rows copied by the snapshot copy, per database."
    );
    describe_counter!(
        COPY_BYTES_TOTAL,
        Unit::Bytes,
        "COPY data bytes copied by the snapshot copy, per database."
    );
    describe_gauge!(
        TABLES,
        Unit::Count,
        "Tables per snapshot copy state (queued, loading, completed, errored), per database."
    );
    describe_counter!(
        APPLY_CHANGES_TOTAL,
        Unit::Count,
        "Replicated changes applied to the target, per database and operation."
    );
    describe_counter!(
        APPLY_TRANSACTIONS_TOTAL,
        Unit::Count,
        "Target transactions committed by the apply workers, per database."
    );
    describe_gauge!(
        STATUS,
        "1 for the migration's current status and substatus, 0 for earlier ones."
    );
    describe_gauge!(
        CUTOVER_READY,
        "1 when the migration waits for the cutover trigger, else 0."
    );
}

/// The Prometheus exporter could not start.
#[derive(Debug, Error)]
pub enum MetricsError {
    /// The listener could not be bound (the address is in use, say).
    #[error("cannot serve Prometheus metrics on {listen}: {error}")]
    Bind {
        /// The `metrics_listen` address.
        listen: SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
    /// `install` was called outside a tokio runtime.
    #[error("cannot serve Prometheus metrics on {listen}: not inside a tokio runtime")]
    NoRuntime {
        /// The `metrics_listen` address.
        listen: SocketAddr,
    },
    /// Installing the global recorder failed (one is already installed).
    #[error("cannot serve Prometheus metrics on {listen}: {error}")]
    Install {
        /// The `metrics_listen` address.
        listen: SocketAddr,
        /// The exporter's reason.
        error: BuildError,
    },
}

/// Serves `http://<listen>/metrics` and makes it the process's recorder, then
/// registers the help texts. Once per process, inside a tokio runtime: the
/// HTTP server ([`crate::listen::http`], with its connection limits and
/// timeouts) and the recorder's upkeep run as tasks in `tasks`, which the
/// caller joins; both end when `stopping` fires. Returns the bound address
/// (`listen` with port 0 gets a free one).
pub fn install(
    listen: SocketAddr,
    tasks: &mut JoinSet<()>,
    stopping: &Shutdown,
) -> Result<SocketAddr, MetricsError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(MetricsError::NoRuntime { listen });
    }
    // Bound before the recorder is installed: a busy port leaves the process
    // without a recorder, as if metrics_listen were "".
    let listener = http::bind(listen).map_err(|error| MetricsError::Bind { listen, error })?;
    let bound = listener
        .local_addr()
        .map_err(|error| MetricsError::Bind { listen, error })?;
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|error| MetricsError::Install { listen, error })?;
    describe();
    let render_handle = handle.clone();
    let serve = http::serve(
        listener,
        Arc::new(move || render_handle.render()),
        HttpLimits::default(),
    );
    let stop = stopping.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = serve => {}
            () = stop.requested() => {}
        }
    });
    // Histograms and summaries need draining now and then; the exporter's own
    // listener did this, the bare recorder does not.
    let stop = stopping.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => handle.run_upkeep(),
                () = stop.requested() => return,
            }
        }
    });
    Ok(bound)
}

/// How often the recorder's upkeep runs.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
