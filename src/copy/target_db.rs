//! The target database itself: refuse to touch one that exists unless told
//! to, and create it with the source's encoding and locale.

use crate::conn::{quote_ident, quote_literal, ConnError, Connection};

use super::CopyError;

/// Encoding, locale and settings of the source database.
#[derive(Debug, Clone)]
pub struct DatabaseProps {
    /// OID of the database on the source.
    pub oid: u32,
    /// `UTF8`, `LATIN1`, …
    pub encoding: String,
    /// `LC_COLLATE`.
    pub collate: String,
    /// `LC_CTYPE`.
    pub ctype: String,
    /// `c`, `i` (ICU) or `b` (builtin, 17+).
    pub locale_provider: String,
    /// ICU or builtin locale, when the provider is not libc.
    pub locale: Option<String>,
    /// `ALTER DATABASE … SET` settings (`name=value`).
    pub settings: Vec<String>,
}

/// Reads the properties of `db` from a session on the source.
pub async fn source_props(conn: &mut Connection, db: &str) -> Result<DatabaseProps, CopyError> {
    let major = conn.server_major();
    let provider = if major >= 15 {
        "d.datlocprovider::text"
    } else {
        "'c'"
    };
    let locale = match major {
        17.. => "d.datlocale",
        15 | 16 => "d.daticulocale",
        _ => "NULL",
    };
    let rows = conn
        .query(
            &format!(
                "SELECT d.oid, pg_catalog.pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, {provider}, {locale}, \
                 (SELECT pg_catalog.array_to_string(s.setconfig, E'\\n') FROM pg_catalog.pg_db_role_setting s \
                  WHERE s.setdatabase = d.oid AND s.setrole = 0) \
                 FROM pg_catalog.pg_database d WHERE d.datname = $1"
            ),
            &[db.into()],
        )
        .await
        .map_err(|e| CopyError::source(db, "reading database properties", e))?;
    let r = rows
        .first()
        .ok_or_else(|| CopyError::SourceDatabaseMissing {
            db: db.to_string(),
            server: conn.connect_params().target(),
        })?;
    let m = |e: ConnError| CopyError::source(db, "reading database properties", e);
    Ok(DatabaseProps {
        oid: r.parse(0).map_err(m)?,
        encoding: r.str(1).map_err(m)?.to_string(),
        collate: r.str(2).map_err(m)?.to_string(),
        ctype: r.str(3).map_err(m)?.to_string(),
        locale_provider: r.str(4).map_err(m)?.to_string(),
        locale: r.opt_str(5).map_err(m)?.map(str::to_string),
        settings: r
            .opt_str(6)
            .map_err(m)?
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default(),
    })
}

/// True when `db` exists on the server behind `conn`.
pub async fn exists(conn: &mut Connection, db: &str) -> Result<bool, ConnError> {
    let rows = conn
        .query(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
            &[db.into()],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Refuses to overwrite a database that another migration uses: one with
/// a logical slot is some migration's source, one with pgmigrate sessions
/// is being streamed into, and one whose OID names replication origins
/// (see [`origin_marker`]) is the target of a migration that may only be
/// stopped. `DROP … WITH (FORCE)` would end those
/// sessions and lose that migration's work.
pub async fn refuse_if_in_use(conn: &mut Connection, db: &str) -> Result<(), CopyError> {
    let rows = conn
        .query(
            "SELECT (SELECT string_agg(slot_name, ', ') FROM pg_catalog.pg_replication_slots WHERE database = $1), \
             (SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = $1 \
              AND application_name LIKE 'pgmigrate%' AND pid <> pg_catalog.pg_backend_pid())::text",
            &[db.into()],
        )
        .await
        .map_err(|e| CopyError::target(db, "checking who uses the database", e))?;
    let m = |e: ConnError| CopyError::target(db, "checking who uses the database", e);
    let Some(r) = rows.first() else {
        return Ok(());
    };
    let slots = r.opt_str(0).map_err(m)?.map(str::to_string);
    let sessions: u64 = r.parse(1).map_err(m)?;
    let origins = origins_of(conn, db).await?;
    if slots.is_some() || sessions > 0 || origins.is_some() {
        let mut why = Vec::new();
        if let Some(slots) = slots {
            why.push(format!(
                "it has replication slots ({slots}): it is a migration's source"
            ));
        }
        if sessions > 0 {
            why.push(format!("{sessions} pgmigrate sessions are connected to it"));
        }
        if let Some(origins) = origins {
            why.push(format!(
                "replication origins of another migration into it exist ({origins}): cancel that migration first"
            ));
        }
        return Err(CopyError::TargetDatabaseInUse {
            db: db.to_string(),
            server: conn.connect_params().target(),
            why: why.join("; "),
        });
    }
    Ok(())
}

/// The part of an apply worker's origin name that says which target
/// database it applies into: origins are cluster-wide objects with no
/// database of their own, so the name carries the database's OID.
pub fn origin_marker(target_db_oid: u32) -> String {
    format!("_d{target_db_oid}_w")
}

/// The pgmigrate origins that apply into `db`, if any. A role that may not
/// read `pg_replication_origin` cannot have created any either.
async fn origins_of(conn: &mut Connection, db: &str) -> Result<Option<String>, CopyError> {
    use crate::conn::sqlstate::INSUFFICIENT_PRIVILEGE;
    let rows = conn
        .query(
            "SELECT string_agg(o.roname, ', ') FROM pg_catalog.pg_replication_origin o, pg_catalog.pg_database d \
             WHERE d.datname = $1 AND o.roname LIKE 'pgmigrate\\_%' \
             AND strpos(o.roname, '_d' || d.oid::text || '_w') > 0",
            &[db.into()],
        )
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) if e.code() == Some(INSUFFICIENT_PRIVILEGE) => return Ok(None),
        Err(e) => return Err(CopyError::target(db, "reading the replication origins", e)),
    };
    match rows.first() {
        None => Ok(None),
        Some(r) => Ok(r
            .opt_str(0)
            .map_err(|e| CopyError::target(db, "reading the replication origins", e))?
            .map(str::to_string)),
    }
}

/// The OID of `db` on the server of `conn`.
pub async fn oid(conn: &mut Connection, db: &str) -> Result<u32, CopyError> {
    let rows = conn
        .query(
            "SELECT oid::text FROM pg_catalog.pg_database WHERE datname = $1",
            &[db.into()],
        )
        .await
        .map_err(|e| CopyError::target(db, "reading the database's OID", e))?;
    rows.first()
        .map(|r| r.parse::<u32>(0))
        .transpose()
        .map_err(|e| CopyError::target(db, "reading the database's OID", e))?
        .ok_or_else(|| CopyError::Unexpected {
            db: db.to_string(),
            message: "the target database vanished right after CREATE DATABASE".into(),
        })
}

/// Drops `db` on the target, ending its sessions.
pub async fn drop(conn: &mut Connection, db: &str) -> Result<(), CopyError> {
    conn.execute(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(db)
    ))
    .await
    .map_err(|e| CopyError::target(db, "dropping the target database", e))?;
    Ok(())
}

/// Creates `db` on the target like the source's: same encoding, collation
/// and character classification, from template0 so nothing of the
/// target's template1 leaks in.
pub async fn create(
    conn: &mut Connection,
    db: &str,
    props: &DatabaseProps,
) -> Result<(), CopyError> {
    let mut sql = format!(
        "CREATE DATABASE {} WITH TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
        quote_ident(db),
        quote_literal(&props.encoding),
        quote_literal(&props.collate),
        quote_literal(&props.ctype)
    );
    let target_major = conn.server_major();
    match (props.locale_provider.as_str(), &props.locale) {
        ("i", Some(loc)) => sql.push_str(&format!(
            " LOCALE_PROVIDER icu {} {}",
            if target_major >= 17 {
                "LOCALE"
            } else {
                "ICU_LOCALE"
            },
            quote_literal(loc)
        )),
        ("b", Some(loc)) => sql.push_str(&format!(
            " LOCALE_PROVIDER builtin BUILTIN_LOCALE {}",
            quote_literal(loc)
        )),
        _ => {}
    }
    conn.execute(&sql)
        .await
        .map_err(|e| CopyError::target(db, "creating the target database", e))?;
    for setting in &props.settings {
        let Some((name, value)) = setting.split_once('=') else {
            continue;
        };
        let stmt = format!(
            "ALTER DATABASE {} SET {} = {}",
            quote_ident(db),
            quote_ident(name),
            quote_literal(value)
        );
        if let Err(e) = conn.execute(&stmt).await {
            tracing::warn!(setting = %setting, "database setting not carried over: {e}");
        }
    }
    Ok(())
}
