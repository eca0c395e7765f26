//! `GET /api/me` and `GET /.well-known/jwks.json`.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::dpop;
use crate::error::{AppError, BearerFailure};
use crate::extract::Authenticated;
use crate::metrics::bump;
use crate::state::AppState;

/// `GET /.well-known/jwks.json`.
pub async fn jwks(State(state): State<AppState>) -> Response {
    let set = state.with_keys(|keys| keys.jwks());
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        Json(set),
    )
        .into_response()
}

/// `GET /api/me`: the caller's verified claims.
pub async fn me(
    State(state): State<AppState>,
    auth: Result<Authenticated, AppError>,
) -> Result<Response, AppError> {
    let c = &state.metrics.counters;
    bump(&c.api_calls);
    match &auth {
        Ok(_) => bump(&c.api_ok),
        Err(e) => {
            bump(&c.api_unauthorized);
            match e {
                AppError::Unauthorized(BearerFailure::Missing) => bump(&c.api_no_token),
                AppError::Unauthorized(BearerFailure::Expired) => bump(&c.api_expired_tokens),
                AppError::Unauthorized(BearerFailure::Revoked) => bump(&c.api_revoked_tokens),
                _ => {}
            }
        }
    }
    let Authenticated { claims, nonce } = auth?;
    let mut response = (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(claims),
    )
        .into_response();
    if let Some(v) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
        response.headers_mut().insert(dpop::NONCE_HEADER, v);
    }
    Ok(response)
}
