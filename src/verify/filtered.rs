//! `[tables]` in verify: an excluded table is not on the target, with its
//! partitions, indexes, constraints, triggers and owned sequences, so none
//! of them is compared; a schema-only table's schema is compared but not
//! its rows (they are not copied).

use std::collections::HashSet;

use crate::config::{TableChoice, TableFilter};
use crate::conn::Connection;

use super::catalog::{Catalog, CatalogError};

/// Every user table, partition, sequence and index, with the table whose
/// choice decides it (an index's table, a sequence's owner, a partition's
/// root); sequences owned by no table are not listed (always compared).
const CHOICE_SQL: &str = "WITH rel AS ( \
       SELECT n.nspname || '.' || c.relname AS name, c.relkind, \
         CASE WHEN c.relkind IN ('r', 'p') THEN c.oid \
              WHEN c.relkind IN ('i', 'I') THEN (SELECT x.indrelid FROM pg_catalog.pg_index x WHERE x.indexrelid = c.oid) \
              ELSE (SELECT d.refobjid FROM pg_catalog.pg_depend d \
                    WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid \
                      AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1) END AS base \
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
       WHERE c.relkind IN ('r', 'p', 'S', 'i', 'I') \
         AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' \
         AND n.nspname !~ '^pg_temp_') \
     SELECT rel.name, rel.relkind::text, bn.nspname, b.relname \
     FROM rel JOIN pg_catalog.pg_class b0 ON b0.oid = rel.base \
     JOIN pg_catalog.pg_class b ON b.oid = CASE WHEN b0.relispartition \
          THEN pg_catalog.pg_partition_root(b0.oid) ELSE b0.oid END \
     JOIN pg_catalog.pg_namespace bn ON bn.oid = b.relnamespace";

/// What `[tables]` leaves out of the comparison, by verify's names
/// (`schema.name`, unquoted).
#[derive(Debug, Default)]
pub struct Filtered {
    /// Tables, partitions and owned sequences not on the target.
    excluded: HashSet<String>,
    /// Indexes of those tables.
    excluded_indexes: HashSet<String>,
    /// Tables and partitions whose rows are not copied.
    schema_only: HashSet<String>,
}

impl Filtered {
    /// Reads the source's tables through `conn` and decides each.
    pub async fn read(
        conn: &mut Connection,
        filter: &TableFilter,
    ) -> Result<Filtered, CatalogError> {
        let mut out = Filtered::default();
        if filter.is_default() {
            return Ok(out);
        }
        let what = "reading the tables [tables] selects";
        let err = |source| CatalogError { what, source };
        let rows = conn.simple_query(CHOICE_SQL).await.map_err(err)?;
        for r in &rows {
            let name = r.str(0).map_err(err)?.to_string();
            let kind = r.str(1).map_err(err)?;
            let choice = filter.choice(r.str(2).map_err(err)?, r.str(3).map_err(err)?);
            match (choice, kind) {
                (TableChoice::Migrate, _) => {}
                (TableChoice::Exclude, "i" | "I") => {
                    out.excluded_indexes.insert(name);
                }
                (TableChoice::Exclude, _) => {
                    out.excluded.insert(name);
                }
                (TableChoice::SchemaOnly, "r" | "p") => {
                    out.schema_only.insert(name);
                }
                (TableChoice::SchemaOnly, _) => {}
            }
        }
        Ok(out)
    }

    /// `schema.rel`, or `schema.rel.column`, of a relation not on the target.
    fn is_gone(&self, token: &str) -> bool {
        let token = token.trim_end_matches(['(', ')', ',', ':']);
        if self.excluded.contains(token) || self.excluded_indexes.contains(token) {
            return true;
        }
        token
            .match_indices('.')
            .nth(1)
            .is_some_and(|(i, _)| self.excluded.contains(&token[..i]))
    }

    /// Leaves out of the source's catalog what the target is not meant to
    /// have, and the rows not meant to be copied.
    pub fn apply(&self, source: &mut Catalog) {
        if self.excluded.is_empty() && self.schema_only.is_empty() {
            return;
        }
        // Every kind names its objects with the relations they belong to
        // (`idx on public.t`, `comment on column public.t.c (…)`,
        // `public.t (…)` for privileges): drop those naming one gone.
        for names in source.objects.values_mut() {
            names.retain(|n| !n.split(' ').any(|token| self.is_gone(token)));
        }
        source.tables.retain(|t, _| {
            let name = t.to_string();
            !self.excluded.contains(&name) && !self.schema_only.contains(&name)
        });
        source.sequences.retain(|s, _| !self.excluded.contains(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_naming_a_gone_relation_are_left_out() {
        let f = Filtered {
            excluded: HashSet::from(["public.logs".to_string(), "public.logs_id_seq".into()]),
            excluded_indexes: HashSet::from(["public.logs_msg".to_string()]),
            schema_only: HashSet::from(["audit.events".to_string()]),
        };
        let mut c = Catalog::default();
        let names = [
            "public.logs",
            "public.logs_1",
            "logs_pkey on public.logs",
            "comment on column public.logs.msg (ab12)",
            "table public.logs (ab12)",
            "public.logs_msg",
            "public.users",
        ];
        c.objects
            .insert("misc".into(), names.iter().map(|n| n.to_string()).collect());
        f.apply(&mut c);
        let left: Vec<&str> = c.objects["misc"].iter().map(String::as_str).collect();
        assert_eq!(left, vec!["public.logs_1", "public.users"]);
    }
}
