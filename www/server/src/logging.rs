//! Request logging middleware: method, path, status, latency, and the latency histogram.
//! Never a header value, query string, token or cookie.
//!
//! It is the outermost layer of [`crate::app`], outside the request timeout
//! ([`crate::serve::enforce_deadline`]), so a request cut off is logged with its 503. A
//! request whose client disconnects before the answer may not be: hyper drops it unanswered.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

/// Log one request and observe its latency.
pub async fn log_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    state.metrics.request_seconds.observe(elapsed);
    let latency_ms = elapsed * 1000.0;
    tracing::info!(target: "tokenwarden_server::http", %method, %path, status, latency_ms = format_args!("{latency_ms:.1}"), "request");
    response
}
