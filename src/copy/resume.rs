//! Resuming a copy whose rows are all on the target: the post-data entries
//! the earlier run did not finish (its log in the work directory says which
//! did), then sequences and large objects. The exported snapshot is gone,
//! so sequences and large objects are read as they are now; an online
//! migration's stream still starts at the slot's consistent point, and its
//! cutover syncs sequences again.

use std::collections::HashSet;
use std::sync::Arc;

use crate::conn::Connection;

use super::done_log::{read_done, DoneLog};
use super::entry_runner::SessionOptions;
use super::schema::SchemaArchive;
use super::{post_data, CopyError, CopySummary, DatabaseCopy, DONE_LOG};

impl DatabaseCopy<'_> {
    /// True when an earlier run left what [`DatabaseCopy::resume`] needs.
    pub fn can_resume(&self) -> bool {
        self.work_dir.join("schema.dump").is_file()
    }

    /// Finishes the copy an earlier run left after its data phase.
    pub async fn resume(&self) -> Result<CopySummary, CopyError> {
        let db = self.db;
        let mut archive = SchemaArchive::open(self.tools, self.work_dir, db, !self.keep_owners)
            .await?
            .ok_or_else(|| CopyError::Unexpected {
                db: db.into(),
                message: format!(
                    "cannot resume: the schema archive in {} is gone",
                    self.work_dir.display()
                ),
            })?;
        let log_path = self.work_dir.join(DONE_LOG);
        let done = read_done(&log_path, db)?;
        let mut source = self.open_copy_session(self.source, "source").await?;
        let (_, sequences, owners) = self.catalog_facts(&mut source, &mut archive).await?;
        let plan = archive
            .post_data_plan(
                self.target,
                &owners,
                &HashSet::new(),
                self.exclude_publication,
                db,
            )
            .await?
            .resume(&done);
        tracing::info!(
            db,
            done = done.len(),
            left = plan.after_tables.len(),
            "resuming post-data"
        );
        let options = SessionOptions {
            log: Some(Arc::new(DoneLog::open(&log_path, db)?)),
            resuming: true,
        };
        post_data::build_remaining(
            Arc::new(plan),
            self.target,
            self.options.index_jobs,
            options,
            db,
        )
        .await?;
        let mut target = Connection::connect(self.target)
            .await
            .map_err(|e| CopyError::target(db, "connecting for sequences", e))?;
        let summary = self.finish(&mut source, &mut target, &sequences, 0).await?;
        let _ = source.close().await;
        let _ = target.close().await;
        Ok(summary)
    }
}
