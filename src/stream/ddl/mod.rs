//! DDL replication (`ddl = "replicate"`): the source's event trigger
//! ([`capture`]) reports each command in the stream, [`command`] says which
//! statement of its client message it was (cut by [`split`]), and the
//! receiver runs the transaction that carries it alone, between barriers,
//! on one apply worker that executes it in order with the transaction's
//! rows.

pub mod capture;
pub mod command;
pub mod split;

pub use command::{replay_of, DdlCommand, Replay};
