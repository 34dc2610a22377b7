//! The copy workers' replication origins on the target: each worker's
//! transactions commit with the origin advanced to their journal sequence
//! number, atomically, so after any crash (ours or the target's) the
//! origin's progress says which announced transactions are in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::conn::{quote_literal, Connection};
use crate::protocol::lsn::Lsn;

use super::copy_log::{Commit, CopyLog, UnitKey};
use super::CopyError;

/// Origin names for a copy of `jobs` workers of the migration object
/// `object_name` (slot/publication stem): stable, so a resumed copy with
/// more jobs only adds names.
pub fn names(object_name: &str, jobs: usize) -> Vec<String> {
    (0..jobs).map(|i| format!("{object_name}_c{i}")).collect()
}

/// What makes a copy resumable: the journal, the origins it commits with
/// and the snapshot LSN its rows are read under.
pub struct Journaling {
    /// The journal in the work directory.
    pub log: Arc<CopyLog>,
    /// Origin of each worker, by worker index.
    pub origins: Vec<String>,
    /// The snapshot's consistent point.
    pub lsn: Lsn,
    /// Last sequence number handed out.
    pub seq: AtomicU64,
}

impl Journaling {
    /// Creates (if missing) and takes worker `index`'s origin in `target`.
    pub async fn attach(
        &self,
        target: &mut Connection,
        index: usize,
        db: &str,
    ) -> Result<(), CopyError> {
        let Some(name) = self.origins.get(index) else {
            return Err(CopyError::Unexpected {
                db: db.into(),
                message: format!("no copy origin for worker {index}"),
            });
        };
        let lit = quote_literal(name);
        target
            .execute(&format!(
                "SELECT pg_catalog.pg_replication_origin_create({lit}) \
                   WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_origin WHERE roname = {lit}); \
                 SELECT pg_catalog.pg_replication_origin_session_setup({lit})"
            ))
            .await
            .map_err(|e| CopyError::target(db, &format!("setting up copy origin {name}"), e))?;
        Ok(())
    }

    /// Announces the transaction holding `units` (with the rows and COPY
    /// bytes of each) in the journal (durably) and returns the statement
    /// that commits it with worker `index`'s origin advanced to its
    /// sequence number.
    pub async fn commit_sql(
        &self,
        index: usize,
        units: Vec<UnitKey>,
        counts: Vec<(u64, u64)>,
    ) -> Result<String, CopyError> {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let commit = Commit {
            origin: index,
            seq,
            lsn: self.lsn,
            units,
            counts,
        };
        let log = self.log.clone();
        // An fsync: off the reactor.
        tokio::task::spawn_blocking(move || log.announce(&commit))
            .await
            .map_err(|e| CopyError::Unexpected {
                db: self.log.db().to_string(),
                message: format!("copy journal task failed: {e}"),
            })??;
        Ok(format!(
            "SELECT pg_catalog.pg_replication_origin_xact_setup('{}', now()); COMMIT",
            Lsn(seq)
        ))
    }
}

/// Creates the origins afresh (an earlier copy's progress must not count
/// for this one) and takes each once, which claims its replication state
/// on servers that limit them. False when the target refuses them (a
/// privilege, no room): the copy then runs without a journal.
pub async fn create_all(
    target: &mut Connection,
    origins: &[String],
    db: &str,
) -> Result<bool, CopyError> {
    drop_all(target, origins, db).await?;
    for name in origins {
        let lit = quote_literal(name);
        let r = target
            .execute(&format!(
                "SELECT pg_catalog.pg_replication_origin_create({lit}); \
                 SELECT pg_catalog.pg_replication_origin_session_setup({lit}); \
                 SELECT pg_catalog.pg_replication_origin_session_reset()"
            ))
            .await;
        if let Err(e) = r {
            if e.retry() == crate::conn::Retry::Transient {
                return Err(CopyError::target(
                    db,
                    &format!("creating copy origin {name}"),
                    e,
                ));
            }
            tracing::warn!(
                db,
                origin = %name,
                "the copy cannot resume after a crash (it will start over): the target refuses a replication origin: {e}"
            );
            drop_all(target, origins, db).await?;
            return Ok(false);
        }
    }
    Ok(true)
}

/// Each existing origin's durable progress (the last sequence number that
/// committed with it), by worker index.
pub async fn progress(
    target: &mut Connection,
    origins: &[String],
    db: &str,
) -> Result<HashMap<usize, u64>, CopyError> {
    let mut out = HashMap::new();
    for (i, name) in origins.iter().enumerate() {
        let lit = quote_literal(name);
        let rows = target
            .simple_query(&format!(
                "SELECT pg_catalog.pg_replication_origin_progress(roname, true) \
                 FROM pg_catalog.pg_replication_origin WHERE roname = {lit}"
            ))
            .await
            .map_err(|e| CopyError::target(db, &format!("reading copy origin {name}"), e))?;
        let lsn = rows
            .first()
            .map(|r| r.opt_str(0))
            .transpose()
            .map_err(|e| CopyError::target(db, "reading copy origin progress", e))?
            .flatten()
            .map(|s| s.parse::<Lsn>())
            .transpose()
            .map_err(|e| CopyError::Unexpected {
                db: db.into(),
                message: format!("copy origin {name}: {e}"),
            })?;
        out.insert(i, lsn.map_or(0, |l| l.0));
    }
    Ok(out)
}

/// Drops the copy origins that exist (the copy is complete or abandoned).
pub async fn drop_all(
    target: &mut Connection,
    origins: &[String],
    db: &str,
) -> Result<(), CopyError> {
    for name in origins {
        let lit = quote_literal(name);
        target
            .execute(&format!(
                "SELECT pg_catalog.pg_replication_origin_drop(roname) FROM pg_catalog.pg_replication_origin WHERE roname = {lit}"
            ))
            .await
            .map_err(|e| CopyError::target(db, &format!("dropping copy origin {name}"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_stable_and_extend() {
        assert_eq!(super::names("pgm_1", 2), vec!["pgm_1_c0", "pgm_1_c1"]);
        assert_eq!(super::names("pgm_1", 3)[..2], super::names("pgm_1", 2)[..]);
    }
}
