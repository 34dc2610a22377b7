//! Roles are global objects that pg_dump of one database does not carry,
//! yet its ownership and grants name them. Missing roles are created on the
//! target (without passwords and without superuser, replication or
//! bypassrls powers, which the DBA grants deliberately).

use crate::conn::{quote_ident, Connection};

use super::CopyError;

/// Creates on the target every source role that is missing there, with
/// memberships. Returns false when the target user may not create roles,
/// in which case the schema is restored without owners and grants.
pub async fn copy_missing(
    source: &mut Connection,
    target: &mut Connection,
    db: &str,
) -> Result<bool, CopyError> {
    let src = source
        .simple_query(
            "SELECT rolname, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolconnlimit \
             FROM pg_catalog.pg_roles WHERE rolname !~ '^pg_' ORDER BY oid",
        )
        .await
        .map_err(|e| CopyError::source(db, "listing roles", e))?;
    let existing = target
        .simple_query("SELECT rolname FROM pg_catalog.pg_roles")
        .await
        .map_err(|e| CopyError::target(db, "listing roles", e))?;
    let existing: std::collections::HashSet<String> = existing
        .iter()
        .filter_map(|r| r.str(0).ok().map(str::to_string))
        .collect();
    let mut created = Vec::new();
    for r in &src {
        let m = |e| CopyError::source(db, "reading roles", e);
        let name = r.str(0).map_err(m)?;
        if existing.contains(name) {
            continue;
        }
        let flag = |i: usize, yes: &str, no: &str| -> Result<String, CopyError> {
            Ok(if r.bool(i).map_err(m)? {
                yes.into()
            } else {
                no.into()
            })
        };
        let sql = format!(
            "CREATE ROLE {} {} {} {} {} CONNECTION LIMIT {}",
            quote_ident(name),
            flag(1, "INHERIT", "NOINHERIT")?,
            flag(2, "CREATEROLE", "NOCREATEROLE")?,
            flag(3, "CREATEDB", "NOCREATEDB")?,
            flag(4, "LOGIN", "NOLOGIN")?,
            r.parse::<i32>(5).map_err(m)?
        );
        match target.execute(&sql).await {
            Ok(_) => created.push(name.to_string()),
            Err(e) if e.code() == Some(crate::conn::sqlstate::INSUFFICIENT_PRIVILEGE) => {
                tracing::warn!(
                    db,
                    role = name,
                    "cannot create roles on the target; restoring without owners and grants"
                );
                return Ok(false);
            }
            // 42710: exists; 23505: another database of this migration
            // created it at the same moment (CREATE ROLE races surface as
            // a unique violation on pg_authid).
            Err(e)
                if matches!(
                    e.code(),
                    Some(
                        crate::conn::sqlstate::DUPLICATE_OBJECT
                            | crate::conn::sqlstate::UNIQUE_VIOLATION
                    )
                ) => {}
            Err(e) => return Err(CopyError::target(db, &format!("creating role {name}"), e)),
        }
    }
    if !created.is_empty() {
        tracing::info!(roles = ?created, "created roles missing on the target (no passwords)");
        let members = source
            .simple_query(
                "SELECT r.rolname, m.rolname FROM pg_catalog.pg_auth_members a \
                 JOIN pg_catalog.pg_roles r ON r.oid = a.roleid JOIN pg_catalog.pg_roles m ON m.oid = a.member \
                 WHERE r.rolname !~ '^pg_' OR m.rolname !~ '^pg_'",
            )
            .await
            .map_err(|e| CopyError::source(db, "listing role memberships", e))?;
        for r in &members {
            let (Ok(role), Ok(member)) = (r.str(0), r.str(1)) else {
                continue;
            };
            if created.iter().any(|c| c == role || c == member) {
                let sql = format!("GRANT {} TO {}", quote_ident(role), quote_ident(member));
                if let Err(e) = target.execute(&sql).await {
                    tracing::warn!("{sql}: {e}");
                }
            }
        }
    }
    Ok(true)
}
