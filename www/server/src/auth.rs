//! Request-side authentication: the Bearer extractor, the refresh cookie and the CSRF header.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use serde_json::{Map, Value};

use crate::error::{AppError, BearerFailure};
use crate::state::{bump, AppState, BearerKind};
use crate::tokens::{self, AccessTokenError};

/// Name of the HttpOnly refresh cookie.
pub const REFRESH_COOKIE: &str = "tw_refresh";
/// Path the refresh cookie is scoped to.
pub const REFRESH_COOKIE_PATH: &str = "/auth";
/// The CSRF header required on refresh and logout.
pub const CSRF_HEADER: &str = "x-requested-with";

/// The `Set-Cookie` value for a refresh token living `max_age_s` more seconds.
pub fn refresh_cookie(token: &str, max_age_s: i64) -> HeaderValue {
    let value = format!(
        "{REFRESH_COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path={REFRESH_COOKIE_PATH}; Max-Age={}",
        max_age_s.max(0)
    );
    // Tokens are base64url, so the value is always a valid header.
    HeaderValue::from_str(&value).unwrap_or_else(|_| cleared_refresh_cookie())
}

/// The `Set-Cookie` value that deletes the refresh cookie.
pub fn cleared_refresh_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "tw_refresh=; HttpOnly; Secure; SameSite=Strict; Path=/auth; Max-Age=0",
    )
}

/// The refresh token from the `Cookie` header(s), if present and non-empty.
pub fn refresh_token_from(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == REFRESH_COOKIE && !value.is_empty())
        .map(|(_, value)| value.trim_matches('"'))
}

/// Whether the CSRF header is present.
pub fn has_csrf_header(headers: &HeaderMap) -> bool {
    headers.get(CSRF_HEADER).is_some_and(|v| !v.is_empty())
}

/// Fail with 403 (and count it) when the CSRF header is missing.
pub fn require_csrf(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    if has_csrf_header(headers) {
        Ok(())
    } else {
        bump(&state.counters.csrf_missing);
        Err(AppError::CsrfHeaderMissing)
    }
}

/// The Bearer token from `Authorization`, if that header uses the Bearer scheme.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Validate the request's Bearer token.
pub fn check_bearer(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Map<String, Value>, BearerFailure> {
    let token = bearer_token(headers).ok_or(BearerFailure::Missing)?;
    let rules = state.validation();
    let now = state.now_ms();
    state
        .with_keys(|keys| tokens::validate(keys, token, &rules, now))
        .map_err(|e| match e {
            AccessTokenError::Expired => BearerFailure::Expired,
            AccessTokenError::Invalid => BearerFailure::Invalid,
        })
}

/// Classification for the test-mode request log.
pub fn bearer_kind(state: &AppState, headers: &HeaderMap) -> BearerKind {
    match check_bearer(state, headers) {
        Ok(_) => BearerKind::Valid,
        Err(BearerFailure::Missing) => BearerKind::None,
        Err(BearerFailure::Expired) => BearerKind::Expired,
        Err(BearerFailure::Invalid) => BearerKind::Invalid,
    }
}

/// Extractor: the verified claims of the caller's access token.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Map<String, Value>);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        check_bearer(state, &parts.headers)
            .map(Authenticated)
            .map_err(AppError::Unauthorized)
    }
}
