//! A throwaway certificate authority and server certificate, made with the
//! openssl command line so the tests need no certificate crate.
//!
//! The server certificate names `localhost` (CN and DNS SAN) and `127.0.0.1`
//! (IP SAN), so clients can use `sslmode=verify-full` with either name.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::run::check;

/// Files of one test PKI.
pub struct TestPki {
    /// The CA certificate clients trust (`sslrootcert`).
    pub ca_cert: PathBuf,
    /// The server certificate (`ssl_cert_file`).
    pub server_cert: PathBuf,
    /// The server's private key (`ssl_key_file`), mode 0600.
    pub server_key: PathBuf,
}

const SERVER_EXTENSIONS: &str = "\
subjectAltName = DNS:localhost, IP:127.0.0.1
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
";

/// Creates a CA and a server certificate signed by it in `dir`.
pub fn make_pki(dir: &Path) -> TestPki {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let p = |name: &str| dir.join(name);
    let ext = p("server.ext");
    std::fs::write(&ext, SERVER_EXTENSIONS)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", ext.display()));

    // P-256 keys: fast to make, and every client we test (libpq, rustls) takes them.
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = Command::new("openssl");
    ca.args(["req", "-x509", "-new", "-nodes"])
        .args(ec)
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt"))
        .args(["-days", "3650", "-subj", "/CN=pgmigrate test CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    run(ca, "make the test CA");

    let mut csr = Command::new("openssl");
    csr.args(["req", "-new", "-nodes"])
        .args(ec)
        .arg("-keyout")
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr"))
        .args(["-subj", "/CN=localhost"]);
    run(csr, "make the server key and request");

    let mut sign = Command::new("openssl");
    sign.args(["x509", "-req", "-in"])
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-CAcreateserial")
        .arg("-out")
        .arg(p("server.crt"))
        .args(["-days", "3650", "-extfile"])
        .arg(&ext);
    run(sign, "sign the server certificate");

    let key = p("server.key");
    // The server refuses a key that others can read.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", key.display()));

    TestPki {
        ca_cert: p("ca.crt"),
        server_cert: p("server.crt"),
        server_key: key,
    }
}

fn run(mut cmd: Command, what: &str) {
    check(cmd.output(), &format!("openssl: {what}"));
}
