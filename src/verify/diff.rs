//! Turning what both sides hold into a list of differences, and the SQL of
//! the per-table checksum. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use crate::conn::quote_ident;

use super::catalog::{Catalog, Column, SequenceValue, TableName, OBJECT_KINDS};
use super::more_objects::MORE_KINDS;
use super::report::{DiffKind, Difference, ObjectCount};

/// Row count and content checksum of one table on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSum {
    /// `count(*)`.
    pub rows: u64,
    /// Sum of the row hashes as numeric text (exact, no overflow).
    pub checksum: String,
}

/// The query that counts a table's rows and sums a 64-bit hash of each
/// row's text. A sum is independent of row order, so neither server sorts
/// and both can scan (in parallel workers) as fast as they read. `ONLY`
/// keeps a partition's rows out of its parent's sum; they are summed once,
/// as their own table.
///
/// The row is built from `columns` by name in one agreed order rather than
/// as `t::text`, so a table whose columns lie in a different physical order
/// on the target (a partition attached from a standalone table) still hashes
/// the same text.
pub fn checksum_sql(table: &TableName, columns: &[String]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|c| format!("t.{}", quote_ident(c)))
        .collect();
    format!(
        "SELECT pg_catalog.count(*), coalesce(pg_catalog.sum( \
         pg_catalog.hashtextextended(ROW({})::text, 0)::numeric), 0) FROM ONLY {} AS t",
        cols.join(", "),
        table.qualified()
    )
}

/// Object counts per kind of both sides, and a difference for each kind
/// whose count differs and for each object present on one side only.
pub fn diff_objects(
    source: &Catalog,
    target: &Catalog,
) -> (BTreeMap<String, ObjectCount>, Vec<Difference>) {
    let empty = BTreeSet::new();
    let mut counts = BTreeMap::new();
    let mut diffs = Vec::new();
    for (kind, singular) in OBJECT_KINDS.iter().chain(MORE_KINDS) {
        let s = source.objects.get(*kind).unwrap_or(&empty);
        let t = target.objects.get(*kind).unwrap_or(&empty);
        counts.insert(
            kind.to_string(),
            ObjectCount {
                source: s.len(),
                target: t.len(),
            },
        );
        if s.len() != t.len() {
            diffs.push(Difference::new(
                DiffKind::ObjectCount,
                *kind,
                s.len().to_string(),
                t.len().to_string(),
            ));
        }
        for name in s.difference(t) {
            diffs.push(Difference::new(
                DiffKind::Missing,
                format!("{singular} {name}"),
                "present",
                "absent",
            ));
        }
        for name in t.difference(s) {
            diffs.push(Difference::new(
                DiffKind::Missing,
                format!("{singular} {name}"),
                "absent",
                "present",
            ));
        }
    }
    (counts, diffs)
}

/// The columns to checksum (those on both sides, in the source's order)
/// and a difference when the two column lists are not the same.
pub fn compared_columns(
    table: &TableName,
    source: &[Column],
    target: &[Column],
) -> (Vec<String>, Option<Difference>) {
    let common: Vec<String> = source
        .iter()
        .filter(|c| target.iter().any(|t| t.name == c.name))
        .map(|c| c.name.clone())
        .collect();
    let diff = (source != target).then(|| {
        Difference::new(
            DiffKind::Columns,
            table.to_string(),
            column_list(source),
            column_list(target),
        )
    });
    (common, diff)
}

fn column_list(columns: &[Column]) -> String {
    let parts: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {}", c.name, c.type_name))
        .collect();
    parts.join(", ")
}

/// Differences between a table's sums on both sides.
pub fn diff_sums(table: &TableName, source: &TableSum, target: &TableSum) -> Vec<Difference> {
    let mut diffs = Vec::new();
    if source.rows != target.rows {
        diffs.push(Difference::new(
            DiffKind::RowCount,
            table.to_string(),
            source.rows.to_string(),
            target.rows.to_string(),
        ));
    }
    if source.checksum != target.checksum {
        diffs.push(Difference::new(
            DiffKind::Checksum,
            table.to_string(),
            source.checksum.clone(),
            target.checksum.clone(),
        ));
    }
    diffs
}

/// Sequences present on both sides whose target is behind the source: the
/// target must have handed out at least what the source did, or new rows
/// would collide with copied ones.
pub fn diff_sequences(
    source: &BTreeMap<String, SequenceValue>,
    target: &BTreeMap<String, SequenceValue>,
) -> Vec<Difference> {
    let mut diffs = Vec::new();
    for (name, s) in source {
        let Some(t) = target.get(name) else {
            continue;
        };
        let Some(s_last) = s.last_value else {
            continue;
        };
        let behind = match t.last_value {
            None => true,
            Some(t_last) if s.ascending => t_last < s_last,
            Some(t_last) => t_last > s_last,
        };
        if behind {
            diffs.push(Difference::new(
                DiffKind::SequenceValue,
                format!("sequence {name}"),
                s_last.to_string(),
                t.last_value
                    .map_or_else(|| "not called".to_string(), |v| v.to_string()),
            ));
        }
    }
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TableName {
        TableName {
            schema: "public".into(),
            name: name.into(),
        }
    }

    fn col(name: &str, ty: &str) -> Column {
        Column {
            name: name.into(),
            type_name: ty.into(),
        }
    }

    fn catalog(objects: &[(&str, &[&str])]) -> Catalog {
        let mut c = Catalog::default();
        for (kind, names) in objects {
            c.objects.insert(
                kind.to_string(),
                names.iter().map(|n| n.to_string()).collect(),
            );
        }
        c
    }

    #[test]
    fn checksum_sql_quotes_and_uses_only() {
        let table = TableName {
            schema: "my schema".into(),
            name: "T\"x".into(),
        };
        let sql = checksum_sql(&table, &["a".into(), "B c".into()]);
        assert!(sql.contains("ROW(t.\"a\", t.\"B c\")::text"), "{sql}");
        assert!(
            sql.ends_with("FROM ONLY \"my schema\".\"T\"\"x\" AS t"),
            "{sql}"
        );
        assert!(!sql.contains("ORDER BY"));
        assert!(checksum_sql(&t("e"), &[]).contains("ROW()::text"));
    }

    #[test]
    fn objects_on_one_side_are_listed_with_the_count() {
        let s = catalog(&[
            ("indexes", &["public.a_pkey", "public.a_v_idx"]),
            ("tables", &["public.a"]),
        ]);
        let tg = catalog(&[
            ("indexes", &["public.a_pkey", "public.a_w_idx"]),
            ("tables", &["public.a", "public.b"]),
        ]);
        let (counts, diffs) = diff_objects(&s, &tg);
        assert_eq!(counts.len(), OBJECT_KINDS.len() + MORE_KINDS.len());
        assert_eq!(
            counts["tables"],
            ObjectCount {
                source: 1,
                target: 2
            }
        );
        assert_eq!(counts["views"], ObjectCount::default());
        assert_eq!(
            diffs,
            vec![
                Difference::new(DiffKind::ObjectCount, "tables", "1", "2"),
                Difference::new(DiffKind::Missing, "table public.b", "absent", "present"),
                Difference::new(
                    DiffKind::Missing,
                    "index public.a_v_idx",
                    "present",
                    "absent"
                ),
                Difference::new(
                    DiffKind::Missing,
                    "index public.a_w_idx",
                    "absent",
                    "present"
                ),
            ]
        );
    }

    #[test]
    fn identical_catalogs_have_no_differences() {
        let s = catalog(&[("tables", &["public.a"]), ("extensions", &["plpgsql"])]);
        let (_, diffs) = diff_objects(&s, &s.clone());
        assert!(diffs.is_empty());
    }

    #[test]
    fn columns_compare_by_name_and_type() {
        let s = [col("a", "integer"), col("b", "text"), col("c", "real")];
        let same = compared_columns(&t("x"), &s, &s);
        assert_eq!(same, (vec!["a".into(), "b".into(), "c".into()], None));

        let reordered = [col("b", "text"), col("a", "integer"), col("c", "real")];
        let (cols, diff) = compared_columns(&t("x"), &s, &reordered);
        assert_eq!(cols, vec!["a", "b", "c"]);
        assert!(diff.is_some());

        let fewer = [col("a", "bigint"), col("c", "real")];
        let (cols, diff) = compared_columns(&t("x"), &s, &fewer);
        assert_eq!(cols, vec!["a", "c"]);
        assert_eq!(
            diff,
            Some(Difference::new(
                DiffKind::Columns,
                "public.x",
                "a integer, b text, c real",
                "a bigint, c real"
            ))
        );
    }

    #[test]
    fn sums_report_count_and_checksum_separately() {
        let a = TableSum {
            rows: 3,
            checksum: "-123".into(),
        };
        assert!(diff_sums(&t("x"), &a, &a.clone()).is_empty());
        let changed = TableSum {
            rows: 3,
            checksum: "77".into(),
        };
        assert_eq!(
            diff_sums(&t("x"), &a, &changed),
            vec![Difference::new(
                DiffKind::Checksum,
                "public.x",
                "-123",
                "77"
            )]
        );
        let fewer = TableSum {
            rows: 2,
            checksum: "77".into(),
        };
        let d = diff_sums(&t("x"), &a, &fewer);
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0],
            Difference::new(DiffKind::RowCount, "public.x", "3", "2")
        );
    }

    #[test]
    fn target_sequence_must_not_be_behind() {
        let seq = |ascending, last_value| SequenceValue {
            ascending,
            last_value,
        };
        let mut s = BTreeMap::new();
        let mut tg = BTreeMap::new();
        s.insert("public.up_ok".to_string(), seq(true, Some(10)));
        tg.insert("public.up_ok".to_string(), seq(true, Some(15)));
        s.insert("public.up_behind".to_string(), seq(true, Some(10)));
        tg.insert("public.up_behind".to_string(), seq(true, Some(9)));
        s.insert("public.down_ok".to_string(), seq(false, Some(-10)));
        tg.insert("public.down_ok".to_string(), seq(false, Some(-11)));
        s.insert("public.down_behind".to_string(), seq(false, Some(-10)));
        tg.insert("public.down_behind".to_string(), seq(false, Some(-9)));
        s.insert("public.never".to_string(), seq(true, None));
        tg.insert("public.never".to_string(), seq(true, None));
        s.insert("public.uncalled".to_string(), seq(true, Some(1)));
        tg.insert("public.uncalled".to_string(), seq(true, None));
        s.insert("public.only_source".to_string(), seq(true, Some(5)));
        let d = diff_sequences(&s, &tg);
        assert_eq!(
            d,
            vec![
                Difference::new(
                    DiffKind::SequenceValue,
                    "sequence public.down_behind",
                    "-10",
                    "-9"
                ),
                Difference::new(
                    DiffKind::SequenceValue,
                    "sequence public.uncalled",
                    "1",
                    "not called"
                ),
                Difference::new(
                    DiffKind::SequenceValue,
                    "sequence public.up_behind",
                    "10",
                    "9"
                ),
            ]
        );
    }
}
