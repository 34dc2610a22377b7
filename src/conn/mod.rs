//! The wire client: one PostgreSQL session per [`Connection`], on
//! `postgres-protocol`'s message codecs and tokio. It knows nothing of
//! migrations: callers hand it SQL and bytes.

mod connection;
mod copy;
mod error;
mod extended;
mod params;
mod replication;
pub mod retry;
mod row;
pub mod sqlstate;
mod tls;

pub use connection::{CancelToken, Connection};
pub use copy::{copy_payloads, CopyIn, CopyOut};
pub use error::{ConnError, DbError};
pub use extended::{Param, Pipeline, PipelineError, Statement};
pub use params::{ConnectParams, Host};
pub use replication::CopyBoth;
pub use retry::Retry;
pub use row::Row;
pub use tls::SslMode;

/// Quotes an identifier for SQL (`my "t"` → `"my ""t"""`).
pub fn quote_ident(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('"');
    for c in name.chars() {
        if c == '"' {
            s.push('"');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// Quotes a string literal for SQL (`it's` → `'it''s'`), always in the
/// standard-conforming form (backslashes are plain characters), and with
/// `E''` when backslashes are present so it reads the same whatever
/// `standard_conforming_strings` is.
pub fn quote_literal(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 3);
    if value.contains('\\') {
        s.push('E');
    }
    s.push('\'');
    for c in value.chars() {
        match c {
            '\'' => s.push_str("''"),
            '\\' => s.push_str("\\\\"),
            c => s.push(c),
        }
    }
    s.push('\'');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
    }
}
