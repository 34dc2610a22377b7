//! The post-data entries already run on the target, one dump ID a line in
//! the work directory, so a failed or interrupted migration resumes at the
//! first entry not done instead of starting the copy over.

use std::collections::HashSet;
use std::path::Path;

use super::append_file::AppendFile;
use super::CopyError;

/// Appends finished entries; shared by every post-data session.
pub struct DoneLog {
    file: AppendFile,
}

impl DoneLog {
    /// Opens (creating) the log at `path` for appending.
    pub fn open(path: &Path, db: &str) -> Result<DoneLog, CopyError> {
        Ok(DoneLog {
            file: AppendFile::open(path, db, "post-data log")?,
        })
    }

    /// Records that the entries with these dump IDs committed.
    pub fn record(&self, ids: &[u32]) -> Result<(), CopyError> {
        let mut text = String::new();
        for id in ids {
            text.push_str(&id.to_string());
            text.push('\n');
        }
        // One write per batch, not fsynced: an entry whose record a crash
        // loses is run again, and in a resumed run "already exists" is done.
        self.file.append(&text, false)
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
    use std::io::Write;

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
