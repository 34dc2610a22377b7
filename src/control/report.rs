//! What `show` and `list` print for humans, and the scan of the state
//! directory behind `list`. `--json` output is the [`MigrationState`]
//! serialized as is (see [`render_json`]).

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use std::str::FromStr;

use super::state::MigrationState;
use super::status::Status;
use super::status::UnknownValue;
use super::store::{self, StateError, STATE_FILE};
use super::table::{Align, Table};

/// Which migrations `list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFilter {
    /// Those whose status is not terminal (`active`).
    Active,
    /// All of them (`all`).
    All,
}

impl ListFilter {
    /// The `--filter` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ListFilter::Active => "active",
            ListFilter::All => "all",
        }
    }
}

impl fmt::Display for ListFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ListFilter {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(ListFilter::Active),
            "all" => Ok(ListFilter::All),
            _ => Err(UnknownValue {
                kind: "filter",
                value: s.to_owned(),
            }),
        }
    }
}

/// The states of the migrations under `state_dir` (each
/// `<state_dir>/*/state.json`) that pass `filter`, sorted by name. A missing
/// `state_dir` has none; a directory without state.json is skipped silently
/// (the migration never got far enough to write one); an unreadable or
/// invalid state.json is skipped with a warning on the log.
pub fn list_migrations(
    state_dir: &Path,
    filter: ListFilter,
) -> Result<Vec<MigrationState>, StateError> {
    let entries = match fs::read_dir(state_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(StateError::Read {
                path: state_dir.to_owned(),
                error,
            })
        }
    };
    let mut states = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| StateError::Read {
            path: state_dir.to_owned(),
            error,
        })?;
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let path = entry.path().join(STATE_FILE);
        match store::load(&path) {
            Ok(Some(state)) => {
                if filter == ListFilter::All || state.status.is_active() {
                    states.push(state);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "skipping migration"),
        }
    }
    states.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(states)
}

/// `list`: one row per migration.
pub fn render_list(states: &[MigrationState]) -> String {
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("MODE", Align::Left),
        ("STATUS", Align::Left),
        ("SUBSTATUS", Align::Left),
        ("DATABASES", Align::Left),
        ("STARTED", Align::Left),
        ("ENDED", Align::Left),
    ]);
    for s in states {
        let databases: Vec<&str> = s.databases.iter().map(|d| d.name.as_str()).collect();
        table.row(vec![
            s.name.clone(),
            s.mode.to_string(),
            s.status.to_string(),
            s.substatus.to_string(),
            databases.join(","),
            or_dash(s.started_on.as_deref()),
            or_dash(s.ended_on.as_deref()),
        ]);
    }
    table.render()
}

/// `show`: the migration's header, a row per database, and the validation
/// checks if any ran.
pub fn render_show(state: &MigrationState) -> String {
    let header = [
        ("name", state.name.clone()),
        ("mode", state.mode.to_string()),
        ("status", state.status.to_string()),
        ("substatus", state.substatus.to_string()),
        ("started", or_dash(state.started_on.as_deref())),
        ("ended", or_dash(state.ended_on.as_deref())),
        ("message", or_dash(state.message.as_deref())),
    ];
    let mut out = String::new();
    for (label, value) in header {
        let value: String = value
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        out.push_str(&format!("{:<11}{value}\n", format!("{label}:")));
    }

    let mut dbs = Table::new(&[
        ("DATABASE", Align::Left),
        ("PHASE", Align::Left),
        ("TABLES", Align::Right),
        ("ROWS", Align::Right),
        ("MB", Align::Right),
        ("LAG BYTES", Align::Right),
        ("LAG SECONDS", Align::Right),
        ("APPLIED", Align::Right),
        ("MESSAGE", Align::Left),
    ]);
    for d in &state.databases {
        dbs.row(vec![
            d.name.clone(),
            d.phase.to_string(),
            format!(
                "{}/{}",
                d.full_load_completed_tables,
                d.full_load_total_tables()
            ),
            d.rows_copied.to_string(),
            format!("{:.1}", d.bytes_copied as f64 / (1024.0 * 1024.0)),
            d.lag_bytes.to_string(),
            format!("{:.1}", d.latency_seconds),
            d.applied_changes.to_string(),
            or_dash(d.message.as_deref()),
        ]);
    }
    out.push('\n');
    out.push_str(&dbs.render());
    for warning in leftover_slots(state) {
        out.push_str(&format!("\nwarning: {warning}\n"));
    }

    if !state.validation.is_empty() {
        let mut checks = Table::new(&[
            ("CHECK", Align::Left),
            ("RESULT", Align::Left),
            ("MESSAGE", Align::Left),
            ("FIX", Align::Left),
        ]);
        for c in &state.validation {
            checks.row(vec![
                c.id.clone(),
                c.result.to_string(),
                c.message.clone(),
                if c.fix.is_empty() {
                    "-".to_owned()
                } else {
                    c.fix.clone()
                },
            ]);
        }
        out.push('\n');
        out.push_str(&checks.render());
    }
    out
}

/// One warning per replication slot a Failed migration still holds: the
/// source keeps every WAL segment from the slot's position on, so its disk
/// fills until the slot is dropped, which only `cancel` does.
pub fn leftover_slots(state: &MigrationState) -> Vec<String> {
    if state.status != Status::Failed {
        return Vec::new();
    }
    state
        .databases
        .iter()
        .filter_map(|d| {
            let slot = d.resume.slot_name.as_deref()?;
            let wal = match d.source_retained_wal_bytes {
                0 => "retains source WAL (amount not measured yet)".to_owned(),
                bytes => format!(
                    "retained {:.1} MB of source WAL when last measured, and more since",
                    bytes as f64 / (1024.0 * 1024.0)
                ),
            };
            Some(format!(
                "replication slot {slot} (database {}) still exists and {wal}; \
                 run `pgmigrate cancel {}` to drop it, or `pgmigrate run` to resume",
                d.name, state.name
            ))
        })
        .collect()
}

/// `show --json` / `list --json`: one pretty-printed JSON document with a
/// trailing newline.
pub fn render_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text)
}

fn or_dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MigrationName, Mode};
    use crate::control::state::ValidationCheck;
    use crate::control::status::{CheckResult, Phase, Status, Substatus};
    use crate::control::store::StateStore;

    fn state(name: &str, status: Status, substatus: Substatus) -> MigrationState {
        let name = MigrationName::new(name).unwrap();
        let mut s = MigrationState::new(&name, Mode::Online, &["ticketdb".into(), "timedb".into()]);
        s.status = status;
        s.substatus = substatus;
        s.started_on = Some("2026-05-01T12:00:00Z".into());
        s
    }

    #[test]
    fn failed_migration_with_a_slot_says_so() {
        let mut s = state("m1", Status::Failed, Substatus::MigratingData);
        let d = s.database_mut("ticketdb").unwrap();
        d.resume.slot_name = Some("pgmigrate_m1_ticketdb".into());
        d.source_retained_wal_bytes = 300 * 1024 * 1024;
        s.database_mut("timedb").unwrap().resume.slot_name = Some("pgmigrate_m1_timedb".into());
        let out = render_show(&s);
        assert!(
            out.contains(
                "warning: replication slot pgmigrate_m1_ticketdb (database ticketdb) still exists \
                 and retained 300.0 MB of source WAL when last measured, and more since; \
                 run `pgmigrate cancel m1` to drop it"
            ),
            "{out}"
        );
        assert!(out.contains("pgmigrate_m1_timedb (database timedb) still exists and retains source WAL (amount not measured yet)"), "{out}");
        s.status = Status::InProgress;
        assert!(leftover_slots(&s).is_empty());
        assert!(!render_show(&s).contains("warning:"));
    }

    #[test]
    fn show_renders_header_databases_and_checks() {
        let mut s = state(
            "orders-2026",
            Status::WaitingForUserAction,
            Substatus::WaitingForCutoverTrigger,
        );
        let d = s.database_mut("ticketdb").unwrap();
        d.phase = Phase::Streaming;
        d.full_load_completed_tables = 12;
        d.rows_copied = 1_000_000;
        d.bytes_copied = 3 * 1024 * 1024 + 512 * 1024;
        d.lag_bytes = 4096;
        d.latency_seconds = 0.25;
        d.applied_changes = 77;
        let d = s.database_mut("timedb").unwrap();
        d.phase = Phase::Failed;
        d.full_load_completed_tables = 1;
        d.full_load_errored_tables = 1;
        d.full_load_queued_tables = 1;
        d.message = Some("COPY public.t failed:\nno space left".into());
        s.validation.push(ValidationCheck {
            id: "wal_level".into(),
            result: CheckResult::Failed,
            message: "wal_level is replica".into(),
            fix: "set wal_level = logical".into(),
        });
        let expected = "\
name:      orders-2026
mode:      online
status:    WaitingForUserAction
substatus: WaitingForCutoverTrigger
started:   2026-05-01T12:00:00Z
ended:     -
message:   -

DATABASE  PHASE      TABLES     ROWS   MB  LAG BYTES  LAG SECONDS  APPLIED  MESSAGE
ticketdb  Streaming   12/12  1000000  3.5       4096          0.2       77  -
timedb    Failed        1/3        0  0.0          0          0.0        0  COPY public.t failed: no space left

CHECK      RESULT  MESSAGE               FIX
wal_level  Failed  wal_level is replica  set wal_level = logical
";
        assert_eq!(render_show(&s), expected);
    }

    #[test]
    fn show_without_checks_has_no_check_table() {
        let s = state("m", Status::InProgress, Substatus::MigratingData);
        let text = render_show(&s);
        assert!(!text.contains("CHECK"), "{text}");
        assert!(text.contains("\nticketdb  Validating"), "{text}");
    }

    #[test]
    fn list_scans_filters_and_renders() {
        let root = tempfile::tempdir().unwrap();
        assert!(
            list_migrations(&root.path().join("absent"), ListFilter::All)
                .unwrap()
                .is_empty()
        );
        for s in [
            state("b-running", Status::InProgress, Substatus::MigratingData),
            state("a-done", Status::Succeeded, Substatus::Completed),
        ] {
            let store =
                StateStore::open(root.path(), &MigrationName::new(&s.name).unwrap()).unwrap();
            store.lock().unwrap();
            store.update(|st| *st = s).unwrap();
        }
        // Noise that must be skipped: a broken file, a dir without state, a plain file.
        fs::create_dir(root.path().join("broken")).unwrap();
        fs::write(root.path().join("broken/state.json"), "not json").unwrap();
        fs::create_dir(root.path().join("empty")).unwrap();
        fs::write(root.path().join("stray.txt"), "x").unwrap();

        let all = list_migrations(root.path(), ListFilter::All).unwrap();
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a-done", "b-running"]);
        let active = list_migrations(root.path(), ListFilter::Active).unwrap();
        let names: Vec<&str> = active.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b-running"]);

        assert_eq!(
            render_list(&all),
            "\
NAME       MODE    STATUS      SUBSTATUS      DATABASES        STARTED               ENDED
a-done     online  Succeeded   Completed      ticketdb,timedb  2026-05-01T12:00:00Z  -
b-running  online  InProgress  MigratingData  ticketdb,timedb  2026-05-01T12:00:00Z  -
"
        );
    }

    #[test]
    fn filter_spellings() {
        assert_eq!("active".parse::<ListFilter>(), Ok(ListFilter::Active));
        assert_eq!("all".parse::<ListFilter>(), Ok(ListFilter::All));
        assert!("some".parse::<ListFilter>().is_err());
        assert_eq!(ListFilter::Active.to_string(), "active");
    }

    #[test]
    fn json_is_the_state_document() {
        let s = state("m", Status::InProgress, Substatus::MigratingData);
        let text = render_json(&s).unwrap();
        assert!(text.ends_with("}\n"));
        let back: MigrationState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }
}
