//! `[tables]` checked against the source catalog: patterns that match no
//! table, and objects a filter would cut in two (a foreign key or a view of
//! a table on the target reading one that is not). The schema restore
//! silently leaves out whatever depends on an excluded table, so these are
//! said before the migration, with the three ways out.
//!
//! Also the filtered view of the facts the keyless and publication checks
//! use: only the tables whose rows and changes are migrated count there.

use std::collections::{BTreeSet, HashMap};

use crate::config::{TableChoice, TableFilter};
use crate::conn::{ConnError, Connection};
use crate::control::state::ValidationCheck;

use super::check::{self, count, fail, list, pass, warn};
use super::database_facts::{SourceDatabase, RELATIONS, USER_RELATION};

/// One user table or partition, with the name its choice is made on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilteredTable {
    /// `schema.table` quoted for SQL.
    pub quoted: String,
    /// Schema of the name patterns match (the root's for a partition).
    pub root_schema: String,
    /// Table name patterns match (the root's for a partition).
    pub root_table: String,
    /// A partition: patterns do not match its own name.
    pub is_partition: bool,
    /// Its owner (quoted), when the user is not a member of that role.
    pub foreign_owner: Option<String>,
}

/// What the `[tables]` checks read of one source database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterFacts {
    /// Tables and partitions by OID.
    pub tables: HashMap<u32, FilteredTable>,
    /// Foreign keys: `(constraint name, referencing OID, referenced OID)`.
    pub foreign_keys: Vec<(String, u32, u32)>,
    /// Views and materialized views reading a relation (a table or
    /// another view): `(view quoted, "view" | "materialized view", OID
    /// read, the view's own OID)`.
    pub view_reads: Vec<(String, String, u32, u32)>,
}

impl FilterFacts {
    /// Reads the tables, foreign keys and view dependencies of the
    /// database `conn` is connected to.
    pub async fn read(conn: &mut Connection) -> Result<FilterFacts, ConnError> {
        let mut facts = FilterFacts::default();
        let rows = conn
            .simple_query(&format!(
                "SELECT c.oid, format('%I.%I', n.nspname, c.relname), \
                   COALESCE(rn.nspname, n.nspname), COALESCE(r.relname, c.relname), c.relispartition, \
                   CASE WHEN pg_catalog.pg_has_role(c.relowner, 'USAGE') THEN NULL \
                        ELSE quote_ident(pg_catalog.pg_get_userbyid(c.relowner)) END \
                 {RELATIONS} \
                 LEFT JOIN pg_catalog.pg_class r ON c.relispartition AND r.oid = pg_catalog.pg_partition_root(c.oid) \
                 LEFT JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
                 WHERE {USER_RELATION} AND c.relkind IN ('r', 'p')"
            ))
            .await?;
        for r in &rows {
            facts.tables.insert(
                r.parse(0)?,
                FilteredTable {
                    quoted: r.str(1)?.to_string(),
                    root_schema: r.str(2)?.to_string(),
                    root_table: r.str(3)?.to_string(),
                    is_partition: r.bool(4)?,
                    foreign_owner: r.opt_str(5)?.map(str::to_string),
                },
            );
        }
        // One row per foreign key: a partitioned table's is cloned onto
        // each partition (conparentid names the original).
        let rows = conn
            .simple_query(
                "SELECT quote_ident(conname), conrelid, confrelid FROM pg_catalog.pg_constraint \
                 WHERE contype = 'f' AND conparentid = 0",
            )
            .await?;
        for r in &rows {
            facts
                .foreign_keys
                .push((r.str(0)?.to_string(), r.parse(1)?, r.parse(2)?));
        }
        let rows = conn
            .simple_query(
                "SELECT DISTINCT format('%I.%I', vn.nspname, v.relname), \
                   CASE v.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END, d.refobjid, v.oid \
                 FROM pg_catalog.pg_depend d \
                 JOIN pg_catalog.pg_rewrite rw ON rw.oid = d.objid \
                 JOIN pg_catalog.pg_class v ON v.oid = rw.ev_class \
                 JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace \
                 WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass \
                   AND d.refclassid = 'pg_catalog.pg_class'::regclass \
                   AND v.relkind IN ('v', 'm') AND d.refobjid <> v.oid \
                   AND vn.nspname NOT IN ('pg_catalog', 'information_schema') \
                 ORDER BY 1",
            )
            .await?;
        for r in &rows {
            facts.view_reads.push((
                r.str(0)?.to_string(),
                r.str(1)?.to_string(),
                r.parse(2)?,
                r.parse(3)?,
            ));
        }
        Ok(facts)
    }

    /// The choice for a table by OID (Migrate when unknown).
    fn choice(&self, filter: &TableFilter, oid: u32) -> TableChoice {
        self.tables
            .get(&oid)
            .map(|t| filter.choice(&t.root_schema, &t.root_table))
            .unwrap_or(TableChoice::Migrate)
    }

    fn name(&self, oid: u32) -> String {
        self.tables
            .get(&oid)
            .map(|t| t.quoted.clone())
            .unwrap_or_else(|| format!("table {oid}"))
    }
}

/// The facts with only the migrated tables in what the keyless and
/// publication checks count: the rows and changes of excluded and
/// schema-only tables are neither published nor replicated.
pub fn migrated_only(d: &SourceDatabase, filter: &TableFilter) -> SourceDatabase {
    let mut out = d.clone();
    if filter.is_default() {
        return out;
    }
    let f = &d.filter_facts;
    let names: HashMap<&str, TableChoice> = f
        .tables
        .values()
        .map(|t| {
            (
                t.quoted.as_str(),
                filter.choice(&t.root_schema, &t.root_table),
            )
        })
        .collect();
    let migrated = |quoted: &str| {
        names.get(quoted).copied().unwrap_or(TableChoice::Migrate) == TableChoice::Migrate
    };
    out.without_identity.retain(|t| migrated(&t.quoted));
    out.not_owned.retain(|t| migrated(t));
    let owners: BTreeSet<String> = f
        .tables
        .values()
        .filter(|t| migrated(&t.quoted))
        .filter_map(|t| t.foreign_owner.clone())
        .collect();
    out.foreign_owners.retain(|o| owners.contains(o));
    out
}

/// Per database: foreign keys and views that a filter cuts in two.
pub fn dependencies(d: &SourceDatabase, filter: &TableFilter) -> ValidationCheck {
    let id = check::TABLE_FILTERS;
    let db = &d.name;
    if filter.is_default() {
        return pass(
            id,
            format!("database \"{db}\": every table is migrated (no [tables] filter)"),
        );
    }
    let f = &d.filter_facts;
    let excluded = |oid: u32| f.choice(filter, oid) == TableChoice::Exclude;
    let mut cut = Vec::new();
    let mut tables = BTreeSet::new();
    let mut views = BTreeSet::new();
    let mut needed = BTreeSet::new();
    for (name, from, to) in &f.foreign_keys {
        if f.tables.contains_key(from) && !excluded(*from) && excluded(*to) {
            let (from, to) = (f.name(*from), f.name(*to));
            cut.push(format!(
                "foreign key {name} of {from} references excluded {to}"
            ));
            tables.insert(from);
            needed.insert(to);
        }
    }
    for (view, kind, reason) in cut_views(f, &excluded, &mut needed) {
        cut.push(format!("{kind} {view} {reason}"));
        views.insert(view);
    }
    let empty = empty_references(f, filter);
    if cut.is_empty() && empty.is_none() {
        let choices: Vec<TableChoice> = f
            .tables
            .values()
            .filter(|t| !t.is_partition)
            .map(|t| filter.choice(&t.root_schema, &t.root_table))
            .collect();
        let n = |c: TableChoice| choices.iter().filter(|x| **x == c).count();
        return pass(
            id,
            format!(
                "database \"{db}\": [tables] migrates {}, {} schema only, excludes {}; nothing on the target depends on an excluded table",
                count(n(TableChoice::Migrate), "table"),
                n(TableChoice::SchemaOnly),
                n(TableChoice::Exclude)
            ),
        );
    }
    let mut parts = Vec::new();
    let mut fixes = Vec::new();
    if !cut.is_empty() {
        parts.push(format!(
            "{} would be left out of the target because [tables] excludes what {} on: {}",
            count(cut.len(), "object"),
            if cut.len() == 1 {
                "it depends"
            } else {
                "they depend"
            },
            list(&cut)
        ));
        fixes.push(cut_fix(needed, tables, views));
    }
    if let Some((part, fix)) = empty {
        parts.push(part);
        fixes.push(fix);
    }
    fail(
        id,
        format!("database \"{db}\": {}", parts.join("; and ")),
        fixes.join("; "),
    )
}

/// Views and materialized views that read an excluded table, directly or
/// through other views (a view over a cut view is cut too), each with why:
/// `(view, kind, "reads excluded T" | "reads view V, which …")`. The
/// excluded tables reached go into `needed`.
fn cut_views(
    f: &FilterFacts,
    excluded: &dyn Fn(u32) -> bool,
    needed: &mut BTreeSet<String>,
) -> Vec<(String, String, String)> {
    let mut cut: HashMap<u32, (String, String, String)> = HashMap::new();
    let mut order = Vec::new();
    for (view, kind, read, oid) in &f.view_reads {
        if !cut.contains_key(oid) && f.tables.contains_key(read) && excluded(*read) {
            let table = f.name(*read);
            let reason = format!("reads excluded {table}");
            needed.insert(table);
            cut.insert(*oid, (view.clone(), kind.clone(), reason));
            order.push(*oid);
        }
    }
    // Follow views over views to a fixpoint (each round adds at least one,
    // so at most one round per view).
    loop {
        let mut added = false;
        for (view, kind, read, oid) in &f.view_reads {
            if cut.contains_key(oid) {
                continue;
            }
            let Some((inner, inner_kind, inner_reason)) = cut.get(read).cloned() else {
                continue;
            };
            let reason = format!("reads {inner_kind} {inner}, which {inner_reason}");
            cut.insert(*oid, (view.clone(), kind.clone(), reason));
            order.push(*oid);
            added = true;
        }
        if !added {
            break;
        }
    }
    order
        .into_iter()
        .filter_map(|oid| cut.remove(&oid))
        .collect()
}

/// Foreign keys of migrated tables referencing schema-only ones: the
/// referenced rows are not copied, so adding the key on the target fails
/// as soon as one referencing row is there.
fn empty_references(f: &FilterFacts, filter: &TableFilter) -> Option<(String, String)> {
    let mut found = Vec::new();
    let mut referenced = BTreeSet::new();
    let mut referencing = BTreeSet::new();
    for (name, from, to) in &f.foreign_keys {
        if f.tables.contains_key(from)
            && f.choice(filter, *from) == TableChoice::Migrate
            && f.choice(filter, *to) == TableChoice::SchemaOnly
        {
            let (from, to) = (f.name(*from), f.name(*to));
            found.push(format!(
                "foreign key {name} of {from} references schema-only {to}"
            ));
            referencing.insert(from);
            referenced.insert(to);
        }
    }
    if found.is_empty() {
        return None;
    }
    let referenced: Vec<String> = referenced.into_iter().collect();
    let referencing: Vec<String> = referencing.into_iter().collect();
    Some((
        format!(
            "{} of migrated tables {} tables whose rows are not copied, so creating {} on the target fails: {}",
            count(found.len(), "foreign key"),
            if found.len() == 1 { "references" } else { "reference" },
            if found.len() == 1 { "it" } else { "them" },
            list(&found)
        ),
        format!(
            "copy the rows of {} (take them out of tables.schema_only), or make {} schema only or exclude them",
            list(&referenced),
            list(&referencing)
        ),
    ))
}

/// How to mend foreign keys and views reading excluded tables.
fn cut_fix(needed: BTreeSet<String>, tables: BTreeSet<String>, views: BTreeSet<String>) -> String {
    let needed: Vec<String> = needed.into_iter().collect();
    let mut fix = format!(
        "include {} (tables.include), or make {} schema only (tables.schema_only)",
        list(&needed),
        if needed.len() == 1 { "it" } else { "them" },
    );
    if !tables.is_empty() {
        let tables: Vec<String> = tables.into_iter().collect();
        fix.push_str(&format!(", or exclude the dependent {} too", list(&tables)));
    }
    if !views.is_empty() {
        let views: Vec<String> = views.into_iter().collect();
        fix.push_str(&format!(
            "; [tables] does not filter views: drop {} on the source if the target should not have {}",
            list(&views),
            if views.len() == 1 { "it" } else { "them" },
        ));
    }
    fix
}

/// Once for the migration: each pattern that matches no table in any
/// database read (a typo, or a table that is gone). A pattern names a
/// table or a partitioned root; a partition's own name matches nothing.
pub fn patterns(read: &[&SourceDatabase], filter: &TableFilter, all_read: bool) -> ValidationCheck {
    let id = check::TABLE_FILTERS;
    if filter.is_default() {
        return pass(id, "no [tables] filter: every table is migrated");
    }
    let unmatched: Vec<String> = filter
        .patterns()
        .filter(|(_, p)| {
            !read.iter().any(|d| {
                d.filter_facts
                    .tables
                    .values()
                    .any(|t| !t.is_partition && p.matches(&t.root_schema, &t.root_table))
            })
        })
        .map(|(l, p)| format!("{l} \"{p}\""))
        .collect();
    let scope = if all_read {
        "any database"
    } else {
        "the databases that could be read"
    };
    if unmatched.is_empty() {
        return pass(
            id,
            format!(
                "every [tables] pattern matches a table ({})",
                count(filter.patterns().count(), "pattern")
            ),
        );
    }
    warn(
        id,
        format!(
            "{} of [tables] {} no table in {scope}: {}",
            count(unmatched.len(), "pattern"),
            if unmatched.len() == 1 {
                "matches"
            } else {
                "match"
            },
            list(&unmatched)
        ),
        "fix the pattern's spelling (schema.table; * and ? as wildcards; a partition follows its root's name) or remove it",
    )
}

/// Tables whose choice is `c`, for tests and messages.
#[cfg(test)]
fn with_choice(f: &FilterFacts, filter: &TableFilter, c: TableChoice) -> Vec<String> {
    let mut v: Vec<String> = f
        .tables
        .keys()
        .filter(|oid| f.choice(filter, **oid) == c)
        .map(|oid| f.name(*oid))
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TablePattern;

    fn table(quoted: &str, root: (&str, &str), partition: bool) -> FilteredTable {
        FilteredTable {
            quoted: quoted.into(),
            root_schema: root.0.into(),
            root_table: root.1.into(),
            is_partition: partition,
            foreign_owner: None,
        }
    }

    fn facts() -> FilterFacts {
        FilterFacts {
            tables: HashMap::from([
                (1, table("public.users", ("public", "users"), false)),
                (2, table("public.logs", ("public", "logs"), false)),
                (3, table("public.logs_1", ("public", "logs"), true)),
            ]),
            foreign_keys: vec![("logs_user_fk".into(), 2, 1), ("users_log_fk".into(), 1, 2)],
            view_reads: vec![
                ("public.v".into(), "view".into(), 3, 10),
                ("public.w".into(), "materialized view".into(), 10, 11),
            ],
        }
    }

    fn filter(exclude: &[&str]) -> TableFilter {
        let pats = exclude
            .iter()
            .map(|p| TablePattern::parse(p).unwrap())
            .collect();
        TableFilter::new(vec![], pats, vec![]).unwrap()
    }

    #[test]
    fn partitions_follow_their_root() {
        let f = facts();
        assert_eq!(
            with_choice(&f, &filter(&["public.logs"]), TableChoice::Exclude),
            vec!["public.logs", "public.logs_1"]
        );
    }

    fn db(f: FilterFacts) -> SourceDatabase {
        let mut d = crate::validate::tests::database();
        d.filter_facts = f;
        d
    }

    #[test]
    fn cut_dependencies_fail_naming_both() {
        let d = db(facts());
        let c = dependencies(&d, &filter(&["public.logs"]));
        assert_eq!(c.result, crate::control::status::CheckResult::Failed);
        assert!(
            c.message.contains(
                "foreign key users_log_fk of public.users references excluded public.logs"
            ) && c
                .message
                .contains("view public.v reads excluded public.logs_1"),
            "{c:?}"
        );
        // A view over that view is cut too, and the chain is named.
        assert!(
            c.message.contains(
                "materialized view public.w reads view public.v, which reads excluded public.logs_1"
            ),
            "{c:?}"
        );
        assert!(c.fix.contains("include public.logs, public.logs_1") && c.fix.contains("public.v"));
        // An excluded table's own foreign keys go with it.
        let c = dependencies(&d, &filter(&["public.users"]));
        assert_eq!(c.result, crate::control::status::CheckResult::Failed);
        assert!(c
            .message
            .contains("logs_user_fk of public.logs references excluded public.users"));
        assert!(!c.message.contains("users_log_fk"), "{c:?}");
        // A migrated table's key to a schema-only one cannot be created
        // once rows reference it.
        let schema_only = TableFilter::new(
            vec![],
            vec![],
            vec![TablePattern::parse("public.logs").unwrap()],
        )
        .unwrap();
        let c = dependencies(&d, &schema_only);
        assert_eq!(c.result, crate::control::status::CheckResult::Failed);
        assert!(
            c.message
                .contains("users_log_fk of public.users references schema-only public.logs")
                && !c.message.contains("view"),
            "{c:?}"
        );
        assert!(c.fix.contains("tables.schema_only"), "{c:?}");
        let c = dependencies(&d, &TableFilter::default());
        assert_eq!(c.result, crate::control::status::CheckResult::Succeeded);
    }

    #[test]
    fn only_migrated_tables_count_for_keys_and_publication() {
        let mut f = facts();
        f.tables.get_mut(&2).unwrap().foreign_owner = Some("logger".into());
        f.tables.get_mut(&1).unwrap().foreign_owner = Some("app".into());
        let mut d = db(f);
        d.not_owned = vec!["public.logs".into(), "public.users".into()];
        d.foreign_owners = vec!["app".into(), "logger".into()];
        d.without_identity = vec![crate::stream::publication::KeylessTable {
            schema: "public".into(),
            table: "logs_1".into(),
            quoted: "public.logs_1".into(),
            identity: 'd',
            partition_of: Some("public.logs".into()),
            root_identity: None,
        }];
        let m = migrated_only(&d, &filter(&["public.logs"]));
        assert_eq!(m.not_owned, vec!["public.users".to_string()]);
        assert_eq!(m.foreign_owners, vec!["app".to_string()]);
        assert!(m.without_identity.is_empty());
        assert_eq!(migrated_only(&d, &TableFilter::default()), d);
    }

    #[test]
    fn unmatched_patterns_warn() {
        let d = db(facts());
        let c = patterns(
            &[&d],
            &filter(&["public.log*", "public.logs_1", "nope.*"]),
            true,
        );
        assert_eq!(c.result, crate::control::status::CheckResult::Warning);
        assert!(
            c.message.contains("tables.exclude \"public.logs_1\"")
                && c.message.contains("tables.exclude \"nope.*\"")
                && !c.message.contains("log*"),
            "{c:?}"
        );
        let c = patterns(&[&d], &filter(&["public.log*"]), true);
        assert_eq!(c.result, crate::control::status::CheckResult::Succeeded);
    }
}
