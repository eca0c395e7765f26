//! HTTP handlers: thin wrappers over [`crate::session`] and [`crate::auth`].

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::auth::{
    cleared_refresh_cookie, refresh_cookie, refresh_token_from, require_csrf, Authenticated,
};
use crate::error::{AppError, BearerFailure};
use crate::session::{self, AccessLifetime, Issued};
use crate::state::{bump, AppState};
use crate::testing::{self, FaultEffect};

/// The demo account (this is a demo server, not an identity provider).
pub const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo";

/// Body of `POST /auth/login`.
#[derive(Deserialize)]
pub struct LoginRequest {
    username: String,
    password: String,
}

/// RFC 6749 §5.1 token response.
#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
}

fn token_response(issued: &Issued) -> Response {
    let body = TokenResponse {
        access_token: &issued.access_token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
    };
    (
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
            (
                header::SET_COOKIE,
                refresh_cookie(&issued.refresh_token, issued.family_remaining_s),
            ),
        ],
        Json(body),
    )
        .into_response()
}

/// `POST /auth/login`: demo/demo → token response + refresh cookie.
pub async fn login(
    State(state): State<AppState>,
    parsed: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Response, AppError> {
    let Json(req) = parsed
        .map_err(|_| AppError::InvalidRequest("expected JSON {username, password}".into()))?;
    let user_ok = req.username.as_bytes().ct_eq(DEMO_USER.as_bytes());
    let password_ok = req.password.as_bytes().ct_eq(DEMO_PASSWORD.as_bytes());
    if !bool::from(user_ok & password_ok) {
        return Err(AppError::InvalidGrant);
    }
    let issued = session::start(&state, DEMO_USER)?;
    bump(&state.counters.logins_served);
    Ok(token_response(&issued))
}

/// `POST /auth/refresh`: rotate the cookie's refresh token (faults first, in test mode).
pub async fn refresh(State(state): State<AppState>, headers: HeaderMap) -> Response {
    bump(&state.counters.refresh_requests);
    let response = refresh_response(&state, &headers).await;
    if matches!(
        response.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) {
        bump(&state.counters.refresh_rejected);
    }
    response
}

async fn refresh_response(state: &AppState, headers: &HeaderMap) -> Response {
    let lifetime = match state.pop_fault() {
        None => AccessLifetime::Normal,
        Some(fault) => match testing::apply(fault).await {
            FaultEffect::Respond(response) => return response,
            FaultEffect::Proceed(lifetime) => lifetime,
        },
    };
    let outcome = require_csrf(state, headers).and_then(|()| {
        let token = refresh_token_from(headers).ok_or(AppError::InvalidGrant)?;
        session::rotate(state, token, lifetime)
    });
    match outcome {
        Ok(issued) => {
            bump(&state.counters.refreshes_served);
            token_response(&issued)
        }
        Err(AppError::InvalidGrant) => {
            let mut response = AppError::InvalidGrant.into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, cleared_refresh_cookie());
            response
        }
        Err(error) => error.into_response(),
    }
}

/// `POST /auth/logout`: revoke the family, clear the cookie; 204 even without a session.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    require_csrf(&state, &headers)?;
    if let Some(token) = refresh_token_from(&headers) {
        session::end(&state, token)?;
    }
    bump(&state.counters.logouts);
    Ok((
        StatusCode::NO_CONTENT,
        [
            (header::SET_COOKIE, cleared_refresh_cookie()),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response())
}

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
    let c = &state.counters;
    bump(&c.api_calls);
    match &auth {
        Ok(_) => bump(&c.api_ok),
        Err(e) => {
            bump(&c.api_unauthorized);
            match e {
                AppError::Unauthorized(BearerFailure::Missing) => bump(&c.api_no_token),
                AppError::Unauthorized(BearerFailure::Expired) => bump(&c.api_expired_tokens),
                _ => {}
            }
        }
    }
    let Authenticated(claims) = auth?;
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(claims),
    )
        .into_response())
}
