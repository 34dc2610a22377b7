//! The schema, dumped once from the snapshot by pg_dump and restored in two
//! halves: pre-data (types, tables, functions) before the copy, post-data
//! (indexes, constraints, triggers) after it, grouped per table so each
//! table's indexes are built as soon as its rows are in.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::conn::{ConnectParams, Connection};

use super::pg_tools::{parse_toc, PgTools, TocEntry};
use super::sql_script;
use super::CopyError;

/// Statements sent per simple Query when restoring a script: few round
/// trips, yet a bounded number of locks per implicit transaction.
const STATEMENTS_PER_BATCH: usize = 100;

/// A schema-only archive of one database.
pub struct SchemaArchive {
    path: PathBuf,
    dir: PathBuf,
    tools: PgTools,
    no_owner: bool,
    toc: Vec<TocEntry>,
}

/// Post-data entries by when they can run.
#[derive(Debug, Default)]
pub struct PostDataPlan {
    /// Indexes and constraints of one table, keyed by its source OID; run
    /// when that table's rows are in.
    pub per_table: HashMap<u32, Vec<TocEntry>>,
    /// Everything else except foreign keys, in dump order, after all tables.
    pub after_tables: Vec<TocEntry>,
    /// Foreign keys, independent of each other: run in parallel last.
    pub foreign_keys: Vec<TocEntry>,
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
            dir: dir.to_path_buf(),
            tools: tools.clone(),
            no_owner,
            toc: parse_toc(&list),
        })
    }

    /// Restores types, tables, functions, … (everything but data and
    /// post-data) on the target.
    pub async fn restore_pre_data(
        &self,
        target: &mut Connection,
        db: &str,
    ) -> Result<(), CopyError> {
        let sql = self
            .tools
            .sql(&self.path, Some("pre-data"), None, self.no_owner)
            .await
            .map_err(|e| CopyError::tool(db, e))?;
        run_script(target, &sql, db, "restoring the schema (pre-data)").await
    }

    /// Splits the post-data entries: `owners` maps index/constraint OIDs to
    /// their table, `copied` holds the tables that get rows.
    pub async fn post_data_plan(
        &self,
        owners: &HashMap<u32, u32>,
        copied: &HashSet<u32>,
        exclude_publication: Option<&str>,
        db: &str,
    ) -> Result<PostDataPlan, CopyError> {
        let list = self
            .tools
            .sql_list(&self.path, "post-data")
            .await
            .map_err(|e| CopyError::tool(db, e))?;
        let post: HashSet<String> = parse_toc(&list).into_iter().map(|e| e.line).collect();
        let mut plan = PostDataPlan::default();
        // Our own publication exists on the source while we dump; it must
        // not be recreated on the target.
        let ours = |e: &TocEntry| match exclude_publication {
            Some(name) => {
                e.kind.starts_with("PUBLICATION") && e.line.contains(&format!(" {name} "))
            }
            None => false,
        };
        for entry in self
            .toc
            .iter()
            .filter(|e| post.contains(&e.line) && !ours(e))
        {
            let table = owners.get(&entry.oid).filter(|t| copied.contains(t));
            match (entry.kind.as_str(), table) {
                ("INDEX" | "CONSTRAINT" | "CHECK CONSTRAINT", Some(&t)) => {
                    plan.per_table.entry(t).or_default().push(entry.clone())
                }
                ("FK CONSTRAINT", _) => plan.foreign_keys.push(entry.clone()),
                _ => plan.after_tables.push(entry.clone()),
            }
        }
        Ok(plan)
    }

    /// The SQL of the given entries, in archive order.
    pub async fn sql_for(
        &self,
        entries: &[TocEntry],
        tag: &str,
        db: &str,
    ) -> Result<String, CopyError> {
        if entries.is_empty() {
            return Ok(String::new());
        }
        let list_path = self.dir.join(format!("list-{tag}.txt"));
        let mut text = String::new();
        for e in entries {
            text.push_str(&e.line);
            text.push('\n');
        }
        std::fs::write(&list_path, text).map_err(|e| CopyError::io(db, &list_path, e))?;
        let sql = self
            .tools
            .sql(&self.path, None, Some(&list_path), self.no_owner)
            .await
            .map_err(|e| CopyError::tool(db, e));
        let _ = std::fs::remove_file(&list_path);
        sql
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

/// Runs a pg_restore script on the target in batches of statements.
pub async fn run_script(
    target: &mut Connection,
    sql: &str,
    db: &str,
    what: &str,
) -> Result<(), CopyError> {
    let statements = filter_statements(target, sql, db).await?;
    for batch in statements.chunks(STATEMENTS_PER_BATCH) {
        let mut text = String::new();
        for s in batch {
            text.push_str(s);
            text.push_str(";\n");
        }
        target
            .execute(&text)
            .await
            .map_err(|e| CopyError::target(db, what, e))?;
    }
    Ok(())
}

/// The statements of a script that the target can run.
pub async fn filter_statements<'a>(
    target: &mut Connection,
    sql: &'a str,
    db: &str,
) -> Result<Vec<&'a str>, CopyError> {
    let known = known_settings(target, db).await?;
    Ok(sql_script::split(sql)
        .into_iter()
        .filter(|s| match s.set_name() {
            Some(name) if !name.contains('.') && !known.contains(&name) => {
                tracing::debug!(db, setting = %name, "skipping a setting the target does not know");
                false
            }
            _ => true,
        })
        .map(|s| s.sql)
        .collect())
}

/// True for statements that only set session state (pg_restore's preamble),
/// which every session running part of a script needs.
pub fn is_session_setup(sql: &str) -> bool {
    let lower = sql
        .trim_start()
        .get(..40)
        .unwrap_or(sql)
        .to_ascii_lowercase();
    lower.starts_with("set ") || lower.starts_with("select pg_catalog.set_config(")
}
