//! The one error type of the protocol layer.
//!
//! Every variant names the field being read and the byte offset in the
//! buffer handed to the parser, so a bad message from a server can be
//! located in a hex dump without re-running anything.

use thiserror::Error;

/// Malformed, truncated, overlong or unknown bytes from the replication
/// stream.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// The buffer ended before a field was complete.
    #[error("truncated {field} at offset {offset}: needs {needed} bytes, {available} left")]
    Truncated {
        /// The field being read, e.g. `"Relation.namespace"`.
        field: &'static str,
        /// Where the field starts.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the buffer.
        available: usize,
    },
    /// A NUL-terminated string had no NUL before the end of the buffer.
    #[error("unterminated string {field} at offset {offset}")]
    UnterminatedString {
        /// The field being read.
        field: &'static str,
        /// Where the string starts.
        offset: usize,
    },
    /// A string that must be UTF-8 was not.
    #[error("string {field} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        field: &'static str,
        /// Where the string starts.
        offset: usize,
    },
    /// A length or count field was negative.
    #[error("negative {field} {value} at offset {offset}")]
    NegativeLength {
        /// The field being read.
        field: &'static str,
        /// Where the field starts.
        offset: usize,
        /// The value read.
        value: i64,
    },
    /// A field held a value the protocol does not define.
    #[error("invalid {field} {value:#x} at offset {offset}")]
    InvalidValue {
        /// The field being read.
        field: &'static str,
        /// Where the field starts.
        offset: usize,
        /// The value read.
        value: u64,
    },
    /// The message type byte is not one this layer knows.
    #[error("unknown {stream} message type {tag:?} ({tag:#04x}) at offset {offset}")]
    UnknownMessage {
        /// Which stream the message came from: `"pgoutput"` or `"replication"`.
        stream: &'static str,
        /// The type byte.
        tag: u8,
        /// Where the type byte is.
        offset: usize,
    },
    /// Bytes were left after a complete message.
    #[error("{count} trailing bytes after {message} message at offset {offset}")]
    TrailingBytes {
        /// The message that was complete.
        message: &'static str,
        /// Where the extra bytes start.
        offset: usize,
        /// How many extra bytes there are.
        count: usize,
    },
    /// The message exists, but not in the negotiated protocol version.
    #[error(
        "{message} message needs pgoutput protocol version {min_version}, stream uses {version}"
    )]
    UnsupportedInVersion {
        /// The message received.
        message: &'static str,
        /// The negotiated `proto_version`.
        version: u32,
        /// The first version that has the message.
        min_version: u32,
    },
    /// The message cannot appear where it did: inside a streamed
    /// transaction chunk (between Stream Start and Stream Stop) or outside
    /// one.
    #[error("{message} message is not valid {where_}")]
    UnexpectedInState {
        /// The message received.
        message: &'static str,
        /// `"inside a streamed transaction"` or `"outside a streamed transaction"`.
        where_: &'static str,
    },
    /// The decode context itself is inconsistent (e.g. parallel streaming
    /// with a protocol version that lacks it).
    #[error("invalid decode context: {0}")]
    InvalidContext(&'static str),
}
