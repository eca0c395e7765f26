//! `POST /auth/login`, `/auth/refresh`, `/auth/logout`: thin wrappers over [`crate::session`].

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::error::{AppError, DpopAt};
use crate::extract::{
    cleared_refresh_cookie, dpop_proof, refresh_cookie, ClientAddr, CsrfChecked, RefreshCookies,
    SameOrigin,
};
use crate::metrics::bump;
use crate::session::{self, Issued, NotRotated};
use crate::state::AppState;
use crate::tokens::AccessLifetime;

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

fn token_response(state: &AppState, issued: &Issued) -> Response {
    let body = TokenResponse {
        access_token: &issued.access_token,
        token_type: if issued.bound { "DPoP" } else { "Bearer" },
        expires_in: issued.expires_in,
    };
    let response = (
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
        .into_response();
    super::with_dpop_nonce(state, response)
}

/// The key of the request's valid DPoP proof at the token endpoint (`None` without a
/// proof); with `required`, a request without one is refused.
async fn proof_key(
    state: &AppState,
    parts: &Parts,
    required: bool,
) -> Result<Option<String>, AppError> {
    match dpop_proof(state, parts, DpopAt::Token, None).await? {
        Some(proof) => Ok(Some(proof.jkt)),
        None if required => {
            bump(&state.metrics.counters.dpop_refused);
            Err(AppError::Dpop {
                at: DpopAt::Token,
                error: "invalid_dpop_proof",
                nonce: state.dpop_nonce(),
            })
        }
        None => Ok(None),
    }
}

/// `POST /auth/login`: demo/demo → token response + refresh cookie. Failed logins are
/// throttled per account and per client address (429 + `Retry-After`). With a valid DPoP
/// proof (`htm` POST, `htu` this URL) the session is bound to its key from the start.
pub async fn login(
    State(state): State<AppState>,
    _: SameOrigin,
    ClientAddr(addr): ClientAddr,
    parts: Parts,
    parsed: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Response, AppError> {
    let Json(req) = parsed
        .map_err(|_| AppError::InvalidRequest("expected JSON {username, password}".into()))?;
    let counters = &state.metrics.counters;
    if let Err(wait) = crate::shared::login_check(&state, &req.username, addr).await? {
        bump(&counters.rate_limited);
        return Err(AppError::RateLimited(wait));
    }
    let user_ok = req.username.as_bytes().ct_eq(DEMO_USER.as_bytes());
    let password_ok = req.password.as_bytes().ct_eq(DEMO_PASSWORD.as_bytes());
    if !bool::from(user_ok & password_ok) {
        bump(&counters.logins_refused);
        if let Err(wait) = crate::shared::login_failed(&state, &req.username, addr).await? {
            bump(&counters.rate_limited);
            tracing::warn!("failed-login limit reached; account or address locked");
            return Err(AppError::RateLimited(wait));
        }
        return Err(AppError::InvalidGrant);
    }
    // Never required here: the app's own login call cannot sign (the client is signed out
    // until it returns); its token is unbound, and under --dpop-required usable nowhere
    // until the client's first refresh binds the session.
    let jkt = proof_key(&state, &parts, false).await?;
    let issued = session::start(&state, DEMO_USER, jkt.as_deref()).await?;
    bump(&counters.logins_served);
    Ok(token_response(&state, &issued))
}

/// Request extension: this refresh has already been counted in `refreshRequests` (by test
/// mode's fault middleware, which counts a request before a fault delays or answers it).
#[derive(Debug, Clone, Copy)]
pub struct RefreshCounted;

/// `POST /auth/refresh`: rotate the refresh cookie. Every candidate cookie is tried in
/// order; the cookie is cleared only when the request carried exactly one (a request with
/// several may hold cookies planted by someone else, which must not log the user out).
/// A DPoP proof binds the new token (and the family) to its key; see
/// [`session::key_allowed`] for a family already bound. A proof that is refused (missing
/// where needed, invalid, another key) is the answer (400) only for a cookie that would
/// otherwise rotate: a dead cookie is still 401 `invalid_grant`, a retired one still reuse.
pub async fn refresh(
    State(state): State<AppState>,
    csrf: Result<CsrfChecked, AppError>,
    RefreshCookies(candidates): RefreshCookies,
    lifetime: Option<Extension<AccessLifetime>>,
    counted: Option<Extension<RefreshCounted>>,
    parts: Parts,
) -> Response {
    let counters = &state.metrics.counters;
    if counted.is_none() {
        bump(&counters.refresh_requests);
    }
    let lifetime = lifetime.map_or(AccessLifetime::Normal, |Extension(l)| l);
    let outcome = match csrf {
        Ok(CsrfChecked) => match proof_key(&state, &parts, state.settings.dpop.required).await {
            Ok(jkt) => rotate_any(&state, &candidates, lifetime, jkt.as_deref()).await,
            Err(refusal @ AppError::Dpop { .. }) => {
                Err(hold_all(&state, &candidates, refusal).await)
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match outcome {
        Ok(issued) => {
            bump(&counters.refreshes_served);
            token_response(&state, &issued)
        }
        Err(error) => {
            let refused = matches!(error, AppError::InvalidGrant);
            let mut response = error.into_response();
            if matches!(
                response.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) {
                bump(&counters.refresh_rejected);
            }
            if refused && candidates.len() == 1 {
                response
                    .headers_mut()
                    .insert(header::SET_COOKIE, cleared_refresh_cookie());
            }
            response
        }
    }
}

async fn rotate_any(
    state: &AppState,
    candidates: &[String],
    lifetime: AccessLifetime,
    jkt: Option<&str>,
) -> Result<Issued, AppError> {
    let mut wrong_key = false;
    for token in candidates {
        match session::rotate(state, token, lifetime, jkt).await? {
            Ok(issued) => return Ok(issued),
            Err(NotRotated::Refused(_) | NotRotated::Reused { .. }) => continue,
            Err(NotRotated::ProofRefused) => wrong_key = true,
        }
    }
    if wrong_key {
        // Not invalid_grant: the session is intact, and the cookie is kept.
        return Err(AppError::Dpop {
            at: DpopAt::Token,
            error: "invalid_dpop_proof",
            nonce: state.dpop_nonce(),
        });
    }
    Err(AppError::InvalidGrant)
}

/// The request's DPoP proof was refused before any cookie was looked at: `refusal` is the
/// answer only if a cookie would otherwise have rotated; every candidate is settled as
/// [`session::hold`] says (a retired one is reuse, a dead one `invalid_grant`).
async fn hold_all(state: &AppState, candidates: &[String], refusal: AppError) -> AppError {
    let now_ms = state.now_ms();
    let mut held = false;
    for token in candidates {
        match session::hold(state, token, now_ms).await {
            Ok(NotRotated::ProofRefused) => held = true,
            Ok(NotRotated::Refused(_) | NotRotated::Reused { .. }) => {}
            Err(e) => return e,
        }
    }
    if held {
        refusal
    } else {
        AppError::InvalidGrant
    }
}

/// `POST /auth/logout`: revoke the family of every candidate cookie, clear the cookie; 204
/// even without a session. When the store fails to end a family the answer is its 503
/// (`Retry-After`: the client reports that the server could not be told), and it clears the
/// cookie all the same, as a 204 does: kept, the browser signed the user back in with it on
/// the next page load once the store was back. The families not ended are noted for
/// maintenance to end ([`session::note_failed_end`]).
pub async fn logout(
    State(state): State<AppState>,
    _: CsrfChecked,
    RefreshCookies(candidates): RefreshCookies,
) -> Response {
    for (i, token) in candidates.iter().enumerate() {
        if let Err(e) = session::end(&state, token).await {
            // The others would wait on the failing store too (a call may take a third of
            // the request timeout): noted with it, not tried.
            for token in &candidates[i..] {
                session::note_failed_end(&state, token);
            }
            return clearing_cookie(e.into_response());
        }
    }
    bump(&state.metrics.counters.logouts);
    clearing_cookie(
        (
            StatusCode::NO_CONTENT,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        )
            .into_response(),
    )
}

/// `response` clearing the refresh cookie (and, through [`crate::extract::anchor_set_cookies`],
/// its anchor): what every logout answer carries, the failed ones too.
pub(crate) fn clearing_cookie(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cleared_refresh_cookie());
    response
}
