//! Operations: `GET /healthz` (the process answers), `GET /readyz` (the store answers and
//! its writes go through),
//! `GET /metrics` (Prometheus text).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;
use crate::store::StoreError;

const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// `GET /healthz`: 200 while the process serves requests.
pub async fn healthz() -> Response {
    ([(header::CONTENT_TYPE, TEXT)], "ok\n").into_response()
}

/// `GET /readyz`: 200 when the refresh store answers and its writes go through, else 503.
/// The store answers a ping (`SELECT 1`); and when the most recent write failed (or was cut
/// off) with none gone through since ([`crate::store::StoreHealth`]), one write is tried
/// here: a full disk answers pings while every refresh and login fails. That write (a DPoP
/// proof id that is random and expires at once) is also how readiness comes back when the
/// store does, without traffic. The checks wait at most one store call's time
/// (`Settings::store_call_timeout`): a store host that never answers is not ready either.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let checked = tokio::time::timeout(state.settings.store_call_timeout, ready(&state)).await;
    let why = match checked {
        Ok(Ok(())) => return ([(header::CONTENT_TYPE, TEXT)], "ready\n").into_response(),
        Ok(Err((why, e))) => {
            tracing::error!(error = %e, "readiness check failed: {why}");
            why
        }
        Err(_) => {
            tracing::error!("readiness check failed: the store did not answer in time");
            "store unavailable"
        }
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, TEXT)],
        format!("{why}\n"),
    )
        .into_response()
}

async fn ready(state: &AppState) -> Result<(), (&'static str, StoreError)> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ("store unavailable", e))?;
    if state.store_health.writes_failing() {
        let mut probe = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut probe);
        let now_ms = state.now_ms();
        state
            .store
            .first_use_of_proof(&probe, now_ms, now_ms)
            .await
            .map_err(|e| ("store writes failing", e))?;
    }
    Ok(())
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
