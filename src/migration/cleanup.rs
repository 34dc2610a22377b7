//! Cancel: removing what a migration created, with or without its daemon.

use super::prerequisites::{connect_maintenance, INVALID_CATALOG_NAME};
use super::replication_objects::{drop_origins, drop_source_objects, forget, has_source_objects};
use super::step_error::StepError;
use crate::config::ConfigError;
use crate::config::{self, Config};
use crate::conn::Connection;
use crate::control::state::{CutoverStep, DatabaseState};
use crate::control::status::{Phase, Stage, Status};
use crate::control::store::{StateError, StateStore};
use crate::copy::target_db;

/// Removes what a migration created for one database: slot and
/// publication on the source, origins on the target, and with
/// `drop_target` the target database if the migration created it.
pub async fn clean_up_database(
    config: &Config,
    state: &DatabaseState,
    drop_target: bool,
) -> Result<(), StepError> {
    let db = state.name.as_str();
    let r = &state.resume;
    // After cutover the target database is the migrated one: kept.
    let drop_target = drop_target && r.cutover != CutoverStep::Done;
    if let Some(rev) = r.reverse.as_ref().filter(|rev| !rev.ended) {
        super::reverse::drop_reverse_objects(config, db, rev).await?;
    }
    if has_source_objects(r) {
        let params = config.source.connect_params(db);
        match Connection::connect(&params).await {
            Ok(mut source) => drop_source_objects(&mut source, db, r).await?,
            // The database itself is gone: so are its slot and publication.
            Err(e) if e.code() == Some(INVALID_CATALOG_NAME) => {}
            Err(e) => return Err(StepError::source(db, "connecting to clean up", e)),
        }
    }
    // The apply workers' origins and those of a copy that did not finish.
    let origins: Vec<String> = r
        .origin_names
        .iter()
        .chain(&r.copy_origin_names)
        .cloned()
        .collect();
    let target_dropped = drop_target && r.target_database_created;
    if !origins.is_empty() && !target_dropped {
        match Connection::connect(&config.target.connect_params(db)).await {
            Ok(mut target) => drop_origins(&mut target, db, &origins).await?,
            Err(e) if e.code() == Some(INVALID_CATALOG_NAME) => {}
            Err(e) => return Err(StepError::target(db, "connecting to clean up", e)),
        }
    }
    if drop_target && r.target_database_created {
        let mut maint = connect_maintenance(&config.target)
            .await
            .map_err(|e| StepError::target(db, "connecting to drop the database", e))?;
        target_db::drop(&mut maint, db)
            .await
            .map_err(StepError::from)?;
        // Origins are cluster-wide: drop them even with the database gone.
        drop_origins(&mut maint, db, &origins).await?;
    }
    Ok(())
}

/// Cancels a migration whose daemon is not running: removes slot,
/// publication and origins (and with `drop_target` the target databases),
/// then records `Canceled`. Uses the config file of the last run.
pub async fn cancel_offline(
    state_dir: &std::path::Path,
    name: &config::MigrationName,
    drop_target: bool,
) -> Result<(), CancelError> {
    let store = StateStore::open(state_dir, name)?;
    if !store.existed() {
        return Err(CancelError::NotCancelable(format!(
            "no migration named {name}"
        )));
    }
    store.lock()?;
    let state = store.snapshot();
    if matches!(state.status(), Status::Succeeded | Status::Canceled) {
        return Err(CancelError::NotCancelable(format!(
            "migration {name} is {}",
            state.status()
        )));
    }
    let path = state.config_path.clone().ok_or_else(|| {
        CancelError::NotCancelable("state.json does not name its config file".into())
    })?;
    let config = Config::from_file(std::path::Path::new(&path)).map_err(CancelError::Config)?;
    // The only writer here: no daemon holds the lock.
    store.update(|s| s.transition(Stage::CleaningUp))??;
    for d in &state.databases {
        clean_up_database(&config, d, drop_target).await?;
    }
    store.update(|s| {
        for d in &mut s.databases {
            forget(&mut d.resume);
            d.phase = Phase::Canceled;
        }
        s.transition(Stage::Canceled)
    })??;
    Ok(())
}

/// Why `cancel` without a daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// The migration is finished or unknown.
    #[error("{0}")]
    NotCancelable(String),
    /// The config file of the last run cannot be read.
    #[error(transparent)]
    Config(ConfigError),
    /// state.json failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The migration's status does not allow a cancel.
    #[error(transparent)]
    Transition(#[from] crate::control::status::InvalidTransition),
    /// Dropping something failed.
    #[error(transparent)]
    Step(#[from] StepError),
}
