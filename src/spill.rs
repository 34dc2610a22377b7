//! Transactions bigger than the memory budget are spilled to a file under
//! the state directory and read back through memmap2 a window at a time,
//! so the daemon's memory stays flat whatever a transaction's size.
//!
//! The file is a sequence of records: a 4-byte big-endian length, then
//! that many bytes (one pgoutput message as received).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

/// Bytes mapped at a time when reading a spill back.
const WINDOW: u64 = 64 * 1024 * 1024;

/// Errors of the spill file.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// The file could not be written or read.
    #[error("spill file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold what was written (truncated or corrupted).
    #[error("spill file {path} is corrupt at offset {offset}")]
    Corrupt {
        /// The file.
        path: String,
        /// Where.
        offset: u64,
    },
}

/// A spill file being written.
pub struct SpillWriter {
    path: PathBuf,
    out: BufWriter<File>,
    len: u64,
    records: u64,
}

impl SpillWriter {
    /// Creates (truncating) the spill file at `path`.
    pub fn create(path: &Path) -> Result<SpillWriter, SpillError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        Ok(SpillWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            len: 0,
            records: 0,
        })
    }

    /// Appends one record.
    pub fn push(&mut self, record: &[u8]) -> Result<(), SpillError> {
        let len = u32::try_from(record.len())
            .map_err(|_| io(&self.path, std::io::Error::other("record over 4 GB")))?;
        self.out
            .write_all(&len.to_be_bytes())
            .map_err(|e| io(&self.path, e))?;
        self.out.write_all(record).map_err(|e| io(&self.path, e))?;
        self.len += 4 + u64::from(len);
        self.records += 1;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True before the first record.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Finishes writing and opens the file for reading.
    pub fn into_reader(self) -> Result<SpillReader, SpillError> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| io(&self.path, e.into_error()))?;
        Ok(SpillReader {
            path: self.path,
            file,
            len: self.len,
            offset: 0,
            window: None,
        })
    }
}

/// Reads a spill file's records back as `Bytes` slices of mapped windows.
pub struct SpillReader {
    path: PathBuf,
    file: File,
    len: u64,
    offset: u64,
    /// The mapped window: its start offset and the mapping.
    window: Option<(u64, Bytes)>,
}

impl SpillReader {
    fn map(&mut self, start: u64, min_len: u64) -> Result<(), SpillError> {
        let page = 4096;
        let aligned = start - start % page;
        let size = (start - aligned + min_len)
            .max(WINDOW)
            .min(self.len - aligned);
        // SAFETY: the file is private to this process (created by
        // SpillWriter under the state directory and never written again
        // once reading starts), so the mapping cannot change underneath
        // the slices handed out.
        let map: Mmap = unsafe {
            MmapOptions::new()
                .offset(aligned)
                .len(usize::try_from(size).map_err(|_| self.corrupt(start))?)
                .map(&self.file)
        }
        .map_err(|e| io(&self.path, e))?;
        self.window = Some((aligned, Bytes::from_owner(map)));
        Ok(())
    }

    fn corrupt(&self, offset: u64) -> SpillError {
        SpillError::Corrupt {
            path: self.path.display().to_string(),
            offset,
        }
    }

    fn slice(&mut self, start: u64, len: u64) -> Result<Bytes, SpillError> {
        let covered = |w: &Option<(u64, Bytes)>| match w {
            Some((base, b)) => start >= *base && start + len <= base + b.len() as u64,
            None => false,
        };
        if !covered(&self.window) {
            self.map(start, len)?;
        }
        match &self.window {
            Some((base, b)) => {
                let from = usize::try_from(start - base).map_err(|_| self.corrupt(start))?;
                let to = from + usize::try_from(len).map_err(|_| self.corrupt(start))?;
                if to > b.len() {
                    return Err(self.corrupt(start));
                }
                Ok(b.slice(from..to))
            }
            None => Err(self.corrupt(start)),
        }
    }

    /// The next record, or `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<Bytes>, SpillError> {
        if self.offset >= self.len {
            // Drop the mapping as soon as the last record is handed out.
            self.window = None;
            return Ok(None);
        }
        if self.offset + 4 > self.len {
            return Err(self.corrupt(self.offset));
        }
        let header = self.slice(self.offset, 4)?;
        let len = u64::from(u32::from_be_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        if self.offset + 4 + len > self.len {
            return Err(self.corrupt(self.offset));
        }
        let record = self.slice(self.offset + 4, len)?;
        self.offset += 4 + len;
        Ok(Some(record))
    }

    /// Removes the file (open mappings stay valid until dropped).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn io(path: &Path, source: std::io::Error) -> SpillError {
    SpillError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_across_windows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spill");
        let mut w = SpillWriter::create(&path).expect("create");
        let big = vec![7u8; (WINDOW + 10) as usize];
        let records: Vec<Vec<u8>> = vec![b"a".to_vec(), vec![], big, b"tail".to_vec()];
        for r in &records {
            w.push(r).expect("push");
        }
        let mut r = w.into_reader().expect("reader");
        for expected in &records {
            let got = r.next_record().expect("read").expect("record");
            assert_eq!(&got[..], &expected[..]);
        }
        assert!(r.next_record().expect("end").is_none());
        r.remove();
        assert!(!path.exists());
    }

    #[test]
    fn truncated_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spill");
        let mut w = SpillWriter::create(&path).expect("create");
        w.push(b"hello").expect("push");
        let mut r = w.into_reader().expect("reader");
        r.len = 6; // pretend the file ends inside the record
        assert!(r.next_record().is_err());
    }
}
