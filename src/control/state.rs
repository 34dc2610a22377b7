//! The state.json document: the single source of truth for the status
//! machine and everything needed to resume. `show --json` prints it as is,
//! so its field names are DESIGN.md's.
//!
//! Every field has a serde default so a file written by an older version
//! still loads; `None` values serialize as `null` so the keys are always
//! present for readers of `show --json`.

use serde::{Deserialize, Serialize};

use super::status::{CheckResult, InvalidPair, InvalidTransition, Phase, Stage, Status, Substatus};
use crate::config::{MigrationName, Mode};
use crate::protocol::lsn::Lsn;

/// The whole state of one migration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MigrationState {
    /// The migration's name (its directory under the state dir).
    pub name: String,
    /// Online or offline.
    pub mode: Mode,
    /// Overall status: private so that every change goes through
    /// [`MigrationState::transition`], which keeps the pair a contract one.
    status: Status,
    /// What is being done within `status` (changed with `status`).
    substatus: Substatus,
    /// When the first `run` started (RFC 3339).
    pub started_on: Option<String>,
    /// When a terminal status was reached (RFC 3339).
    pub ended_on: Option<String>,
    /// Last error or warning concerning the migration as a whole.
    pub message: Option<String>,
    /// Premigration checks of the last validation.
    pub validation: Vec<ValidationCheck>,
    /// One entry per migrated database, in config order.
    pub databases: Vec<DatabaseState>,
    /// Process id of the `run` daemon that last wrote the file; a reader
    /// must check the store's lock to know whether it still runs.
    pub pid: Option<u32>,
    /// The config file of the last `run`, so `cancel` can clean up with no
    /// daemon running.
    #[serde(default)]
    pub config_path: Option<String>,
    /// The daemon's verify while streaming, as `show` reports it; only in
    /// the live state (never written to state.json by the daemon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyProgress>,
}

/// A verify run in the daemon (console `VERIFY`), for `show`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyProgress {
    /// Run number.
    pub id: u64,
    /// `running`, `identical`, `differences` or `failed`.
    pub state: String,
    /// Tables compared so far.
    pub tables_done: usize,
    /// Tables to compare.
    pub tables_total: usize,
    /// Longest time a stream was held, in milliseconds.
    pub held_ms: u64,
}

/// One premigration check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationCheck {
    /// Stable identifier of the check, e.g. `wal_level`.
    #[serde(default)]
    pub id: String,
    /// Succeeded, Warning or Failed.
    pub result: CheckResult,
    /// What was found.
    #[serde(default)]
    pub message: String,
    /// How to fix it (empty when nothing to fix).
    #[serde(default)]
    pub fix: String,
}

/// Progress and resume data of one database.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseState {
    /// Database name (same on source and target).
    pub name: String,
    /// Where this database stands.
    pub phase: Phase,
    /// Tables waiting for their snapshot copy.
    pub full_load_queued_tables: u64,
    /// Tables being copied now.
    pub full_load_loading_tables: u64,
    /// Tables copied.
    pub full_load_completed_tables: u64,
    /// Tables whose copy failed.
    pub full_load_errored_tables: u64,
    /// Rows copied by the snapshot copy.
    pub rows_copied: u64,
    /// COPY bytes copied by the snapshot copy.
    pub bytes_copied: u64,
    /// Streamed inserts applied.
    pub cdc_insert_counter: u64,
    /// Streamed updates applied.
    pub cdc_update_counter: u64,
    /// Streamed deletes applied.
    pub cdc_delete_counter: u64,
    /// Streamed truncates applied.
    pub cdc_truncate_counter: u64,
    /// Streamed changes applied on the target.
    pub applied_changes: u64,
    /// Streamed changes received and not yet applied.
    pub incoming_changes: u64,
    /// Seconds between a change's source commit and its apply.
    pub latency_seconds: f64,
    /// Source WAL bytes between its current position and the confirmed LSN.
    pub lag_bytes: u64,
    /// Source WAL kept for this database's replication slot, as last
    /// measured while streaming (0: not measured). A Failed migration keeps
    /// its slot, and this WAL, until `cancel`.
    pub source_retained_wal_bytes: u64,
    /// Last LSN confirmed to the source as applied (`X/Y` in the file).
    pub confirmed_lsn: Option<Lsn>,
    /// Last error or warning for this database.
    pub message: Option<String>,
    /// What a restarted daemon needs to continue.
    pub resume: ResumeState,
}

/// Resume bookkeeping of one database; not part of the operator-facing view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResumeState {
    /// Logical replication slot on the source, once created.
    pub slot_name: Option<String>,
    /// Publication on the source, once created.
    pub publication_name: Option<String>,
    /// The inserts-only publication of the `insert_only` keyless tables,
    /// recorded before it is created.
    pub insert_publication_name: Option<String>,
    /// Tables whose replica identity this migration set to FULL
    /// (`[keyless]` `replica_identity_full`), recorded before the change:
    /// cutover, cancel and cleanup put the original back.
    pub identity_changes: Vec<IdentityChange>,
    /// Replication origins on the target, one per apply worker.
    pub origin_names: Vec<String>,
    /// The slot's consistent point (`X/Y`): where copy and stream meet.
    pub consistent_lsn: Option<Lsn>,
    /// The target database is this migration's: recorded just before its
    /// CREATE DATABASE (after seeing the name free), cleared if that fails.
    pub target_database_created: bool,
    /// Snapshot copy, schema and indexes are all done.
    pub copy_completed: bool,
    /// Every table's rows (and its own indexes) are on the target: a failed
    /// or interrupted post-data resumes from the entries not yet done
    /// (listed in the work directory), then sequences and large objects.
    pub data_copied: bool,
    /// The schema (pre-data) is restored on the target and the copy's
    /// journal is in the work directory: an interrupted data phase resumes
    /// under a new snapshot, copying only the units not done.
    pub schema_restored: bool,
    /// Replication origins on the target that the copy workers commit
    /// with (which tells a resumed copy which units are in), recorded
    /// before they exist and dropped when the copy completes.
    pub copy_origin_names: Vec<String>,
    /// Tables copied under a later snapshot than the slot's consistent
    /// point (after a resume): the stream skips their changes committed
    /// before that snapshot, which their copy already holds.
    pub late_copies: Vec<LateCopy>,
    /// The DDL capture (event triggers and their schema on the source,
    /// named after the slot), recorded before it is created; dropped with
    /// the publication.
    pub ddl_capture: Option<String>,
    /// The `ddl` mode this database streams with, fixed when its slot was
    /// made (a resumed run keeps it).
    pub ddl_mode: Option<crate::config::DdlMode>,
    /// How far this database's cutover got: a daemon restarted after a
    /// kill at any point picks it up there and finishes it.
    pub cutover: CutoverStep,
    /// Reverse replication after cutover (`[cutover] reverse_replication`),
    /// recorded before its objects exist.
    pub reverse: Option<ReverseState>,
}

/// The stream from the target back to the source after cutover.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReverseState {
    /// Logical replication slot on the target.
    pub slot_name: String,
    /// Publication on the target.
    pub publication_name: String,
    /// The inserts-only publication of the target's keyless tables.
    pub insert_publication_name: Option<String>,
    /// Replication origins on the source, one per apply worker.
    pub origin_names: Vec<String>,
    /// `[keyless] replica_identity_full` tables: FULL is kept on the
    /// target while reversing (so their UPDATE/DELETE stream back too) and
    /// their original identity put back when reverse replication ends.
    pub identity_changes: Vec<IdentityChange>,
    /// The slot's consistent point, once the slot exists.
    pub consistent_lsn: Option<Lsn>,
    /// What the operator asked for (kept across a restart).
    pub end: Option<ReverseEnd>,
    /// Rollback: everything the target had is applied and the stream
    /// stopped for good (a restart only repeats the idempotent end).
    pub drained: bool,
    /// The end is done: objects dropped (and, for a rollback, the source
    /// caught up, its sequences set and writable again).
    pub ended: bool,
}

/// How reverse replication ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReverseEnd {
    /// `pgmigrate rollback`: back to the source.
    Rollback,
    /// `pgmigrate finish`: the target stays the primary.
    Finish,
}

impl ResumeState {
    /// True when a new run picks this database up where it stopped rather
    /// than copying it again: the copy is complete, or its schema is in.
    pub fn can_resume(&self) -> bool {
        self.copy_completed || self.data_copied || self.schema_restored
    }
}

/// Tables whose rows were read under one later snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateCopy {
    /// The snapshot's consistent point: changes committed before it are
    /// in the copy.
    pub lsn: Lsn,
    /// Source OIDs of the relations the stream names them by (a table, and
    /// for partitions their root too).
    pub relations: Vec<u32>,
}

/// A replica identity pgmigrate changed on the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityChange {
    /// `schema.table`, quoted for SQL.
    pub table: String,
    /// Its `relreplident` before: `n` (NOTHING), `d` (DEFAULT) or `i`
    /// (USING an index that is gone; restored as DEFAULT).
    pub original: char,
}

/// The cutover steps that must survive a crash, in order. Each later step
/// is idempotent, so a restart repeats at most the step it was killed in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CutoverStep {
    /// No cutover accepted yet.
    #[default]
    NotRequested,
    /// The operator's cutover was accepted: a restart streams and cuts over
    /// without waiting for another request.
    Requested,
    /// Every change up to the cutover position is applied and the stream
    /// stopped for good: a restart never streams again, it only syncs
    /// sequences and drops what the migration created.
    Applied,
    /// Sequences set, slot, publication and origins dropped: the database
    /// is migrated.
    Done,
}

impl MigrationState {
    /// A fresh state for `name`, one [`DatabaseState`] per database.
    pub fn new(name: &MigrationName, mode: Mode, databases: &[String]) -> MigrationState {
        MigrationState {
            name: name.as_str().to_owned(),
            mode,
            databases: databases.iter().map(|d| DatabaseState::new(d)).collect(),
            ..MigrationState::default()
        }
    }

    /// The entry of database `name`.
    pub fn database(&self, name: &str) -> Option<&DatabaseState> {
        self.databases.iter().find(|d| d.name == name)
    }

    /// The entry of database `name`, for changing it.
    pub fn database_mut(&mut self, name: &str) -> Option<&mut DatabaseState> {
        self.databases.iter_mut().find(|d| d.name == name)
    }

    /// Overall status (change it with [`MigrationState::transition`]).
    pub fn status(&self) -> Status {
        self.status
    }

    /// What is being done within [`MigrationState::status`].
    pub fn substatus(&self) -> Substatus {
        self.substatus
    }

    /// Puts a pair with no transition check: for unit tests' fixtures
    /// only, which start a state where a daemon (or a hand edit) left it.
    #[cfg(test)]
    pub(crate) fn force_pair(&mut self, status: Status, substatus: Substatus) {
        self.status = status;
        self.substatus = substatus;
    }

    /// Where the status machine stands, from the file's pair.
    pub fn stage(&self) -> Result<Stage, InvalidPair> {
        Stage::of(self.status, self.substatus)
    }

    /// Moves to `to` if the contract allows it from the current stage (see
    /// [`Stage::allows`]); otherwise changes nothing. Stamps `started_on` on
    /// first use and `ended_on` when the status is terminal (clearing it
    /// otherwise, as a resumed migration has not ended). A pair that is not
    /// the contract's (a hand-edited file) counts as not started.
    pub fn transition(&mut self, to: Stage) -> Result<(), InvalidTransition> {
        let from = self.stage().unwrap_or(Stage::Prerequisites);
        from.transition(to)?;
        self.status = to.status();
        self.substatus = to.substatus();
        if self.started_on.is_none() {
            self.started_on = Some(now_rfc3339());
        }
        self.ended_on = to.status().is_terminal().then(now_rfc3339);
        Ok(())
    }
}

impl DatabaseState {
    /// A database that has not started.
    pub fn new(name: &str) -> DatabaseState {
        DatabaseState {
            name: name.to_owned(),
            ..DatabaseState::default()
        }
    }

    /// All tables known to the snapshot copy, whatever their state.
    pub fn full_load_total_tables(&self) -> u64 {
        self.full_load_queued_tables
            .saturating_add(self.full_load_loading_tables)
            .saturating_add(self.full_load_completed_tables)
            .saturating_add(self.full_load_errored_tables)
    }
}

/// The current time as RFC 3339 UTC with seconds, e.g. `2026-05-01T12:00:00Z`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MigrationState {
        let name = MigrationName::new("orders-2026").unwrap();
        let mut s = MigrationState::new(&name, Mode::Online, &["ticketdb".into(), "timedb".into()]);
        s.transition(Stage::MigratingData).unwrap();
        s.validation.push(ValidationCheck {
            id: "wal_level".into(),
            result: CheckResult::Warning,
            message: "wal_level is replica".into(),
            fix: "set wal_level = logical and restart".into(),
        });
        let db = s.database_mut("timedb").unwrap();
        db.phase = Phase::Streaming;
        db.rows_copied = 1234;
        db.latency_seconds = 0.25;
        db.confirmed_lsn = Some("0/16B3748".parse().unwrap());
        db.resume.slot_name = Some("pgmigrate_orders_2026".into());
        s.pid = Some(42);
        s
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let text = serde_json::to_string_pretty(&s).unwrap();
        let back: MigrationState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }

    fn keys(v: &serde_json::Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn json_has_exactly_the_contract_keys() {
        let v = serde_json::to_value(sample()).unwrap();
        let mut top = vec![
            "name",
            "mode",
            "status",
            "substatus",
            "started_on",
            "ended_on",
            "validation",
            // Beyond DESIGN.md's list: the migration-level message, the
            // daemon pid and the config file (for `cancel` without a daemon).
            "message",
            "pid",
            "config_path",
            "databases",
        ];
        top.sort();
        assert_eq!(keys(&v), top);
        assert_eq!(v["mode"], "online");
        assert_eq!(v["status"], "InProgress");
        assert_eq!(v["substatus"], "MigratingData");
        assert_eq!(v["ended_on"], serde_json::Value::Null);
        assert_eq!(
            keys(&v["validation"][0]),
            ["fix", "id", "message", "result"]
        );
        assert_eq!(v["validation"][0]["result"], "Warning");
        let mut db = vec![
            "name",
            "phase",
            "full_load_queued_tables",
            "full_load_loading_tables",
            "full_load_completed_tables",
            "full_load_errored_tables",
            "rows_copied",
            "bytes_copied",
            "cdc_insert_counter",
            "cdc_update_counter",
            "cdc_delete_counter",
            "cdc_truncate_counter",
            "applied_changes",
            "incoming_changes",
            "latency_seconds",
            "lag_bytes",
            // Added by issue 11: what a Failed migration's slot still holds.
            "source_retained_wal_bytes",
            "confirmed_lsn",
            "message",
            "resume",
        ];
        db.sort();
        assert_eq!(keys(&v["databases"][1]), db);
        assert_eq!(v["databases"][1]["phase"], "Streaming");
        assert_eq!(v["databases"][0]["message"], serde_json::Value::Null);
        // A typed LSN keeps the file's text form.
        assert_eq!(v["databases"][1]["confirmed_lsn"], "0/16B3748");
    }

    #[test]
    fn older_files_with_missing_fields_load() {
        let text = r#"{"name":"a","status":"Failed","substatus":"MigratingData",
                       "databases":[{"name":"d","phase":"CopyingData","rows_copied":5}]}"#;
        let s: MigrationState = serde_json::from_str(text).unwrap();
        assert_eq!(s.status(), Status::Failed);
        assert_eq!(s.mode, Mode::Online);
        let d = s.database("d").unwrap();
        assert_eq!(
            (d.phase, d.rows_copied, d.lag_bytes),
            (Phase::CopyingData, 5, 0)
        );
        assert_eq!(d.resume, ResumeState::default());
    }

    #[test]
    fn set_status_stamps_times() {
        let mut s = sample();
        assert!(s.started_on.is_some() && s.ended_on.is_none());
        let started = s.started_on.clone();
        s.transition(Stage::Succeeded).unwrap();
        assert_eq!(s.started_on, started);
        let ended = s.ended_on.clone().unwrap();
        assert!(humantime::parse_rfc3339(&ended).is_ok(), "{ended}");
        let e = s.transition(Stage::MigratingData).unwrap_err();
        assert_eq!(e.from, Stage::Succeeded);
        assert_eq!(
            s.status(),
            Status::Succeeded,
            "a refused move changes nothing"
        );
        let mut f = sample();
        f.transition(Stage::MigratingData.failed()).unwrap();
        assert!(f.ended_on.is_some());
        f.transition(Stage::Prerequisites).unwrap();
        assert!(f.ended_on.is_none());
    }

    #[test]
    fn total_tables_sums_states() {
        let mut d = DatabaseState::new("d");
        d.full_load_queued_tables = 1;
        d.full_load_loading_tables = 2;
        d.full_load_completed_tables = 3;
        d.full_load_errored_tables = 4;
        assert_eq!(d.full_load_total_tables(), 10);
    }
}
