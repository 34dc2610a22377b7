//! An independent comparison of two databases, in plain SQL through psql:
//! per table a row count and a hash over the sorted row hashes, plus large
//! objects, sequences and schema object counts. It shares no code with
//! `pgmigrate verify`, so the two can check each other.

use std::collections::BTreeMap;

use super::cluster::Cluster;

/// Everything compared, as `key -> value` lines.
pub fn fingerprint(c: &Cluster, db: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let tables = c.psql(
        db,
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname !~ '^pg_toast' ORDER BY 1",
    );
    for t in tables.lines().filter(|l| !l.is_empty()) {
        let v = c.psql(
            db,
            &format!(
                "SELECT count(*) || ' rows ' || md5(coalesce(string_agg(md5(t::text), '' ORDER BY md5(t::text)), '')) FROM ONLY {t} t"
            ),
        );
        out.insert(format!("table {t}"), v);
    }
    let lo = c.psql(
        db,
        "SELECT count(*) || ' ' || coalesce(md5(string_agg(md5(lo_get(oid)), ',' ORDER BY oid)), '') FROM pg_largeobject_metadata",
    );
    out.insert("large objects".into(), lo);
    for (key, sql) in [
        ("sequences", "SELECT coalesce(string_agg(schemaname || '.' || sequencename || '=' || coalesce(last_value::text, 'null'), ',' ORDER BY schemaname, sequencename), '') FROM pg_sequences"),
        ("indexes", "SELECT count(*) FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog')"),
        ("constraints", "SELECT coalesce(string_agg(contype || '=' || n, ',' ORDER BY contype), '') FROM (SELECT contype::text, count(*) n FROM pg_constraint c JOIN pg_namespace s ON s.oid = c.connamespace WHERE s.nspname NOT IN ('pg_catalog', 'information_schema') AND contype <> 'n' GROUP BY 1) x"),
        ("triggers", "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal"),
        ("views", "SELECT count(*) FROM pg_views WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"),
        ("matviews", "SELECT coalesce(string_agg(matviewname || ':' || ispopulated, ','), '') FROM pg_matviews"),
        ("functions", "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"),
        ("extensions", "SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension"),
    ] {
        out.insert(key.to_string(), c.psql(db, sql));
    }
    out
}

/// Panics with every difference between `db` on `a` and on `b`.
pub fn assert_same(a: &Cluster, b: &Cluster, db: &str) {
    assert_same_except(a, b, db, &[]);
}

/// Like [`assert_same`], leaving out the keys in `skip` (e.g. "sequences",
/// which an online migration only syncs at cutover).
pub fn assert_same_except(a: &Cluster, b: &Cluster, db: &str, skip: &[&str]) {
    let (mut fa, mut fb) = (fingerprint(a, db), fingerprint(b, db));
    for k in skip {
        fa.remove(*k);
        fb.remove(*k);
    }
    let mut diffs = Vec::new();
    for (k, v) in &fa {
        match fb.get(k) {
            Some(w) if w == v => {}
            Some(w) => diffs.push(format!("{k}: source {v:?} target {w:?}")),
            None => diffs.push(format!("{k}: missing on the target")),
        }
    }
    for k in fb.keys().filter(|k| !fa.contains_key(*k)) {
        diffs.push(format!("{k}: only on the target"));
    }
    assert!(
        diffs.is_empty(),
        "database {db} differs:\n{}",
        diffs.join("\n")
    );
}
