//! The plain progress line on stderr while tables are being copied.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control::progress::MigrationProgress;
use crate::control::status::Phase;
use crate::shutdown::Shutdown;

/// Prints a progress line on stderr while tables are being copied: often
/// on a terminal, every 10 seconds into a journal; ends with `exit`.
pub(super) fn spawn_progress_line(
    progress: Arc<MigrationProgress>,
    exit: Shutdown,
) -> tokio::task::JoinHandle<()> {
    use std::io::IsTerminal;
    let every = if std::io::stderr().is_terminal() {
        2
    } else {
        10
    };
    tokio::spawn(async move {
        let mut last: Vec<(u64, Instant)> =
            progress.dbs.iter().map(|_| (0, Instant::now())).collect();
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = exit.requested() => return,
            }
            for (p, prev) in progress.dbs.iter().zip(last.iter_mut()) {
                if !matches!(p.phase(), Phase::CopyingData | Phase::BuildingIndexes) {
                    continue;
                }
                let bytes = p.bytes_copied.load(Ordering::Relaxed);
                let secs = prev.1.elapsed().as_secs_f64().max(0.001);
                let rate = (bytes.saturating_sub(prev.0)) as f64 / 1e6 / secs;
                *prev = (bytes, Instant::now());
                let done = p.full_load_completed_tables.load(Ordering::Relaxed);
                let total = done
                    + p.full_load_queued_tables.load(Ordering::Relaxed)
                    + p.full_load_loading_tables.load(Ordering::Relaxed)
                    + p.full_load_errored_tables.load(Ordering::Relaxed);
                eprintln!(
                    "{}: {} tables {done}/{total} done, {:.1} MB copied, {rate:.1} MB/s",
                    p.name,
                    p.phase(),
                    bytes as f64 / 1e6
                );
            }
        }
    })
}
