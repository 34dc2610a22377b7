//! `<state_dir>/<name>/state.json` and the lock that makes one process its
//! only writer.
//!
//! A write is atomic and durable: the document goes to a temporary file in the
//! same directory, which is fsynced, renamed over state.json, and the
//! directory fsynced — so a crash leaves either the old or the new file,
//! never a torn one. Writes are serialized in-process by a mutex and across
//! processes by an flock on `<dir>/lock`, which also tells `run` that another
//! daemon already drives this migration.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use thiserror::Error;

use super::state::MigrationState;
use crate::config::MigrationName;

/// File name of the state document inside the migration's directory.
pub const STATE_FILE: &str = "state.json";
/// File name of the lock inside the migration's directory.
pub const LOCK_FILE: &str = "lock";
/// Temporary files are `.state.json.<pid>.tmp`.
const TEMP_PREFIX: &str = ".state.json.";
const TEMP_SUFFIX: &str = ".tmp";

/// Why the state could not be read, written or locked. Each names the path.
#[derive(Debug, Error)]
pub enum StateError {
    /// The migration's directory could not be created.
    #[error("cannot create state directory {}: {error}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// A directory or file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// What was being read.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// state.json is not a state document.
    #[error("{} is not a valid state file: {error}", path.display())]
    Parse {
        /// The state file.
        path: PathBuf,
        /// Where and why JSON parsing failed.
        error: serde_json::Error,
    },
    /// state.json holds another migration's state.
    #[error("{} belongs to migration \"{found}\", not \"{expected}\"", path.display())]
    NameMismatch {
        /// The state file.
        path: PathBuf,
        /// The name inside the file.
        found: String,
        /// The name asked for.
        expected: String,
    },
    /// state.json could not be written.
    #[error("cannot write {}: {error}", path.display())]
    Write {
        /// The state file.
        path: PathBuf,
        /// The OS (or serialization) error.
        error: io::Error,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}: {error}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// Another process holds the migration's lock.
    #[error("migration {name} is already running ({})", pid_text(*pid))]
    AlreadyRunning {
        /// The migration.
        name: String,
        /// The holder's pid, when its lock file says.
        pid: Option<u32>,
    },
    /// The status machine refused a change; nothing of it was written.
    #[error(transparent)]
    Transition(#[from] super::status::InvalidTransition),
    /// A direct write while the state writer owns the file.
    #[error("state of migration {name} is written by its state writer only")]
    WriterRunning {
        /// The migration.
        name: String,
    },
    /// A write was attempted without holding the lock.
    #[error("state of migration {name} is not locked by this process; lock() it before writing")]
    NotLocked {
        /// The migration.
        name: String,
    },
}

fn pid_text(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_owned(),
    }
}

/// How durable a write must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A fact a restart needs (status, resume data): the file and its
    /// directory entry are fsynced before the write returns.
    Durable,
    /// Only counters changed: the file is fsynced (never torn), but a crash
    /// may bring back the previous one, which only shows older counters.
    Progress,
}

/// A daemon found holding a migration's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningDaemon {
    /// Its pid, when the lock file says.
    pub pid: Option<u32>,
}

/// The one writer of a migration's state.json.
#[derive(Debug)]
pub struct StateStore {
    name: MigrationName,
    dir: PathBuf,
    path: PathBuf,
    existed: bool,
    state: Mutex<MigrationState>,
    /// Held across serialize + file write so files land in update order,
    /// while `state` is held only briefly and `snapshot` never waits on I/O.
    writing: Mutex<()>,
    /// The flocked lock file; the lock lasts as long as this descriptor.
    lock: OnceLock<File>,
    /// A [`StateWriter`](super::writer::StateWriter) owns the writes:
    /// [`update`](Self::update) is refused, so it stays the only writer.
    writer: AtomicBool,
    /// Files written, for tests and measurements of coalescing.
    writes: AtomicU64,
}

impl StateStore {
    /// Opens the store of migration `name` under `state_dir`, creating
    /// `<state_dir>/<name>/` (mode 0700) and loading state.json if it exists.
    /// Without a file the state is a default one named `name`; nothing is
    /// written until the first [`update`](Self::update).
    pub fn open(state_dir: &Path, name: &MigrationName) -> Result<StateStore, StateError> {
        let dir = state_dir.join(name.as_str());
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|error| StateError::CreateDir {
                path: dir.clone(),
                error,
            })?;
        let path = dir.join(STATE_FILE);
        let loaded = load(&path)?;
        let existed = loaded.is_some();
        let mut state = loaded.unwrap_or_default();
        if state.name.is_empty() {
            state.name = name.as_str().to_owned();
        } else if state.name != name.as_str() {
            return Err(StateError::NameMismatch {
                path,
                found: state.name,
                expected: name.as_str().to_owned(),
            });
        }
        Ok(StateStore {
            name: name.clone(),
            dir,
            path,
            existed,
            state: Mutex::new(state),
            writing: Mutex::new(()),
            lock: OnceLock::new(),
            writer: AtomicBool::new(false),
            writes: AtomicU64::new(0),
        })
    }

    /// Reads migration `name`'s state without locking; `None` when it has
    /// none. For `show`/`list`, which must work while a daemon runs.
    pub fn read(
        state_dir: &Path,
        name: &MigrationName,
    ) -> Result<Option<MigrationState>, StateError> {
        load(&state_dir.join(name.as_str()).join(STATE_FILE))
    }

    /// Whether a daemon holds migration `name`'s lock. The probe holds a
    /// shared lock for an instant, during which a starting daemon would be
    /// refused; callers are operators' commands, so that window is harmless.
    pub fn running(
        state_dir: &Path,
        name: &MigrationName,
    ) -> Result<Option<RunningDaemon>, StateError> {
        let path = state_dir.join(name.as_str()).join(LOCK_FILE);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(StateError::Lock { path, error }),
        };
        match try_flock(&file, libc::LOCK_SH) {
            Ok(true) => Ok(None),
            Ok(false) => Ok(Some(RunningDaemon {
                pid: read_pid(&mut file),
            })),
            Err(error) => Err(StateError::Lock { path, error }),
        }
    }

    /// Takes the migration's exclusive lock for the life of this store and
    /// records this process's pid in the lock file. Fails with
    /// [`StateError::AlreadyRunning`] when another process holds it. Also
    /// removes temporary files a crashed writer left behind.
    pub fn lock(&self) -> Result<(), StateError> {
        if self.lock.get().is_some() {
            return Ok(());
        }
        let path = self.dir.join(LOCK_FILE);
        let lock_err = |error| StateError::Lock {
            path: path.clone(),
            error,
        };
        // Not truncated on open: a holder's pid must survive our failed attempt.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(lock_err)?;
        if !try_flock(&file, libc::LOCK_EX).map_err(lock_err)? {
            return Err(StateError::AlreadyRunning {
                name: self.name.to_string(),
                pid: read_pid(&mut file),
            });
        }
        file.set_len(0).map_err(lock_err)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(lock_err)?;
        self.remove_stale_temp_files();
        // A concurrent lock() of this same store cannot get here too: its
        // flock on a second descriptor fails while ours is held.
        let _ = self.lock.set(file);
        Ok(())
    }

    /// Whether this store holds the lock.
    pub fn is_locked(&self) -> bool {
        self.lock.get().is_some()
    }

    /// Applies `change` to the state and writes it atomically and durably;
    /// returns what `change` returns. Requires [`lock`](Self::lock). If the
    /// write fails the change stays in memory and reaches disk with the next
    /// update. For commands without a daemon (`cancel`); a running daemon
    /// writes only through its [`StateWriter`](super::writer::StateWriter).
    pub fn update<R>(
        &self,
        change: impl FnOnce(&mut MigrationState) -> R,
    ) -> Result<R, StateError> {
        self.check_locked()?;
        if self.writer.load(Ordering::Acquire) {
            return Err(StateError::WriterRunning {
                name: self.name.to_string(),
            });
        }
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let (result, bytes) = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let result = change(&mut state);
            (result, self.serialize(&state)?)
        };
        self.write_atomically(&bytes, Durability::Durable)?;
        Ok(result)
    }

    /// Hands the writes to a writer thread; false if one has them already.
    pub(super) fn claim_writer(&self) -> bool {
        !self.writer.swap(true, Ordering::AcqRel)
    }

    /// Makes `state` the current one and writes `bytes`, its
    /// serialization; the writer thread's primitive.
    pub(super) fn commit(
        &self,
        state: &MigrationState,
        bytes: &[u8],
        durability: Durability,
    ) -> Result<(), StateError> {
        self.check_locked()?;
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state.clone();
        self.write_atomically(bytes, durability)
    }

    /// The document as it would be written now.
    pub(super) fn serialize(&self, state: &MigrationState) -> Result<Vec<u8>, StateError> {
        let mut bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Write {
            path: self.path.clone(),
            error: io::Error::other(e),
        })?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    fn check_locked(&self) -> Result<(), StateError> {
        if self.is_locked() {
            Ok(())
        } else {
            Err(StateError::NotLocked {
                name: self.name.to_string(),
            })
        }
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> MigrationState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times this store has written state.json.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// The migration's name.
    pub fn name(&self) -> &MigrationName {
        &self.name
    }

    /// `<state_dir>/<name>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<state_dir>/<name>/state.json`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether state.json existed when the store was opened (a resume).
    pub fn existed(&self) -> bool {
        self.existed
    }

    fn write_atomically(&self, bytes: &[u8], durability: Durability) -> Result<(), StateError> {
        let temp = self
            .dir
            .join(format!("{TEMP_PREFIX}{}{TEMP_SUFFIX}", std::process::id()));
        self.writes.fetch_add(1, Ordering::Relaxed);
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&temp, &self.path)?;
            match durability {
                // The rename is durable only once the directory entry is.
                Durability::Durable => File::open(&self.dir)?.sync_all(),
                Durability::Progress => Ok(()),
            }
        })();
        written.map_err(|error| {
            // Best effort: after a successful rename the temp is already gone.
            let _ = fs::remove_file(&temp);
            StateError::Write {
                path: self.path.clone(),
                error,
            }
        })
    }

    fn remove_stale_temp_files(&self) {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list state directory");
                return;
            }
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) {
                if let Err(e) = fs::remove_file(entry.path()) {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove stale temporary state file");
                }
            }
        }
    }
}

pub(super) fn load(path: &Path) -> Result<Option<MigrationState>, StateError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                error,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|error| StateError::Parse {
            path: path.to_owned(),
            error,
        })
}

/// Non-blocking flock; `Ok(false)` when another descriptor holds a
/// conflicting lock.
fn try_flock(file: &File, operation: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: flock takes a descriptor number and flags and touches no
        // memory of ours; the descriptor is owned by `file`, open for the
        // whole call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(error),
        }
    }
}

/// The pid a lock holder wrote; `None` if unreadable (it may be mid-write).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::status::{Status, Substatus};

    fn name() -> MigrationName {
        MigrationName::new("orders-2026").unwrap()
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn open_creates_private_dir_and_default_state() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::open(root.path(), &name()).unwrap();
        assert_eq!(store.dir(), root.path().join("orders-2026"));
        assert_eq!(store.path(), root.path().join("orders-2026/state.json"));
        let mode = fs::metadata(store.dir()).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
        assert!(!store.existed());
        assert_eq!(store.snapshot().name, "orders-2026");
        assert!(!store.path().exists());
        assert!(StateStore::read(root.path(), &name()).unwrap().is_none());
    }

    #[test]
    fn update_writes_and_reopen_loads() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::open(root.path(), &name()).unwrap();
        assert!(matches!(
            store.update(|_| ()),
            Err(StateError::NotLocked { .. })
        ));
        store.lock().unwrap();
        let returned = store
            .update(|s| {
                s.force_pair(
                    Status::WaitingForUserAction,
                    Substatus::WaitingForCutoverTrigger,
                );
                s.message = Some("ready".into());
                7
            })
            .unwrap();
        assert_eq!(returned, 7);
        let on_disk = StateStore::read(root.path(), &name()).unwrap().unwrap();
        assert_eq!(on_disk, store.snapshot());
        assert_eq!(on_disk.status(), Status::WaitingForUserAction);
        drop(store);

        let again = StateStore::open(root.path(), &name()).unwrap();
        assert!(again.existed());
        assert_eq!(again.snapshot(), on_disk);
    }

    #[test]
    fn atomic_write_leaves_no_temp_files() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::open(root.path(), &name()).unwrap();
        store.lock().unwrap();
        for i in 0..20 {
            store.update(|s| s.pid = Some(i)).unwrap();
        }
        assert_eq!(dir_names(store.dir()), ["lock", "state.json"]);
        assert_eq!(
            StateStore::read(root.path(), &name()).unwrap().unwrap().pid,
            Some(19)
        );
    }

    #[test]
    fn stale_temp_files_are_removed_on_lock() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::open(root.path(), &name()).unwrap();
        fs::write(store.dir().join(".state.json.999.tmp"), "{").unwrap();
        store.lock().unwrap();
        assert_eq!(dir_names(store.dir()), ["lock"]);
    }

    #[test]
    fn write_failure_names_the_file() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::open(root.path(), &name()).unwrap();
        store.lock().unwrap();
        // A directory where state.json should be makes the rename fail.
        fs::create_dir(store.path()).unwrap();
        let e = store.update(|s| s.pid = Some(1)).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot write") && e.contains("state.json"),
            "{e}"
        );
        assert_eq!(dir_names(store.dir()), ["lock", "state.json"]);
    }

    #[test]
    fn lock_conflict_is_detected_with_pid() {
        let root = tempfile::tempdir().unwrap();
        let first = StateStore::open(root.path(), &name()).unwrap();
        assert_eq!(StateStore::running(root.path(), &name()).unwrap(), None);
        first.lock().unwrap();
        first.lock().unwrap();

        let second = StateStore::open(root.path(), &name()).unwrap();
        let e = second.lock().unwrap_err();
        let me = std::process::id();
        assert_eq!(
            e.to_string(),
            format!("migration orders-2026 is already running (pid {me})")
        );
        assert_eq!(
            StateStore::running(root.path(), &name()).unwrap(),
            Some(RunningDaemon { pid: Some(me) })
        );

        drop(first);
        assert_eq!(StateStore::running(root.path(), &name()).unwrap(), None);
        second.lock().unwrap();
    }

    #[test]
    fn corrupt_or_foreign_state_is_an_error_naming_the_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("orders-2026");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("state.json"), "{\"name\": 3").unwrap();
        let e = StateStore::open(root.path(), &name())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("state.json") && e.contains("not a valid state file"),
            "{e}"
        );
        fs::write(dir.join("state.json"), "{\"name\": \"other\"}").unwrap();
        let e = StateStore::open(root.path(), &name())
            .unwrap_err()
            .to_string();
        assert!(e.contains("belongs to migration \"other\""), "{e}");
    }
}
