//! PostgreSQL timestamps on the wire: microseconds since 2000-01-01 UTC.
//!
//! The replication protocol and pgoutput send every time (send time,
//! commit time, client time) in this form; this module is the one place
//! that converts between it and [`SystemTime`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the Unix epoch (1970-01-01) to the PostgreSQL epoch
/// (2000-01-01): 30 years including 7 leap days.
pub const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;

/// A `TimestampTz` as sent on the wire: microseconds since
/// 2000-01-01 00:00:00 UTC (negative before it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// The PostgreSQL epoch as a [`SystemTime`].
    pub fn epoch() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS)
    }

    /// The current time, for a Standby Status Update's client time.
    pub fn now() -> PgTimestamp {
        PgTimestamp::from_system_time(SystemTime::now())
    }

    /// Converts a wall-clock time, saturating at the `i64` range (about
    /// ±292,000 years) rather than failing.
    pub fn from_system_time(time: SystemTime) -> PgTimestamp {
        let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        match time.duration_since(PgTimestamp::epoch()) {
            Ok(after) => PgTimestamp(micros(after)),
            Err(before) => PgTimestamp(micros(before.duration()).saturating_neg()),
        }
    }

    /// Converts to a wall-clock time; `None` if the platform's
    /// `SystemTime` cannot hold it.
    pub fn to_system_time(self) -> Option<SystemTime> {
        let offset = Duration::from_micros(self.0.unsigned_abs());
        if self.0 >= 0 {
            PgTimestamp::epoch().checked_add(offset)
        } else {
            PgTimestamp::epoch().checked_sub(offset)
        }
    }

    /// How long ago this time was at `now`, zero when it is in the future
    /// (clocks of two servers are never perfectly in step): the replication
    /// lag in time.
    pub fn elapsed_at(self, now: SystemTime) -> Duration {
        self.to_system_time()
            .and_then(|then| now.duration_since(then).ok())
            .unwrap_or(Duration::ZERO)
    }
}

impl fmt::Display for PgTimestamp {
    /// Microseconds since 2000-01-01, as received; formatting a calendar
    /// date is left to callers that need it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}us since 2000-01-01", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_is_2000_01_01() {
        assert_eq!(
            PgTimestamp::epoch().duration_since(UNIX_EPOCH).ok(),
            Some(Duration::from_secs(946_684_800))
        );
        assert_eq!(
            PgTimestamp::from_system_time(PgTimestamp::epoch()),
            PgTimestamp(0)
        );
    }

    #[test]
    fn round_trips_both_sides_of_the_epoch() {
        for micros in [0, 1, -1, 1_700_000_000_123_456, -946_684_800_000_000] {
            let ts = PgTimestamp(micros);
            let back = ts.to_system_time().map(PgTimestamp::from_system_time);
            assert_eq!(back, Some(ts));
        }
        // 2024-01-01T00:00:00Z is 1704067200 Unix seconds.
        let t = UNIX_EPOCH + Duration::from_secs(1_704_067_200);
        assert_eq!(
            PgTimestamp::from_system_time(t),
            PgTimestamp((1_704_067_200 - 946_684_800) * 1_000_000)
        );
    }

    #[test]
    fn elapsed_never_negative() {
        let now = PgTimestamp::epoch() + Duration::from_secs(10);
        assert_eq!(
            PgTimestamp(4_000_000).elapsed_at(now),
            Duration::from_secs(6)
        );
        assert_eq!(PgTimestamp(20_000_000).elapsed_at(now), Duration::ZERO);
        // Extremes must not panic, whatever the platform's SystemTime range.
        let _ = PgTimestamp(i64::MIN).elapsed_at(now);
        let _ = PgTimestamp(i64::MAX).elapsed_at(now);
    }
}
