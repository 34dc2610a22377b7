//! Typed identifiers that cross the wire: WAL positions, object ids and
//! transaction ids.
//!
//! They are newtypes so an LSN can never be passed where a byte count is
//! expected, and so every place that prints or persists one uses
//! PostgreSQL's own spelling (`16/B374D848` for an LSN).

use std::fmt;
use std::ops::{Add, Sub};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// A WAL position (`pg_lsn`, `XLogRecPtr`): a byte offset into the
/// write-ahead log.
///
/// Displays and serializes as PostgreSQL does, `X/Y` with each half in
/// upper-case hex without leading zeros.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `InvalidXLogRecPtr`: "no position", e.g. an origin never advanced.
    pub const INVALID: Lsn = Lsn(0);

    /// Whether this is a real position rather than [`Lsn::INVALID`].
    pub fn is_valid(self) -> bool {
        self != Lsn::INVALID
    }

    /// The position `bytes` further on, or `None` past the end of the WAL
    /// address space.
    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }

    /// Bytes from `earlier` to `self`, or 0 when `earlier` is ahead: the
    /// lag of a consumer at `earlier` behind a producer at `self`.
    pub fn saturating_sub(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// `lsn + bytes`, saturating at the top of the WAL address space instead of
/// panicking.
impl Add<u64> for Lsn {
    type Output = Lsn;

    fn add(self, bytes: u64) -> Lsn {
        Lsn(self.0.saturating_add(bytes))
    }
}

/// `later - earlier` in bytes, 0 when `earlier` is ahead (never panics):
/// a lag is never negative.
impl Sub for Lsn {
    type Output = u64;

    fn sub(self, earlier: Lsn) -> u64 {
        self.saturating_sub(earlier)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl From<u64> for Lsn {
    fn from(value: u64) -> Self {
        Lsn(value)
    }
}

impl From<Lsn> for u64 {
    fn from(value: Lsn) -> Self {
        value.0
    }
}

/// Text that is not an LSN in PostgreSQL's `X/Y` form.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid LSN {input:?}: expected two hex numbers of 1 to 8 digits separated by '/', like 16/B374D848")]
pub struct ParseLsnError {
    /// The rejected text (truncated to 64 characters).
    pub input: String,
}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    /// Accepts what PostgreSQL's `pg_lsn` input accepts: 1–8 hex digits of
    /// either case on each side of a `/`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError {
            input: s.chars().take(64).collect(),
        };
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let half = |part: &str| -> Option<u64> {
            let ok = (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_hexdigit());
            if ok {
                u64::from_str_radix(part, 16).ok()
            } else {
                None
            }
        };
        match (half(hi), half(lo)) {
            (Some(hi), Some(lo)) => Ok(Lsn((hi << 32) | lo)),
            _ => Err(err()),
        }
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Declares a `u32` id newtype that displays as a plain decimal number, as
/// PostgreSQL prints it.
macro_rules! u32_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u32);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<u32> for $name {
            fn from(value: u32) -> Self {
                $name(value)
            }
        }
    };
}

u32_id!(
    /// A PostgreSQL object id (`oid`), e.g. a data type's.
    Oid
);
u32_id!(
    /// A transaction id (`xid`, 32 bits as sent by pgoutput).
    Xid
);
u32_id!(
    /// The OID of a table as pgoutput identifies it in Relation and DML
    /// messages.
    RelationId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_postgres() {
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
        assert_eq!(Lsn(0x1_0000_0000).to_string(), "1/0");
    }

    #[test]
    fn parses_what_postgres_prints() {
        for value in [0, 1, 0x16_B374_D848, u64::MAX, 0xFFFF_FFFF, 0x1_0000_0000] {
            let text = Lsn(value).to_string();
            assert_eq!(text.parse::<Lsn>(), Ok(Lsn(value)), "{text}");
        }
        assert_eq!("16/b374d848".parse::<Lsn>(), Ok(Lsn(0x16_B374_D848)));
        assert_eq!("00000016/0000000A".parse::<Lsn>(), Ok(Lsn(0x16_0000_000A)));
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "1",
            "1/2/3",
            "123456789/0",
            "0/123456789",
            "g/0",
            "+1/0",
            "-1/0",
            " 1/0",
            "1/0 ",
            "1 /0",
            "é/0",
        ] {
            let err = bad.parse::<Lsn>();
            assert!(err.is_err(), "{bad:?} parsed as {err:?}");
        }
        let err = "nope".parse::<Lsn>().err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("\"nope\"")));
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Lsn(10) + 5, Lsn(15));
        assert_eq!(Lsn(u64::MAX) + 1, Lsn(u64::MAX));
        assert_eq!(Lsn(10) - Lsn(4), 6);
        assert_eq!(Lsn(4) - Lsn(10), 0);
        assert_eq!(Lsn(u64::MAX).checked_add(1), None);
        assert!(Lsn(1) > Lsn(0));
        assert!(!Lsn::INVALID.is_valid());
    }

    #[test]
    fn serde_uses_the_text_form() {
        let json = serde_json::to_string(&Lsn(0x16_B374_D848)).ok();
        assert_eq!(json.as_deref(), Some("\"16/B374D848\""));
        let back: Result<Lsn, _> = serde_json::from_str("\"16/B374D848\"");
        assert_eq!(back.ok(), Some(Lsn(0x16_B374_D848)));
        assert!(serde_json::from_str::<Lsn>("\"16-B374D848\"").is_err());
        assert!(serde_json::from_str::<Lsn>("42").is_err());
    }

    #[test]
    fn ids_display_as_decimal_and_serialize_as_numbers() {
        assert_eq!(Oid(25).to_string(), "25");
        assert_eq!(Xid(4_000_000_000).to_string(), "4000000000");
        assert_eq!(RelationId(16384).to_string(), "16384");
        assert_eq!(
            serde_json::to_string(&RelationId(7)).ok().as_deref(),
            Some("7")
        );
    }
}
