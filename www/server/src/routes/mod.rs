//! Thin HTTP handlers: `auth` (login, refresh, logout), `api` (me, JWKS), `ops` (healthz,
//! readyz, metrics), and `upstream` (login, callback, refresh, logout, me in upstream mode).

pub mod api;
pub mod auth;
pub mod ops;
pub mod upstream;

use axum::http::HeaderValue;
use axum::response::Response;

use crate::state::AppState;

/// `response` with the current `DPoP-Nonce` when nonces are on (every answer of the token
/// endpoint and of a resource hands one out, RFC 9449 §8).
pub(crate) fn with_dpop_nonce(state: &AppState, mut response: Response) -> Response {
    if let Some(v) = state
        .dpop_nonce()
        .and_then(|n| HeaderValue::from_str(&n).ok())
    {
        response.headers_mut().insert(crate::dpop::NONCE_HEADER, v);
    }
    response
}
