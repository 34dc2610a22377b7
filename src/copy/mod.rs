//! The snapshot copy of one database: schema via pg_dump/pg_restore from
//! the slot's exported snapshot, rows via parallel COPY pass-through, then
//! post-data, sequences and large objects. Never decodes row bytes.

pub mod analyze;
mod append_file;
pub mod catalog;
pub mod copy_log;
pub mod copy_origins;
mod done_log;
mod entry_runner;
pub mod entry_script;
mod error;
pub mod large_objects;
pub mod owners;
pub mod passfile;
pub mod pg_tools;
mod post_data;
pub mod post_plan;
mod resume;
mod resume_data;
pub mod roles;
pub mod schema;
pub mod sequences;
pub mod server_identity;
pub mod slot;
pub mod table_copy;
pub mod table_filter;
pub mod target_db;
pub mod toc;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::Instrument;

pub use error::CopyError;

use crate::conn::{quote_literal, ConnectParams, Connection};
use crate::control::progress::DbProgress;
use crate::control::state::LateCopy;
use crate::control::status::Phase;
use crate::protocol::lsn::Lsn;
use copy_log::{CopyLog, PlannedUnit, UnitKey};
use copy_origins::Journaling;
use pg_tools::PgTools;
use schema::SchemaArchive;
use table_copy::{plan_units, CopyRun, CopyUnit};

/// Parallelism and splitting of the copy.
#[derive(Debug, Clone, Copy)]
pub struct CopyOptions {
    /// Parallel COPY streams.
    pub jobs: usize,
    /// Parallel index and constraint builds.
    pub index_jobs: usize,
    /// Tables larger than this are split into ctid ranges; 0 = never.
    pub split_bytes: u64,
}

/// What a finished copy moved.
#[derive(Debug, Clone, Default)]
pub struct CopySummary {
    /// Tables copied.
    pub tables: usize,
    /// Rows copied.
    pub rows: u64,
    /// CopyData bytes moved.
    pub bytes: u64,
    /// Sequences set.
    pub sequences: usize,
    /// Large objects copied.
    pub large_objects: u64,
    /// Tables of a resumed copy read under a later snapshot than the
    /// slot's consistent point.
    pub late: Vec<LateCopy>,
}

/// One database's copy, from an exported snapshot to a complete target.
pub struct DatabaseCopy<'a> {
    /// Database name (same on both sides).
    pub db: &'a str,
    /// Source session parameters for this database.
    pub source: &'a ConnectParams,
    /// Target session parameters for this database.
    pub target: &'a ConnectParams,
    /// pg_dump/pg_restore to use.
    pub tools: &'a PgTools,
    /// Where the schema archive goes.
    pub work_dir: &'a Path,
    /// Parallelism.
    pub options: CopyOptions,
    /// Live counters.
    pub progress: Arc<DbProgress>,
    /// Restore owners and grants (the roles exist on the target).
    pub keep_owners: bool,
    /// The migration's own publication, left out of the restored schema.
    pub exclude_publication: Option<&'a str>,
    /// The copy workers' replication origins on the target, recorded in
    /// state.json; empty when the target has no room for them (the copy
    /// then starts over after a crash).
    pub copy_origins: &'a [String],
    /// The slot's consistent point, where the stream begins: a table read
    /// under a later snapshot is reported late.
    pub consistent_lsn: Lsn,
    /// Called once the schema is in and the copy's journal written: from
    /// then on an interrupted copy resumes its data phase.
    pub on_schema_restored: &'a (dyn Fn() + Sync),
    /// Called once every table's rows and own indexes are in, with the
    /// tables read under a later snapshot: from then on a failure resumes
    /// at the post-data entries not yet done.
    pub on_data_copied: &'a (dyn Fn(Vec<LateCopy>) + Sync),
    /// `[tables]`: which tables get schema and rows.
    pub filter: &'a crate::config::TableFilter,
}

/// Name of the post-data log in the work directory.
const DONE_LOG: &str = "post-data.done";
/// Name of the data phase's journal in the work directory.
const COPY_LOG: &str = "copy.log";

/// Everything the rows phase needs, however it started.
struct DataPhase {
    sessions: Vec<Connection>,
    target: Connection,
    tables: Vec<catalog::Table>,
    units: Vec<CopyUnit>,
    plan: Arc<post_plan::PostDataPlan>,
    sequences: Vec<catalog::Sequence>,
    journal: Option<Arc<Journaling>>,
    /// An earlier run's post-data entries may be in flight or done.
    resuming: bool,
    /// The snapshot LSN of each table kept from an earlier run.
    kept: HashMap<u32, Lsn>,
    /// This run's snapshot LSN.
    snapshot_lsn: Lsn,
}

impl DatabaseCopy<'_> {
    async fn open_copy_session(
        &self,
        params: &ConnectParams,
        side: &str,
    ) -> Result<Connection, CopyError> {
        let mut conn = Connection::connect(params).await.map_err(|e| match side {
            "source" => CopyError::source(self.db, "opening a copy session", e),
            _ => CopyError::target(self.db, "opening a copy session", e),
        })?;
        // Same encoding on both ends (the target database was created with
        // the source's): text COPY then needs no conversion at all.
        if let Some(enc) = conn.parameter("server_encoding").map(str::to_string) {
            conn.execute(&format!("SET client_encoding = {}", quote_literal(&enc)))
                .await
                .map_err(|e| CopyError::source(self.db, "setting client_encoding", e))?;
        }
        Ok(conn)
    }

    /// Copies everything visible in `snapshot` (exported by a session that
    /// must stay idle until this returns) whose consistent point is
    /// `snapshot_lsn`.
    pub async fn run(&self, snapshot: &str, snapshot_lsn: Lsn) -> Result<CopySummary, CopyError> {
        let db = self.db;
        let jobs = self.options.jobs.max(1);
        self.progress.set_phase(Phase::CopyingSchema);
        let (mut sessions, archive) = self.open_snapshot(snapshot, jobs, true).await?;
        let mut archive = archive.ok_or_else(|| CopyError::Unexpected {
            db: db.into(),
            message: "no schema dump".into(),
        })?;
        let first = first_session(&mut sessions, db)?;
        let (tables, sequences, owners) = self.catalog_facts(first, &mut archive).await?;
        let (block_size, can_split) = split_facts(first, db).await?;

        let target = Connection::connect(self.target)
            .await
            .map_err(|e| CopyError::target(db, "connecting to the new database", e))?;
        archive.restore_pre_data(self.target, db).await?;

        let copied: HashSet<u32> = tables.iter().map(|t| t.oid).collect();
        let plan = Arc::new(
            archive
                .post_data_plan(self.target, &owners, &copied, self.exclude_publication, db)
                .await?,
        );
        let units = plan_units(&tables, self.options.split_bytes, block_size, can_split);
        // A new copy: nothing of an earlier attempt's post-data counts.
        let _ = std::fs::remove_file(self.work_dir.join(DONE_LOG));
        let journal = self.start_journal(&tables, &units, snapshot_lsn, 0)?;
        if journal.is_some() {
            (self.on_schema_restored)();
        }
        self.copy_data(DataPhase {
            sessions,
            target,
            tables,
            units,
            plan,
            sequences,
            journal,
            resuming: false,
            kept: HashMap::new(),
            snapshot_lsn,
        })
        .await
    }

    /// Writes a new journal with the plan of `units` (when the copy can
    /// resume at all) and returns how the workers commit.
    fn start_journal(
        &self,
        tables: &[catalog::Table],
        units: &[CopyUnit],
        lsn: Lsn,
        last_seq: u64,
    ) -> Result<Option<Arc<Journaling>>, CopyError> {
        if self.copy_origins.is_empty() {
            return Ok(None);
        }
        let planned: Vec<PlannedUnit> = units
            .iter()
            .filter_map(|u| {
                let t = tables.get(u.table)?;
                Some(PlannedUnit {
                    key: UnitKey {
                        oid: t.oid,
                        start: u.pages.map(|p| p.0),
                    },
                    end: u.pages.and_then(|p| p.1),
                })
            })
            .collect();
        let path = self.work_dir.join(COPY_LOG);
        let log = if last_seq == 0 {
            CopyLog::create(&path, &planned, self.db)?
        } else {
            CopyLog::open(&path, self.db)?
        };
        Ok(Some(Arc::new(Journaling {
            log: Arc::new(log),
            origins: self.copy_origins.to_vec(),
            lsn,
            seq: std::sync::atomic::AtomicU64::new(last_seq),
        })))
    }

    /// The rows, each table's own indexes, the rest of post-data, then
    /// sequences and large objects.
    async fn copy_data(&self, phase: DataPhase) -> Result<CopySummary, CopyError> {
        let db = self.db;
        let DataPhase {
            mut sessions,
            mut target,
            tables,
            units,
            plan,
            sequences,
            journal,
            resuming,
            kept,
            snapshot_lsn,
        } = phase;
        let late = self.late_copies(&tables, &kept, snapshot_lsn);
        let table_count = tables.len();
        tracing::info!(
            db,
            tables = table_count,
            units = units.len(),
            kept = kept.len(),
            jobs = sessions.len(),
            resumable = journal.is_some(),
            "copying data"
        );
        self.progress.set_phase(Phase::CopyingData);
        let (run, done_rx) = CopyRun::new(db, tables, units, self.progress.clone(), journal);
        let log_path = self.work_dir.join(DONE_LOG);
        let options = entry_runner::SessionOptions {
            log: Some(Arc::new(done_log::DoneLog::open(&log_path, db)?)),
            resuming,
        };
        self.copy_rows(&run, done_rx, &mut sessions, plan.clone(), &options)
            .await?;
        (self.on_data_copied)(late.clone());
        post_data::build_remaining(plan, self.target, self.options.index_jobs, options, db).await?;

        let first = first_session(&mut sessions, db)?;
        let mut summary = self
            .finish(first, &mut target, &sequences, table_count)
            .await?;
        summary.late = late;
        for mut s in sessions {
            let _ = s.execute("COMMIT").await;
            let _ = s.close().await;
        }
        let _ = target.close().await;
        Ok(summary)
    }

    /// The tables read under a snapshot later than the slot's consistent
    /// point, by snapshot, named as the stream names them (a partition
    /// also by its root).
    fn late_copies(
        &self,
        tables: &[catalog::Table],
        kept: &HashMap<u32, Lsn>,
        snapshot_lsn: Lsn,
    ) -> Vec<LateCopy> {
        let mut by_lsn: BTreeMap<Lsn, Vec<u32>> = BTreeMap::new();
        for t in tables {
            let lsn = kept.get(&t.oid).copied().unwrap_or(snapshot_lsn);
            if lsn > self.consistent_lsn {
                let rels = by_lsn.entry(lsn).or_default();
                rels.push(t.oid);
                rels.extend(t.root);
            }
        }
        by_lsn
            .into_iter()
            .map(|(lsn, mut relations)| {
                relations.sort_unstable();
                relations.dedup();
                LateCopy { lsn, relations }
            })
            .collect()
    }

    /// Opens `jobs` source sessions on the snapshot and dumps the schema
    /// from it at the same time (the dump is the slow part).
    async fn open_snapshot(
        &self,
        snapshot: &str,
        jobs: usize,
        with_dump: bool,
    ) -> Result<(Vec<Connection>, Option<SchemaArchive>), CopyError> {
        let db = self.db;
        let import = async {
            let mut sessions = Vec::with_capacity(jobs);
            for _ in 0..jobs {
                let mut c = self.open_copy_session(self.source, "source").await?;
                slot::import(&mut c, db, snapshot).await?;
                sessions.push(c);
            }
            Ok::<_, CopyError>(sessions)
        };
        let dump = async {
            if !with_dump {
                return Ok(None);
            }
            SchemaArchive::dump(
                self.tools,
                self.source,
                snapshot,
                self.work_dir,
                db,
                !self.keep_owners,
            )
            .await
            .map(Some)
        };
        let (sessions, archive) = tokio::join!(import, dump);
        Ok((sessions?, archive?))
    }

    /// Copies every unit's rows with one worker per source session, while
    /// each table's own indexes are built as soon as its rows are in. The
    /// source sessions come back into `sessions` (still in the snapshot).
    async fn copy_rows(
        &self,
        run: &Arc<CopyRun>,
        done_rx: tokio::sync::mpsc::UnboundedReceiver<u32>,
        sessions: &mut Vec<Connection>,
        plan: Arc<post_plan::PostDataPlan>,
        options: &entry_runner::SessionOptions,
    ) -> Result<(), CopyError> {
        let db = self.db;
        let mut workers = tokio::task::JoinSet::new();
        for (index, source) in sessions.drain(..).enumerate() {
            let target = self.open_copy_session(self.target, "target").await?;
            workers.spawn(
                run.clone()
                    .worker(index, source, target)
                    .instrument(tracing::Span::current()),
            );
        }
        let mut per_table = {
            let target = self.target.clone();
            let db = db.to_string();
            let index_jobs = self.options.index_jobs;
            let options = options.clone();
            // A JoinSet, not a bare spawn: if this copy is dropped (a
            // stop), the index builder is aborted with it, not left running.
            let mut task = tokio::task::JoinSet::new();
            task.spawn(
                async move {
                    post_data::build_per_table(plan, &target, index_jobs, done_rx, options, &db)
                        .await
                }
                .instrument(tracing::Span::current()),
            );
            task
        };
        let mut first_err = None;
        while let Some(r) = workers.join_next().await {
            match r {
                Ok(Ok(session)) => sessions.push(session),
                Ok(Err(e)) => {
                    run.stop();
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    run.stop();
                    first_err.get_or_insert(CopyError::Unexpected {
                        db: db.into(),
                        message: format!("copy task failed: {e}"),
                    });
                }
            }
        }
        run.close();
        self.progress.set_phase(Phase::BuildingIndexes);
        let indexes = match per_table.join_next().await {
            Some(joined) => joined.map_err(|e| CopyError::Unexpected {
                db: db.into(),
                message: format!("index task failed: {e}"),
            })?,
            None => Err(CopyError::Unexpected {
                db: db.into(),
                message: "index task lost".into(),
            }),
        };
        if let Some(e) = first_err {
            return Err(e);
        }
        indexes
    }

    /// Sequences and large objects, the last steps of a copy (resumed or not).
    async fn finish(
        &self,
        source: &mut Connection,
        target: &mut Connection,
        sequences: &[catalog::Sequence],
        tables: usize,
    ) -> Result<CopySummary, CopyError> {
        let seq = sequences::sync(source, target, sequences, self.db).await?;
        let (los, _) = large_objects::copy_all(source, target, self.db, self.keep_owners).await?;
        Ok(CopySummary {
            tables,
            rows: self.progress.rows_copied.load(Ordering::Relaxed),
            bytes: self.progress.bytes_copied.load(Ordering::Relaxed),
            sequences: seq,
            large_objects: los,
            late: Vec::new(),
        })
    }
}

impl DatabaseCopy<'_> {
    /// What the snapshot holds, read once per copy or resume: the tables
    /// whose rows are copied and the sequences on the target (the filter
    /// telling the archive what to leave out, the DDL capture included),
    /// and which table owns each index and constraint.
    async fn catalog_facts(
        &self,
        session: &mut Connection,
        archive: &mut SchemaArchive,
    ) -> Result<(Vec<catalog::Table>, Vec<catalog::Sequence>, owners::Owners), CopyError> {
        let (tables, sequences) = table_filter::apply(
            session,
            self.db,
            self.filter,
            self.exclude_publication,
            archive,
        )
        .await?;
        let owners = owners::read(session, self.db).await?;
        Ok((tables, sequences, owners))
    }
}

fn first_session<'a>(
    sessions: &'a mut [Connection],
    db: &str,
) -> Result<&'a mut Connection, CopyError> {
    sessions.first_mut().ok_or_else(|| CopyError::Unexpected {
        db: db.into(),
        message: "no copy session".into(),
    })
}

/// The source's block size and whether ctid ranges are worth it: TID
/// range scans arrived in 14; before that a ctid range reads the whole
/// table, so splitting would multiply the work.
async fn split_facts(conn: &mut Connection, db: &str) -> Result<(u64, bool), CopyError> {
    let can_split = conn.server_major() >= 14;
    Ok((block_size(conn, db).await?, can_split))
}

/// The source's block size, which turns a table's byte size into ctid
/// ranges; 8192 (the default build) if the server does not say.
async fn block_size(conn: &mut Connection, db: &str) -> Result<u64, CopyError> {
    Ok(conn
        .simple_query("SELECT current_setting('block_size')")
        .await
        .map_err(|e| CopyError::source(db, "reading block_size", e))?
        .first()
        .and_then(|r| r.parse(0).ok())
        .unwrap_or(8192))
}
