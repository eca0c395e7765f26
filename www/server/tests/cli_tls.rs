//! The binary over HTTPS: `--tls` / `TW_TLS`, `--tls-cert` + `--tls-key` (and their
//! variables), the first stdout line `listening on https://ADDR`, the security headers over
//! TLS, and a plain-HTTP request to an HTTPS port getting no HTTP answer.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary; returns it and its first stdout line.
fn start(args: &[&str], env: &[(&str, &str)]) -> (Server, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenwarden-server"));
    cmd.args(["--port", "0", "--memory-store"])
        .args(args)
        .env_remove("TW_TLS")
        .env_remove("TW_TLS_CERT")
        .env_remove("TW_TLS_KEY")
        .env("TW_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Server(child), line.trim().to_string())
}

fn https_get(addr: &str, path: &str, trusted_pem: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(trusted_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    // The server may close without close_notify after `Connection: close`; keep what came.
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_certificate_from_files_given_by_variables_serves_https_with_the_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let cert = tokenwarden_server::tls::self_signed().unwrap();
    let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&c, &cert.cert_pem).unwrap();
    std::fs::write(&k, &cert.key_pem).unwrap();
    let (_server, line) = start(
        &[],
        &[
            ("TW_TLS_CERT", c.to_str().unwrap()),
            ("TW_TLS_KEY", k.to_str().unwrap()),
        ],
    );
    let addr = line
        .strip_prefix("listening on https://")
        .unwrap_or_else(|| panic!("first line: {line:?}"));
    let response = https_get(addr, "/healthz", &cert.cert_pem);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let lower = response.to_ascii_lowercase();
    assert!(
        lower.contains("content-security-policy: default-src 'none'"),
        "{response}"
    );
    assert!(lower.contains("x-content-type-options: nosniff"));
}

#[test]
fn tls_from_the_flag_or_the_variable_announces_https_and_answers_no_plain_http() {
    for (args, env) in [(&["--tls"][..], &[][..]), (&[][..], &[("TW_TLS", "1")][..])] {
        let (_server, line) = start(args, env);
        let addr = line
            .strip_prefix("listening on https://")
            .unwrap_or_else(|| panic!("first line: {line:?}"));
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // One write, and its error ignored: the TLS server may close the connection as soon
        // as the first bytes are not a ClientHello, and a write after that fails (EPIPE).
        // `write!` wrote in pieces, and the second piece failed that way once in CI. A closed
        // connection is the expected outcome; only an HTTP answer fails the test.
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let _ = s.write_all(request.as_bytes());
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        assert!(
            !String::from_utf8_lossy(&out).contains("HTTP/1.1 200"),
            "plain HTTP was answered on the HTTPS port"
        );
    }
}

#[test]
fn a_certificate_without_its_key_is_refused_and_help_lists_the_tls_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwarden-server"))
        .args(["--tls-cert", "c.pem"])
        .env_remove("TW_TLS_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));

    let out = Command::new(env!("CARGO_BIN_EXE_tokenwarden-server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--tls",
        "--tls-cert",
        "--tls-key",
        "TW_TLS_CERT",
        "https://",
    ] {
        assert!(help.contains(needle), "{needle} missing from --help");
    }
}
