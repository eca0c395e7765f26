//! Test mode (`--test-mode`): tunable lifetimes, injected refresh faults, counters, a
//! request log and key rotation. Without test mode none of these routes exist (404).

use std::sync::PoisonError;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::error::AppError;
use crate::session::AccessLifetime;
use crate::state::{AppState, CountersSnapshot, LogEntry};

/// How long a `hang` fault keeps the request open.
pub const HANG: Duration = Duration::from_secs(120);

/// One way to make the next `/auth/refresh` misbehave. JSON: `{"kind": "...", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Fault {
    /// `status` with body `{"error":"server_error"}`; the token is not touched.
    Status {
        /// HTTP status to answer with.
        status: u16,
    },
    /// `status` (429/503) with `Retry-After: retryAfterSeconds`.
    RetryAfter {
        /// HTTP status to answer with.
        status: u16,
        /// Value of `Retry-After`.
        retry_after_seconds: u64,
    },
    /// Sleep `ms`, then refresh normally.
    Delay {
        /// Milliseconds to wait.
        ms: u64,
    },
    /// 200 with truncated JSON.
    Malformed,
    /// 502 HTML error page.
    Html,
    /// 200 HTML page.
    Html200,
    /// 200 with an empty body.
    Empty,
    /// 200 token response without `access_token`.
    MissingToken,
    /// Refresh normally (rotating), but the JWT is already expired and `expires_in` is 0.
    Expired,
    /// Never answer (sleep [`HANG`]).
    Hang,
}

impl Fault {
    fn check(&self) -> Result<(), String> {
        match self {
            Fault::Status { status } | Fault::RetryAfter { status, .. } => {
                StatusCode::from_u16(*status)
                    .map(|_| ())
                    .map_err(|_| format!("not an HTTP status: {status}"))
            }
            _ => Ok(()),
        }
    }
}

/// What the refresh handler does after popping a fault.
pub enum FaultEffect {
    /// Answer with this instead of touching the cookie.
    Respond(Response),
    /// Go on with a normal refresh, issuing this kind of access token.
    Proceed(AccessLifetime),
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

const JSON: (header::HeaderName, &str) = (header::CONTENT_TYPE, "application/json");
const HTML: (header::HeaderName, &str) = (header::CONTENT_TYPE, "text/html; charset=utf-8");

/// Carry out `fault`.
pub async fn apply(fault: Fault) -> FaultEffect {
    let response = match fault {
        Fault::Delay { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return FaultEffect::Proceed(AccessLifetime::Normal);
        }
        Fault::Expired => return FaultEffect::Proceed(AccessLifetime::AlreadyExpired),
        Fault::Status { status } => (status_of(status), Json(json!({ "error": "server_error" }))).into_response(),
        Fault::RetryAfter { status, retry_after_seconds } => (
            status_of(status),
            [(header::RETRY_AFTER, retry_after_seconds.to_string())],
            Json(json!({ "error": "temporarily_unavailable" })),
        )
            .into_response(),
        Fault::Malformed => (StatusCode::OK, [JSON], r#"{"access_token":"ab"#).into_response(),
        Fault::Html => (
            StatusCode::BAD_GATEWAY,
            [HTML],
            "<!doctype html><html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response(),
        Fault::Html200 => (
            StatusCode::OK,
            [HTML],
            "<!doctype html><html><head><title>Sign in</title></head><body><p>Please sign in.</p></body></html>",
        )
            .into_response(),
        Fault::Empty => (StatusCode::OK, [JSON], "").into_response(),
        Fault::MissingToken => {
            (StatusCode::OK, Json(json!({ "token_type": "Bearer", "expires_in": 60 }))).into_response()
        }
        Fault::Hang => {
            tokio::time::sleep(HANG).await;
            (StatusCode::GATEWAY_TIMEOUT, Json(json!({ "error": "server_error" }))).into_response()
        }
    };
    FaultEffect::Respond(no_store(response))
}

/// Body of `POST /test/config`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestConfig {
    /// Access-token lifetime for tokens issued from now on (seconds, fractional ok).
    pub access_ttl_seconds: Option<f64>,
    /// Family lifetime for logins from now on (seconds, fractional ok).
    pub family_lifetime_seconds: Option<f64>,
    /// `exp`/`nbf` leeway of `/api/me` (whole seconds, ≥ 0).
    pub leeway_seconds: Option<i64>,
}

/// Body of `POST /test/faults`.
#[derive(Debug, Deserialize)]
pub struct FaultList {
    /// Appended to the queue in order.
    pub faults: Vec<Fault>,
}

fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, AppError> {
    parsed
        .map(|Json(v)| v)
        .map_err(|e| AppError::InvalidRequest(e.body_text()))
}

fn positive(name: &str, v: Option<f64>) -> Result<Option<f64>, AppError> {
    match v {
        Some(n) if !(n.is_finite() && n > 0.0) => {
            Err(AppError::InvalidRequest(format!("{name} must be > 0")))
        }
        other => Ok(other),
    }
}

async fn set_config(
    State(state): State<AppState>,
    parsed: Result<Json<TestConfig>, JsonRejection>,
) -> Result<StatusCode, AppError> {
    let cfg = body(parsed)?;
    let access = positive("accessTtlSeconds", cfg.access_ttl_seconds)?;
    let family = positive("familyLifetimeSeconds", cfg.family_lifetime_seconds)?;
    if cfg.leeway_seconds.is_some_and(|l| l < 0) {
        return Err(AppError::InvalidRequest(
            "leewaySeconds must be >= 0".into(),
        ));
    }
    state.update_tunables(|t| {
        if let Some(v) = access {
            t.access_ttl_s = v;
        }
        if let Some(v) = family {
            t.family_lifetime_s = v;
        }
        if let Some(v) = cfg.leeway_seconds {
            t.leeway_s = v;
        }
    });
    Ok(StatusCode::NO_CONTENT)
}

async fn add_faults(
    State(state): State<AppState>,
    parsed: Result<Json<FaultList>, JsonRejection>,
) -> Result<StatusCode, AppError> {
    let list = body(parsed)?;
    for fault in &list.faults {
        fault.check().map_err(AppError::InvalidRequest)?;
    }
    state
        .faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(list.faults);
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_faults(State(state): State<AppState>) -> StatusCode {
    state
        .faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    StatusCode::NO_CONTENT
}

async fn counters(State(state): State<AppState>) -> Result<Json<CountersSnapshot>, AppError> {
    let stats = state.store.stats(state.now_ms())?;
    Ok(Json(state.counters.snapshot(stats)))
}

async fn log(State(state): State<AppState>) -> Json<Vec<LogEntry>> {
    let log = state
        .request_log
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    Json(log.iter().cloned().collect())
}

async fn reset(State(state): State<AppState>) -> StatusCode {
    state.counters.reset();
    state
        .request_log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    state
        .faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    StatusCode::NO_CONTENT
}

async fn rotate_key(State(state): State<AppState>) -> StatusCode {
    state.rotate_signing_key();
    StatusCode::NO_CONTENT
}

/// The `/test` routes (nested under `/test` by [`crate::app`] in test mode only).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/config", post(set_config))
        .route("/faults", post(add_faults).delete(clear_faults))
        .route("/counters", get(counters))
        .route("/log", get(log))
        .route("/reset", post(reset))
        .route("/rotate-key", post(rotate_key))
}
