//! An independent comparison of two databases, in plain SQL through psql:
//! per table a row count and a hash over the sorted row hashes, plus large
//! objects, sequences and schema object counts. It shares no code with
//! `pgmigrate verify`, so the two can check each other.

use std::collections::BTreeMap;

use super::cluster::Cluster;

/// Everything compared, as `key -> value` lines.
pub fn fingerprint(c: &Cluster, db: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // An inheritance child's columns may lie in another order on the target
    // (pg_dump puts the parent's first): its rows are hashed by column name.
    let tables = c.psql(
        db,
        "SELECT format('%I.%I', n.nspname, c.relname) || ' ' || \
         (NOT c.relispartition AND EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid))::text \
         FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname !~ '^pg_toast' ORDER BY 1",
    );
    for line in tables.lines().filter(|l| !l.is_empty()) {
        let (t, child) = line.rsplit_once(' ').unwrap_or((line, "false"));
        let row = if child == "true" {
            "(SELECT string_agg(key || '=' || coalesce(value, 'NULL'), ',' ORDER BY key) \
             FROM jsonb_each_text(to_jsonb(t)))"
        } else {
            "t::text"
        };
        let v = c.psql(
            db,
            &format!(
                "SELECT count(*) || ' rows ' || md5(coalesce(string_agg(md5({row}), '' ORDER BY md5({row})), '')) FROM ONLY {t} t"
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
        // A partition's copy of its parent's trigger is internal before
        // 13 and not from 13 on: count only the parents' everywhere.
        ("triggers", if c.version() >= 13 {
            "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgparentid = 0"
        } else {
            "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal"
        }),
        ("views", "SELECT count(*) FROM pg_views WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"),
        ("matviews", "SELECT coalesce(string_agg(matviewname || ':' || ispopulated, ',' ORDER BY matviewname), '') FROM pg_matviews"),
        // The DDL capture's functions (schema `pgmigrate_…`) are the
        // source's only while a migration streams.
        ("functions", "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pgmigrate_'"),
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

/// `pg_dump --schema-only` of `db`, normalised for comparing two servers:
/// psql's `\restrict` keys dropped, and the column lines of an inheritance
/// child sorted (pg_dump recreates such a child with its parent's columns
/// first, so the physical order is not carried; see the README).
pub fn schema_dump(c: &Cluster, db: &str) -> String {
    let out = std::process::Command::new(c.client_bin_dir().join("pg_dump"))
        .args(["--schema-only", "--no-sync", "-h"])
        .arg(c.socket_dir())
        .args(["-p", &c.port().to_string(), "-U", "postgres", db])
        .output()
        .unwrap_or_else(|e| panic!("cannot run pg_dump: {e}"));
    assert!(
        out.status.success(),
        "pg_dump --schema-only {db}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    normalise_dump(&String::from_utf8_lossy(&out.stdout))
}

fn normalise_dump(dump: &str) -> String {
    let lines: Vec<&str> = dump.lines().filter(|l| !l.starts_with('\\')).collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        out.push(line.to_string());
        i += 1;
        if !line.starts_with("CREATE TABLE ") || !line.ends_with('(') {
            continue;
        }
        let start = i;
        while i < lines.len() && !lines[i].starts_with(')') {
            i += 1;
        }
        let inherits = lines
            .get(i + 1)
            .is_some_and(|l| l.starts_with("INHERITS ("));
        let mut body: Vec<String> = lines[start..i.min(lines.len())]
            .iter()
            .map(|l| l.trim_end_matches(',').to_string())
            .collect();
        if inherits
            && body
                .iter()
                .all(|l| l.starts_with("    ") && !l.contains("CONSTRAINT"))
        {
            body.sort();
        }
        out.extend(body);
    }
    out.join("\n")
}

/// Panics with a diff when the normalised schema dumps of `db` differ.
pub fn assert_same_schema(a: &Cluster, b: &Cluster, db: &str) {
    let (sa, sb) = (schema_dump(a, db), schema_dump(b, db));
    if sa == sb {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (pa, pb) = (dir.path().join("source.sql"), dir.path().join("target.sql"));
    std::fs::write(&pa, &sa).unwrap_or_else(|e| panic!("write: {e}"));
    std::fs::write(&pb, &sb).unwrap_or_else(|e| panic!("write: {e}"));
    let diff = std::process::Command::new("diff")
        .arg("-u")
        .arg(&pa)
        .arg(&pb)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let head: Vec<&str> = diff.lines().take(120).collect();
    panic!(
        "schema of {db} differs (pg_dump --schema-only, source vs target):\n{}",
        head.join("\n")
    );
}
