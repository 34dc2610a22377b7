//! What the source holds, read inside the snapshot transaction so the list
//! of tables and columns is exactly the one the copy sees.

use crate::conn::{quote_ident, Connection};

use super::CopyError;

pub use crate::pgtypes::type_binary_safe;

/// A column that is copied.
#[derive(Debug, Clone)]
pub struct Column {
    /// Name as in the catalog.
    pub name: String,
    /// Type OID on the source.
    pub type_oid: u32,
}

/// A table whose rows are copied.
#[derive(Debug, Clone)]
pub struct Table {
    /// `pg_class` OID on the source.
    pub oid: u32,
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Size of the main fork in bytes (the split decision: ctid ranges
    /// cut the main fork).
    pub bytes: u64,
    /// Size with TOAST: the copy's real work, which orders the units.
    pub total_bytes: u64,
    /// Stored columns in attnum order (generated and dropped ones left out).
    pub columns: Vec<Column>,
    /// For a partition, the OID of its partitioned root: the stream names
    /// its changes after the root.
    pub root: Option<u32>,
}

impl Table {
    /// `"schema"."name"`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// `schema.name` for messages.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// True when every column can use binary COPY between any two servers.
    pub fn binary_safe(&self) -> bool {
        self.columns.iter().all(|c| type_binary_safe(c.type_oid))
    }

    /// `("a", "b")` or an empty string for a table without stored columns.
    pub fn column_list(&self) -> String {
        if self.columns.is_empty() {
            return String::new();
        }
        let cols: Vec<String> = self.columns.iter().map(|c| quote_ident(&c.name)).collect();
        format!("({})", cols.join(", "))
    }
}

/// A sequence and its current state.
#[derive(Debug, Clone)]
pub struct Sequence {
    /// Schema name.
    pub schema: String,
    /// Sequence name.
    pub name: String,
}

impl Sequence {
    /// `"schema"."name"`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// Filter for user objects: not system schemas, not temporary, not owned
/// by an extension (the extension's own script creates those).
pub(crate) const USER_RELATION: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp_' \
     AND c.relpersistence <> 't' \
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')";

/// The tables with rows to copy: plain tables and leaf partitions.
pub async fn tables(conn: &mut Connection, db: &str) -> Result<Vec<Table>, CopyError> {
    let sql = format!(
        "SELECT c.oid, n.nspname, c.relname, pg_catalog.pg_relation_size(c.oid), pg_catalog.pg_table_size(c.oid), \
                CASE WHEN c.relispartition THEN pg_catalog.pg_partition_root(c.oid)::oid END \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND {USER_RELATION} ORDER BY c.oid"
    );
    let rows = conn
        .simple_query(&sql)
        .await
        .map_err(|e| CopyError::source(db, "listing tables", e))?;
    let mut tables = Vec::with_capacity(rows.len());
    for r in &rows {
        tables.push(Table {
            oid: r
                .parse(0)
                .map_err(|e| CopyError::source(db, "listing tables", e))?,
            schema: r
                .str(1)
                .map_err(|e| CopyError::source(db, "listing tables", e))?
                .to_string(),
            name: r
                .str(2)
                .map_err(|e| CopyError::source(db, "listing tables", e))?
                .to_string(),
            bytes: r
                .parse(3)
                .map_err(|e| CopyError::source(db, "listing tables", e))?,
            total_bytes: r
                .parse(4)
                .map_err(|e| CopyError::source(db, "listing tables", e))?,
            columns: Vec::new(),
            root: r
                .opt_str(5)
                .map_err(|e| CopyError::source(db, "listing tables", e))?
                .and_then(|s| s.parse().ok()),
        });
    }
    let cols = conn
        .simple_query(&format!(
            "SELECT a.attrelid, a.attname, a.atttypid FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND {USER_RELATION} AND a.attnum > 0 AND NOT a.attisdropped \
             AND a.attgenerated = '' ORDER BY a.attrelid, a.attnum"
        ))
        .await
        .map_err(|e| CopyError::source(db, "listing columns", e))?;
    let by_oid: std::collections::HashMap<u32, usize> =
        tables.iter().enumerate().map(|(i, t)| (t.oid, i)).collect();
    for r in &cols {
        let rel: u32 = r
            .parse(0)
            .map_err(|e| CopyError::source(db, "listing columns", e))?;
        if let Some(&i) = by_oid.get(&rel) {
            if let Some(t) = tables.get_mut(i) {
                t.columns.push(Column {
                    name: r
                        .str(1)
                        .map_err(|e| CopyError::source(db, "listing columns", e))?
                        .to_string(),
                    type_oid: r
                        .parse(2)
                        .map_err(|e| CopyError::source(db, "listing columns", e))?,
                });
            }
        }
    }
    Ok(tables)
}

/// Every user sequence.
pub async fn sequences(conn: &mut Connection, db: &str) -> Result<Vec<Sequence>, CopyError> {
    let rows = conn
        .simple_query(&format!(
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'S' AND {USER_RELATION} ORDER BY 1, 2"
        ))
        .await
        .map_err(|e| CopyError::source(db, "listing sequences", e))?;
    rows.iter()
        .map(|r| {
            Ok(Sequence {
                schema: r
                    .str(0)
                    .map_err(|e| CopyError::source(db, "listing sequences", e))?
                    .to_string(),
                name: r
                    .str(1)
                    .map_err(|e| CopyError::source(db, "listing sequences", e))?
                    .to_string(),
            })
        })
        .collect()
}
