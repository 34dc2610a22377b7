//! Raising the soft limit of open files to the hard limit at startup.
//!
//! systemd's default soft limit is 1024 (the hard one 524288), and the unit's
//! `LimitNOFILE=` may not be honoured when `run` is started by hand. A daemon
//! holding many COPY and apply connections, spill files and listener
//! sessions should not hit EMFILE at 1024 when the system allows more.

use std::io;

/// The soft and hard `RLIMIT_NOFILE` before and after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimits {
    /// The soft limit found.
    pub before: u64,
    /// The soft limit now in force.
    pub after: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Sets the soft `RLIMIT_NOFILE` to the hard limit. Never lowers it.
pub fn raise_nofile() -> io::Result<NofileLimits> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a pointer to a live,
    // properly aligned local; it keeps no reference to it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads the `rlimit` behind a pointer to a
        // live local for the duration of the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(NofileLimits {
        before,
        after: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_reaches_the_hard_one() {
        let limits = raise_nofile().unwrap();
        assert_eq!(limits.after, limits.hard);
        assert!(limits.after >= limits.before);
        // Idempotent: a second call finds it already raised.
        assert_eq!(raise_nofile().unwrap().before, limits.hard);
    }
}
