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

use super::relation::RelationInfo;
use super::statements::{self, ColumnMask};
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
    /// Rows of a multi-row INSERT; 1 otherwise.
    rows: usize,
}

/// Most rows in one multi-row INSERT: a run of inserts into one table goes
/// out as few statements (PostgreSQL's limit of 65535 parameters bounds it
/// further for wide tables).
const INSERT_RUN: usize = 64;

struct Worker {
    cfg: WorkerConfig,
    conn: Connection,
    progress: Arc<WorkerProgress>,
    counters: Arc<DbProgress>,
    /// Transactions at or before this LSN were applied in an earlier run.
    origin_lsn: Lsn,
    statements: HashMap<StmtKey, String>,
    /// Per table and schema version: which columns are GENERATED ALWAYS
    /// AS IDENTITY on the target (they cannot be SET by an UPDATE).
    always_identity: HashMap<(u32, u64), Arc<[bool]>>,
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
    queued_kinds: Vec<Option<(Kind, Arc<RelationInfo>)>>,
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
            always_identity: HashMap::new(),
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

    /// Queues the pending run of inserts as multi-row INSERTs.
    fn flush_run(&mut self) -> Result<(), ApplyError> {
        let Some((rel, rows)) = self.run.take() else {
            return Ok(());
        };
        let key = StmtKey {
            rel: rel.id.0,
            version: rel.version,
            kind: Kind::Insert,
            set: None,
            matching: None,
            rows: rows.len(),
        };
        let n = rows.len();
        let name = self.statement_name(&key, || statements::insert_rows(&rel, n))?;
        let params: Vec<Param<'_>> = rows.iter().flat_map(|t| t.iter_ref().map(param)).collect();
        self.conn
            .queue_execute(&name, &params)
            .map_err(|e| self.err(format!("insert into {}", rel.display()), e))?;
        self.queued_kinds.push(Some((Kind::Insert, rel)));
        Ok(())
    }

    /// Queues a statement that is not a row change.
    fn queue_plain(&mut self, sql: &str) -> Result<(), ApplyError> {
        self.flush_run()?;
        self.conn
            .queue_statement(sql)
            .map_err(|e| self.err(sql.to_string(), e))?;
        self.queued_kinds.push(None);
        Ok(())
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
                        let sql = statements::truncate(&rels, cascade, restart_identity);
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
            let Some((kind, rel)) = entry else { continue };
            if *n == 0 && *kind != Kind::Insert {
                tracing::warn!(db = %self.cfg.db, table = %rel.display(), "row to {} not found on the target", if *kind == Kind::Update { "update" } else { "delete" });
            }
        }
        Ok(())
    }

    /// Rolls the open batch back without recording progress: used only
    /// when the stream stops inside a source transaction, which is then
    /// delivered again from the origin's position.
    async fn abandon_batch(&mut self) {
        self.run = None;
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

    async fn identity_columns(
        &mut self,
        rel: &Arc<RelationInfo>,
    ) -> Result<Arc<[bool]>, ApplyError> {
        if let Some(v) = self.always_identity.get(&(rel.id.0, rel.version)) {
            return Ok(Arc::clone(v));
        }
        self.sync().await?;
        let rows = self
            .conn
            .query(
                "SELECT a.attname, a.attidentity = 'a' FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                &[Param::Text(&rel.qualified)],
            )
            .await
            .map_err(|e| self.err(format!("table {} on the target", rel.display()), e))?;
        let always: Vec<String> = rows
            .iter()
            .filter(|r| r.bool(1).unwrap_or(false))
            .filter_map(|r| r.str(0).ok().map(str::to_string))
            .collect();
        let flags: Vec<bool> = rel
            .columns
            .iter()
            .map(|c| always.contains(&c.name))
            .collect();
        let flags: Arc<[bool]> = flags.into();
        self.always_identity
            .insert((rel.id.0, rel.version), Arc::clone(&flags));
        Ok(flags)
    }

    fn statement_name(
        &mut self,
        key: &StmtKey,
        build: impl FnOnce() -> String,
    ) -> Result<String, ApplyError> {
        if let Some(n) = self.statements.get(key) {
            return Ok(n.clone());
        }
        let name = format!("pgm{}", self.next_stmt);
        self.next_stmt += 1;
        let sql = build();
        self.conn
            .queue_parse(&name, &sql)
            .map_err(|e| self.err(format!("preparing {sql}"), e))?;
        self.statements.insert(key.clone(), name.clone());
        Ok(name)
    }

    async fn apply(&mut self, change: Change) -> Result<(), ApplyError> {
        if !self.open {
            // Every change belongs to a batch opened at its Begin; one
            // outside would autocommit without origin progress.
            return Err(ApplyError::Setup {
                db: self.cfg.db.clone(),
                worker: self.cfg.index,
                message: format!(
                    "a change of the transaction committed at {} arrived outside a batch",
                    self.current
                ),
            });
        }
        let (kind, rel) = match &change {
            Change::Insert { rel, .. } => (Kind::Insert, rel.clone()),
            Change::Update { rel, .. } => (Kind::Update, rel.clone()),
            Change::Delete { rel, .. } => (Kind::Delete, rel.clone()),
        };
        if kind != Kind::Insert {
            self.flush_run()?;
        }
        match &change {
            Change::Insert { new, .. } => {
                check_width(&rel, new, &self.cfg.db)?;
                let limit = INSERT_RUN.min(65535 / rel.columns.len().max(1)).max(1);
                let same =
                    matches!(&self.run, Some((r, _)) if r.id == rel.id && r.version == rel.version);
                if !same {
                    self.flush_run()?;
                }
                let (_, rows) = self
                    .run
                    .get_or_insert_with(|| (rel.clone(), Vec::with_capacity(limit)));
                rows.push(new.clone());
                let full = rows.len() >= limit;
                if full {
                    self.flush_run()?;
                }
                self.batch_counts[0] += 1;
                self.batch_changes += 1;
                if self.conn.queued() >= PIPELINE_FLUSH_STATEMENTS
                    || self.conn.queued_bytes() >= PIPELINE_FLUSH_BYTES
                {
                    self.sync().await?;
                }
                return Ok(());
            }
            Change::Update { old, new, .. } => {
                check_width(&rel, new, &self.cfg.db)?;
                let always = self.identity_columns(&rel).await?;
                // A key change (old key sent) must set the identity column
                // too; otherwise leave GENERATED ALWAYS columns alone.
                let skip: &[bool] = if old.is_some() && !rel.full_identity() {
                    &[]
                } else {
                    &always
                };
                let set = ColumnMask::from_flags(
                    new.iter_ref()
                        .map(|v| !matches!(v, ColumnRef::UnchangedToast)),
                );
                let identity_tuple: &TupleData = old.as_ref().map(OldTuple::tuple).unwrap_or(new);
                let matching = match_mask(&rel, identity_tuple);
                let key = StmtKey {
                    rel: rel.id.0,
                    version: rel.version,
                    kind,
                    set: Some(set),
                    matching: Some(matching),
                    rows: 1,
                };
                let (Some(set), Some(matching)) = (&key.set, &key.matching) else {
                    unreachable!("both masks were just set")
                };
                let name =
                    self.statement_name(&key, || statements::update(&rel, set, matching, skip))?;
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
                self.batch_counts[1] += 1;
            }
            Change::Delete { old, .. } => {
                let tuple = old.tuple();
                let matching = match_mask(&rel, tuple);
                let key = StmtKey {
                    rel: rel.id.0,
                    version: rel.version,
                    kind,
                    set: None,
                    matching: Some(matching),
                    rows: 1,
                };
                let Some(matching) = &key.matching else {
                    unreachable!("the mask was just set")
                };
                let name = self.statement_name(&key, || statements::delete(&rel, matching))?;
                let mut params: Vec<Param<'_>> = Vec::with_capacity(rel.columns.len());
                push_identity(&mut params, tuple, matching);
                self.conn
                    .queue_execute(&name, &params)
                    .map_err(|e| self.err(format!("delete from {}", rel.display()), e))?;
                self.batch_counts[2] += 1;
            }
        }
        self.queued_kinds.push(Some((kind, rel)));
        self.batch_changes += 1;
        if self.conn.queued() >= PIPELINE_FLUSH_STATEMENTS
            || self.conn.queued_bytes() >= PIPELINE_FLUSH_BYTES
        {
            self.sync().await?;
        }
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
