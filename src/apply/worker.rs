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

use crate::conn::{quote_literal, ConnError, ConnectParams, Connection};
use crate::control::progress::DbProgress;
use crate::protocol::lsn::Lsn;
use crate::protocol::pgoutput::TupleData;
use crate::protocol::timestamp::PgTimestamp;

use super::relation::RelationInfo;
use super::statements::{self, ColumnMask};
use super::target_table::TargetTable;
use super::window::TableWindow;
use super::{ApplyError, ApplyMsg, Change, Inconsistency, WorkerProgress};

mod ddl;
mod pipeline;
mod rows;
mod set_based;

use pipeline::Queued;
use rows::check_width;

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
    // Created here, in the database's span, and entered by the thread.
    let span = tracing::info_span!("worker", index = cfg.index);
    std::thread::Builder::new()
        .name(format!("apply-{}", cfg.index))
        .spawn(move || {
            let _in_span = span.enter();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| ApplyError::Setup {
                    db: cfg.db.clone(),
                    worker: cfg.index,
                    what: Inconsistency::Runtime(e),
                })?;
            let result = rt.block_on(async {
                let mut w = Worker::start(cfg, progress.clone(), counters).await?;
                progress.started.store(true, Ordering::Release);
                w.run(rx).await
            });
            if result.is_err() {
                progress.failed.store(true, Ordering::Release);
            }
            result
        })
}

/// A commit on the target not yet known flushed to its disk, as
/// PostgreSQL's apply worker keeps its `FlushPosition` list (local end,
/// remote end): here the source commit LSN the replication origin records
/// with the commit, which `pg_replication_origin_progress(…, true)` reports
/// once flushed, and the stream position that is durable from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlushPosition {
    /// The origin LSN recorded with the commit.
    origin_lsn: Lsn,
    /// Everything delivered up to here is durable once the commit is
    /// (keepalives after it move this on without another commit).
    covers: Lsn,
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

/// A queued execution: a row change (checked and named), or `None` for a
/// statement that is not one (BEGIN, TRUNCATE, COMMIT).
type Expected = Option<Queued>;

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
    /// Commit LSN of the first transaction of the open batch: where this
    /// worker resumes if the batch fails.
    batch_first: Lsn,
    delivered: Lsn,
    /// Commits not yet known durable, oldest first.
    pending: VecDeque<FlushPosition>,
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
        let setup = |what: Inconsistency| ApplyError::Setup {
            db: cfg.db.clone(),
            worker: cfg.index,
            what,
        };
        // A target that cannot be reached or refuses the setup is worth
        // retrying: these keep the wire error, hence its SQLSTATE.
        let target = |context: &str, e: ConnError| ApplyError::Target {
            db: cfg.db.clone(),
            worker: cfg.index,
            context: context.to_string(),
            at: None,
            source: Box::new(e),
        };
        let mut conn = Connection::connect(&cfg.target)
            .await
            .map_err(|e| target("connecting to the target", e))?;
        let origin = quote_literal(&cfg.origin);
        // replica: no user triggers or FK checks fire for replicated rows
        // (the source already checked them; tables on different workers
        // commit in different orders). Asynchronous commit is safe because
        // the durable position is read back from the origin, flushed.
        conn.execute(&format!(
            "SET session_replication_role = replica; SET synchronous_commit = off; \
             SET default_transaction_read_only = off; \
             SET statement_timeout = 0; SET lock_timeout = 0; \
             SELECT pg_catalog.pg_replication_origin_create({origin}) \
               WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_origin WHERE roname = {origin}); \
             SELECT pg_catalog.pg_replication_origin_session_setup({origin})"
        ))
        .await
        .map_err(|e| target(&format!("setting up replication origin {}", cfg.origin), e))?;
        let rows = conn
            .simple_query(&format!(
                "SELECT pg_catalog.pg_replication_origin_progress({origin}, true)"
            ))
            .await
            .map_err(|e| target("reading origin progress", e))?;
        let origin_lsn = match rows.first().map(|r| r.opt_str(0)) {
            Some(Ok(Some(s))) => s.parse::<Lsn>().map_err(|source| {
                setup(Inconsistency::OriginProgress {
                    value: s.to_string(),
                    source,
                })
            })?,
            _ => Lsn(0),
        };
        let start = origin_lsn.max(cfg.start_lsn);
        progress.applied.store(start.0, Ordering::Release);
        progress.durable.store(start.0, Ordering::Release);
        tracing::debug!(worker = cfg.index, origin = %cfg.origin, %origin_lsn, "apply worker ready");
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
            batch_first: start,
            delivered: start,
            pending: VecDeque::new(),
            last_check: Instant::now(),
            queued_kinds: Vec::new(),
            run: None,
            cfg,
        })
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

    fn setup_err(&self, what: Inconsistency) -> ApplyError {
        ApplyError::Setup {
            db: self.cfg.db.clone(),
            worker: self.cfg.index,
            what,
        }
    }

    fn err(&self, context: String, source: ConnError) -> ApplyError {
        ApplyError::Target {
            db: self.cfg.db.clone(),
            worker: self.cfg.index,
            context,
            at: self.open.then_some(self.batch_first),
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
                Some(ApplyMsg::Begin { commit_lsn }) => self.begin(commit_lsn)?,
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
                        self.truncate(&rels, cascade, restart_identity).await?;
                    }
                }
                Some(ApplyMsg::Ddl(ddl)) => {
                    if !self.skipping {
                        self.ddl(&ddl).await?;
                    }
                }
                Some(ApplyMsg::Commit {
                    commit_lsn: _,
                    end_lsn,
                    commit_time,
                }) => self.commit(end_lsn, commit_time, rx.is_empty()).await?,
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

    /// A transaction starts: skipped if the origin says it was applied,
    /// else it joins the open batch (opening one if none is).
    fn begin(&mut self, commit_lsn: Lsn) -> Result<(), ApplyError> {
        self.current = commit_lsn;
        // The origin holds the end of the last applied commit
        // record: a transaction committed before it is done.
        self.skipping = commit_lsn < self.origin_lsn;
        self.in_txn = !self.skipping;
        if !self.skipping && !self.open {
            self.queue_plain("BEGIN")?;
            self.batch_first = commit_lsn;
            self.open = true;
            self.batch_started = Instant::now();
        }
        Ok(())
    }

    /// Queues one TRUNCATE of the tables truncated together.
    async fn truncate(
        &mut self,
        rels: &[Arc<RelationInfo>],
        cascade: bool,
        restart_identity: bool,
    ) -> Result<(), ApplyError> {
        let mut only = Vec::with_capacity(rels.len());
        for r in rels {
            only.push(self.target_table(r).await?.only);
        }
        let sql = statements::truncate(rels, &only, cascade, restart_identity);
        self.queue_plain(&sql)?;
        self.batch_changes += 1;
        self.counters
            .cdc_truncate_counter
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A transaction ends; `idle` says nothing more is waiting.
    async fn commit(
        &mut self,
        end_lsn: Lsn,
        commit_time: PgTimestamp,
        idle: bool,
    ) -> Result<(), ApplyError> {
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
                || idle
            {
                self.commit_batch().await?;
            }
        }
        Ok(())
    }

    /// No batch open: everything delivered is applied.
    fn advance_idle(&mut self) {
        self.progress
            .applied
            .store(self.delivered.0, Ordering::Release);
        match self.pending.back_mut() {
            Some(last) => last.covers = self.delivered,
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
        while let Some(&FlushPosition { origin_lsn, covers }) = self.pending.front() {
            if origin_lsn > flushed {
                break;
            }
            self.pending.pop_front();
            self.progress.durable.fetch_max(covers.0, Ordering::AcqRel);
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
            self.pending.push_back(FlushPosition {
                origin_lsn: lsn,
                covers: self.delivered,
            });
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
        tracing::debug!(table = %rel.display(), foldable = table.foldable, set_based = table.array_types.is_some(), "apply plan");
        let table = Arc::new(table);
        self.tables
            .insert((rel.id.0, rel.version), Arc::clone(&table));
        Ok(table)
    }

    /// The prepared statement for `key`, prepared now (with the SQL and
    /// parameter types `build` gives) the first time it is asked for.
    fn statement_name(
        &mut self,
        key: &StmtKey,
        build: impl FnOnce() -> (String, Vec<u32>),
    ) -> Result<String, ApplyError> {
        if let Some(n) = self.statements.get(key) {
            return Ok(n.clone());
        }
        let name = format!("pgm{}", self.next_stmt);
        self.next_stmt += 1;
        let (sql, param_types) = build();
        self.conn
            .queue_parse_typed(&name, &sql, &param_types)
            .map_err(|e| self.err(format!("preparing {sql}"), e))?;
        self.statements.insert(key.clone(), name.clone());
        Ok(name)
    }

    async fn apply(&mut self, change: Change) -> Result<(), ApplyError> {
        if !self.open {
            // Every change belongs to a batch opened at its Begin; one
            // outside would autocommit without origin progress.
            return Err(self.setup_err(Inconsistency::OutsideBatch { lsn: self.current }));
        }
        let (kind, rel) = match &change {
            Change::Insert { rel, .. } => (Kind::Insert, rel.clone()),
            Change::Update { rel, .. } => (Kind::Update, rel.clone()),
            Change::Delete { rel, .. } => (Kind::Delete, rel.clone()),
        };
        if kind != Kind::Insert && !rel.full_identity() && !rel.columns.iter().any(|c| c.is_key) {
            // Nothing finds the old row: `WHERE true` would change every
            // row. An inserts-only ([keyless]) table never sends these.
            return Err(self.setup_err(Inconsistency::NoIdentity {
                kind: if kind == Kind::Update {
                    "an UPDATE"
                } else {
                    "a DELETE"
                },
                table: rel.qualified.clone(),
                lsn: self.current,
            }));
        }
        match &change {
            Change::Insert { new, .. } | Change::Update { new, .. } => {
                check_width(&rel, new, &self.cfg.db, self.cfg.index)?
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
}
