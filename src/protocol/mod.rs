//! Pure bytes: the replication stream's CopyData payloads, the pgoutput
//! logical decoding messages inside them, and the LSN/OID/XID types they
//! carry.
//!
//! Everything here is a function over a buffer: no sockets, no async, and no
//! allocation per column value (tuple columns are `Bytes` slices of the
//! received buffer). Every parser returns [`ProtocolError`] on malformed
//! input instead of panicking, and has a fuzz target under `fuzz/`.

mod error;
pub mod lsn;
pub mod pgoutput;
mod reader;
pub mod replication;
pub mod timestamp;

pub use error::ProtocolError;
pub use lsn::{Lsn, Oid, ParseLsnError, RelationId, Xid};
pub use timestamp::PgTimestamp;
