//! What apply knows of a source table: its name and columns as the latest
//! Relation message described them, shared by the router and the workers.

use std::sync::Arc;

use crate::conn::quote_ident;
use crate::protocol::lsn::RelationId;
use crate::protocol::pgoutput::{Relation, ReplicaIdentity};

/// One column of a replicated table.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Type OID on the source.
    pub type_oid: u32,
    /// Part of the replica identity.
    pub is_key: bool,
}

/// A replicated table, as of its latest Relation message.
#[derive(Debug)]
pub struct RelationInfo {
    /// Source OID.
    pub id: RelationId,
    /// Bumped on every Relation message so cached statements are rebuilt
    /// when a table's columns change.
    pub version: u64,
    /// Schema.
    pub schema: String,
    /// Table.
    pub name: String,
    /// `"schema"."table"`.
    pub qualified: String,
    /// Columns in the order tuples carry them.
    pub columns: Vec<ColumnInfo>,
    /// How updates and deletes identify the old row.
    pub identity: ReplicaIdentity,
}

impl RelationInfo {
    /// Builds the shared description from a decoded Relation message.
    pub fn from_message(rel: &Relation, version: u64) -> Arc<RelationInfo> {
        Arc::new(RelationInfo {
            id: rel.relation_id,
            version,
            schema: rel.namespace.clone(),
            name: rel.name.clone(),
            qualified: format!("{}.{}", quote_ident(&rel.namespace), quote_ident(&rel.name)),
            columns: rel
                .columns
                .iter()
                .map(|c| ColumnInfo {
                    name: c.name.clone(),
                    type_oid: c.type_oid.0,
                    is_key: c.is_key,
                })
                .collect(),
            identity: rel.replica_identity,
        })
    }

    /// `schema.table` for messages.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// True when updates and deletes carry the whole old row.
    pub fn full_identity(&self) -> bool {
        self.identity == ReplicaIdentity::Full
    }
}

/// A table `"s"."t"` with the given `(name, type OID, is key)` columns, for
/// unit tests of what is built from a relation.
#[cfg(test)]
pub(crate) fn sample(identity: ReplicaIdentity, columns: &[(&str, u32, bool)]) -> RelationInfo {
    RelationInfo {
        id: RelationId(1),
        version: 1,
        schema: "s".into(),
        name: "t".into(),
        qualified: "\"s\".\"t\"".into(),
        columns: columns
            .iter()
            .map(|&(name, type_oid, is_key)| ColumnInfo {
                name: name.into(),
                type_oid,
                is_key,
            })
            .collect(),
        identity,
    }
}
