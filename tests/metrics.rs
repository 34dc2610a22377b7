//! The Prometheus exporter serves every metric name of DESIGN.md's
//! "Metrics" section, with help text, once the helpers of `src/metrics.rs`
//! have recorded a value.
//!
//! The exporter installs a process-wide recorder, which can happen once per
//! process: everything is checked in one test function.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgmigrate::listen::http::{self, HttpLimits};
use pgmigrate::metrics;
use pgmigrate::shutdown::Shutdown;

mod common;
use common::scrape::{free_port, sample, scrape};

/// Every metric name the contract promises.
const CONTRACT_METRICS: [&str; 10] = [
    "pgmigrate_replication_lag_bytes",
    "pgmigrate_replication_lag_seconds",
    "pgmigrate_source_retained_wal_bytes",
    "pgmigrate_copy_rows_total",
    "pgmigrate_copy_bytes_total",
    "pgmigrate_tables",
    "pgmigrate_apply_changes_total",
    "pgmigrate_apply_transactions_total",
    "pgmigrate_status",
    "pgmigrate_cutover_ready",
];

#[test]
fn exporter_serves_every_contract_metric() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The exporter's HTTP server becomes a task of this runtime, whose
    // worker thread serves the scrapes made from this (non-runtime) thread.
    let _guard = runtime.enter();
    let addr = free_port();
    let (stop, stopping) = Shutdown::new();
    let mut tasks = tokio::task::JoinSet::new();
    metrics::install(addr, &mut tasks, &stopping).expect("install the exporter");

    metrics::copy_rows("ticketdb", 1200);
    metrics::copy_bytes("ticketdb", 65536);
    metrics::set_tables("ticketdb", 3, 2, 7, 1);
    metrics::applied("ticketdb", 5, 4, 3);
    metrics::set_replication_lag("ticketdb", 4096, 1.5);
    metrics::set_source_retained_wal("ticketdb", 1 << 20);
    metrics::set_status("InProgress", "MigratingData");
    metrics::set_status("WaitingForUserAction", "WaitingForCutoverTrigger");
    metrics::set_cutover_ready(true);

    let body = scrape(addr);
    for name in CONTRACT_METRICS {
        assert!(
            body.lines().any(|l| l
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))),
            "no sample of {name} in:\n{body}"
        );
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "no help text for {name} in:\n{body}"
        );
    }

    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&body, series), Some(value), "{series} in:\n{body}");
    };
    expect(r#"pgmigrate_copy_rows_total{database="ticketdb"}"#, 1200.0);
    expect(
        r#"pgmigrate_copy_bytes_total{database="ticketdb"}"#,
        65536.0,
    );
    expect(
        r#"pgmigrate_tables{database="ticketdb",state="queued"}"#,
        3.0,
    );
    expect(
        r#"pgmigrate_tables{database="ticketdb",state="loading"}"#,
        2.0,
    );
    expect(
        r#"pgmigrate_tables{database="ticketdb",state="completed"}"#,
        7.0,
    );
    expect(
        r#"pgmigrate_tables{database="ticketdb",state="errored"}"#,
        1.0,
    );
    expect(
        r#"pgmigrate_apply_changes_total{database="ticketdb",op="insert"}"#,
        5.0,
    );
    expect(
        r#"pgmigrate_apply_changes_total{database="ticketdb",op="update"}"#,
        4.0,
    );
    expect(
        r#"pgmigrate_apply_changes_total{database="ticketdb",op="delete"}"#,
        3.0,
    );
    expect(
        r#"pgmigrate_apply_transactions_total{database="ticketdb"}"#,
        1.0,
    );
    expect(
        r#"pgmigrate_replication_lag_bytes{database="ticketdb"}"#,
        4096.0,
    );
    expect(
        r#"pgmigrate_replication_lag_seconds{database="ticketdb"}"#,
        1.5,
    );
    expect(
        r#"pgmigrate_source_retained_wal_bytes{database="ticketdb"}"#,
        1048576.0,
    );
    // The status moved on: the earlier pair reads 0, only the current one 1.
    expect(
        r#"pgmigrate_status{status="InProgress",substatus="MigratingData"}"#,
        0.0,
    );
    expect(
        r#"pgmigrate_status{status="WaitingForUserAction",substatus="WaitingForCutoverTrigger"}"#,
        1.0,
    );
    expect("pgmigrate_cutover_ready", 1.0);

    // A second exporter in the same process is refused with the address named.
    let err =
        metrics::install(free_port(), &mut tasks, &stopping).expect_err("second install must fail");
    assert!(err.to_string().contains("127.0.0.1:"), "{err}");
    // The exporter's tasks end when the daemon stops, and are joined.
    stop.trigger();
    runtime.block_on(async {
        while let Some(joined) = tasks.join_next().await {
            joined.expect("metrics task");
        }
    });
}

/// A metrics server of our own limits on an ephemeral port, with a fixed body.
fn serve_test(runtime: &tokio::runtime::Runtime, limits: HttpLimits) -> SocketAddr {
    let _guard = runtime.enter();
    let listener = http::bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let addr = listener.local_addr().unwrap();
    runtime.spawn(http::serve(
        listener,
        Arc::new(|| "pgmigrate_cutover_ready 0\n".to_owned()),
        limits,
    ));
    addr
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Reads until EOF; `Err` when the server keeps the connection open longer
/// than `limit`.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> std::io::Result<String> {
    stream.set_read_timeout(Some(limit))?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn idle_and_half_open_connections_are_closed_and_the_excess_refused() {
    let runtime = runtime();
    let addr = serve_test(
        &runtime,
        HttpLimits {
            max_connections: 8,
            read_timeout: Duration::from_secs(1),
            ..HttpLimits::default()
        },
    );
    let started = Instant::now();
    // Eight hold every slot: four send nothing, four stop halfway.
    let mut held: Vec<TcpStream> = (0..8)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            if i % 2 == 1 {
                s.write_all(b"GET /metr").unwrap();
            }
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // The ninth is told at once that the server is busy.
    let mut extra = TcpStream::connect(addr).unwrap();
    let busy = read_until_closed(&mut extra, Duration::from_secs(1)).expect("closed at once");
    assert!(busy.starts_with("HTTP/1.1 503 "), "{busy:?}");
    for s in &mut held {
        let got = read_until_closed(s, Duration::from_secs(5)).expect("closed after the timeout");
        assert_eq!(got, "", "a timed-out request gets no response");
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(4), "closed after {elapsed:?}");
    // And the slots are free again.
    assert!(scrape(addr).contains("pgmigrate_cutover_ready 0"));
}

/// Env var that makes `emfile_child` serve instead of returning at once.
const EMFILE_CHILD: &str = "PGMIGRATE_TEST_EMFILE_CHILD";

/// Child half of the next test: serves metrics under a tiny open-files
/// limit, printing its port, for a few seconds.
#[test]
fn emfile_child() {
    if std::env::var_os(EMFILE_CHILD).is_none() {
        return;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let runtime = runtime();
    let addr = serve_test(&runtime, HttpLimits::default());
    println!("PORT {}", addr.port());
    std::thread::sleep(Duration::from_secs(6));
}

#[test]
fn out_of_descriptors_the_listener_backs_off_logs_rarely_and_recovers() {
    use std::io::BufRead;
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=32:32")
        .arg(&exe)
        .args(["--exact", "emfile_child", "--nocapture", "--test-threads=1"])
        .env(EMFILE_CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux)");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let port: u16 = stdout
        .by_ref()
        .lines()
        .map_while(Result::ok)
        // libtest prints "test emfile_child ... " before it on the same line.
        .find_map(|l| {
            let rest = l.split("PORT ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .expect("child port");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // Far more idle connections than the child has descriptors: the kernel
    // completes them (backlog) while the child's accept fails with EMFILE.
    let idle: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    drop(idle);
    // Once the idle ones are gone (or timed out), scrapes work again.
    assert!(scrape(addr).contains("pgmigrate_cutover_ready"));
    // Kept open to the end: the child's last words must not hit EPIPE.
    std::io::copy(&mut stdout, &mut std::io::sink()).unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let failures = log.lines().filter(|l| l.contains("cannot accept")).count();
    eprintln!("child log:\n{log}");
    assert!(failures >= 1, "EMFILE never reached:\n{log}");
    assert!(failures <= 3, "{failures} accept-error lines:\n{log}");
}
