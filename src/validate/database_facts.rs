//! What the checks need to know about one source database, read through a
//! session on it. Object names come back quoted as SQL would need them
//! (`public."Order"`), so a fix hint can be pasted as is.

use crate::conn::{ConnError, Connection};
use crate::copy::target_db::{self, DatabaseProps};

use super::source_facts::{first, strings};
use crate::stream::publication::KeylessTable;

/// What the user cannot read, and why: the schema or the table.
#[derive(Default)]
struct ReadGrants {
    unreadable: Vec<String>,
    schemas_without_usage: Vec<String>,
    without_select: Vec<String>,
}

/// Tables of the user's schemas: not catalogs, not TOAST, not temporary,
/// not owned by an extension (pg_dump leaves those to CREATE EXTENSION).
pub(super) const RELATIONS: &str =
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace";
/// The condition on [`RELATIONS`] that keeps the user's own.
pub(super) const USER_RELATION: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp_' \
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')";

/// One source database as the checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDatabase {
    /// Its name.
    pub name: String,
    /// `pg_database_size`.
    pub size_bytes: u64,
    /// Encoding, locale and provider.
    pub encoding: String,
    /// `LC_COLLATE`.
    pub collate: String,
    /// `LC_CTYPE`.
    pub ctype: String,
    /// `c`, `i` or `b`.
    pub locale_provider: String,
    /// ICU/builtin locale.
    pub locale: Option<String>,
    /// The user may CREATE in this database (needed for a publication).
    pub can_create: bool,
    /// Tables and sequences the user cannot read.
    pub unreadable: Vec<String>,
    /// Schemas (quoted) of those on which the user lacks USAGE.
    pub schemas_without_usage: Vec<String>,
    /// Those on which the user lacks SELECT itself.
    pub without_select: Vec<String>,
    /// Tables the user does not own (a publication listing them needs it).
    pub not_owned: Vec<String>,
    /// The roles (quoted) owning `not_owned`: membership in them suffices.
    pub foreign_owners: Vec<String>,
    /// Tables without a primary key or usable replica identity.
    pub without_identity: Vec<KeylessTable>,
    /// Replica identity key columns (`schema.table.column`) of a type
    /// without equality, even inside (a composite's field, an array's
    /// element): the target cannot find their rows.
    pub key_without_equality: Vec<String>,
    /// Columns of REPLICA IDENTITY FULL tables of such a type: their rows
    /// are matched by the columns' text form.
    pub full_without_equality: Vec<String>,
    /// Unlogged tables.
    pub unlogged: Vec<String>,
    /// Tables, partitions, materialized views and foreign tables: pg_dump
    /// and the copy sessions each hold a lock on every one of them at once.
    pub lockable_relations: u64,
    /// Number of large objects.
    pub large_objects: u64,
    /// User-defined casts, `source AS target`.
    pub casts: Vec<String>,
    /// Relations outside the default tablespace, `name (tablespace)`.
    pub tablespace_objects: Vec<String>,
    /// `(name, version)` of each installed extension.
    pub extensions: Vec<(String, String)>,
    /// Collations used by columns, indexes and domains.
    pub collations: Vec<CollationUse>,
    /// What the migration cannot carry: subscriptions, security labels,
    /// and the column order of inheritance children pg_dump reorders.
    pub not_carried: Vec<String>,
    /// Tables, foreign keys and views as `[tables]` sees them.
    pub filter_facts: super::table_filter_checks::FilterFacts,
}

/// A non-default collation the schema refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollationUse {
    /// Schema of the collation.
    pub schema: String,
    /// Collation name.
    pub name: String,
    /// `c` (libc), `i` (ICU), `b` (builtin), `d` (default).
    pub provider: String,
    /// libc locale (`collcollate`), or the ICU/builtin locale.
    pub locale: String,
}

impl SourceDatabase {
    /// Reads the facts of the database `conn` is connected to.
    pub async fn read(conn: &mut Connection, db: &str) -> Result<SourceDatabase, ConnError> {
        let props: DatabaseProps =
            target_db::source_props(conn, db)
                .await
                .map_err(|e| ConnError::Value {
                    column: "pg_database".into(),
                    reason: e.to_string(),
                })?;
        let rows = conn
            .simple_query(
                "SELECT pg_catalog.pg_database_size(current_database()), \
                 has_database_privilege(current_database(), 'CREATE'), \
                 (SELECT count(*) FROM pg_catalog.pg_largeobject_metadata), \
                 (SELECT count(*) FROM pg_catalog.pg_class c \
                  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                  WHERE c.relkind IN ('r', 'p', 'm', 'f') \
                  AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                  AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp_')",
            )
            .await?;
        let r = first(&rows, "the database size")?;
        let size_bytes = r.parse(0)?;
        let can_create = r.bool(1)?;
        let large_objects = r.parse(2)?;
        let lockable_relations = r.parse(3)?;

        let read = read_grants(conn).await?;
        let (not_owned, foreign_owners) = read_not_owned(conn).await?;
        let without_identity = crate::stream::publication::keyless_tables(conn).await?;
        let (key_without_equality, full_without_equality) = identity_without_equality(conn).await?;
        let unlogged = names(
            conn,
            &format!(
                "SELECT format('%I.%I', n.nspname, c.relname) {RELATIONS} WHERE {USER_RELATION} \
                 AND c.relkind IN ('r', 'p') AND c.relpersistence = 'u' ORDER BY 1"
            ),
        )
        .await?;
        let casts = names(
            conn,
            "SELECT format('%s AS %s', pg_catalog.format_type(c.castsource, NULL), \
                    pg_catalog.format_type(c.casttarget, NULL)) \
             FROM pg_catalog.pg_cast c WHERE c.oid >= 16384 \
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                WHERE d.classid = 'pg_catalog.pg_cast'::regclass AND d.objid = c.oid AND d.deptype = 'e') \
             ORDER BY 1",
        )
        .await?;
        let tablespace_objects = read_tablespace_objects(conn).await?;
        let extensions = read_extensions(conn).await?;
        let collations = read_collations(conn).await?;
        let not_carried = names(conn, &not_carried_sql()).await?;
        Ok(SourceDatabase {
            name: db.to_string(),
            size_bytes,
            encoding: props.encoding,
            collate: props.collate,
            ctype: props.ctype,
            locale_provider: props.locale_provider,
            locale: props.locale,
            can_create,
            unreadable: read.unreadable,
            schemas_without_usage: read.schemas_without_usage,
            without_select: read.without_select,
            not_owned,
            foreign_owners,
            without_identity,
            key_without_equality,
            full_without_equality,
            unlogged,
            large_objects,
            lockable_relations,
            casts,
            tablespace_objects,
            extensions,
            collations,
            not_carried,
            filter_facts: super::table_filter_checks::FilterFacts::read(conn).await?,
        })
    }
}

/// The tables and sequences the user cannot read, split by the grant that
/// is missing, so the hint names the right one (USAGE on the schema or
/// SELECT on the table).
async fn read_grants(conn: &mut Connection) -> Result<ReadGrants, ConnError> {
    let rows = conn
        .simple_query(&format!(
            "SELECT format('%I.%I', n.nspname, c.relname), quote_ident(n.nspname), \
             has_schema_privilege(n.oid, 'USAGE'), has_table_privilege(c.oid, 'SELECT') \
             {RELATIONS} WHERE {USER_RELATION} AND c.relkind IN ('r', 'p', 'm', 'S') \
             AND (NOT has_schema_privilege(n.oid, 'USAGE') OR NOT has_table_privilege(c.oid, 'SELECT')) \
             ORDER BY 1"
        ))
        .await?;
    let mut read = ReadGrants::default();
    let mut seen = std::collections::HashSet::new();
    for r in &rows {
        let name = r.str(0)?.to_string();
        let schema = r.str(1)?.to_string();
        if !r.bool(2)? && seen.insert(schema.clone()) {
            read.schemas_without_usage.push(schema);
        }
        if !r.bool(3)? {
            read.without_select.push(name.clone());
        }
        read.unreadable.push(name);
    }
    Ok(read)
}

/// Tables the user does not own, and their owners: a publication listing
/// them needs ownership, and membership in the owning role is enough.
async fn read_not_owned(conn: &mut Connection) -> Result<(Vec<String>, Vec<String>), ConnError> {
    let rows = conn
        .simple_query(&format!(
            "SELECT format('%I.%I', n.nspname, c.relname), quote_ident(pg_catalog.pg_get_userbyid(c.relowner)) \
             {RELATIONS} WHERE {USER_RELATION} \
             AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p' \
             AND NOT pg_has_role(c.relowner, 'USAGE') ORDER BY 1"
        ))
        .await?;
    let mut not_owned = Vec::new();
    let mut foreign_owners = std::collections::BTreeSet::new();
    for r in &rows {
        not_owned.push(r.str(0)?.to_string());
        foreign_owners.insert(r.str(1)?.to_string());
    }
    Ok((not_owned, foreign_owners.into_iter().collect()))
}

/// The database and the relations outside the default tablespace, which
/// the target may not have.
async fn read_tablespace_objects(conn: &mut Connection) -> Result<Vec<String>, ConnError> {
    let mut tablespace_objects = names(
        conn,
        "SELECT 'database ' || quote_ident(d.datname) || ' (' || t.spcname || ')' \
         FROM pg_catalog.pg_database d JOIN pg_catalog.pg_tablespace t ON t.oid = d.dattablespace \
         WHERE d.datname = current_database() AND t.spcname <> 'pg_default'",
    )
    .await?;
    tablespace_objects.extend(
        names(
            conn,
            &format!(
                "SELECT format('%I.%I (%s)', n.nspname, c.relname, t.spcname) {RELATIONS} \
                 JOIN pg_catalog.pg_tablespace t ON t.oid = c.reltablespace \
                 WHERE {USER_RELATION} AND c.relkind IN ('r', 'p', 'm', 'i', 'I') ORDER BY 1"
            ),
        )
        .await?,
    );
    Ok(tablespace_objects)
}

/// `(name, version)` of each installed extension.
async fn read_extensions(conn: &mut Connection) -> Result<Vec<(String, String)>, ConnError> {
    let rows = conn
        .simple_query("SELECT extname, extversion FROM pg_catalog.pg_extension ORDER BY 1")
        .await?;
    rows.iter()
        .map(|r| Ok((r.str(0)?.to_string(), r.str(1)?.to_string())))
        .collect::<Result<_, ConnError>>()
}

/// Objects pg_dump/pg_restore as pgmigrate runs them leave behind:
/// subscriptions and security labels (they name things outside this
/// server), and an inheritance child whose columns do not come as
/// `CREATE TABLE … INHERITS` recreates them (the parent's first, in its
/// order, then the child's own).
fn not_carried_sql() -> String {
    let col = |a: &str| format!("{a}.attnum > 0 AND NOT {a}.attisdropped");
    format!(
        "SELECT 'subscription ' || quote_ident(s.subname) FROM pg_catalog.pg_subscription s \
           WHERE s.subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) \
         UNION ALL \
         SELECT 'security label on ' || pg_catalog.pg_describe_object(l.classoid, l.objoid, l.objsubid) \
           FROM pg_catalog.pg_seclabel l \
         UNION ALL \
         SELECT 'column order of inheritance child ' || format('%I.%I', n.nspname, c.relname) \
           {RELATIONS} WHERE {USER_RELATION} AND c.relkind = 'r' AND NOT c.relispartition \
           AND (EXISTS (SELECT 1 FROM pg_catalog.pg_attribute l JOIN pg_catalog.pg_attribute i \
                  ON i.attrelid = l.attrelid AND i.attnum > l.attnum \
                WHERE l.attrelid = c.oid AND {l} AND {i} AND l.attinhcount = 0 AND i.attinhcount > 0) \
             OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h \
                JOIN pg_catalog.pg_attribute x ON x.attrelid = h.inhrelid AND {x} \
                JOIN pg_catalog.pg_attribute y ON y.attrelid = h.inhrelid AND {y} AND x.attnum < y.attnum \
                JOIN pg_catalog.pg_attribute px ON px.attrelid = h.inhparent AND px.attname = x.attname AND {px} \
                JOIN pg_catalog.pg_attribute py ON py.attrelid = h.inhparent AND py.attname = y.attname AND {py} \
                WHERE h.inhrelid = c.oid AND h.inhseqno = 1 AND px.attnum > py.attnum)) \
         ORDER BY 1",
        l = col("l"),
        i = col("i"),
        x = col("x"),
        y = col("y"),
        px = col("px"),
        py = col("py"),
    )
}

/// Identity columns whose type lacks equality (see
/// [`crate::pgtypes::lacking_equality_sql`]): `(key columns, FULL columns)`.
async fn identity_without_equality(
    conn: &mut Connection,
) -> Result<(Vec<String>, Vec<String>), ConnError> {
    let sql = format!(
        "WITH RECURSIVE roots(key, typ) AS ( \
           SELECT format('%s|%I.%I.%I', CASE WHEN c.relreplident = 'f' THEN 'f' ELSE 'k' END, \
                         n.nspname, c.relname, a.attname), a.atttypid \
           {RELATIONS} JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
           WHERE {USER_RELATION} AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p' \
             AND (c.relreplident = 'f' OR EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
                  WHERE i.indrelid = c.oid AND a.attnum = ANY (i.indkey) \
                    AND CASE c.relreplident WHEN 'i' THEN i.indisreplident ELSE i.indisprimary END))), {}",
        crate::pgtypes::lacking_equality_sql()
    );
    let mut found = names(conn, &sql).await?;
    found.sort();
    let (mut keys, mut full) = (Vec::new(), Vec::new());
    for f in found {
        match f.split_once('|') {
            Some(("f", col)) => full.push(col.to_string()),
            Some((_, col)) => keys.push(col.to_string()),
            None => {}
        }
    }
    Ok((keys, full))
}

async fn names(conn: &mut Connection, sql: &str) -> Result<Vec<String>, ConnError> {
    strings(&conn.simple_query(sql).await?, 0)
}

async fn read_collations(conn: &mut Connection) -> Result<Vec<CollationUse>, ConnError> {
    let locale = match conn.server_major() {
        17.. => "coalesce(co.colllocale, co.collcollate, '')",
        15 | 16 => "coalesce(co.colliculocale, co.collcollate, '')",
        _ => "coalesce(co.collcollate, '')",
    };
    let user =
        "c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)";
    let sql = format!(
        "SELECT DISTINCT n.nspname, co.collname, co.collprovider::text, {locale} \
         FROM (SELECT a.attcollation AS coll FROM pg_catalog.pg_attribute a \
                 JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                 WHERE a.attnum > 0 AND NOT a.attisdropped AND {user} \
               UNION SELECT unnest(i.indcollation::oid[]) FROM pg_catalog.pg_index i \
                 JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid WHERE {user} \
               UNION SELECT t.typcollation FROM pg_catalog.pg_type t \
                 WHERE t.typnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)) u \
         JOIN pg_catalog.pg_collation co ON co.oid = u.coll \
         JOIN pg_catalog.pg_namespace n ON n.oid = co.collnamespace \
         WHERE co.collname <> 'default' ORDER BY 1, 2"
    );
    let rows = conn.simple_query(&sql).await?;
    rows.iter()
        .map(|r| {
            Ok(CollationUse {
                schema: r.str(0)?.to_string(),
                name: r.str(1)?.to_string(),
                provider: r.str(2)?.to_string(),
                locale: r.str(3)?.to_string(),
            })
        })
        .collect()
}
