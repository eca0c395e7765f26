//! The one error type of the HTTP layer. Its responses never show internals.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Why an access token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerFailure {
    /// No `Authorization: Bearer` header.
    Missing,
    /// Bad signature, algorithm, key, issuer, audience, format or `nbf`.
    Invalid,
    /// Correctly signed but expired.
    Expired,
    /// Correctly signed and unexpired, but its family (`sid`) has been revoked.
    Revoked,
}

/// Where a DPoP failure happened: the token endpoint answers 400 with a JSON error, a
/// resource answers 401 with a `WWW-Authenticate: DPoP` challenge (RFC 9449 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpopAt {
    /// `/auth/login`, `/auth/refresh`.
    Token,
    /// `/api/*`.
    Resource,
}

/// Every way a request can fail.
#[derive(Debug)]
pub enum AppError {
    /// 400 `invalid_request`; the text is ours (never contains secrets).
    InvalidRequest(String),
    /// 401 `invalid_grant`: bad credentials, or a missing/unknown/expired/revoked/reused refresh token.
    InvalidGrant,
    /// 403 `csrf`: `X-Requested-With` missing on a cookie endpoint.
    CsrfHeaderMissing,
    /// 403 `csrf`: `Origin` / `Sec-Fetch-Site` names another site on a cookie endpoint.
    ForeignOrigin,
    /// 429 `rate_limited` with `Retry-After` (whole seconds, rounded up).
    RateLimited(std::time::Duration),
    /// 401 with `WWW-Authenticate: Bearer …`.
    Unauthorized(BearerFailure),
    /// A DPoP failure: `error` is `invalid_dpop_proof`, `use_dpop_nonce`, `invalid_token`,
    /// or empty (no credentials: a bare `DPoP algs=…` challenge). `nonce` goes out as
    /// `DPoP-Nonce`.
    Dpop {
        /// Token endpoint or resource.
        at: DpopAt,
        /// The OAuth error code.
        error: &'static str,
        /// The nonce to use next, when nonces are on.
        nonce: Option<String>,
    },
    /// 500 `server_error`; the detail is logged, not sent.
    Internal(String),
    /// 503 `temporarily_unavailable` with `Retry-After`: the store failed or timed out (the
    /// database is down, restarting or stalled). The detail is logged, not sent.
    Unavailable(String),
}

/// `Retry-After` of a 503 for store trouble, seconds.
pub const STORE_RETRY_AFTER_S: u64 = 2;

/// One log line a second at most for a store that keeps failing: during an outage every
/// request fails the same way, and the operations audit counted 480 ERROR lines in 16 s from
/// 8 clients. The first failure is logged at once; the line after a quiet stretch says how
/// many were left out (`suppressed`).
pub struct LogThrottle {
    /// When the last line went out (ms since the process began; -1: never).
    last_ms: std::sync::atomic::AtomicI64,
    /// Failures not logged since that line.
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogThrottle {
    /// A throttle that has logged nothing yet.
    pub const fn new() -> Self {
        Self {
            last_ms: std::sync::atomic::AtomicI64::new(-1),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(suppressed)` when a line may go out at `now_ms` (and how many were left out
    /// before it), `None` when this one is left out.
    pub fn admit(&self, now_ms: i64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let last = self.last_ms.load(Relaxed);
        if last >= 0 && now_ms - last < 1_000
            || self
                .last_ms
                .compare_exchange(last, now_ms, Relaxed, Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Relaxed))
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new()
    }
}

static STORE_ERROR_LOG: LogThrottle = LogThrottle::new();

/// Milliseconds since the first call (a monotonic clock for the log throttle only).
fn process_ms() -> i64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// `e` and its sources, `: `-separated, on one line: the cause a wrapper's own text hides
/// (tokio-postgres says "error connecting to server" and "db error", reqwest "error sending
/// request"; the reason — `Connection refused (os error 111)`, `database "x" does not
/// exist`, `operation timed out` — is a source). A source whose text the chain already ends
/// with (a wrapper that prints its cause) is not repeated. A PostgreSQL error is its severity,
/// message and SQLSTATE, without its DETAIL and HINT (a DETAIL can quote row values).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let text = match e.downcast_ref::<tokio_postgres::error::DbError>() {
            Some(db) => format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            ),
            None => e.to_string(),
        };
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if !text.is_empty() && !out.ends_with(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        // A client may retry: a store call that failed changed nothing it can see (a
        // rotation commits whole or not at all, within the store's own timeout).
        AppError::Unavailable(e.to_string())
    }
}

impl From<serde_json::Error> for AppError {
    fn from(e: serde_json::Error) -> Self {
        AppError::Internal(format!("json: {e}"))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
        match self {
            AppError::InvalidRequest(description) => (
                StatusCode::BAD_REQUEST,
                no_store,
                Json(json!({ "error": "invalid_request", "error_description": description })),
            )
                .into_response(),
            AppError::InvalidGrant => {
                (StatusCode::UNAUTHORIZED, no_store, Json(json!({ "error": "invalid_grant" }))).into_response()
            }
            AppError::CsrfHeaderMissing => (
                StatusCode::FORBIDDEN,
                no_store,
                Json(json!({ "error": "csrf", "error_description": "X-Requested-With header required" })),
            )
                .into_response(),
            AppError::ForeignOrigin => (
                StatusCode::FORBIDDEN,
                no_store,
                Json(json!({ "error": "csrf", "error_description": "cross-origin request refused" })),
            )
                .into_response(),
            AppError::RateLimited(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [
                        (header::RETRY_AFTER, HeaderValue::from(secs.max(1))),
                        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                    ],
                    Json(json!({ "error": "rate_limited" })),
                )
                    .into_response()
            }
            AppError::Unauthorized(failure) => {
                let (challenge, error) = match failure {
                    BearerFailure::Missing => ("Bearer", "unauthorized"),
                    BearerFailure::Invalid | BearerFailure::Expired | BearerFailure::Revoked => {
                        ("Bearer error=\"invalid_token\"", "invalid_token")
                    }
                };
                (
                    StatusCode::UNAUTHORIZED,
                    [
                        (header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge)),
                        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                    ],
                    Json(json!({ "error": error })),
                )
                    .into_response()
            }
            AppError::Dpop { at, error, nonce } => {
                let mut response = match at {
                    DpopAt::Token => (
                        StatusCode::BAD_REQUEST,
                        no_store,
                        Json(json!({ "error": if error.is_empty() { "invalid_dpop_proof" } else { error } })),
                    )
                        .into_response(),
                    DpopAt::Resource => {
                        let challenge = if error.is_empty() {
                            format!("DPoP algs=\"{}\"", crate::dpop::ALGS)
                        } else {
                            format!("DPoP error=\"{error}\", algs=\"{}\"", crate::dpop::ALGS)
                        };
                        (
                            StatusCode::UNAUTHORIZED,
                            [
                                (header::WWW_AUTHENTICATE, HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("DPoP"))),
                                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                            ],
                            Json(json!({ "error": if error.is_empty() { "unauthorized" } else { error } })),
                        )
                            .into_response()
                    }
                };
                if let Some(v) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
                    response.headers_mut().insert(crate::dpop::NONCE_HEADER, v);
                }
                response
            }
            AppError::Unavailable(detail) => {
                if let Some(suppressed) = STORE_ERROR_LOG.admit(process_ms()) {
                    tracing::error!(%detail, suppressed, "store unavailable");
                }
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [
                        (header::RETRY_AFTER, HeaderValue::from(STORE_RETRY_AFTER_S)),
                        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                    ],
                    Json(json!({ "error": "temporarily_unavailable" })),
                )
                    .into_response()
            }
            AppError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, no_store, Json(json!({ "error": "server_error" })))
                    .into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_store_is_logged_once_a_second_with_the_count_left_out() {
        let t = LogThrottle::new();
        assert_eq!(t.admit(0), Some(0), "the first failure at once");
        assert_eq!(t.admit(10), None);
        assert_eq!(t.admit(999), None);
        assert_eq!(
            t.admit(1_000),
            Some(2),
            "a second later, with the two left out"
        );
        assert_eq!(t.admit(5_000), Some(0));
    }

    #[derive(Debug)]
    struct Wrapper(&'static str, Option<Box<dyn std::error::Error + 'static>>);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref()
        }
    }

    #[test]
    fn the_chain_names_every_cause_once_on_one_line() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = Wrapper(
            "error connecting to server",
            Some(Box::new(Wrapper(
                "tcp connect error:\n  refused",
                Some(Box::new(refused)),
            ))),
        );
        assert_eq!(
            chain(&e),
            "error connecting to server: tcp connect error: refused: connection refused"
        );
        // A wrapper that prints its cause already: not twice.
        let e = Wrapper(
            "pool: timed out",
            Some(Box::new(Wrapper("timed out", None))),
        );
        assert_eq!(chain(&e), "pool: timed out");
    }

    #[test]
    fn a_store_failure_is_a_503_to_retry_with_nothing_of_the_detail() {
        let res = AppError::from(crate::store::StoreError(
            "postgres: connection refused (db.internal:5432, user secret)".into(),
        ))
        .into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    }
}
