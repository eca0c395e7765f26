//! Test mode (`--test-mode`): tunable lifetimes, injected refresh faults, counters, a
//! request log and key rotation. Without test mode none of these routes exist (404).
//!
//! A leaf: nothing else in the crate imports this module. [`install`] (called by
//! [`crate::app`] in test mode only) adds the `/test` routes and two middlewares, one that
//! applies queued faults to `POST /auth/refresh` and one that records the request log; test
//! mode's own state lives here, not in [`AppState`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{AppError, BearerFailure};
use crate::extract::{
    check_bearer, has_csrf_header, refresh_cookie, refresh_cookie_candidates, RefreshCookies,
};
use crate::metrics::CountersSnapshot;
use crate::routes::auth::RefreshCounted;
use crate::session;
use crate::state::AppState;
use crate::tokens::AccessLifetime;

/// How many requests `GET /test/log` remembers.
pub const REQUEST_LOG_CAPACITY: usize = 2000;

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
    /// Refresh normally (the rotation is committed), then drop the answer and send 502
    /// as a load balancer does when the upstream connection breaks: the client never sees
    /// the new token.
    LostResponse,
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

/// What the refresh middleware does after popping a fault.
pub enum FaultEffect {
    /// Answer with this instead of touching the cookie.
    Respond(Response),
    /// Go on with a normal refresh, issuing this kind of access token.
    Proceed(AccessLifetime),
    /// Go on with a normal refresh, then answer 502 instead of its response.
    ProceedThenDrop,
}

/// How the `Authorization` header of a logged request looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BearerKind {
    /// No Bearer token.
    None,
    /// A token that `/api/me` would accept.
    Valid,
    /// Correctly signed but expired.
    Expired,
    /// Anything else (revoked family included).
    Invalid,
}

/// One entry of `GET /test/log`. Never holds a token or cookie value.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    /// Epoch ms when the request arrived.
    pub t: i64,
    /// HTTP method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// Authorization header classification.
    pub bearer: BearerKind,
    /// `X-Requested-With` present.
    pub csrf: bool,
    /// Refresh cookie present.
    pub cookie: bool,
    /// A `DPoP` proof header present.
    pub dpop: bool,
    /// The `error` of the response's `WWW-Authenticate` challenge (`invalid_token`,
    /// `use_dpop_nonce`, `invalid_dpop_proof`), when it has one: which 401 it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Test mode's own state.
#[derive(Default)]
pub struct TestState {
    faults: Mutex<VecDeque<Fault>>,
    request_log: Mutex<VecDeque<LogEntry>>,
}

impl TestState {
    fn pop_fault(&self) -> Option<Fault> {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    fn record(&self, entry: LogEntry) {
        let mut log = self
            .request_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if log.len() == REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(entry);
    }
}

/// Both states, for the `/test` handlers.
#[derive(Clone)]
struct Ctx {
    app: AppState,
    test: Arc<TestState>,
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
        Fault::LostResponse => return FaultEffect::ProceedThenDrop,
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
    State(Ctx { app: state, .. }): State<Ctx>,
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
    State(Ctx { test, .. }): State<Ctx>,
    parsed: Result<Json<FaultList>, JsonRejection>,
) -> Result<StatusCode, AppError> {
    let list = body(parsed)?;
    for fault in &list.faults {
        fault.check().map_err(AppError::InvalidRequest)?;
    }
    test.faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(list.faults);
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_faults(State(Ctx { test, .. }): State<Ctx>) -> StatusCode {
    test.faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    StatusCode::NO_CONTENT
}

async fn counters(
    State(Ctx { app: state, .. }): State<Ctx>,
) -> Result<Json<CountersSnapshot>, AppError> {
    let stats = state.store.stats(state.now_ms()).await?;
    Ok(Json(state.metrics.counters.snapshot(stats)))
}

async fn log(State(Ctx { test, .. }): State<Ctx>) -> Json<Vec<LogEntry>> {
    let log = test
        .request_log
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    Json(log.iter().cloned().collect())
}

async fn reset(State(Ctx { app, test }): State<Ctx>) -> StatusCode {
    app.metrics.counters.reset();
    test.request_log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    test.faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    StatusCode::NO_CONTENT
}

/// Upstream mode: the provider-call counters.
async fn upstream_counters(State(Ctx { app, .. }): State<Ctx>) -> Result<Response, AppError> {
    let Some(up) = app.upstream.get() else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let c = &up.counters;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Json(json!({
        "codeExchanges": n(&c.code_exchanges),
        "providerRefreshes": n(&c.provider_refreshes),
        "providerRefreshFailures": n(&c.provider_refresh_failures),
        "cachedServed": n(&c.cached_served),
        "leaseWaits": n(&c.lease_waits),
        "revocations": n(&c.revocations),
        "introspections": n(&c.introspections),
        "jwtChecks": n(&c.jwt_checks),
        "jwksRefetches": n(&up.jwks.refetches),
        "dpopRefreshes": n(&c.dpop_refreshes),
        "dpopChallenges": n(&c.dpop_challenges),
        "backchannelLogouts": n(&c.backchannel_logouts),
        "backchannelRefused": n(&c.backchannel_refused),
        "backchannelEnded": n(&c.backchannel_ended),
    }))
    .into_response())
}

/// Upstream mode: the next callback expects another nonce than the login's (to prove that
/// the ID token's nonce is checked).
async fn upstream_tamper_nonce(State(Ctx { app, .. }): State<Ctx>) -> StatusCode {
    match app.upstream.get() {
        Some(up) => {
            up.tamper_next_nonce
                .store(true, std::sync::atomic::Ordering::SeqCst);
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}

/// Upstream mode: one pass over the revocation queue, as maintenance would run it `in_s`
/// seconds from now (the query parameter; 0 by default): proves that a revocation the
/// provider did not take is retried, and when. Answers what the pass did.
async fn upstream_retry_revocations(
    State(Ctx { app, .. }): State<Ctx>,
    uri: axum::http::Uri,
) -> Result<Response, AppError> {
    let Some(up) = app.upstream.get() else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let in_s = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "in_s")
        .and_then(|(_, v)| v.parse::<i64>().ok())
        .unwrap_or(0)
        .clamp(0, 30 * 24 * 3600);
    let pass = up.retry_revocations(|| app.now_ms() + in_s * 1000).await?;
    Ok(Json(json!({
        "done": pass.done,
        "failed": pass.failed,
        "unreadable": pass.unreadable,
        "givenUp": pass.given_up,
    }))
    .into_response())
}

/// Upstream mode: rotate the presented cookie like a refresh, mark the family's cached
/// provider token as used up, then ask for the family's access token `n` times at once (as
/// `n` instances sharing the store would). Answers how many distinct tokens came back (never
/// a token) and sets the rotated cookie. Proves the lease: one provider call for all of them.
async fn upstream_concurrent_access(
    State(Ctx { app: state, .. }): State<Ctx>,
    uri: axum::http::Uri,
    RefreshCookies(candidates): RefreshCookies,
) -> Result<Response, AppError> {
    use crate::routes::upstream::{access_for, load_grant};
    let Some(up) = state.upstream.get().cloned() else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let n = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "n")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(5)
        .clamp(1, 50);
    let presented = candidates.first().ok_or(AppError::InvalidGrant)?;
    let now = state.now_ms();
    let Ok(session::Rotated {
        family,
        refresh_token,
    }) = session::rotate_family(&state, presented, now, None).await?
    else {
        return Err(AppError::InvalidGrant);
    };
    let mut grant = load_grant(&up, &family.id)
        .await?
        .ok_or(AppError::InvalidGrant)?;
    grant.access_expires_at_ms = now;
    up.store
        .put_grant(
            &family.id,
            &up.seal_grant(&family.id, &grant),
            family.expires_at_ms,
        )
        .await?;
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let (state, up, family) = (state.clone(), up.clone(), family.clone());
            tokio::spawn(async move { access_for(&state, &up, &family, None).await })
        })
        .collect();
    let mut tokens = std::collections::HashSet::new();
    let mut failures = 0;
    for call in calls {
        match call.await {
            Ok(Ok(Ok(grant))) => {
                tokens.insert(crate::tokens::hash_refresh_token(&grant.access_token));
            }
            _ => failures += 1,
        }
    }
    let remaining_s = session::family_remaining_s(family.expires_at_ms, now);
    Ok((
        [(
            header::SET_COOKIE,
            refresh_cookie(&refresh_token, remaining_s),
        )],
        Json(json!({ "requests": n, "distinctTokens": tokens.len(), "failures": failures })),
    )
        .into_response())
}

/// With shared keys (PostgreSQL) the new key is stored for every instance and signs from
/// two reloads later; otherwise this process signs with a new key at once.
async fn rotate_key(State(Ctx { app, .. }): State<Ctx>) -> Result<StatusCode, AppError> {
    if app.shared_keys.load(std::sync::atomic::Ordering::Relaxed) {
        crate::shared::rotate_shared_key(&app).await?;
    } else {
        app.rotate_signing_key();
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Replace the DPoP nonce at once; proofs with the old one get `use_dpop_nonce`.
async fn change_dpop_nonce(State(Ctx { app, .. }): State<Ctx>) -> StatusCode {
    app.change_dpop_nonce();
    StatusCode::NO_CONTENT
}

fn classify(state: &AppState, headers: &axum::http::HeaderMap) -> BearerKind {
    match check_bearer(state, headers) {
        Ok(_) => BearerKind::Valid,
        Err(BearerFailure::Missing) => BearerKind::None,
        Err(BearerFailure::Expired) => BearerKind::Expired,
        Err(BearerFailure::Invalid | BearerFailure::Revoked) => BearerKind::Invalid,
    }
}

/// Record every request except `/test/*` in the request log.
async fn record_requests(State(ctx): State<Ctx>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if path.starts_with("/test/") {
        return next.run(request).await;
    }
    let t = ctx.app.now_ms();
    let method = request.method().to_string();
    let headers = request.headers();
    let (bearer, csrf, cookie) = (
        classify(&ctx.app, headers),
        has_csrf_header(headers),
        !refresh_cookie_candidates(headers).is_empty(),
    );
    let dpop = headers.contains_key(crate::dpop::PROOF_HEADER);
    let response = next.run(request).await;
    let error = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(challenge_error);
    ctx.test.record(LogEntry {
        t,
        method,
        path,
        status: response.status().as_u16(),
        bearer,
        csrf,
        cookie,
        dpop,
        error,
    });
    response
}

/// The `error="…"` parameter of a `WWW-Authenticate` challenge.
fn challenge_error(challenge: &str) -> Option<String> {
    let rest = &challenge[challenge.find("error=\"")? + 7..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// Apply the next queued fault to `POST /auth/refresh`; `/pkg/*` is never cached.
async fn refresh_faults(State(ctx): State<Ctx>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path.starts_with("/pkg/") {
        let mut response = next.run(request).await;
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return response;
    }
    if request.method() != Method::POST || path != "/auth/refresh" {
        return next.run(request).await;
    }
    let Some(fault) = ctx.test.pop_fault() else {
        return next.run(request).await;
    };
    // Counted now, before a delay or a hang: a client that gives up still made the call.
    let counters = &ctx.app.metrics.counters;
    counters.refresh_requests.inc();
    request.extensions_mut().insert(RefreshCounted);
    match apply(fault).await {
        FaultEffect::Respond(response) => {
            if matches!(
                response.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) {
                counters.refresh_rejected.inc();
            }
            response
        }
        FaultEffect::Proceed(lifetime) => {
            request.extensions_mut().insert(lifetime);
            next.run(request).await
        }
        FaultEffect::ProceedThenDrop => {
            let committed = next.run(request).await;
            tracing::info!(
                status = committed.status().as_u16(),
                "test fault: refresh response dropped"
            );
            drop(committed);
            no_store(
                (
                    StatusCode::BAD_GATEWAY,
                    [HTML],
                    "<!doctype html><html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>",
                )
                    .into_response(),
            )
        }
    }
}

/// POST /test/panic: a handler that panics, to prove that a bug in one
/// request answers 500 and leaves the server serving.
async fn panic_now() -> StatusCode {
    panic!("POST /test/panic: a deliberate panic (test mode)")
}

/// Add the `/test` routes and test mode's middlewares to `router`.
pub fn install(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    let ctx = Ctx {
        app: state.clone(),
        test: Arc::new(TestState::default()),
    };
    let routes = Router::new()
        .route("/config", post(set_config))
        .route("/faults", post(add_faults).delete(clear_faults))
        .route("/counters", get(counters))
        .route("/log", get(log))
        .route("/reset", post(reset))
        .route("/rotate-key", post(rotate_key))
        .route("/upstream/counters", get(upstream_counters))
        .route("/upstream/tamper-next-nonce", post(upstream_tamper_nonce))
        .route(
            "/upstream/concurrent-access",
            post(upstream_concurrent_access),
        )
        .route(
            "/upstream/retry-revocations",
            post(upstream_retry_revocations),
        )
        .route("/dpop-nonce", post(change_dpop_nonce))
        .route("/panic", post(panic_now))
        .with_state(ctx.clone());
    router
        .nest("/test", routes)
        .layer(middleware::from_fn_with_state(ctx.clone(), refresh_faults))
        .layer(middleware::from_fn_with_state(ctx, record_requests))
}

#[cfg(test)]
mod tests {
    use super::challenge_error;

    #[test]
    fn the_log_names_the_error_of_a_challenge() {
        let cases = [
            ("Bearer error=\"invalid_token\"", Some("invalid_token")),
            (
                "DPoP error=\"use_dpop_nonce\", algs=\"ES256\"",
                Some("use_dpop_nonce"),
            ),
            ("DPoP algs=\"ES256\"", None),
            ("Bearer", None),
            ("Bearer error=\"unterminated", None),
        ];
        for (challenge, want) in cases {
            assert_eq!(challenge_error(challenge).as_deref(), want, "{challenge}");
        }
    }
}
