//! The types of a replicated table's columns as the target has them: the
//! parameter type each statement declares for a column, and which columns
//! a REPLICA IDENTITY FULL match must compare by text form.
//!
//! Parameters are typed because an untyped one is resolved from its
//! context, and some contexts cannot resolve: `WHERE "k" = $1` with a
//! composite `k` fails with `0A000 input of anonymous composite types is
//! not implemented`, and the stream would never get past that row.

use crate::conn::{ConnError, Connection, Param};
use crate::pgtypes::{lacking_equality_sql, FIRST_NORMAL_OID};

use super::relation::RelationInfo;

/// Per column of a relation (in the order tuples carry them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnTypes {
    /// The OID each parameter carrying this column is declared as: the
    /// source's OID for a built-in type (the same everywhere, and what a
    /// binary value is encoded as), else the target column's own type
    /// (a user type has another OID there); 0 when the target lacks the
    /// column, leaving the server to report that.
    pub param_types: Vec<u32>,
    /// The column's type, or something inside it (a composite's field, an
    /// array's element, a domain's base), has no equality operator that
    /// `IS NOT DISTINCT FROM` could use.
    pub text_match: Vec<bool>,
}

impl ColumnTypes {
    /// Reads the target's column types of `rel` (named `rel.qualified`).
    pub async fn read(conn: &mut Connection, rel: &RelationInfo) -> Result<ColumnTypes, ConnError> {
        let table = Param::Text(&rel.qualified);
        let rows = conn
            .query(
                "SELECT a.attname, a.atttypid::int8 FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                &[table],
            )
            .await?;
        let lacking = conn
            .query(
                &format!(
                    "WITH RECURSIVE roots(key, typ) AS ( \
                       SELECT a.attname::text, a.atttypid FROM pg_catalog.pg_attribute a \
                       WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped), {}",
                    lacking_equality_sql()
                ),
                &[table],
            )
            .await?;
        let lacking: Vec<&str> = lacking.iter().filter_map(|r| r.str(0).ok()).collect();
        let mut out = ColumnTypes::default();
        for c in &rel.columns {
            let row = rows.iter().find(|r| r.str(0).ok() == Some(c.name.as_str()));
            let target_type = row.and_then(|r| r.parse::<u32>(1).ok()).unwrap_or_default();
            out.param_types.push(param_type(c.type_oid, target_type));
            out.text_match.push(lacking.contains(&c.name.as_str()));
        }
        Ok(out)
    }

    /// The declared types of the columns in `cols`, in that order.
    pub fn of(&self, cols: impl Iterator<Item = usize>) -> Vec<u32> {
        cols.map(|i| self.param_types.get(i).copied().unwrap_or(0))
            .collect()
    }
}

/// The parameter type for a column of source type `source` that is of
/// type `target` on the target.
fn param_type(source: u32, target: u32) -> u32 {
    if source < FIRST_NORMAL_OID {
        source
    } else {
        target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_types_keep_the_source_oid_user_types_take_the_target_one() {
        assert_eq!(param_type(23, 20), 23);
        assert_eq!(param_type(16_500, 17_200), 17_200);
        assert_eq!(param_type(16_500, 0), 0);
    }

    #[test]
    fn types_of_selected_columns() {
        let t = ColumnTypes {
            param_types: vec![23, 17_000, 25],
            ..ColumnTypes::default()
        };
        assert_eq!(t.of([2, 0, 7].into_iter()), vec![25, 23, 0]);
    }
}
