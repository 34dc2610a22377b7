//! The running daemon's listeners under the abuse of issue 11: many idle
//! and half-open metrics connections, silent console sockets and idle
//! console sessions. Metrics answer again once the idle ones time out, and
//! `pgmigrate cutover --wait` still gets through and succeeds.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{show, start, wait_exit};
use common::{pgmigrate_bin, tmp_dir, write_config, Cluster};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One `GET /metrics`; the status line and body.
fn get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A console session that completed its startup and then sits idle.
fn idle_console_session(socket: &std::path::Path) -> UnixStream {
    let mut s = UnixStream::connect(socket).unwrap();
    let mut body = 196_608u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0idle\0database\0pgmigrate\0\0");
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    s.write_all(&packet).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 1024];
    while !seen.ends_with(b"Z\0\0\0\x05I") {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "console closed during startup");
        seen.extend_from_slice(&chunk[..n]);
    }
    s
}

#[test]
fn idle_clients_do_not_lock_out_metrics_or_cutover() {
    let src = Cluster::start_default();
    let dst = Cluster::start_default();
    src.create_db("shop");
    src.psql(
        "shop",
        "CREATE TABLE orders (id bigserial PRIMARY KEY, item text); \
         INSERT INTO orders (item) SELECT 'o' || g FROM generate_series(1, 1000) g;",
    );
    let state = tmp_dir();
    let port = free_port();
    let name = "listeners";
    let cfg = write_config(
        state.path(),
        name,
        &src,
        &dst,
        &["shop"],
        &format!("option = \"migrate\"\nmetrics_listen = \"127.0.0.1:{port}\"\n"),
    );
    let log = state.path().join("run.log");
    let mut child = start(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    while show(state.path(), name)["status"] != "WaitingForUserAction" {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "never ready: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    // 100 metrics connections that send nothing or stop halfway.
    let mut idle_metrics = Vec::new();
    for i in 0..100 {
        let mut s = TcpStream::connect(addr).unwrap();
        if i % 2 == 0 {
            let _ = s.write_all(b"GET /met");
        }
        idle_metrics.push(s);
    }
    // Silent console sockets and idle console sessions filling every slot.
    let socket = state.path().join(name).join(".s.PGSQL.6543");
    let silent: Vec<UnixStream> = (0..30)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    let sessions: Vec<UnixStream> = (0..16).map(|_| idle_console_session(&socket)).collect();

    // The idle metrics connections are closed after the 10 s read timeout.
    let started = Instant::now();
    let body = loop {
        match get(addr) {
            Ok(r) if r.starts_with("HTTP/1.1 200 ") => break r,
            _ => {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "/metrics never answered 200 again"
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    };
    eprintln!("/metrics answered 200 again after {:?}", started.elapsed());
    assert!(
        body.contains("pgmigrate_source_retained_wal_bytes{database=\"shop\"}"),
        "{body}"
    );
    for mut s in idle_metrics {
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = Vec::new();
        // EOF, or a reset when the server closed with the request unread
        // (the 503s); a timeout would mean it is still open.
        if let Err(e) = s.read_to_end(&mut buf) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset,
                "still open: {e}"
            );
        }
    }
    let doc = show(state.path(), name);
    assert!(
        doc["databases"][0]["source_retained_wal_bytes"].is_u64(),
        "{doc}"
    );

    // Cutover through the console while the idle sessions still hold it.
    let out = Command::new(pgmigrate_bin())
        .args(["cutover", name, "--wait", "--timeout", "60", "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{status}");
    assert_eq!(show(state.path(), name)["status"], "Succeeded");
    drop((silent, sessions));
}
