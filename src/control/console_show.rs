//! The console's `SHOW` replies built from a [`MigrationState`], so a
//! daemon's [`ConsoleHandler`](super::console::ConsoleHandler) answers them
//! with one call. Column names are DESIGN.md's field names.

use super::console::{ConsoleCommand, ConsoleReply};
use super::state::{DatabaseState, MigrationState};

/// Tag of every `SHOW` reply, as PostgreSQL's own `SHOW`.
const SHOW_TAG: &str = "SHOW";

/// The reply to `command` when it is a `SHOW`; `None` for `CUTOVER` and
/// `CANCEL`, which the daemon must decide on itself.
pub fn show_reply(command: ConsoleCommand, state: &MigrationState) -> Option<ConsoleReply> {
    match command {
        ConsoleCommand::ShowStatus => Some(status_reply(state)),
        ConsoleCommand::ShowDatabases => Some(databases_reply(state)),
        ConsoleCommand::ShowTables => Some(tables_reply(state)),
        ConsoleCommand::Cutover
        | ConsoleCommand::Rollback
        | ConsoleCommand::Finish
        | ConsoleCommand::Cancel { .. }
        | ConsoleCommand::Verify
        | ConsoleCommand::ShowVerify => None,
    }
}

/// `SHOW STATUS`: one row with the migration's top-level fields and, in
/// `state_json`, the whole state as `show --json` prints it.
pub fn status_reply(state: &MigrationState) -> ConsoleReply {
    // Serializing plain data with string keys cannot fail; should it ever,
    // the column is NULL and a client falls back to state.json.
    let json = serde_json::to_string(state).ok();
    ConsoleReply {
        columns: columns(&[
            "name",
            "mode",
            "status",
            "substatus",
            "started_on",
            "ended_on",
            "message",
            "state_json",
        ]),
        rows: vec![vec![
            Some(state.name.clone()),
            Some(state.mode.to_string()),
            Some(state.status().to_string()),
            Some(state.substatus().to_string()),
            state.started_on.clone(),
            state.ended_on.clone(),
            state.message.clone(),
            json,
        ]],
        tag: SHOW_TAG.to_owned(),
    }
}

/// `SHOW DATABASES`: one row per database with its progress fields.
pub fn databases_reply(state: &MigrationState) -> ConsoleReply {
    ConsoleReply {
        columns: columns(&[
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
            "source_retained_wal_bytes",
            "confirmed_lsn",
            "message",
        ]),
        rows: state.databases.iter().map(database_row).collect(),
        tag: SHOW_TAG.to_owned(),
    }
}

fn database_row(d: &DatabaseState) -> Vec<Option<String>> {
    vec![
        Some(d.name.clone()),
        Some(d.phase.to_string()),
        Some(d.full_load_queued_tables.to_string()),
        Some(d.full_load_loading_tables.to_string()),
        Some(d.full_load_completed_tables.to_string()),
        Some(d.full_load_errored_tables.to_string()),
        Some(d.rows_copied.to_string()),
        Some(d.bytes_copied.to_string()),
        Some(d.cdc_insert_counter.to_string()),
        Some(d.cdc_update_counter.to_string()),
        Some(d.cdc_delete_counter.to_string()),
        Some(d.cdc_truncate_counter.to_string()),
        Some(d.applied_changes.to_string()),
        Some(d.incoming_changes.to_string()),
        Some(d.latency_seconds.to_string()),
        Some(d.lag_bytes.to_string()),
        Some(d.source_retained_wal_bytes.to_string()),
        d.confirmed_lsn.map(|l| l.to_string()),
        d.message.clone(),
    ]
}

/// `SHOW TABLES`: per database, how many tables the snapshot copy has in
/// each state. Per-table detail is not tracked, so these are counts.
pub fn tables_reply(state: &MigrationState) -> ConsoleReply {
    ConsoleReply {
        columns: columns(&[
            "database",
            "queued",
            "loading",
            "completed",
            "errored",
            "total",
        ]),
        rows: state
            .databases
            .iter()
            .map(|d| {
                vec![
                    Some(d.name.clone()),
                    Some(d.full_load_queued_tables.to_string()),
                    Some(d.full_load_loading_tables.to_string()),
                    Some(d.full_load_completed_tables.to_string()),
                    Some(d.full_load_errored_tables.to_string()),
                    Some(d.full_load_total_tables().to_string()),
                ]
            })
            .collect(),
        tag: SHOW_TAG.to_owned(),
    }
}

fn columns(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MigrationName, Mode};
    use crate::control::status::{Phase, Status, Substatus};

    fn sample() -> MigrationState {
        let name = MigrationName::new("orders-2026").unwrap();
        let mut s = MigrationState::new(&name, Mode::Online, &["a".into(), "b".into()]);
        s.force_pair(
            Status::WaitingForUserAction,
            Substatus::WaitingForCutoverTrigger,
        );
        let b = s.database_mut("b").unwrap();
        b.phase = Phase::Streaming;
        b.full_load_completed_tables = 3;
        b.full_load_errored_tables = 1;
        b.lag_bytes = 42;
        b.confirmed_lsn = "0/16B3748".parse().ok();
        s
    }

    fn cell<'a>(reply: &'a ConsoleReply, row: usize, column: &str) -> Option<&'a str> {
        let i = reply.columns.iter().position(|c| c == column).unwrap();
        reply.rows[row][i].as_deref()
    }

    #[test]
    fn status_row_embeds_the_whole_state() {
        let s = sample();
        let r = status_reply(&s);
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].len(), r.columns.len());
        assert_eq!(cell(&r, 0, "status"), Some("WaitingForUserAction"));
        assert_eq!(cell(&r, 0, "substatus"), Some("WaitingForCutoverTrigger"));
        assert_eq!(cell(&r, 0, "mode"), Some("online"));
        assert_eq!(cell(&r, 0, "ended_on"), None);
        let back: MigrationState =
            serde_json::from_str(cell(&r, 0, "state_json").unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn databases_have_the_contract_columns() {
        let r = databases_reply(&sample());
        assert_eq!(r.rows.len(), 2);
        assert!(r.rows.iter().all(|row| row.len() == r.columns.len()));
        assert_eq!(cell(&r, 1, "name"), Some("b"));
        assert_eq!(cell(&r, 1, "phase"), Some("Streaming"));
        assert_eq!(cell(&r, 1, "lag_bytes"), Some("42"));
        assert_eq!(cell(&r, 1, "confirmed_lsn"), Some("0/16B3748"));
        assert_eq!(cell(&r, 0, "confirmed_lsn"), None);
        // Every per-database key of show --json except resume bookkeeping.
        let json = serde_json::to_value(&sample().databases[0]).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "resume")
            .collect();
        keys.sort_unstable();
        let mut cols: Vec<&str> = r.columns.iter().map(String::as_str).collect();
        cols.sort_unstable();
        assert_eq!(cols, keys);
    }

    #[test]
    fn tables_count_per_database() {
        let r = tables_reply(&sample());
        assert_eq!(cell(&r, 1, "completed"), Some("3"));
        assert_eq!(cell(&r, 1, "errored"), Some("1"));
        assert_eq!(cell(&r, 1, "total"), Some("4"));
        assert_eq!(cell(&r, 0, "total"), Some("0"));
    }

    #[test]
    fn show_reply_leaves_actions_to_the_daemon() {
        let s = sample();
        assert_eq!(
            show_reply(ConsoleCommand::ShowTables, &s),
            Some(tables_reply(&s))
        );
        assert_eq!(show_reply(ConsoleCommand::Cutover, &s), None);
        assert_eq!(
            show_reply(ConsoleCommand::Cancel { drop_target: true }, &s),
            None
        );
    }
}
