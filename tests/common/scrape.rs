//! Scraping the daemon's Prometheus endpoint over plain HTTP/1.0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A local address nothing listens on (bound and released).
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address")
}

/// `GET /metrics` over HTTP/1.0, so the server closes the connection and the
/// body ends at EOF.
pub fn scrape(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_scrape(addr) {
            Ok(body) => return body,
            Err(e) if Instant::now() < deadline => {
                eprintln!("scrape {addr}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("scrape {addr}: {e}"),
        }
    }
}

fn try_scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no end of headers in {response:?}"),
        )
    })?;
    assert!(head.starts_with("HTTP/1."), "not an HTTP response: {head}");
    assert!(head.contains(" 200 "), "scrape failed: {head}");
    Ok(body.to_owned())
}

/// The value of the sample line that starts with `series` (name and labels
/// exactly as rendered).
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter_map(|line| line.strip_prefix(series))
        .find_map(|rest| rest.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}
