//! The one writer of a running daemon's state.json.
//!
//! A dedicated thread owns the working copy of the document. Phases send it
//! changes (status transitions checked by the status machine, resume facts,
//! validation results); the live counters, phase and message of each
//! database come from [`MigrationProgress`], which the thread folds into
//! every write. So nothing else writes the file, nothing has to "put back"
//! what another writer overwrote, and no fsync runs on the async reactor.
//!
//! Changes are written at once and durably (file and directory fsynced)
//! before their sender is told, so a fact a restart needs is on disk before
//! the action it guards proceeds; changes queued meanwhile share that write.
//! Counters alone are written at most once per interval, and only when the
//! document changed, so a copy of thousands of tables costs about one write
//! a second, not one per table.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::progress::MigrationProgress;
use super::state::{MigrationState, ResumeState};
use super::status::Stage;
use super::store::{Durability, StateError, StateStore};

/// A change of the document; an error leaves the document as it was.
type Change = Box<dyn FnOnce(&mut MigrationState) -> Result<(), StateError> + Send>;

/// Told once the change is durable (or why it is not).
type Done = oneshot::Sender<Result<(), StateError>>;

enum Command {
    Change { change: Change, done: Option<Done> },
    Finish,
}

/// The writer thread of one daemon; [`finish`](Self::finish) it at the end
/// for the last write. Dropping it without finishing still ends the thread
/// with a last write once every [`StateHandle`] is gone.
#[derive(Debug)]
pub struct StateWriter {
    handle: StateHandle,
    thread: Option<JoinHandle<Result<(), StateError>>>,
}

/// What phases hold to send changes to the writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct StateHandle {
    tx: mpsc::Sender<Command>,
    store: Arc<StateStore>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Change { .. } => f.write_str("Change"),
            Command::Finish => f.write_str("Finish"),
        }
    }
}

impl StateWriter {
    /// Starts the writer of `store` (which must be locked), folding
    /// `progress` in every write and writing counters every `interval`.
    pub fn start(
        store: Arc<StateStore>,
        progress: Arc<MigrationProgress>,
        interval: Duration,
    ) -> Result<StateWriter, StateError> {
        if !store.claim_writer() {
            return Err(StateError::WriterRunning {
                name: store.name().to_string(),
            });
        }
        let (tx, rx) = mpsc::channel();
        let thread_store = Arc::clone(&store);
        let path = store.path().to_owned();
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || run(&thread_store, &progress, interval, &rx))
            .map_err(|error| StateError::Write { path, error })?;
        Ok(StateWriter {
            handle: StateHandle { tx, store },
            thread: Some(thread),
        })
    }

    /// A handle for sending changes.
    pub fn handle(&self) -> StateHandle {
        self.handle.clone()
    }

    /// Writes the last document (counters included) and waits for the
    /// thread to end; its error is the last write's.
    pub async fn finish(mut self) -> Result<(), StateError> {
        let _ = self.handle.tx.send(Command::Finish);
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let path = self.handle.store.path().to_owned();
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        match joined {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(StateError::Write {
                path,
                error: std::io::Error::other("the state writer thread panicked"),
            }),
        }
    }
}

impl StateHandle {
    /// Applies `change` and returns once it is durable. An error from
    /// `change` (e.g. a refused transition) discards it whole.
    pub async fn change(
        &self,
        change: impl FnOnce(&mut MigrationState) -> Result<(), StateError> + Send + 'static,
    ) -> Result<(), StateError> {
        let (done, wait) = oneshot::channel();
        self.send(Box::new(change), Some(done))?;
        wait.await.unwrap_or_else(|_| Err(self.gone()))
    }

    /// Moves the status machine to `to`, durably; refused moves are errors.
    pub async fn transition(&self, to: Stage) -> Result<(), StateError> {
        self.change(move |s| Ok(s.transition(to)?)).await
    }

    /// Records a resume fact of database `db` and returns once it is durable.
    pub async fn record(
        &self,
        db: &str,
        update: impl FnOnce(&mut ResumeState) + Send + 'static,
    ) -> Result<(), StateError> {
        let db = db.to_owned();
        self.change(move |s| {
            if let Some(d) = s.database_mut(&db) {
                update(&mut d.resume);
            }
            Ok(())
        })
        .await
    }

    /// Like [`record`](Self::record) for callers that cannot wait (a
    /// synchronous callback): written at once, but the caller goes on
    /// without knowing it is durable — only for facts that a restart can
    /// do without (it then repeats work).
    pub fn record_soon(
        &self,
        db: &str,
        update: impl FnOnce(&mut ResumeState) + Send + 'static,
    ) -> Result<(), StateError> {
        let db = db.to_owned();
        let change: Change = Box::new(move |s| {
            if let Some(d) = s.database_mut(&db) {
                update(&mut d.resume);
            }
            Ok(())
        });
        self.send(change, None)
    }

    /// The document as last written (without counters not yet folded in).
    pub fn snapshot(&self) -> MigrationState {
        self.store.snapshot()
    }

    /// The store written to.
    pub fn store(&self) -> &Arc<StateStore> {
        &self.store
    }

    fn send(&self, change: Change, done: Option<Done>) -> Result<(), StateError> {
        self.tx
            .send(Command::Change { change, done })
            .map_err(|_| self.gone())
    }

    fn gone(&self) -> StateError {
        StateError::Write {
            path: self.store.path().to_owned(),
            error: std::io::Error::other("the state writer has stopped"),
        }
    }
}

/// The writer thread: changes at once, counters every `interval`.
fn run(
    store: &StateStore,
    progress: &MigrationProgress,
    interval: Duration,
    rx: &mpsc::Receiver<Command>,
) -> Result<(), StateError> {
    let mut state = store.snapshot();
    let mut last_written: Vec<u8> = Vec::new();
    let mut next_tick = Instant::now() + interval;
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        let first = match rx.recv_timeout(wait) {
            Ok(Command::Finish) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(Command::Change { change, done }) => (change, done),
            Err(RecvTimeoutError::Timeout) => {
                next_tick = Instant::now() + interval;
                if let Err(e) = write_progress(store, progress, &mut state, &mut last_written) {
                    tracing::warn!(error = %e, "cannot write migration progress; retrying at the next interval");
                }
                continue;
            }
        };
        // Everything queued meanwhile shares one durable write.
        let mut waiting = Vec::new();
        let mut finish = false;
        let mut next = Some(first);
        while let Some((change, done)) = next.take() {
            let mut changed = state.clone();
            match change(&mut changed) {
                Ok(()) => {
                    state = changed;
                    waiting.extend(done);
                }
                Err(e) => {
                    if let Some(done) = done {
                        let _ = done.send(Err(e));
                    }
                }
            }
            match rx.try_recv() {
                Ok(Command::Change { change, done }) => next = Some((change, done)),
                Ok(Command::Finish) => finish = true,
                Err(_) => {}
            }
        }
        let written = write_durably(store, progress, &mut state, &mut last_written);
        for done in waiting {
            let _ = done.send(match &written {
                Ok(()) => Ok(()),
                Err(e) => Err(copy_of(store, e)),
            });
        }
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot write the migration state");
        }
        if finish {
            break;
        }
    }
    write_durably(store, progress, &mut state, &mut last_written)
}

fn write_durably(
    store: &StateStore,
    progress: &MigrationProgress,
    state: &mut MigrationState,
    last_written: &mut Vec<u8>,
) -> Result<(), StateError> {
    progress.apply_to(state);
    let bytes = store.serialize(state)?;
    store.commit(state, &bytes, Durability::Durable)?;
    *last_written = bytes;
    Ok(())
}

fn write_progress(
    store: &StateStore,
    progress: &MigrationProgress,
    state: &mut MigrationState,
    last_written: &mut Vec<u8>,
) -> Result<(), StateError> {
    progress.apply_to(state);
    let bytes = store.serialize(state)?;
    if bytes == *last_written {
        return Ok(());
    }
    store.commit(state, &bytes, Durability::Progress)?;
    *last_written = bytes;
    Ok(())
}

/// One write error for each waiter (`io::Error` is not `Clone`).
fn copy_of(store: &StateStore, e: &StateError) -> StateError {
    StateError::Write {
        path: store.path().to_owned(),
        error: std::io::Error::other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MigrationName, Mode};
    use std::sync::atomic::Ordering;

    fn setup(
        interval: Duration,
    ) -> (
        tempfile::TempDir,
        MigrationName,
        StateWriter,
        Arc<MigrationProgress>,
    ) {
        let root = tempfile::tempdir().unwrap();
        let name = MigrationName::new("m").unwrap();
        let store = Arc::new(StateStore::open(root.path(), &name).unwrap());
        store.lock().unwrap();
        store
            .update(|s| *s = MigrationState::new(&name, Mode::Online, &["d".into()]))
            .unwrap();
        let progress = Arc::new(MigrationProgress::new(&["d".into()]));
        let writer = StateWriter::start(store, Arc::clone(&progress), interval).unwrap();
        (root, name, writer, progress)
    }

    fn on_disk(root: &tempfile::TempDir, name: &MigrationName) -> MigrationState {
        StateStore::read(root.path(), name).unwrap().unwrap()
    }

    #[tokio::test]
    async fn changes_are_on_disk_when_acknowledged() {
        let (root, name, writer, _progress) = setup(Duration::from_secs(3600));
        let h = writer.handle();
        h.transition(Stage::MigratingData).await.unwrap();
        h.record("d", |r| r.copy_completed = true).await.unwrap();
        let s = on_disk(&root, &name);
        assert_eq!(s.stage(), Ok(Stage::MigratingData));
        assert!(s.database("d").unwrap().resume.copy_completed);
        assert_eq!(h.snapshot(), s);
        // Nothing else writes while the writer runs.
        let e = h.store().update(|s| s.pid = Some(1)).unwrap_err();
        assert!(matches!(e, StateError::WriterRunning { .. }), "{e}");
        writer.finish().await.unwrap();
    }

    #[tokio::test]
    async fn refused_transitions_are_errors_and_not_written() {
        let (root, name, writer, _progress) = setup(Duration::from_secs(3600));
        let h = writer.handle();
        h.transition(Stage::MigratingData).await.unwrap();
        let e = h.transition(Stage::Canceled).await.unwrap_err();
        assert!(matches!(e, StateError::Transition(_)), "{e}");
        // A change failing halfway leaves nothing of it behind.
        let e = h
            .change(|s| {
                s.message = Some("half".into());
                Ok(s.transition(Stage::ValidationFailed)?)
            })
            .await
            .unwrap_err();
        assert!(matches!(e, StateError::Transition(_)), "{e}");
        writer.finish().await.unwrap();
        let s = on_disk(&root, &name);
        assert_eq!(s.stage(), Ok(Stage::MigratingData));
        assert_eq!(s.message, None);
    }

    #[tokio::test]
    async fn counters_are_coalesced_and_written_only_when_changed() {
        let (root, name, writer, progress) = setup(Duration::from_millis(50));
        let path = root.path().join("m").join("state.json");
        let modified = || std::fs::metadata(&path).unwrap().modified().unwrap();
        let store = Arc::clone(writer.handle().store());
        let before_writes = store.writes();
        // A thousand tables done between two ticks: one write, not a thousand.
        for _ in 0..1000 {
            progress.dbs[0]
                .full_load_completed_tables
                .fetch_add(1, Ordering::Relaxed);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while on_disk(&root, &name).databases[0].full_load_completed_tables != 1000 {
            assert!(Instant::now() < deadline, "no periodic write");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            store.writes() - before_writes <= 2,
            "{} writes for 1000 counter bumps",
            store.writes() - before_writes
        );
        let before = modified();
        // Nothing changed: the ticks must not rewrite the file.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(modified(), before, "an unchanged document was rewritten");
        // The value set just before the end reaches the file.
        progress.dbs[0].rows_copied.store(77, Ordering::Relaxed);
        writer.finish().await.unwrap();
        assert_eq!(on_disk(&root, &name).databases[0].rows_copied, 77);
    }

    #[tokio::test]
    async fn a_burst_of_changes_shares_writes() {
        let (root, name, writer, _progress) = setup(Duration::from_secs(3600));
        let h = writer.handle();
        let mut waits = Vec::new();
        for i in 0..200u32 {
            let h = h.clone();
            waits.push(tokio::spawn(async move {
                h.change(move |s| {
                    s.pid = Some(i);
                    Ok(())
                })
                .await
            }));
        }
        for w in waits {
            w.await.unwrap().unwrap();
        }
        let store = Arc::clone(h.store());
        writer.finish().await.unwrap();
        assert!(on_disk(&root, &name).pid.is_some());
        // Each acknowledged change is durable, yet queued ones share writes
        // (one for setup, one at the end, at most one per change between).
        assert!(store.writes() <= 202, "{} writes", store.writes());
    }
}
