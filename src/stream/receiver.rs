//! The replication loop: START_REPLICATION on the slot, each transaction
//! collected until its Commit (in memory, or spilled past the budget), then
//! routed to the apply workers by table. Standby status updates go out on
//! an interval, when the server asks, and while a full queue holds the
//! loop back, so wal_sender_timeout is never reached.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{SendTimeoutError, Sender};

use crate::apply::{ApplyMsg, Change, RelationInfo, WorkerProgress};
use crate::config::{DdlMode, TableChoice};
use crate::conn::{ConnectParams, Connection, CopyBoth};
use crate::control::progress::DbProgress;
use crate::protocol::lsn::{Lsn, RelationId};
use crate::protocol::pgoutput::{self, Begin, DecodeContext, PgOutputMessage};
use crate::protocol::replication::{ReplicationMessage, StandbyStatusUpdate, XLogData};
use crate::protocol::timestamp::PgTimestamp;
use crate::spill::{SpillError, SpillReader, SpillWriter};

use super::StreamError;

mod ddl_route;
mod hold_wait;

/// Status update interval when nothing else prompts one.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// How long a blocked send waits before sending a status update.
const SEND_WAIT: Duration = Duration::from_millis(200);
/// How often idle workers are told how far the stream has gone.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// What the receiver thread needs.
pub struct ReceiverConfig {
    /// Database.
    pub db: String,
    /// Source session parameters for the database (replication is set here).
    pub source: ConnectParams,
    /// Slot to stream from.
    pub slot: String,
    /// Publications to decode through (our own names: no quoting needed
    /// beyond the double quotes of the list).
    pub publications: Vec<String>,
    /// Where to start.
    pub start_lsn: Lsn,
    /// pgoutput protocol version to request.
    pub protocol_version: u32,
    /// Request binary values.
    pub binary: bool,
    /// Bytes of one transaction kept in memory before it spills.
    pub memory_budget: usize,
    /// Directory for spill files.
    pub spill_dir: PathBuf,
    /// Tables a resumed copy read late.
    pub late: super::late_tables::LateTables,
    /// `[tables]`: relations decided on by their Relation message's name.
    pub filter: crate::config::TableFilter,
    /// What captured DDL does.
    pub ddl: DdlMode,
}

/// State shared between the receiver thread and the coordinator.
#[derive(Debug)]
pub struct Shared {
    /// Ends this stream only, not the daemon: set by `Stream::stop` (a
    /// restart after an error, the cutover applied) and on drop.
    pub stop: AtomicBool,
    /// The daemon's stop (signal, cancel, a failed sibling database), the
    /// `Shutdown::flag` view: read per message, so one atomic load.
    pub shutdown: Arc<AtomicBool>,
    /// Set once this stream's cutover began: it then runs until the cutover
    /// stops it, whatever `shutdown` says (a cutover is finished, as
    /// before the threads listened to `shutdown`).
    pub cutting_over: AtomicBool,
    /// Set by the coordinator to ask the server for a keepalive now.
    pub want_reply: AtomicBool,
    /// Highest WAL position received.
    pub received: AtomicU64,
    /// Dispatched transactions not yet applied everywhere: (end LSN, commit time).
    pub unapplied: Mutex<VecDeque<(Lsn, PgTimestamp)>>,
}

/// A transaction being received.
struct Txn {
    begin: Begin,
    messages: Vec<PgOutputMessage>,
    raw: Vec<Bytes>,
    bytes: usize,
    spill: Option<SpillWriter>,
    /// A TRUNCATE or a DDL command: the transaction runs alone.
    serial: bool,
    /// Row changes (and truncates) it carries.
    rows: u64,
    /// Tables a CREATE TABLE AS of it made and filled.
    filled: Vec<(String, String)>,
}

struct Receiver<'a> {
    cfg: &'a ReceiverConfig,
    stream: CopyBoth<'a>,
    workers: Vec<Sender<ApplyMsg>>,
    progress: Vec<Arc<WorkerProgress>>,
    counters: Arc<DbProgress>,
    shared: Arc<Shared>,
    relations: HashMap<u32, Arc<RelationInfo>>,
    /// Relations whose changes are dropped (excluded or schema only).
    filtered: std::collections::HashSet<u32>,
    version: u64,
    last_status: Instant,
    last_progress: Instant,
    last_flush_sent: Lsn,
    spill_seq: u64,
    /// Row changes of the transaction being dispatched.
    txn_rows: u64,
    /// Its commit LSN.
    txn_commit: Lsn,
    /// Tables it created and filled with CREATE TABLE AS…
    txn_filled: Vec<(String, String)>,
    /// …and their relation IDs, once their Relation messages came.
    txn_filled_rels: std::collections::HashSet<u32>,
    /// Verify's hold point for this database.
    hold: Arc<super::hold::HoldPoint>,
}

/// Runs the stream on the calling thread until `shared.stop` or an error.
pub fn run_thread(
    cfg: ReceiverConfig,
    workers: Vec<Sender<ApplyMsg>>,
    progress: Vec<Arc<WorkerProgress>>,
    counters: Arc<DbProgress>,
    shared: Arc<Shared>,
) -> Result<(), StreamError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StreamError::Start {
            db: cfg.db.clone(),
            thread: "receiver's runtime".into(),
            source: e,
        })?;
    rt.block_on(async move {
        let mut params = cfg.source.clone();
        params.replication = true;
        let mut conn = Connection::connect(&params).await.map_err(|e| StreamError::source(&cfg.db, "opening the replication session", e))?;
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '{}', publication_names '{}'{}{})",
            cfg.slot,
            cfg.start_lsn,
            cfg.protocol_version,
            cfg.publications.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(","),
            if cfg.binary { ", binary 'true'" } else { "" },
            if cfg.ddl.captures() { ", messages 'true'" } else { "" }
        );
        tracing::info!(slot = %cfg.slot, lsn = %cfg.start_lsn, proto = cfg.protocol_version, binary = cfg.binary, "streaming changes");
        let stream = conn
            .copy_both(&sql)
            .await
            .map_err(|e| StreamError::source(&cfg.db, &format!("starting replication from {}", cfg.start_lsn), e))?;
        shared.received.fetch_max(cfg.start_lsn.0, Ordering::AcqRel);
        let mut r = Receiver {
            cfg: &cfg,
            stream,
            workers,
            progress,
            counters,
            shared,
            relations: HashMap::new(),
            filtered: Default::default(),
            version: 0,
            last_status: Instant::now(),
            last_progress: Instant::now(),
            last_flush_sent: Lsn(0),
            spill_seq: 0,
            txn_rows: 0,
            txn_commit: Lsn(0),
            txn_filled: Vec::new(),
            txn_filled_rels: Default::default(),
            hold: super::hold::for_db(&cfg.db),
        };
        let result = r.run().await;
        // Tell the server how far we got before going.
        let _ = r.flush_workers().await;
        let _ = r.send_status(false).await;
        let _ = r.stream.finish().await;
        result
    })
}

impl Receiver<'_> {
    fn db(&self) -> &str {
        &self.cfg.db
    }

    fn check_workers(&self) -> Result<(), StreamError> {
        match self.progress.iter().position(|p| p.failed()) {
            Some(worker) => Err(self.worker_stopped(worker)),
            None => Ok(()),
        }
    }

    fn worker_stopped(&self, worker: usize) -> StreamError {
        StreamError::WorkerStopped {
            db: self.db().to_string(),
            worker,
        }
    }

    fn spill_error(&self, xid: u32, source: SpillError) -> StreamError {
        StreamError::Spill {
            db: self.db().to_string(),
            xid,
            source,
        }
    }

    /// The LSN every worker has durably covered: what the source may forget.
    fn flush_lsn(&self) -> Lsn {
        self.progress
            .iter()
            .map(|p| p.durable())
            .min()
            .unwrap_or(self.cfg.start_lsn)
            .max(self.cfg.start_lsn)
    }

    async fn send_status(&mut self, reply: bool) -> Result<(), StreamError> {
        let flush = self.flush_lsn();
        let write = Lsn(self.shared.received.load(Ordering::Acquire)).max(flush);
        let mut buf = BytesMut::with_capacity(40);
        StandbyStatusUpdate {
            write,
            flush,
            apply: flush,
            client_time: PgTimestamp::now(),
            reply_requested: reply,
        }
        .encode(&mut buf);
        self.stream
            .send(&buf)
            .await
            .map_err(|e| StreamError::source(&self.cfg.db, "sending a standby status update", e))?;
        self.last_status = Instant::now();
        self.last_flush_sent = flush;
        self.counters.set_confirmed_lsn(Some(flush));
        Ok(())
    }

    async fn run(&mut self) -> Result<(), StreamError> {
        let mut txn: Option<Txn> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            if self.shared.stopping() {
                return Ok(());
            }
            tokio::select! {
                msg = self.stream.recv() => {
                    let Some(data) = msg.map_err(|e| StreamError::source(&self.cfg.db, "reading the replication stream", e))? else {
                        return Err(StreamError::SourceEnded { db: self.db().to_string() });
                    };
                    self.handle(data, &mut txn).await?;
                }
                _ = tick.tick() => {
                    self.check_workers()?;
                    self.hold_poke();
                    let want = self.shared.want_reply.swap(false, Ordering::AcqRel);
                    if want || self.last_status.elapsed() >= STATUS_INTERVAL || self.flush_lsn() > self.last_flush_sent {
                        self.send_status(want).await?;
                    }
                }
            }
        }
    }

    async fn handle(&mut self, data: Bytes, txn: &mut Option<Txn>) -> Result<(), StreamError> {
        let msg = ReplicationMessage::parse(data)
            .map_err(|e| StreamError::protocol(self.db(), e.to_string()))?;
        match msg {
            ReplicationMessage::PrimaryKeepalive(k) => {
                self.shared
                    .received
                    .fetch_max(k.wal_end.0, Ordering::AcqRel);
                if txn.is_none() {
                    self.broadcast_progress(k.wal_end, true);
                    self.hold_idle().await?;
                }
                if k.reply_requested {
                    self.send_status(false).await?;
                }
            }
            ReplicationMessage::XLogData(x) => self.handle_xlog(x, txn).await?,
        }
        Ok(())
    }

    /// One pgoutput message: Begin opens `txn`, Commit dispatches it, a
    /// change joins it.
    async fn handle_xlog(&mut self, x: XLogData, txn: &mut Option<Txn>) -> Result<(), StreamError> {
        self.shared
            .received
            .fetch_max(x.wal_end.0, Ordering::AcqRel);
        let raw = x.data;
        let decoded = pgoutput::decode(raw.clone(), DecodeContext::new(self.cfg.protocol_version))
            .map_err(|e| StreamError::protocol(self.db(), format!("at {}: {e}", x.wal_start)))?;
        match decoded {
            PgOutputMessage::Begin(b) => {
                if txn.is_some() {
                    return Err(StreamError::protocol(
                        self.db(),
                        format!("Begin at {} inside a transaction", x.wal_start),
                    ));
                }
                // Latency counts from here, not from dispatch: a
                // transaction still arriving (a large one takes
                // seconds) is already a commit not yet applied.
                if let Ok(mut q) = self.shared.unapplied.lock() {
                    q.push_back((b.final_lsn, b.commit_time));
                }
                *txn = Some(Txn {
                    begin: b,
                    messages: Vec::new(),
                    raw: Vec::new(),
                    bytes: 0,
                    spill: None,
                    serial: false,
                    rows: 0,
                    filled: Vec::new(),
                });
            }
            PgOutputMessage::Commit(c) => {
                let Some(t) = txn.take() else {
                    return Err(StreamError::protocol(
                        self.db(),
                        format!("Commit at {} without Begin", c.commit_lsn),
                    ));
                };
                self.dispatch(t, c.commit_lsn, c.end_lsn, c.commit_time)
                    .await?;
            }
            PgOutputMessage::StreamStart(_)
            | PgOutputMessage::StreamStop
            | PgOutputMessage::StreamCommit(_)
            | PgOutputMessage::StreamAbort(_)
            | PgOutputMessage::BeginPrepare(_)
            | PgOutputMessage::Prepare(_)
            | PgOutputMessage::CommitPrepared(_)
            | PgOutputMessage::RollbackPrepared(_)
            | PgOutputMessage::StreamPrepare(_) => {
                return Err(StreamError::protocol(
                    self.db(),
                    format!(
                        "unexpected {} message: streaming and two-phase were not requested",
                        decoded.name()
                    ),
                ));
            }
            other => {
                let Some(t) = txn.as_mut() else {
                    return Err(StreamError::protocol(
                        self.db(),
                        format!("{} outside a transaction", other.name()),
                    ));
                };
                let row = u64::from(matches!(
                    other,
                    PgOutputMessage::Insert(_)
                        | PgOutputMessage::Update(_)
                        | PgOutputMessage::Delete(_)
                        | PgOutputMessage::Truncate(_)
                ));
                self.counters
                    .incoming_changes
                    .fetch_add(row, Ordering::Relaxed);
                t.rows += row;
                t.serial |= matches!(other, PgOutputMessage::Truncate(_));
                if let PgOutputMessage::Message(m) = &other {
                    let Some(cmd) = self.ddl_message(m, t.begin.final_lsn)? else {
                        return Ok(());
                    };
                    t.serial = true;
                    t.filled.extend(ddl_route::filled_tables(&cmd));
                }
                self.push(t, raw, other)?;
            }
        }
        Ok(())
    }

    fn push(&mut self, t: &mut Txn, raw: Bytes, msg: PgOutputMessage) -> Result<(), StreamError> {
        t.bytes += raw.len();
        let xid = t.begin.xid.0;
        if let Some(w) = t.spill.as_mut() {
            return w.push(&raw).map_err(|e| self.spill_error(xid, e));
        }
        t.messages.push(msg);
        t.raw.push(raw);
        if t.bytes > self.cfg.memory_budget {
            // Past the budget: everything of this transaction goes to disk.
            std::fs::create_dir_all(&self.cfg.spill_dir).map_err(|e| {
                let source = SpillError::Io {
                    path: self.cfg.spill_dir.display().to_string(),
                    source: e,
                };
                self.spill_error(xid, source)
            })?;
            self.spill_seq += 1;
            let path = self
                .cfg
                .spill_dir
                .join(format!("txn-{}-{}.spill", t.begin.xid.0, self.spill_seq));
            let mut w = SpillWriter::create(&path).map_err(|e| self.spill_error(xid, e))?;
            for r in t.raw.drain(..) {
                w.push(&r).map_err(|e| self.spill_error(xid, e))?;
            }
            t.messages.clear();
            tracing::info!(xid = t.begin.xid.0, path = %path.display(), "large transaction spilled to disk");
            t.spill = Some(w);
        }
        Ok(())
    }

    fn worker_of(&self, rel: RelationId) -> usize {
        // The source OID is stable across restarts, and the worker count is
        // fixed for a migration's life (origins are per worker), so a table
        // always lands on the same worker.
        (rel.0 as usize) % self.workers.len().max(1)
    }

    /// Sends to a worker, sending status updates while its queue is full.
    async fn send_to(&mut self, worker: usize, mut msg: ApplyMsg) -> Result<(), StreamError> {
        loop {
            let Some(tx) = self.workers.get(worker) else {
                return Err(self.worker_stopped(worker));
            };
            // try_send first: send_timeout reads the clock on every call.
            let sent = match tx.try_send(msg) {
                Ok(()) => Ok(()),
                Err(crossbeam_channel::TrySendError::Full(m)) => tx.send_timeout(m, SEND_WAIT),
                Err(crossbeam_channel::TrySendError::Disconnected(m)) => {
                    Err(SendTimeoutError::Disconnected(m))
                }
            };
            match sent {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(m)) => {
                    msg = m;
                    self.check_workers()?;
                    if self.shared.stopping() {
                        return Err(StreamError::Stopped);
                    }
                    self.send_status(false).await?;
                }
                Err(SendTimeoutError::Disconnected(_)) => {
                    self.check_workers()?;
                    return Err(self.worker_stopped(worker));
                }
            }
        }
    }

    fn broadcast_progress(&mut self, upto: Lsn, force: bool) {
        if !force && self.last_progress.elapsed() < PROGRESS_INTERVAL {
            return;
        }
        self.last_progress = Instant::now();
        for tx in &self.workers {
            // Advisory: a full queue will carry a Commit soon enough.
            let _ = tx.try_send(ApplyMsg::Progress { upto });
        }
    }

    /// Commits every worker's open batch and waits for all of them.
    async fn flush_workers(&mut self) -> Result<(), StreamError> {
        let mut acks = Vec::new();
        for w in 0..self.workers.len() {
            let (tx, rx) = crossbeam_channel::bounded(1);
            self.send_to(w, ApplyMsg::Flush(tx)).await?;
            acks.push(rx);
        }
        for (w, rx) in acks.into_iter().enumerate() {
            loop {
                match rx.recv_timeout(SEND_WAIT) {
                    Ok(()) => break,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        self.check_workers()?;
                        self.send_status(false).await?;
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        self.check_workers()?;
                        return Err(self.worker_stopped(w));
                    }
                }
            }
        }
        Ok(())
    }

    fn relation(&self, id: RelationId) -> Result<Arc<RelationInfo>, StreamError> {
        self.relations.get(&id.0).cloned().ok_or_else(|| {
            StreamError::protocol(
                &self.cfg.db,
                format!("change for relation {} before its Relation message", id.0),
            )
        })
    }

    async fn dispatch(
        &mut self,
        mut t: Txn,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: PgTimestamp,
    ) -> Result<(), StreamError> {
        self.hold_before(commit_lsn).await?;
        // A TRUNCATE may span tables of several workers, and a DDL command
        // changes what every later change means: run the whole
        // transaction on one worker, with every worker flushed before and
        // that one after, so each table still sees its changes in order
        // (the barrier: all before it committed, nothing after started).
        let serial = t.serial;
        self.txn_rows = t.rows;
        self.txn_commit = commit_lsn;
        self.txn_filled = std::mem::take(&mut t.filled);
        self.txn_filled_rels.clear();
        if serial {
            self.flush_workers().await?;
        }
        let mut begun = vec![false; self.workers.len()];
        let mut serial_worker: Option<usize> = None;
        let mut reader: Option<SpillReader> = match t.spill.take() {
            Some(w) => Some(
                w.into_reader()
                    .map_err(|e| self.spill_error(t.begin.xid.0, e))?,
            ),
            None => None,
        };
        let xid = t.begin.xid.0;
        let mut mem = std::mem::take(&mut t.messages).into_iter();
        while let Some(msg) = self.next_message(&mut reader, &mut mem, xid)? {
            let Some((rel_id, item)) = self.route(msg)? else {
                continue;
            };
            let Some((rel_id, item)) = self.without_late(rel_id, item, commit_lsn) else {
                continue;
            };
            let w = if serial {
                *serial_worker.get_or_insert_with(|| self.worker_of(rel_id))
            } else {
                self.worker_of(rel_id)
            };
            if !begun.get(w).copied().unwrap_or(true) {
                self.send_to(w, ApplyMsg::Begin { commit_lsn }).await?;
                if let Some(b) = begun.get_mut(w) {
                    *b = true;
                }
            }
            self.send_to(w, item).await?;
        }
        if let Some(r) = reader {
            r.remove();
        }
        for w in 0..self.workers.len() {
            if begun.get(w).copied().unwrap_or(false) {
                self.send_to(
                    w,
                    ApplyMsg::Commit {
                        commit_lsn,
                        end_lsn,
                        commit_time,
                    },
                )
                .await?;
            }
        }
        if serial {
            self.flush_workers().await?;
        }
        self.broadcast_progress(end_lsn, begun.iter().all(|b| !b));
        Ok(())
    }

    /// `item` less what a late table's copy already holds: None when
    /// nothing is left. A TRUNCATE keeps the tables it still applies to
    /// (emptying a table whose copy came after it would lose its rows).
    fn without_late(
        &self,
        rel_id: RelationId,
        item: ApplyMsg,
        commit_lsn: Lsn,
    ) -> Option<(RelationId, ApplyMsg)> {
        let late = &self.cfg.late;
        if !late.applies_to(commit_lsn) {
            return Some((rel_id, item));
        }
        match item {
            ApplyMsg::Truncate {
                mut rels,
                cascade,
                restart_identity,
            } => {
                rels.retain(|r| !late.skips(r.id.0, commit_lsn));
                let first = rels.first()?.id;
                Some((
                    first,
                    ApplyMsg::Truncate {
                        rels,
                        cascade,
                        restart_identity,
                    },
                ))
            }
            _ if late.skips(rel_id.0, commit_lsn) => None,
            item => Some((rel_id, item)),
        }
    }

    /// The next message of a committed transaction: from its spill file
    /// when it was spilled, else from memory; None at its end.
    fn next_message(
        &self,
        reader: &mut Option<SpillReader>,
        mem: &mut impl Iterator<Item = PgOutputMessage>,
        xid: u32,
    ) -> Result<Option<PgOutputMessage>, StreamError> {
        let Some(r) = reader.as_mut() else {
            return Ok(mem.next());
        };
        let Some(raw) = r.next_record().map_err(|e| self.spill_error(xid, e))? else {
            return Ok(None);
        };
        pgoutput::decode(raw, DecodeContext::new(self.cfg.protocol_version))
            .map(Some)
            .map_err(|e| {
                StreamError::protocol(&self.cfg.db, format!("spilled transaction {xid}: {e}"))
            })
    }

    /// What a message of a transaction becomes for its table's worker,
    /// with the table that decides the worker; None for a message that
    /// needs no apply (a Relation is remembered here, types, origins and
    /// logical messages need nothing).
    fn route(
        &mut self,
        msg: PgOutputMessage,
    ) -> Result<Option<(RelationId, ApplyMsg)>, StreamError> {
        let routed = match msg {
            PgOutputMessage::Relation(r) => {
                // Names are roots' (publish_via_partition_root), which is
                // what the filter's patterns name.
                if self.cfg.filter.choice(&r.namespace, &r.name) != TableChoice::Migrate {
                    self.filtered.insert(r.relation_id.0);
                    return Ok(None);
                }
                self.filtered.remove(&r.relation_id.0);
                let text_only = |c: &&pgoutput::RelationColumn| {
                    self.cfg.binary && !crate::pgtypes::streams_in_binary(c.type_oid.0)
                };
                if let Some(c) = r.columns.iter().find(text_only) {
                    return Err(StreamError::TextNeeded {
                        db: self.cfg.db.clone(),
                        table: format!("{}.{}", r.namespace, r.name),
                        type_oid: c.type_oid.0,
                    });
                }
                if self
                    .txn_filled
                    .iter()
                    .any(|(s, t)| *s == r.namespace && *t == r.name)
                {
                    self.txn_filled_rels.insert(r.relation_id.0);
                }
                self.version += 1;
                self.relations.insert(
                    r.relation_id.0,
                    RelationInfo::from_message(&r, self.version),
                );
                return Ok(None);
            }
            PgOutputMessage::Insert(i)
                if self.filtered.contains(&i.relation_id.0)
                    || (!self.txn_filled_rels.is_empty()
                        && self.txn_filled_rels.contains(&i.relation_id.0)) =>
            {
                return Ok(None)
            }
            PgOutputMessage::Update(u) if self.filtered.contains(&u.relation_id.0) => {
                return Ok(None)
            }
            PgOutputMessage::Delete(d) if self.filtered.contains(&d.relation_id.0) => {
                return Ok(None)
            }
            PgOutputMessage::Insert(i) => {
                let rel = self.relation(i.relation_id)?;
                let new = i.new_tuple;
                (i.relation_id, ApplyMsg::Change(Change::Insert { rel, new }))
            }
            PgOutputMessage::Update(u) => {
                let rel = self.relation(u.relation_id)?;
                let (old, new) = (u.old_tuple, u.new_tuple);
                (
                    u.relation_id,
                    ApplyMsg::Change(Change::Update { rel, old, new }),
                )
            }
            PgOutputMessage::Delete(d) => {
                let rel = self.relation(d.relation_id)?;
                let old = d.old_tuple;
                (d.relation_id, ApplyMsg::Change(Change::Delete { rel, old }))
            }
            PgOutputMessage::Truncate(mut tr) => {
                tr.relation_ids.retain(|id| !self.filtered.contains(&id.0));
                let rels = tr
                    .relation_ids
                    .iter()
                    .map(|id| self.relation(*id))
                    .collect::<Result<Vec<_>, _>>()?;
                let Some(first) = tr.relation_ids.first().copied() else {
                    return Ok(None);
                };
                let truncate = ApplyMsg::Truncate {
                    rels,
                    cascade: tr.flags.cascade,
                    restart_identity: tr.flags.restart_identity,
                };
                (first, truncate)
            }
            PgOutputMessage::Message(m) => return self.route_ddl(&m),
            _ => return Ok(None),
        };
        Ok(Some(routed))
    }
}
