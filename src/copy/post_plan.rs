//! The post-data plan: which entries run per table as soon as its rows are
//! in, and, for the rest, what each waits for (its dependencies in the
//! archive) and which lanes it occupies (partition or inheritance trees it
//! touches; small catalog DDL shares one lane). Derived from the table of
//! contents, never from a list of entry kinds that must come last.

use std::collections::{HashMap, HashSet};

use super::entry_runner::EntryLines;
use super::entry_script::ScriptEntry;
use super::owners::Owners;
use super::toc::TocEntry;

/// The lane of everything that is not an index or constraint build:
/// triggers, rules, policies, comments, grants, publications run one at a
/// time, so concurrent catalog updates of one object never collide.
pub const CATALOG_LANE: u64 = u64::MAX;

/// Entry kinds built per table while other tables still copy.
const PER_TABLE_KINDS: &[&str] = &["INDEX", "CONSTRAINT", "CHECK CONSTRAINT"];
/// Entry kinds that may run side by side (on different trees).
const PARALLEL_KINDS: &[&str] = &[
    "INDEX",
    "CONSTRAINT",
    "CHECK CONSTRAINT",
    "FK CONSTRAINT",
    "INDEX ATTACH",
    "MATERIALIZED VIEW DATA",
];

/// Post-data entries and when each may run.
#[derive(Debug, Default)]
pub struct PostDataPlan {
    /// Entries in script (archive) order.
    pub entries: Vec<ScriptEntry>,
    /// Archive line of every entry, for errors.
    pub lines: EntryLines,
    /// Entries (indices into `entries`) of one copied table, keyed by its
    /// source OID, in archive order; run once its rows are in.
    pub per_table: HashMap<u32, Vec<usize>>,
    /// The tree lane of each table in `per_table` that is in a tree.
    pub table_lane: HashMap<u32, u64>,
    /// Everything else, after all tables, in dependency order.
    pub after_tables: Vec<usize>,
    /// For each entry, the entries it waits for.
    pub deps: Vec<Vec<usize>>,
    /// For each entry, the lanes it holds while running.
    pub lanes: Vec<Vec<u64>>,
}

/// What the plan is built from.
pub struct PlanInput<'a> {
    /// The archive's table of contents.
    pub toc: &'a [TocEntry],
    /// The post-data script, cut into entries.
    pub entries: Vec<ScriptEntry>,
    /// Tables of indexes, constraints, …
    pub owners: &'a Owners,
    /// Tables that get rows.
    pub copied: &'a HashSet<u32>,
    /// The migration's own publication, left out.
    pub exclude_publication: Option<&'a str>,
}

/// The table of contents entry of each script entry.
type TocOf<'a> = Vec<Option<&'a TocEntry>>;

impl PostDataPlan {
    /// Builds the plan.
    pub fn build(input: PlanInput<'_>) -> PostDataPlan {
        let by_id: HashMap<u32, &TocEntry> = input.toc.iter().map(|e| (e.dump_id, e)).collect();
        let mut entries = without_excluded(input.entries, &by_id, input.exclude_publication);
        let toc: TocOf<'_> = entries
            .iter()
            .map(|e| by_id.get(&e.dump_id).copied())
            .collect();
        let deps = dependencies(&entries, &toc);
        let home = per_table_homes(&toc, &deps, input.owners, input.copied);
        let mut plan = PostDataPlan {
            lines: input
                .toc
                .iter()
                .map(|e| (e.dump_id, e.line.clone()))
                .collect(),
            ..PostDataPlan::default()
        };
        for (i, h) in home.iter().enumerate() {
            match h {
                Some(t) => {
                    plan.per_table.entry(*t).or_default().push(i);
                    if let Some(&tree) = input.owners.tree_of.get(t) {
                        plan.table_lane.insert(*t, u64::from(tree));
                    }
                }
                None => plan.after_tables.push(i),
            }
        }
        plan.lanes = lanes(&toc, &deps, input.owners);
        for (e, t) in entries.iter_mut().zip(&toc) {
            let Some(t) = t.filter(|t| t.kind == "FK CONSTRAINT") else {
                continue;
            };
            if let Some(first) = input.owners.partition_fks.get(&t.oid) {
                // In the same transaction, before the parent's key adopts them.
                e.statements.splice(0..0, first.iter().cloned());
            }
        }
        plan.entries = entries;
        plan.deps = deps;
        plan
    }
}

/// For each entry, the entries (indices) it depends on inside post-data.
fn dependencies(entries: &[ScriptEntry], toc: &TocOf<'_>) -> Vec<Vec<usize>> {
    let index: HashMap<u32, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.dump_id, i))
        .collect();
    toc.iter()
        .map(|t| {
            let mut d: Vec<usize> = t
                .map(|t| {
                    t.deps
                        .iter()
                        .filter_map(|id| index.get(id).copied())
                        .collect()
                })
                .unwrap_or_default();
            d.sort_unstable();
            d.dedup();
            d
        })
        .collect()
}

/// The copied table each entry runs with, if any: indexes and constraints
/// whose dependencies inside post-data are all on the same table's list
/// (repeated until nothing moves out).
fn per_table_homes(
    toc: &TocOf<'_>,
    deps: &[Vec<usize>],
    owners: &Owners,
    copied: &HashSet<u32>,
) -> Vec<Option<u32>> {
    let mut home: Vec<Option<u32>> = toc
        .iter()
        .map(|t| {
            let t = t.filter(|t| PER_TABLE_KINDS.contains(&t.kind.as_str()))?;
            owners
                .table_of
                .get(&t.oid)
                .copied()
                .filter(|rel| copied.contains(rel))
        })
        .collect();
    loop {
        let mut moved = false;
        for i in 0..home.len() {
            let Some(t) = home.get(i).copied().flatten() else {
                continue;
            };
            let ok = deps
                .get(i)
                .is_some_and(|d| d.iter().all(|&j| home.get(j).copied().flatten() == Some(t)));
            if !ok {
                if let Some(h) = home.get_mut(i) {
                    *h = None;
                }
                moved = true;
            }
        }
        if !moved {
            return home;
        }
    }
}

/// The lanes each entry holds: the trees of its table (and of the table a
/// foreign key references), or for a comment, grant or attachment the
/// trees of what it depends on; plus the catalog lane for everything that
/// is not an index or constraint build.
fn lanes(toc: &TocOf<'_>, deps: &[Vec<usize>], owners: &Owners) -> Vec<Vec<u64>> {
    let mut lanes: Vec<Vec<u64>> = Vec::with_capacity(toc.len());
    for (i, t) in toc.iter().enumerate() {
        let mut l: Vec<u64> = t
            .map(|t| {
                let mut trees = owners.trees(t.oid);
                if let Some(&tree) = owners.tree_of.get(&t.oid) {
                    trees.push(tree);
                }
                trees.into_iter().map(u64::from).collect()
            })
            .unwrap_or_default();
        if l.is_empty() && !t.is_some_and(|t| owners.has_table(t.oid)) {
            for &j in deps.get(i).map(Vec::as_slice).unwrap_or_default() {
                for &lane in lanes.get(j).map(Vec::as_slice).unwrap_or_default() {
                    if lane != CATALOG_LANE {
                        l.push(lane);
                    }
                }
            }
        }
        if !t.is_some_and(|t| PARALLEL_KINDS.contains(&t.kind.as_str())) {
            l.push(CATALOG_LANE);
        }
        l.sort_unstable();
        l.dedup();
        lanes.push(l);
    }
    lanes
}

impl PostDataPlan {
    /// The plan of a resumed data phase: the entries in `done` (dump IDs
    /// an earlier run committed) are left out, the rest keep their place.
    pub fn without_done(mut self, done: &HashSet<u32>) -> PostDataPlan {
        let entries = &self.entries;
        let todo = |i: &usize| entries.get(*i).is_some_and(|e| !done.contains(&e.dump_id));
        for list in self.per_table.values_mut() {
            list.retain(todo);
        }
        self.after_tables.retain(todo);
        self
    }

    /// The plan of a resumed run: every entry not in `done` runs after the
    /// tables (whose rows are all in), in dependency order.
    pub fn resume(mut self, done: &HashSet<u32>) -> PostDataPlan {
        self.per_table.clear();
        self.table_lane.clear();
        self.after_tables = (0..self.entries.len())
            .filter(|&i| {
                self.entries
                    .get(i)
                    .is_some_and(|e| !done.contains(&e.dump_id))
            })
            .collect();
        self
    }
}

/// Drops our own publication's entries, and everything that depends on
/// them (its tables, its comment).
fn without_excluded(
    entries: Vec<ScriptEntry>,
    by_id: &HashMap<u32, &TocEntry>,
    exclude_publication: Option<&str>,
) -> Vec<ScriptEntry> {
    let Some(name) = exclude_publication else {
        return entries;
    };
    // The inserts-only publication of keyless tables is ours too.
    let needles = [
        format!(" {name} "),
        format!(
            " {} ",
            crate::stream::publication::insert_publication_name(name)
        ),
    ];
    let mut excluded: HashSet<u32> = HashSet::new();
    for e in &entries {
        let Some(t) = by_id.get(&e.dump_id) else {
            continue;
        };
        let ours = t.kind.starts_with("PUBLICATION") && needles.iter().any(|n| t.line.contains(n));
        if ours || t.deps.iter().any(|d| excluded.contains(d)) {
            excluded.insert(e.dump_id);
        }
    }
    entries
        .into_iter()
        .filter(|e| !excluded.contains(&e.dump_id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn toc(id: u32, oid: u32, kind: &str, deps: &[u32]) -> TocEntry {
        TocEntry {
            dump_id: id,
            line: format!("{id}; 0 {oid} {kind} public x postgres"),
            oid,
            kind: kind.to_string(),
            deps: deps.to_vec(),
        }
    }

    fn script(ids: &[u32]) -> Vec<ScriptEntry> {
        let setup = Arc::new(Vec::new());
        ids.iter()
            .map(|&id| ScriptEntry {
                dump_id: id,
                setup: setup.clone(),
                statements: vec![format!("SELECT {id}")],
            })
            .collect()
    }

    #[test]
    fn comment_on_a_foreign_key_waits_for_it() {
        // 10 p(pkey 1000), 11 c(index 1001), 20 = FK on c -> p, 21 = its comment.
        let toc = vec![
            toc(1, 1000, "CONSTRAINT", &[10]),
            toc(2, 1001, "INDEX", &[11]),
            toc(21, 0, "COMMENT", &[20]),
            toc(20, 1002, "FK CONSTRAINT", &[11, 10, 1]),
            toc(30, 1003, "TRIGGER", &[11]),
        ];
        let mut owners = Owners::default();
        owners.table_of.insert(1000, 10);
        owners.table_of.insert(1001, 11);
        owners.table_of.insert(1002, 11);
        owners.referenced.insert(1002, 10);
        owners.table_of.insert(1003, 11);
        let copied: HashSet<u32> = [10, 11].into_iter().collect();
        let plan = PostDataPlan::build(PlanInput {
            toc: &toc,
            entries: script(&[1, 2, 21, 20, 30]),
            owners: &owners,
            copied: &copied,
            exclude_publication: None,
        });
        assert_eq!(plan.per_table[&10], vec![0]);
        assert_eq!(plan.per_table[&11], vec![1]);
        assert_eq!(plan.after_tables, vec![2, 3, 4]);
        assert_eq!(plan.deps[2], vec![3], "the comment waits for the FK");
        assert_eq!(plan.deps[3], vec![0], "the FK waits for the key");
        assert_eq!(
            plan.lanes[3],
            Vec::<u64>::new(),
            "FKs of plain tables run in parallel"
        );
        assert_eq!(plan.lanes[4], vec![CATALOG_LANE]);
    }

    #[test]
    fn a_tree_is_one_lane_and_cross_table_deps_leave_the_per_table_list() {
        // 50 partitioned parent of 51; FK 60 on the parent, FK 61 on the
        // partition; index 70 on 51 depends on an entry of another table.
        let toc = vec![
            toc(5, 2000, "CONSTRAINT", &[52]),
            toc(60, 3000, "FK CONSTRAINT", &[50, 5]),
            toc(61, 3001, "FK CONSTRAINT", &[51, 5]),
            toc(70, 3002, "INDEX", &[51, 5]),
            toc(71, 0, "COMMENT", &[61]),
        ];
        let mut owners = Owners::default();
        owners.table_of.insert(2000, 52);
        owners.table_of.insert(3000, 50);
        owners.table_of.insert(3001, 51);
        owners.table_of.insert(3002, 51);
        owners.referenced.insert(3000, 52);
        owners.referenced.insert(3001, 52);
        owners.tree_of.insert(50, 50);
        owners.tree_of.insert(51, 50);
        let copied: HashSet<u32> = [51, 52].into_iter().collect();
        let plan = PostDataPlan::build(PlanInput {
            toc: &toc,
            entries: script(&[5, 60, 61, 70, 71]),
            owners: &owners,
            copied: &copied,
            exclude_publication: None,
        });
        assert_eq!(plan.per_table[&52], vec![0]);
        assert!(!plan.per_table.contains_key(&51));
        assert_eq!(plan.after_tables, vec![1, 2, 3, 4]);
        assert_eq!(plan.lanes[1], vec![50]);
        assert_eq!(plan.lanes[2], vec![50]);
        assert_eq!(plan.lanes[4], vec![50, CATALOG_LANE]);
    }

    #[test]
    fn our_publication_and_its_dependents_are_left_out() {
        let toc = vec![
            toc(1, 0, "PUBLICATION", &[]),
            toc(2, 0, "PUBLICATION TABLE", &[1, 10]),
            toc(3, 0, "COMMENT", &[1]),
            toc(4, 0, "PUBLICATION", &[]),
        ];
        let mut toc = toc;
        toc[0].line = "1; 0 0 PUBLICATION - pgm_x postgres".into();
        toc[3].line = "4; 0 0 PUBLICATION - theirs postgres".into();
        let plan = PostDataPlan::build(PlanInput {
            toc: &toc,
            entries: script(&[1, 2, 3, 4]),
            owners: &Owners::default(),
            copied: &HashSet::new(),
            exclude_publication: Some("pgm_x"),
        });
        let ids: Vec<u32> = plan.entries.iter().map(|e| e.dump_id).collect();
        assert_eq!(ids, vec![4]);
    }
}
