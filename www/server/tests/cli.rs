//! The binary itself: flags and variables through clap, the first stdout line, the
//! operations endpoints on a real socket.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[&str], env: &[(&str, &str)]) -> (Server, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenwarden-server"));
    cmd.args(args)
        .env_remove("TW_TEST_MODE")
        .env_remove("DATABASE_URL")
        .env("TW_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_string();
    (Server(child), addr)
}

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn test_mode_and_the_memory_store_switch_on_with_1_in_the_environment() {
    let (_server, addr) = start(
        &["--port", "0"],
        &[("TW_TEST_MODE", "1"), ("TW_MEMORY_STORE", "1")],
    );
    assert!(get(&addr, "/test/counters").starts_with("HTTP/1.1 200"));
}

#[test]
fn every_boolean_variable_takes_the_same_spellings() {
    // TW_DPOP_REQUIRED and TW_DPOP_NONCE took only true/false: "1" stopped the server.
    let (_server, addr) = start(
        &["--port", "0", "--memory-store"],
        &[
            ("TW_DPOP_REQUIRED", "1"),
            ("TW_DPOP_NONCE", "yes"),
            ("TW_TLS", "off"),
        ],
    );
    assert!(get(&addr, "/healthz").starts_with("HTTP/1.1 200"));
}

#[test]
fn without_test_mode_the_test_routes_are_404_and_ops_endpoints_answer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (_server, addr) = start(&["--port", "0", "--data-dir", data], &[]);
    assert!(get(&addr, "/test/counters").starts_with("HTTP/1.1 404"));
    assert!(get(&addr, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(get(&addr, "/readyz").starts_with("HTTP/1.1 200"));
    let metrics = get(&addr, "/metrics");
    assert!(
        metrics.contains("tokenwarden_refreshes_served_total 0"),
        "{metrics}"
    );
    assert!(dir.path().join("tokenwarden.sqlite3").exists());
}

#[test]
fn help_lists_every_flag_with_its_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwarden-server"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--bind",
        "--port",
        "--access-ttl",
        "--family-lifetime",
        "--leeway",
        "--max-families-per-user",
        "--login-account-burst",
        "--login-address-burst",
        "--login-refill",
        "--allowed-origin",
        "--header-timeout",
        "--request-timeout",
        "--idle-timeout",
        "--max-connections",
        "--test-mode",
        "--memory-store",
        "--data-dir",
        "--www-dir",
        "--pkg-dir",
        "--signing-key-file",
        "--log-format",
    ] {
        assert!(help.contains(flag), "{flag} missing");
    }
    assert!(help.contains("TW_MAX_FAMILIES_PER_USER"));
}

fn post(addr: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// SIGTERM (systemd, Docker, Kubernetes, `kill`) drains like Ctrl-C: a request in flight is
/// answered, then the process exits. Before, SIGTERM killed it at once and the request's
/// connection was cut (a refresh that had committed its rotation became a lost response).
#[test]
fn sigterm_lets_a_request_in_flight_finish() {
    let (mut server, addr) = start(
        &["--port", "0"],
        &[("TW_TEST_MODE", "1"), ("TW_MEMORY_STORE", "1")],
    );
    assert!(post(
        &addr,
        "/test/faults",
        r#"{"faults":[{"kind":"delay","ms":1500}]}"#
    )
    .starts_with("HTTP/1.1 204"));
    let a = addr.clone();
    let in_flight = std::thread::spawn(move || post(&a, "/auth/refresh", ""));
    // The fault counts the request before its delay: it is in flight once counted.
    while !get(&addr, "/test/counters").contains("\"refreshRequests\":1") {
        std::thread::yield_now();
    }
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let answer = in_flight.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 "), "cut off: {answer:?}");
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// Started with its database refusing connections, the server exits 1 and says why and
/// where: it printed `refresh store: postgres: error connecting to server`, without the
/// refusal (a source of that error) or the address. The URL's password is never printed.
#[test]
fn a_database_refusing_connections_stops_the_start_naming_the_refusal_and_the_address_not_the_password(
) {
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwarden-server"))
        .args(["--port", "0"])
        .env_remove("TW_TEST_MODE")
        .env(
            "DATABASE_URL",
            format!("postgres://tw:s3cret-pw@127.0.0.1:{port}/twdb"),
        )
        .env("TW_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "never listened");
    assert!(
        stderr.to_lowercase().contains("connection refused"),
        "the refusal: {stderr}"
    );
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("database twdb"),
        "where: {stderr}"
    );
    assert!(!stderr.contains("s3cret-pw"), "the password: {stderr}");
}
