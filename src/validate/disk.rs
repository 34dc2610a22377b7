//! The target's free disk, when the target runs on this machine: its data
//! directory is found here and proven to be that server's by its
//! `postmaster.pid` (same port, same start time). Anywhere else it cannot
//! be measured over SQL, and the check says so.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Seconds the start time in `postmaster.pid` may differ from
/// `pg_postmaster_start_time()`: the two are taken a moment apart.
const START_TIME_SLACK_SECS: i64 = 2;

/// Free bytes on the file system of `data_directory`, if it is the data
/// directory of the server listening on `port` that started at
/// `started_epoch`; `None` when that cannot be established.
pub fn local_free_bytes(data_directory: &str, port: u16, started_epoch: i64) -> Option<u64> {
    let dir = Path::new(data_directory);
    let pid_file = std::fs::read_to_string(dir.join("postmaster.pid")).ok()?;
    if !postmaster_matches(&pid_file, port, started_epoch) {
        return None;
    }
    free_bytes(dir)
}

/// `postmaster.pid`: line 3 is the start time (epoch), line 4 the port.
fn postmaster_matches(pid_file: &str, port: u16, started_epoch: i64) -> bool {
    let mut lines = pid_file.lines();
    let started = lines.nth(2).and_then(|l| l.trim().parse::<i64>().ok());
    let file_port = lines.next().and_then(|l| l.trim().parse::<u16>().ok());
    matches!((started, file_port), (Some(s), Some(p))
        if p == port && (s - started_epoch).abs() <= START_TIME_SLACK_SECS)
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a valid NUL-terminated string that outlives the
    // call, and `st` points to writable memory of the struct's size; the
    // struct is read only when statvfs reports success (it then filled it).
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialized the struct.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    let (blocks, size) = (st.f_bavail as u64, st.f_frsize as u64);
    Some(blocks.saturating_mul(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_must_name_the_same_server() {
        let file = "4242\n/var/lib/pg/data\n1700000000\n5432\n/tmp\n*\n  1 2\nready\n";
        assert!(postmaster_matches(file, 5432, 1_700_000_001));
        assert!(!postmaster_matches(file, 5433, 1_700_000_000));
        assert!(!postmaster_matches(file, 5432, 1_700_000_100));
        assert!(!postmaster_matches("garbage", 5432, 0));
        assert!(!postmaster_matches("", 5432, 0));
    }

    #[test]
    fn free_space_of_a_real_directory() {
        assert!(free_bytes(Path::new("/")).is_some());
        assert!(free_bytes(Path::new("/no/such/dir")).is_none());
    }
}
