//! A file of lines in the work directory that is only ever appended to,
//! by many sessions at once: the copy journal and the post-data log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::CopyError;

/// An append-only file that knows its database, so its writes name it in
/// errors without being told.
pub(super) struct AppendFile {
    path: PathBuf,
    db: String,
    /// What the file is, for the poisoned-lock error (`copy journal`).
    what: &'static str,
    file: Mutex<std::fs::File>,
}

impl AppendFile {
    /// Opens (creating) `path` for appending.
    pub(super) fn open(path: &Path, db: &str, what: &'static str) -> Result<AppendFile, CopyError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| CopyError::io(db, path, e))?;
        Ok(AppendFile {
            path: path.to_path_buf(),
            db: db.to_string(),
            what,
            file: Mutex::new(file),
        })
    }

    /// The database the file belongs to.
    pub(super) fn db(&self) -> &str {
        &self.db
    }

    /// Appends `text` in one write (a process killed mid-way leaves whole
    /// lines and at most a torn last one); with `durable`, fsynced too.
    pub(super) fn append(&self, text: &str, durable: bool) -> Result<(), CopyError> {
        let f = self.file.lock().map_err(|_| CopyError::Unexpected {
            db: self.db.clone(),
            message: format!("{} lock poisoned", self.what),
        })?;
        let mut f: &std::fs::File = &f;
        f.write_all(text.as_bytes())
            .and_then(|()| if durable { f.sync_data() } else { Ok(()) })
            .map_err(|e| CopyError::io(&self.db, &self.path, e))
    }
}
