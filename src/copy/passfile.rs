//! A temporary libpq password file for one pg_dump/pg_restore/psql child.
//!
//! `PGPASSWORD` in a child's environment is readable in
//! `/proc/<pid>/environ` by anyone who may inspect the process, and is
//! inherited by whatever the child starts. A mode-0600 file named by
//! `PGPASSFILE`, in the migration's 0700 directory and removed when the
//! child is done, exposes the password to nobody else.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes the files of concurrent children of one process.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A password file on disk; removed on drop.
#[derive(Debug)]
pub struct Passfile {
    path: PathBuf,
}

impl Passfile {
    /// Writes a file in `dir` whose one line matches any host, port,
    /// database and user: it is only ever handed to one child, for one
    /// connection. Fails for a password libpq's format cannot hold (a line
    /// break).
    pub fn create(dir: &Path, password: &str) -> io::Result<Passfile> {
        if password.contains(['\n', '\r']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the password contains a line break, which a libpq password file cannot hold",
            ));
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".pgpass.{}.{n}", std::process::id()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let passfile = Passfile { path };
        file.write_all(line(password).as_bytes())?;
        file.sync_all()?;
        Ok(passfile)
    }

    /// Where the file is, for `PGPASSFILE`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Passfile {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot remove a password file");
            }
        }
    }
}

/// `*:*:*:*:<password>` with `\` and `:` escaped, as libpq reads .pgpass.
fn line(password: &str) -> String {
    let mut out = String::from("*:*:*:*:");
    for c in password.chars() {
        if c == '\\' || c == ':' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn colons_and_backslashes_are_escaped() {
        assert_eq!(line("plain"), "*:*:*:*:plain\n");
        assert_eq!(line(r"a:b\c"), "*:*:*:*:a\\:b\\\\c\n");
        assert_eq!(line("::"), "*:*:*:*:\\:\\:\n");
    }

    #[test]
    fn file_is_0600_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let f = Passfile::create(dir.path(), "s3:cr\\et").unwrap();
        let path = f.path().to_owned();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "*:*:*:*:s3\\:cr\\\\et\n"
        );
        drop(f);
        assert!(!path.exists());
    }

    #[test]
    fn line_breaks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Passfile::create(dir.path(), "a\nb").is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
