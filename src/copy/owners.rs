//! Which table each post-data object belongs to, and which tables form one
//! partition or inheritance tree. Work on one tree is serialized: ALTER
//! TABLE on a parent recurses into its children, and two sessions locking
//! the same tree from both ends deadlock.

use std::collections::HashMap;

use crate::conn::Connection;

use super::CopyError;

/// Tables of post-data objects, by the object's OID on the source.
#[derive(Debug, Default, Clone)]
pub struct Owners {
    /// Table of each index, constraint, trigger, rule and policy.
    pub table_of: HashMap<u32, u32>,
    /// The table a foreign key references (it is locked too).
    pub referenced: HashMap<u32, u32>,
    /// For a table in a partition or inheritance tree, the tree's id (the
    /// lowest OID in it); tables in no tree are absent.
    pub tree_of: HashMap<u32, u32>,
    /// For a foreign key on a partitioned table (by its OID), the
    /// statements that first create its partitions' copies that carry a
    /// name of their own, deepest first. pg_dump dumps only the parent's
    /// key, and adding it then names every copy after the parent; adding
    /// the partition's key first makes the parent's adopt it, name and all.
    pub partition_fks: HashMap<u32, Vec<String>>,
}

impl Owners {
    /// The trees whose tables the object `oid` (index, constraint, …)
    /// touches.
    pub fn trees(&self, oid: u32) -> Vec<u32> {
        let mut out = Vec::new();
        for rel in [self.table_of.get(&oid), self.referenced.get(&oid)]
            .into_iter()
            .flatten()
        {
            if let Some(&t) = self.tree_of.get(rel) {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        out
    }

    /// True when `oid` is an object on some table.
    pub fn has_table(&self, oid: u32) -> bool {
        self.table_of.contains_key(&oid)
    }
}

fn parse_u32(r: &crate::conn::Row, i: usize, db: &str, what: &str) -> Result<u32, CopyError> {
    r.parse(i).map_err(|e| CopyError::source(db, what, e))
}

/// Reads the owners of post-data objects from the source's catalog.
pub async fn read(conn: &mut Connection, db: &str) -> Result<Owners, CopyError> {
    const WHAT: &str = "mapping post-data objects to tables";
    let rows = conn
        .simple_query(
            "SELECT indexrelid, indrelid, 0 FROM pg_catalog.pg_index \
             UNION ALL SELECT oid, conrelid, confrelid FROM pg_catalog.pg_constraint WHERE conrelid <> 0 \
             UNION ALL SELECT oid, tgrelid, 0 FROM pg_catalog.pg_trigger \
             UNION ALL SELECT oid, ev_class, 0 FROM pg_catalog.pg_rewrite \
             UNION ALL SELECT oid, polrelid, 0 FROM pg_catalog.pg_policy",
        )
        .await
        .map_err(|e| CopyError::source(db, WHAT, e))?;
    let mut owners = Owners::default();
    for r in &rows {
        let obj = parse_u32(r, 0, db, WHAT)?;
        owners.table_of.insert(obj, parse_u32(r, 1, db, WHAT)?);
        let referenced = parse_u32(r, 2, db, WHAT)?;
        if referenced != 0 {
            owners.referenced.insert(obj, referenced);
        }
    }
    let edges = conn
        .simple_query("SELECT inhrelid, inhparent FROM pg_catalog.pg_inherits")
        .await
        .map_err(|e| CopyError::source(db, "reading partition and inheritance trees", e))?;
    let mut pairs = Vec::with_capacity(edges.len());
    for r in &edges {
        pairs.push((parse_u32(r, 0, db, WHAT)?, parse_u32(r, 1, db, WHAT)?));
    }
    owners.tree_of = trees(&pairs);
    owners.partition_fks = partition_fks(conn, db).await?;
    Ok(owners)
}

/// Referenced-side copies (same referencing table as their parent) are
/// internal and named by the server; only referencing-side copies are
/// recreated. Run with an empty search_path, so every name is qualified.
const PARTITION_FKS: &str = "WITH RECURSIVE tree AS ( \
      SELECT k.oid, k.oid AS root, 0 AS depth FROM pg_catalog.pg_constraint k \
       WHERE k.contype = 'f' AND k.conparentid = 0 \
      UNION ALL \
      SELECT k.oid, t.root, t.depth + 1 FROM pg_catalog.pg_constraint k \
       JOIN tree t ON k.conparentid = t.oid) \
    SELECT t.root, pg_catalog.format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', \
           n.nspname, c.relname, k.conname, pg_catalog.pg_get_constraintdef(k.oid)) \
      FROM tree t JOIN pg_catalog.pg_constraint k ON k.oid = t.oid \
      JOIN pg_catalog.pg_constraint p ON p.oid = k.conparentid \
      JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE k.conname <> p.conname AND k.conrelid <> p.conrelid \
     ORDER BY t.root, t.depth DESC, k.oid";

/// Foreign keys inherited by partitions under a name other than their
/// parent key's, as `ALTER TABLE … ADD CONSTRAINT` per root key.
async fn partition_fks(
    conn: &mut Connection,
    db: &str,
) -> Result<HashMap<u32, Vec<String>>, CopyError> {
    const WHAT: &str = "reading foreign keys of partitions";
    // Referenced-side copies (same referencing table as their parent) are
    // internal and named by the server; only referencing-side copies are
    // recreated. An empty search_path makes every name qualified.
    let old = conn
        .simple_query("SELECT pg_catalog.current_setting('search_path')")
        .await
        .map_err(|e| CopyError::source(db, WHAT, e))?
        .first()
        .and_then(|r| r.str(0).ok().map(str::to_string))
        .unwrap_or_default();
    conn.execute("SELECT pg_catalog.set_config('search_path', '', false)")
        .await
        .map_err(|e| CopyError::source(db, WHAT, e))?;
    let rows = conn.simple_query(PARTITION_FKS).await;
    conn.execute(&format!(
        "SELECT pg_catalog.set_config('search_path', {}, false)",
        crate::conn::quote_literal(&old)
    ))
    .await
    .map_err(|e| CopyError::source(db, WHAT, e))?;
    let rows = rows.map_err(|e| CopyError::source(db, WHAT, e))?;
    let mut out: HashMap<u32, Vec<String>> = HashMap::new();
    for r in &rows {
        let root = parse_u32(r, 0, db, WHAT)?;
        let sql = r.str(1).map_err(|e| CopyError::source(db, WHAT, e))?;
        out.entry(root).or_default().push(sql.to_string());
    }
    Ok(out)
}

/// Connected components of the child -> parent edges (multiple inheritance
/// joins trees), each named by its lowest OID.
pub fn trees(edges: &[(u32, u32)]) -> HashMap<u32, u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    fn find(parent: &mut HashMap<u32, u32>, x: u32) -> u32 {
        let mut root = x;
        while let Some(&p) = parent.get(&root) {
            if p == root {
                break;
            }
            root = p;
        }
        // Path compression keeps long partition lists cheap.
        let mut cur = x;
        while let Some(&p) = parent.get(&cur) {
            if p == root {
                break;
            }
            parent.insert(cur, root);
            cur = p;
        }
        root
    }
    for &(a, b) in edges {
        parent.entry(a).or_insert(a);
        parent.entry(b).or_insert(b);
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            parent.insert(hi, lo);
        }
    }
    let keys: Vec<u32> = parent.keys().copied().collect();
    keys.into_iter()
        .map(|k| (k, find(&mut parent, k)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_join_partitions_and_multiple_inheritance() {
        // 10 <- 11 <- 12 (sub-partition), 20 <- 21, and 30 inherits 21 and 40.
        let t = trees(&[(11, 10), (12, 11), (21, 20), (30, 21), (30, 40)]);
        assert_eq!(t[&12], 10);
        assert_eq!(t[&11], 10);
        assert_eq!(t[&10], 10);
        assert_eq!(t[&40], 20);
        assert_eq!(t[&30], 20);
        assert!(!t.contains_key(&99));
    }

    #[test]
    fn trees_of_an_object_cover_the_referenced_table() {
        let mut o = Owners::default();
        o.table_of.insert(1, 100);
        o.referenced.insert(1, 200);
        o.tree_of.insert(100, 100);
        o.tree_of.insert(200, 150);
        assert_eq!(o.trees(1), vec![100, 150]);
        assert!(o.trees(2).is_empty());
    }
}
