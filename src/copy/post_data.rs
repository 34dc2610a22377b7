//! Post-data built in parallel: `index_jobs` target sessions take each
//! table's indexes and constraints as soon as its rows are in, then run the
//! rest of post-data as a dependency graph: an entry starts when every
//! entry it depends on is done and none of its lanes (partition or
//! inheritance trees, the catalog lane) is held by a running entry.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tracing::Instrument;

use tokio::sync::{mpsc, Mutex};

use crate::conn::ConnectParams;

use super::entry_runner::{EntrySession, SessionOptions};
use super::post_plan::PostDataPlan;
use super::CopyError;

const PER_TABLE: &str = "building indexes and constraints";
const AFTER_TABLES: &str = "restoring post-data";
/// Ready entries holding the same lanes (comments, grants, triggers, a
/// tree's index attachments, …) sent as one job: they hold the same lanes
/// anyway, and one round trip for many keeps a remote target from costing
/// a round trip each.
const CATALOG_BATCH: usize = 64;
/// Finished tables whose indexes one session takes at once: the copy
/// reports small tables in groups, and half a group leaves the other half
/// to the next session.
const TABLES_PER_JOB: usize = 32;

/// Builds each finished table's indexes and constraints until `done`
/// closes; `jobs` sessions work side by side, one at a time per tree.
pub async fn build_per_table(
    plan: Arc<PostDataPlan>,
    target: &ConnectParams,
    jobs: usize,
    done: mpsc::UnboundedReceiver<u32>,
    options: SessionOptions,
    db: &str,
) -> Result<(), CopyError> {
    let done = Arc::new(Mutex::new(done));
    let trees: HashMap<u64, Arc<Mutex<()>>> = plan
        .table_lane
        .values()
        .map(|&l| (l, Arc::new(Mutex::new(()))))
        .collect();
    let trees = Arc::new(trees);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..jobs.max(1) {
        let (plan, done, target, db, trees, options) = (
            plan.clone(),
            done.clone(),
            target.clone(),
            db.to_string(),
            trees.clone(),
            options.clone(),
        );
        set.spawn(
            async move {
                let mut session: Option<EntrySession> = None;
                loop {
                    let oids = next_tables(&done).await;
                    if oids.is_empty() {
                        break;
                    }
                    // Every lane of the batch, taken in one order by every
                    // worker so two never wait on each other.
                    let lanes: BTreeSet<u64> = oids
                        .iter()
                        .filter_map(|oid| plan.table_lane.get(oid).copied())
                        .collect();
                    let mut _held = Vec::with_capacity(lanes.len());
                    for lane in &lanes {
                        if let Some(m) = trees.get(lane) {
                            _held.push(m.lock().await);
                        }
                    }
                    let entries: Vec<_> = oids
                        .iter()
                        .filter_map(|oid| plan.per_table.get(oid))
                        .flatten()
                        .filter_map(|&i| plan.entries.get(i))
                        .collect();
                    if entries.is_empty() {
                        continue;
                    }
                    let s = match session.as_mut() {
                        Some(s) => s,
                        None => session.insert(
                            EntrySession::connect_with(&target, &db, PER_TABLE, options.clone())
                                .await?,
                        ),
                    };
                    s.run(&entries, &plan.lines, &db, PER_TABLE).await?;
                }
                if let Some(s) = session {
                    s.close().await;
                }
                Ok::<(), CopyError>(())
            }
            .instrument(tracing::Span::current()),
        );
    }
    join_all(set, db, "index build").await
}

/// The next finished table and those finished along with it (up to
/// `TABLES_PER_JOB`): their indexes go in few round trips instead of one
/// each. Empty when the copy is over.
async fn next_tables(done: &Mutex<mpsc::UnboundedReceiver<u32>>) -> Vec<u32> {
    let mut rx = done.lock().await;
    let Some(first) = rx.recv().await else {
        return Vec::new();
    };
    let mut oids = vec![first];
    while oids.len() < TABLES_PER_JOB {
        match rx.try_recv() {
            Ok(oid) => oids.push(oid),
            Err(_) => break,
        }
    }
    oids
}

async fn join_all(
    mut set: tokio::task::JoinSet<Result<(), CopyError>>,
    db: &str,
    what: &str,
) -> Result<(), CopyError> {
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        let r = r.map_err(|e| CopyError::Unexpected {
            db: db.to_string(),
            message: format!("{what} task failed: {e}"),
        })?;
        if let (Err(e), None) = (r, &first_err) {
            first_err = Some(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// What one finished entry hands back to the scheduler.
type Finished = (Option<EntrySession>, Vec<usize>, Result<(), CopyError>);

/// Bookkeeping of the dependency graph of the entries after the tables.
struct Graph {
    waiting_on: HashMap<usize, usize>,
    dependents: HashMap<usize, Vec<usize>>,
    ready: BTreeSet<usize>,
    busy: HashSet<u64>,
    left: usize,
}

impl Graph {
    fn new(plan: &PostDataPlan) -> Graph {
        let todo: HashSet<usize> = plan.after_tables.iter().copied().collect();
        let mut g = Graph {
            waiting_on: HashMap::new(),
            dependents: HashMap::new(),
            ready: BTreeSet::new(),
            busy: HashSet::new(),
            left: todo.len(),
        };
        for &i in &plan.after_tables {
            // Dependencies outside this set ran per table already.
            let deps: Vec<usize> = plan
                .deps
                .get(i)
                .map(|d| d.iter().copied().filter(|j| todo.contains(j)).collect())
                .unwrap_or_default();
            for &j in &deps {
                g.dependents.entry(j).or_default().push(i);
            }
            if deps.is_empty() {
                g.ready.insert(i);
            } else {
                g.waiting_on.insert(i, deps.len());
            }
        }
        g
    }

    /// The first ready entry (in archive order) whose lanes are all free,
    /// with further ready entries that hold the same lanes.
    fn take_runnable(&mut self, plan: &PostDataPlan) -> Option<Vec<usize>> {
        let lanes_of = |i: usize| plan.lanes.get(i).map(Vec::as_slice).unwrap_or_default();
        let i = self
            .ready
            .iter()
            .copied()
            .find(|&i| lanes_of(i).iter().all(|l| !self.busy.contains(l)))?;
        let mut job = vec![i];
        // Entries holding exactly the same lanes would run one after the
        // other anyway (a partition tree's index attachments, the catalog
        // lane's comments and grants): one job, few round trips. Entries
        // holding no lane stay apart, so they still run side by side.
        let lanes = lanes_of(i);
        if !lanes.is_empty() {
            job.extend(
                self.ready
                    .iter()
                    .copied()
                    .filter(|&j| j != i && lanes_of(j) == lanes)
                    .take(CATALOG_BATCH - 1),
            );
        }
        for j in &job {
            self.ready.remove(j);
        }
        self.busy.extend(lanes_of(i).iter().copied());
        Some(job)
    }

    fn finish(&mut self, plan: &PostDataPlan, i: usize) {
        for l in plan.lanes.get(i).map(Vec::as_slice).unwrap_or_default() {
            self.busy.remove(l);
        }
        self.left = self.left.saturating_sub(1);
        for d in self.dependents.remove(&i).unwrap_or_default() {
            if let Some(n) = self.waiting_on.get_mut(&d) {
                *n -= 1;
                if *n == 0 {
                    self.waiting_on.remove(&d);
                    self.ready.insert(d);
                }
            }
        }
    }
}

/// Runs the post-data that waits for all tables, each entry once its
/// dependencies are done, over up to `jobs` sessions.
pub async fn build_remaining(
    plan: Arc<PostDataPlan>,
    target: &ConnectParams,
    jobs: usize,
    options: SessionOptions,
    db: &str,
) -> Result<(), CopyError> {
    let jobs = jobs.max(1);
    let mut graph = Graph::new(&plan);
    let mut idle: Vec<EntrySession> = Vec::new();
    let mut running: tokio::task::JoinSet<Finished> = tokio::task::JoinSet::new();
    let mut first_err: Option<CopyError> = None;
    loop {
        while first_err.is_none() && running.len() < jobs {
            let Some(job) = graph.take_runnable(&plan) else {
                break;
            };
            let (plan, target, db, session, options) = (
                plan.clone(),
                target.clone(),
                db.to_string(),
                idle.pop(),
                options.clone(),
            );
            running.spawn(
                async move {
                    let mut s = match session {
                        Some(s) => s,
                        None => {
                            match EntrySession::connect_with(&target, &db, AFTER_TABLES, options)
                                .await
                            {
                                Ok(s) => s,
                                Err(e) => return (None, job, Err(e)),
                            }
                        }
                    };
                    let entries: Vec<_> = job.iter().filter_map(|&i| plan.entries.get(i)).collect();
                    let r = s.run(&entries, &plan.lines, &db, AFTER_TABLES).await;
                    (Some(s), job, r)
                }
                .instrument(tracing::Span::current()),
            );
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (session, job, r) = joined.map_err(|e| CopyError::Unexpected {
            db: db.to_string(),
            message: format!("post-data task failed: {e}"),
        })?;
        if let Some(s) = session {
            idle.push(s);
        }
        match r {
            Ok(()) => {
                for i in job {
                    graph.finish(&plan, i);
                }
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    for s in idle {
        s.close().await;
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if graph.left > 0 {
        return Err(CopyError::Unexpected {
            db: db.to_string(),
            message: format!(
                "{} post-data entries wait on each other in a cycle and were not run",
                graph.left
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::post_plan::CATALOG_LANE;

    /// Entries 0..4: 1 depends on 0; 0 and 2 share a tree lane; 3 is free.
    fn plan() -> PostDataPlan {
        PostDataPlan {
            after_tables: vec![0, 1, 2, 3],
            deps: vec![vec![], vec![0], vec![], vec![]],
            lanes: vec![vec![7], vec![], vec![7], vec![]],
            ..PostDataPlan::default()
        }
    }

    #[test]
    fn one_job_per_lane_and_dependencies_first() {
        let p = plan();
        let mut g = Graph::new(&p);
        // 0 and 2 hold the same lane: one job; 1 waits for 0.
        assert_eq!(g.take_runnable(&p), Some(vec![0, 2]));
        assert_eq!(g.take_runnable(&p), Some(vec![3]));
        assert_eq!(g.take_runnable(&p), None);
        g.finish(&p, 0);
        g.finish(&p, 2);
        assert_eq!(g.take_runnable(&p), Some(vec![1]));
        for i in [1, 3] {
            g.finish(&p, i);
        }
        assert_eq!(g.left, 0);
    }

    #[test]
    fn entries_without_lanes_stay_apart() {
        let p = PostDataPlan {
            after_tables: vec![0, 1],
            deps: vec![vec![], vec![]],
            lanes: vec![vec![], vec![]],
            ..PostDataPlan::default()
        };
        let mut g = Graph::new(&p);
        assert_eq!(g.take_runnable(&p), Some(vec![0]));
        assert_eq!(g.take_runnable(&p), Some(vec![1]));
    }

    #[test]
    fn dependencies_outside_the_set_count_as_done() {
        let mut p = plan();
        p.after_tables = vec![1, 3];
        let mut g = Graph::new(&p);
        assert_eq!(g.take_runnable(&p), Some(vec![1]));
        assert_eq!(g.take_runnable(&p), Some(vec![3]));
    }

    #[test]
    fn ready_catalog_entries_go_together() {
        let p = PostDataPlan {
            after_tables: vec![0, 1, 2, 3],
            deps: vec![vec![], vec![], vec![0], vec![]],
            lanes: vec![
                vec![CATALOG_LANE],
                vec![CATALOG_LANE],
                vec![CATALOG_LANE],
                vec![5, CATALOG_LANE],
            ],
            ..PostDataPlan::default()
        };
        let mut g = Graph::new(&p);
        assert_eq!(g.take_runnable(&p), Some(vec![0, 1]));
        assert_eq!(g.take_runnable(&p), None, "the catalog lane is held");
        g.finish(&p, 0);
        g.finish(&p, 1);
        assert_eq!(g.take_runnable(&p), Some(vec![2]));
    }
}
