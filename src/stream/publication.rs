//! The publication the slot decodes through: FOR ALL TABLES where the role
//! may, else FOR TABLE with every table; partitioned tables publish under
//! their root so each table has one name on both sides.

use crate::conn::{quote_ident, quote_literal, Connection};
use crate::copy::CopyError;

/// Creates `name` on the source database behind `conn` unless it exists.
pub async fn create(conn: &mut Connection, db: &str, name: &str) -> Result<(), CopyError> {
    let exists = conn
        .simple_query(&format!(
            "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = {}",
            quote_literal(name)
        ))
        .await
        .map_err(|e| CopyError::source(db, "looking up the publication", e))?;
    if !exists.is_empty() {
        return Ok(());
    }
    let superuser = conn
        .simple_query("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user")
        .await
        .map_err(|e| CopyError::source(db, "reading role attributes", e))?
        .first()
        .and_then(|r| r.bool(0).ok())
        .unwrap_or(false);
    // publish_via_partition_root arrived in 13; a 12 source publishes
    // partitions as themselves, which exist under the same names on the
    // target.
    let via_root = conn.server_major() >= 13;
    let what = if superuser {
        "FOR ALL TABLES".to_string()
    } else {
        let kinds = if via_root {
            "c.relkind IN ('r', 'p') AND NOT c.relispartition"
        } else {
            "c.relkind = 'r'"
        };
        let rows = conn
            .simple_query(&format!(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE {kinds} AND c.relpersistence = 'p' \
                 AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' \
                 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass \
                                 AND d.objid = c.oid AND d.deptype = 'e') ORDER BY 1"
            ))
            .await
            .map_err(|e| CopyError::source(db, "listing tables to publish", e))?;
        let names: Vec<String> = rows
            .iter()
            .filter_map(|r| r.str(0).ok().map(str::to_string))
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
    .map_err(|e| CopyError::source(db, &format!("creating publication {name}"), e))?;
    Ok(())
}

/// Drops `name` if it exists; true when one was dropped.
pub async fn drop_if_exists(
    conn: &mut Connection,
    db: &str,
    name: &str,
) -> Result<bool, CopyError> {
    let n = conn
        .simple_query(&format!(
            "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = {}",
            quote_literal(name)
        ))
        .await
        .map_err(|e| CopyError::source(db, "looking up the publication", e))?
        .len();
    if n > 0 {
        conn.execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(name)))
            .await
            .map_err(|e| CopyError::source(db, &format!("dropping publication {name}"), e))?;
    }
    Ok(n > 0)
}
