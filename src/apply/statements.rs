//! The SQL an apply worker runs for each kind of change, built once per
//! table, column shape and schema version, then prepared and reused.

use crate::conn::quote_ident;
use crate::pgtypes::NO_EQUALITY;

use super::relation::RelationInfo;

/// Which columns a statement uses, as a bit set over the relation's columns.
/// Unchanged-TOAST values are left out of an UPDATE's SET list; NULLs and
/// unchanged values are left out of a FULL identity match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnMask(Vec<u64>);

impl ColumnMask {
    /// A mask from per-column flags.
    pub fn from_flags(flags: impl Iterator<Item = bool>) -> ColumnMask {
        let mut words = Vec::new();
        for (i, on) in flags.enumerate() {
            if i % 64 == 0 {
                words.push(0u64);
            }
            if on {
                if let Some(w) = words.last_mut() {
                    *w |= 1 << (i % 64);
                }
            }
        }
        ColumnMask(words)
    }

    /// Whether column `i` is in the mask.
    pub fn has(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// INSERT of every column. `OVERRIDING SYSTEM VALUE` keeps the source's
/// values for identity columns (a no-op for tables without them).
pub fn insert(rel: &RelationInfo) -> String {
    insert_rows(rel, 1)
}

/// INSERT of `rows` rows at once, parameters row after row.
pub fn insert_rows(rel: &RelationInfo, rows: usize) -> String {
    let cols: Vec<String> = rel.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let width = rel.columns.len();
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let p: Vec<String> = (1..=width).map(|i| format!("${}", r * width + i)).collect();
            format!("({})", p.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE VALUES {}",
        rel.qualified,
        cols.join(", "),
        values.join(", ")
    )
}

/// The table an UPDATE or DELETE names: `ONLY` for a plain table, so rows
/// of inheritance children (replicated as their own tables) are never
/// touched through the parent; a partitioned table is named as is, its
/// rows live in the partitions.
fn target(rel: &RelationInfo, only: bool) -> String {
    if only {
        format!("ONLY {}", rel.qualified)
    } else {
        rel.qualified.clone()
    }
}

/// The WHERE clause finding the old row, with parameters from `$first`.
/// Key identity: key columns by equality. FULL identity: every column in
/// `match_cols` (NULL-safe), restricted to one physical row, since a table
/// without a key may hold duplicates and only one row changed on the source.
/// `text_match[i]`: column `i` has no equality and is compared by text.
fn where_clause(
    rel: &RelationInfo,
    match_cols: &ColumnMask,
    first: usize,
    only: bool,
    text_match: &[bool],
) -> (String, usize) {
    let mut n = first;
    let mut conds = Vec::new();
    for (i, c) in rel.columns.iter().enumerate() {
        let used = if rel.full_identity() {
            match_cols.has(i)
        } else {
            c.is_key
        };
        if !used {
            continue;
        }
        let col = quote_ident(&c.name);
        conds.push(if !rel.full_identity() {
            format!("{col} = ${n}")
        } else if NO_EQUALITY.contains(&c.type_oid) || text_match.get(i).copied().unwrap_or(false) {
            format!("{col}::text IS NOT DISTINCT FROM ${n}::text")
        } else {
            format!("{col} IS NOT DISTINCT FROM ${n}")
        });
        n += 1;
    }
    let cond = if conds.is_empty() {
        "true".to_string()
    } else {
        conds.join(" AND ")
    };
    let clause = if rel.full_identity() {
        format!(
            "(tableoid, ctid) = (SELECT tableoid, ctid FROM {} WHERE {cond} LIMIT 1)",
            target(rel, only)
        )
    } else {
        cond
    };
    (clause, n)
}

/// Which columns an UPDATE or DELETE uses, and how it finds the old row.
#[derive(Debug, Clone, Copy)]
pub struct RowMatch<'a> {
    /// The columns that identify the old row (see [`where_clause`]).
    pub match_cols: &'a ColumnMask,
    /// Per column: compared by text form under FULL identity.
    pub text_match: &'a [bool],
    /// Name the table with ONLY.
    pub only: bool,
}

/// UPDATE setting the columns in `set_cols`, finding the row by identity.
pub fn update(
    rel: &RelationInfo,
    set_cols: &ColumnMask,
    skip_always_identity: &[bool],
    m: RowMatch<'_>,
) -> String {
    let only = m.only;
    let mut n = 1;
    let mut sets = Vec::new();
    for (i, c) in rel.columns.iter().enumerate() {
        if set_cols.has(i) && !skip_always_identity.get(i).copied().unwrap_or(false) {
            sets.push(format!("{} = ${n}", quote_ident(&c.name)));
            n += 1;
        }
    }
    if sets.is_empty() {
        // Nothing to set (every value unchanged): still find the row so a
        // missing one is noticed the same way.
        if let Some(c) = rel.columns.first() {
            let col = quote_ident(&c.name);
            sets.push(format!("{col} = {col}"));
        }
    }
    let (clause, _) = where_clause(rel, m.match_cols, n, only, m.text_match);
    format!(
        "UPDATE {} SET {} WHERE {clause}",
        target(rel, only),
        sets.join(", ")
    )
}

/// DELETE finding the row by identity.
pub fn delete(rel: &RelationInfo, m: RowMatch<'_>) -> String {
    let (clause, _) = where_clause(rel, m.match_cols, 1, m.only, m.text_match);
    format!("DELETE FROM {} WHERE {clause}", target(rel, m.only))
}

/// The set-based UPDATE of a window's rows: one array parameter per key
/// column (`$1…`), then one per column in `set_cols` (in column order),
/// joined to the table by key. Keys are distinct (the window folded them),
/// so each row is updated at most once.
pub fn update_set(rel: &RelationInfo, set_cols: &[usize], only: bool) -> String {
    let keys: Vec<usize> = key_columns(rel);
    let mut aliases = Vec::new();
    let mut conds = Vec::new();
    for (n, &i) in keys.iter().enumerate() {
        aliases.push(format!("c{n}"));
        conds.push(format!(
            "pgm_t.{} = pgm_v.c{n}",
            quote_ident(&rel.columns[i].name)
        ));
    }
    let mut sets = Vec::new();
    for (n, &i) in set_cols.iter().enumerate() {
        let a = keys.len() + n;
        aliases.push(format!("c{a}"));
        sets.push(format!(
            "{} = pgm_v.c{a}",
            quote_ident(&rel.columns[i].name)
        ));
    }
    format!(
        "UPDATE {} AS pgm_t SET {} FROM {} AS pgm_v({}) WHERE {}",
        target(rel, only),
        sets.join(", "),
        params(aliases.len()),
        aliases.join(", "),
        conds.join(" AND ")
    )
}

/// The set-based DELETE of a window's rows: one array per key column.
pub fn delete_set(rel: &RelationInfo, only: bool) -> String {
    let keys = key_columns(rel);
    let aliases: Vec<String> = (0..keys.len()).map(|n| format!("c{n}")).collect();
    let conds: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(n, &i)| format!("pgm_t.{} = pgm_v.c{n}", quote_ident(&rel.columns[i].name)))
        .collect();
    format!(
        "DELETE FROM {} AS pgm_t USING {} AS pgm_v({}) WHERE {}",
        target(rel, only),
        params(keys.len()),
        aliases.join(", "),
        conds.join(" AND ")
    )
}

/// The set-based INSERT of many rows: one array per column.
pub fn insert_set(rel: &RelationInfo) -> String {
    let cols: Vec<String> = rel.columns.iter().map(|c| quote_ident(&c.name)).collect();
    format!(
        "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT * FROM {}",
        rel.qualified,
        cols.join(", "),
        params(cols.len())
    )
}

/// Indexes of the replica identity key columns.
pub fn key_columns(rel: &RelationInfo) -> Vec<usize> {
    rel.columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_key)
        .map(|(i, _)| i)
        .collect()
}

/// The arrays side by side as rows. Written out as ROWS FROM: the
/// multi-argument `unnest(a, b)` shorthand exists only unqualified, which
/// a search_path could redirect.
fn params(n: usize) -> String {
    let calls: Vec<String> = (1..=n)
        .map(|i| format!("pg_catalog.unnest(${i})"))
        .collect();
    format!("ROWS FROM ({})", calls.join(", "))
}

/// TRUNCATE of every listed table at once, as the source did it.
/// `only[i]` names `rels[i]` with ONLY: the message lists every table the
/// source truncated, children included, so a plain parent must not take
/// its children along (`TRUNCATE ONLY parent` on the source).
pub fn truncate(
    rels: &[std::sync::Arc<RelationInfo>],
    only: &[bool],
    cascade: bool,
    restart_identity: bool,
) -> String {
    let names: Vec<String> = rels
        .iter()
        .enumerate()
        .map(|(i, r)| target(r, only.get(i).copied().unwrap_or(false)))
        .collect();
    format!(
        "TRUNCATE {}{}{}",
        names.join(", "),
        if restart_identity {
            " RESTART IDENTITY"
        } else {
            ""
        },
        if cascade { " CASCADE" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::relation::sample;
    use crate::protocol::pgoutput::ReplicaIdentity;

    fn rel(identity: ReplicaIdentity) -> RelationInfo {
        sample(
            identity,
            &[("id", 23, true), ("doc", 114, false), ("v", 25, false)],
        )
    }

    #[test]
    fn key_identity_statements() {
        let r = rel(ReplicaIdentity::Default);
        assert_eq!(insert(&r), "INSERT INTO \"s\".\"t\" (\"id\", \"doc\", \"v\") OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3)");
        let all = ColumnMask::from_flags([true, true, true].into_iter());
        let no_doc = ColumnMask::from_flags([true, false, true].into_iter());
        let m = RowMatch {
            match_cols: &all,
            text_match: &[],
            only: false,
        };
        assert_eq!(
            update(&r, &no_doc, &[], m),
            "UPDATE \"s\".\"t\" SET \"id\" = $1, \"v\" = $2 WHERE \"id\" = $3"
        );
        assert_eq!(delete(&r, m), "DELETE FROM \"s\".\"t\" WHERE \"id\" = $1");
    }

    #[test]
    fn multi_row_insert_numbers_parameters_row_by_row() {
        let r = rel(ReplicaIdentity::Default);
        assert_eq!(
            insert_rows(&r, 2),
            "INSERT INTO \"s\".\"t\" (\"id\", \"doc\", \"v\") OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3), ($4, $5, $6)"
        );
    }

    #[test]
    fn full_identity_matches_one_row_null_safely() {
        let r = rel(ReplicaIdentity::Full);
        let cols = ColumnMask::from_flags([true, true, false].into_iter());
        let m = RowMatch {
            match_cols: &cols,
            text_match: &[],
            only: true,
        };
        assert_eq!(
            delete(&r, m),
            "DELETE FROM ONLY \"s\".\"t\" WHERE (tableoid, ctid) = (SELECT tableoid, ctid FROM ONLY \"s\".\"t\" WHERE \"id\" IS NOT DISTINCT FROM $1 AND \"doc\"::text IS NOT DISTINCT FROM $2::text LIMIT 1)"
        );
    }

    #[test]
    fn full_identity_compares_columns_without_equality_by_text() {
        // A composite holding a point: record equality cannot compare it.
        let r = sample(
            ReplicaIdentity::Full,
            &[("id", 23, false), ("c", 16_500, false)],
        );
        let cols = ColumnMask::from_flags([true, true].into_iter());
        let m = RowMatch {
            match_cols: &cols,
            text_match: &[false, true],
            only: true,
        };
        assert_eq!(
            delete(&r, m),
            "DELETE FROM ONLY \"s\".\"t\" WHERE (tableoid, ctid) = (SELECT tableoid, ctid FROM ONLY \"s\".\"t\" WHERE \"id\" IS NOT DISTINCT FROM $1 AND \"c\"::text IS NOT DISTINCT FROM $2::text LIMIT 1)"
        );
    }

    #[test]
    fn set_based_statements_join_arrays_by_key() {
        let r = rel(ReplicaIdentity::Default);
        assert_eq!(
            update_set(&r, &[2], true),
            "UPDATE ONLY \"s\".\"t\" AS pgm_t SET \"v\" = pgm_v.c1 FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS pgm_v(c0, c1) WHERE pgm_t.\"id\" = pgm_v.c0"
        );
        assert_eq!(
            delete_set(&r, false),
            "DELETE FROM \"s\".\"t\" AS pgm_t USING ROWS FROM (pg_catalog.unnest($1)) AS pgm_v(c0) WHERE pgm_t.\"id\" = pgm_v.c0"
        );
        assert_eq!(
            insert_set(&r),
            "INSERT INTO \"s\".\"t\" (\"id\", \"doc\", \"v\") OVERRIDING SYSTEM VALUE SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3))"
        );
    }

    #[test]
    fn truncate_names_plain_tables_only() {
        let a = std::sync::Arc::new(rel(ReplicaIdentity::Default));
        assert_eq!(
            truncate(&[a.clone(), a], &[true, false], true, true),
            "TRUNCATE ONLY \"s\".\"t\", \"s\".\"t\" RESTART IDENTITY CASCADE"
        );
    }

    #[test]
    fn masks() {
        let m = ColumnMask::from_flags((0..130).map(|i| i % 2 == 0));
        assert!(m.has(0) && !m.has(1) && m.has(128) && !m.has(129) && !m.has(500));
    }
}
