//! The wire client against real servers: every authentication method, TLS
//! modes, COPY both ways, pipelines and typed errors.

mod common;

use common::Cluster;
use pgmigrate::conn::{ConnError, ConnectParams, Connection, Host, Param, SslMode};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn tcp(c: &Cluster, user: &str, password: Option<&str>, sslmode: SslMode) -> ConnectParams {
    let mut p = ConnectParams::new(Host::Tcp("127.0.0.1".into()), c.port(), user, "postgres");
    p.password = password.map(str::to_string);
    p.sslmode = sslmode;
    p
}

fn auth_cluster() -> Cluster {
    let c = Cluster::builder()
        .hba_line("host all pw_user 127.0.0.1/32 password")
        .hba_line("host all md5_user 127.0.0.1/32 md5")
        .hba_line("host all scram_user 127.0.0.1/32 scram-sha-256")
        .start();
    c.psql(
        "postgres",
        "SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD 'md5 secret'; \
         CREATE ROLE pw_user LOGIN PASSWORD 'plain secret'; \
         SET password_encryption = 'scram-sha-256'; CREATE ROLE scram_user LOGIN PASSWORD 'scram sëcret';",
    );
    c
}

#[test]
fn every_auth_method_logs_in_and_a_wrong_password_says_so() {
    let c = auth_cluster();
    rt().block_on(async {
        for (user, pw) in [
            ("pw_user", "plain secret"),
            ("md5_user", "md5 secret"),
            ("scram_user", "scram sëcret"),
        ] {
            let mut conn = Connection::connect(&tcp(&c, user, Some(pw), SslMode::Disable))
                .await
                .unwrap_or_else(|e| panic!("{user}: {e}"));
            let rows = conn
                .simple_query("SELECT current_user")
                .await
                .expect("query");
            assert_eq!(rows[0].str(0).expect("text"), user);
        }
        // trust over the socket
        let sock = ConnectParams::new(
            Host::Unix(c.socket_dir().to_path_buf()),
            c.port(),
            "postgres",
            "postgres",
        );
        Connection::connect(&sock).await.expect("trust");

        for user in ["pw_user", "md5_user", "scram_user"] {
            let err = Connection::connect(&tcp(&c, user, Some("wrong"), SslMode::Disable))
                .await
                .err()
                .expect("wrong password must fail");
            assert_eq!(err.code(), Some("28P01"), "{user}: {err}");
            assert!(
                err.to_string().contains("password authentication failed"),
                "{err}"
            );
        }
        let err = Connection::connect(&tcp(&c, "scram_user", None, SslMode::Disable))
            .await
            .err()
            .expect("missing password must fail");
        assert!(matches!(err, ConnError::Auth { .. }), "{err}");
        assert!(err.to_string().contains("password_env"), "{err}");
    });
}

#[test]
fn tls_modes_verify_what_they_promise() {
    let tls = Cluster::builder().tls(true).start();
    let plain = Cluster::start_default();
    let ca = tls.tls_ca_path().expect("ca").to_path_buf();
    rt().block_on(async {
        let mut p = tcp(&tls, "postgres", None, SslMode::VerifyFull);
        p.host = Host::Tcp("localhost".into());
        p.sslrootcert = Some(ca.clone());
        let mut conn = Connection::connect(&p)
            .await
            .expect("verify-full with the right name");
        let rows = conn
            .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .await
            .expect("query");
        assert_eq!(rows[0].str(0).expect("bool"), "t");

        // A name the certificate does not carry, at the right address.
        p.host = Host::Tcp("wrong.example".into());
        p.hostaddr = Some("127.0.0.1".parse().expect("ip"));
        let err = Connection::connect(&p)
            .await
            .err()
            .expect("verify-full must reject the name");
        assert!(matches!(err, ConnError::Tls { .. }), "{err}");
        assert!(err.to_string().to_lowercase().contains("name"), "{err}");
        // verify-ca checks the chain only.
        p.sslmode = SslMode::VerifyCa;
        Connection::connect(&p)
            .await
            .expect("verify-ca ignores the name");

        // require against a server without TLS fails clearly; prefer falls back.
        let err = Connection::connect(&tcp(&plain, "postgres", None, SslMode::Require))
            .await
            .err()
            .expect("require without server TLS must fail");
        assert!(err.to_string().contains("does not accept TLS"), "{err}");
        Connection::connect(&tcp(&plain, "postgres", None, SslMode::Prefer))
            .await
            .expect("prefer falls back to plaintext");
        // require encrypts without a CA.
        Connection::connect(&tcp(&tls, "postgres", None, SslMode::Require))
            .await
            .expect("require with server TLS");
    });
}

#[test]
fn copy_pipeline_errors_and_cancel() {
    let c = Cluster::start_default();
    rt().block_on(async {
        let sock = ConnectParams::new(Host::Unix(c.socket_dir().to_path_buf()), c.port(), "postgres", "postgres");
        let mut a = Connection::connect(&sock).await.expect("connect");
        let mut b = Connection::connect(&sock).await.expect("connect");
        a.execute("CREATE TABLE src AS SELECT g AS id, repeat('x', g % 100) AS t FROM generate_series(1, 20000) g; CREATE TABLE dst (id int, t text)")
            .await
            .expect("setup");

        // COPY out of one session into another, frames passed through.
        let mut out = a.copy_out("COPY src TO STDOUT (FORMAT binary)").await.expect("copy out");
        let mut inp = b.copy_in("COPY dst FROM STDIN (FORMAT binary)").await.expect("copy in");
        while let Some(frames) = out.next_frames().await.expect("frames") {
            inp.send_frames(&frames).await.expect("send");
        }
        assert_eq!(out.rows(), Some(20000));
        assert_eq!(inp.finish().await.expect("finish"), 20000);
        let rows = b
            .simple_query("SELECT count(*), sum(length(t)) FROM dst")
            .await
            .expect("count");
        let rows_src = a.simple_query("SELECT count(*), sum(length(t)) FROM src").await.expect("count");
        assert_eq!(rows[0].str(1).ok(), rows_src[0].str(1).ok());

        // Typed errors keep SQLSTATE and leave the session usable.
        let err = a.execute("SELECT * FROM no_such_table").await.expect_err("error");
        assert_eq!(err.code(), Some("42P01"));
        assert_eq!(a.simple_query("SELECT 1").await.expect("still usable").len(), 1);

        // A pipeline of prepared executions with one Sync.
        let stmt = a.prepare("ins", "INSERT INTO dst VALUES ($1, $2)", &[]).await.expect("prepare");
        let mut p = a.pipeline();
        for i in 0..1000 {
            let id = i.to_string();
            p.execute(&stmt, &[Param::Text(&id), Param::Null]).expect("queue");
        }
        let counts = p.finish().await.expect("pipeline");
        assert_eq!(counts.len(), 1000);
        assert!(counts.iter().all(|&n| n == 1));
        let mut p = a.pipeline();
        p.execute(&stmt, &[Param::Text("not a number"), Param::Null]).expect("queue");
        let err = p.finish().await.expect_err("bad value");
        assert_eq!(err.code(), Some("22P02"));
        assert_eq!(a.simple_query("SELECT 1").await.expect("usable after a failed pipeline").len(), 1);

        // CancelRequest stops a running query.
        let token = a.cancel_token();
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            token.cancel().await
        });
        let err = a.execute("SELECT pg_sleep(30)").await.expect_err("canceled");
        assert_eq!(err.code(), Some("57014"));
        canceller.await.expect("join").expect("cancel sent");
    });
}

#[test]
fn unreachable_and_garbage_servers_fail_cleanly() {
    rt().block_on(async {
        // Nothing listens on port 1.
        let p = ConnectParams::new(Host::Tcp("127.0.0.1".into()), 1, "postgres", "postgres");
        let err = Connection::connect(&p).await.err().expect("refused");
        assert!(matches!(err, ConnError::Connect { .. }), "{err}");

        // A server that answers with garbage.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"R\xff\xff\xff\xffgarbage").await;
            }
        });
        let mut p = ConnectParams::new(Host::Tcp("127.0.0.1".into()), port, "postgres", "postgres");
        p.sslmode = SslMode::Disable;
        let err = Connection::connect(&p).await.err().expect("garbage");
        assert!(matches!(err, ConnError::Protocol(_)), "{err}");

        // A server that accepts and never answers: bounded by the timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let _keep = tokio::spawn(async move {
            let conn = listener.accept().await;
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            drop(conn);
        });
        let mut p = ConnectParams::new(Host::Tcp("127.0.0.1".into()), port, "postgres", "postgres");
        p.sslmode = SslMode::Disable;
        p.connect_timeout = std::time::Duration::from_secs(1);
        let err = Connection::connect(&p).await.err().expect("timeout");
        assert!(matches!(err, ConnError::Timeout { .. }), "{err}");
    });
}
