//! Resuming an interrupted data phase under a new snapshot. The journal
//! and the copy origins' progress say which units are in; a table is kept
//! only with its whole group (a split table's ranges, a partition or
//! inheritance tree), because rows move between ctid ranges and between
//! partitions: a group read under two snapshots could hold a row twice or
//! not at all. Kept groups carry the snapshot LSN they were read under;
//! the stream skips their changes committed before it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::conn::Connection;
use crate::control::status::Phase;
use crate::protocol::lsn::Lsn;

use super::catalog::Table;
use super::copy_log::{self, CopyLog, PlannedUnit, UnitKey};
use super::copy_origins::{self, Journaling};
use super::done_log::read_done;
use super::owners::Owners;
use super::schema::SchemaArchive;
use super::table_copy::CopyUnit;
use super::{first_session, CopyError, CopySummary, DataPhase, DatabaseCopy, COPY_LOG, DONE_LOG};

/// Which tables an earlier run finished and which are copied again.
struct Split {
    /// Kept tables with the snapshot LSN they were read under.
    kept: HashMap<u32, Lsn>,
    /// Tables of unfinished groups that already hold committed rows: they
    /// are emptied first.
    reset: Vec<u32>,
    /// The units to copy, largest first.
    units: Vec<CopyUnit>,
}

impl DatabaseCopy<'_> {
    /// True when an earlier run left what [`DatabaseCopy::resume_data`]
    /// needs: the schema archive and a complete journal plan.
    pub fn can_resume_data(&self) -> bool {
        self.work_dir.join("schema.dump").is_file()
            && !self.copy_origins.is_empty()
            && copy_log::read(&self.work_dir.join(COPY_LOG), self.db)
                .is_ok_and(|j| j.plan.is_some())
    }

    /// Copies what an earlier run's data phase did not finish, reading it
    /// under `snapshot` (consistent point `snapshot_lsn`), then the rest
    /// of the copy as [`DatabaseCopy::run`] does.
    pub async fn resume_data(
        &self,
        snapshot: &str,
        snapshot_lsn: Lsn,
    ) -> Result<CopySummary, CopyError> {
        let db = self.db;
        let cannot = |why: &str| CopyError::Unexpected {
            db: db.into(),
            message: format!("cannot resume the copy: {why}"),
        };
        let journal = copy_log::read(&self.work_dir.join(COPY_LOG), db)?;
        let plan_units = journal.plan.clone().ok_or_else(|| cannot("no plan"))?;
        let mut archive = SchemaArchive::open(self.tools, self.work_dir, db, !self.keep_owners)
            .await?
            .ok_or_else(|| cannot("the schema archive is gone"))?;
        self.progress.set_phase(Phase::CopyingData);
        let (mut sessions, _) = self
            .open_snapshot(snapshot, self.options.jobs.max(1), false)
            .await?;
        let first = first_session(&mut sessions, db)?;
        let (all_tables, sequences, owners) = self.catalog_facts(first, &mut archive).await?;
        let mut target = Connection::connect(self.target)
            .await
            .map_err(|e| CopyError::target(db, "connecting to the new database", e))?;
        let progress = copy_origins::progress(&mut target, self.copy_origins, db).await?;
        let committed = journal.committed(&progress);
        tracing::info!(
            db,
            ?progress,
            announced = journal.events.len(),
            committed = committed.len(),
            "copy journal read"
        );

        let tables = planned_tables(all_tables, &plan_units, db);
        let split = split(&tables, &plan_units, &committed, &owners);
        tracing::info!(
            db,
            kept = split.kept.len(),
            again = split.reset.len(),
            units = split.units.len(),
            lsn = %snapshot_lsn,
            "resuming the copy under a new snapshot"
        );
        // The counters go on from what is committed for the kept tables,
        // not from the killed run's (which counted rows it never committed).
        let kept: HashSet<u32> = split.kept.keys().copied().collect();
        let (rows, bytes) = journal.counted(&progress, &kept);
        self.progress.rows_copied.store(rows, Ordering::Relaxed);
        self.progress.bytes_copied.store(bytes, Ordering::Relaxed);
        let log = Arc::new(CopyLog::open(&self.work_dir.join(COPY_LOG), db)?);
        empty_again(&mut target, &log, &tables, &split.reset, db).await?;

        let copied: HashSet<u32> = tables.iter().map(|t| t.oid).collect();
        let done = read_done(&self.work_dir.join(DONE_LOG), db)?;
        let plan = archive
            .post_data_plan(self.target, &owners, &copied, self.exclude_publication, db)
            .await?
            .without_done(&done);
        let journal = Journaling {
            log,
            origins: self.copy_origins.to_vec(),
            lsn: snapshot_lsn,
            seq: AtomicU64::new(journal.last_seq()),
        };
        self.copy_data(DataPhase {
            sessions,
            target,
            tables,
            units: split.units,
            plan: Arc::new(plan),
            sequences,
            journal: Some(Arc::new(journal)),
            resuming: true,
            kept: split.kept,
            snapshot_lsn,
        })
        .await
    }
}

/// The tables of the plan, as the new snapshot sees them. A table created
/// since the copy began has no schema on the target and is not copied; one
/// dropped since is gone from the source and nothing is left to copy.
fn planned_tables(all: Vec<Table>, plan: &[PlannedUnit], db: &str) -> Vec<Table> {
    let planned: HashSet<u32> = plan.iter().map(|u| u.key.oid).collect();
    let (tables, new): (Vec<Table>, Vec<Table>) =
        all.into_iter().partition(|t| planned.contains(&t.oid));
    for t in new {
        tracing::warn!(
            db,
            table = %t.display(),
            "table created after the copy began: not part of this migration's copy"
        );
    }
    tables
}

/// Splits the planned units into kept groups and units to copy.
fn split(
    tables: &[Table],
    plan: &[PlannedUnit],
    committed: &HashMap<UnitKey, Lsn>,
    owners: &Owners,
) -> Split {
    let index: HashMap<u32, usize> = tables.iter().enumerate().map(|(i, t)| (t.oid, i)).collect();
    let group = |oid: u32| owners.tree_of.get(&oid).copied().unwrap_or(oid);
    let mut complete: HashMap<u32, bool> = HashMap::new();
    let mut by_table: BTreeMap<u32, Vec<&PlannedUnit>> = BTreeMap::new();
    for u in plan.iter().filter(|u| index.contains_key(&u.key.oid)) {
        by_table.entry(u.key.oid).or_default().push(u);
        let done = committed.contains_key(&u.key);
        *complete.entry(group(u.key.oid)).or_insert(true) &= done;
    }
    let mut out = Split {
        kept: HashMap::new(),
        reset: Vec::new(),
        units: Vec::new(),
    };
    let mut weighted: Vec<(u64, CopyUnit)> = Vec::new();
    for (oid, units) in by_table {
        let Some(&table) = index.get(&oid) else {
            continue;
        };
        if complete.get(&group(oid)).copied().unwrap_or(false) {
            let lsn = units
                .iter()
                .filter_map(|u| committed.get(&u.key))
                .max()
                .copied()
                .unwrap_or_default();
            out.kept.insert(oid, lsn);
            continue;
        }
        if units.iter().any(|u| committed.contains_key(&u.key)) {
            out.reset.push(oid);
        }
        let weight = tables.get(table).map_or(0, |t| t.total_bytes) / units.len().max(1) as u64;
        for u in units {
            weighted.push((
                weight,
                CopyUnit {
                    table,
                    pages: u.key.start.map(|s| (s, u.end)),
                },
            ));
        }
    }
    weighted.sort_by_key(|w| std::cmp::Reverse(w.0));
    out.units = weighted.into_iter().map(|(_, u)| u).collect();
    out
}

/// Empties the tables of unfinished groups that hold committed rows,
/// recording first that what was committed for them no longer counts.
async fn empty_again(
    target: &mut Connection,
    log: &CopyLog,
    tables: &[Table],
    oids: &[u32],
    db: &str,
) -> Result<(), CopyError> {
    if oids.is_empty() {
        return Ok(());
    }
    log.reset(oids)?;
    let names: Vec<String> = tables
        .iter()
        .filter(|t| oids.contains(&t.oid))
        .map(|t| format!("ONLY {}", t.qualified()))
        .collect();
    target
        .execute(&format!("TRUNCATE {}", names.join(", ")))
        .await
        .map_err(|e| CopyError::target(db, "emptying the tables copied again", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(oid: u32) -> Table {
        Table {
            oid,
            schema: "s".into(),
            name: format!("t{oid}"),
            bytes: 100,
            total_bytes: 100,
            columns: vec![],
            root: None,
        }
    }

    fn unit(oid: u32, start: Option<u64>, end: Option<u64>) -> PlannedUnit {
        PlannedUnit {
            key: UnitKey { oid, start },
            end,
        }
    }

    #[test]
    fn only_whole_groups_are_kept() {
        // 1: whole and done; 2: split, one range done; 3 and 4: one tree,
        // only 3 done; 5: not started.
        let tables: Vec<Table> = [1, 2, 3, 4, 5].into_iter().map(table).collect();
        let plan = vec![
            unit(1, None, None),
            unit(2, Some(0), Some(10)),
            unit(2, Some(10), None),
            unit(3, None, None),
            unit(4, None, None),
            unit(5, None, None),
        ];
        let committed: HashMap<UnitKey, Lsn> = [
            (
                UnitKey {
                    oid: 1,
                    start: None,
                },
                Lsn(7),
            ),
            (
                UnitKey {
                    oid: 2,
                    start: Some(0),
                },
                Lsn(7),
            ),
            (
                UnitKey {
                    oid: 3,
                    start: None,
                },
                Lsn(7),
            ),
        ]
        .into_iter()
        .collect();
        let mut owners = Owners::default();
        owners.tree_of.insert(3, 3);
        owners.tree_of.insert(4, 3);
        let s = split(&tables, &plan, &committed, &owners);
        assert_eq!(s.kept, [(1, Lsn(7))].into_iter().collect());
        let mut reset = s.reset.clone();
        reset.sort_unstable();
        assert_eq!(reset, vec![2, 3]);
        // Both ranges of 2, and 3, 4, 5 whole.
        assert_eq!(s.units.len(), 5);
        assert!(s.units.contains(&CopyUnit {
            table: 1,
            pages: Some((10, None))
        }));
    }
}
