//! The serve loop on a real socket: header-read, request and idle timeouts, and the
//! connection cap (slowloris and connection floods). Limits are shortened so the test is
//! quick; each check allows generous slack over its limit for a loaded machine.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use tokenwarden_server::serve::{serve, Limits};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

async fn start(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let app = Router::new().route("/", get(|| async { "ok" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "late"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(listener, app, limits, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

fn limits() -> Limits {
    Limits {
        header_read: Duration::from_millis(500),
        request: Duration::from_millis(500),
        idle: Duration::from_millis(800),
        max_connections: 64,
    }
}

/// Read until EOF or error; how long it took. Panics if the server keeps it open `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + within).into(), stream.read(&mut buf)).await {
            Err(_) => panic!(
                "still open after {within:?}; read {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_disconnected_at_the_idle_timeout() {
    let (addr, _stop) = start(limits()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    closed_within(&mut s, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_client_that_trickles_header_lines_is_disconnected_at_the_header_timeout() {
    let (addr, _stop) = start(limits()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let (mut read, mut write) = s.into_split();
    // One header line every 100 ms, forever: always active, never done.
    let trickle = tokio::spawn(async move {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write
                .write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    trickle.abort();
    assert!(
        closed.is_ok(),
        "slowloris connection still open after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (addr, _stop) = start(limits()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let (took, _) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );
}

#[tokio::test]
async fn a_request_that_takes_too_long_gets_503() {
    let (addr, _stop) = start(limits()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (took, got) = closed_within(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(took < Duration::from_secs(5));
}

/// The request-timeout 503 says when to come back, as a store failure's does: without
/// `Retry-After` a client retried at once, adding load to a server already too slow.
#[tokio::test]
async fn the_request_timeout_503_carries_retry_after_no_store_and_the_typed_body() {
    let (addr, _stop) = start(limits()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (_, got) = closed_within(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 503"), "{text}");
    assert!(text.contains("\r\nretry-after: 2\r\n"), "{text}");
    assert!(text.contains("\r\ncache-control: no-store\r\n"), "{text}");
    assert!(
        text.contains("\r\ncontent-type: application/json\r\n"),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\n{\"error\":\"temporarily_unavailable\"}"),
        "{text}"
    );
    // A bare router here: this is the connection's backstop, outside the app's header
    // layers, and it carries the security headers of every response itself.
    for (name, value) in tokenwarden_server::SECURITY_HEADERS {
        let line = format!("\r\n{}: {}\r\n", name.as_str(), value.to_ascii_lowercase());
        assert!(text.contains(&line), "{line:?} in {text}");
    }
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let (addr, _stop) = start(Limits {
        header_read: Duration::from_secs(30),
        idle: Duration::from_secs(30),
        max_connections: 2,
        ..limits()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        assert!(s.read(&mut buf).await.unwrap() > 0);
        held.push(s);
    }
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf))
            .await
            .is_err(),
        "a third connection was served beyond the cap of two"
    );
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("served once a slot was free")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_handshake_step_is_used_and_one_that_never_ends_is_dropped_at_the_header_timeout() {
    use tokenwarden_server::serve::serve_with;
    let app = Router::new().route("/", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A "handshake" that waits for one byte 'y' first, and hangs on anything else.
    tokio::spawn(serve_with(
        listener,
        app,
        limits(),
        std::future::pending(),
        |mut stream: TcpStream| async move {
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).await?;
            if b[0] != b'y' {
                std::future::pending::<()>().await;
            }
            Ok(stream)
        },
    ));
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"yGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (_, got) = closed_within(&mut ok, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let mut stuck = TcpStream::connect(addr).await.unwrap();
    stuck.write_all(b"n").await.unwrap();
    closed_within(&mut stuck, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_keep_alive_connection_outlives_the_header_timeout_between_requests() {
    let (addr, _stop) = start(Limits {
        header_read: Duration::from_millis(300),
        idle: Duration::from_millis(1500),
        ..limits()
    })
    .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1024];
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // Idle longer than the header timeout, shorter than the idle timeout: still open.
        let quiet = tokio::time::timeout(Duration::from_millis(700), s.read(&mut buf)).await;
        assert!(quiet.is_err(), "closed between requests: {quiet:?}");
    }
    let (took, _) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(500), "{took:?}");
}
