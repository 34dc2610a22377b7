//! The schema, dumped once from the snapshot by pg_dump and restored in two
//! halves: pre-data (types, tables, functions) before the copy, in archive
//! order, and post-data (indexes, constraints, triggers, …) after it, as
//! planned by `post_plan` from the archive's dependencies.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::conn::{ConnectParams, Connection};

use super::entry_runner::{EntryLines, EntrySession};
use super::entry_script::{parse_entries, ScriptEntry};
use super::owners::Owners;
use super::pg_tools::PgTools;
use super::post_plan::{PlanInput, PostDataPlan};
use super::toc::{parse_toc, TocEntry};
use super::CopyError;

/// A schema archive of one database.
pub struct SchemaArchive {
    path: PathBuf,
    tools: PgTools,
    no_owner: bool,
    toc: Vec<TocEntry>,
    /// Dump IDs left out by `[tables]`.
    skip: HashSet<u32>,
}

impl SchemaArchive {
    /// Dumps the schema of `source.database` as of `snapshot` into `dir`.
    pub async fn dump(
        tools: &PgTools,
        source: &ConnectParams,
        snapshot: &str,
        dir: &Path,
        db: &str,
        no_owner: bool,
    ) -> Result<SchemaArchive, CopyError> {
        std::fs::create_dir_all(dir).map_err(|e| CopyError::io(db, dir, e))?;
        let path = dir.join("schema.dump");
        tools
            .dump_schema(source, snapshot, &path)
            .await
            .map_err(|e| CopyError::tool(db, e))?;
        let list = tools
            .list(&path)
            .await
            .map_err(|e| CopyError::tool(db, e))?;
        Ok(SchemaArchive {
            path,
            tools: tools.clone(),
            no_owner,
            toc: parse_toc(&list),
            skip: HashSet::new(),
        })
    }

    /// The archive an earlier run of this migration left in `dir`, if any.
    pub async fn open(
        tools: &PgTools,
        dir: &Path,
        db: &str,
        no_owner: bool,
    ) -> Result<Option<SchemaArchive>, CopyError> {
        let path = dir.join("schema.dump");
        if !path.is_file() {
            return Ok(None);
        }
        let list = tools
            .list(&path)
            .await
            .map_err(|e| CopyError::tool(db, e))?;
        Ok(Some(SchemaArchive {
            path,
            tools: tools.clone(),
            no_owner,
            toc: parse_toc(&list),
            skip: HashSet::new(),
        }))
    }

    /// Leaves the entries of these objects (excluded tables, their
    /// partitions and owned sequences) and everything depending on them
    /// out of both halves of the restore.
    pub fn exclude_objects(&mut self, oids: &HashSet<u32>) {
        self.skip = super::table_filter::skipped_entries(&self.toc, oids);
    }

    fn lines(&self) -> EntryLines {
        self.toc
            .iter()
            .map(|e| (e.dump_id, e.line.clone()))
            .collect()
    }

    /// One section's script, cut into entries, without settings the target
    /// does not know.
    async fn section(
        &self,
        section: &str,
        target: &mut EntrySession,
        db: &str,
    ) -> Result<Vec<ScriptEntry>, CopyError> {
        let sql = self
            .tools
            .sql(&self.path, section, self.no_owner)
            .await
            .map_err(|e| CopyError::tool(db, e))?;
        let known = known_settings(target.conn_mut(), db).await?;
        let mut entries = parse_entries(&sql, |s| match s.set_name() {
            Some(name) if !name.contains('.') && !known.contains(&name) => {
                tracing::debug!(setting = %name, "skipping a setting the target does not know");
                false
            }
            _ => true,
        });
        entries.retain(|e| !self.skip.contains(&e.dump_id));
        Ok(entries)
    }

    /// Restores types, tables, functions, … (everything but data and
    /// post-data) on the target, in archive order (pg_dump sorted it by
    /// dependencies). A failure names the entry.
    pub async fn restore_pre_data(
        &self,
        target: &ConnectParams,
        db: &str,
    ) -> Result<(), CopyError> {
        const WHAT: &str = "restoring the schema (pre-data)";
        let mut session = EntrySession::connect(target, db, WHAT).await?;
        let entries = self.section("pre-data", &mut session, db).await?;
        let refs: Vec<&ScriptEntry> = entries.iter().collect();
        session.run(&refs, &self.lines(), db, WHAT).await?;
        session.close().await;
        Ok(())
    }

    /// Plans the post-data entries: `owners` maps index/constraint OIDs to
    /// their table, `copied` holds the tables that get rows.
    pub async fn post_data_plan(
        &self,
        target: &ConnectParams,
        owners: &Owners,
        copied: &HashSet<u32>,
        exclude_publication: Option<&str>,
        db: &str,
    ) -> Result<PostDataPlan, CopyError> {
        let mut session = EntrySession::connect(target, db, "planning post-data").await?;
        let entries = self.section("post-data", &mut session, db).await?;
        session.close().await;
        Ok(PostDataPlan::build(PlanInput {
            toc: &self.toc,
            entries,
            owners,
            copied,
            exclude_publication,
        }))
    }
}

/// Settings the target knows, so a newer pg_restore's `SET` of a parameter
/// an older target lacks (`transaction_timeout` on 15/16) is dropped
/// instead of failing the restore.
async fn known_settings(target: &mut Connection, db: &str) -> Result<HashSet<String>, CopyError> {
    let rows = target
        .simple_query("SELECT name FROM pg_catalog.pg_settings")
        .await
        .map_err(|e| CopyError::target(db, "listing settings", e))?;
    Ok(rows
        .iter()
        .filter_map(|r| r.str(0).ok().map(str::to_ascii_lowercase))
        .collect())
}
