//! Checks of the two servers as wholes: versions, the dump tools, the
//! source's replication settings and privileges, the target's privileges,
//! databases and disk. Pure functions over the facts read beforehand, so
//! every rule is unit-tested without a server.

use crate::config::{Config, Mode};
use crate::control::state::ValidationCheck;
use crate::copy::pg_tools::{PgTools, ToolError};

use super::check::{self, count, fail, list, pass, warn};
use super::source_facts::{OpenTransaction, SourceServer, LONG_TRANSACTION_SECS};
use super::target_facts::TargetServer;

/// Oldest source major supported.
pub const MIN_SOURCE_MAJOR: u32 = 12;
/// Oldest target major supported.
pub const MIN_TARGET_MAJOR: u32 = 15;

/// Source major ≥ [`MIN_SOURCE_MAJOR`].
pub fn source_version(s: &SourceServer) -> ValidationCheck {
    let id = check::SOURCE_VERSION;
    if s.major >= MIN_SOURCE_MAJOR {
        pass(
            id,
            format!("source {} runs PostgreSQL {}", s.server, s.version),
        )
    } else {
        fail(
            id,
            format!(
                "source {} runs PostgreSQL {}; pgmigrate supports sources from PostgreSQL {MIN_SOURCE_MAJOR}",
                s.server, s.version
            ),
            format!("upgrade the source to PostgreSQL {MIN_SOURCE_MAJOR} or later (pg_upgrade) before migrating"),
        )
    }
}

/// Target major ≥ [`MIN_TARGET_MAJOR`] and ≥ the source's (when known).
pub fn target_version(source_major: Option<u32>, t: &TargetServer) -> ValidationCheck {
    let id = check::TARGET_VERSION;
    if t.major < MIN_TARGET_MAJOR {
        return fail(
            id,
            format!(
                "target {} runs PostgreSQL {}; pgmigrate supports targets from PostgreSQL {MIN_TARGET_MAJOR}",
                t.server, t.version
            ),
            format!("use a target running PostgreSQL {MIN_TARGET_MAJOR} or later"),
        );
    }
    match source_major {
        Some(s) if t.major < s => fail(
            id,
            format!(
                "target {} runs PostgreSQL {}, older than the source's PostgreSQL {s}; a dump cannot go to an older major",
                t.server, t.version
            ),
            format!("use a target running PostgreSQL {s} or later"),
        ),
        Some(s) => pass(
            id,
            format!(
                "target {} runs PostgreSQL {} (source: {s})",
                t.server, t.version
            ),
        ),
        None => pass(
            id,
            format!("target {} runs PostgreSQL {}", t.server, t.version),
        ),
    }
}

/// pg_dump/pg_restore found and at least as new as the source.
pub fn pg_tools_version(
    tools: &Result<PgTools, ToolError>,
    source_major: Option<u32>,
) -> ValidationCheck {
    let id = check::PG_TOOLS_VERSION;
    let tools = match tools {
        Ok(t) => t,
        Err(e) => {
            return fail(
                id,
                format!("pg_dump/pg_restore: {e}"),
                "install the PostgreSQL client binaries or set pg_bin_dir",
            )
        }
    };
    let dir = tools.bin_dir.display();
    match source_major.map(|m| tools.check_source(m)) {
        Some(Err(e)) => fail(
            id,
            e.to_string(),
            format!(
                "install PostgreSQL {} or newer client binaries and point pg_bin_dir at their bin directory",
                source_major.unwrap_or(tools.major)
            ),
        ),
        _ => pass(
            id,
            format!("pg_dump/pg_restore {} in {dir}", tools.major),
        ),
    }
}

/// Everything about the source server as a whole.
pub fn source_server(s: &SourceServer, config: &Config) -> Vec<ValidationCheck> {
    let needed = config.databases.len() as u64;
    // Offline the slot is temporary: a resume creates the new one under
    // the dead one's name.
    let resume = if config.mode == Mode::Online {
        needed
    } else {
        0
    };
    let mut checks = vec![
        wal_level(s),
        replication_slots(s, needed, resume),
        wal_senders(s, needed, resume),
        max_slot_wal_keep_size(s),
        replication_privilege(s),
        open_transactions(s),
    ];
    checks.extend(super::ddl_check::ddl_replication(s, config));
    checks
}

/// Logical decoding, which the streaming needs, only runs at `wal_level = logical`.
fn wal_level(s: &SourceServer) -> ValidationCheck {
    if s.wal_level == "logical" {
        pass(
            check::SOURCE_WAL_LEVEL,
            format!("source {}: wal_level = logical", s.server),
        )
    } else {
        fail(
            check::SOURCE_WAL_LEVEL,
            format!(
                "source {}: wal_level is {}; logical decoding needs logical",
                s.server, s.wal_level
            ),
            "ALTER SYSTEM SET wal_level = logical; then restart the source server",
        )
    }
}

/// One free replication slot per database; online, a copy resumed after a
/// crash takes a temporary `<slot>_r` slot for its new snapshot beside the
/// kept one (`resume`: one more per database).
fn replication_slots(s: &SourceServer, needed: u64, resume: u64) -> ValidationCheck {
    source_capacity(
        check::SOURCE_REPLICATION_SLOTS,
        s,
        ("replication slots", "max_replication_slots"),
        (s.max_replication_slots, s.used_replication_slots),
        needed,
        resume,
    )
}

/// One free WAL sender per database, for its stream; a resumed copy's
/// `<slot>_r` snapshot session holds one more (the killed run's may not
/// have ended yet).
fn wal_senders(s: &SourceServer, needed: u64, resume: u64) -> ValidationCheck {
    source_capacity(
        check::SOURCE_WAL_SENDERS,
        s,
        ("WAL senders", "max_wal_senders"),
        (s.max_wal_senders, s.used_wal_senders),
        needed,
        resume,
    )
}

/// Failed below what a run needs, a warning below what resuming every
/// database's copy at once needs.
fn source_capacity(
    id: &str,
    s: &SourceServer,
    (what, setting): (&str, &str),
    (max, used): (u64, u64),
    needed: u64,
    resume: u64,
) -> ValidationCheck {
    let free = max.saturating_sub(used);
    let server = &s.server;
    let fix = |n: u64| {
        let drop = if id == check::SOURCE_REPLICATION_SLOTS {
            ", or drop unused slots (pg_drop_replication_slot)"
        } else {
            ""
        };
        format!(
            "ALTER SYSTEM SET {setting} = {}; then restart the source{drop}",
            used + n
        )
    };
    if free < needed {
        return fail(
            id,
            format!(
                "source {server}: {free} of {max} {what} free ({used} in use), {needed} needed (one per database)"
            ),
            fix(needed + resume),
        );
    }
    if free < needed + resume {
        return warn(
            id,
            format!(
                "source {server}: {free} of {max} {what} free ({used} in use), {needed} needed (one per database), \
                 but a copy resumed after a crash also takes a temporary <slot>_r slot and its WAL sender for its new snapshot: \
                 {} needed to resume every database at once; short of them a resume fails and retries",
                needed + resume
            ),
            fix(needed + resume),
        );
    }
    let resume_note = if resume > 0 {
        format!(", {} to resume every copy", needed + resume)
    } else {
        String::new()
    };
    pass(
        id,
        format!("source {server}: {free} of {max} {what} free, {needed} needed{resume_note}"),
    )
}

/// Warns when nothing bounds the WAL a stalled slot retains on the source.
fn max_slot_wal_keep_size(s: &SourceServer) -> ValidationCheck {
    match s.max_slot_wal_keep_size_mb {
        None => warn(
            check::SOURCE_MAX_SLOT_WAL_KEEP_SIZE,
            format!(
                "source {}: PostgreSQL {} has no max_slot_wal_keep_size; a stalled migration retains WAL without limit",
                s.server, s.major
            ),
            "watch the source's free disk (pgmigrate_source_retained_wal_bytes) while the migration runs",
        ),
        Some(mb) if mb < 0 => warn(
            check::SOURCE_MAX_SLOT_WAL_KEEP_SIZE,
            format!(
                "source {}: max_slot_wal_keep_size is unlimited; a stalled migration retains WAL until the disk is full",
                s.server
            ),
            "ALTER SYSTEM SET max_slot_wal_keep_size = '<size your disk allows>'; SELECT pg_reload_conf();",
        ),
        Some(mb) => pass(
            check::SOURCE_MAX_SLOT_WAL_KEEP_SIZE,
            format!(
                "source {}: max_slot_wal_keep_size = {mb}MB bounds the WAL a slot retains",
                s.server
            ),
        ),
    }
}

/// Creating a replication slot needs REPLICATION (or SUPERUSER).
fn replication_privilege(s: &SourceServer) -> ValidationCheck {
    if s.superuser || s.replication {
        pass(
            check::SOURCE_REPLICATION_PRIVILEGE,
            format!(
                "source {}: user \"{}\" has {}",
                s.server,
                s.user,
                if s.superuser {
                    "SUPERUSER"
                } else {
                    "REPLICATION"
                }
            ),
        )
    } else {
        fail(
            check::SOURCE_REPLICATION_PRIVILEGE,
            format!(
                "source {}: user \"{}\" has neither REPLICATION nor SUPERUSER; it cannot create a replication slot",
                s.server, s.user
            ),
            format!(
                "ALTER ROLE {} REPLICATION; (on a managed service, grant its replication role)",
                crate::conn::quote_ident(&s.user)
            ),
        )
    }
}

fn open_transactions(s: &SourceServer) -> ValidationCheck {
    let id = check::SOURCE_OPEN_TRANSACTIONS;
    if s.long_transactions.is_empty() && s.prepared_transactions.is_empty() {
        return pass(
            id,
            format!(
                "source {}: no prepared transactions and none open longer than {}s",
                s.server, LONG_TRANSACTION_SECS
            ),
        );
    }
    let describe = |t: &OpenTransaction| {
        format!(
            "{} in {} by {} ({}s)",
            t.what, t.database, t.user, t.age_secs
        )
    };
    let mut parts = Vec::new();
    if !s.long_transactions.is_empty() {
        let names: Vec<String> = s.long_transactions.iter().map(describe).collect();
        parts.push(format!(
            "{} open longer than {LONG_TRANSACTION_SECS}s: {}",
            count(names.len(), "transaction"),
            list(&names)
        ));
    }
    if !s.prepared_transactions.is_empty() {
        let names: Vec<String> = s.prepared_transactions.iter().map(describe).collect();
        parts.push(format!(
            "{}: {}",
            count(names.len(), "prepared transaction"),
            list(&names)
        ));
    }
    warn(
        id,
        format!(
            "source {}: {}; creating the replication slot waits until they end",
            s.server,
            parts.join("; ")
        ),
        "end them before starting (COMMIT/ROLLBACK PREPARED '<gid>', pg_terminate_backend(<pid>)), or expect the start to wait",
    )
}

/// Refuses a target that is the source server itself, however it is
/// addressed: every database would "already exist" there, and overwriting
/// it would drop the source.
pub fn target_not_source(s: &SourceServer, t: &TargetServer) -> ValidationCheck {
    if s.identity.same_server(&t.identity) {
        fail(
            check::TARGET_NOT_SOURCE,
            format!(
                "the target {} is the source server {} (same postmaster started {} UTC, port {})",
                t.server, s.server, t.identity.started, t.identity.port
            ),
            "point [target] at a different PostgreSQL server",
        )
    } else {
        pass(
            check::TARGET_NOT_SOURCE,
            format!("the target {} is another server than the source", t.server),
        )
    }
}

/// Everything about the target server as a whole.
pub fn target_server(t: &TargetServer, config: &Config) -> Vec<ValidationCheck> {
    let mut out = vec![create_database(t, config)];
    if config.mode == Mode::Offline {
        for id in [
            check::TARGET_SESSION_REPLICATION_ROLE,
            check::TARGET_REPLICATION_ORIGINS,
        ] {
            out.push(pass(
                id,
                format!("target {}: not needed in offline mode", t.server),
            ));
        }
        // The copy journals with origins offline too.
        out.push(replication_origin_capacity(t, config));
        return out;
    }
    out.push(session_replication_role(t));
    out.push(replication_origins(t));
    out.push(replication_origin_capacity(t, config));
    out
}

/// Applying changes sets `session_replication_role = replica`, so that
/// the target's triggers and foreign-key checks do not fire on replicated rows.
fn session_replication_role(t: &TargetServer) -> ValidationCheck {
    let user = crate::conn::quote_ident(&t.user);
    if t.can_set_replication_role {
        pass(
            check::TARGET_SESSION_REPLICATION_ROLE,
            format!(
                "target {}: user \"{}\" may set session_replication_role",
                t.server, t.user
            ),
        )
    } else {
        fail(
            check::TARGET_SESSION_REPLICATION_ROLE,
            format!(
                "target {}: user \"{}\" may not set session_replication_role, which applying changes needs",
                t.server, t.user
            ),
            format!("GRANT SET ON PARAMETER session_replication_role TO {user};"),
        )
    }
}

/// The workers track their progress in replication origins, atomically
/// with the changes they apply.
fn replication_origins(t: &TargetServer) -> ValidationCheck {
    let user = crate::conn::quote_ident(&t.user);
    if t.origin_functions_denied.is_empty() {
        pass(
            check::TARGET_REPLICATION_ORIGINS,
            format!(
                "target {}: user \"{}\" may use replication origins",
                t.server, t.user
            ),
        )
    } else {
        let grants: Vec<String> = t
            .origin_functions_denied
            .iter()
            .map(|f| format!("GRANT EXECUTE ON FUNCTION pg_catalog.{f} TO {user};"))
            .collect();
        fail(
            check::TARGET_REPLICATION_ORIGINS,
            format!(
                "target {}: user \"{}\" may not execute {}",
                t.server,
                t.user,
                list(&t.origin_functions_denied)
            ),
            format!("{} or use a superuser", grants.join(" ")),
        )
    }
}

/// Origins per database: one per copy job while it copies (its journal
/// commits with them), then one per apply worker once streaming (the copy's
/// are dropped before). Short of the workers' the stream cannot run;
/// short of the copy's the copy runs unjournaled, and a crash restarts it.
fn replication_origin_capacity(t: &TargetServer, config: &Config) -> ValidationCheck {
    let id = check::TARGET_REPLICATION_ORIGIN_CAPACITY;
    let dbs = config.databases.len() as u64;
    let jobs = config.copy.jobs as u64;
    let workers = match config.mode {
        Mode::Online => config.apply.workers as u64,
        Mode::Offline => 0,
    };
    let for_apply = workers * dbs;
    let needed = jobs.max(workers) * dbs;
    let databases = count(config.databases.len(), "database");
    let why = format!("{jobs} copy jobs, then {workers} apply workers, × {databases}");
    let setting = if t.major >= 18 {
        "max_active_replication_origins"
    } else {
        "max_replication_slots"
    };
    let (server, capacity) = (&t.server, t.origin_capacity);
    let Some(used) = t.origins_in_use else {
        return warn(
            id,
            format!(
                "target {server}: {setting} = {capacity}, {needed} origins needed ({why}); origins in use cannot be counted by \"{}\"",
                t.user
            ),
            format!("make sure {setting} minus the origins in use is at least {needed}"),
        );
    };
    let free = capacity.saturating_sub(used);
    if free < for_apply {
        return fail(
            id,
            format!(
                "target {server}: room for {free} more replication origins ({setting} = {capacity}, {used} in use), {for_apply} needed for the apply workers ({workers} workers × {databases})"
            ),
            format!(
                "ALTER SYSTEM SET {setting} = {}; then restart the target, or lower apply.workers",
                used + needed
            ),
        );
    }
    if free < needed {
        return warn(
            id,
            format!(
                "target {server}: room for {free} more replication origins ({setting} = {capacity}, {used} in use), {needed} needed ({why}); \
                 a copy without its origins keeps no journal, and a crash during it copies everything again"
            ),
            format!(
                "ALTER SYSTEM SET {setting} = {}; then restart the target, or lower copy.jobs",
                used + needed
            ),
        );
    }
    pass(
        id,
        format!(
            "target {server}: room for {free} more replication origins ({setting} = {capacity}), {needed} needed ({why})"
        ),
    )
}

fn create_database(t: &TargetServer, config: &Config) -> ValidationCheck {
    let id = check::TARGET_CREATE_DATABASE;
    let user = crate::conn::quote_ident(&t.user);
    // Every problem at once, so one validation round lists every fix.
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    if !(t.superuser || t.createdb) {
        problems.push("may not create databases".to_string());
        fixes.push(format!("ALTER ROLE {user} CREATEDB;"));
    }
    // Overwriting drops the database first, which only its owner may do.
    let not_owned: Vec<String> = config
        .databases
        .iter()
        .filter(|db| config.overwrite_target && t.databases.get(*db) == Some(&false))
        .cloned()
        .collect();
    if !t.superuser && !not_owned.is_empty() {
        problems.push(format!(
            "cannot drop {} it does not own, which overwrite_target needs",
            list(&not_owned)
        ));
        let statements: Vec<String> = not_owned
            .iter()
            .map(|db| {
                format!(
                    "ALTER DATABASE {} OWNER TO {user};",
                    crate::conn::quote_ident(db)
                )
            })
            .collect();
        fixes.push(format!(
            "drop them as their owner or a superuser, or make this user their owner: {}",
            statements.join(" ")
        ));
    }
    if !problems.is_empty() {
        return fail(
            id,
            format!(
                "target {}: user \"{}\" {}",
                t.server,
                t.user,
                problems.join("; and ")
            ),
            fixes.join(" "),
        );
    }
    pass(
        id,
        format!(
            "target {}: user \"{}\" may create databases",
            t.server, t.user
        ),
    )
}

/// Per database: not on the target yet, unless `overwrite_target`.
pub fn target_database_absent(t: &TargetServer, db: &str, overwrite: bool) -> ValidationCheck {
    let id = check::TARGET_DATABASE_ABSENT;
    match (t.databases.contains_key(db), overwrite) {
        (false, _) => pass(
            id,
            format!("database \"{db}\" does not exist on the target {} yet", t.server),
        ),
        (true, true) => warn(
            id,
            format!(
                "database \"{db}\" exists on the target {}; overwrite_target is on, so it will be dropped and recreated",
                t.server
            ),
            "nothing, if its contents may be lost",
        ),
        (true, false) => fail(
            id,
            format!("database \"{db}\" already exists on the target {}", t.server),
            format!(
                "drop it (DROP DATABASE {};), or set overwrite_target = true to have it dropped and recreated",
                crate::conn::quote_ident(db)
            ),
        ),
    }
}

/// Free disk on the target against what the source databases take.
/// `free` is the measured free space when the target is local.
pub fn target_disk_space(t: &TargetServer, needed: u64, free: Option<u64>) -> ValidationCheck {
    let id = check::TARGET_DISK_SPACE;
    let need = human_bytes(needed);
    match free {
        None => warn(
            id,
            format!(
                "target {}: free disk cannot be checked remotely; the source databases take {need}",
                t.server
            ),
            format!("make sure the target's data directory has more than {need} free, plus room for WAL"),
        ),
        Some(f) if f < needed => fail(
            id,
            format!(
                "target {}: {} free in the data directory, the source databases take {need}",
                t.server,
                human_bytes(f)
            ),
            format!("free or add at least {} on the target", human_bytes(needed - f)),
        ),
        Some(f) => pass(
            id,
            format!(
                "target {}: {} free in the data directory, the source databases take {need}",
                t.server,
                human_bytes(f)
            ),
        ),
    }
}

/// `1.5 GB`, `12 MB`, `800 B`, in powers of 1000 like `pg_size_pretty`'s
/// readers expect at a glance.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}
