//! The serve loop over TLS (`--tls`): the same header-read, request and idle timeouts and
//! the same connection cap as plain HTTP, the TLS handshake inside the header-read limit,
//! and HTTP/1.1 as the only protocol offered (WebKit needs that, see `src/tls.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokenwarden_server::serve::{serve_tls, Limits};
use tokenwarden_server::tls::{self, TlsConfig};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

struct Server {
    addr: SocketAddr,
    connector: TlsConnector,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A server with a certificate from files (as `--tls-cert`/`--tls-key` give it) and a
/// client that trusts exactly that certificate.
async fn start(limits: Limits, client_alpn: &[&[u8]]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let cert = tls::self_signed().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, &cert.cert_pem).unwrap();
    std::fs::write(&key_file, &cert.key_pem).unwrap();
    let acceptor = tls::acceptor(&TlsConfig {
        enabled: true,
        cert_file: Some(cert_file),
        key_file: Some(key_file),
    })
    .unwrap();

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
    tokio::spawn(serve_tls(listener, app, limits, acceptor, async {
        let _ = rx.await;
    }));

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = client_alpn.iter().map(|p| p.to_vec()).collect();
    Server {
        addr,
        connector: TlsConnector::from(Arc::new(client)),
        _stop: tx,
    }
}

impl Server {
    async fn connect(&self) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        self.connector.connect(name, tcp).await.unwrap()
    }
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
async fn closed_within<S: AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> (Duration, Vec<u8>) {
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
async fn https_serves_http1_and_offers_only_http1_in_alpn() {
    let server = start(limits(), &[b"h2", b"http/1.1"]).await;
    let mut s = server.connect().await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (_, got) = closed_within(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("ok"), "{text}");
}

#[tokio::test]
async fn a_client_that_asks_for_h2_only_is_refused_in_the_handshake() {
    let server = start(limits(), &[b"h2"]).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    assert!(server.connector.connect(name, tcp).await.is_err());
}

#[tokio::test]
async fn a_client_that_never_starts_the_handshake_is_disconnected() {
    let server = start(limits(), &[b"http/1.1"]).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let (took, _) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );
}

#[tokio::test]
async fn a_client_that_stalls_mid_handshake_is_disconnected() {
    let server = start(limits(), &[b"http/1.1"]).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    // The first bytes of a TLS record header (handshake, TLS 1.0 framing), then nothing.
    s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    closed_within(&mut s, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_client_that_trickles_header_lines_over_tls_is_disconnected_at_the_header_timeout() {
    let server = start(limits(), &[b"http/1.1"]).await;
    let mut s = server.connect().await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    // One header line every 100 ms: always active, never done.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut i = 0u32;
        loop {
            tokio::select! {
                read = s.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    i += 1;
                    if s.write_all(format!("X-{i}: y\r\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "slowloris connection still open after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_idle_keep_alive_tls_connection_is_closed_after_the_idle_timeout() {
    let server = start(limits(), &[b"http/1.1"]).await;
    let mut s = server.connect().await;
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
async fn a_request_that_takes_too_long_over_tls_gets_503() {
    let server = start(limits(), &[b"http/1.1"]).await;
    let mut s = server.connect().await;
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (took, got) = closed_within(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(took < Duration::from_secs(5));
}

#[tokio::test]
async fn tls_connections_beyond_the_cap_wait_until_one_closes() {
    let server = start(
        Limits {
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(30),
            max_connections: 2,
            ..limits()
        },
        &[b"http/1.1"],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = server.connect().await;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        assert!(s.read(&mut buf).await.unwrap() > 0);
        held.push(s);
    }
    // The third connection is accepted by the kernel but not by the server: its handshake
    // does not even start while both slots are taken.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut third = Box::pin(server.connector.connect(name, tcp));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut third)
            .await
            .is_err(),
        "a third TLS connection was served beyond the cap of two"
    );
    drop(held.pop());
    let mut third = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("handshake once a slot was free")
        .unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("served once a slot was free")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}
