//! The SQLSTATEs pgmigrate matches on or sends, named as PostgreSQL's
//! errcodes.txt names them, so no code compares a five-character literal.

/// Class `08`: connection exception (`08000`, `08006` connection_failure, …).
pub const CLASS_CONNECTION_EXCEPTION: &str = "08";
/// `08006`: connection_failure.
pub const CONNECTION_FAILURE: &str = "08006";
/// `08P01`: protocol_violation.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// `23505`: unique_violation.
pub const UNIQUE_VIOLATION: &str = "23505";
/// `28000`: invalid_authorization_specification (no pg_hba.conf entry, no
/// such role, no LOGIN).
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
/// `28P01`: invalid_password.
pub const INVALID_PASSWORD: &str = "28P01";
/// `3D000`: invalid_catalog_name (no such database).
pub const INVALID_CATALOG_NAME: &str = "3D000";
/// `40001`: serialization_failure.
pub const SERIALIZATION_FAILURE: &str = "40001";
/// `40P01`: deadlock_detected.
pub const DEADLOCK_DETECTED: &str = "40P01";
/// `42501`: insufficient_privilege.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// `42601`: syntax_error.
pub const SYNTAX_ERROR: &str = "42601";
/// `42703`: undefined_column.
pub const UNDEFINED_COLUMN: &str = "42703";
/// `42P07`: duplicate_table.
pub const DUPLICATE_TABLE: &str = "42P07";
/// invalid_table_definition: e.g. a second primary key for a table.
pub const INVALID_TABLE_DEFINITION: &str = "42P16";
/// `42710`: duplicate_object.
pub const DUPLICATE_OBJECT: &str = "42710";
/// `53300`: too_many_connections.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// `54000`: program_limit_exceeded.
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
/// `55000`: object_not_in_prerequisite_state.
pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
/// `55006`: object_in_use (e.g. a slot still held by an exiting walsender).
pub const OBJECT_IN_USE: &str = "55006";
/// `55P03`: lock_not_available.
pub const LOCK_NOT_AVAILABLE: &str = "55P03";
/// `57014`: query_canceled (statement timeout or a cancel request).
pub const QUERY_CANCELED: &str = "57014";
/// `57P01`: admin_shutdown (the server is stopping or our backend was
/// terminated).
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// `57P02`: crash_shutdown.
pub const CRASH_SHUTDOWN: &str = "57P02";
/// `57P03`: cannot_connect_now (starting up, or in recovery).
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// `57P05`: idle_session_timeout.
pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
/// `XX000`: internal_error.
pub const INTERNAL_ERROR: &str = "XX000";
