//! What we know about PostgreSQL types that decides how a replicated row
//! can be found again: which types have an equality operator that record
//! and array comparison can use. Asked of a server's catalog, never copied
//! into our own tables, so user types (composites, domains, arrays of
//! them, ranges) are judged by what they are made of.

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

/// Types below this OID are built in, hence the same on every server.
pub const FIRST_NORMAL_OID: u32 = 16384;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_names_every_leaf_and_only_selects_keys() {
        let sql = lacking_equality_sql();
        assert!(sql.contains("114, 142, 600"));
        assert!(sql.contains("SELECT DISTINCT w.key"));
        assert!(sql.starts_with("walk(key, typ, depth) AS ("));
    }
}
