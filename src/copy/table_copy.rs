//! The parallel COPY pass-through: `jobs` workers, each a source session in
//! the snapshot and a target session, take units (a whole table or a ctid
//! range of a large one), largest first, and move CopyData frames from one
//! socket to the other without looking inside them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::conn::Connection;
use crate::control::progress::DbProgress;

use super::catalog::Table;
use super::copy_log::UnitKey;
use super::copy_origins::Journaling;
use super::CopyError;

/// Chunks in flight between the source reader and the target writer of one
/// worker: enough to keep both sockets busy, small enough to bound memory.
const IN_FLIGHT: usize = 8;
/// Whole tables up to this size (with TOAST) share a target transaction
/// with their neighbours in the queue: for thousands of tiny tables the
/// transaction, not the rows, is the cost.
const SMALL_TABLE_BYTES: u64 = 1 << 20;
/// Tables per shared transaction: its locks (a table, its TOAST table and
/// index each) must fit the lock table with room for other sessions.
const GROUP_TABLES: usize = 64;
/// Bytes per shared transaction: a failure redoes at most this much.
const GROUP_BYTES: u64 = 16 << 20;

/// A piece of work: a table, or a range of its pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyUnit {
    /// Index into the table list.
    pub table: usize,
    /// `[first page, end page)`; `None` for the whole table. The last
    /// range of a table has no end so pages added later are not missed.
    pub pages: Option<(u64, Option<u64>)>,
}

/// Splits tables larger than `split_bytes` (0 = never) into page ranges and
/// orders the units largest first so the longest one starts earliest.
pub fn plan_units(
    tables: &[Table],
    split_bytes: u64,
    block_size: u64,
    can_split: bool,
) -> Vec<CopyUnit> {
    let mut units: Vec<(u64, CopyUnit)> = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let pages = t.bytes / block_size.max(1);
        if can_split && split_bytes > 0 && t.bytes > split_bytes && pages > 1 {
            let parts = t.bytes.div_ceil(split_bytes).min(pages);
            let per = pages.div_ceil(parts);
            let mut start = 0;
            while start < pages {
                let end = start + per;
                let last = end >= pages;
                // Each range carries its share of the TOAST too.
                units.push((
                    t.total_bytes / parts.max(1),
                    CopyUnit {
                        table: i,
                        pages: Some((start, if last { None } else { Some(end) })),
                    },
                ));
                start = end;
            }
        } else {
            units.push((
                t.total_bytes,
                CopyUnit {
                    table: i,
                    pages: None,
                },
            ));
        }
    }
    units.sort_by_key(|u| std::cmp::Reverse(u.0));
    units.into_iter().map(|(_, u)| u).collect()
}

struct TableState {
    table: Table,
    units_left: AtomicUsize,
    started: AtomicBool,
    rows: AtomicU64,
}

/// State shared by the copy workers of one database.
pub struct CopyRun {
    db: String,
    tables: Vec<TableState>,
    queue: Mutex<VecDeque<CopyUnit>>,
    progress: Arc<DbProgress>,
    /// A sibling unit failed: stop this copy only. The daemon's stop
    /// drops the copy future instead (it resumes from the journal).
    stop: AtomicBool,
    done_tx: Mutex<Option<mpsc::UnboundedSender<u32>>>,
    /// Present when the copy can resume: every transaction is announced
    /// and commits with its worker's origin.
    journal: Option<Arc<Journaling>>,
}

impl CopyRun {
    /// Prepares a run over `tables` with `units`; each table's OID is sent
    /// on the returned channel once all its units are in (at once for a
    /// table without units: an earlier run copied it).
    pub fn new(
        db: &str,
        tables: Vec<Table>,
        units: Vec<CopyUnit>,
        progress: Arc<DbProgress>,
        journal: Option<Arc<Journaling>>,
    ) -> (Arc<CopyRun>, mpsc::UnboundedReceiver<u32>) {
        let mut counts = vec![0usize; tables.len()];
        for u in &units {
            if let Some(c) = counts.get_mut(u.table) {
                *c += 1;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut kept = 0u64;
        for (t, n) in tables.iter().zip(&counts) {
            if *n == 0 {
                kept += 1;
                let _ = tx.send(t.oid);
            }
        }
        // Set, not added: an attempt after an interruption counts afresh.
        progress
            .full_load_queued_tables
            .store(tables.len() as u64 - kept, Ordering::Relaxed);
        progress
            .full_load_completed_tables
            .store(kept, Ordering::Relaxed);
        progress
            .full_load_loading_tables
            .store(0, Ordering::Relaxed);
        let run = CopyRun {
            db: db.to_string(),
            tables: tables
                .into_iter()
                .zip(counts)
                .map(|(table, n)| TableState {
                    table,
                    units_left: AtomicUsize::new(n),
                    started: AtomicBool::new(false),
                    rows: AtomicU64::new(0),
                })
                .collect(),
            queue: Mutex::new(units.into()),
            progress,
            stop: AtomicBool::new(false),
            done_tx: Mutex::new(Some(tx)),
            journal,
        };
        (Arc::new(run), rx)
    }

    /// Asks every worker to stop after its current chunk.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Closes the completion channel (after the workers have ended).
    pub fn close(&self) {
        if let Ok(mut tx) = self.done_tx.lock() {
            tx.take();
        }
    }

    /// A whole table small enough to share a target transaction.
    fn small(&self, unit: CopyUnit) -> Option<u64> {
        let t = &self.tables.get(unit.table)?.table;
        (unit.pages.is_none() && t.total_bytes <= SMALL_TABLE_BYTES).then_some(t.total_bytes)
    }

    /// The next unit, or, when it is a small whole table, it and the small
    /// tables after it (the queue is largest first, so they sit together).
    fn next_units(&self) -> Vec<CopyUnit> {
        if self.stop.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let Ok(mut queue) = self.queue.lock() else {
            return Vec::new();
        };
        let Some(first) = queue.pop_front() else {
            return Vec::new();
        };
        let mut units = vec![first];
        if let Some(mut bytes) = self.small(first) {
            while units.len() < GROUP_TABLES {
                let Some(&next) = queue.front() else { break };
                match self.small(next) {
                    Some(b) if bytes + b <= GROUP_BYTES => bytes += b,
                    _ => break,
                }
                units.extend(queue.pop_front());
            }
        }
        units
    }

    fn table_started(&self, state: &TableState) {
        if !state.started.swap(true, Ordering::Relaxed) {
            self.progress
                .full_load_queued_tables
                .fetch_sub(1, Ordering::Relaxed);
            self.progress
                .full_load_loading_tables
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn unit_done(&self, state: &TableState, rows: u64) {
        state.rows.fetch_add(rows, Ordering::Relaxed);
        self.progress.rows_copied.fetch_add(rows, Ordering::Relaxed);
        crate::metrics::copy_rows(&self.db, rows);
        if state.units_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.progress
                .full_load_loading_tables
                .fetch_sub(1, Ordering::Relaxed);
            self.progress
                .full_load_completed_tables
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(table = %state.table.display(), rows = state.rows.load(Ordering::Relaxed), "table copied");
            if let Ok(tx) = self.done_tx.lock() {
                if let Some(tx) = tx.as_ref() {
                    let _ = tx.send(state.table.oid);
                }
            }
        }
    }

    /// One worker: takes units until none are left. `source` is inside
    /// the snapshot transaction.
    pub async fn worker(
        self: Arc<Self>,
        index: usize,
        mut source: Connection,
        mut target: Connection,
    ) -> Result<Connection, CopyError> {
        // Each group commits without waiting for its WAL flush (thousands
        // of tiny tables would otherwise cost a flush each); the flush
        // below, before the worker reports its tables in, makes them all
        // durable at once. Index builds, which commit synchronously, flush
        // them too before anything depends on them.
        target
            .execute("SET synchronous_commit = off")
            .await
            .map_err(|e| CopyError::target(&self.db, "setting synchronous_commit", e))?;
        if let Some(j) = &self.journal {
            j.attach(&mut target, index, &self.db).await?;
        }
        loop {
            let units = self.next_units();
            if units.is_empty() {
                break;
            }
            let states: Vec<&TableState> = units
                .iter()
                .filter_map(|u| self.tables.get(u.table))
                .collect();
            for state in &states {
                self.table_started(state);
            }
            match self
                .copy_units(&mut source, &mut target, &units, index)
                .await
            {
                Ok(rows) => {
                    for (state, rows) in states.iter().zip(rows) {
                        self.unit_done(state, rows);
                    }
                }
                Err(e) => {
                    self.stop();
                    self.progress
                        .full_load_loading_tables
                        .fetch_sub(states.len() as u64, Ordering::Relaxed);
                    self.progress
                        .full_load_errored_tables
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        if self.stop.load(Ordering::Relaxed)
            && !self.queue.lock().map(|q| q.is_empty()).unwrap_or(true)
        {
            return Err(CopyError::Interrupted {
                db: self.db.clone(),
            });
        }
        // A synchronous commit of a transaction with an XID flushes the WAL
        // up to it, and with it every asynchronous commit before it. The
        // origin is let go here, not at disconnect, so dropping it once the
        // copy completes never finds it still held.
        let release = if self.journal.is_some() {
            "; SELECT pg_catalog.pg_replication_origin_session_reset()"
        } else {
            ""
        };
        target
            .execute(&format!(
                "SET synchronous_commit = on; SELECT pg_catalog.txid_current(){release}"
            ))
            .await
            .map_err(|e| CopyError::target(&self.db, "flushing the copied tables", e))?;
        Ok(source)
    }

    /// Copies `units` in one target transaction: a ctid range alone, or
    /// one or more whole tables, truncated together first (which makes
    /// FREEZE legal: rows land frozen, no hint-bit or anti-wraparound
    /// rewrite later; and a retried unit idempotent). Returns the rows of
    /// each unit.
    async fn copy_units(
        &self,
        source: &mut Connection,
        target: &mut Connection,
        units: &[CopyUnit],
        index: usize,
    ) -> Result<Vec<u64>, CopyError> {
        let tables: Vec<&Table> = units
            .iter()
            .filter_map(|u| self.tables.get(u.table).map(|s| &s.table))
            .collect();
        let Some(first) = tables.first() else {
            return Ok(Vec::new());
        };
        let fail = |context: &str, source| CopyError::Table {
            db: self.db.clone(),
            table: first.display(),
            context: context.to_string(),
            source: Box::new(source),
        };
        let whole = units.iter().all(|u| u.pages.is_none());
        let prelude = if whole {
            // ONLY binds to one name of the list: each needs its own, or
            // a parent copied after its child empties it again.
            let names: Vec<String> = tables
                .iter()
                .map(|t| format!("ONLY {}", t.qualified()))
                .collect();
            format!("BEGIN; TRUNCATE {}", names.join(", "))
        } else {
            "BEGIN".to_string()
        };
        target
            .execute(&prelude)
            .await
            .map_err(|e| fail("starting the target transaction", e))?;
        let mut rows = Vec::with_capacity(units.len());
        for (t, &unit) in tables.iter().zip(units) {
            match self.copy_unit(source, target, t, unit).await {
                Ok(n) => rows.push(n),
                Err(e) => {
                    let _ = target.execute("ROLLBACK").await;
                    return Err(e);
                }
            }
        }
        let commit = match &self.journal {
            Some(j) => {
                let keys = tables
                    .iter()
                    .zip(units)
                    .map(|(t, u)| UnitKey {
                        oid: t.oid,
                        start: u.pages.map(|p| p.0),
                    })
                    .collect();
                match j.commit_sql(index, keys, rows.clone()).await {
                    Ok(sql) => sql,
                    Err(e) => {
                        let _ = target.execute("ROLLBACK").await;
                        return Err(e);
                    }
                }
            }
            None => "COMMIT".to_string(),
        };
        crate::chaos::point("copy-before-commit").await;
        target
            .execute(&commit)
            .await
            .map_err(|e| fail("committing", e))?;
        crate::chaos::point("copy-committed").await;
        Ok(rows.into_iter().map(|(r, _)| r).collect())
    }

    /// Streams one unit's rows inside the caller's target transaction.
    async fn copy_unit(
        &self,
        source: &mut Connection,
        target: &mut Connection,
        t: &Table,
        unit: CopyUnit,
    ) -> Result<(u64, u64), CopyError> {
        let fail = |context: &str, source| CopyError::Table {
            db: self.db.clone(),
            table: t.display(),
            context: context.to_string(),
            source: Box::new(source),
        };
        let (out_sql, in_sql) = copy_statements(t, unit);
        let mut copy_in = target
            .copy_in(&in_sql)
            .await
            .map_err(|e| fail("starting COPY FROM STDIN", e))?;
        let mut copy_out = source
            .copy_out(&out_sql)
            .await
            .map_err(|e| fail("starting COPY TO STDOUT", e))?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(IN_FLIGHT);
        let stop = &self.stop;
        let read = async {
            while let Some(frames) = copy_out.next_frames().await? {
                if stop.load(Ordering::Relaxed) || tx.send(frames).await.is_err() {
                    return Ok(None);
                }
            }
            drop(tx);
            Ok::<_, crate::conn::ConnError>(copy_out.rows())
        };
        let progress = &self.progress;
        let db = &self.db;
        let mut live = LiveRows {
            rows_copied: &progress.rows_copied,
            counted: 0,
        };
        // The unit's bytes go into the journal, so a resumed copy's
        // counters start from what is committed.
        let mut unit_bytes = 0u64;
        let write = async {
            while let Some(frames) = rx.recv().await {
                if let Err(e) = copy_in.send_frames(&frames).await {
                    // Else the reader waits forever for room in the channel.
                    rx.close();
                    return Err(e);
                }
                unit_bytes += frames.len() as u64;
                live.add(frame_count(&frames));
                progress
                    .bytes_copied
                    .fetch_add(frames.len() as u64, Ordering::Relaxed);
                crate::metrics::copy_bytes(db, frames.len() as u64);
            }
            Ok::<_, crate::conn::ConnError>(())
        };
        let (read, write) = tokio::join!(read, write);
        let source_rows = match (read, write) {
            (Ok(Some(rows)), Ok(())) => rows,
            (Ok(None), Ok(())) => {
                let _ = copy_in.fail("copy interrupted").await;
                return Err(CopyError::Interrupted {
                    db: self.db.clone(),
                });
            }
            (Err(e), _) => {
                let _ = copy_in.fail("source failed").await;
                return Err(fail("reading from the source", e));
            }
            (Ok(_), Err(e)) => return Err(fail("writing to the target", e)),
        };
        let target_rows = copy_in
            .finish()
            .await
            .map_err(|e| fail("finishing COPY FROM STDIN", e))?;
        if target_rows != source_rows {
            return Err(CopyError::Unexpected {
                db: self.db.clone(),
                message: format!(
                    "table {}: the source sent {source_rows} rows but the target stored {target_rows}",
                    t.display()
                ),
            });
        }
        Ok((target_rows, unit_bytes))
    }
}

/// The COPY TO on the source and COPY FROM on the target for one unit.
/// Binary only where every column type is safe between any two servers. A
/// whole table was truncated in this transaction, which makes FREEZE
/// legal; a ctid range is not (its table is shared with other units).
fn copy_statements(t: &Table, unit: CopyUnit) -> (String, String) {
    let format = if t.binary_safe() {
        "FORMAT binary"
    } else {
        "FORMAT text"
    };
    let cols = t.column_list();
    match unit.pages {
        None => (
            format!("COPY {} {cols} TO STDOUT ({format})", t.qualified()),
            format!(
                "COPY {} {cols} FROM STDIN ({format}, FREEZE)",
                t.qualified()
            ),
        ),
        Some((start, end)) => {
            let select_cols = if cols.is_empty() {
                String::new()
            } else {
                cols[1..cols.len() - 1].to_string()
            };
            let upper = end
                .map(|e| format!(" AND ctid < '({e},0)'::tid"))
                .unwrap_or_default();
            (
                format!(
                    "COPY (SELECT {select_cols} FROM ONLY {} WHERE ctid >= '({start},0)'::tid{upper}) TO STDOUT ({format})",
                    t.qualified()
                ),
                format!("COPY {} {cols} FROM STDIN ({format})", t.qualified()),
            )
        }
    }
}

/// Rows of a unit still being copied, shown in `rows_copied` as they go
/// (so the count moves while a big table copies) and taken back out when
/// the unit ends: the worker then adds the count the server reported.
struct LiveRows<'a> {
    rows_copied: &'a AtomicU64,
    counted: u64,
}

impl LiveRows<'_> {
    fn add(&mut self, rows: u64) {
        self.counted += rows;
        self.rows_copied.fetch_add(rows, Ordering::Relaxed);
    }
}

impl Drop for LiveRows<'_> {
    fn drop(&mut self) {
        self.rows_copied.fetch_sub(self.counted, Ordering::Relaxed);
    }
}

/// CopyData frames in a run of complete frames (one per row, plus the
/// binary format's header and trailer: close enough for a live count).
fn frame_count(frames: &[u8]) -> u64 {
    let mut count = 0;
    let mut at = 0usize;
    while let Some(header) = frames.get(at..at + 5) {
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        at = at.saturating_add(1 + len);
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_rows_count_frames_and_are_taken_back() {
        let mut frames = Vec::new();
        for row in [&b"1\ta\n"[..], b"22\tbb\n", b""] {
            frames.push(b'd');
            frames.extend_from_slice(&(4 + row.len() as u32).to_be_bytes());
            frames.extend_from_slice(row);
        }
        assert_eq!(frame_count(&frames), 3);
        assert_eq!(frame_count(&[]), 0);
        let total = AtomicU64::new(10);
        {
            let mut live = LiveRows {
                rows_copied: &total,
                counted: 0,
            };
            live.add(frame_count(&frames));
            live.add(2);
            assert_eq!(total.load(Ordering::Relaxed), 15);
        }
        assert_eq!(total.load(Ordering::Relaxed), 10);
    }

    fn table(bytes: u64) -> Table {
        Table {
            oid: 1,
            schema: "s".into(),
            name: "t".into(),
            bytes,
            total_bytes: bytes,
            columns: vec![],
            root: None,
        }
    }

    #[test]
    fn splits_large_tables_into_ranges_covering_everything() {
        let units = plan_units(
            &[table(10 * 8192), table(100 * 8192)],
            30 * 8192,
            8192,
            true,
        );
        let big: Vec<_> = units.iter().filter(|u| u.table == 1).collect();
        assert_eq!(big.len(), 4);
        assert_eq!(big.first().map(|u| u.pages.map(|p| p.0)), Some(Some(0)));
        assert!(
            big.iter()
                .filter(|u| u.pages.is_some_and(|p| p.1.is_none()))
                .count()
                == 1
        );
        // Largest first.
        assert_eq!(units.last().map(|u| u.table), Some(0));
    }

    #[test]
    fn no_split_when_disabled() {
        let units = plan_units(&[table(100 * 8192)], 0, 8192, true);
        assert_eq!(
            units,
            vec![CopyUnit {
                table: 0,
                pages: None
            }]
        );
        let units = plan_units(&[table(100 * 8192)], 8192, 8192, false);
        assert_eq!(units.len(), 1);
    }
}
