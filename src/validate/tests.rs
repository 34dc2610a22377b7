//! The check rules, on hand-made facts: every Failed and Warning path and
//! its boundary, without a server.

use std::path::{Path, PathBuf};

use super::check;
use super::database_checks::{against_target, source_only};
use super::database_facts::{CollationUse, SourceDatabase};
use super::server_checks::*;
use super::source_facts::{OpenTransaction, SourceServer};
use super::target_facts::TargetServer;
use crate::config::{Config, KeylessMode, KeylessPolicy, Mode, TablePattern};
use crate::control::state::ValidationCheck;
use crate::control::status::CheckResult;
use crate::copy::pg_tools::{PgTools, ToolError};
use crate::stream::publication::KeylessTable;

fn config(extra: &str) -> Config {
    let text = format!(
        "name = \"t\"\ndatabases = [\"app\", \"two\"]\n{extra}\n[source]\nhost = \"src\"\n[target]\nhost = \"dst\"\n"
    );
    Config::from_toml_str(&text, Path::new("/")).unwrap()
}

fn source(major: u32) -> SourceServer {
    SourceServer {
        server: "src:5432".into(),
        major,
        version: format!("{major}.3"),
        wal_level: "logical".into(),
        max_replication_slots: 10,
        used_replication_slots: 0,
        max_wal_senders: 10,
        used_wal_senders: 0,
        max_slot_wal_keep_size_mb: Some(10240),
        user: "postgres".into(),
        superuser: true,
        replication: true,
        max_locks_per_transaction: 64,
        lock_capacity: 64 * 100,
        ..SourceServer::default()
    }
}

fn target(major: u32) -> TargetServer {
    let mut t = TargetServer {
        server: "dst:5432".into(),
        major,
        version: format!("{major}.1"),
        user: "postgres".into(),
        superuser: true,
        createdb: true,
        can_set_replication_role: true,
        origin_capacity: 10,
        origins_in_use: Some(0),
        has_icu: true,
        ..TargetServer::default()
    };
    t.databases.insert("postgres".into(), true);
    t.locales.insert("c.utf8".into());
    t.extensions.insert(
        "plpgsql".into(),
        ("1.0".into(), ["1.0".to_string()].into_iter().collect()),
    );
    t.collations.insert(
        ("pg_catalog".into(), "C".into()),
        [String::new()].into_iter().collect(),
    );
    t
}

pub(super) fn database() -> SourceDatabase {
    SourceDatabase {
        name: "app".into(),
        lockable_relations: 10,
        size_bytes: 1_000_000,
        encoding: "UTF8".into(),
        collate: "C.UTF-8".into(),
        ctype: "C.UTF-8".into(),
        locale_provider: "c".into(),
        locale: None,
        can_create: true,
        unreadable: vec![],
        schemas_without_usage: vec![],
        without_select: vec![],
        not_owned: vec![],
        foreign_owners: vec![],
        without_identity: vec![],
        key_without_equality: vec![],
        full_without_equality: vec![],
        unlogged: vec![],
        large_objects: 0,
        casts: vec![],
        tablespace_objects: vec![],
        not_carried: vec![],
        filter_facts: Default::default(),
        extensions: vec![("plpgsql".into(), "1.0".into())],
        collations: vec![CollationUse {
            schema: "pg_catalog".into(),
            name: "C".into(),
            provider: "c".into(),
            locale: "C".into(),
        }],
    }
}

fn keyless_table(schema: &str, table: &str, partition_of: Option<&str>) -> KeylessTable {
    KeylessTable {
        schema: schema.into(),
        table: table.into(),
        quoted: format!("{schema}.{table}"),
        identity: 'd',
        partition_of: partition_of.map(str::to_string),
        root_identity: partition_of.map(|_| 'd'),
    }
}

fn result_of<'a>(checks: &'a [ValidationCheck], id: &str) -> &'a ValidationCheck {
    checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no check {id} in {checks:#?}"))
}

fn all_succeeded(checks: &[ValidationCheck]) {
    for c in checks {
        assert_eq!(c.result, CheckResult::Succeeded, "{c:?}");
    }
}

#[test]
fn a_clean_pair_passes_everything() {
    let cfg = config("");
    all_succeeded(&source_server(&source(15), &cfg));
    all_succeeded(&target_server(&target(17), &cfg));
    all_succeeded(&source_only(
        &database(),
        Some(&source(15)),
        Mode::Online,
        &KeylessPolicy::default(),
        Some(true),
    ));
    all_succeeded(&against_target(&database(), &target(17)));
    assert_eq!(
        target_version(Some(15), &target(17)).result,
        CheckResult::Succeeded
    );
    assert_eq!(source_version(&source(12)).result, CheckResult::Succeeded);
}

#[test]
fn version_rules() {
    // Target older than the source.
    let c = target_version(Some(16), &target(15));
    assert_eq!(c.result, CheckResult::Failed);
    assert!(
        c.message.contains("older than the source's PostgreSQL 16"),
        "{c:?}"
    );
    assert!(c.fix.contains("16 or later"));
    // Same major is fine; below the supported target floor is not.
    assert_eq!(
        target_version(Some(15), &target(15)).result,
        CheckResult::Succeeded
    );
    assert_eq!(
        target_version(Some(12), &target(14)).result,
        CheckResult::Failed
    );
    // Source floor.
    assert_eq!(source_version(&source(11)).result, CheckResult::Failed);
    // Tools.
    let tools = Ok(PgTools {
        bin_dir: PathBuf::from("/usr/lib/postgresql/15/bin"),
        major: 15,
    });
    let c = pg_tools_version(&tools, Some(17));
    assert_eq!(c.result, CheckResult::Failed);
    assert!(c.message.contains("/usr/lib/postgresql/15/bin"), "{c:?}");
    assert_eq!(
        pg_tools_version(&tools, Some(15)).result,
        CheckResult::Succeeded
    );
    let missing: Result<PgTools, ToolError> = Err(ToolError::NotFound("none".into()));
    assert_eq!(
        pg_tools_version(&missing, Some(15)).result,
        CheckResult::Failed
    );
}

#[test]
fn source_server_rules() {
    let cfg = config("");
    let mut s = source(15);
    s.wal_level = "replica".into();
    s.used_replication_slots = 9; // 1 free, 2 databases
    s.used_wal_senders = 10;
    s.max_slot_wal_keep_size_mb = Some(-1);
    s.superuser = false;
    s.replication = false;
    s.prepared_transactions.push(OpenTransaction {
        what: "gid 'x'".into(),
        database: "app".into(),
        user: "u".into(),
        age_secs: 5,
    });
    let out = source_server(&s, &cfg);
    for id in [
        check::SOURCE_WAL_LEVEL,
        check::SOURCE_REPLICATION_SLOTS,
        check::SOURCE_WAL_SENDERS,
        check::SOURCE_REPLICATION_PRIVILEGE,
    ] {
        assert_eq!(result_of(&out, id).result, CheckResult::Failed, "{id}");
    }
    for id in [
        check::SOURCE_MAX_SLOT_WAL_KEEP_SIZE,
        check::SOURCE_OPEN_TRANSACTIONS,
    ] {
        assert_eq!(result_of(&out, id).result, CheckResult::Warning, "{id}");
    }
    assert!(result_of(&out, check::SOURCE_OPEN_TRANSACTIONS)
        .message
        .contains("gid 'x'"));
    // Enough slots to run but not to resume every copy (a <slot>_r
    // beside each kept slot) warns; REPLICATION without superuser passes.
    s.used_replication_slots = 8;
    s.replication = true;
    let out = source_server(&s, &cfg);
    let slots = result_of(&out, check::SOURCE_REPLICATION_SLOTS);
    assert_eq!(slots.result, CheckResult::Warning, "{slots:?}");
    assert!(slots.message.contains("<slot>_r") && slots.fix.contains("= 12;"));
    // Offline the resume reuses the temporary slot's name.
    let offline = source_server(&s, &config("mode = \"offline\""));
    assert_eq!(
        result_of(&offline, check::SOURCE_REPLICATION_SLOTS).result,
        CheckResult::Succeeded
    );
    s.used_replication_slots = 6;
    let out = source_server(&s, &cfg);
    assert_eq!(
        result_of(&out, check::SOURCE_REPLICATION_SLOTS).result,
        CheckResult::Succeeded
    );
    assert_eq!(
        result_of(&out, check::SOURCE_REPLICATION_PRIVILEGE).result,
        CheckResult::Succeeded
    );
    // PostgreSQL 12 has no max_slot_wal_keep_size.
    s.max_slot_wal_keep_size_mb = None;
    let out = source_server(&s, &cfg);
    assert_eq!(
        result_of(&out, check::SOURCE_MAX_SLOT_WAL_KEEP_SIZE).result,
        CheckResult::Warning
    );
}

#[test]
fn target_server_rules() {
    let cfg = config("");
    let mut t = target(17);
    t.superuser = false;
    t.createdb = false;
    t.can_set_replication_role = false;
    t.origin_functions_denied = vec!["pg_replication_origin_create".into()];
    t.origins_in_use = Some(5); // 5 free, 4 workers × 2 databases needed
    let out = target_server(&t, &cfg);
    for id in [
        check::TARGET_CREATE_DATABASE,
        check::TARGET_SESSION_REPLICATION_ROLE,
        check::TARGET_REPLICATION_ORIGINS,
        check::TARGET_REPLICATION_ORIGIN_CAPACITY,
    ] {
        assert_eq!(result_of(&out, id).result, CheckResult::Failed, "{id}");
    }
    assert!(result_of(&out, check::TARGET_REPLICATION_ORIGINS)
        .fix
        .contains("GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_create"));
    // Offline needs none of the apply privileges.
    let out = target_server(&t, &config("mode = \"offline\""));
    assert_eq!(
        result_of(&out, check::TARGET_SESSION_REPLICATION_ROLE).result,
        CheckResult::Succeeded
    );
    // Overwriting a database owned by someone else needs a superuser.
    t.createdb = true;
    t.databases.insert("app".into(), false);
    let out = target_server(&t, &config("overwrite_target = true"));
    assert_eq!(
        result_of(&out, check::TARGET_CREATE_DATABASE).result,
        CheckResult::Failed
    );
    // Room for the apply workers but not for the copy jobs' origins: the
    // copy would run without its journal.
    t.origins_in_use = Some(0);
    let wide = config("[copy]\njobs = 8");
    let c = target_server(&t, &wide);
    let c = result_of(&c, check::TARGET_REPLICATION_ORIGIN_CAPACITY);
    assert_eq!(c.result, CheckResult::Warning, "{c:?}");
    assert!(c.message.contains("16 needed") && c.fix.contains("copy.jobs"));
    let c = target_server(&t, &config("mode = \"offline\"\n[copy]\njobs = 8"));
    assert_eq!(
        result_of(&c, check::TARGET_REPLICATION_ORIGIN_CAPACITY).result,
        CheckResult::Warning
    );
    let c = target_server(&t, &cfg);
    assert_eq!(
        result_of(&c, check::TARGET_REPLICATION_ORIGIN_CAPACITY).result,
        CheckResult::Succeeded
    );
    t.origins_in_use = None;
    let out = target_server(&t, &cfg);
    assert_eq!(
        result_of(&out, check::TARGET_REPLICATION_ORIGIN_CAPACITY).result,
        CheckResult::Warning
    );
}

#[test]
fn target_database_and_disk_rules() {
    let mut t = target(17);
    t.databases.insert("app".into(), true);
    assert_eq!(
        target_database_absent(&t, "app", false).result,
        CheckResult::Failed
    );
    assert_eq!(
        target_database_absent(&t, "app", true).result,
        CheckResult::Warning
    );
    assert_eq!(
        target_database_absent(&t, "new", false).result,
        CheckResult::Succeeded
    );
    assert_eq!(
        target_disk_space(&t, 100, None).result,
        CheckResult::Warning
    );
    assert!(target_disk_space(&t, 2_500_000_000, None)
        .message
        .contains("2.5 GB"));
    assert_eq!(
        target_disk_space(&t, 100, Some(99)).result,
        CheckResult::Failed
    );
    assert_eq!(
        target_disk_space(&t, 100, Some(100)).result,
        CheckResult::Succeeded
    );
    assert_eq!(human_bytes(999), "999 B");
    assert_eq!(human_bytes(1_500_000), "1.5 MB");
}

#[test]
fn database_rules_online_and_offline() {
    let mut d = database();
    d.without_identity = vec![keyless_table("public", "nokey", None)];
    d.unlogged = vec!["public.scratch".into()];
    d.large_objects = 3;
    d.casts = vec!["text AS integer".into()];
    d.tablespace_objects = vec!["public.big (fast)".into()];
    d.not_carried = vec!["subscription s".into()];
    d.unreadable = vec!["secret.t".into()];
    let out = source_only(
        &d,
        Some(&source(15)),
        Mode::Online,
        &KeylessPolicy::default(),
        Some(false),
    );
    let ri = result_of(&out, check::REPLICA_IDENTITY);
    assert_eq!(ri.result, CheckResult::Failed);
    assert!(ri.message.contains("public.nokey"), "{ri:?}");
    assert!(
        ri.fix
            .contains("ALTER TABLE public.nokey REPLICA IDENTITY FULL;"),
        "{ri:?}"
    );
    assert_eq!(
        result_of(&out, check::SOURCE_TABLE_READ).result,
        CheckResult::Failed
    );
    for id in [
        check::UNLOGGED_TABLES,
        check::LARGE_OBJECTS,
        check::USER_CASTS,
        check::TABLESPACES,
        check::NOT_CARRIED,
    ] {
        assert_eq!(result_of(&out, id).result, CheckResult::Warning, "{id}");
    }
    let out = source_only(
        &d,
        Some(&source(15)),
        Mode::Offline,
        &KeylessPolicy::default(),
        Some(true),
    );
    assert_eq!(
        result_of(&out, check::REPLICA_IDENTITY).result,
        CheckResult::Succeeded
    );
    assert_eq!(
        result_of(&out, check::LARGE_OBJECTS).result,
        CheckResult::Succeeded
    );
    assert_eq!(
        result_of(&out, check::USER_CASTS).result,
        CheckResult::Succeeded
    );
}

#[test]
fn publication_rules() {
    let mut s = source(15);
    s.superuser = false;
    let mut d = database();
    assert_eq!(
        result_of(
            &source_only(&d, Some(&s), Mode::Online, &KeylessPolicy::default(), None),
            check::SOURCE_PUBLICATION_PRIVILEGE
        )
        .result,
        CheckResult::Succeeded
    );
    d.not_owned = vec!["public.t".into()];
    let c = source_only(&d, Some(&s), Mode::Online, &KeylessPolicy::default(), None);
    let c = result_of(&c, check::SOURCE_PUBLICATION_PRIVILEGE);
    assert_eq!(c.result, CheckResult::Failed);
    assert!(c.message.contains("public.t"));
    d.can_create = false;
    let c = source_only(&d, Some(&s), Mode::Online, &KeylessPolicy::default(), None);
    assert!(result_of(&c, check::SOURCE_PUBLICATION_PRIVILEGE)
        .fix
        .contains("GRANT CREATE ON DATABASE"));
}

#[test]
fn lock_table_must_hold_every_table_twice() {
    let s = source(15);
    let mut d = database();
    let check_of = |d: &SourceDatabase| {
        result_of(
            &source_only(d, Some(&s), Mode::Online, &KeylessPolicy::default(), None),
            check::SOURCE_LOCK_CAPACITY,
        )
        .clone()
    };
    assert_eq!(check_of(&d).result, CheckResult::Succeeded);
    // 6,400 entries: 3,000 tables fit pg_dump's session but not both.
    d.lockable_relations = 3_000;
    let c = check_of(&d);
    assert_eq!(c.result, CheckResult::Warning);
    assert!(
        c.fix.contains("max_locks_per_transaction = 128"),
        "{}",
        c.fix
    );
    d.lockable_relations = 12_000;
    let c = check_of(&d);
    assert_eq!(c.result, CheckResult::Failed);
    assert!(c.message.contains("12000 tables"), "{}", c.message);
    assert!(
        c.fix.contains("max_locks_per_transaction = 256"),
        "{}",
        c.fix
    );
}

#[test]
fn compatibility_rules() {
    let mut d = database();
    let mut t = target(17);
    d.extensions.push(("adminpack".into(), "2.1".into()));
    let out = against_target(&d, &t);
    let c = result_of(&out, check::EXTENSIONS);
    assert_eq!(c.result, CheckResult::Failed);
    assert!(c.message.contains("adminpack 2.1"), "{c:?}");
    t.extensions.insert(
        "adminpack".into(),
        ("2.0".into(), ["2.0".to_string()].into_iter().collect()),
    );
    assert_eq!(
        result_of(&against_target(&d, &t), check::EXTENSIONS).result,
        CheckResult::Warning
    );

    d.collations.push(CollationUse {
        schema: "pg_catalog".into(),
        name: "de_DE".into(),
        provider: "c".into(),
        locale: "de_DE.utf8".into(),
    });
    assert_eq!(
        result_of(&against_target(&d, &t), check::COLLATIONS).result,
        CheckResult::Failed
    );
    d.collations.pop();
    d.collations.push(CollationUse {
        schema: "public".into(),
        name: "german".into(),
        provider: "i".into(),
        locale: "de-DE".into(),
    });
    t.has_icu = false;
    assert_eq!(
        result_of(&against_target(&d, &t), check::COLLATIONS).result,
        CheckResult::Failed
    );

    d.collate = "en_US.UTF-8".into();
    let c = against_target(&d, &t);
    assert_eq!(
        result_of(&c, check::ENCODING_LOCALE).result,
        CheckResult::Warning
    );
    t.locales.insert("en_us.utf8".into());
    d.ctype = "en_US.UTF-8".into();
    assert_eq!(
        result_of(&against_target(&d, &t), check::ENCODING_LOCALE).result,
        CheckResult::Succeeded
    );
    d.locale_provider = "i".into();
    d.locale = Some("en-US".into());
    assert_eq!(
        result_of(&against_target(&d, &t), check::ENCODING_LOCALE).result,
        CheckResult::Failed
    );
}

#[test]
fn identity_columns_without_equality() {
    let mut d = database();
    let out = source_only(
        &d,
        Some(&source(15)),
        Mode::Online,
        &KeylessPolicy::default(),
        Some(false),
    );
    assert_eq!(
        result_of(&out, check::REPLICA_IDENTITY_EQUALITY).result,
        CheckResult::Succeeded
    );
    d.full_without_equality = vec!["public.shapes.c".into()];
    let out = source_only(
        &d,
        Some(&source(15)),
        Mode::Online,
        &KeylessPolicy::default(),
        Some(false),
    );
    let c = result_of(&out, check::REPLICA_IDENTITY_EQUALITY);
    assert_eq!(c.result, CheckResult::Warning, "{c:?}");
    assert!(
        c.message.contains("public.shapes.c") && c.fix.contains("primary key"),
        "{c:?}"
    );
    d.key_without_equality = vec!["public.k.id".into()];
    let out = source_only(
        &d,
        Some(&source(15)),
        Mode::Online,
        &KeylessPolicy::default(),
        Some(false),
    );
    let c = result_of(&out, check::REPLICA_IDENTITY_EQUALITY);
    assert_eq!(c.result, CheckResult::Failed, "{c:?}");
    assert!(c.message.contains("public.k.id"), "{c:?}");
    let out = source_only(
        &d,
        Some(&source(15)),
        Mode::Offline,
        &KeylessPolicy::default(),
        Some(false),
    );
    assert_eq!(
        result_of(&out, check::REPLICA_IDENTITY_EQUALITY).result,
        CheckResult::Succeeded
    );
}

#[test]
fn every_publication_privilege_problem_at_once() {
    let mut s = source(15);
    s.superuser = false;
    s.user = "app".into();
    let mut d = database();
    d.can_create = false;
    d.not_owned = vec!["public.t".into(), "public.u".into()];
    d.foreign_owners = vec!["\"owner1\"".into(), "\"owner2\"".into()];
    d.unreadable = vec!["secret.t".into(), "public.u".into()];
    d.schemas_without_usage = vec!["\"secret\"".into()];
    d.without_select = vec!["public.u".into()];
    let out = source_only(&d, Some(&s), Mode::Online, &KeylessPolicy::default(), None);
    let c = result_of(&out, check::SOURCE_PUBLICATION_PRIVILEGE);
    assert_eq!(c.result, CheckResult::Failed);
    assert!(
        c.message.contains("lacks CREATE") && c.message.contains("public.t"),
        "{c:?}"
    );
    assert!(
        c.fix
            .contains("GRANT CREATE ON DATABASE \"app\" TO \"app\";"),
        "{c:?}"
    );
    assert!(
        c.fix.contains("GRANT \"owner1\", \"owner2\" TO \"app\";"),
        "{c:?}"
    );
    let c = result_of(&out, check::SOURCE_TABLE_READ);
    assert!(
        c.fix
            .contains("GRANT USAGE ON SCHEMA \"secret\" TO \"app\";"),
        "{c:?}"
    );
    assert!(
        c.fix.contains("GRANT SELECT ON public.u TO \"app\";"),
        "{c:?}"
    );
}

#[test]
fn keyless_modes_and_their_risks() {
    let pats = |l: &[&str]| l.iter().map(|p| TablePattern::parse(p).unwrap()).collect();
    let policy = KeylessPolicy::new(
        KeylessMode::Fail,
        pats(&["public.history", "public.part_1"]),
        pats(&["audit.*"]),
    )
    .unwrap();
    let mut d = database();
    d.without_identity = vec![
        keyless_table("public", "history", None),
        keyless_table("audit", "log", None),
    ];
    let s = source(15);
    let out = source_only(&d, Some(&s), Mode::Online, &policy, None);
    assert_eq!(
        result_of(&out, check::REPLICA_IDENTITY).result,
        CheckResult::Succeeded
    );
    let c = result_of(&out, check::KEYLESS_INSERT_ONLY);
    assert_eq!(c.result, CheckResult::Warning);
    assert!(
        c.message.contains("public.history") && c.message.contains("diverges silently"),
        "{c:?}"
    );
    let c = result_of(&out, check::KEYLESS_REPLICA_IDENTITY_FULL);
    assert_eq!(c.result, CheckResult::Warning);
    assert!(
        c.message.contains("audit.log") && c.message.contains("WAL"),
        "{c:?}"
    );

    d.without_identity
        .push(keyless_table("public", "other", None));
    d.without_identity
        .push(keyless_table("public", "part_1", Some("public.part")));
    let out = source_only(&d, Some(&s), Mode::Online, &policy, None);
    let c = result_of(&out, check::REPLICA_IDENTITY);
    assert_eq!(c.result, CheckResult::Failed);
    assert!(
        c.message.contains("public.other") && c.message.contains("public.part_1 (of public.part)"),
        "{c:?}"
    );
    assert!(!c.message.contains("public.history"), "{c:?}");
    assert!(
        c.fix.contains("[keyless] insert_only = [\"public.other\"]"),
        "{c:?}"
    );
    assert!(c.fix.contains("replica_identity_full"), "{c:?}");
}
