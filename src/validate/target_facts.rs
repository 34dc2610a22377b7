//! What the checks need to know about the target server, read through a
//! session on its maintenance database. Reading only.

use std::collections::{BTreeMap, BTreeSet};

use crate::conn::{ConnError, Connection};
use crate::copy::server_identity::ServerIdentity;

use super::source_facts::first;

/// The functions an apply worker calls to record its progress.
const ORIGIN_FUNCTIONS: &[&str] = &[
    "pg_replication_origin_create",
    "pg_replication_origin_session_setup",
    "pg_replication_origin_xact_setup",
    "pg_replication_origin_advance",
];

/// The target server as the checks see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetServer {
    /// `host:port` or socket, for messages.
    pub server: String,
    /// Major version.
    pub major: u32,
    /// `server_version`.
    pub version: String,
    /// Which running server this is.
    pub identity: ServerIdentity,
    /// The login role.
    pub user: String,
    /// `rolsuper`.
    pub superuser: bool,
    /// `rolcreatedb`.
    pub createdb: bool,
    /// May `SET session_replication_role`.
    pub can_set_replication_role: bool,
    /// Replication origin functions the user may not execute.
    pub origin_functions_denied: Vec<String>,
    /// Replication origin states the server has room for.
    pub origin_capacity: u64,
    /// Origin states in use; `None` when the user may not see them.
    pub origins_in_use: Option<u64>,
    /// Every database on the target, with whether the user owns it.
    pub databases: BTreeMap<String, bool>,
    /// Available extensions: name → (default version, all versions).
    pub extensions: BTreeMap<String, (String, BTreeSet<String>)>,
    /// Collations: `(schema, name)` → encodings they exist for (`""` = any).
    pub collations: BTreeMap<(String, String), BTreeSet<String>>,
    /// libc locales known to the target (collations' and databases'),
    /// normalized with [`normalize_locale`].
    pub locales: BTreeSet<String>,
    /// The target was built with ICU.
    pub has_icu: bool,
    /// `data_directory`, `port` and postmaster start (epoch seconds), when
    /// the user may read them: enough to find the data directory on this
    /// machine and prove it is this server's.
    pub data_directory: Option<(String, u16, i64)>,
}

/// `en_US.UTF-8` and `en_US.utf8` name the same locale: lower-case and drop
/// the codeset's punctuation so they compare equal.
pub fn normalize_locale(locale: &str) -> String {
    match locale.split_once('.') {
        Some((lang, codeset)) => {
            let codeset: String = codeset
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '@')
                .collect();
            format!(
                "{}.{}",
                lang.to_ascii_lowercase(),
                codeset.to_ascii_lowercase()
            )
        }
        None => locale.to_ascii_lowercase(),
    }
}

impl TargetServer {
    /// Reads the facts through `conn`.
    pub async fn read(conn: &mut Connection) -> Result<TargetServer, ConnError> {
        let mut facts = TargetServer::read_settings(conn).await?;
        facts.identity = ServerIdentity::read(conn).await?;
        facts.read_origins(conn).await?;
        facts.read_databases(conn).await?;
        facts.read_extensions(conn).await?;
        facts.read_collations(conn).await?;
        Ok(facts)
    }

    /// The login role, its privileges and the server settings, in one
    /// query; the rest of the facts start empty.
    async fn read_settings(conn: &mut Connection) -> Result<TargetServer, ConnError> {
        let major = conn.server_major();
        let srr = if major >= 15 {
            "has_parameter_privilege('session_replication_role', 'SET')"
        } else {
            "r.rolsuper"
        };
        let capacity = if major >= 18 {
            "current_setting('max_active_replication_origins')"
        } else {
            "current_setting('max_replication_slots')"
        };
        let rows = conn
            .simple_query(&format!(
                "SELECT r.rolname, r.rolsuper, r.rolcreatedb, {srr}, {capacity}, \
                 EXISTS (SELECT 1 FROM pg_catalog.pg_collation WHERE collprovider = 'i'), \
                 CASE WHEN pg_has_role('pg_read_all_settings', 'USAGE') \
                   THEN current_setting('data_directory') END, \
                 current_setting('port'), \
                 extract(epoch FROM pg_postmaster_start_time())::bigint \
                 FROM pg_catalog.pg_roles r WHERE r.rolname = current_user"
            ))
            .await?;
        let r = first(&rows, "the target settings")?;
        let data_directory = match r.opt_str(6)? {
            Some(dir) => Some((dir.to_string(), r.parse(7)?, r.parse(8)?)),
            None => None,
        };
        Ok(TargetServer {
            server: conn.connect_params().target(),
            major,
            version: conn.parameter("server_version").unwrap_or("").to_string(),
            user: r.str(0)?.to_string(),
            superuser: r.bool(1)?,
            createdb: r.bool(2)?,
            can_set_replication_role: r.bool(3)?,
            origin_capacity: r.parse(4)?,
            has_icu: r.bool(5)?,
            data_directory,
            ..TargetServer::default()
        })
    }

    /// Whether the user may use replication origins, and how many are in use.
    async fn read_origins(&mut self, conn: &mut Connection) -> Result<(), ConnError> {
        let list = ORIGIN_FUNCTIONS
            .iter()
            .map(|f| format!("'{f}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = conn
            .simple_query(&format!(
                "SELECT DISTINCT p.proname FROM pg_catalog.pg_proc p \
                 WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname IN ({list}) \
                 AND NOT has_function_privilege(p.oid, 'EXECUTE') ORDER BY 1"
            ))
            .await?;
        self.origin_functions_denied = super::source_facts::strings(&rows, 0)?;
        // Only privileged roles may list origin progress; without it the
        // capacity check says it could not count.
        self.origins_in_use = match conn
            .simple_query("SELECT count(*) FROM pg_catalog.pg_replication_origin_status")
            .await
        {
            Ok(rows) => Some(first(&rows, "replication origins")?.parse(0)?),
            Err(e) if e.code() == Some(crate::conn::sqlstate::INSUFFICIENT_PRIVILEGE) => None,
            Err(e) => return Err(e),
        };
        Ok(())
    }

    /// Every database, whether the user owns it, and its locales.
    async fn read_databases(&mut self, conn: &mut Connection) -> Result<(), ConnError> {
        for r in conn
            .simple_query(
                "SELECT datname, pg_has_role(datdba, 'USAGE'), datcollate, datctype \
                 FROM pg_catalog.pg_database",
            )
            .await?
        {
            self.databases.insert(r.str(0)?.to_string(), r.bool(1)?);
            self.locales.insert(normalize_locale(r.str(2)?));
            self.locales.insert(normalize_locale(r.str(3)?));
        }
        Ok(())
    }

    /// The extensions the target could install, with every version.
    async fn read_extensions(&mut self, conn: &mut Connection) -> Result<(), ConnError> {
        for r in conn
            .simple_query(
                "SELECT e.name, coalesce(e.default_version, ''), v.version \
                 FROM pg_catalog.pg_available_extensions e \
                 JOIN pg_catalog.pg_available_extension_versions v ON v.name = e.name",
            )
            .await?
        {
            let entry = self
                .extensions
                .entry(r.str(0)?.to_string())
                .or_insert_with(|| (r.str(1).unwrap_or("").to_string(), BTreeSet::new()));
            entry.1.insert(r.str(2)?.to_string());
        }
        Ok(())
    }

    /// The collations and the libc locales they name.
    async fn read_collations(&mut self, conn: &mut Connection) -> Result<(), ConnError> {
        for r in conn
            .simple_query(
                "SELECT n.nspname, c.collname, pg_catalog.pg_encoding_to_char(c.collencoding), \
                 c.collprovider::text, coalesce(c.collcollate, '') \
                 FROM pg_catalog.pg_collation c JOIN pg_catalog.pg_namespace n ON n.oid = c.collnamespace",
            )
            .await?
        {
            self
                .collations
                .entry((r.str(0)?.to_string(), r.str(1)?.to_string()))
                .or_default()
                .insert(r.str(2)?.to_string());
            if r.str(3)? == "c" {
                self.locales.insert(normalize_locale(r.str(4)?));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_locale;

    #[test]
    fn locale_spellings_compare_equal() {
        assert_eq!(
            normalize_locale("en_US.UTF-8"),
            normalize_locale("en_US.utf8")
        );
        assert_eq!(normalize_locale("de_DE.ISO-8859-1"), "de_de.iso88591");
        assert_eq!(normalize_locale("C"), "c");
        assert_ne!(
            normalize_locale("en_US.UTF-8"),
            normalize_locale("en_GB.UTF-8")
        );
    }
}
