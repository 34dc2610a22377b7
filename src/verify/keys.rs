//! Narrowing a table whose checksums differ down to its rows: the table is
//! split into primary key ranges (boundaries by `ntile` over the side with
//! more rows in the range, so every split makes progress on both sides),
//! each range is checksummed on both sides at once, and only differing
//! ranges are split again, until a range is small enough to read row by
//! row and compare by key. The first [`MAX_KEYS`] differing rows are kept.
//!
//! Only tables with a primary key are narrowed; others keep their checksum
//! difference alone. Both sides run in their verify snapshot, so ranges of
//! one table see one consistent state.

use std::collections::BTreeMap;

use crate::conn::{quote_ident, quote_literal, ConnError, Connection};

use super::catalog::{Column, TableName};
use super::diff::TableSum;
use super::report::{DiffKind, Difference};
use super::tables::Limits;
use super::Side;

/// Differing rows reported per table at most.
pub const MAX_KEYS: usize = 10;
/// Sub-ranges a differing range is split into.
const FANOUT: u32 = 16;
/// A range with at most this many rows (on each side) is read row by row.
const ROWS_AT_ONCE: u64 = 5_000;
/// Characters of a row's text quoted in a difference.
const ROW_TEXT: usize = 200;

/// A key range: `lo <= key < hi`, each bound absent when unbounded, values
/// as text (cast back to the key column's type in SQL).
#[derive(Debug, Clone, Default)]
struct Range {
    lo: Option<Vec<String>>,
    hi: Option<Vec<String>>,
}

/// What failed, and on which side.
pub type NarrowError = (Side, ConnError);

/// One table to narrow.
pub struct Narrow<'a> {
    /// The table.
    pub table: &'a TableName,
    /// The compared columns, in checksum order.
    pub columns: &'a [Column],
}

impl Narrow<'_> {
    /// The differing rows of the table, by key, or none when it has no
    /// primary key among the compared columns.
    pub async fn run(
        &self,
        source: &mut Connection,
        target: &mut Connection,
        sums: (&TableSum, &TableSum),
        limits: &Limits,
    ) -> Result<Vec<Difference>, NarrowError> {
        let key = self
            .key_columns(source)
            .await
            .map_err(|e| (Side::Source, e))?;
        if key.is_empty() {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        // Depth first, lowest keys first: the stack holds ranges known to differ.
        let mut stack = vec![(Range::default(), sums.0.rows, sums.1.rows)];
        while let Some((range, s_rows, t_rows)) = stack.pop() {
            if found.len() >= MAX_KEYS {
                break;
            }
            if s_rows.max(t_rows) <= ROWS_AT_ONCE {
                let (s, t) = tokio::join!(
                    self.rows(source, &key, &range),
                    self.rows(target, &key, &range)
                );
                let s = s.map_err(|e| (Side::Source, e))?;
                let t = t.map_err(|e| (Side::Target, e))?;
                limits.pause(s_rows.max(t_rows)).await;
                found.extend(self.row_differences(&key, s, t));
                continue;
            }
            let on = if s_rows >= t_rows {
                (&mut *source, Side::Source)
            } else {
                (&mut *target, Side::Target)
            };
            let subs = self
                .split(on.0, &key, &range)
                .await
                .map_err(|e| (on.1, e))?;
            limits.pause(s_rows.max(t_rows)).await;
            let mut differing = Vec::new();
            for sub in subs {
                let sql = self.sum_sql(&key, &sub);
                let (s, t) = tokio::join!(
                    super::tables::table_sum(source, &sql),
                    super::tables::table_sum(target, &sql)
                );
                let s = s.map_err(|e| (Side::Source, e))?;
                let t = t.map_err(|e| (Side::Target, e))?;
                limits.pause(s.rows.max(t.rows)).await;
                if s != t {
                    differing.push((sub, s.rows, t.rows));
                }
            }
            stack.extend(differing.into_iter().rev());
        }
        found.truncate(MAX_KEYS);
        Ok(found)
    }

    /// The primary key's columns in key order, if all are compared.
    async fn key_columns(&self, conn: &mut Connection) -> Result<Vec<Column>, ConnError> {
        let sql = format!(
            "SELECT a.attname::text FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
             WHERE i.indrelid = {}::pg_catalog.regclass AND i.indisprimary \
             ORDER BY pg_catalog.array_position(i.indkey::pg_catalog.int2[], a.attnum)",
            quote_literal(&self.table.qualified())
        );
        let rows = conn.simple_query(&sql).await?;
        let mut key = Vec::new();
        for r in &rows {
            let name = r.str(0)?;
            match self.columns.iter().find(|c| c.name == name) {
                Some(c) => key.push(c.clone()),
                None => return Ok(Vec::new()),
            }
        }
        Ok(key)
    }

    fn key_list(key: &[Column]) -> String {
        let cols: Vec<String> = key
            .iter()
            .map(|c| format!("t.{}", quote_ident(&c.name)))
            .collect();
        cols.join(", ")
    }

    fn bound(key: &[Column], values: &[String]) -> String {
        let vals: Vec<String> = key
            .iter()
            .zip(values)
            .map(|(c, v)| format!("{}::{}", quote_literal(v), c.type_name))
            .collect();
        format!("ROW({})", vals.join(", "))
    }

    fn where_sql(key: &[Column], range: &Range) -> String {
        let k = format!("ROW({})", Self::key_list(key));
        let mut parts = Vec::new();
        if let Some(lo) = &range.lo {
            parts.push(format!("{k} >= {}", Self::bound(key, lo)));
        }
        if let Some(hi) = &range.hi {
            parts.push(format!("{k} < {}", Self::bound(key, hi)));
        }
        if parts.is_empty() {
            "true".into()
        } else {
            parts.join(" AND ")
        }
    }

    fn row_text(&self) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("t.{}", quote_ident(&c.name)))
            .collect();
        format!("ROW({})::text", cols.join(", "))
    }

    fn sum_sql(&self, key: &[Column], range: &Range) -> String {
        format!(
            "SELECT pg_catalog.count(*), coalesce(pg_catalog.sum( \
             pg_catalog.hashtextextended({}, 0)::numeric), 0) FROM ONLY {} AS t WHERE {}",
            self.row_text(),
            self.table.qualified(),
            Self::where_sql(key, range)
        )
    }

    /// `range` cut at the lowest key of each of [`FANOUT`] equal buckets.
    async fn split(
        &self,
        conn: &mut Connection,
        key: &[Column],
        range: &Range,
    ) -> Result<Vec<Range>, ConnError> {
        let inner: Vec<String> = key
            .iter()
            .enumerate()
            .map(|(i, c)| format!("t.{} AS c{i}", quote_ident(&c.name)))
            .collect();
        let outer: Vec<String> = (0..key.len()).map(|i| format!("c{i}::text")).collect();
        let order: Vec<String> = (0..key.len()).map(|i| format!("c{i}")).collect();
        let sql = format!(
            "SELECT DISTINCT ON (b) {} FROM (SELECT {}, pg_catalog.ntile({FANOUT}) OVER (ORDER BY {}) AS b \
             FROM ONLY {} AS t WHERE {}) s ORDER BY b, {}",
            outer.join(", "),
            inner.join(", "),
            Self::key_list(key),
            self.table.qualified(),
            Self::where_sql(key, range),
            order.join(", ")
        );
        let rows = conn.simple_query(&sql).await?;
        let mut cuts = Vec::new();
        for r in rows.iter().skip(1) {
            let mut v = Vec::with_capacity(key.len());
            for i in 0..key.len() {
                v.push(r.str(i)?.to_string());
            }
            cuts.push(v);
        }
        let mut subs = Vec::with_capacity(cuts.len() + 1);
        let mut lo = range.lo.clone();
        for cut in cuts {
            subs.push(Range {
                lo: lo.take(),
                hi: Some(cut.clone()),
            });
            lo = Some(cut);
        }
        subs.push(Range {
            lo,
            hi: range.hi.clone(),
        });
        Ok(subs)
    }

    /// The range's rows: key values as text to the row's text.
    async fn rows(
        &self,
        conn: &mut Connection,
        key: &[Column],
        range: &Range,
    ) -> Result<BTreeMap<Vec<String>, String>, ConnError> {
        let keys: Vec<String> = key
            .iter()
            .map(|c| format!("t.{}::text", quote_ident(&c.name)))
            .collect();
        let sql = format!(
            "SELECT {}, {} FROM ONLY {} AS t WHERE {}",
            keys.join(", "),
            self.row_text(),
            self.table.qualified(),
            Self::where_sql(key, range)
        );
        let mut out = BTreeMap::new();
        for r in &conn.simple_query(&sql).await? {
            let mut k = Vec::with_capacity(key.len());
            for i in 0..key.len() {
                k.push(r.str(i)?.to_string());
            }
            out.insert(k, r.str(key.len())?.to_string());
        }
        Ok(out)
    }

    fn row_differences(
        &self,
        key: &[Column],
        source: BTreeMap<Vec<String>, String>,
        mut target: BTreeMap<Vec<String>, String>,
    ) -> Vec<Difference> {
        let mut pairs: Vec<(Vec<String>, Option<String>, Option<String>)> = Vec::new();
        for (k, s) in source {
            match target.remove(&k) {
                Some(t) if t == s => {}
                t => pairs.push((k, Some(s), t)),
            }
        }
        pairs.extend(target.into_iter().map(|(k, t)| (k, None, Some(t))));
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs
            .into_iter()
            .map(|(k, s, t)| self.difference(key, k, s, t))
            .collect()
    }

    fn difference(
        &self,
        key: &[Column],
        values: Vec<String>,
        source: Option<String>,
        target: Option<String>,
    ) -> Difference {
        let names: Vec<&str> = key.iter().map(|c| c.name.as_str()).collect();
        let object = format!(
            "{} ({})=({})",
            self.table,
            names.join(", "),
            values.join(", ")
        );
        let text = |v: Option<String>| match v {
            None => "absent".to_string(),
            Some(s) if s.chars().count() > ROW_TEXT => {
                format!("{}…", s.chars().take(ROW_TEXT).collect::<String>())
            }
            Some(s) => s,
        };
        let map = names
            .iter()
            .map(|n| n.to_string())
            .zip(values)
            .collect::<BTreeMap<_, _>>();
        Difference::new(DiffKind::Row, object, text(source), text(target))
            .with_key(self.table.to_string(), map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, type_name: &str) -> Column {
        Column {
            name: name.into(),
            type_name: type_name.into(),
        }
    }

    #[test]
    fn ranges_are_half_open_on_the_whole_key() {
        let key = [col("a", "integer"), col("b b", "text")];
        let all = Range::default();
        assert_eq!(Narrow::where_sql(&key, &all), "true");
        let r = Range {
            lo: Some(vec!["1".into(), "x'y".into()]),
            hi: Some(vec!["2".into(), "z".into()]),
        };
        assert_eq!(
            Narrow::where_sql(&key, &r),
            "ROW(t.\"a\", t.\"b b\") >= ROW('1'::integer, 'x''y'::text) \
             AND ROW(t.\"a\", t.\"b b\") < ROW('2'::integer, 'z'::text)"
        );
    }

    #[test]
    fn rows_differ_by_key_in_key_order() {
        let table = TableName {
            schema: "public".into(),
            name: "t".into(),
        };
        let columns = [col("id", "integer"), col("v", "text")];
        let n = Narrow {
            table: &table,
            columns: &columns,
        };
        let map = |rows: &[(&str, &str)]| {
            rows.iter()
                .map(|(k, v)| (vec![k.to_string()], v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let s = map(&[("1", "(1,a)"), ("2", "(2,b)"), ("3", "(3,c)")]);
        let t = map(&[("1", "(1,a)"), ("2", "(2,B)"), ("4", "(4,d)")]);
        let d = n.row_differences(&columns[..1], s, t);
        let got: Vec<(&str, &str, &str)> = d
            .iter()
            .map(|d| (d.object.as_str(), d.source.as_str(), d.target.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("public.t (id)=(2)", "(2,b)", "(2,B)"),
                ("public.t (id)=(3)", "(3,c)", "absent"),
                ("public.t (id)=(4)", "absent", "(4,d)"),
            ]
        );
        assert_eq!(d[0].table.as_deref(), Some("public.t"));
        assert_eq!(
            d[0].key
                .as_ref()
                .and_then(|k| k.get("id"))
                .map(String::as_str),
            Some("2")
        );
    }
}
