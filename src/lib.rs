//! pgmigrate: move a live PostgreSQL database to another server with
//! seconds of downtime.
//!
//! Modules follow the data flow: `protocol` (pure bytes) → `conn` (wire
//! client) → `copy` (snapshot copy) → `stream`/`apply` (change stream) →
//! `migration` (phase order) → `control` (state, console, signals);
//! `listen` holds what the daemon's listeners share (accept backoff, the
//! metrics HTTP server, the open-files limit).

pub mod apply;
pub mod chaos;
pub mod config;
pub mod conn;
pub mod control;
pub mod copy;
pub mod demo;
pub mod listen;
pub mod metrics;
pub mod migration;
pub mod pgtypes;
pub mod protocol;
pub mod shutdown;
pub mod side;
pub mod spill;
pub mod sql_script;
pub mod stream;
pub mod validate;
pub mod verify;
