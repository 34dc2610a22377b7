//! The post-data entries already run on the target, one dump ID a line in
//! the work directory, so a failed or interrupted migration resumes at the
//! first entry not done instead of starting the copy over.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::CopyError;

/// Appends finished entries; shared by every post-data session.
pub struct DoneLog {
    path: PathBuf,
    /// The database, for the errors of every later write.
    db: String,
    file: Mutex<std::fs::File>,
}

impl DoneLog {
    /// Opens (creating) the log at `path` for appending.
    pub fn open(path: &Path, db: &str) -> Result<DoneLog, CopyError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| CopyError::io(db, path, e))?;
        Ok(DoneLog {
            path: path.to_path_buf(),
            db: db.to_string(),
            file: Mutex::new(file),
        })
    }

    /// Records that the entries with these dump IDs committed.
    pub fn record(&self, ids: &[u32]) -> Result<(), CopyError> {
        let db = self.db.as_str();
        let mut text = String::new();
        for id in ids {
            text.push_str(&id.to_string());
            text.push('\n');
        }
        let mut f = self.file.lock().map_err(|_| CopyError::Unexpected {
            db: db.to_string(),
            message: "post-data log lock poisoned".into(),
        })?;
        // One write per batch: a process killed mid-way leaves whole lines.
        f.write_all(text.as_bytes())
            .map_err(|e| CopyError::io(db, &self.path, e))
    }
}

/// The dump IDs recorded at `path` (none when it does not exist). A torn
/// last line is ignored.
pub fn read_done(path: &Path, db: &str) -> Result<HashSet<u32>, CopyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(e) => Err(CopyError::io(db, path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("done");
        assert!(read_done(&path, "db").expect("read").is_empty());
        let log = DoneLog::open(&path, "db").expect("open");
        log.record(&[3, 5]).expect("record");
        log.record(&[7]).expect("record");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"1x"))
            .expect("torn line");
        let done = read_done(&path, "db").expect("read");
        assert_eq!(done, [3, 5, 7].into_iter().collect());
    }
}
