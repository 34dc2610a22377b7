//! What one side holds, read from its catalogs: the user schema objects by
//! kind and name, the tables with their columns, and the sequences with
//! their last values. Both sides are read with the same queries, so what
//! one side counts the other counts the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::conn::{quote_ident, sqlstate, ConnError, Connection, Row};
use crate::copy::catalog::USER_RELATION;

/// Schema objects compared by kind: (plural used as the kind, singular
/// used to name one object). Every kind appears in the report even when
/// both sides have none, so a reader sees what was compared.
pub const OBJECT_KINDS: &[(&str, &str)] = &[
    ("schemas", "schema"),
    ("tables", "table"),
    ("partitioned tables", "partitioned table"),
    ("views", "view"),
    ("materialized views", "materialized view"),
    ("foreign tables", "foreign table"),
    ("indexes", "index"),
    ("primary keys", "primary key"),
    ("unique constraints", "unique constraint"),
    ("foreign keys", "foreign key"),
    ("check constraints", "check constraint"),
    ("exclusion constraints", "exclusion constraint"),
    ("triggers", "trigger"),
    ("sequences", "sequence"),
    ("functions", "function"),
    ("procedures", "procedure"),
    ("enums", "enum"),
    ("domains", "domain"),
    ("composite types", "composite type"),
    ("extensions", "extension"),
];

/// Schemas that belong to the system, for objects outside `pg_class`; and
/// the DDL capture's (`pgmigrate_<migration>_<db oid>`), which only the
/// source has while a migration streams.
const USER_SCHEMA: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp_' AND n.nspname !~ '^pgmigrate_'";

/// A table by schema and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TableName {
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
}

impl TableName {
    /// `"schema"."name"` for SQL.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// A column of a table: name and `format_type` of its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Type as `format_type` prints it (`integer`, `character varying(10)`).
    pub type_name: String,
}

/// A table with rows: its size (to start big tables first) and columns in
/// attnum order, generated ones included, dropped ones left out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableInfo {
    /// Main fork size in bytes.
    pub bytes: u64,
    /// Columns in attnum order.
    pub columns: Vec<Column>,
}

/// A sequence's direction and last value (`None` before its first nextval,
/// or when the verifying role may not read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceValue {
    /// Increment is positive.
    pub ascending: bool,
    /// `last_value` when called.
    pub last_value: Option<i128>,
}

/// Everything read from one side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Object names per kind (a kind of [`OBJECT_KINDS`]).
    pub objects: BTreeMap<String, BTreeSet<String>>,
    /// Plain tables and leaf partitions.
    pub tables: BTreeMap<TableName, TableInfo>,
    /// Sequences by `schema.name`.
    pub sequences: BTreeMap<String, SequenceValue>,
}

/// What failed while reading a catalog.
#[derive(Debug)]
pub struct CatalogError {
    /// What was being read.
    pub what: &'static str,
    /// The error.
    pub source: ConnError,
}

fn read<T>(what: &'static str, r: Result<T, ConnError>) -> Result<T, CatalogError> {
    r.map_err(|source| CatalogError { what, source })
}

/// Reads the whole catalog of the session's database.
pub async fn read_catalog(conn: &mut Connection) -> Result<Catalog, CatalogError> {
    let mut catalog = Catalog::default();
    let rows = read(
        "listing schema objects",
        conn.simple_query(&objects_sql(conn.server_major())).await,
    )?;
    for r in &rows {
        let kind = read("listing schema objects", r.str(0))?;
        let name = read("listing schema objects", r.str(1))?;
        catalog
            .objects
            .entry(kind.to_string())
            .or_default()
            .insert(name.to_string());
    }

    let more = read(
        "listing further schema objects",
        conn.simple_query(&super::more_objects::more_objects_sql(conn.server_major()))
            .await,
    )?;
    // The session is inside its snapshot transaction: a savepoint keeps it
    // usable when the role may not read large objects' contents.
    read(
        "reading large objects",
        conn.execute("SAVEPOINT pgmigrate_lo").await,
    )?;
    let los = match conn
        .simple_query(super::more_objects::LARGE_OBJECTS_SQL)
        .await
    {
        Err(e) if e.code() == Some(sqlstate::INSUFFICIENT_PRIVILEGE) => {
            read(
                "reading large objects",
                conn.execute("ROLLBACK TO SAVEPOINT pgmigrate_lo").await,
            )?;
            read(
                "listing large objects",
                conn.simple_query(super::more_objects::LARGE_OBJECT_NAMES_SQL)
                    .await,
            )?
        }
        r => read("reading large objects", r)?,
    };
    read(
        "reading large objects",
        conn.execute("RELEASE SAVEPOINT pgmigrate_lo").await,
    )?;
    for r in more.iter().chain(los.iter()) {
        let kind = read("listing further schema objects", r.str(0))?;
        let name = read("listing further schema objects", r.opt_str(1))?;
        catalog
            .objects
            .entry(kind.to_string())
            .or_default()
            .insert(name.unwrap_or("(unnamed)").to_string());
    }

    let rows = read(
        "listing table columns",
        conn.simple_query(&tables_sql()).await,
    )?;
    for r in &rows {
        let (table, bytes, column) = read("listing table columns", table_row(r))?;
        let info = catalog.tables.entry(table).or_insert_with(|| TableInfo {
            bytes,
            columns: Vec::new(),
        });
        info.columns.extend(column);
    }

    let rows = read(
        "reading sequence values",
        conn.simple_query(&sequences_sql()).await,
    )?;
    for r in &rows {
        let name = read("reading sequence values", r.str(0))?;
        let ascending = read("reading sequence values", r.bool(1))?;
        let last_value = read("reading sequence values", r.opt_parse::<i128>(2))?;
        catalog.sequences.insert(
            name.to_string(),
            SequenceValue {
                ascending,
                last_value,
            },
        );
    }
    Ok(catalog)
}

fn table_row(r: &Row) -> Result<(TableName, u64, Option<Column>), ConnError> {
    let table = TableName {
        schema: r.str(0)?.to_string(),
        name: r.str(1)?.to_string(),
    };
    let bytes = r.parse(2)?;
    let column = match r.opt_str(3)? {
        None => None,
        Some(name) => Some(Column {
            name: name.to_string(),
            type_name: r.str(4)?.to_string(),
        }),
    };
    Ok((table, bytes, column))
}

/// Not a member of an extension, for an object of catalog `class`.
fn not_extension_member(class: &str, oid: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
         WHERE d.classid = '{class}'::regclass AND d.objid = {oid} AND d.deptype = 'e')"
    )
}

/// One query naming every user schema object with its kind. A
/// procedure's arguments are named without the `IN` that 14 and later
/// print for them, so servers of different majors name it alike.
fn objects_sql(server_major: u32) -> String {
    // From 13 on, a partition's copy of a parent's trigger is not internal;
    // leave the copies out so every version counts the same triggers.
    let trigger_clone = if server_major >= 13 {
        " AND g.tgparentid = 0"
    } else {
        ""
    };
    let ns_not_ext = not_extension_member("pg_catalog.pg_namespace", "n.oid");
    let proc_not_ext = not_extension_member("pg_catalog.pg_proc", "p.oid");
    let type_not_ext = not_extension_member("pg_catalog.pg_type", "t.oid");
    format!(
        "SELECT 'schemas', n.nspname FROM pg_catalog.pg_namespace n \
           WHERE {USER_SCHEMA} AND {ns_not_ext} \
         UNION ALL \
         SELECT CASE c.relkind WHEN 'r' THEN 'tables' WHEN 'p' THEN 'partitioned tables' \
                  WHEN 'v' THEN 'views' WHEN 'm' THEN 'materialized views' \
                  WHEN 'f' THEN 'foreign tables' ELSE 'sequences' END, \
                n.nspname || '.' || c.relname \
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {USER_RELATION} \
         UNION ALL \
         SELECT 'indexes', n.nspname || '.' || i.relname \
           FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid \
           JOIN pg_catalog.pg_class c ON c.oid = x.indrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           WHERE {USER_RELATION} \
         UNION ALL \
         SELECT CASE k.contype WHEN 'p' THEN 'primary keys' WHEN 'u' THEN 'unique constraints' \
                  WHEN 'f' THEN 'foreign keys' WHEN 'c' THEN 'check constraints' \
                  ELSE 'exclusion constraints' END, \
                CASE WHEN pk.conrelid = k.conrelid \
                     THEN pk.conname || ' (server-named copy for ' || \
                          k.confrelid::pg_catalog.regclass::text || ')' \
                     ELSE k.conname END || ' on ' || n.nspname || '.' || c.relname \
           FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           LEFT JOIN pg_catalog.pg_constraint pk ON pk.oid = k.conparentid \
           WHERE k.contype IN ('p', 'u', 'f', 'c', 'x') AND {USER_RELATION} \
         UNION ALL \
         SELECT 'triggers', g.tgname || ' on ' || n.nspname || '.' || c.relname \
           FROM pg_catalog.pg_trigger g JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           WHERE NOT g.tgisinternal{trigger_clone} AND {USER_RELATION} \
         UNION ALL \
         SELECT CASE p.prokind WHEN 'p' THEN 'procedures' ELSE 'functions' END, \
                n.nspname || '.' || p.proname || '(' || \
                pg_catalog.regexp_replace(pg_catalog.pg_get_function_identity_arguments(p.oid), \
                  '(^|, )IN ', '\\1', 'g') || ')' \
           FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
           WHERE {USER_SCHEMA} AND {proc_not_ext} \
         UNION ALL \
         SELECT CASE t.typtype WHEN 'e' THEN 'enums' WHEN 'd' THEN 'domains' \
                  ELSE 'composite types' END, \
                n.nspname || '.' || t.typname \
           FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
           WHERE {USER_SCHEMA} AND {type_not_ext} \
             AND (t.typtype IN ('e', 'd') OR (t.typtype = 'c' AND EXISTS ( \
                  SELECT 1 FROM pg_catalog.pg_class r WHERE r.oid = t.typrelid AND r.relkind = 'c'))) \
         UNION ALL \
         SELECT 'extensions', e.extname FROM pg_catalog.pg_extension e"
    )
}

/// Plain tables and leaf partitions with their columns (one row per
/// column; a table without columns has one row with NULL column).
/// An inheritance child's columns come in name order: pg_dump recreates
/// such a child with its parent's columns first, so its physical order is
/// not carried (validation warns, the README lists it); contents are
/// compared by column name either way.
fn tables_sql() -> String {
    format!(
        "SELECT n.nspname, c.relname, pg_catalog.pg_relation_size(c.oid), a.attname, \
                pg_catalog.format_type(a.atttypid, a.atttypmod) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_catalog.pg_attribute a \
           ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE c.relkind = 'r' AND {USER_RELATION} \
         ORDER BY c.oid, CASE WHEN NOT c.relispartition AND EXISTS ( \
                  SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid) \
                  THEN 0 ELSE a.attnum END, a.attname"
    )
}

/// Every user sequence with direction and last value, readable or not.
fn sequences_sql() -> String {
    format!(
        "SELECT n.nspname || '.' || c.relname, s.seqincrement > 0, \
                CASE WHEN pg_catalog.has_sequence_privilege(c.oid, 'SELECT,USAGE') \
                     THEN pg_catalog.pg_sequence_last_value(c.oid) END \
         FROM pg_catalog.pg_sequence s JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE {USER_RELATION}"
    )
}
