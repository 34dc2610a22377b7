//! Live counters that copy and apply threads bump without taking a lock.
//!
//! While a daemon runs, a database's counters, `phase`, `message` and
//! `confirmed_lsn` belong to its [`DbProgress`]: the state writer
//! ([`super::writer`]) folds them into every write of state.json, so code
//! that changes them must do so here. The resume fields are not touched.

use super::state::{DatabaseState, MigrationState};
use super::status::Phase;
use crate::protocol::lsn::Lsn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Progress of one database. Counters are plain atomics: bump them with
/// `fetch_add(n, Ordering::Relaxed)`; readers only need each value, not a
/// consistent cut across them.
#[derive(Debug, Default)]
pub struct DbProgress {
    /// Database name; matches [`DatabaseState::name`].
    pub name: String,
    /// Tables waiting for their snapshot copy.
    pub full_load_queued_tables: AtomicU64,
    /// Tables being copied now.
    pub full_load_loading_tables: AtomicU64,
    /// Tables copied.
    pub full_load_completed_tables: AtomicU64,
    /// Tables whose copy failed.
    pub full_load_errored_tables: AtomicU64,
    /// Rows copied.
    pub rows_copied: AtomicU64,
    /// COPY bytes copied.
    pub bytes_copied: AtomicU64,
    /// Streamed inserts applied.
    pub cdc_insert_counter: AtomicU64,
    /// Streamed updates applied.
    pub cdc_update_counter: AtomicU64,
    /// Streamed deletes applied.
    pub cdc_delete_counter: AtomicU64,
    /// Streamed truncates applied.
    pub cdc_truncate_counter: AtomicU64,
    /// Streamed changes applied.
    pub applied_changes: AtomicU64,
    /// Streamed changes received, not yet applied.
    pub incoming_changes: AtomicU64,
    /// Source WAL bytes not yet confirmed.
    pub lag_bytes: AtomicU64,
    /// Source WAL the migration's slot retains, as last measured.
    pub source_retained_wal_bytes: AtomicU64,
    /// `f64::to_bits` of the apply latency in seconds.
    latency_bits: AtomicU64,
    phase: Mutex<Phase>,
    message: Mutex<Option<String>>,
    confirmed_lsn: Mutex<Option<Lsn>>,
}

impl DbProgress {
    /// Zeroed progress of database `name`, in phase `Validating`.
    pub fn new(name: &str) -> DbProgress {
        DbProgress {
            name: name.to_owned(),
            ..DbProgress::default()
        }
    }

    /// Progress continuing from a saved state, so a resumed daemon's
    /// counters do not restart at zero.
    pub fn from_state(state: &DatabaseState) -> DbProgress {
        let p = DbProgress::new(&state.name);
        let pairs = [
            (&p.full_load_queued_tables, state.full_load_queued_tables),
            (&p.full_load_loading_tables, state.full_load_loading_tables),
            (
                &p.full_load_completed_tables,
                state.full_load_completed_tables,
            ),
            (&p.full_load_errored_tables, state.full_load_errored_tables),
            (&p.rows_copied, state.rows_copied),
            (&p.bytes_copied, state.bytes_copied),
            (&p.cdc_insert_counter, state.cdc_insert_counter),
            (&p.cdc_update_counter, state.cdc_update_counter),
            (&p.cdc_delete_counter, state.cdc_delete_counter),
            (&p.cdc_truncate_counter, state.cdc_truncate_counter),
            (&p.applied_changes, state.applied_changes),
            (&p.incoming_changes, state.incoming_changes),
            (&p.lag_bytes, state.lag_bytes),
            (
                &p.source_retained_wal_bytes,
                state.source_retained_wal_bytes,
            ),
        ];
        for (counter, value) in pairs {
            counter.store(value, Ordering::Relaxed);
        }
        p.set_latency_seconds(state.latency_seconds);
        p.set_phase(state.phase);
        p.set_message(state.message.clone());
        p.set_confirmed_lsn(state.confirmed_lsn);
        p
    }

    /// Records the apply latency.
    pub fn set_latency_seconds(&self, seconds: f64) {
        self.latency_bits
            .store(seconds.to_bits(), Ordering::Relaxed);
    }

    /// The last recorded apply latency.
    pub fn latency_seconds(&self) -> f64 {
        f64::from_bits(self.latency_bits.load(Ordering::Relaxed))
    }

    /// Moves the database to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = phase;
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets (or clears) the last error or warning.
    pub fn set_message(&self, message: Option<String>) {
        *self.message.lock().unwrap_or_else(PoisonError::into_inner) = message;
    }

    /// The last error or warning.
    pub fn message(&self) -> Option<String> {
        self.message
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records the LSN last confirmed to the source.
    pub fn set_confirmed_lsn(&self, lsn: Option<Lsn>) {
        *self
            .confirmed_lsn
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = lsn;
    }

    /// The LSN last confirmed to the source.
    pub fn confirmed_lsn(&self) -> Option<Lsn> {
        *self
            .confirmed_lsn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Copies the live values into `state` (everything but `name` and `resume`).
    pub fn apply_to(&self, state: &mut DatabaseState) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        state.phase = self.phase();
        state.full_load_queued_tables = load(&self.full_load_queued_tables);
        state.full_load_loading_tables = load(&self.full_load_loading_tables);
        state.full_load_completed_tables = load(&self.full_load_completed_tables);
        state.full_load_errored_tables = load(&self.full_load_errored_tables);
        state.rows_copied = load(&self.rows_copied);
        state.bytes_copied = load(&self.bytes_copied);
        state.cdc_insert_counter = load(&self.cdc_insert_counter);
        state.cdc_update_counter = load(&self.cdc_update_counter);
        state.cdc_delete_counter = load(&self.cdc_delete_counter);
        state.cdc_truncate_counter = load(&self.cdc_truncate_counter);
        state.applied_changes = load(&self.applied_changes);
        state.incoming_changes = load(&self.incoming_changes);
        state.latency_seconds = self.latency_seconds();
        state.lag_bytes = load(&self.lag_bytes);
        state.source_retained_wal_bytes = load(&self.source_retained_wal_bytes);
        state.confirmed_lsn = self.confirmed_lsn();
        state.message = self.message();
    }
}

/// Progress of every database of a migration.
#[derive(Debug, Default)]
pub struct MigrationProgress {
    /// One per database, in config order.
    pub dbs: Vec<Arc<DbProgress>>,
}

impl MigrationProgress {
    /// Zeroed progress for `databases`.
    pub fn new(databases: &[String]) -> MigrationProgress {
        MigrationProgress {
            dbs: databases
                .iter()
                .map(|d| Arc::new(DbProgress::new(d)))
                .collect(),
        }
    }

    /// Progress continuing from a saved state.
    pub fn from_state(state: &MigrationState) -> MigrationProgress {
        MigrationProgress {
            dbs: state
                .databases
                .iter()
                .map(|d| Arc::new(DbProgress::from_state(d)))
                .collect(),
        }
    }

    /// The progress of database `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<DbProgress>> {
        self.dbs.iter().find(|d| d.name == name)
    }

    /// Copies every database's live values into `state`, adding an entry
    /// for a database the state does not list yet.
    pub fn apply_to(&self, state: &mut MigrationState) {
        for db in &self.dbs {
            match state.database_mut(&db.name) {
                Some(entry) => db.apply_to(entry),
                None => {
                    let mut entry = DatabaseState::new(&db.name);
                    db.apply_to(&mut entry);
                    state.databases.push(entry);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_to_copies_every_counter() {
        let p = DbProgress::new("d");
        let values: Vec<&AtomicU64> = vec![
            &p.full_load_queued_tables,
            &p.full_load_loading_tables,
            &p.full_load_completed_tables,
            &p.full_load_errored_tables,
            &p.rows_copied,
            &p.bytes_copied,
            &p.cdc_insert_counter,
            &p.cdc_update_counter,
            &p.cdc_delete_counter,
            &p.cdc_truncate_counter,
            &p.applied_changes,
            &p.incoming_changes,
            &p.lag_bytes,
            &p.source_retained_wal_bytes,
        ];
        for (i, c) in values.iter().enumerate() {
            c.fetch_add(i as u64 + 1, Ordering::Relaxed);
        }
        p.set_latency_seconds(1.5);
        p.set_phase(Phase::Streaming);
        p.set_message(Some("slow".into()));
        p.set_confirmed_lsn(Some(Lsn::from(0x10)));

        let mut s = DatabaseState::new("d");
        s.resume.copy_completed = true;
        p.apply_to(&mut s);
        let got = [
            s.full_load_queued_tables,
            s.full_load_loading_tables,
            s.full_load_completed_tables,
            s.full_load_errored_tables,
            s.rows_copied,
            s.bytes_copied,
            s.cdc_insert_counter,
            s.cdc_update_counter,
            s.cdc_delete_counter,
            s.cdc_truncate_counter,
            s.applied_changes,
            s.incoming_changes,
            s.lag_bytes,
            s.source_retained_wal_bytes,
        ];
        assert_eq!(got, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        assert_eq!(s.latency_seconds, 1.5);
        assert_eq!(s.phase, Phase::Streaming);
        assert_eq!(s.message.as_deref(), Some("slow"));
        assert_eq!(s.confirmed_lsn, Some(Lsn::from(0x10)));
        assert!(s.resume.copy_completed, "resume data must be left alone");

        // And back: a resumed daemon starts from the saved values.
        let again = DbProgress::from_state(&s);
        let mut t = DatabaseState::new("d");
        again.apply_to(&mut t);
        t.resume = s.resume.clone();
        assert_eq!(t, s);
    }

    #[test]
    fn migration_progress_adds_missing_databases() {
        let p = MigrationProgress::new(&["a".into(), "b".into()]);
        p.get("b").unwrap().rows_copied.store(9, Ordering::Relaxed);
        assert!(p.get("c").is_none());
        let mut s = MigrationState::default();
        s.databases.push(DatabaseState::new("a"));
        p.apply_to(&mut s);
        assert_eq!(s.databases.len(), 2);
        assert_eq!(s.database("b").unwrap().rows_copied, 9);
    }
}
