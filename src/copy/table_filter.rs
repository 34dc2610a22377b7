//! `[tables]` applied to one database's copy: which tables get rows, and
//! which schema entries of the archive are left out. Partitions follow
//! their root's name; sequences owned by an excluded table go with it.

use std::collections::{HashMap, HashSet};

use crate::config::{TableChoice, TableFilter};
use crate::conn::Connection;

use super::catalog::{Sequence, Table, USER_RELATION};
use super::toc::TocEntry;
use super::CopyError;

/// Every user table (and partitioned root), with the name its choice is
/// made on (the root's for a partition), and sequences with their owner.
const CHOICE_SQL: &str = "SELECT c.oid, n.nspname, c.relname, \
       COALESCE((SELECT rn.nspname FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
                 WHERE c.relispartition AND r.oid = pg_catalog.pg_partition_root(c.oid)), n.nspname), \
       COALESCE((SELECT r.relname FROM pg_catalog.pg_class r \
                 WHERE c.relispartition AND r.oid = pg_catalog.pg_partition_root(c.oid)), c.relname), \
       c.relkind::text, \
       (SELECT d.refobjid FROM pg_catalog.pg_depend d WHERE c.relkind = 'S' \
          AND d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid \
          AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1) \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p', 'S') AND ";

/// The choice for every table of one database.
#[derive(Debug, Clone, Default)]
pub struct Choices {
    by_oid: HashMap<u32, TableChoice>,
    /// Tables, partitions and owned sequences not on the target.
    pub excluded_oids: HashSet<u32>,
    excluded_seqs: HashSet<(String, String)>,
}

impl Choices {
    /// Reads the catalog behind `conn` and decides each table.
    pub async fn read(
        conn: &mut Connection,
        db: &str,
        filter: &TableFilter,
    ) -> Result<Choices, CopyError> {
        let mut out = Choices::default();
        if filter.is_default() {
            return Ok(out);
        }
        let err = |e| CopyError::source(db, "reading the tables to migrate", e);
        let rows = conn
            .simple_query(&format!("{CHOICE_SQL}{USER_RELATION}"))
            .await
            .map_err(err)?;
        let mut owned: Vec<(u32, u32, String, String)> = Vec::new();
        for r in &rows {
            let oid: u32 = r.parse(0).map_err(err)?;
            let (schema, name) = (r.str(1).map_err(err)?, r.str(2).map_err(err)?);
            if r.str(5).map_err(err)? == "S" {
                if let Ok(owner) = r.parse::<u32>(6) {
                    owned.push((oid, owner, schema.to_string(), name.to_string()));
                }
                continue;
            }
            let choice = filter.choice(r.str(3).map_err(err)?, r.str(4).map_err(err)?);
            if choice == TableChoice::Exclude {
                out.excluded_oids.insert(oid);
            }
            out.by_oid.insert(oid, choice);
        }
        for (seq, owner, schema, name) in owned {
            if out.excluded_oids.contains(&owner) {
                out.excluded_oids.insert(seq);
                out.excluded_seqs.insert((schema, name));
            }
        }
        Ok(out)
    }

    /// The choice for a table by OID (Migrate when not filtered).
    pub fn of(&self, oid: u32) -> TableChoice {
        self.by_oid
            .get(&oid)
            .copied()
            .unwrap_or(TableChoice::Migrate)
    }

    /// Keeps the tables whose rows are copied.
    pub fn rows_of(&self, tables: Vec<Table>) -> Vec<Table> {
        tables
            .into_iter()
            .filter(|t| self.of(t.oid) == TableChoice::Migrate)
            .collect()
    }

    /// Keeps the sequences that exist on the target.
    pub fn sequences_of(&self, seqs: Vec<Sequence>) -> Vec<Sequence> {
        seqs.into_iter()
            .filter(|s| {
                !self
                    .excluded_seqs
                    .contains(&(s.schema.clone(), s.name.clone()))
            })
            .collect()
    }
}

/// The one hook of the copy: the tables with rows and the sequences on
/// the target, with the archive told which entries to leave out (also the
/// DDL capture of the migration object `own`, which is the source's only).
pub async fn apply(
    conn: &mut Connection,
    db: &str,
    filter: &TableFilter,
    own: Option<&str>,
    archive: &mut super::schema::SchemaArchive,
) -> Result<(Vec<Table>, Vec<Sequence>), CopyError> {
    let choices = Choices::read(conn, db, filter).await?;
    let mut left_out = choices.excluded_oids.clone();
    if let Some(name) = own {
        let oids = crate::stream::ddl::capture::object_oids(conn, name)
            .await
            .map_err(|e| CopyError::source(db, "listing the DDL capture's objects", e))?;
        left_out.extend(oids);
    }
    archive.exclude_objects(&left_out);
    let tables = choices.rows_of(super::catalog::tables(conn, db).await?);
    let sequences = choices.sequences_of(super::catalog::sequences(conn, db).await?);
    Ok((tables, sequences))
}

/// Dump IDs of the archive entries to leave out: those of excluded objects
/// and, transitively, everything depending on them (indexes, constraints,
/// triggers, policies, comments, ACLs, OWNED BY, foreign keys, views).
pub fn skipped_entries(toc: &[TocEntry], excluded_oids: &HashSet<u32>) -> HashSet<u32> {
    let mut skip: HashSet<u32> = toc
        .iter()
        .filter(|e| {
            e.oid != 0 && excluded_oids.contains(&e.oid) && !e.kind.starts_with("PUBLICATION")
        })
        .map(|e| e.dump_id)
        .collect();
    loop {
        let before = skip.len();
        for e in toc {
            if !skip.contains(&e.dump_id) && e.deps.iter().any(|d| skip.contains(d)) {
                skip.insert(e.dump_id);
            }
        }
        if skip.len() == before {
            return skip;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::toc::parse_toc;

    #[test]
    fn dependents_of_excluded_tables_are_skipped() {
        let toc = parse_toc(
            "200; 1259 16390 TABLE public logs postgres\n\
             201; 1259 16391 TABLE public users postgres\n\
             300; 1259 16399 INDEX public logs_idx postgres\n;\tdepends on: 200\n\
             301; 0 0 COMMENT public INDEX logs_idx postgres\n;\tdepends on: 300\n\
             302; 1259 16400 INDEX public users_idx postgres\n;\tdepends on: 201\n",
        );
        let skip = skipped_entries(&toc, &HashSet::from([16390]));
        assert_eq!(skip, HashSet::from([200, 300, 301]));
    }
}
