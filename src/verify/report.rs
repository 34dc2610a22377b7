//! What `pgmigrate verify` found, as data (serialized for `--json`) and as
//! aligned text for people. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// The whole comparison: one entry per database of the config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyReport {
    /// True when no database has a difference.
    pub identical: bool,
    /// Per database, in config order.
    pub databases: Vec<DatabaseReport>,
}

impl VerifyReport {
    /// Builds the report; `identical` follows from the databases.
    pub fn new(databases: Vec<DatabaseReport>) -> VerifyReport {
        VerifyReport {
            identical: databases.iter().all(|d| d.identical),
            databases,
        }
    }
}

/// One database compared.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatabaseReport {
    /// Database name.
    pub database: String,
    /// True when `differences` is empty.
    pub identical: bool,
    /// Tables present on both sides whose rows were counted and checksummed.
    pub tables_checked: usize,
    /// Rows counted on the source in those tables.
    pub rows_checked: u64,
    /// Schema objects per kind on each side.
    pub objects: BTreeMap<String, ObjectCount>,
    /// Every difference found, schema first, then tables, then sequences.
    pub differences: Vec<Difference>,
    /// While streaming: the source LSN both sides were compared at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
}

impl DatabaseReport {
    /// Builds a database's report; `identical` follows from `differences`.
    pub fn new(
        database: &str,
        tables_checked: usize,
        rows_checked: u64,
        objects: BTreeMap<String, ObjectCount>,
        differences: Vec<Difference>,
    ) -> DatabaseReport {
        DatabaseReport {
            database: database.to_string(),
            identical: differences.is_empty(),
            tables_checked,
            rows_checked,
            objects,
            differences,
            lsn: None,
        }
    }
}

/// How many objects of one kind each side holds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ObjectCount {
    /// On the source.
    pub source: usize,
    /// On the target.
    pub target: usize,
}

/// What kind of difference was found.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// The number of objects of a kind differs (`object` names the kind).
    ObjectCount,
    /// An object exists on one side only (`object` is "kind name").
    Missing,
    /// A table's columns (names or types) differ.
    Columns,
    /// A table's row count differs.
    RowCount,
    /// A table's content checksum differs.
    Checksum,
    /// A sequence on the target is behind the source.
    SequenceValue,
    /// A row (by primary key) differs, or exists on one side only.
    Row,
}

impl DiffKind {
    /// The snake_case name used in JSON and in the text output.
    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::ObjectCount => "object_count",
            DiffKind::Missing => "missing",
            DiffKind::Columns => "columns",
            DiffKind::RowCount => "row_count",
            DiffKind::Checksum => "checksum",
            DiffKind::SequenceValue => "sequence_value",
            DiffKind::Row => "row",
        }
    }
}

/// One difference between source and target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Difference {
    /// What differs.
    pub kind: DiffKind,
    /// The object involved (`public.orders`, `index public.orders_pkey`, `indexes`).
    pub object: String,
    /// The value on the source.
    pub source: String,
    /// The value on the target.
    pub target: String,
    /// For a row: its table, `schema.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// For a row: its primary key, column name to value as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<BTreeMap<String, String>>,
}

impl Difference {
    /// Shorthand constructor.
    pub fn new(
        kind: DiffKind,
        object: impl Into<String>,
        source: impl Into<String>,
        target: impl Into<String>,
    ) -> Difference {
        Difference {
            kind,
            object: object.into(),
            source: source.into(),
            target: target.into(),
            table: None,
            key: None,
        }
    }

    /// This difference, as the row of `table` with primary key `key`.
    pub fn with_key(mut self, table: String, key: BTreeMap<String, String>) -> Difference {
        self.table = Some(table);
        self.key = Some(key);
        self
    }
}

/// The report as one pretty-printed JSON document with a trailing newline.
pub fn render_json(report: &VerifyReport) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string_pretty(report)?;
    s.push('\n');
    Ok(s)
}

/// The report as aligned text: one OK line per identical database, else a
/// header and a table of its differences.
pub fn render_text(report: &VerifyReport) -> String {
    let mut out = String::new();
    for db in &report.databases {
        if let Some(lsn) = &db.lsn {
            let _ = writeln!(
                out,
                "{}: compared at source LSN {lsn}, while streaming",
                db.database
            );
        }
        if db.identical {
            let _ = writeln!(
                out,
                "{}: OK ({} tables, {} rows, {} schema objects identical)",
                db.database,
                db.tables_checked,
                db.rows_checked,
                db.objects.values().map(|c| c.source).sum::<usize>()
            );
            continue;
        }
        let _ = writeln!(
            out,
            "{}: {} difference{} ({} tables checked)",
            db.database,
            db.differences.len(),
            if db.differences.len() == 1 { "" } else { "s" },
            db.tables_checked
        );
        let header = ["KIND", "OBJECT", "SOURCE", "TARGET"];
        let rows: Vec<[&str; 4]> = db
            .differences
            .iter()
            .map(|d| {
                [
                    d.kind.as_str(),
                    d.object.as_str(),
                    d.source.as_str(),
                    d.target.as_str(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for r in std::iter::once(&header).chain(rows.iter()) {
            let mut line = String::from(" ");
            for (i, (cell, w)) in r.iter().zip(widths.iter()).enumerate() {
                line.push(' ');
                if i + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$} ");
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    let _ = writeln!(
        out,
        "{}",
        if report.identical {
            "source and target are identical"
        } else {
            "differences found"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts() -> BTreeMap<String, ObjectCount> {
        let mut m = BTreeMap::new();
        m.insert(
            "tables".to_string(),
            ObjectCount {
                source: 3,
                target: 3,
            },
        );
        m.insert(
            "indexes".to_string(),
            ObjectCount {
                source: 2,
                target: 1,
            },
        );
        m
    }

    fn sample() -> VerifyReport {
        VerifyReport::new(vec![
            DatabaseReport::new("alpha", 3, 1000, counts(), Vec::new()),
            DatabaseReport::new(
                "beta",
                2,
                10,
                counts(),
                vec![
                    Difference::new(DiffKind::ObjectCount, "indexes", "2", "1"),
                    Difference::new(
                        DiffKind::Missing,
                        "index public.t_v_idx",
                        "present",
                        "absent",
                    ),
                    Difference::new(DiffKind::RowCount, "public.t", "10", "9"),
                ],
            ),
        ])
    }

    #[test]
    fn identical_follows_the_databases() {
        let r = sample();
        assert!(!r.identical);
        assert!(r.databases[0].identical);
        assert!(!r.databases[1].identical);
        let ok = VerifyReport::new(vec![DatabaseReport::new(
            "a",
            0,
            0,
            BTreeMap::new(),
            Vec::new(),
        )]);
        assert!(ok.identical);
    }

    #[test]
    fn text_lists_every_difference_aligned() {
        let text = render_text(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "alpha: OK (3 tables, 1000 rows, 5 schema objects identical)"
        );
        assert_eq!(lines[1], "beta: 3 differences (2 tables checked)");
        assert_eq!(
            lines[2],
            "  KIND          OBJECT                SOURCE   TARGET"
        );
        assert_eq!(lines[3], "  object_count  indexes               2        1");
        assert_eq!(
            lines[4],
            "  missing       index public.t_v_idx  present  absent"
        );
        assert_eq!(lines[5], "  row_count     public.t              10       9");
        assert_eq!(lines[6], "differences found");
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn json_is_one_document_with_snake_case_kinds() {
        let json = render_json(&sample()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["identical"], false);
        assert_eq!(v["databases"][0]["database"], "alpha");
        assert_eq!(v["databases"][0]["identical"], true);
        let d = &v["databases"][1]["differences"][2];
        assert_eq!(d["kind"], "row_count");
        assert_eq!(d["object"], "public.t");
        assert_eq!(d["source"], "10");
        assert_eq!(d["target"], "9");
        assert_eq!(v["databases"][1]["objects"]["indexes"]["target"], 1);
    }
}
