//! What `show` and `list` print for humans, and the scan of the state
//! directory behind `list`. `--json` output is the [`MigrationState`]
//! serialized as is (see [`render_json`]).

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use std::str::FromStr;

use super::human;
use super::state::MigrationState;
use super::status::UnknownValue;
use super::status::{CheckResult, Status};
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
                if filter == ListFilter::All || state.status().is_active() {
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

/// What `list` and `show` say when `state_dir` does not exist: where they
/// looked and how to point them at a migration's own state directory.
pub fn absent_state_dir(state_dir: &Path) -> String {
    format!(
        "state directory {} does not exist: no migration has run with it. \
         Pass --state-dir DIR or --config FILE (the migration's config, for its state_dir)",
        state_dir.display()
    )
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
            s.status().to_string(),
            s.substatus().to_string(),
            databases.join(","),
            or_dash(s.started_on.as_deref()),
            or_dash(s.ended_on.as_deref()),
        ]);
    }
    table.render()
}

/// Width of the lines `show` prints (but for the lines DESIGN.md spells
/// out): fits a terminal beside others and stays readable under `watch`.
const WIDTH: usize = 100;

/// Width of the labels of `show`'s header (`substatus: `).
const LABEL: usize = 11;

/// `show`: the migration's header, a row per database in readable units,
/// each database's last message, and the warnings: slots left behind and
/// the validation checks that did not succeed, one line each. The full
/// validation detail is [`render_validation`]'s.
pub fn render_show(state: &MigrationState) -> String {
    let header = [
        ("name", state.name.clone()),
        ("mode", state.mode.to_string()),
        ("status", state.status().to_string()),
        ("substatus", state.substatus().to_string()),
        ("started", or_dash(state.started_on.as_deref())),
        ("ended", or_dash(state.ended_on.as_deref())),
        ("message", or_dash(state.message.as_deref())),
    ];
    let verify = state.verify.as_ref().map(|v| {
        (
            "verify",
            format!(
                "run {} {}, {}/{} tables, stream held {} ms",
                v.id, v.state, v.tables_done, v.tables_total, v.held_ms
            ),
        )
    });
    let mut out = String::new();
    for (label, value) in header.into_iter().chain(verify) {
        for (i, line) in human::wrap(&value, WIDTH - LABEL).iter().enumerate() {
            let label = if i == 0 {
                format!("{label}:")
            } else {
                String::new()
            };
            out.push_str(&format!("{label:<LABEL$}{line}\n"));
        }
    }
    out.push('\n');
    out.push_str(&databases_table(state));
    let messages: Vec<String> = state
        .databases
        .iter()
        .filter_map(|d| {
            let message = d.message.as_deref().filter(|m| !m.trim().is_empty())?;
            Some(indented(&format!("{}: {message}", d.name), 2))
        })
        .collect();
    if !messages.is_empty() {
        out.push('\n');
        out.push_str(&messages.concat());
    }
    for warning in leftover_slots(state) {
        out.push_str(&format!("\nwarning: {warning}\n"));
    }
    out.push_str(&validation_summary(state));
    out
}

/// The per-database table of `show`.
fn databases_table(state: &MigrationState) -> String {
    let mut dbs = Table::new(&[
        ("DATABASE", Align::Left),
        ("PHASE", Align::Left),
        ("TABLES", Align::Right),
        ("ROWS", Align::Right),
        ("COPIED", Align::Right),
        ("LAG", Align::Right),
        ("LAG TIME", Align::Right),
        ("APPLIED", Align::Right),
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
            human::count(d.rows_copied),
            human::bytes(d.bytes_copied),
            human::bytes(d.lag_bytes),
            human::duration(d.latency_seconds),
            human::count(d.applied_changes),
        ]);
    }
    dbs.render()
}

/// `text` wrapped to [`WIDTH`], its continuation lines indented by `indent`.
fn indented(text: &str, indent: usize) -> String {
    let mut out = String::new();
    for (i, line) in human::wrap(text, WIDTH - indent).iter().enumerate() {
        let pad = if i == 0 { 0 } else { indent };
        out.push_str(&format!("{:pad$}{line}\n", ""));
    }
    out
}

/// One line counting the checks, and a line (cut to [`WIDTH`]) per check
/// that did not succeed.
fn validation_summary(state: &MigrationState) -> String {
    if state.validation.is_empty() {
        return String::new();
    }
    let of = |result: CheckResult| {
        state
            .validation
            .iter()
            .filter(|c| c.result == result)
            .count()
    };
    let (warnings, failed) = (of(CheckResult::Warning), of(CheckResult::Failed));
    let checks = state.validation.len();
    let mut out = format!(
        "\nvalidation: {checks} {}, {} succeeded, {warnings} {}, {failed} failed \
         (show --validation for details)\n",
        plural(checks, "check", "checks"),
        of(CheckResult::Succeeded),
        plural(warnings, "warning", "warnings"),
    );
    for c in &state.validation {
        let label = match c.result {
            CheckResult::Succeeded => continue,
            CheckResult::Warning => "warning",
            CheckResult::Failed => "failed",
        };
        let line = format!("{label}: {}: {}", c.id, c.message);
        let line: String = human::wrap(&line, usize::MAX).concat();
        out.push_str(&human::truncate(&line, WIDTH));
        out.push('\n');
    }
    out
}

/// `show --validation`: every check of the last validation, with what was
/// found and how to fix it, wrapped to [`WIDTH`].
pub fn render_validation(state: &MigrationState) -> String {
    if state.validation.is_empty() {
        return "\nvalidation: no checks recorded\n".to_owned();
    }
    let mut out = String::from("\nvalidation checks:\n");
    for c in &state.validation {
        let text = format!("{}: {}", c.id, c.message);
        out.push_str(&check_block(&c.result.to_string(), &text));
        if !c.fix.trim().is_empty() {
            out.push_str(&check_block("", &format!("fix: {}", c.fix)));
        }
    }
    out
}

/// `text` wrapped beside a [`LABEL`]-wide `label`.
fn check_block(label: &str, text: &str) -> String {
    let mut out = String::new();
    for (i, line) in human::wrap(text, WIDTH - LABEL).iter().enumerate() {
        let label = if i == 0 { label } else { "" };
        out.push_str(&format!("{label:<LABEL$}{line}\n"));
    }
    out
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// One warning per replication slot a Failed migration still holds: the
/// source keeps every WAL segment from the slot's position on, so its disk
/// fills until the slot is dropped, which only `cancel` does.
pub fn leftover_slots(state: &MigrationState) -> Vec<String> {
    if state.status() != Status::Failed {
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
        s.force_pair(status, substatus);
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
        s.force_pair(Status::InProgress, Substatus::MigratingData);
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
        s.validation.push(ValidationCheck {
            id: "privileges".into(),
            result: CheckResult::Succeeded,
            message: "user can read every table".into(),
            fix: String::new(),
        });
        s.validation.push(ValidationCheck {
            id: "replica_identity".into(),
            result: CheckResult::Warning,
            message: format!("{} tables without a key", "x".repeat(200)),
            fix: "ALTER TABLE t REPLICA IDENTITY FULL".into(),
        });
        let expected = "\
name:      orders-2026
mode:      online
status:    WaitingForUserAction
substatus: WaitingForCutoverTrigger
started:   2026-05-01T12:00:00Z
ended:     -
message:   -

DATABASE  PHASE      TABLES       ROWS  COPIED     LAG  LAG TIME  APPLIED
ticketdb  Streaming   12/12  1,000,000  3.5 MB  4.0 kB     0.2 s       77
timedb    Failed        1/3          0     0 B     0 B     0.0 s        0

timedb: COPY public.t failed: no space left

validation: 3 checks, 1 succeeded, 1 warning, 1 failed (show --validation for details)
failed: wal_level: wal_level is replica
";
        let out = render_show(&s);
        assert!(out.starts_with(expected), "{out}");
        let rest = &out[expected.len()..];
        assert!(rest.starts_with("warning: replica_identity: xxx"), "{rest}");
        assert!(rest.ends_with("…\n") && rest.lines().count() == 1, "{rest}");
        assert!(!out.contains("CHECK") && !out.contains("fix:"), "{out}");
        assert!(
            !out.contains("privileges"),
            "succeeded checks are not repeated: {out}"
        );
        for line in out.lines() {
            assert!(line.chars().count() <= WIDTH, "{line}");
        }

        let detail = render_validation(&s);
        assert!(
            detail.starts_with(
                "\nvalidation checks:\n\
                 Failed     wal_level: wal_level is replica\n           \
                 fix: set wal_level = logical\n\
                 Succeeded  privileges: user can read every table\n\
                 Warning    replica_identity:"
            ),
            "{detail}"
        );
        assert!(
            detail.contains("x tables without a key\n           fix: ALTER TABLE t"),
            "{detail}"
        );
        for line in detail.lines() {
            assert!(line.chars().count() <= WIDTH, "{line}");
        }
    }

    #[test]
    fn long_messages_wrap_under_their_label() {
        let mut s = state("m", Status::Failed, Substatus::MigratingData);
        s.message = Some(format!("{} end", "word ".repeat(40)));
        let out = render_show(&s);
        let lines: Vec<&str> = out.lines().filter(|l| l.contains("word")).collect();
        assert!(lines.len() >= 2, "{out}");
        assert!(lines[0].starts_with("message:   word"), "{out}");
        assert!(lines[1].starts_with("           word"), "{out}");
        assert!(out.lines().all(|l| l.chars().count() <= WIDTH), "{out}");
    }

    #[test]
    fn absent_state_dir_names_it_and_the_ways_out() {
        let text = absent_state_dir(Path::new("/var/lib/pgmigrate"));
        assert!(text.contains("/var/lib/pgmigrate does not exist"), "{text}");
        assert!(
            text.contains("--state-dir") && text.contains("--config"),
            "{text}"
        );
    }

    #[test]
    fn show_without_checks_has_no_check_table() {
        let s = state("m", Status::InProgress, Substatus::MigratingData);
        let text = render_show(&s);
        assert!(!text.contains("validation"), "{text}");
        assert!(text.contains("\nticketdb  Validating"), "{text}");
        assert_eq!(render_validation(&s), "\nvalidation: no checks recorded\n");
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
