//! The Prometheus scrape endpoint: a deliberately small HTTP/1.1 server.
//!
//! It answers `GET /metrics` (and `HEAD`) with one response per connection
//! and then closes it, which every Prometheus version handles. Our own server
//! rather than the exporter's, because that one bounds nothing: an idle or
//! half-open client held its socket forever, and when the process ran out of
//! descriptors it logged the accept error in a tight loop. Here every
//! connection has a deadline to send its request and one to take the
//! response, at most [`HttpLimits::max_connections`] are served at once (the
//! rest get a 503 and are closed at once), and accept errors back off.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::accept::AcceptErrors;

/// Produces the body of a scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Bounds of the metrics listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time a connection has, from accept, to send its whole request head.
    /// Covers a client that sends nothing and one that stops halfway.
    pub read_timeout: Duration,
    /// Time a connection has to take the whole response.
    pub write_timeout: Duration,
    /// Largest request head read; a longer one is answered 431.
    pub max_request_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_connections: 64,
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_request_bytes: 8192,
        }
    }
}

/// Sent to a connection over [`HttpLimits::max_connections`], without
/// reading its request: a scraper retries at its next interval.
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Serves scrapes on `listener` until the future is dropped (or the
/// runtime ends); dropping it ends the connections in progress too.
pub async fn serve(listener: TcpListener, render: Render, limits: HttpLimits) {
    let what = match listener.local_addr() {
        Ok(addr) => format!("metrics listener {addr}"),
        Err(_) => "metrics listener".to_owned(),
    };
    let mut errors = AcceptErrors::new(what);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Owned here: when the server is dropped (the daemon exits), its
    // connections end with it instead of running on detached.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                errors.pause_after(&e).await;
                continue;
            }
        };
        errors.note_accepted();
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Best effort and never waiting: a fresh socket's send buffer
            // takes these few bytes, and a client that is gone loses nothing.
            let _ = stream.try_write(BUSY);
            continue;
        };
        let render = Arc::clone(&render);
        connections.spawn(async move {
            if let Err(e) = serve_one(stream, &render, limits).await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
            drop(slot);
        });
    }
}

/// Binds `listen` for [`serve`]; needs a tokio runtime.
pub fn bind(listen: SocketAddr) -> io::Result<TcpListener> {
    let std_listener = std::net::TcpListener::bind(listen)?;
    std_listener.set_nonblocking(true)?;
    TcpListener::from_std(std_listener)
}

/// Reads one request head within the read timeout, answers it within the
/// write timeout, and closes.
async fn serve_one(mut stream: TcpStream, render: &Render, limits: HttpLimits) -> io::Result<()> {
    let head = tokio::time::timeout(
        limits.read_timeout,
        read_head(&mut stream, limits.max_request_bytes),
    )
    .await;
    let response = match head {
        Err(_elapsed) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) => response(431, "Request Header Fields Too Large", "", false),
        Ok(Ok(Some(head))) => answer(&head, render),
    };
    tokio::time::timeout(limits.write_timeout, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await
    .unwrap_or(Ok(()))
}

/// The bytes up to and including the blank line ending the head; `None` when
/// no head ends within `max` bytes.
async fn read_head(stream: &mut TcpStream, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024.min(max));
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the end of the request head",
            ));
        }
        let scan_from = head.len().saturating_sub(3);
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(end) = find_blank_line(head.get(scan_from..).unwrap_or_default()) {
            head.truncate(scan_from + end);
            return Ok(Some(head));
        }
        if head.len() >= max {
            return Ok(None);
        }
    }
}

/// Offset just past the first `\r\n\r\n` (or bare `\n\n`) in `bytes`.
fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The response to a request head.
fn answer(head: &[u8], render: &Render) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let with_body = method != "HEAD";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => response(200, "OK", &render(), with_body),
        ("GET" | "HEAD", _) => response(404, "Not Found", "try /metrics\n", with_body),
        _ => response(405, "Method Not Allowed", "", false),
    }
}

/// A complete `Connection: close` response.
fn response(code: u16, reason: &str, body: &str, with_body: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render() -> Render {
        Arc::new(|| "pgmigrate_cutover_ready 1\n".to_owned())
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn metrics_path_is_served_and_others_are_not() {
        let ok = text(answer(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            &render(),
        ));
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 26\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\npgmigrate_cutover_ready 1\n"), "{ok}");
        let query = text(answer(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", &render()));
        assert!(query.starts_with("HTTP/1.1 200 "), "{query}");
        let head = text(answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", &render()));
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        assert!(text(answer(b"GET / HTTP/1.1\r\n\r\n", &render())).contains(" 404 "));
        assert!(text(answer(b"POST /metrics HTTP/1.1\r\n\r\n", &render())).contains(" 405 "));
        assert!(text(answer(b"\xff\xfe garbage", &render())).contains(" 405 "));
    }

    #[test]
    fn head_ends_at_the_first_blank_line() {
        assert_eq!(find_blank_line(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(find_blank_line(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(find_blank_line(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(find_blank_line(b""), None);
    }
}
