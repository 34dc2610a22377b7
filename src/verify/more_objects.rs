//! The object kinds pg_dump carries beyond tables, types and functions:
//! policies and row-level security, rules, publications, operators, casts,
//! event triggers, default and object privileges, comments, extension
//! versions, and the rest of the catalog objects a schema may hold. Where
//! an object has content that could differ (a policy's expression, a
//! comment's text, a grant), its name carries a short digest of it, so a
//! different content shows as the object missing on one side and another
//! version of it present.
//!
//! What pg_dump itself never carries is left out on both sides: shell
//! operators (named as a commutator, never defined), a grant list equal to
//! the owner's default, comments on objects that no longer exist, and
//! subscriptions (not migrated; validation says so).

use crate::copy::catalog::USER_RELATION;

/// Further kinds compared, as (plural kind, singular to name one object).
pub const MORE_KINDS: &[(&str, &str)] = &[
    ("policies", "policy"),
    ("row level security", "row level security on"),
    ("rules", "rule"),
    ("publications", "publication"),
    ("publication members", "publication member"),
    ("operators", "operator"),
    ("operator classes", "operator class"),
    ("operator families", "operator family"),
    ("casts", "cast"),
    ("collations", "collation"),
    ("conversions", "conversion"),
    ("text search objects", "text search object"),
    ("statistics objects", "statistics object"),
    ("foreign servers", "foreign server"),
    ("foreign-data wrappers", "foreign-data wrapper"),
    ("languages", "language"),
    ("access methods", "access method"),
    ("event triggers", "event trigger"),
    ("default privileges", "default privileges"),
    ("table privileges", "privileges on"),
    ("column privileges", "column privileges on"),
    ("comments", "comment on"),
    ("extension versions", "extension"),
    ("large objects", "large object"),
];

/// Objects created by users: OIDs from FirstNormalObjectId on.
const USER_OID: u32 = 16384;

/// Our own publications (`pgmigrate_<migration>_<db oid>`) exist on the
/// source only while a migration streams.
const NOT_OURS: &str = "p.pubname NOT LIKE 'pgmigrate\\_%'";

/// SQL for a short digest of `expr`, appended to an object's name.
fn digest(expr: &str) -> String {
    format!("' (' || left(md5({expr}), 8) || ')'")
}

/// One query naming these objects with their kind.
pub fn more_objects_sql(server_major: u32) -> String {
    format!(
        "{} UNION ALL {}",
        table_objects_sql(server_major),
        catalog_objects_sql()
    )
}

/// Objects on tables: policies, RLS flags, rules, publications, grants.
fn table_objects_sql(server_major: u32) -> String {
    let schema_members = if server_major >= 15 {
        format!(
            " UNION ALL SELECT 'publication members', p.pubname || ': schema ' || n.nspname \
               FROM pg_catalog.pg_publication_namespace pn \
               JOIN pg_catalog.pg_publication p ON p.oid = pn.pnpubid \
               JOIN pg_catalog.pg_namespace n ON n.oid = pn.pnnspid WHERE {NOT_OURS}"
        )
    } else {
        String::new()
    };
    let policy = digest(
        "p.polcmd::text || p.polpermissive::text || p.polroles::regrole[]::text || \
         coalesce(pg_catalog.pg_get_expr(p.polqual, p.polrelid), '') || '/' || \
         coalesce(pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid), '')",
    );
    let rule = digest("pg_catalog.pg_get_ruledef(r.oid)");
    format!(
        "SELECT 'policies', p.polname || ' on ' || n.nspname || '.' || c.relname || {policy} \
           FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {USER_RELATION} \
         UNION ALL \
         SELECT 'row level security', n.nspname || '.' || c.relname || \
                CASE WHEN c.relrowsecurity THEN ' enabled' ELSE '' END || \
                CASE WHEN c.relforcerowsecurity THEN ' forced' ELSE '' END \
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           WHERE (c.relrowsecurity OR c.relforcerowsecurity) AND {USER_RELATION} \
         UNION ALL \
         SELECT 'rules', r.rulename || ' on ' || n.nspname || '.' || c.relname || {rule} \
           FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           WHERE r.rulename <> '_RETURN' AND {USER_RELATION} \
         UNION ALL \
         SELECT 'publications', p.pubname || ' (' || concat_ws(',', \
                CASE WHEN p.puballtables THEN 'all tables' END, \
                CASE WHEN p.pubinsert THEN 'insert' END, CASE WHEN p.pubupdate THEN 'update' END, \
                CASE WHEN p.pubdelete THEN 'delete' END, CASE WHEN p.pubtruncate THEN 'truncate' END) || ')' \
           FROM pg_catalog.pg_publication p WHERE {NOT_OURS} \
         UNION ALL \
         SELECT 'publication members', p.pubname || ': ' || n.nspname || '.' || c.relname \
           FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid \
           JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {NOT_OURS}{schema_members}"
    )
}

/// Objects of the database's catalog: operators, casts, collations, …,
/// privileges, comments and extension versions.
fn catalog_objects_sql() -> String {
    let acl = digest("c.relacl::text");
    let col_acl = digest("a.attacl::text");
    let def_acl = digest("d.defaclacl::text");
    let comment = digest("d.description");
    format!(
        "SELECT 'operators', o.oid::regoperator::text FROM pg_catalog.pg_operator o WHERE o.oid >= {USER_OID} AND o.oprcode <> 0 \
         UNION ALL \
         SELECT 'operator classes', n.nspname || '.' || o.opcname || ' using ' || a.amname \
           FROM pg_catalog.pg_opclass o JOIN pg_catalog.pg_am a ON a.oid = o.opcmethod \
           JOIN pg_catalog.pg_namespace n ON n.oid = o.opcnamespace WHERE o.oid >= {USER_OID} \
         UNION ALL \
         SELECT 'operator families', n.nspname || '.' || o.opfname || ' using ' || a.amname \
           FROM pg_catalog.pg_opfamily o JOIN pg_catalog.pg_am a ON a.oid = o.opfmethod \
           JOIN pg_catalog.pg_namespace n ON n.oid = o.opfnamespace WHERE o.oid >= {USER_OID} \
         UNION ALL \
         SELECT 'casts', pg_catalog.format_type(c.castsource, NULL) || ' as ' || \
                pg_catalog.format_type(c.casttarget, NULL) || ' (' || c.castcontext::text || c.castmethod::text || ')' \
           FROM pg_catalog.pg_cast c WHERE c.oid >= {USER_OID} \
         UNION ALL \
         SELECT 'collations', n.nspname || '.' || c.collname FROM pg_catalog.pg_collation c \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.collnamespace WHERE c.oid >= {USER_OID} \
         UNION ALL \
         SELECT 'conversions', n.nspname || '.' || c.conname FROM pg_catalog.pg_conversion c \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.connamespace WHERE c.oid >= {USER_OID} \
         UNION ALL \
         SELECT 'text search objects', 'configuration ' || c.oid::regconfig::text \
           FROM pg_catalog.pg_ts_config c WHERE c.oid >= {USER_OID} \
         UNION ALL \
         SELECT 'text search objects', 'dictionary ' || d.oid::regdictionary::text \
           FROM pg_catalog.pg_ts_dict d WHERE d.oid >= {USER_OID} \
         UNION ALL \
         SELECT 'text search objects', 'parser ' || n.nspname || '.' || p.prsname \
           FROM pg_catalog.pg_ts_parser p JOIN pg_catalog.pg_namespace n ON n.oid = p.prsnamespace \
           WHERE p.oid >= {USER_OID} \
         UNION ALL \
         SELECT 'text search objects', 'template ' || n.nspname || '.' || t.tmplname \
           FROM pg_catalog.pg_ts_template t JOIN pg_catalog.pg_namespace n ON n.oid = t.tmplnamespace \
           WHERE t.oid >= {USER_OID} \
         UNION ALL \
         SELECT 'statistics objects', n.nspname || '.' || s.stxname FROM pg_catalog.pg_statistic_ext s \
           JOIN pg_catalog.pg_namespace n ON n.oid = s.stxnamespace \
         UNION ALL \
         SELECT 'foreign servers', s.srvname FROM pg_catalog.pg_foreign_server s \
         UNION ALL \
         SELECT 'foreign-data wrappers', w.fdwname FROM pg_catalog.pg_foreign_data_wrapper w \
         UNION ALL \
         SELECT 'languages', l.lanname FROM pg_catalog.pg_language l WHERE l.oid >= {USER_OID} \
         UNION ALL \
         SELECT 'access methods', a.amname FROM pg_catalog.pg_am a WHERE a.oid >= {USER_OID} \
         UNION ALL \
         SELECT 'event triggers', e.evtname || ' on ' || e.evtevent || ' (' || e.evtenabled::text || ')' \
           FROM pg_catalog.pg_event_trigger e WHERE e.evtname NOT LIKE 'pgmigrate\\_%' \
         UNION ALL \
         SELECT 'default privileges', 'for ' || d.defaclrole::regrole::text || \
                coalesce(' in ' || n.nspname, '') || ' on ' || d.defaclobjtype::text || {def_acl} \
           FROM pg_catalog.pg_default_acl d LEFT JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace \
         UNION ALL \
         SELECT 'table privileges', n.nspname || '.' || c.relname || {acl} \
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           WHERE c.relacl IS NOT NULL AND {USER_RELATION} AND c.relacl <> pg_catalog.acldefault( \
                 CASE c.relkind WHEN 'S' THEN 's'::\"char\" ELSE 'r'::\"char\" END, c.relowner) \
         UNION ALL \
         SELECT 'column privileges', n.nspname || '.' || c.relname || '.' || a.attname || {col_acl} \
           FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           WHERE a.attacl IS NOT NULL AND a.attacl <> '{{}}' AND NOT a.attisdropped AND {USER_RELATION} \
         UNION ALL \
         SELECT 'comments', pg_catalog.pg_describe_object(d.classoid, d.objoid, d.objsubid) || {comment} \
           FROM pg_catalog.pg_description d WHERE d.objoid >= {USER_OID} \
             AND pg_catalog.pg_describe_object(d.classoid, d.objoid, d.objsubid) IS NOT NULL \
             AND d.classoid <> 'pg_catalog.pg_subscription'::pg_catalog.regclass \
         UNION ALL \
         SELECT 'extension versions', e.extname || ' ' || e.extversion FROM pg_catalog.pg_extension e"
    )
}

/// Large objects with a digest of their contents (and owner).
pub const LARGE_OBJECTS_SQL: &str = "SELECT 'large objects', m.oid::text || ' owned by ' || \
     m.lomowner::regrole::text || ' (' || md5(pg_catalog.lo_get(m.oid)) || ')' \
     FROM pg_catalog.pg_largeobject_metadata m";

/// When the contents may not be read: the objects by OID only.
pub const LARGE_OBJECT_NAMES_SQL: &str =
    "SELECT 'large objects', m.oid::text || ' owned by ' || m.lomowner::regrole::text \
     FROM pg_catalog.pg_largeobject_metadata m";
