//! Named pause points for the crash tests: with
//! `PGMIGRATE_TEST_PAUSE_AT=<point>[,<point>…]` in its environment the
//! daemon logs `pausing at <point>` and sleeps there for
//! `PGMIGRATE_TEST_PAUSE_MS` (default 3000) milliseconds, so a test can
//! kill it at exactly that moment instead of hoping a random kill lands
//! in a window of a few milliseconds. Unset (always, in production) a
//! point costs one load of a cached value.

use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable naming the points to pause at.
pub const PAUSE_AT_ENV: &str = "PGMIGRATE_TEST_PAUSE_AT";
/// The environment variable giving the pause in milliseconds.
pub const PAUSE_MS_ENV: &str = "PGMIGRATE_TEST_PAUSE_MS";

struct Pauses {
    points: Vec<String>,
    pause: Duration,
}

fn pauses() -> &'static Option<Pauses> {
    static PAUSES: OnceLock<Option<Pauses>> = OnceLock::new();
    PAUSES.get_or_init(|| {
        let points: Vec<String> = std::env::var(PAUSE_AT_ENV)
            .ok()?
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        let ms = std::env::var(PAUSE_MS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000);
        Some(Pauses {
            points,
            pause: Duration::from_millis(ms),
        })
    })
}

/// Pauses here when the tests asked for `name`.
pub async fn point(name: &str) {
    if let Some(p) = pauses() {
        if p.points.iter().any(|q| q == name) {
            tracing::warn!(point = name, "pausing at {name}");
            tokio::time::sleep(p.pause).await;
        }
    }
}
