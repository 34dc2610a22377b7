//! Which server a session is really on. Host names lie (`localhost`, a
//! DNS alias, a port forward, a socket path and a TCP address all reach the
//! same postmaster), so the target is compared to the source by what the
//! server itself reports: a target that is the source would have its
//! "existing target database" dropped, and that database is the source.

use crate::conn::{ConnError, Connection};

/// What identifies one running PostgreSQL server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerIdentity {
    /// `pg_control_system().system_identifier`, when the user may call it.
    /// A physical standby or a restored base backup shares it, so it only
    /// tells servers apart, never proves them the same.
    pub system_identifier: Option<String>,
    /// `pg_postmaster_start_time()` to the microsecond.
    pub started: String,
    /// The server's own `port` setting (not the one the client dialled).
    pub port: String,
}

impl ServerIdentity {
    /// Reads the identity of the server behind `conn`.
    pub async fn read(conn: &mut Connection) -> Result<ServerIdentity, ConnError> {
        let rows = conn
            .simple_query(
                "SELECT CASE WHEN pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE') \
                 THEN (SELECT system_identifier::text FROM pg_catalog.pg_control_system()) END, \
                 to_char(pg_catalog.pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), \
                 current_setting('port')",
            )
            .await?;
        let r = rows
            .first()
            .ok_or_else(|| ConnError::Protocol("no row for the server identity".to_string()))?;
        Ok(ServerIdentity {
            system_identifier: r.opt_str(0)?.map(str::to_string),
            started: r.str(1)?.to_string(),
            port: r.str(2)?.to_string(),
        })
    }

    /// True when both sessions are on one running server: the same
    /// postmaster start (to the microsecond) on the same port, and no
    /// differing system identifier.
    pub fn same_server(&self, other: &ServerIdentity) -> bool {
        let ids_differ = matches!(
            (&self.system_identifier, &other.system_identifier),
            (Some(a), Some(b)) if a != b
        );
        !ids_differ && self.started == other.started && self.port == other.port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sys: Option<&str>, started: &str, port: &str) -> ServerIdentity {
        ServerIdentity {
            system_identifier: sys.map(str::to_string),
            started: started.to_string(),
            port: port.to_string(),
        }
    }

    #[test]
    fn same_postmaster_is_the_same_server() {
        let a = id(Some("1"), "2026-12-02 10:00:00.123456", "5432");
        assert!(a.same_server(&a.clone()));
        assert!(a.same_server(&id(None, "2026-12-02 10:00:00.123456", "5432")));
    }

    #[test]
    fn another_start_port_or_system_is_another_server() {
        let a = id(Some("1"), "2026-12-02 10:00:00.123456", "5432");
        assert!(!a.same_server(&id(Some("1"), "2026-12-02 10:00:00.123457", "5432")));
        assert!(!a.same_server(&id(Some("1"), "2026-12-02 10:00:00.123456", "5433")));
        assert!(!a.same_server(&id(Some("2"), "2026-12-02 10:00:00.123456", "5432")));
    }
}
