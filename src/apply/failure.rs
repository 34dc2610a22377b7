//! What a failed apply statement means for the stream: whether trying the
//! same change again can succeed (a lost connection, a deadlock) or never
//! will (a value the target rejects, a column it lacks; decided in
//! [`crate::conn::retry`]), and how to name the change in the error an
//! operator reads.

use crate::conn::ConnError;
use crate::pgtypes;
use crate::protocol::lsn::Lsn;
use crate::protocol::pgoutput::{ColumnRef, TupleData};

use super::relation::RelationInfo;

/// A change the target refused, named: the statement, the table, the
/// row's identity and the transaction it belongs to.
#[derive(Debug, thiserror::Error)]
#[error("database {db}: apply worker {worker}: {what} table {table}, row {key}, in the transaction committed at {lsn}{more}: {source}")]
pub struct RefusedChange {
    /// Database.
    pub db: String,
    /// Worker index.
    pub worker: usize,
    /// `update of`, `insert into`, … (`set-based …` when many rows went together).
    pub what: String,
    /// `schema.table`.
    pub table: String,
    /// The row's identity (key columns, or every column under FULL).
    pub key: String,
    /// Commit LSN of the source transaction (the last one folded into the
    /// statement, when it carried several).
    pub lsn: Lsn,
    /// How many other rows the statement carried, said when not none.
    pub more: String,
    /// Commit LSN of the first transaction of the batch that failed: where
    /// this worker resumes, hence the position retries count at.
    pub batch_start: Lsn,
    /// The wire error.
    #[source]
    pub source: Box<ConnError>,
}

/// Longest text of one value in an error message.
const VALUE_LIMIT: usize = 64;

/// The identity of a row for an error message: `(k1, k2)=(v1, v2)` over
/// the key columns, or every column under FULL identity; values cut at
/// [`VALUE_LIMIT`] bytes, binary ones shown as hex.
pub fn describe_key(rel: &RelationInfo, tuple: &TupleData) -> String {
    let mut names = Vec::new();
    let mut values = Vec::new();
    for (c, v) in rel.columns.iter().zip(tuple.iter_ref()) {
        if !rel.full_identity() && !c.is_key {
            continue;
        }
        names.push(c.name.clone());
        values.push(match v {
            ColumnRef::Null => "NULL".to_string(),
            ColumnRef::UnchangedToast => "(unchanged)".to_string(),
            ColumnRef::Text(b) => cut(&String::from_utf8_lossy(b)),
            ColumnRef::Binary(b) => binary_value(c.type_oid, b),
        });
    }
    format!("({})=({})", names.join(", "), values.join(", "))
}

/// A binary value as text: integers and booleans as such, the rest as hex.
fn binary_value(type_oid: u32, b: &[u8]) -> String {
    let number = match type_oid {
        pgtypes::BOOL if b.len() == 1 => Some((b.first() != Some(&0)).to_string()),
        pgtypes::INT2 => <[u8; 2]>::try_from(b)
            .ok()
            .map(|a| i16::from_be_bytes(a).to_string()),
        pgtypes::INT4 => <[u8; 4]>::try_from(b)
            .ok()
            .map(|a| i32::from_be_bytes(a).to_string()),
        pgtypes::INT8 => <[u8; 8]>::try_from(b)
            .ok()
            .map(|a| i64::from_be_bytes(a).to_string()),
        _ => None,
    };
    match number {
        Some(n) => n,
        _ => {
            let hex: String = b
                .iter()
                .take(VALUE_LIMIT / 2)
                .map(|x| format!("{x:02x}"))
                .collect();
            format!(
                "\\x{hex}{}",
                if b.len() > VALUE_LIMIT / 2 { "…" } else { "" }
            )
        }
    }
}

fn cut(s: &str) -> String {
    if s.len() <= VALUE_LIMIT {
        return s.to_string();
    }
    let mut end = VALUE_LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_integers_read_as_numbers() {
        assert_eq!(binary_value(23, &3i32.to_be_bytes()), "3");
        assert_eq!(binary_value(20, &(-5i64).to_be_bytes()), "-5");
        assert_eq!(binary_value(16, &[1]), "true");
        assert_eq!(binary_value(17, &[0xab, 0x01]), "\\xab01");
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let s = "é".repeat(40);
        let c = cut(&s);
        assert!(c.ends_with('…') && c.len() <= VALUE_LIMIT + 3);
        assert_eq!(cut("short"), "short");
    }
}
