//! A request cut off by the request timeout is logged and counted like any other: the
//! request log sits outside the timeout (SERVER.md: every request is logged).
//!
//! A test binary of its own, as `log_redaction.rs`: `tracing::subscriber::set_default`
//! races with callsites registered by tests running in parallel threads of one binary.

#[path = "http/common.rs"]
mod common;

use std::time::{Duration, Instant};

use tokenwarden_server::serve::{serve, Limits};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::common::*;

fn latency_count(ts: &TestServer) -> u64 {
    let text = ts.state.metrics.encode().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("tokenwarden_http_request_duration_seconds_count "))
        .expect("latency histogram")
        .parse()
        .unwrap()
}

// current_thread (the default): the connection task runs on this thread, under the
// thread-local subscriber.
#[tokio::test]
async fn a_request_cut_off_by_the_request_timeout_is_logged_with_its_503_and_latency() {
    let capture = Capture::default();
    let _guard = capture.install(tracing::Level::INFO);

    let ts = server(false);
    let limits = Limits {
        header_read: Duration::from_secs(5),
        request: Duration::from_millis(300),
        idle: Duration::from_secs(5),
        max_connections: 8,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        ts.router.clone(),
        limits,
        std::future::pending(),
    ));
    let counted_before = latency_count(&ts);

    // A login whose body never completes: the handler waits for it until the timeout.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"username\":",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Err(_) => panic!("no answer; read {:?}", String::from_utf8_lossy(&got)),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Like a store failure's 503: when to retry, not cached, the typed body.
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("\r\nretry-after: 2\r\n"), "{text}");
    assert!(lower.contains("\r\ncache-control: no-store\r\n"), "{text}");
    // Inside the security-header layers, like every other answer of the app.
    assert!(
        lower.contains("\r\nx-content-type-options: nosniff\r\n"),
        "{text}"
    );
    assert!(lower.contains("\r\ncontent-security-policy: "), "{text}");
    assert!(
        text.ends_with("{\"error\":\"temporarily_unavailable\"}"),
        "{text}"
    );

    assert_eq!(latency_count(&ts) - counted_before, 1, "latency observed");
    let output = capture.text();
    let line = output
        .lines()
        .find(|l| l.contains("path=/auth/login"))
        .unwrap_or_else(|| panic!("no log line for the timed-out request:\n{output}"));
    assert!(
        line.contains("method=POST") && line.contains("status=503"),
        "{line}"
    );
    let latency_ms: f64 = line
        .split("latency_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no latency in {line}"));
    assert!(latency_ms >= 250.0, "{line}");
}
