//! Checks of one database: what the source user can read and publish,
//! replica identities, and what of the schema the target must support or
//! the migration will not carry. Pure functions over the facts.

use crate::config::{KeylessPolicy, Mode};
use crate::conn::quote_ident;
use crate::control::state::ValidationCheck;

use super::check::{self, count, fail, list, pass, warn};
use super::database_facts::SourceDatabase;
use super::source_facts::SourceServer;
use super::target_facts::{normalize_locale, TargetServer};

/// Checks that need only the source.
pub fn source_only(
    d: &SourceDatabase,
    source: Option<&SourceServer>,
    mode: Mode,
    keyless: &KeylessPolicy,
    target_superuser: Option<bool>,
) -> Vec<ValidationCheck> {
    let superuser = source.is_some_and(|s| s.superuser);
    let user = source.map(|s| s.user.as_str()).unwrap_or("the source user");
    let mut out = vec![
        table_read(d, user),
        publication(d, superuser, user, mode),
        identity_equality(d, mode),
    ];
    out.extend(super::keyless_checks::keyless(d, mode, keyless));
    out.extend([
        unlogged_tables(d),
        large_objects(d, mode),
        user_casts(d, target_superuser),
        tablespaces(d),
        not_carried(d),
    ]);
    out.extend(source.map(|s| lock_capacity(d, s)));
    out
}

/// pg_dump holds a lock on every table of the database in one transaction,
/// and the copy sessions together hold one more on each while their
/// snapshot lives: a lock table smaller than that fails the migration
/// with "out of shared memory" (SQLSTATE 53200) partway through.
fn lock_capacity(d: &SourceDatabase, s: &SourceServer) -> ValidationCheck {
    let db = &d.name;
    let n = d.lockable_relations;
    let needed = 2 * n + 1_000;
    if needed <= s.lock_capacity {
        return pass(
            check::SOURCE_LOCK_CAPACITY,
            format!(
                "database \"{db}\": {n} tables to lock, the lock table holds {}",
                s.lock_capacity
            ),
        );
    }
    let slots = (s.lock_capacity / s.max_locks_per_transaction.max(1)).max(1);
    let per_transaction = needed.div_ceil(slots).next_power_of_two();
    let message = format!(
        "database \"{db}\": {n} tables, each locked by pg_dump and by a copy session at once, but the lock table holds {} (max_locks_per_transaction {} × connection slots {slots})",
        s.lock_capacity, s.max_locks_per_transaction
    );
    let fix = format!(
        "ALTER SYSTEM SET max_locks_per_transaction = {per_transaction}; on the source, then restart it"
    );
    if n > s.lock_capacity {
        fail(check::SOURCE_LOCK_CAPACITY, message, fix)
    } else {
        warn(check::SOURCE_LOCK_CAPACITY, message, fix)
    }
}

/// Unlogged tables write no WAL, so only their snapshot reaches the target.
fn unlogged_tables(d: &SourceDatabase) -> ValidationCheck {
    let db = &d.name;
    if d.unlogged.is_empty() {
        pass(
            check::UNLOGGED_TABLES,
            format!("database \"{db}\": no unlogged tables"),
        )
    } else {
        warn(
            check::UNLOGGED_TABLES,
            format!(
                "database \"{db}\": {} whose changes are not replicated (only the snapshot is copied): {}",
                count(d.unlogged.len(), "unlogged table"),
                list(&d.unlogged)
            ),
            "ALTER TABLE … SET LOGGED; on the source if their later changes matter",
        )
    }
}

/// Large objects are copied with the snapshot only: logical decoding does not
/// carry their later changes.
fn large_objects(d: &SourceDatabase, mode: Mode) -> ValidationCheck {
    let db = &d.name;
    match (d.large_objects, mode) {
        (0, _) => pass(
            check::LARGE_OBJECTS,
            format!("database \"{db}\": no large objects"),
        ),
        (n, Mode::Offline) => pass(
            check::LARGE_OBJECTS,
            format!("database \"{db}\": {} will be copied", count(n as usize, "large object")),
        ),
        (n, Mode::Online) => warn(
            check::LARGE_OBJECTS,
            format!(
                "database \"{db}\": {}; they are copied at the snapshot only, later changes to them are not replicated",
                count(n as usize, "large object")
            ),
            "avoid changing large objects during the migration, or move them into bytea columns",
        ),
    }
}

/// A cast on a type the target user does not own needs a superuser there.
fn user_casts(d: &SourceDatabase, target_superuser: Option<bool>) -> ValidationCheck {
    let db = &d.name;
    match (d.casts.is_empty(), target_superuser) {
        (true, _) => pass(
            check::USER_CASTS,
            format!("database \"{db}\": no user-defined casts"),
        ),
        (false, Some(true)) => pass(
            check::USER_CASTS,
            format!(
                "database \"{db}\": {} copied with the schema: {}",
                count(d.casts.len(), "user-defined cast"),
                list(&d.casts)
            ),
        ),
        (false, _) => warn(
            check::USER_CASTS,
            format!(
                "database \"{db}\": {}: {}; creating a cast on the target needs ownership of its source or target type (superuser for built-in types)",
                count(d.casts.len(), "user-defined cast"),
                list(&d.casts)
            ),
            "migrate as a superuser on the target, or create these casts there beforehand",
        ),
    }
}

/// Tablespaces are not carried: everything lands in the target's default.
fn tablespaces(d: &SourceDatabase) -> ValidationCheck {
    let db = &d.name;
    if d.tablespace_objects.is_empty() {
        pass(
            check::TABLESPACES,
            format!("database \"{db}\": everything is in the default tablespace"),
        )
    } else {
        warn(
            check::TABLESPACES,
            format!(
                "database \"{db}\": {} outside the default tablespace: {}; on the target they land in the default one",
                count(d.tablespace_objects.len(), "object"),
                list(&d.tablespace_objects)
            ),
            "after the migration, ALTER TABLE/INDEX … SET TABLESPACE on the target if needed",
        )
    }
}

/// What pg_dump/pg_restore as pgmigrate runs them leave behind.
fn not_carried(d: &SourceDatabase) -> ValidationCheck {
    let db = &d.name;
    if d.not_carried.is_empty() {
        pass(
            check::NOT_CARRIED,
            format!("database \"{db}\": nothing that the migration cannot carry"),
        )
    } else {
        warn(
            check::NOT_CARRIED,
            format!(
                "database \"{db}\": {} not carried to the target: {}",
                count(d.not_carried.len(), "object"),
                list(&d.not_carried)
            ),
            "recreate subscriptions and security labels on the target after the migration; an inheritance child's columns come in its parent's order there (see the README)",
        )
    }
}

/// SELECT on every table and sequence, USAGE on their schemas; the fix
/// names them (capped) so it can be pasted.
fn table_read(d: &SourceDatabase, user: &str) -> ValidationCheck {
    let db = &d.name;
    if d.unreadable.is_empty() {
        return pass(
            check::SOURCE_TABLE_READ,
            format!("database \"{db}\": \"{user}\" can read every table and sequence"),
        );
    }
    let to = quote_ident(user);
    let mut fixes = Vec::new();
    if !d.schemas_without_usage.is_empty() {
        fixes.push(format!(
            "GRANT USAGE ON SCHEMA {} TO {to};",
            capped(&d.schemas_without_usage)
        ));
    }
    if !d.without_select.is_empty() {
        fixes.push(format!(
            "GRANT SELECT ON {} TO {to};",
            capped(&d.without_select)
        ));
    }
    if d.without_select.len() > check::LIST_LIMIT
        || d.schemas_without_usage.len() > check::LIST_LIMIT
    {
        fixes.push(format!(
            "(for many: GRANT SELECT ON ALL TABLES IN SCHEMA … TO {to}; GRANT SELECT ON ALL SEQUENCES IN SCHEMA … TO {to};)"
        ));
    }
    fail(
        check::SOURCE_TABLE_READ,
        format!(
            "database \"{db}\": \"{user}\" cannot read {}: {}",
            count(d.unreadable.len(), "table"),
            list(&d.unreadable)
        ),
        fixes.join(" "),
    )
}

/// `a, b, c` with at most [`check::LIST_LIMIT`] names, valid SQL.
fn capped(names: &[String]) -> String {
    let shown: Vec<&str> = names
        .iter()
        .take(check::LIST_LIMIT)
        .map(String::as_str)
        .collect();
    let more = names.len().saturating_sub(check::LIST_LIMIT);
    if more > 0 {
        format!("{} /* and {more} more */", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Identity columns the target cannot compare: a key column fails (its
/// rows cannot be found), a FULL identity column warns (matched by text
/// form, which no index helps).
fn identity_equality(d: &SourceDatabase, mode: Mode) -> ValidationCheck {
    let id = check::REPLICA_IDENTITY_EQUALITY;
    let db = &d.name;
    if mode == Mode::Offline {
        return pass(
            id,
            format!("database \"{db}\": rows are not matched in offline mode"),
        );
    }
    if !d.key_without_equality.is_empty() {
        return fail(
            id,
            format!(
                "database \"{db}\": {} of a type without an equality operator (or holding one, like a composite with a point or json field): updates and deletes of their rows cannot be found on the target: {}",
                count(d.key_without_equality.len(), "replica identity key column"),
                list(&d.key_without_equality)
            ),
            "give these tables a primary key (or REPLICA IDENTITY USING INDEX) on columns whose types have a default btree operator class, or set REPLICA IDENTITY FULL",
        );
    }
    if !d.full_without_equality.is_empty() {
        return warn(
            id,
            format!(
                "database \"{db}\": {} of REPLICA IDENTITY FULL tables {} no equality operator (e.g. point, json, or a composite holding one); their rows are matched by text form, which no index can speed up: {}",
                count(d.full_without_equality.len(), "column"),
                if d.full_without_equality.len() == 1 { "has" } else { "have" },
                list(&d.full_without_equality)
            ),
            "add a primary key to these tables so updates and deletes find their rows by key",
        );
    }
    pass(
        id,
        format!("database \"{db}\": every replica identity column can be compared on the target"),
    )
}

fn publication(d: &SourceDatabase, superuser: bool, user: &str, mode: Mode) -> ValidationCheck {
    let id = check::SOURCE_PUBLICATION_PRIVILEGE;
    let db = &d.name;
    if mode == Mode::Offline {
        return pass(
            id,
            format!("database \"{db}\": no publication is needed in offline mode"),
        );
    }
    if superuser {
        return pass(
            id,
            format!("database \"{db}\": \"{user}\" is superuser and may create a publication FOR ALL TABLES"),
        );
    }
    // Both at once: one validation round shows every grant to make.
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    if !d.can_create {
        problems.push("lacks CREATE on the database, which CREATE PUBLICATION needs".to_string());
        fixes.push(format!(
            "GRANT CREATE ON DATABASE {} TO {};",
            quote_ident(db),
            quote_ident(user)
        ));
    }
    if !d.not_owned.is_empty() {
        problems.push(format!(
            "is not superuser and does not own {}, so it cannot publish them: {}",
            count(d.not_owned.len(), "table"),
            list(&d.not_owned)
        ));
        fixes.push(format!(
            "GRANT {} TO {}; (membership in the owners' roles), or migrate as a superuser",
            capped(&d.foreign_owners),
            quote_ident(user)
        ));
    }
    if !problems.is_empty() {
        return fail(
            id,
            format!("database \"{db}\": \"{user}\" {}", problems.join("; and ")),
            fixes.join(" "),
        );
    }
    pass(
        id,
        format!(
            "database \"{db}\": \"{user}\" owns every table and may create a publication for them"
        ),
    )
}

/// Checks that compare the source database with the target server.
pub fn against_target(d: &SourceDatabase, t: &TargetServer) -> Vec<ValidationCheck> {
    vec![extensions(d, t), collations(d, t), encoding_locale(d, t)]
}

fn extensions(d: &SourceDatabase, t: &TargetServer) -> ValidationCheck {
    let id = check::EXTENSIONS;
    let db = &d.name;
    let mut missing = Vec::new();
    let mut other_version = Vec::new();
    let mut same = Vec::new();
    for (name, version) in &d.extensions {
        match t.extensions.get(name) {
            None => missing.push(format!("{name} {version}")),
            Some((default, _)) if default == version => same.push(format!("{name} {version}")),
            Some((default, _)) => {
                other_version.push(format!("{name} {version} (target installs {default})"))
            }
        }
    }
    if !missing.is_empty() {
        return fail(
            id,
            format!(
                "database \"{db}\": {} installed on the source not available on the target {}: {}",
                count(missing.len(), "extension"),
                t.server,
                list(&missing)
            ),
            format!(
                "install the packages providing them on the target (e.g. postgresql-{}-<name>), or drop them on the source if unused",
                t.major
            ),
        );
    }
    if !other_version.is_empty() {
        return warn(
            id,
            format!(
                "database \"{db}\": {} at another version on the target {}: {}",
                count(other_version.len(), "extension"),
                t.server,
                list(&other_version)
            ),
            "check the extensions' release notes, or install the source's version on the target",
        );
    }
    pass(
        id,
        format!(
            "database \"{db}\": {} available on the target: {}",
            count(same.len(), "extension"),
            list(&same)
        ),
    )
}

fn collations(d: &SourceDatabase, t: &TargetServer) -> ValidationCheck {
    let id = check::COLLATIONS;
    let db = &d.name;
    // Missing for sure (a name lookup, an absent provider) versus a libc
    // locale the target's catalog does not list but its OS might have.
    let mut missing = Vec::new();
    let mut unlisted = Vec::new();
    for c in &d.collations {
        let shown = format!(
            "{}.{} ({})",
            quote_ident(&c.schema),
            quote_ident(&c.name),
            provider_locale(&c.provider, &c.locale)
        );
        if c.schema == "pg_catalog" {
            // Built-in and imported collations are referenced by name.
            let found = t
                .collations
                .get(&(c.schema.clone(), c.name.clone()))
                .is_some_and(|encs| encs.iter().any(|e| e.is_empty() || *e == d.encoding));
            if !found {
                missing.push(shown);
            }
            continue;
        }
        // The dump recreates the user's own collations: their provider and
        // locale must exist on the target.
        match c.provider.as_str() {
            "i" if !t.has_icu => missing.push(shown),
            "b" if t.major < 17 => missing.push(shown),
            "c" if !locale_known(&c.locale, t) => unlisted.push(shown),
            _ => {}
        }
    }
    if !missing.is_empty() {
        return fail(
            id,
            format!(
                "database \"{db}\": {} used on the source missing on the target {}: {}",
                count(missing.len(), "collation"),
                t.server,
                list(&missing)
            ),
            "install the locales on the target's OS (or an ICU-enabled build) and run SELECT pg_import_system_collations('pg_catalog'); there, or change the columns' collation",
        );
    }
    if !unlisted.is_empty() {
        return warn(
            id,
            format!(
                "database \"{db}\": {} based on locales the target {} does not list among its collations: {}",
                count(unlisted.len(), "collation"),
                t.server,
                list(&unlisted)
            ),
            "make sure these locales are installed on the target's OS (locale -a)",
        );
    }
    if d.collations.is_empty() {
        return pass(
            id,
            format!("database \"{db}\": columns and indexes use only the default collation"),
        );
    }
    let names: Vec<String> = d
        .collations
        .iter()
        .map(|c| format!("{}.{}", quote_ident(&c.schema), quote_ident(&c.name)))
        .collect();
    pass(
        id,
        format!(
            "database \"{db}\": collations used by columns and indexes exist on the target: {}",
            list(&names)
        ),
    )
}

fn provider_locale(provider: &str, locale: &str) -> String {
    let p = match provider {
        "i" => "icu",
        "b" => "builtin",
        "c" => "libc",
        _ => "default",
    };
    format!("{p} {locale}")
}

fn locale_known(locale: &str, t: &TargetServer) -> bool {
    matches!(locale, "C" | "POSIX" | "") || t.locales.contains(&normalize_locale(locale))
}

fn encoding_locale(d: &SourceDatabase, t: &TargetServer) -> ValidationCheck {
    let id = check::ENCODING_LOCALE;
    let db = &d.name;
    let mut missing = Vec::new();
    match (d.locale_provider.as_str(), &d.locale) {
        ("i", Some(loc)) if !t.has_icu => missing.push(format!(
            "ICU locale {loc} needs ICU, which the target lacks"
        )),
        ("b", Some(loc)) if t.major < 17 => missing.push(format!(
            "builtin locale {loc} needs PostgreSQL 17 or later on the target"
        )),
        _ => {}
    }
    // CREATE DATABASE asks the OS, not the catalog: a locale the catalog
    // does not list may still exist, so that is a warning only.
    let mut unlisted = Vec::new();
    for (what, locale) in [("LC_COLLATE", &d.collate), ("LC_CTYPE", &d.ctype)] {
        if !locale_known(locale, t)
            && !unlisted
                .iter()
                .any(|u: &String| u.ends_with(locale.as_str()))
        {
            unlisted.push(format!("{what} {locale}"));
        }
    }
    let described = format!(
        "{} with LC_COLLATE {} and LC_CTYPE {}{}",
        d.encoding,
        d.collate,
        d.ctype,
        match (d.locale_provider.as_str(), &d.locale) {
            ("i", Some(l)) => format!(", ICU locale {l}"),
            ("b", Some(l)) => format!(", builtin locale {l}"),
            _ => String::new(),
        }
    );
    if !missing.is_empty() {
        return fail(
            id,
            format!(
                "database \"{db}\": {described}: {} on the target {}",
                missing.join("; "),
                t.server
            ),
            "use a target built with the provider, or migrate into a database with another locale by hand",
        );
    }
    if !unlisted.is_empty() {
        return warn(
            id,
            format!(
                "database \"{db}\": {described}: {} not among the locales the target {} lists; creating the database fails if its OS lacks them",
                unlisted.join(", "),
                t.server
            ),
            "install the locale on the target's OS (locale-gen) and restart it",
        );
    }
    pass(
        id,
        format!("database \"{db}\": {described} can be created on the target"),
    )
}
