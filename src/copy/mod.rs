//! The snapshot copy of one database: schema via pg_dump/pg_restore from
//! the slot's exported snapshot, rows via parallel COPY pass-through, then
//! post-data, sequences and large objects. Never decodes row bytes.

pub mod analyze;
pub mod catalog;
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
pub mod roles;
pub mod schema;
pub mod sequences;
pub mod server_identity;
pub mod slot;
pub mod sql_script;
pub mod table_copy;
pub mod table_filter;
pub mod target_db;
pub mod toc;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub use error::CopyError;

use crate::conn::{quote_literal, ConnectParams, Connection};
use crate::control::progress::DbProgress;
use crate::control::status::Phase;
use pg_tools::PgTools;
use schema::SchemaArchive;
use table_copy::{plan_units, CopyRun};

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
    /// Called once every table's rows and own indexes are in: from then on
    /// a failure resumes at the post-data entries not yet done.
    pub on_data_copied: &'a (dyn Fn() + Sync),
    /// `[tables]`: which tables get schema and rows.
    pub filter: &'a crate::config::TableFilter,
}

/// Name of the post-data log in the work directory.
const DONE_LOG: &str = "post-data.done";

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
    /// must stay idle until this returns).
    pub async fn run(&self, snapshot: &str) -> Result<CopySummary, CopyError> {
        let db = self.db;
        let jobs = self.options.jobs.max(1);
        self.progress.set_phase(Phase::CopyingSchema);
        let (mut sessions, mut archive) = self.open_snapshot(snapshot, jobs).await?;
        let Some(first) = sessions.first_mut() else {
            return Err(CopyError::Unexpected {
                db: db.into(),
                message: "no copy session".into(),
            });
        };

        let (tables, sequences) = table_filter::apply(first, db, self.filter, &mut archive).await?;
        let owners = owners::read(first, db).await?;
        let block_size = block_size(first, db).await?;
        // TID range scans arrived in 14; before that a ctid range reads the
        // whole table, so splitting would multiply the work.
        let can_split = first.server_major() >= 14;

        let mut target = Connection::connect(self.target)
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
        let table_count = tables.len();
        tracing::info!(
            db,
            tables = table_count,
            units = units.len(),
            jobs,
            "copying data"
        );
        self.progress.set_phase(Phase::CopyingData);
        let (run, done_rx) = CopyRun::new(db, tables, units, self.progress.clone());
        // A new copy: nothing of an earlier attempt's post-data counts.
        let log_path = self.work_dir.join(DONE_LOG);
        let _ = std::fs::remove_file(&log_path);
        let options = entry_runner::SessionOptions {
            log: Some(Arc::new(done_log::DoneLog::open(&log_path, db)?)),
            resuming: false,
        };
        self.copy_rows(&run, done_rx, &mut sessions, plan.clone(), &options)
            .await?;
        (self.on_data_copied)();
        post_data::build_remaining(plan, self.target, self.options.index_jobs, options, db).await?;

        let Some(first) = sessions.first_mut() else {
            return Err(CopyError::Unexpected {
                db: db.into(),
                message: "copy sessions lost".into(),
            });
        };
        let summary = self
            .finish(first, &mut target, &sequences, table_count)
            .await?;
        for mut s in sessions {
            let _ = s.execute("COMMIT").await;
            let _ = s.close().await;
        }
        let _ = target.close().await;
        Ok(summary)
    }

    /// Opens `jobs` source sessions on the snapshot and dumps the schema
    /// from it at the same time (the dump is the slow part).
    async fn open_snapshot(
        &self,
        snapshot: &str,
        jobs: usize,
    ) -> Result<(Vec<Connection>, SchemaArchive), CopyError> {
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
        let dump = SchemaArchive::dump(
            self.tools,
            self.source,
            snapshot,
            self.work_dir,
            db,
            !self.keep_owners,
        );
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
        for source in sessions.drain(..) {
            let target = self.open_copy_session(self.target, "target").await?;
            workers.spawn(run.clone().worker(source, target));
        }
        let mut per_table = {
            let target = self.target.clone();
            let db = db.to_string();
            let index_jobs = self.options.index_jobs;
            let options = options.clone();
            // A JoinSet, not a bare spawn: if this copy is dropped (a
            // stop), the index builder is aborted with it, not left running.
            let mut task = tokio::task::JoinSet::new();
            task.spawn(async move {
                post_data::build_per_table(plan, &target, index_jobs, done_rx, options, &db).await
            });
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
        })
    }
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
