//! Handlers of upstream mode. They replace the built-in `/auth/*` and `/api/me` handlers when
//! an issuer is configured; the cookie, CSRF header and response shapes stay those of SERVER.md.
//!
//! - `GET /auth/login?returnTo=` → 303 to the provider (PKCE S256, `state`, `nonce`); the
//!   pending login is sealed in the store under the hash of `state` and bound to this browser
//!   by an HttpOnly cookie scoped to `/auth/callback`.
//! - `GET /auth/callback` → single use: `state` known, unexpired and bound to this browser;
//!   code exchanged, ID token validated; family started; 303 to `returnTo` with the refresh
//!   cookie. A provider `error=` or a failed exchange returns to the app with `login_error=`.
//! - `POST /auth/refresh` → rotates our cookie, then hands out the provider's access token
//!   (cached, or renewed under the family's lease: one provider call per family at a time).
//! - `POST /auth/logout` → revokes at the provider (RFC 7009) and the family; 200 with
//!   `end_session_url` when the provider supports RP-initiated logout, else 204.
//! - `GET /api/me` → introspects the Bearer token at the provider (RFC 7662).
//! - `GET /auth/config` → `{"loginUrl": "/auth/login"}`, so the demo page knows to show the
//!   provider's sign-in button (404 in built-in mode).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;
use subtle::ConstantTimeEq as _;
use url::Url;

use super::{reusable, Grant, Pending, ProviderError, Upstream};
use crate::auth::{
    bearer_token, cleared_refresh_cookie, refresh_cookie, refresh_token_from, require_csrf,
};
use crate::error::{AppError, BearerFailure};
use crate::state::{bump, AppState};
use crate::store::{Family, Rotation};
use crate::tokens::{hash_refresh_token, new_refresh_token, random_id};

/// Cookie binding a pending login to the browser that started it.
pub const LOGIN_COOKIE: &str = "tw_login";
/// How long a pending login lives.
pub const PENDING_TTL_MS: i64 = 10 * 60 * 1000;
const PENDING_CONTEXT: &[u8] = b"tokenwarden pending login";

/// The upstream routes (and, in test mode, `/test/upstream/*`).
pub fn router(test_mode: bool) -> Router<AppState> {
    let router = Router::new()
        .route("/auth/config", get(config))
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/api/me", get(me));
    if !test_mode {
        return router;
    }
    router
        .route("/test/upstream/counters", get(test_counters))
        .route("/test/upstream/tamper-next-nonce", post(test_tamper_nonce))
        .route(
            "/test/upstream/concurrent-access",
            post(test_concurrent_access),
        )
}

fn upstream(state: &AppState) -> Result<Arc<Upstream>, AppError> {
    state
        .upstream
        .get()
        .cloned()
        .ok_or_else(|| AppError::Internal("upstream routes without an upstream".into()))
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v)
}

fn login_cookie(value: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={value}; HttpOnly; Secure; SameSite=Lax; Path=/auth/callback; Max-Age={}",
        PENDING_TTL_MS / 1000
    ))
    .unwrap_or_else(|_| cleared_login_cookie())
}

fn cleared_login_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "tw_login=; HttpOnly; Secure; SameSite=Lax; Path=/auth/callback; Max-Age=0",
    )
}

fn binding_hash(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(hash_refresh_token(value))
}

fn see_other(location: &str, cookies: &[HeaderValue]) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        headers.append(header::SET_COOKIE, c.clone());
    }
    response
}

fn refused(description: &str) -> Response {
    let mut response = AppError::InvalidRequest(description.into()).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, cleared_login_cookie());
    response
}

/// `GET /auth/config`: how the page signs in.
pub async fn config() -> Response {
    Json(json!({ "loginUrl": "/auth/login" })).into_response()
}

/// `GET /auth/login?returnTo=`.
pub async fn login(State(state): State<AppState>, uri: Uri) -> Result<Response, AppError> {
    let up = upstream(&state)?;
    let Some(return_to) = up
        .config
        .return_url(query_param(&uri, "returnTo").as_deref())
    else {
        tracing::info!("login refused: returnTo is not on the allow-list");
        return Ok(refused("returnTo is not an allowed URL"));
    };
    let (url, csrf, verifier, nonce) = up.authorize();
    let binding = random_id(32);
    let pending = Pending {
        binding: binding_hash(&binding),
        verifier: verifier.secret().clone(),
        nonce: nonce.secret().clone(),
        return_to: return_to.to_string(),
    };
    let sealed = up.key.seal(PENDING_CONTEXT, &serde_json::to_vec(&pending)?);
    up.store.put_pending(
        &hash_refresh_token(csrf.secret()),
        &sealed,
        state.now_ms() + PENDING_TTL_MS,
    )?;
    Ok(see_other(url.as_str(), &[login_cookie(&binding)]))
}

fn back_to_app(return_to: &str, error: &str, cookies: &[HeaderValue]) -> Response {
    let mut url = match Url::parse(return_to) {
        Ok(u) => u,
        Err(_) => return refused("sign-in failed"),
    };
    url.query_pairs_mut().append_pair("login_error", error);
    see_other(url.as_str(), cookies)
}

/// `GET /auth/callback?code=&state=` (or `?error=&state=`).
pub async fn callback(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let up = upstream(&state)?;
    let now = state.now_ms();
    let Some(state_param) = query_param(&uri, "state") else {
        return Ok(refused("sign-in failed: no state"));
    };
    let Some(sealed) = up
        .store
        .take_pending(&hash_refresh_token(&state_param), now)?
    else {
        tracing::info!("callback refused: unknown, used or expired state");
        return Ok(refused("sign-in failed: unknown, used or expired sign-in"));
    };
    let Some(pending) = up
        .key
        .open(PENDING_CONTEXT, &sealed)
        .ok()
        .and_then(|p| serde_json::from_slice::<Pending>(&p).ok())
    else {
        return Ok(refused("sign-in failed: unreadable sign-in"));
    };
    let bound = cookie(&headers, LOGIN_COOKIE)
        .is_some_and(|v| bool::from(binding_hash(v).as_bytes().ct_eq(pending.binding.as_bytes())));
    if !bound {
        tracing::info!("callback refused: the sign-in was started in another browser");
        return Ok(refused("sign-in failed: started in another browser"));
    }
    let clear = cleared_login_cookie();
    if let Some(error) = query_param(&uri, "error") {
        // Only a plain OAuth error code goes back to the app (never the description).
        let code = if !error.is_empty()
            && error.len() <= 64
            && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            error
        } else {
            "server_error".into()
        };
        tracing::info!(error = %code, "provider returned an error to the callback");
        return Ok(back_to_app(&pending.return_to, &code, &[clear]));
    }
    let Some(code) = query_param(&uri, "code") else {
        return Ok(back_to_app(&pending.return_to, "invalid_request", &[clear]));
    };
    let nonce = if up.tamper_next_nonce.swap(false, Ordering::SeqCst) {
        random_id(16)
    } else {
        pending.nonce
    };
    let grant = match up.exchange(code, pending.verifier, &nonce, now).await {
        Ok(grant) => grant,
        Err(e) => {
            let code = match &e {
                ProviderError::Unavailable => "temporarily_unavailable",
                ProviderError::InvalidGrant => "invalid_grant",
                ProviderError::BadIdToken(_) => "invalid_id_token",
                ProviderError::Malformed(_) => "server_error",
            };
            tracing::warn!(error = code, detail = ?e, "sign-in failed at the code exchange");
            return Ok(back_to_app(&pending.return_to, code, &[clear]));
        }
    };
    let lifetime_ms = (state.tunables().family_lifetime_s * 1000.0).ceil() as i64;
    let family = Family {
        id: random_id(16),
        sub: grant.sub.clone(),
        expires_at_ms: now + lifetime_ms,
    };
    let refresh = new_refresh_token();
    up.store
        .put_grant(&family.id, &up.seal_grant(&family.id, &grant))?;
    state
        .store
        .create_family(&family, &hash_refresh_token(&refresh), now)?;
    bump(&state.counters.logins_served);
    tracing::info!(family = %family.id, "upstream session started");
    Ok(see_other(
        &pending.return_to,
        &[clear, refresh_cookie(&refresh, lifetime_ms / 1000)],
    ))
}

fn token_response(grant: &Grant, now_ms: i64, cookie: HeaderValue) -> Response {
    let expires_in = ((grant.access_expires_at_ms - now_ms).max(0)) / 1000;
    (
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
            (header::SET_COOKIE, cookie),
        ],
        Json(json!({
            "access_token": grant.access_token,
            "token_type": "Bearer",
            "expires_in": expires_in,
        })),
    )
        .into_response()
}

fn invalid_grant() -> Response {
    let mut response = AppError::InvalidGrant.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cleared_refresh_cookie());
    response
}

fn provider_failure(status: StatusCode, error: &str, cookie: HeaderValue) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            // Our cookie has rotated already: the browser must keep the new one.
            (header::SET_COOKIE, cookie),
        ],
        Json(json!({ "error": error })),
    )
        .into_response()
}

fn load_grant(up: &Upstream, family_id: &str) -> Result<Option<Grant>, AppError> {
    Ok(up
        .store
        .grant(family_id)?
        .and_then(|sealed| up.open_grant(family_id, &sealed)))
}

/// The family's provider access token: the cached one while [`reusable`], else renewed at the
/// provider by whoever holds the family's lease; the others wait for its result.
async fn access_for(
    state: &AppState,
    up: &Arc<Upstream>,
    family_id: &str,
) -> Result<Result<Grant, ProviderError>, AppError> {
    let holder = random_id(12);
    let deadline = tokio::time::Instant::now() + up.config.timeout + Duration::from_secs(2);
    let ttl_ms = i64::try_from(up.lease_ttl().as_millis()).unwrap_or(i64::MAX);
    let mut waited = false;
    loop {
        let now = state.now_ms();
        let Some(grant) = load_grant(up, family_id)? else {
            return Ok(Err(ProviderError::InvalidGrant));
        };
        if reusable(&grant, now) {
            if !waited {
                bump(&up.counters.cached_served);
            }
            return Ok(Ok(grant));
        }
        if up.store.try_lease(family_id, &holder, now, ttl_ms)? {
            // Someone may have renewed between our read and our lease.
            let grant = match load_grant(up, family_id)? {
                Some(g) if reusable(&g, now) => {
                    up.store.release_lease(family_id, &holder)?;
                    return Ok(Ok(g));
                }
                Some(g) => g,
                None => {
                    up.store.release_lease(family_id, &holder)?;
                    return Ok(Err(ProviderError::InvalidGrant));
                }
            };
            // The provider call and the write of its answer run to the end even when our
            // caller goes away: a rotated provider refresh token must never be lost.
            let (up2, family) = (up.clone(), family_id.to_string());
            let task = tokio::spawn(async move {
                let result = up2.refresh(&grant, now).await;
                let stored = match &result {
                    Ok(renewed) => up2
                        .store
                        .put_grant(&family, &up2.seal_grant(&family, renewed)),
                    Err(ProviderError::InvalidGrant) => up2.store.delete_grant(&family),
                    Err(_) => Ok(()),
                };
                let released = up2.store.release_lease(&family, &holder);
                stored.and(released).map(|()| result)
            });
            return match task.await {
                Ok(Ok(result)) => Ok(result),
                Ok(Err(store_error)) => Err(store_error.into()),
                Err(_) => Err(AppError::Internal("provider refresh task failed".into())),
            };
        }
        if !waited {
            bump(&up.counters.lease_waits);
            waited = true;
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Err(ProviderError::Unavailable));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `POST /auth/refresh` in upstream mode.
pub async fn refresh(State(state): State<AppState>, headers: HeaderMap) -> Response {
    bump(&state.counters.refresh_requests);
    let response = match refresh_response(&state, &headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if matches!(
        response.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) {
        bump(&state.counters.refresh_rejected);
    }
    response
}

async fn refresh_response(state: &AppState, headers: &HeaderMap) -> Result<Response, AppError> {
    let up = upstream(state)?;
    require_csrf(state, headers)?;
    let Some(presented) = refresh_token_from(headers) else {
        return Ok(invalid_grant());
    };
    let now = state.now_ms();
    let next = new_refresh_token();
    let family = match state.store.rotate(
        &hash_refresh_token(presented),
        &hash_refresh_token(&next),
        now,
    )? {
        Rotation::Rotated(family) => family,
        Rotation::Reused { family_id } => {
            bump(&state.counters.reuse_detected);
            bump(&state.counters.families_revoked);
            tracing::warn!(family = %family_id, "refresh token reuse detected; family revoked, provider grant revoked");
            end_grant(&up, &family_id).await?;
            return Ok(invalid_grant());
        }
        Rotation::Rejected(_) => return Ok(invalid_grant()),
    };
    let remaining_s = ((family.expires_at_ms - now).max(0) + 999) / 1000;
    let cookie = refresh_cookie(&next, remaining_s);
    match access_for(state, &up, &family.id).await? {
        Ok(grant) => {
            bump(&state.counters.refreshes_served);
            Ok(token_response(&grant, state.now_ms(), cookie))
        }
        Err(ProviderError::InvalidGrant) => {
            tracing::info!(family = %family.id, "provider refused the grant; family ends");
            if state
                .store
                .revoke_family_of(&hash_refresh_token(&next), state.now_ms())?
                .is_some()
            {
                bump(&state.counters.families_revoked);
            }
            up.store.delete_grant(&family.id)?;
            Ok(invalid_grant())
        }
        Err(ProviderError::Unavailable) => {
            tracing::warn!(family = %family.id, "provider unavailable during refresh");
            Ok(provider_failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                cookie,
            ))
        }
        Err(e) => {
            tracing::warn!(family = %family.id, detail = ?e, "malformed provider answer during refresh");
            Ok(provider_failure(
                StatusCode::BAD_GATEWAY,
                "server_error",
                cookie,
            ))
        }
    }
}

/// Revoke a family's grant at the provider (best effort) and forget it.
async fn end_grant(up: &Upstream, family_id: &str) -> Result<Option<Grant>, AppError> {
    let grant = load_grant(up, family_id)?;
    if let Some(g) = &grant {
        if let Err(e) = up.revoke(g).await {
            tracing::warn!(family = %family_id, detail = ?e, "provider revocation failed");
        }
    }
    up.store.delete_grant(family_id)?;
    Ok(grant)
}

/// `POST /auth/logout` in upstream mode.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let up = upstream(&state)?;
    require_csrf(&state, &headers)?;
    let mut end_session = None;
    if let Some(token) = refresh_token_from(&headers) {
        if let Some(family_id) = state
            .store
            .revoke_family_of(&hash_refresh_token(token), state.now_ms())?
        {
            bump(&state.counters.families_revoked);
            let grant = end_grant(&up, &family_id).await?;
            end_session = up.end_session_url(grant.as_ref());
            tracing::info!(family = %family_id, "upstream session ended");
        }
    }
    bump(&state.counters.logouts);
    let headers = [
        (header::SET_COOKIE, cleared_refresh_cookie()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    Ok(match end_session {
        Some(url) => (headers, Json(json!({ "end_session_url": url.as_str() }))).into_response(),
        None => (StatusCode::NO_CONTENT, headers).into_response(),
    })
}

/// `GET /api/me` in upstream mode: the provider's token, checked by introspection.
pub async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    let up = upstream(&state)?;
    let c = &state.counters;
    bump(&c.api_calls);
    let Some(token) = bearer_token(&headers) else {
        bump(&c.api_unauthorized);
        bump(&c.api_no_token);
        return Err(AppError::Unauthorized(BearerFailure::Missing));
    };
    match up.introspect(token).await {
        Ok(Some(claims)) => {
            bump(&c.api_ok);
            Ok((
                [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
                Json(claims),
            )
                .into_response())
        }
        Ok(None) => {
            bump(&c.api_unauthorized);
            Err(AppError::Unauthorized(BearerFailure::Invalid))
        }
        Err(ProviderError::Unavailable) => Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "temporarily_unavailable" })),
        )
            .into_response()),
        Err(e) => {
            tracing::warn!(detail = ?e, "introspection failed");
            Ok((
                StatusCode::BAD_GATEWAY,
                Json(json!({ "error": "server_error" })),
            )
                .into_response())
        }
    }
}

async fn test_counters(State(state): State<AppState>) -> Result<Response, AppError> {
    let up = upstream(&state)?;
    let c = &up.counters;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    Ok(Json(json!({
        "codeExchanges": n(&c.code_exchanges),
        "providerRefreshes": n(&c.provider_refreshes),
        "providerRefreshFailures": n(&c.provider_refresh_failures),
        "cachedServed": n(&c.cached_served),
        "leaseWaits": n(&c.lease_waits),
        "revocations": n(&c.revocations),
        "introspections": n(&c.introspections),
    }))
    .into_response())
}

async fn test_tamper_nonce(State(state): State<AppState>) -> Result<Response, AppError> {
    upstream(&state)?
        .tamper_next_nonce
        .store(true, Ordering::SeqCst);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Test mode: rotate the presented cookie like a refresh, mark the family's cached provider
/// token as used up, then ask for the family's access token `n` times at once (as `n`
/// instances sharing the store would). Answers how many distinct tokens came back (never a
/// token) and sets the rotated cookie. Proves the lease: one provider call for all of them.
async fn test_concurrent_access(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let up = upstream(&state)?;
    let n = query_param(&uri, "n")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(5)
        .clamp(1, 50);
    let presented = refresh_token_from(&headers).ok_or(AppError::InvalidGrant)?;
    let now = state.now_ms();
    let next = new_refresh_token();
    let Rotation::Rotated(family) = state.store.rotate(
        &hash_refresh_token(presented),
        &hash_refresh_token(&next),
        now,
    )?
    else {
        return Err(AppError::InvalidGrant);
    };
    let mut grant = load_grant(&up, &family.id)?.ok_or(AppError::InvalidGrant)?;
    grant.access_expires_at_ms = now;
    up.store
        .put_grant(&family.id, &up.seal_grant(&family.id, &grant))?;
    let calls = (0..n).map(|_| {
        let (state, up, id) = (state.clone(), up.clone(), family.id.clone());
        tokio::spawn(async move { access_for(&state, &up, &id).await })
    });
    let mut tokens = std::collections::HashSet::new();
    let mut failures = 0;
    for call in calls.collect::<Vec<_>>() {
        match call.await {
            Ok(Ok(Ok(grant))) => {
                tokens.insert(hash_refresh_token(&grant.access_token));
            }
            _ => failures += 1,
        }
    }
    let remaining_s = ((family.expires_at_ms - now).max(0) + 999) / 1000;
    Ok((
        [(header::SET_COOKIE, refresh_cookie(&next, remaining_s))],
        Json(json!({ "requests": n, "distinctTokens": tokens.len(), "failures": failures })),
    )
        .into_response())
}
