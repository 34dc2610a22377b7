//! Tables a resumed copy read under a later snapshot than the slot's
//! consistent point: their changes committed before that snapshot are
//! already in their rows, so the stream drops them (native logical
//! replication's per-table sync position, applied to our resume).

use std::collections::HashMap;

use crate::control::state::LateCopy;
use crate::protocol::lsn::Lsn;

/// The snapshot LSN of each late relation, by source OID.
#[derive(Debug, Clone, Default)]
pub struct LateTables {
    by_relation: HashMap<u32, Lsn>,
    /// The latest of them: a transaction committed at or after it is
    /// applied whole without a lookup.
    latest: Lsn,
}

impl LateTables {
    /// From what state.json recorded.
    pub fn new(late: &[LateCopy]) -> LateTables {
        let mut t = LateTables::default();
        for l in late {
            for rel in &l.relations {
                let at = t.by_relation.entry(*rel).or_insert(l.lsn);
                *at = (*at).max(l.lsn);
            }
            t.latest = t.latest.max(l.lsn);
        }
        t
    }

    /// True when the transaction committing at `commit_lsn` may hold
    /// changes to skip.
    pub fn applies_to(&self, commit_lsn: Lsn) -> bool {
        commit_lsn < self.latest
    }

    /// True when relation `rel`'s change in the transaction committing at
    /// `commit_lsn` is already in its copy. The snapshot a slot exports
    /// holds every transaction whose commit record precedes its consistent
    /// point; the stream sends each with its commit record's LSN.
    pub fn skips(&self, rel: u32, commit_lsn: Lsn) -> bool {
        self.by_relation
            .get(&rel)
            .is_some_and(|&at| commit_lsn < at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_only_what_the_copy_holds() {
        let t = LateTables::new(&[
            LateCopy {
                lsn: Lsn(100),
                relations: vec![1, 2],
            },
            LateCopy {
                lsn: Lsn(200),
                relations: vec![3],
            },
        ]);
        assert!(t.applies_to(Lsn(150)));
        assert!(!t.applies_to(Lsn(200)));
        assert!(t.skips(1, Lsn(99)));
        assert!(!t.skips(1, Lsn(100)));
        assert!(t.skips(3, Lsn(150)));
        assert!(!t.skips(4, Lsn(10)));
        assert!(!LateTables::default().applies_to(Lsn(1)));
    }
}
