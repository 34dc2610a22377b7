//! The worker's pipeline: what each queued execution was, so that when the
//! target refuses one the error names its table, row and transaction, and
//! rows an UPDATE or DELETE did not find are noticed.

use std::sync::Arc;

use crate::conn::PipelineError;
use crate::protocol::lsn::Lsn;
use crate::protocol::pgoutput::TupleData;

use super::super::failure::{describe_key, RefusedChange};
use super::super::relation::RelationInfo;
use super::super::ApplyError;
use super::{Kind, Worker};

/// A queued row change: what it was, and how many rows it should touch.
#[derive(Debug)]
pub(super) struct Queued {
    pub kind: Kind,
    /// Carried many rows over arrays.
    pub set_based: bool,
    pub rel: Arc<RelationInfo>,
    pub expected: u64,
    /// Commit LSN of the source transaction being received when queued.
    pub lsn: Lsn,
    /// The (first) row, to name it if the target refuses the statement:
    /// a reference to the received message, not a copy.
    pub row: TupleData,
}

impl Worker {
    /// Records a queued row change.
    pub(super) fn queued_change(
        &mut self,
        kind: Kind,
        set_based: bool,
        rel: &Arc<RelationInfo>,
        expected: u64,
        row: &TupleData,
    ) {
        self.queued_kinds.push(Some(Queued {
            kind,
            set_based,
            rel: rel.clone(),
            expected,
            lsn: self.current,
            row: row.clone(),
        }));
    }

    /// Sends what is queued and reads the results.
    pub(super) async fn sync(&mut self) -> Result<(), ApplyError> {
        self.flush_run()?;
        if self.conn.queued() == 0 {
            return Ok(());
        }
        let counts = match self.conn.sync_pipeline().await {
            Ok(c) => c,
            Err(e) => return Err(self.refused(e)),
        };
        let kinds = std::mem::take(&mut self.queued_kinds);
        for (entry, n) in kinds.iter().zip(counts.iter()) {
            let Some(q) = entry else {
                continue;
            };
            if *n < q.expected && q.kind != Kind::Insert {
                tracing::warn!(table = %q.rel.display(), "{} of {} rows to {} not found on the target", q.expected - n, q.expected, if q.kind == Kind::Update { "update" } else { "delete" });
            }
        }
        Ok(())
    }

    /// The error for a pipeline the target failed: the execution at
    /// `completed` is the one it refused.
    fn refused(&mut self, e: PipelineError) -> ApplyError {
        let kinds = std::mem::take(&mut self.queued_kinds);
        let Some(Some(q)) = kinds.get(e.completed) else {
            return ApplyError::Target {
                db: self.cfg.db.clone(),
                worker: self.cfg.index,
                context: format!(
                    "applying the transactions committed from {} to {}",
                    self.batch_first, self.current
                ),
                at: Some(self.batch_first),
                source: Box::new(e.error),
            };
        };
        let what = match q.kind {
            Kind::Insert => "insert into",
            Kind::Update => "update of",
            Kind::Delete => "delete from",
        };
        ApplyError::Change(Box::new(RefusedChange {
            db: self.cfg.db.clone(),
            worker: self.cfg.index,
            what: if q.set_based {
                format!("set-based {what}")
            } else {
                what.to_string()
            },
            table: q.rel.display(),
            key: describe_key(&q.rel, &q.row),
            lsn: q.lsn,
            more: if q.expected > 1 {
                format!(" (the first of {} rows in one statement)", q.expected)
            } else {
                String::new()
            },
            batch_start: self.batch_first,
            source: Box::new(e.error),
        }))
    }
}
