//! The check `run` makes of `state_dir` before anything else: that it is a
//! directory this process can create files in. A state_dir that is not is a
//! configuration problem (exit 2, which systemd does not restart), not a
//! failed migration (exit 1, restarted every 10 s for ever).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// `state_dir` cannot hold the migration's state.
#[derive(Debug, Error)]
pub enum StateDirError {
    /// The directory does not exist and cannot be created.
    #[error("state_dir {} cannot be created: {error}; set state_dir to a writable directory", path.display())]
    Create {
        /// The configured state_dir.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The directory exists but a file cannot be written in it.
    #[error("state_dir {} is not writable: {error}; set state_dir to a writable directory", path.display())]
    NotWritable {
        /// The configured state_dir.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
}

/// Creates `state_dir` if needed and proves it writable by creating,
/// syncing and removing a probe file (permission bits alone say nothing for
/// root or on a read-only mount).
pub fn check_writable(state_dir: &Path) -> Result<(), StateDirError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(state_dir)
        .map_err(|error| StateDirError::Create {
            path: state_dir.to_owned(),
            error,
        })?;
    let probe = state_dir.join(format!(".pgmigrate-probe-{}", std::process::id()));
    let not_writable = |error| StateDirError::NotWritable {
        path: state_dir.to_owned(),
        error,
    };
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&probe)
        .and_then(|mut f| {
            f.write_all(b"probe\n")?;
            f.sync_all()
        });
    // Removed whether or not the write worked: a half-created probe must
    // not stay behind.
    let removed = fs::remove_file(&probe);
    written.map_err(not_writable)?;
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(not_writable(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_is_created_and_left_empty() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        check_writable(&dir).unwrap();
        assert!(dir.is_dir());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn a_path_under_a_file_is_refused_naming_it() {
        // /dev/null/x fails for root as well, where mode bits would not.
        let e = check_writable(Path::new("/dev/null/x")).unwrap_err();
        assert!(matches!(e, StateDirError::Create { .. }), "{e:?}");
        assert!(e.to_string().starts_with("state_dir /dev/null/x "), "{e}");
    }
}
