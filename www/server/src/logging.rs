//! Request logging middleware: method, path, status, latency. Never a header value, query
//! string, token or cookie. In test mode it also feeds `GET /test/log`.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::{bearer_kind, has_csrf_header, refresh_token_from};
use crate::state::{AppState, LogEntry};

/// Log one request (and record it in test mode, except `/test/*` itself).
pub async fn log_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let t = state.now_ms();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let facts = (state.settings.test_mode && !path.starts_with("/test/")).then(|| {
        let headers = request.headers();
        (
            bearer_kind(&state, headers),
            has_csrf_header(headers),
            refresh_token_from(headers).is_some(),
        )
    });
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(target: "tokenwarden_server::http", %method, %path, status, latency_ms = format_args!("{latency_ms:.1}"), "request");
    if let Some((bearer, csrf, cookie)) = facts {
        state.record_request(LogEntry {
            t,
            method: method.to_string(),
            path,
            status,
            bearer,
            csrf,
            cookie,
        });
    }
    response
}
