//! What apply must know of a replicated table on the target before
//! choosing how to write to it, read once per table and schema version.

use std::sync::Arc;

use crate::conn::{ConnError, Connection, Param};

use crate::pgtypes::{BYTE_EQUAL_KEY_TYPES, COLLATABLE_KEY_TYPES, FIRST_NORMAL_OID};

use super::column_types::ColumnTypes;
use super::relation::RelationInfo;

/// How apply may write a table.
#[derive(Debug)]
pub struct TargetTable {
    /// Per column: GENERATED ALWAYS AS IDENTITY on the target (an UPDATE
    /// cannot set it).
    pub always_identity: Arc<[bool]>,
    /// Changes may be folded per key inside a target transaction (see
    /// [`super::window`]).
    pub foldable: bool,
    /// A plain table (not partitioned): UPDATE and DELETE name it with
    /// ONLY.
    pub only: bool,
    /// Per column, the array type for set-based statements; `None` when a
    /// column's type is not built in (its OID differs on the target), has
    /// no array type, or is composite (`unnest` would expand it into its
    /// fields).
    pub array_types: Option<Vec<u32>>,
    /// Per column: the declared parameter type, and whether a FULL
    /// identity match compares it by text.
    pub types: ColumnTypes,
}

impl TargetTable {
    /// Reads the table's columns, indexes, triggers and types on the target.
    pub async fn read(conn: &mut Connection, rel: &RelationInfo) -> Result<TargetTable, ConnError> {
        let table = Param::Text(&rel.qualified);
        let attrs = conn
            .query(
                "SELECT a.attname, a.attidentity = 'a', \
                        COALESCE(c.collisdeterministic, true) \
                 FROM pg_catalog.pg_attribute a \
                 LEFT JOIN pg_catalog.pg_collation c ON c.oid = a.attcollation \
                 WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                &[table],
            )
            .await?;
        let find = |name: &str| attrs.iter().find(|r| r.str(0).ok() == Some(name));
        let always: Vec<bool> = rel
            .columns
            .iter()
            .map(|c| find(&c.name).is_some_and(|r| r.bool(1).unwrap_or(false)))
            .collect();
        let keys_byte_equal = rel.columns.iter().any(|c| c.is_key)
            && rel.columns.iter().filter(|c| c.is_key).all(|c| {
                BYTE_EQUAL_KEY_TYPES.contains(&c.type_oid)
                    && (!COLLATABLE_KEY_TYPES.contains(&c.type_oid)
                        || find(&c.name).is_some_and(|r| r.bool(2).unwrap_or(false)))
            });
        // Unique indexes and exclusion constraints other than the one the
        // identity uses, and triggers that fire for replicated rows, on the
        // table or any partition of it (pg_partition_tree lists nothing for
        // a table that is not partitioned).
        let by_index = rel.identity == crate::protocol::pgoutput::ReplicaIdentity::Index;
        let others = conn
            .query(
                "SELECT (SELECT count(*) FROM pg_catalog.pg_index i \
                         WHERE (i.indrelid = $1::regclass OR i.indrelid IN (SELECT relid FROM pg_catalog.pg_partition_tree($1::regclass))) \
                           AND (i.indisexclusion OR (i.indisunique AND NOT \
                                CASE WHEN $2::bool THEN i.indisreplident ELSE i.indisprimary END))), \
                        (SELECT count(*) FROM pg_catalog.pg_trigger g \
                         WHERE (g.tgrelid = $1::regclass OR g.tgrelid IN (SELECT relid FROM pg_catalog.pg_partition_tree($1::regclass))) \
                           AND NOT g.tgisinternal AND g.tgenabled IN ('A', 'R')), \
                        (SELECT c.relkind = 'r' FROM pg_catalog.pg_class c WHERE c.oid = $1::regclass)",
                &[table, Param::Text(if by_index { "true" } else { "false" })],
            )
            .await?;
        let none_other = others
            .first()
            .is_some_and(|r| r.str(0).ok() == Some("0") && r.str(1).ok() == Some("0"));
        let foldable = !rel.full_identity() && keys_byte_equal && none_other;
        let only = others.first().is_some_and(|r| r.bool(2).unwrap_or(false));

        let array_types = if rel.columns.iter().all(|c| c.type_oid < FIRST_NORMAL_OID) {
            let oids: Vec<String> = rel.columns.iter().map(|c| c.type_oid.to_string()).collect();
            let list = format!("{{{}}}", oids.join(","));
            let rows = conn
                .query(
                    "SELECT oid::int8, typarray::int8, typdelim = ',' AND typtype <> 'c' FROM pg_catalog.pg_type \
                     WHERE oid = ANY($1::oid[])",
                    &[Param::Text(&list)],
                )
                .await?;
            let mut types = Vec::with_capacity(rel.columns.len());
            for c in &rel.columns {
                let row = rows.iter().find(|r| {
                    r.str(0).ok().and_then(|s| s.parse::<u32>().ok()) == Some(c.type_oid)
                });
                match row {
                    Some(r) if r.bool(2).unwrap_or(false) => {
                        match r.str(1).ok().and_then(|s| s.parse::<u32>().ok()) {
                            Some(a) if a != 0 => types.push(a),
                            _ => break,
                        }
                    }
                    _ => break,
                }
            }
            (types.len() == rel.columns.len()).then_some(types)
        } else {
            None
        };
        let types = ColumnTypes::read(conn, rel).await?;
        Ok(TargetTable {
            always_identity: always.into(),
            foldable,
            only,
            array_types,
            types,
        })
    }
}
