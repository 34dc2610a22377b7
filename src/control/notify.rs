//! sd_notify: tells systemd (`Type=notify`) when the daemon is ready, what it
//! is doing, and when it is stopping.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the unix socket named
//! by `$NOTIFY_SOCKET`, so a few lines of std replace a crate. Notification is
//! advisory: outside systemd the variable is unset and every call is a no-op,
//! and a failed send is logged at debug level and never stops the migration.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use thiserror::Error;

/// Environment variable systemd sets to the socket it listens on.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// A notification that could not be delivered.
#[derive(Debug, Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is empty or `@` alone.
    #[error("NOTIFY_SOCKET {socket:?} names no socket")]
    Empty {
        /// The value of `NOTIFY_SOCKET`.
        socket: OsString,
    },
    /// Creating the socket or sending the datagram failed.
    #[error("cannot send {message:?} to NOTIFY_SOCKET {socket:?}: {error}")]
    Send {
        /// The value of `NOTIFY_SOCKET`.
        socket: OsString,
        /// The notification, which never carries a secret.
        message: String,
        /// The OS error.
        error: std::io::Error,
    },
}

/// Tells systemd that startup is done (`READY=1`), with a status line.
pub fn ready(status: &str) {
    notify(&format!("READY=1\n{}", status_line(status)));
}

/// Updates the one-line status `systemctl status` shows.
pub fn status(status: &str) {
    notify(&status_line(status));
}

/// Tells systemd a graceful stop has begun (`STOPPING=1`).
pub fn stopping() {
    notify("STOPPING=1");
}

/// Sends `message` to the socket in `$NOTIFY_SOCKET`, if set; failures are
/// logged at debug level only.
fn notify(message: &str) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET_ENV) else {
        return;
    };
    if let Err(e) = notify_to(&socket, message) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// Sends one notification datagram to `socket`, written as in
/// `$NOTIFY_SOCKET`: a filesystem path, or an abstract name after `@`.
pub fn notify_to(socket: &OsStr, message: &str) -> Result<(), NotifyError> {
    let bytes = socket.as_bytes();
    let send_error = |error| NotifyError::Send {
        socket: socket.to_owned(),
        message: message.to_owned(),
        error,
    };
    if bytes.is_empty() || bytes == b"@" {
        return Err(NotifyError::Empty {
            socket: socket.to_owned(),
        });
    }
    let sender = UnixDatagram::unbound().map_err(send_error)?;
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            abstract_addr(name).and_then(|addr| sender.send_to_addr(message.as_bytes(), &addr))
        }
        None => sender.send_to(message.as_bytes(), Path::new(socket)),
    }
    .map(drop)
    .map_err(send_error)
}

/// The address of the abstract socket `name` (Linux's sockets without a
/// file, which a containerized systemd may hand out).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> std::io::Result<std::os::unix::net::SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> std::io::Result<std::os::unix::net::SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

/// `STATUS=` takes one line: a newline would start a new (bogus) assignment.
fn status_line(status: &str) -> String {
    let flat: String = status
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("STATUS={flat}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1\nSTATUS=streaming").unwrap();
        assert_eq!(receive(&listener), "READY=1\nSTATUS=streaming");
        notify_to(path.as_os_str(), "STOPPING=1").unwrap();
        assert_eq!(receive(&listener), "STOPPING=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("pgmigrate-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        assert_eq!(receive(&listener), "WATCHDOG=1");
    }

    #[test]
    fn missing_socket_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.sock");
        let err = notify_to(path.as_os_str(), "READY=1").unwrap_err();
        assert!(matches!(err, NotifyError::Send { .. }), "{err:?}");
        assert!(err.to_string().contains("absent.sock"), "{err}");
        let err = notify_to(OsStr::new("@"), "READY=1").unwrap_err();
        assert!(matches!(err, NotifyError::Empty { .. }), "{err:?}");
        let err = notify_to(OsStr::new(""), "READY=1").unwrap_err();
        assert!(matches!(err, NotifyError::Empty { .. }), "{err:?}");
    }

    #[test]
    fn status_is_kept_on_one_line() {
        assert_eq!(status_line("a\nb\r\nc"), "STATUS=a b  c");
        assert_eq!(status_line("MigratingData"), "STATUS=MigratingData");
    }
}
