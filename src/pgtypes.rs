//! Everything pgmigrate knows about PostgreSQL type OIDs, in one place:
//! which built-in types travel in binary between servers, which key types
//! compare by their bytes, and which lack an equality operator that record
//! and array comparison can use. User types (composites, domains, arrays
//! of them, ranges) are judged by asking a server's catalog what they are
//! made of, never by copying its tables into ours.

/// `bool`.
pub const BOOL: u32 = 16;
/// `bytea`.
pub const BYTEA: u32 = 17;
/// `int8`.
pub const INT8: u32 = 20;
/// `int2`.
pub const INT2: u32 = 21;
/// `int4`.
pub const INT4: u32 = 23;
/// `text`.
pub const TEXT: u32 = 25;
/// `varchar`.
pub const VARCHAR: u32 = 1043;

/// First OID assigned to user objects: everything below is built in and
/// has the same OID, and the same binary format, on every server version.
pub const FIRST_NORMAL_OID: u32 = 16384;

/// Built-in types whose binary form carries OIDs that differ between
/// servers (reg* types and their arrays): these must travel as text.
pub const OID_BEARING_TYPES: &[u32] = &[
    24, 2202, 2203, 2204, 2205, 2206, 3734, 3769, 4089, 4096, 4191, // reg*
    1008, 2207, 2208, 2209, 2210, 2211, 3735, 3770, 4090, 4097, 4192, // their arrays
];

/// Whether the stream may carry a column of `type_oid` in binary: one
/// binary form on every server, and an equality a REPLICA IDENTITY FULL
/// match can use.
pub fn streams_in_binary(type_oid: u32) -> bool {
    type_binary_safe(type_oid) && !NO_EQUALITY.contains(&type_oid)
}

/// True when values of the type have the same binary form on every server
/// (built in, and carrying no OIDs).
pub fn type_binary_safe(type_oid: u32) -> bool {
    type_oid < FIRST_NORMAL_OID && !OID_BEARING_TYPES.contains(&type_oid)
}

/// Built-in types without a usable equality operator (or whose `=` is not
/// identity, like box's area comparison), with their arrays: REPLICA
/// IDENTITY FULL matches them by their text form instead, as it does any
/// column the target's catalog says lacks one inside
/// ([`lacking_equality_sql`]).
pub const NO_EQUALITY: &[u32] = &[
    114, 142, 600, 601, 602, 603, 604, 628,
    718, // json xml point lseg path box polygon line circle
    199, 143, 1017, 1018, 1019, 1020, 1027, 629, 719, // and their arrays
];

/// Key types whose byte form (text or binary, as pgoutput sends it) is
/// equal exactly when the values are: two changes name the same row iff
/// their key bytes match. numeric (1.0 = 1.00), floats (0 = -0), citext
/// and the like are not. text and varchar ([`COLLATABLE_KEY_TYPES`])
/// qualify only under a deterministic collation.
pub const BYTE_EQUAL_KEY_TYPES: &[u32] = &[
    BOOL, BYTEA, INT8, INT2, INT4, TEXT, 26, VARCHAR, 1082, 1114, 1184,
    2950,
    // bool bytea int8 int2 int4 text oid varchar date timestamp timestamptz uuid
];

/// The collatable types among [`BYTE_EQUAL_KEY_TYPES`].
pub const COLLATABLE_KEY_TYPES: &[u32] = &[TEXT, VARCHAR];

/// Built-in types that lack a usable equality, or whose `=` is not
/// identity (box and circle compare areas; xml has none even where it is
/// binary-coercible to text): a row holding one is matched by text form.
pub const NO_EQUALITY_LEAVES: &[u32] = &[
    114, 142, 600, 601, 602, 603, 604, 628, 718, 1790, 2970, 4072,
    5038,
    // json xml point lseg path box polygon line circle refcursor
    // txid_snapshot jsonpath pg_snapshot
];

/// A recursive query over `pg_type` that walks every column type named by
/// the CTE `roots(key, typ)` down to its leaves (a domain to its base
/// type, an array to its element, a composite to its attributes, a range
/// to its subtype) and yields `(key)` for every root that reaches a base
/// type without equality: `record_eq` and `array_eq` need one for each
/// leaf, found through a default btree or hash operator class of the type
/// itself or of one it is binary-coercible to.
///
/// The caller prepends `WITH RECURSIVE roots(key, typ) AS (…),` and
/// appends nothing; the query selects `DISTINCT key`.
pub fn lacking_equality_sql() -> String {
    let leaves: Vec<String> = NO_EQUALITY_LEAVES.iter().map(u32::to_string).collect();
    format!(
        "walk(key, typ, depth) AS ( \
           SELECT key, typ, 0 FROM roots \
           UNION ALL \
           SELECT w.key, x.child, w.depth + 1 \
           FROM walk w JOIN pg_catalog.pg_type t ON t.oid = w.typ \
           CROSS JOIN LATERAL ( \
             SELECT t.typbasetype WHERE t.typtype = 'd' \
             UNION ALL SELECT t.typelem WHERE t.typcategory = 'A' AND t.typelem <> 0 \
             UNION ALL SELECT s.atttypid FROM pg_catalog.pg_attribute s \
               WHERE t.typtype = 'c' AND s.attrelid = t.typrelid AND s.attnum > 0 AND NOT s.attisdropped \
             UNION ALL SELECT r.rngsubtype FROM pg_catalog.pg_range r \
               WHERE t.typtype = 'r' AND r.rngtypid = t.oid \
           ) x(child) \
           WHERE w.depth < 32) \
         SELECT DISTINCT w.key FROM walk w JOIN pg_catalog.pg_type t ON t.oid = w.typ \
         WHERE t.typtype = 'b' AND t.typcategory <> 'A' \
           AND (t.oid IN ({leaves}) OR NOT EXISTS ( \
             SELECT 1 FROM pg_catalog.pg_opclass o JOIN pg_catalog.pg_am m ON m.oid = o.opcmethod \
             WHERE m.amname IN ('btree', 'hash') AND o.opcdefault \
               AND (o.opcintype = t.oid OR EXISTS ( \
                 SELECT 1 FROM pg_catalog.pg_cast c \
                 WHERE c.castsource = t.oid AND c.casttarget = o.opcintype AND c.castmethod = 'b'))))",
        leaves = leaves.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_types_without_oids_travel_in_binary() {
        assert!(type_binary_safe(INT4));
        assert!(!type_binary_safe(24)); // regproc
        assert!(!type_binary_safe(FIRST_NORMAL_OID));
        assert!(COLLATABLE_KEY_TYPES
            .iter()
            .all(|t| BYTE_EQUAL_KEY_TYPES.contains(t)));
    }

    #[test]
    fn the_walk_names_every_leaf_and_only_selects_keys() {
        let sql = lacking_equality_sql();
        assert!(sql.contains("114, 142, 600"));
        assert!(sql.contains("SELECT DISTINCT w.key"));
        assert!(sql.starts_with("walk(key, typ, depth) AS ("));
    }
}
