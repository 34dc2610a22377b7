//! The logical replication slot whose exported snapshot every copy stream
//! imports: copy and change stream meet exactly at its consistent LSN.

use crate::conn::{quote_literal, ConnectParams, Connection};

use super::CopyError;

/// A slot just created, with its snapshot still exported. The snapshot
/// lives only while `conn` stays idle: import it everywhere first.
pub struct ExportedSnapshot {
    /// The replication session that created the slot.
    pub conn: Connection,
    /// Slot name.
    pub slot_name: String,
    /// Name to pass to `SET TRANSACTION SNAPSHOT` and `pg_dump --snapshot`.
    pub snapshot_name: String,
    /// LSN from which the slot's changes follow the snapshot, `X/Y`.
    pub consistent_lsn: String,
}

/// Slot (and publication/origin) name for one database of a migration:
/// lower-case letters, digits and `_`, at most 63 bytes, stable across
/// restarts (the database OID keeps two databases apart).
pub fn object_name(migration: &str, db_oid: u32) -> String {
    let mut base: String = migration
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let suffix = format!("_{db_oid}");
    base.truncate(63 - "pgmigrate_".len() - suffix.len());
    format!("pgmigrate_{base}{suffix}")
}

/// Creates a pgoutput slot and exports its snapshot. A temporary slot
/// disappears with the session, so a crash leaves nothing on the source.
pub async fn create(
    params: &ConnectParams,
    db: &str,
    slot_name: &str,
    temporary: bool,
) -> Result<ExportedSnapshot, CopyError> {
    let mut p = params.clone();
    p.replication = true;
    let mut conn = Connection::connect(&p)
        .await
        .map_err(|e| CopyError::source(db, "opening a replication session", e))?;
    let sql = format!(
        "CREATE_REPLICATION_SLOT {slot_name} {}LOGICAL pgoutput EXPORT_SNAPSHOT",
        if temporary { "TEMPORARY " } else { "" }
    );
    let rows = conn
        .simple_query(&sql)
        .await
        .map_err(|e| CopyError::source(db, &format!("creating replication slot {slot_name}"), e))?;
    let row = rows.first().ok_or_else(|| CopyError::Unexpected {
        db: db.to_string(),
        message: "CREATE_REPLICATION_SLOT returned no row".into(),
    })?;
    let get = |i| {
        row.str(i)
            .map(str::to_string)
            .map_err(|e| CopyError::source(db, "reading CREATE_REPLICATION_SLOT result", e))
    };
    Ok(ExportedSnapshot {
        slot_name: get(0)?,
        consistent_lsn: get(1)?,
        snapshot_name: get(2)?,
        conn,
    })
}

/// Drops a slot from a normal session if it exists; true when one was dropped.
pub async fn drop_if_exists(
    conn: &mut Connection,
    db: &str,
    slot_name: &str,
) -> Result<bool, CopyError> {
    let rows = conn
        .simple_query(&format!(
            "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
            quote_literal(slot_name)
        ))
        .await
        .map_err(|e| CopyError::source(db, &format!("dropping replication slot {slot_name}"), e))?;
    Ok(!rows.is_empty())
}

/// Opens `BEGIN ISOLATION LEVEL REPEATABLE READ` on `conn` with the
/// exported snapshot, so it sees exactly what the slot's snapshot saw.
pub async fn import(conn: &mut Connection, db: &str, snapshot_name: &str) -> Result<(), CopyError> {
    conn.execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
        quote_literal(snapshot_name)
    ))
    .await
    .map_err(|e| CopyError::source(db, "importing the exported snapshot", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::object_name;

    #[test]
    fn names_are_valid_slot_names() {
        assert_eq!(
            object_name("orders-2026", 16384),
            "pgmigrate_orders_2026_16384"
        );
        let long = object_name(&"X".repeat(100), 4_000_000_000);
        assert!(long.len() <= 63);
        assert!(long
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
    }
}
