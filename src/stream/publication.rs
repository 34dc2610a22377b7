//! The publications the slot decodes through: FOR ALL TABLES where the role
//! may, else FOR TABLE with every table; partitioned tables publish under
//! their root so each table has one name on both sides.
//!
//! Keyless tables configured `insert_only` go into a second publication
//! that publishes inserts only ([`insert_publication_name`]): a table
//! without replica identity in a publication that publishes UPDATE/DELETE
//! makes the source refuse its own updates of it. The main publication then
//! lists its tables, leaving those out.

use crate::config::{KeylessMode, KeylessPolicy, TableChoice, TableFilter};
use crate::conn::{quote_ident, quote_literal, ConnError, Connection, Retry};

/// A publication statement failed on the source.
#[derive(Debug, thiserror::Error)]
#[error("database {db}: {context} on the source: {source}")]
pub struct PublicationError {
    /// Database.
    pub db: String,
    /// What was being done (`creating publication x`).
    pub context: String,
    /// The wire error.
    #[source]
    pub source: Box<ConnError>,
}

impl PublicationError {
    fn new(db: &str, context: &str, e: ConnError) -> PublicationError {
        PublicationError {
            db: db.to_string(),
            context: context.to_string(),
            source: Box::new(e),
        }
    }

    /// Whether another attempt can succeed: the wire error decides.
    pub fn retry(&self) -> Retry {
        self.source.retry()
    }

    /// The SQLSTATE when the server reported the error.
    pub fn code(&self) -> Option<&str> {
        self.source.code()
    }
}

/// Tables without a primary key or usable replica identity (the index a
/// `USING INDEX` identity names is gone, or DEFAULT without a primary
/// key), in the user's schemas, permanent, not owned by an extension.
/// One catalog query for the whole database.
const KEYLESS_SQL: &str = "SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname), \
       c.relreplident::text, \
       CASE WHEN c.relispartition THEN (SELECT format('%I.%I', rn.nspname, r.relname) || '|' || r.relreplident::text \
            FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
            WHERE r.oid = pg_catalog.pg_partition_root(c.oid)) END \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind = 'r' AND c.relpersistence = 'p' \
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
       AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp_' \
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
          WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') \
       AND (c.relreplident = 'n' \
         OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
              WHERE i.indrelid = c.oid AND i.indisprimary)) \
         OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
              WHERE i.indrelid = c.oid AND i.indisreplident))) \
     ORDER BY 3";

/// A table whose updates and deletes cannot be replicated as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeylessTable {
    /// Schema, as the catalog spells it.
    pub schema: String,
    /// Table name, as the catalog spells it.
    pub table: String,
    /// `schema.table` quoted for SQL.
    pub quoted: String,
    /// Its `relreplident` (`n`, `d` or `i`), to restore it afterwards.
    pub identity: char,
    /// The partitioned table it is a partition of (quoted), if any: a
    /// partition publishes through its root, so it cannot be left out.
    pub partition_of: Option<String>,
    /// That root's `relreplident`: published through the root, a FULL
    /// partition's old rows arrive under the root's identity, so the root
    /// needs FULL too.
    pub root_identity: Option<char>,
}

/// Reads every keyless table of the database behind `conn`.
pub async fn keyless_tables(conn: &mut Connection) -> Result<Vec<KeylessTable>, ConnError> {
    let rows = conn.simple_query(KEYLESS_SQL).await?;
    rows.iter()
        .map(|r| {
            let root = r.opt_str(4)?.and_then(|s| s.rsplit_once('|'));
            Ok(KeylessTable {
                schema: r.str(0)?.to_string(),
                table: r.str(1)?.to_string(),
                quoted: r.str(2)?.to_string(),
                identity: r.str(3)?.chars().next().unwrap_or('d'),
                partition_of: root.map(|(name, _)| name.to_string()),
                root_identity: root.and_then(|(_, i)| i.chars().next()),
            })
        })
        .collect()
}

/// What the policy makes of a database's keyless tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeylessPlan {
    /// Block the migration (mode `fail`).
    pub failing: Vec<KeylessTable>,
    /// `insert_only` partitions: refused, their root publishes them.
    pub partitions_insert_only: Vec<KeylessTable>,
    /// Published for inserts only.
    pub insert_only: Vec<KeylessTable>,
    /// Set to REPLICA IDENTITY FULL for the migration.
    pub full: Vec<KeylessTable>,
}

impl KeylessPlan {
    /// Sorts `tables` by the mode `policy` gives them.
    pub fn new(policy: &KeylessPolicy, tables: Vec<KeylessTable>) -> KeylessPlan {
        let mut plan = KeylessPlan::default();
        for t in tables {
            match policy.mode_for(&t.schema, &t.table) {
                KeylessMode::Fail => plan.failing.push(t),
                KeylessMode::InsertOnly if t.partition_of.is_some() => {
                    plan.partitions_insert_only.push(t)
                }
                KeylessMode::InsertOnly => plan.insert_only.push(t),
                KeylessMode::ReplicaIdentityFull => plan.full.push(t),
            }
        }
        plan
    }

    /// True when the migration can stream every keyless table as planned.
    pub fn is_runnable(&self) -> bool {
        self.failing.is_empty() && self.partitions_insert_only.is_empty()
    }
}

/// The inserts-only publication next to the main one named `main`.
pub fn insert_publication_name(main: &str) -> String {
    let mut base = main.to_string();
    base.truncate(63 - "_ins".len());
    format!("{base}_ins")
}

/// Creates `name` on the source database behind `conn` unless it exists,
/// leaving out the (quoted) `insert_only` tables; creates the inserts-only
/// publication for them when there are any.
pub async fn create(
    conn: &mut Connection,
    db: &str,
    name: &str,
    insert_only: &[String],
    filter: &TableFilter,
) -> Result<(), PublicationError> {
    if !exists(conn, db, name).await? {
        create_main(conn, db, name, insert_only, filter).await?;
    }
    let ins = insert_publication_name(name);
    if !insert_only.is_empty() && !exists(conn, db, &ins).await? {
        conn.execute(&format!(
            "CREATE PUBLICATION {} FOR TABLE {} WITH (publish = 'insert')",
            quote_ident(&ins),
            insert_only.join(", ")
        ))
        .await
        .map_err(|e| PublicationError::new(db, &format!("creating publication {ins}"), e))?;
    }
    Ok(())
}

async fn exists(conn: &mut Connection, db: &str, name: &str) -> Result<bool, PublicationError> {
    let rows = conn
        .simple_query(&format!(
            "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = {}",
            quote_literal(name)
        ))
        .await
        .map_err(|e| PublicationError::new(db, "looking up the publication", e))?;
    Ok(!rows.is_empty())
}

async fn create_main(
    conn: &mut Connection,
    db: &str,
    name: &str,
    insert_only: &[String],
    filter: &TableFilter,
) -> Result<(), PublicationError> {
    let superuser = conn
        .simple_query("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user")
        .await
        .map_err(|e| PublicationError::new(db, "reading role attributes", e))?
        .first()
        .and_then(|r| r.bool(0).ok())
        .unwrap_or(false);
    // publish_via_partition_root arrived in 13; a 12 source publishes
    // partitions as themselves, which exist under the same names on the
    // target.
    let via_root = conn.server_major() >= 13;
    let what = if superuser && insert_only.is_empty() {
        "FOR ALL TABLES".to_string()
    } else {
        let kinds = if via_root {
            "c.relkind IN ('r', 'p') AND NOT c.relispartition"
        } else {
            "c.relkind = 'r'"
        };
        let rows = conn
            .simple_query(&format!(
                "SELECT format('%I.%I', n.nspname, c.relname), n.nspname, c.relname FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE {kinds} AND c.relpersistence = 'p' \
                 AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' \
                 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass \
                                 AND d.objid = c.oid AND d.deptype = 'e') ORDER BY 1"
            ))
            .await
            .map_err(|e| PublicationError::new(db, "listing tables to publish", e))?;
        let left_out: std::collections::HashSet<&str> =
            insert_only.iter().map(String::as_str).collect();
        // FOR TABLE lists only migrated tables (FOR ALL TABLES keeps all,
        // the receiver drops the others' changes).
        let migrated = |r: &&crate::conn::Row| match (r.str(1), r.str(2)) {
            (Ok(s), Ok(t)) => filter.choice(s, t) == TableChoice::Migrate,
            _ => true,
        };
        let names: Vec<String> = rows
            .iter()
            .filter(migrated)
            .filter_map(|r| r.str(0).ok())
            .filter(|t| !left_out.contains(t))
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            // Nothing to publish yet; an empty publication still lets the
            // slot run (and ALTER PUBLICATION can add tables later).
            String::new()
        } else {
            format!("FOR TABLE {}", names.join(", "))
        }
    };
    let with = if via_root {
        " WITH (publish_via_partition_root = true)"
    } else {
        ""
    };
    conn.execute(&format!(
        "CREATE PUBLICATION {} {what}{with}",
        quote_ident(name)
    ))
    .await
    .map_err(|e| PublicationError::new(db, &format!("creating publication {name}"), e))?;
    Ok(())
}

/// Drops `name` if it exists; true when one was dropped.
pub async fn drop_if_exists(
    conn: &mut Connection,
    db: &str,
    name: &str,
) -> Result<bool, PublicationError> {
    let found = exists(conn, db, name).await?;
    if found {
        conn.execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(name)))
            .await
            .map_err(|e| PublicationError::new(db, &format!("dropping publication {name}"), e))?;
    }
    Ok(found)
}

/// `ALTER TABLE … REPLICA IDENTITY` to `identity` (`f` FULL, `n` NOTHING,
/// anything else DEFAULT: the `USING INDEX` of a keyless table named an
/// index that is gone, which DEFAULT matches). A table dropped meanwhile
/// is skipped; true when it was altered.
pub async fn set_identity(
    conn: &mut Connection,
    quoted: &str,
    identity: char,
) -> Result<bool, ConnError> {
    let present = conn
        .simple_query(&format!(
            "SELECT 1 WHERE pg_catalog.to_regclass({}) IS NOT NULL",
            quote_literal(quoted)
        ))
        .await?;
    if present.is_empty() {
        return Ok(false);
    }
    conn.execute(&format!(
        "ALTER TABLE {quoted} REPLICA IDENTITY {}",
        identity_keyword(identity)
    ))
    .await?;
    Ok(true)
}

/// The SQL keyword of a `relreplident`.
pub fn identity_keyword(identity: char) -> &'static str {
    match identity {
        'f' => "FULL",
        'n' => "NOTHING",
        _ => "DEFAULT",
    }
}
