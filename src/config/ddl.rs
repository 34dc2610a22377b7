//! `ddl`: what an online migration does with schema changes on the source.

use serde::{Deserialize, Serialize};

/// How DDL on the source during streaming is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DdlMode {
    /// Capture every command with an event trigger and apply it on the
    /// target in commit order.
    Replicate,
    /// Stop the migration at the first command, naming it.
    Fail,
    /// Carry nothing (a changed table then fails the apply); `show` warns.
    Ignore,
}

impl DdlMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DdlMode::Replicate => "replicate",
            DdlMode::Fail => "fail",
            DdlMode::Ignore => "ignore",
        }
    }

    /// Whether the mode needs the source's event trigger.
    pub fn captures(self) -> bool {
        self != DdlMode::Ignore
    }

    /// The mode a migration runs with: the configured one, else `replicate`
    /// where the source can capture (a role that may create event
    /// triggers, and a server whose pgoutput carries logical messages:
    /// 14 and later), else `ignore`.
    pub fn resolve(configured: Option<DdlMode>, capture_possible: bool) -> DdlMode {
        match configured {
            Some(m) => m,
            None if capture_possible => DdlMode::Replicate,
            None => DdlMode::Ignore,
        }
    }
}

/// The first source major whose pgoutput sends logical messages.
pub const MESSAGES_SINCE: u32 = 14;
