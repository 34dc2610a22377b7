//! Which of the two servers a message or error is about, shared by every
//! layer that names one (the migration's steps, verification).

use std::fmt;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The server migrated from.
    Source,
    /// The server migrated to.
    Target,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}
