//! pg_dump runs against a password-protected server without the password in
//! its environment: libpq reads it from a 0600 PGPASSFILE that is gone once
//! pg_dump has exited (issue 11).

mod common;

use std::os::unix::fs::PermissionsExt;

use common::Cluster;
use pgmigrate::conn::{ConnectParams, Connection, Host, SslMode};
use pgmigrate::copy::pg_tools::PgTools;

/// A password libpq's .pgpass format must escape.
const PASSWORD: &str = r"p:w\rd:";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_reads_the_password_from_a_private_passfile_not_pgpassword() {
    let c = Cluster::builder()
        .hba_line("host all dumper 127.0.0.1/32 scram-sha-256")
        .start();
    c.psql(
        "postgres",
        &format!(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE dumper LOGIN SUPERUSER PASSWORD '{}';
             CREATE TABLE t (id int primary key);",
            PASSWORD.replace('\'', "''")
        ),
    );
    let work = common::tmp_dir();
    // pg_dump behind a wrapper that records what it was given.
    let real = common::newest_client_bin_dir();
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let seen = work.path().join("seen");
    let script = format!(
        "#!/bin/sh\n\
         if [ \"$1\" != --version ]; then\n\
           env > '{seen}.env'\n\
           stat -c %a \"$PGPASSFILE\" > '{seen}.mode'\n\
           echo \"$PGPASSFILE\" > '{seen}.path'\n\
         fi\n\
         exec '{real}/pg_dump' \"$@\"\n",
        seen = seen.display(),
        real = real.display()
    );
    let wrapper = bin.join("pg_dump");
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(real.join("pg_restore"), bin.join("pg_restore")).unwrap();
    let tools = PgTools::locate(Some(&bin)).await.unwrap();

    // A snapshot to dump from, held open by a trusted session.
    let mut trusted = ConnectParams::new(
        Host::Unix(c.socket_dir().to_owned()),
        c.port(),
        "postgres",
        "postgres",
    );
    trusted.sslmode = SslMode::Disable;
    let mut holder = Connection::connect(&trusted).await.unwrap();
    holder
        .simple_query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    let rows = holder
        .simple_query("SELECT pg_export_snapshot()")
        .await
        .unwrap();
    let snapshot = rows[0].str(0).unwrap().to_owned();

    let mut params = ConnectParams::new(
        Host::Tcp("127.0.0.1".into()),
        c.port(),
        "dumper",
        "postgres",
    );
    params.sslmode = SslMode::Disable;
    params.password = Some(PASSWORD.to_owned());
    let out = work.path().join("schema.dump");
    tools
        .dump_schema(&params, &snapshot, &out)
        .await
        .expect("pg_dump authenticates with the passfile's (escaped) password");
    assert!(out.exists());

    let env = std::fs::read_to_string(seen.with_extension("env")).unwrap();
    assert!(!env.contains("PGPASSWORD"), "{env}");
    assert!(
        !env.contains(PASSWORD),
        "the password is in pg_dump's environment"
    );
    assert_eq!(
        std::fs::read_to_string(seen.with_extension("mode"))
            .unwrap()
            .trim(),
        "600"
    );
    let passfile = std::fs::read_to_string(seen.with_extension("path")).unwrap();
    let passfile = std::path::Path::new(passfile.trim());
    assert!(passfile.starts_with(work.path()), "{}", passfile.display());
    assert!(!passfile.exists(), "passfile left behind");
}
