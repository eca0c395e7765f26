//! Serving the router over TCP with limits: a header-read timeout, a request timeout, an
//! idle timeout and a cap on open connections (slowloris and connection floods).
//!
//! [`serve`] runs the accept loop on plain TCP. [`serve_with`] is the same loop with a
//! handshake step between accepting a TCP stream and serving HTTP on it, bounded by the
//! header-read timeout; [`serve_tls`] plugs the TLS acceptor of `--tls` in there, so every
//! limit holds for HTTPS as for HTTP (the handshake also holds its slot of the connection
//! cap). [`serve_connection`] serves one connection of any byte stream.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::middleware::Next;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a request's headers, from their first byte.
    pub header_read: Duration,
    /// Time from a request's headers to its response's headers (503 after it). The app
    /// answers at this [`Deadline`] itself, inside its request log; a router that does not
    /// gets the 503 from the connection, [`BACKSTOP`] later.
    pub request: Duration,
    /// Time a connection may carry no bytes and no request (keep-alive between requests,
    /// or a new connection that never sends anything).
    pub idle: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// How long in-flight connections get to finish after the shutdown signal.
const DRAIN: Duration = Duration::from_secs(5);

/// How long after a request's [`Deadline`] the connection answers 503 itself. Later than
/// the deadline so that a router enforcing it ([`enforce_deadline`]) always answers first:
/// with two timers on one instant, the connection's could fire first and drop the router's
/// future before its request log ran.
pub const BACKSTOP: Duration = Duration::from_secs(1);

/// When the request timeout ([`Limits::request`]) cuts a request off: a request extension
/// set by [`serve_connection`] when the request's headers have arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub tokio::time::Instant);

/// Middleware: answer 503 `temporarily_unavailable` at the request's [`Deadline`] (none: a
/// router driven without [`serve_connection`], as in tests, is not timed). [`crate::app`]
/// runs it inside the request log, so a request cut off is logged and counted with its 503
/// and latency like any other (a timeout around the whole router would drop the log with the
/// request), and inside the security-header layers, so its 503 carries them too.
pub async fn enforce_deadline(request: Request<Body>, next: Next) -> Response<Body> {
    let Some(&Deadline(at)) = request.extensions().get::<Deadline>() else {
        return next.run(request).await;
    };
    tokio::time::timeout_at(at, next.run(request))
        .await
        .unwrap_or_else(|_| request_timed_out())
}

/// Accept connections on `listener` and serve `app` on each, within `limits`, until
/// `shutdown` resolves; then stop accepting and let open connections finish (up to 5 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_with(listener, app, limits, shutdown, |stream| async move {
        Ok(stream)
    })
    .await
}

/// [`serve`] over TLS (`--tls`): every accepted connection completes its TLS handshake with
/// `tls` first, within `limits.header_read` (a client that stalls the handshake is dropped,
/// like one that stalls its headers), then HTTP/1.1 is served on the decrypted stream with
/// the same limits. The acceptor offers only `http/1.1` in ALPN (see [`crate::tls`]).
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: TlsAcceptor,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_with(listener, app, limits, shutdown, move |stream| {
        let tls = tls.clone();
        async move { tls.accept(stream).await }
    })
    .await
}

/// [`serve`], with `handshake` turning each accepted TCP stream into the byte stream HTTP
/// is served on (e.g. a TLS acceptor). A handshake that fails or takes longer than the
/// header-read timeout drops the connection.
pub async fn serve_with<H, F, IO>(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
    handshake: H,
) -> std::io::Result<()>
where
    H: Fn(TcpStream) -> F + Clone + Send + 'static,
    F: Future<Output = std::io::Result<IO>> + Send,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let stop = stop_rx.clone();
        let handshake = handshake.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(limits.header_read, handshake(stream)).await {
                Ok(Ok(io)) => serve_connection(io, remote, app, limits, stop).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "handshake failed"),
                Err(_) => tracing::debug!("handshake timed out"),
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain period; closing them");
    }
    Ok(())
}

/// Serve HTTP/1.1 on one connection `io` from `remote` until the client closes it, a
/// limit is hit, or `stop` turns true (then in-flight requests finish first).
pub async fn serve_connection<IO>(
    io: IO,
    remote: SocketAddr,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(ActivityIo {
        inner: io,
        activity: activity.clone(),
    });
    let in_flight = activity.clone();
    // The connection's timer is only a backstop (see BACKSTOP). A request whose client goes
    // away first is dropped by hyper with this future before the router answered: it may go
    // unlogged (there is no response to log).
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let deadline = tokio::time::Instant::now() + limits.request;
        request.extensions_mut().insert(ConnectInfo(remote));
        request.extensions_mut().insert(Deadline(deadline));
        let guard = InFlight::new(&in_flight);
        let app = app.clone();
        async move {
            let cut_off = deadline + BACKSTOP;
            let response =
                match tokio::time::timeout_at(cut_off, app.oneshot(request.map(Body::new))).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => request_timed_out(),
                };
            drop(guard);
            Ok::<_, Infallible>(response)
        }
    });
    // No hyper timer, so no hyper header_read_timeout: hyper starts that one as soon as it
    // waits for the next request head, which would close every keep-alive connection after
    // the header timeout and race with browsers reusing it. `Activity::idle` times heads,
    // idle connections and silent ones separately.
    let mut conn = pin!(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = activity.idle(limits), if !shutting_down => {
                tracing::debug!("closing an idle connection");
                conn.as_mut().graceful_shutdown();
                // An idle connection closes at once; one stuck mid-header does not care:
                // give it a moment, then drop it.
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
                return;
            }
            changed = stop.changed(), if !shutting_down => {
                if changed.is_err() || *stop.borrow() {
                    conn.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
            }
        }
    }
}

/// The 503 of a request cut off by the request timeout: `temporarily_unavailable`, with the
/// `Retry-After` of a store failure ([`crate::error::STORE_RETRY_AFTER_S`]: a request runs
/// out of time mostly on a stalled store or provider, and a client that retried at once
/// would only add to the load), `no-store`, the connection closed, and the security headers
/// of every response (the backstop answers outside [`crate::app`]'s layers).
fn request_timed_out() -> Response<Body> {
    let mut response = Response::new(Body::from(r#"{"error":"temporarily_unavailable"}"#));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(crate::error::STORE_RETRY_AFTER_S),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    for (name, value) in crate::SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// When a connection last moved bytes, when the request head being read began, and whether
/// a request is being handled.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    /// ms since `start` of the first byte of a request head not yet handed to the router;
    /// [`NO_HEAD`] when none is being read.
    head_ms: AtomicU64,
    in_flight: AtomicUsize,
}

const NO_HEAD: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            head_ms: AtomicU64::new(NO_HEAD),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NO_HEAD - 1)
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Bytes arrived: between requests they start a request head.
    fn read(&self) {
        let now = self.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let _ =
                self.head_ms
                    .compare_exchange(NO_HEAD, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Resolves once the connection has overstayed: a request head not complete
    /// `header_read` after its first byte (however slowly the bytes trickle), or no request
    /// in flight and no byte for `idle` (a keep-alive connection, or one that never spoke).
    async fn idle(&self, limits: Limits) {
        loop {
            let head = self.head_ms.load(Ordering::Relaxed);
            let deadline = if head != NO_HEAD {
                self.start + Duration::from_millis(head) + limits.header_read
            } else {
                self.start
                    + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
                    + limits.idle
            };
            if self.in_flight.load(Ordering::Relaxed) == 0 && Instant::now() >= deadline {
                return;
            }
            let wake = deadline.max(Instant::now() + Duration::from_millis(100));
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// Counts a request as in flight while alive.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.head_ms.store(NO_HEAD, Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A byte stream that notes when bytes move.
struct ActivityIo<IO> {
    inner: IO,
    activity: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for ActivityIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ActivityIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
