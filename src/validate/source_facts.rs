//! What the checks need to know about the source server, read in a few
//! catalog queries. Reading only: nothing here changes the server.

use crate::conn::{ConnError, Connection, Row};
use crate::copy::server_identity::ServerIdentity;

/// Transactions open longer than this (with an xid) are reported: logical
/// slot creation waits for every transaction running when it starts.
pub const LONG_TRANSACTION_SECS: u64 = 300;

/// The source server as the checks see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceServer {
    /// `host:port` or socket, for messages.
    pub server: String,
    /// Major version (12, 15, …).
    pub major: u32,
    /// `server_version` as reported.
    pub version: String,
    /// `wal_level`.
    pub wal_level: String,
    /// `max_replication_slots`.
    pub max_replication_slots: u64,
    /// Slots that exist now.
    pub used_replication_slots: u64,
    /// `max_wal_senders`.
    pub max_wal_senders: u64,
    /// WAL senders running now.
    pub used_wal_senders: u64,
    /// `max_slot_wal_keep_size` in MB; `None` on PostgreSQL 12, which lacks it.
    pub max_slot_wal_keep_size_mb: Option<i64>,
    /// Entries of the shared lock table: `max_locks_per_transaction` ×
    /// (`max_connections` + `max_prepared_transactions`).
    pub lock_capacity: u64,
    /// `max_locks_per_transaction`.
    pub max_locks_per_transaction: u64,
    /// Which running server this is.
    pub identity: ServerIdentity,
    /// The login role.
    pub user: String,
    /// `rolsuper`.
    pub superuser: bool,
    /// `rolreplication`.
    pub replication: bool,
    /// Transactions with an xid open longer than [`LONG_TRANSACTION_SECS`].
    pub long_transactions: Vec<OpenTransaction>,
    /// Prepared (two-phase) transactions.
    pub prepared_transactions: Vec<OpenTransaction>,
}

/// A transaction that holds slot creation back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenTransaction {
    /// `pid 123` or `gid 'x'`.
    pub what: String,
    /// Database it runs in.
    pub database: String,
    /// Role running it.
    pub user: String,
    /// Seconds since it began (or was prepared).
    pub age_secs: u64,
}

impl SourceServer {
    /// Reads the facts through `conn`.
    pub async fn read(conn: &mut Connection) -> Result<SourceServer, ConnError> {
        let server = conn.connect_params().target();
        let rows = conn
            .simple_query(
                "SELECT current_setting('wal_level'), \
                 current_setting('max_replication_slots'), \
                 (SELECT count(*) FROM pg_catalog.pg_replication_slots), \
                 current_setting('max_wal_senders'), \
                 (SELECT count(*) FROM pg_catalog.pg_stat_replication), \
                 (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'max_slot_wal_keep_size'), \
                 r.rolname, r.rolsuper, r.rolreplication, \
                 current_setting('max_locks_per_transaction')::bigint, \
                 current_setting('max_locks_per_transaction')::bigint * \
                   (current_setting('max_connections')::bigint + current_setting('max_prepared_transactions')::bigint) \
                 FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
            )
            .await?;
        let r = first(&rows, "the source settings")?;
        let mut facts = SourceServer {
            server,
            major: conn.server_major(),
            version: conn.parameter("server_version").unwrap_or("").to_string(),
            wal_level: r.str(0)?.to_string(),
            max_replication_slots: r.parse(1)?,
            used_replication_slots: r.parse(2)?,
            max_wal_senders: r.parse(3)?,
            used_wal_senders: r.parse(4)?,
            max_slot_wal_keep_size_mb: r.opt_parse(5)?,
            user: r.str(6)?.to_string(),
            superuser: r.bool(7)?,
            replication: r.bool(8)?,
            max_locks_per_transaction: r.parse(9)?,
            lock_capacity: r.parse(10)?,
            ..SourceServer::default()
        };
        facts.identity = ServerIdentity::read(conn).await?;
        let rows = conn
            .simple_query(&format!(
                "SELECT 'pid ' || pid, coalesce(datname, ''), coalesce(usename, ''), \
                 extract(epoch FROM now() - xact_start)::bigint \
                 FROM pg_catalog.pg_stat_activity \
                 WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() \
                 AND xact_start < now() - interval '{LONG_TRANSACTION_SECS} seconds' \
                 ORDER BY xact_start"
            ))
            .await?;
        facts.long_transactions = rows
            .iter()
            .map(open_transaction)
            .collect::<Result<_, _>>()?;
        let rows = conn
            .simple_query(
                "SELECT 'gid ' || quote_literal(gid), database, owner, \
                 extract(epoch FROM now() - prepared)::bigint \
                 FROM pg_catalog.pg_prepared_xacts ORDER BY prepared",
            )
            .await?;
        facts.prepared_transactions = rows
            .iter()
            .map(open_transaction)
            .collect::<Result<_, _>>()?;
        Ok(facts)
    }
}

fn open_transaction(r: &Row) -> Result<OpenTransaction, ConnError> {
    Ok(OpenTransaction {
        what: r.str(0)?.to_string(),
        database: r.str(1)?.to_string(),
        user: r.str(2)?.to_string(),
        age_secs: r.opt_parse::<i64>(3)?.unwrap_or(0).max(0).unsigned_abs(),
    })
}

/// The first row of a result that must have one.
pub(super) fn first<'a>(rows: &'a [Row], what: &str) -> Result<&'a Row, ConnError> {
    rows.first().ok_or_else(|| ConnError::Value {
        column: "0".into(),
        reason: format!("no row returned reading {what}"),
    })
}

/// Column `i` of every row, as text.
pub(super) fn strings(rows: &[Row], i: usize) -> Result<Vec<String>, ConnError> {
    rows.iter().map(|r| r.str(i).map(str::to_string)).collect()
}
