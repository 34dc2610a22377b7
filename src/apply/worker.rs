//! One apply worker: a thread with its own current-thread runtime driving
//! one target session. It groups source transactions into target
//! transactions, pipelines the statements, and commits each batch with
//! `pg_replication_origin_xact_setup` so its progress is exactly as
//! durable as its data.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::conn::{quote_literal, ConnError, ConnectParams, Connection, Param};
use crate::control::progress::DbProgress;
use crate::protocol::lsn::Lsn;
use crate::protocol::pgoutput::{ColumnRef, OldTuple, TupleData};
use crate::protocol::timestamp::PgTimestamp;

use super::arrays::{ArrayBuilder, ArrayFormat};
use super::relation::RelationInfo;
use super::statements::{self, ColumnMask};
use super::target_table::TargetTable;
use super::window::{NetChanges, TableWindow};
use super::{ApplyError, ApplyMsg, Change, WorkerProgress};

/// Statements queued before the pipeline is sent without waiting for the
/// batch to end: bounds the send buffer.
const PIPELINE_FLUSH_STATEMENTS: usize = 2000;
const PIPELINE_FLUSH_BYTES: usize = 4 << 20;
/// How often a worker with commits not yet known durable asks the target:
/// the source learns what it may forget no later than this after the
/// target flushed it.
const DURABILITY_CHECK: Duration = Duration::from_millis(50);

/// Everything a worker needs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Database being migrated.
    pub db: String,
    /// Worker index (0-based).
    pub index: usize,
    /// Its replication origin on the target.
    pub origin: String,
    /// Target session for the database.
    pub target: ConnectParams,
    /// Most changes per target transaction.
    pub batch_max_changes: usize,
    /// Longest a batch stays open.
    pub batch_max_delay: Duration,
    /// Where the stream starts: transactions before it are in the snapshot.
    pub start_lsn: Lsn,
}

/// Starts a worker thread. `progress` reports its applied/durable LSNs;
/// the thread ends when `rx` closes (after committing) or on an error,
/// which it also records in `progress`.
pub fn spawn(
    cfg: WorkerConfig,
    rx: Receiver<ApplyMsg>,
    progress: Arc<WorkerProgress>,
    counters: Arc<DbProgress>,
) -> std::io::Result<std::thread::JoinHandle<Result<(), ApplyError>>> {
    std::thread::Builder::new()
        .name(format!("apply-{}", cfg.index))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| ApplyError::Setup {
                    db: cfg.db.clone(),
                    worker: cfg.index,
                    message: format!("runtime: {e}"),
                })?;
            let result = rt.block_on(async {
                let mut w = Worker::start(cfg, progress.clone(), counters).await?;
                w.run(rx).await
            });
            if let Err(e) = &result {
                if let Ok(mut slot) = progress.error.lock() {
                    *slot = Some(e.to_string());
                }
            }
            result
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Insert,
    Update,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StmtKey {
    rel: u32,
    version: u64,
    kind: Kind,
    set: Option<ColumnMask>,
    matching: Option<ColumnMask>,
    /// Rows of a multi-row INSERT; 1 for one row; 0 for a set-based
    /// statement taking arrays, whatever their length.
    rows: usize,
    /// Set-based UPDATE: the columns it sets.
    set_cols: Vec<usize>,
}

/// Most rows in one multi-row INSERT: a run of inserts into one table goes
/// out as few statements (PostgreSQL's limit of 65535 parameters bounds it
/// further for wide tables).
const INSERT_RUN: usize = 64;
/// Rows and bytes held in windows (and in a set-based insert run) before
/// they are written out inside the open transaction: bounds memory, also
/// for a source transaction of any size.
const WINDOW_MAX_ROWS: usize = 4096;
const WINDOW_MAX_BYTES: usize = 16 << 20;

/// A queued execution whose row count is checked: the kind, the table,
/// and how many rows it should have touched.
type Expected = Option<(Kind, Arc<RelationInfo>, u64)>;

struct Worker {
    cfg: WorkerConfig,
    conn: Connection,
    progress: Arc<WorkerProgress>,
    counters: Arc<DbProgress>,
    /// Transactions at or before this LSN were applied in an earlier run.
    origin_lsn: Lsn,
    statements: HashMap<StmtKey, String>,
    /// Per table and schema version: how the target lets us write it.
    tables: HashMap<(u32, u64), Arc<TargetTable>>,
    /// Per table: the net effect of its changes not yet written out.
    windows: HashMap<u32, (Arc<RelationInfo>, TableWindow)>,
    /// Rows and bytes folded into windows since they were last emptied.
    windowed_rows: usize,
    windowed_bytes: usize,
    next_stmt: u64,
    // Batch state.
    open: bool,
    batch_started: Instant,
    batch_changes: usize,
    batch_counts: [u64; 3],
    last_commit: Option<(Lsn, PgTimestamp)>,
    skipping: bool,
    /// Between a Begin and its Commit: the batch must not end here, or a
    /// part of a source transaction would commit without its origin.
    in_txn: bool,
    current: Lsn,
    delivered: Lsn,
    /// Commits not yet known durable: (origin LSN recorded, LSN covered).
    pending: VecDeque<(Lsn, Lsn)>,
    last_check: Instant,
    /// Consecutive inserts into one table, not yet queued.
    run: Option<(Arc<RelationInfo>, Vec<TupleData>)>,
    /// Kinds of queued executions, to spot updates/deletes that found no row.
    queued_kinds: Vec<Expected>,
}

impl Worker {
    async fn start(
        cfg: WorkerConfig,
        progress: Arc<WorkerProgress>,
        counters: Arc<DbProgress>,
    ) -> Result<Worker, ApplyError> {
        let setup = |message: String| ApplyError::Setup {
            db: cfg.db.clone(),
            worker: cfg.index,
            message,
        };
        let mut conn = Connection::connect(&cfg.target)
            .await
            .map_err(|e| setup(format!("connecting to the target: {e}")))?;
        let origin = quote_literal(&cfg.origin);
        // replica: no user triggers or FK checks fire for replicated rows
        // (the source already checked them; tables on different workers
        // commit in different orders). Asynchronous commit is safe because
        // the durable position is read back from the origin, flushed.
        conn.execute(&format!(
            "SET session_replication_role = replica; SET synchronous_commit = off; \
             SET statement_timeout = 0; SET lock_timeout = 0; \
             SELECT pg_catalog.pg_replication_origin_create({origin}) \
               WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_origin WHERE roname = {origin}); \
             SELECT pg_catalog.pg_replication_origin_session_setup({origin})"
        ))
        .await
        .map_err(|e| setup(format!("setting up replication origin {}: {e}", cfg.origin)))?;
        let rows = conn
            .simple_query(&format!(
                "SELECT pg_catalog.pg_replication_origin_progress({origin}, true)"
            ))
            .await
            .map_err(|e| setup(format!("reading origin progress: {e}")))?;
        let origin_lsn = match rows.first().map(|r| r.opt_str(0)) {
            Some(Ok(Some(s))) => s
                .parse::<Lsn>()
                .map_err(|e| setup(format!("origin progress {s:?}: {e}")))?,
            _ => Lsn(0),
        };
        let start = origin_lsn.max(cfg.start_lsn);
        progress.applied.store(start.0, Ordering::Release);
        progress.durable.store(start.0, Ordering::Release);
        tracing::debug!(db = %cfg.db, worker = cfg.index, origin = %cfg.origin, %origin_lsn, "apply worker ready");
        Ok(Worker {
            conn,
            progress,
            counters,
            origin_lsn,
            statements: HashMap::new(),
            tables: HashMap::new(),
            windows: HashMap::new(),
            windowed_rows: 0,
            windowed_bytes: 0,
            next_stmt: 0,
            open: false,
            batch_started: Instant::now(),
            batch_changes: 0,
            batch_counts: [0; 3],
            last_commit: None,
            skipping: false,
            in_txn: false,
            current: start,
            delivered: start,
            pending: VecDeque::new(),
            last_check: Instant::now(),
            queued_kinds: Vec::new(),
            run: None,
            cfg,
        })
    }

    /// Queues the pending run of inserts: one set-based INSERT when the
    /// table's types allow, else a multi-row INSERT.
    fn flush_run(&mut self) -> Result<(), ApplyError> {
        let Some((rel, rows)) = self.run.take() else {
            return Ok(());
        };
        if let Some(table) = self.tables.get(&(rel.id.0, rel.version)).cloned() {
            let refs: Vec<&TupleData> = rows.iter().collect();
            let all: Vec<usize> = (0..rel.columns.len()).collect();
            if self.queue_set(&rel, &table, Kind::Insert, &all, &refs, Vec::new())? {
                return Ok(());
            }
        }
        let key = StmtKey {
            rel: rel.id.0,
            version: rel.version,
            kind: Kind::Insert,
            set: None,
            matching: None,
            rows: rows.len(),
            set_cols: Vec::new(),
        };
        let n = rows.len();
        let name = self.statement_name(&key, &[], || statements::insert_rows(&rel, n))?;
        let params: Vec<Param<'_>> = rows.iter().flat_map(|t| t.iter_ref().map(param)).collect();
        self.conn
            .queue_execute(&name, &params)
            .map_err(|e| self.err(format!("insert into {}", rel.display()), e))?;
        self.queued_kinds.push(Some((Kind::Insert, rel, n as u64)));
        Ok(())
    }

    /// Queues one set-based statement over `rows`: an array per column of
    /// `cols` (the key columns first for UPDATE and DELETE). Returns false,
    /// queuing nothing, when the rows go one by one instead: a single row
    /// (its prepared statement is as cheap), column types the target has
    /// no arrays for, or a column mixing value formats.
    fn queue_set(
        &mut self,
        rel: &Arc<RelationInfo>,
        table: &TargetTable,
        kind: Kind,
        cols: &[usize],
        rows: &[&TupleData],
        set_cols: Vec<usize>,
    ) -> Result<bool, ApplyError> {
        let Some(array_types) = table.array_types.as_deref() else {
            return Ok(false);
        };
        if rows.len() < 2 {
            return Ok(false);
        }
        // Where each column of a row goes among the arrays.
        let mut slot = vec![usize::MAX; rel.columns.len()];
        for (n, &c) in cols.iter().enumerate() {
            if let Some(s) = slot.get_mut(c) {
                *s = n;
            }
        }
        let mut builders: Vec<ArrayBuilder> = cols
            .iter()
            .map(|&c| ArrayBuilder::new(rel.columns[c].type_oid))
            .collect();
        for row in rows {
            for (i, v) in row.iter_ref().enumerate() {
                let Some(b) = slot.get(i).and_then(|&n| builders.get_mut(n)) else {
                    continue;
                };
                let pushed = match v {
                    ColumnRef::Null | ColumnRef::UnchangedToast => {
                        b.push_null();
                        Ok(())
                    }
                    ColumnRef::Text(t) => b.push(ArrayFormat::Text, t),
                    ColumnRef::Binary(t) => b.push(ArrayFormat::Binary, t),
                };
                if pushed.is_err() {
                    return Ok(false);
                }
            }
        }
        let arrays: Vec<(ArrayFormat, Vec<u8>)> =
            builders.into_iter().map(ArrayBuilder::finish).collect();
        let params: Vec<Param<'_>> = arrays
            .iter()
            .map(|(f, b)| match f {
                ArrayFormat::Binary => Param::Binary(b),
                ArrayFormat::Text => Param::RawText(b),
            })
            .collect();
        let types: Vec<u32> = cols.iter().map(|&c| array_types[c]).collect();
        let only = table.only;
        let key = StmtKey {
            rel: rel.id.0,
            version: rel.version,
            kind,
            set: None,
            matching: None,
            rows: 0,
            set_cols,
        };
        let name = match kind {
            Kind::Insert => self.statement_name(&key, &types, || statements::insert_set(rel))?,
            Kind::Delete => {
                self.statement_name(&key, &types, || statements::delete_set(rel, only))?
            }
            Kind::Update => {
                let set_cols = key.set_cols.clone();
                self.statement_name(&key, &types, || {
                    statements::update_set(rel, &set_cols, only)
                })?
            }
        };
        let what = match kind {
            Kind::Insert => "insert into",
            Kind::Update => "update of",
            Kind::Delete => "delete from",
        };
        self.conn
            .queue_execute(&name, &params)
            .map_err(|e| self.err(format!("set-based {what} {}", rel.display()), e))?;
        self.queued_kinds
            .push(Some((kind, rel.clone(), rows.len() as u64)));
        Ok(true)
    }

    /// Queues what a table's window comes to.
    fn flush_window(&mut self, rel_id: u32) -> Result<(), ApplyError> {
        let Some((rel, mut window)) = self.windows.remove(&rel_id) else {
            return Ok(());
        };
        self.windowed_rows = self.windowed_rows.saturating_sub(window.len());
        self.windowed_bytes = self.windowed_bytes.saturating_sub(window.bytes());
        let net = window.take();
        let table = self.tables.get(&(rel.id.0, rel.version)).cloned();
        let Some(table) = table else {
            return Err(self.setup_err(format!("table {} was folded unread", rel.display())));
        };
        self.queue_net(&rel, &table, net)
    }

    /// Queues every window's net effect.
    fn flush_windows(&mut self) -> Result<(), ApplyError> {
        let mut ids: Vec<u32> = self.windows.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.flush_window(id)?;
        }
        self.windowed_rows = 0;
        self.windowed_bytes = 0;
        Ok(())
    }

    fn queue_net(
        &mut self,
        rel: &Arc<RelationInfo>,
        table: &TargetTable,
        net: NetChanges,
    ) -> Result<(), ApplyError> {
        let keys = statements::key_columns(rel);
        // Keys are distinct across the three lists, so any order is right.
        if !net.deletes.is_empty() {
            let rows: Vec<&TupleData> = net.deletes.iter().collect();
            if !self.queue_set(rel, table, Kind::Delete, &keys, &rows, Vec::new())? {
                for row in rows {
                    self.queue_delete_row(rel, table, row)?;
                }
            }
        }
        // Updates grouped by the columns they set (unchanged TOAST values
        // and GENERATED ALWAYS identity columns are left alone).
        let mut groups: Vec<(Vec<usize>, Vec<&TupleData>)> = Vec::new();
        for row in &net.updates {
            let set: Vec<usize> = row
                .iter_ref()
                .enumerate()
                .filter(|(i, v)| {
                    !rel.columns[*i].is_key
                        && !matches!(v, ColumnRef::UnchangedToast)
                        && !table.always_identity.get(*i).copied().unwrap_or(false)
                })
                .map(|(i, _)| i)
                .collect();
            match groups.iter_mut().find(|(s, _)| *s == set) {
                Some((_, rows)) => rows.push(row),
                None => groups.push((set, vec![row])),
            }
        }
        for (set, rows) in groups {
            if set.is_empty() {
                // Only the key, unchanged: nothing to write.
                continue;
            }
            let cols: Vec<usize> = keys.iter().chain(set.iter()).copied().collect();
            if !self.queue_set(rel, table, Kind::Update, &cols, &rows, set)? {
                for row in rows {
                    self.queue_update_row(rel, table, None, row)?;
                }
            }
        }
        for row in net.inserts {
            self.push_insert(rel, table, row)?;
        }
        self.flush_run()
    }

    /// Queues a statement that is not a row change.
    fn queue_plain(&mut self, sql: &str) -> Result<(), ApplyError> {
        self.flush_windows()?;
        self.flush_run()?;
        self.conn
            .queue_statement(sql)
            .map_err(|e| self.err(sql.to_string(), e))?;
        self.queued_kinds.push(None);
        Ok(())
    }

    fn setup_err(&self, message: String) -> ApplyError {
        ApplyError::Setup {
            db: self.cfg.db.clone(),
            worker: self.cfg.index,
            message,
        }
    }

    fn err(&self, context: String, source: ConnError) -> ApplyError {
        ApplyError::Target {
            db: self.cfg.db.clone(),
            worker: self.cfg.index,
            context,
            source: Box::new(source),
        }
    }

    async fn run(&mut self, rx: Receiver<ApplyMsg>) -> Result<(), ApplyError> {
        loop {
            let wait = if self.open && !self.in_txn {
                self.cfg
                    .batch_max_delay
                    .saturating_sub(self.batch_started.elapsed())
            } else {
                DURABILITY_CHECK
            };
            // Blocking here is fine: this runtime drives nothing but this
            // worker's own session.
            // try_recv first: recv_timeout reads the clock on every call,
            // which showed in profiles at one call per change.
            let msg = match rx.try_recv().or_else(|_| rx.recv_timeout(wait)) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    if self.in_txn {
                        // The stream stopped inside a transaction: keep
                        // nothing of the batch; it is delivered again.
                        self.abandon_batch().await;
                        return Ok(());
                    }
                    self.commit_batch().await?;
                    self.check_durability().await?;
                    return Ok(());
                }
            };
            match msg {
                None => {
                    if self.open && !self.in_txn {
                        self.commit_batch().await?;
                    }
                }
                Some(ApplyMsg::Begin { commit_lsn }) => {
                    self.current = commit_lsn;
                    // The origin holds the end of the last applied commit
                    // record: a transaction committed before it is done.
                    self.skipping = commit_lsn < self.origin_lsn;
                    self.in_txn = !self.skipping;
                    if !self.skipping && !self.open {
                        self.queue_plain("BEGIN")?;
                        self.open = true;
                        self.batch_started = Instant::now();
                    }
                }
                Some(ApplyMsg::Change(change)) => {
                    if !self.skipping {
                        self.apply(change).await?;
                    }
                }
                Some(ApplyMsg::Truncate {
                    rels,
                    cascade,
                    restart_identity,
                }) => {
                    if !self.skipping {
                        let mut only = Vec::with_capacity(rels.len());
                        for r in &rels {
                            only.push(self.target_table(r).await?.only);
                        }
                        let sql = statements::truncate(&rels, &only, cascade, restart_identity);
                        self.queue_plain(&sql)?;
                        self.batch_changes += 1;
                        self.counters
                            .cdc_truncate_counter
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(ApplyMsg::Commit {
                    commit_lsn: _,
                    end_lsn,
                    commit_time,
                }) => {
                    if end_lsn > self.delivered {
                        self.delivered = end_lsn;
                    }
                    self.in_txn = false;
                    if self.skipping {
                        self.skipping = false;
                    } else {
                        self.last_commit = Some((end_lsn, commit_time));
                        // Commit when the batch is full, old, or nothing
                        // more is waiting: big batches under load, low
                        // latency when quiet.
                        if self.batch_changes >= self.cfg.batch_max_changes
                            || self.batch_started.elapsed() >= self.cfg.batch_max_delay
                            || rx.is_empty()
                        {
                            self.commit_batch().await?;
                        }
                    }
                }
                Some(ApplyMsg::Progress { upto }) => {
                    if upto > self.delivered {
                        self.delivered = upto;
                    }
                    if !self.open {
                        self.advance_idle();
                    }
                }
                Some(ApplyMsg::Flush(ack)) => {
                    if self.in_txn {
                        // Only a stopping stream flushes mid-transaction.
                        self.abandon_batch().await;
                        let _ = ack.send(());
                        return Ok(());
                    }
                    self.commit_batch().await?;
                    let _ = ack.send(());
                }
            }
            if !self.open && self.last_check.elapsed() >= DURABILITY_CHECK {
                self.check_durability().await?;
            }
        }
    }

    /// No batch open: everything delivered is applied.
    fn advance_idle(&mut self) {
        self.progress
            .applied
            .store(self.delivered.0, Ordering::Release);
        match self.pending.back_mut() {
            Some(last) => last.1 = self.delivered,
            None => self
                .progress
                .durable
                .store(self.delivered.0, Ordering::Release),
        }
    }

    async fn check_durability(&mut self) -> Result<(), ApplyError> {
        self.last_check = Instant::now();
        if self.pending.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT pg_catalog.pg_replication_origin_progress({}, true)",
            quote_literal(&self.cfg.origin)
        );
        let rows = self
            .conn
            .simple_query(&sql)
            .await
            .map_err(|e| self.err("reading flushed origin progress".into(), e))?;
        let flushed = rows
            .first()
            .and_then(|r| r.opt_str(0).ok().flatten())
            .and_then(|s| s.parse::<Lsn>().ok())
            .unwrap_or(Lsn(0));
        while let Some(&(recorded, covered)) = self.pending.front() {
            if recorded > flushed {
                break;
            }
            self.pending.pop_front();
            self.progress.durable.fetch_max(covered.0, Ordering::AcqRel);
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<(), ApplyError> {
        self.flush_run()?;
        if self.conn.queued() == 0 {
            return Ok(());
        }
        let counts = self.conn.sync().await.map_err(|e| {
            self.err(
                format!(
                    "applying changes of the transaction committed at {}",
                    self.current
                ),
                e,
            )
        })?;
        let kinds = std::mem::take(&mut self.queued_kinds);
        for (entry, n) in kinds.iter().zip(counts.iter()) {
            let Some((kind, rel, expected)) = entry else {
                continue;
            };
            if *n < *expected && *kind != Kind::Insert {
                tracing::warn!(db = %self.cfg.db, table = %rel.display(), "{} of {expected} rows to {} not found on the target", expected - n, if *kind == Kind::Update { "update" } else { "delete" });
            }
        }
        Ok(())
    }

    /// Rolls the open batch back without recording progress: used only
    /// when the stream stops inside a source transaction, which is then
    /// delivered again from the origin's position.
    async fn abandon_batch(&mut self) {
        self.run = None;
        self.windows.clear();
        self.windowed_rows = 0;
        self.windowed_bytes = 0;
        if self.open {
            let _ = self.conn.sync().await;
            let _ = self.conn.execute("ROLLBACK").await;
        }
        self.open = false;
        self.in_txn = false;
        self.last_commit = None;
    }

    async fn commit_batch(&mut self) -> Result<(), ApplyError> {
        if !self.open {
            return Ok(());
        }
        if let Some((lsn, time)) = self.last_commit {
            let micros = time.0 as f64 + 946_684_800.0 * 1e6;
            let sql = format!(
                "SELECT pg_catalog.pg_replication_origin_xact_setup('{lsn}', pg_catalog.to_timestamp({:.6}))",
                micros / 1e6
            );
            self.queue_plain(&sql)?;
        }
        self.queue_plain("COMMIT")?;
        self.sync().await?;
        self.open = false;
        if let Some((lsn, _)) = self.last_commit.take() {
            self.pending.push_back((lsn, self.delivered));
        }
        self.progress
            .applied
            .store(self.delivered.0, Ordering::Release);
        let [i, u, d] = std::mem::take(&mut self.batch_counts);
        let c = &self.counters;
        c.cdc_insert_counter.fetch_add(i, Ordering::Relaxed);
        c.cdc_update_counter.fetch_add(u, Ordering::Relaxed);
        c.cdc_delete_counter.fetch_add(d, Ordering::Relaxed);
        c.applied_changes.fetch_add(i + u + d, Ordering::Relaxed);
        crate::metrics::applied(&self.cfg.db, i, u, d);
        self.batch_changes = 0;
        Ok(())
    }

    async fn target_table(
        &mut self,
        rel: &Arc<RelationInfo>,
    ) -> Result<Arc<TargetTable>, ApplyError> {
        if let Some(t) = self.tables.get(&(rel.id.0, rel.version)) {
            return Ok(Arc::clone(t));
        }
        // A new schema version of a table: what its window holds was
        // decoded under the old one.
        self.flush_window(rel.id.0)?;
        self.sync().await?;
        let table = TargetTable::read(&mut self.conn, rel)
            .await
            .map_err(|e| self.err(format!("table {} on the target", rel.display()), e))?;
        tracing::debug!(db = %self.cfg.db, table = %rel.display(), foldable = table.foldable, set_based = table.array_types.is_some(), "apply plan");
        let table = Arc::new(table);
        self.tables
            .insert((rel.id.0, rel.version), Arc::clone(&table));
        Ok(table)
    }

    fn statement_name(
        &mut self,
        key: &StmtKey,
        param_types: &[u32],
        build: impl FnOnce() -> String,
    ) -> Result<String, ApplyError> {
        if let Some(n) = self.statements.get(key) {
            return Ok(n.clone());
        }
        let name = format!("pgm{}", self.next_stmt);
        self.next_stmt += 1;
        let sql = build();
        self.conn
            .queue_parse_typed(&name, &sql, param_types)
            .map_err(|e| self.err(format!("preparing {sql}"), e))?;
        self.statements.insert(key.clone(), name.clone());
        Ok(name)
    }

    async fn apply(&mut self, change: Change) -> Result<(), ApplyError> {
        if !self.open {
            // Every change belongs to a batch opened at its Begin; one
            // outside would autocommit without origin progress.
            return Err(self.setup_err(format!(
                "a change of the transaction committed at {} arrived outside a batch",
                self.current
            )));
        }
        let (kind, rel) = match &change {
            Change::Insert { rel, .. } => (Kind::Insert, rel.clone()),
            Change::Update { rel, .. } => (Kind::Update, rel.clone()),
            Change::Delete { rel, .. } => (Kind::Delete, rel.clone()),
        };
        match &change {
            Change::Insert { new, .. } | Change::Update { new, .. } => {
                check_width(&rel, new, &self.cfg.db)?
            }
            Change::Delete { .. } => {}
        }
        let table = self.target_table(&rel).await?;
        self.batch_counts[kind as usize] += 1;
        self.batch_changes += 1;
        if table.foldable && self.fold(&rel, &change) {
            if self.windowed_rows >= WINDOW_MAX_ROWS || self.windowed_bytes >= WINDOW_MAX_BYTES {
                self.flush_windows()?;
            }
        } else {
            // In order after whatever the table's window holds.
            self.flush_window(rel.id.0)?;
            match change {
                Change::Insert { new, .. } => self.push_insert(&rel, &table, new)?,
                Change::Update { old, new, .. } => {
                    self.flush_run()?;
                    self.queue_update_row(&rel, &table, old.as_ref(), &new)?
                }
                Change::Delete { old, .. } => {
                    self.flush_run()?;
                    self.queue_delete_row(&rel, &table, old.tuple())?
                }
            }
            if table.foldable {
                self.flush_run()?;
            }
        }
        if self.conn.queued() >= PIPELINE_FLUSH_STATEMENTS
            || self.conn.queued_bytes() >= PIPELINE_FLUSH_BYTES
        {
            self.sync().await?;
        }
        Ok(())
    }

    /// Folds a change into its table's window; false when it cannot be.
    fn fold(&mut self, rel: &Arc<RelationInfo>, change: &Change) -> bool {
        let stale = self
            .windows
            .get(&rel.id.0)
            .is_some_and(|(r, _)| r.version != rel.version);
        if stale && self.flush_window(rel.id.0).is_err() {
            return false;
        }
        let (_, window) = self
            .windows
            .entry(rel.id.0)
            .or_insert_with(|| (rel.clone(), TableWindow::default()));
        let (rows, bytes) = (window.len(), window.bytes());
        let folded = match change {
            Change::Insert { new, .. } => window.insert(rel, new),
            Change::Update { old, new, .. } => window.update(rel, old.as_ref(), new),
            Change::Delete { old, .. } => window.delete(rel, old),
        }
        .is_ok();
        self.windowed_rows += window.len() - rows;
        self.windowed_bytes += window.bytes().saturating_sub(bytes);
        folded
    }

    /// Adds a row to the pending run of inserts, queuing the run when the
    /// table changes or the run is full.
    fn push_insert(
        &mut self,
        rel: &Arc<RelationInfo>,
        table: &TargetTable,
        new: TupleData,
    ) -> Result<(), ApplyError> {
        let limit = if table.array_types.is_some() {
            WINDOW_MAX_ROWS
        } else {
            INSERT_RUN.min(65535 / rel.columns.len().max(1)).max(1)
        };
        let same = matches!(&self.run, Some((r, _)) if r.id == rel.id && r.version == rel.version);
        if !same {
            self.flush_run()?;
        }
        let (_, rows) = self
            .run
            .get_or_insert_with(|| (rel.clone(), Vec::with_capacity(limit.min(256))));
        rows.push(new);
        if rows.len() >= limit {
            self.flush_run()?;
        }
        Ok(())
    }

    /// Queues one UPDATE. `old` is the key or row the source sent, if any
    /// (a key change, or FULL identity); else `new` carries the key.
    fn queue_update_row(
        &mut self,
        rel: &Arc<RelationInfo>,
        table: &TargetTable,
        old: Option<&OldTuple>,
        new: &TupleData,
    ) -> Result<(), ApplyError> {
        // A key change (old key sent) must set the identity column
        // too; otherwise leave GENERATED ALWAYS columns alone.
        let skip: &[bool] = if old.is_some() && !rel.full_identity() {
            &[]
        } else {
            &table.always_identity
        };
        let set = ColumnMask::from_flags(
            new.iter_ref()
                .map(|v| !matches!(v, ColumnRef::UnchangedToast)),
        );
        let identity_tuple: &TupleData = old.map(OldTuple::tuple).unwrap_or(new);
        let matching = match_mask(rel, identity_tuple);
        let key = StmtKey {
            rel: rel.id.0,
            version: rel.version,
            kind: Kind::Update,
            set: Some(set),
            matching: Some(matching),
            rows: 1,
            set_cols: Vec::new(),
        };
        let (Some(set), Some(matching)) = (&key.set, &key.matching) else {
            unreachable!("both masks were just set")
        };
        let name = self.statement_name(&key, &[], || {
            statements::update(rel, set, matching, skip, table.only)
        })?;
        let mut params: Vec<Param<'_>> = Vec::with_capacity(rel.columns.len() * 2);
        for (i, v) in new.iter_ref().enumerate() {
            if set.has(i) && !skip.get(i).copied().unwrap_or(false) {
                params.push(param(v));
            }
        }
        push_identity(&mut params, identity_tuple, matching);
        self.conn
            .queue_execute(&name, &params)
            .map_err(|e| self.err(format!("update of {}", rel.display()), e))?;
        self.queued_kinds.push(Some((Kind::Update, rel.clone(), 1)));
        Ok(())
    }

    /// Queues one DELETE of the row `tuple` identifies.
    fn queue_delete_row(
        &mut self,
        rel: &Arc<RelationInfo>,
        table: &TargetTable,
        tuple: &TupleData,
    ) -> Result<(), ApplyError> {
        let matching = match_mask(rel, tuple);
        let key = StmtKey {
            rel: rel.id.0,
            version: rel.version,
            kind: Kind::Delete,
            set: None,
            matching: Some(matching),
            rows: 1,
            set_cols: Vec::new(),
        };
        let Some(matching) = &key.matching else {
            unreachable!("the mask was just set")
        };
        let name =
            self.statement_name(&key, &[], || statements::delete(rel, matching, table.only))?;
        let mut params: Vec<Param<'_>> = Vec::with_capacity(rel.columns.len());
        push_identity(&mut params, tuple, matching);
        self.conn
            .queue_execute(&name, &params)
            .map_err(|e| self.err(format!("delete from {}", rel.display()), e))?;
        self.queued_kinds.push(Some((Kind::Delete, rel.clone(), 1)));
        Ok(())
    }
}

/// The values that find the old row, in the order of the WHERE clause.
fn push_identity<'a>(params: &mut Vec<Param<'a>>, tuple: &'a TupleData, matching: &ColumnMask) {
    for (i, v) in tuple.iter_ref().enumerate() {
        if matching.has(i) {
            params.push(param(v));
        }
    }
}

/// Columns that find the old row: the key columns, or under FULL identity
/// every column the old tuple actually carries (not an unchanged TOAST
/// placeholder).
fn match_mask(rel: &RelationInfo, tuple: &TupleData) -> ColumnMask {
    if rel.full_identity() {
        ColumnMask::from_flags(
            tuple
                .iter_ref()
                .map(|v| !matches!(v, ColumnRef::UnchangedToast)),
        )
    } else {
        ColumnMask::from_flags(rel.columns.iter().map(|c| c.is_key))
    }
}

fn check_width(rel: &RelationInfo, tuple: &TupleData, db: &str) -> Result<(), ApplyError> {
    if tuple.len() != rel.columns.len() {
        return Err(ApplyError::Setup {
            db: db.to_string(),
            worker: 0,
            message: format!(
                "table {}: a row with {} columns but the Relation message has {}",
                rel.display(),
                tuple.len(),
                rel.columns.len()
            ),
        });
    }
    Ok(())
}

/// A column value as a parameter, borrowed from the received message:
/// nothing is copied or reference-counted on the way to the socket.
fn param(v: ColumnRef<'_>) -> Param<'_> {
    match v {
        ColumnRef::Null | ColumnRef::UnchangedToast => Param::Null,
        ColumnRef::Text(b) => Param::RawText(b),
        ColumnRef::Binary(b) => Param::Binary(b),
    }
}
