//! Operations: `GET /healthz` (the process answers), `GET /readyz` (the store answers),
//! `GET /metrics` (Prometheus text).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// `GET /healthz`: 200 while the process serves requests.
pub async fn healthz() -> Response {
    ([(header::CONTENT_TYPE, TEXT)], "ok\n").into_response()
}

/// `GET /readyz`: 200 when the refresh store answers, else 503.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => ([(header::CONTENT_TYPE, TEXT)], "ready\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, TEXT)],
                "store unavailable\n",
            )
                .into_response()
        }
    }
}

/// `GET /metrics`: counters and the latency histogram in the Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
