//! Handlers of upstream mode ([`crate::upstream`]). They replace the built-in `/auth/*` and
//! `/api/me` handlers when an issuer is configured; the cookie, the CSRF header, the
//! `Origin` / `Sec-Fetch-Site` check and the response shapes stay those of the built-in mode.
//!
//! - `GET /auth/login?returnTo=` → 303 to the provider (PKCE S256, `state`, `nonce`); the
//!   pending login is sealed in the store under the hash of `state` and bound to this browser
//!   by an HttpOnly cookie scoped to `/auth/callback`. A cross-site start is refused (the
//!   `Origin` / `Sec-Fetch-Site` check of login).
//! - `GET /auth/callback` → single use: `state` known, unexpired and bound to this browser;
//!   code exchanged, ID token validated; family started; 303 to `returnTo` with the refresh
//!   cookie. A provider `error=` or a failed exchange returns to the app with `login_error=`.
//!   (No origin check: the provider's redirect is cross-site by nature; `state` and the
//!   binding cookie are the defence.)
//! - `POST /auth/refresh` (CSRF header + origin check) → rotates our cookie, then hands out
//!   the provider's access token (cached, or renewed under the family's lease: one provider
//!   call per family at a time). With a DPoP proof and a provider that supports DPoP, the
//!   token is bound to the proof's key: a `DPoP-Upstream` proof for the provider's token
//!   endpoint is forwarded with the renewal, or asked for (400 `use_upstream_dpop`).
//! - `POST /auth/logout` (CSRF header + origin check) → revokes at the provider (RFC 7009)
//!   and the family; 200 with `end_session_url` when the provider supports RP-initiated
//!   logout, else 204.
//! - `GET /api/me` → checks the provider's access token: a JWT against the provider's JWKS
//!   ([`crate::upstream::access`]), an opaque token by introspection (RFC 7662); a bound one
//!   (`cnf.jkt`) only with a DPoP proof by its key.
//! - `GET /auth/config` → `{"loginUrl": "/auth/login"}`, so the demo page knows to show the
//!   provider's sign-in button (404 in built-in mode).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;
use subtle::ConstantTimeEq as _;
use url::Url;

use crate::error::{AppError, BearerFailure, DpopAt};
use crate::extract::{
    cleared_refresh_cookie, cookie_candidates, dpop_proof, presented_token, refresh_cookie,
    resource_dpop_error, ClientAddr, CsrfChecked, RefreshCookies, SameOrigin, Scheme,
};
use crate::metrics::bump;
use crate::routes::auth::RefreshCounted;
use crate::session::{self, NotRotated, Opened, Rotated};
use crate::state::AppState;
use crate::store::Family;
use crate::tokens::{hash_refresh_token, random_id};
use crate::upstream::{
    self, reusable, CheckError, Grant, Pending, ProviderError, Upstream, UpstreamDpop,
};

/// Cookie binding pending logins to the browser that started them. `__Host-` (no `Domain`,
/// `Path=/`): no other host can plant one. With `__Secure-`, a sibling host could set one for
/// the parent domain, so that the victim's browser completed the attacker's sign-in (login
/// CSRF: the app signed in as the attacker). One value serves every sign-in of the browser
/// under way: a second one (another tab) reuses it rather than replacing it, which made the
/// first one's callback fail, and a callback does not clear it (another may still come); it
/// expires with the last pending login.
pub const LOGIN_COOKIE: &str = "__Host-tw_login";
/// How long a pending login lives.
pub const PENDING_TTL_MS: i64 = 10 * 60 * 1000;
const PENDING_CONTEXT: &[u8] = b"tokenwarden pending login";

/// The upstream routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/config", get(config))
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/auth/backchannel-logout", post(backchannel_logout))
        .route("/api/me", get(me))
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

fn login_cookie(value: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={value}; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age={}",
        PENDING_TTL_MS / 1000
    ))
    .ok()
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

/// 400 for a refused login or callback. The login-binding cookie is left alone: it may belong
/// to another sign-in of this browser still under way (a forged callback must not end it).
fn refused(description: &str) -> Response {
    AppError::InvalidRequest(description.into()).into_response()
}

/// `GET /auth/config`: how the page signs in.
pub async fn config() -> Response {
    Json(json!({ "loginUrl": "/auth/login" })).into_response()
}

/// `GET /auth/login?returnTo=`.
pub async fn login(
    State(state): State<AppState>,
    _: SameOrigin,
    ClientAddr(addr): ClientAddr,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let up = upstream(&state)?;
    if let Err(wait) = state.login_limiter.sign_in_started(addr) {
        tracing::info!("sign-in start refused: too many from this address");
        return Err(AppError::RateLimited(wait));
    }
    let Some(return_to) = up
        .config
        .return_url(query_param(&uri, "returnTo").as_deref())
    else {
        tracing::info!("login refused: returnTo is not on the allow-list");
        return Ok(refused("returnTo is not an allowed URL"));
    };
    let (url, csrf, verifier, nonce) = up.authorize();
    // The browser's binding if it has one (a sign-in already under way), else a new one.
    let binding = cookie_candidates(&headers, LOGIN_COOKIE)
        .into_iter()
        .find(|v| v.len() == 43)
        .unwrap_or_else(|| random_id(32));
    let expires_at_ms = state.now_ms() + PENDING_TTL_MS;
    let pending = Pending {
        binding: binding_hash(&binding),
        verifier: verifier.secret().clone(),
        nonce: nonce.secret().clone(),
        return_to: return_to.to_string(),
        expires_at_ms,
    };
    let sealed = up.key.seal(PENDING_CONTEXT, &serde_json::to_vec(&pending)?);
    up.store
        .put_pending(&hash_refresh_token(csrf.secret()), &sealed, expires_at_ms)
        .await?;
    Ok(see_other(url.as_str(), login_cookie(&binding).as_slice()))
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
        .take_pending(&hash_refresh_token(&state_param), now)
        .await?
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
    // Every candidate is tried: a cookie planted next to the real one cannot hide it.
    let bound = cookie_candidates(&headers, LOGIN_COOKIE)
        .iter()
        .any(|v| bool::from(binding_hash(v).as_bytes().ct_eq(pending.binding.as_bytes())));
    if !bound {
        tracing::info!("callback refused: the sign-in was started in another browser");
        // Put back: the browser that started it may still come back with it (the callback
        // URL opened elsewhere, or forged from a leaked one, used to end the owner's sign-in).
        if pending.expires_at_ms > now {
            up.store
                .put_pending(
                    &hash_refresh_token(&state_param),
                    &sealed,
                    pending.expires_at_ms,
                )
                .await?;
        }
        return Ok(refused("sign-in failed: started in another browser"));
    }
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
        return Ok(back_to_app(&pending.return_to, &code, &[]));
    }
    let Some(code) = query_param(&uri, "code") else {
        return Ok(back_to_app(&pending.return_to, "invalid_request", &[]));
    };
    let nonce = if up.tamper_next_nonce.swap(false, Ordering::SeqCst) {
        random_id(16)
    } else {
        pending.nonce
    };
    let issued = upstream::IssueWindow {
        started_ms: pending.expires_at_ms.saturating_sub(PENDING_TTL_MS),
        now_ms: now,
        leeway_ms: state.tunables().leeway_s.max(0).saturating_mul(1000),
    };
    let grant = match up
        .exchange(code, pending.verifier, &nonce, now, issued)
        .await
    {
        Ok(grant) => grant,
        Err(e) => {
            let code = match &e {
                ProviderError::Unavailable | ProviderError::RetryAfter(_) => {
                    "temporarily_unavailable"
                }
                ProviderError::InvalidGrant => "invalid_grant",
                ProviderError::BadIdToken(_) => "invalid_id_token",
                ProviderError::Malformed(_)
                | ProviderError::NeedDpopProof
                | ProviderError::DpopProofRefused
                | ProviderError::FamilyEnded => "server_error",
            };
            tracing::warn!(error = code, detail = ?e, "sign-in failed at the code exchange");
            return Ok(back_to_app(&pending.return_to, code, &[]));
        }
    };
    // The provider has issued a grant: if the store cannot keep it, no queue row will ever
    // cover it, so it is revoked there and then, and the sign-in fails.
    let Opened {
        family,
        refresh_token,
        capped,
    } = match session::open_family(&state, &grant.sub, now).await {
        Ok(opened) => opened,
        Err(e) => {
            up.revoke_unqueued(&grant).await;
            return Err(e);
        }
    };
    let stored = store_grant(&up, &family, &grant).await;
    if stored.is_err() {
        up.revoke_unqueued(&grant).await;
    }
    // The families over the cap are ended on our side already. Ending their grants may fail
    // (each then falls back to a direct revocation): that is logged, not made this sign-in's
    // failure, which would strand its new grant under a family whose cookie is never sent.
    for id in &capped {
        if let Err(e) = end_grant(&up, id, now).await {
            tracing::warn!(family = %id, error = ?e,
                "the grant of a family ended by the per-user cap could not be queued for revocation");
        }
    }
    stored?;
    bump(&state.metrics.counters.logins_served);
    tracing::info!(family = %family.id, "upstream session started");
    let max_age = session::family_remaining_s(family.expires_at_ms, now);
    Ok(see_other(
        &pending.return_to,
        &[refresh_cookie(&refresh_token, max_age)],
    ))
}

/// Keep a new family's grant: its access token noted ([`note_access_token`]), then the grant.
async fn store_grant(
    up: &Upstream,
    family: &Family,
    grant: &Grant,
) -> Result<(), crate::store::StoreError> {
    note_access_token(up, &family.id, grant).await?;
    // The provider session it came from, for back-channel logout: the ID token's sid.
    let sid = grant
        .id_token
        .as_deref()
        .and_then(upstream::backchannel::id_token_sid);
    up.store
        .note_session(&family.id, &grant.sub, sid.as_deref(), family.expires_at_ms)
        .await?;
    let sealed = up.seal_grant(&family.id, grant);
    up.store
        .put_grant(&family.id, &sealed, family.expires_at_ms)
        .await
}

fn token_response(state: &AppState, grant: &Grant, now_ms: i64, cookie: HeaderValue) -> Response {
    let expires_in = ((grant.access_expires_at_ms - now_ms).max(0)) / 1000;
    let response = (
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
            (header::SET_COOKIE, cookie),
        ],
        Json(json!({
            "access_token": grant.access_token,
            "token_type": if grant.dpop_bound { "DPoP" } else { "Bearer" },
            "expires_in": expires_in,
        })),
    )
        .into_response();
    super::with_dpop_nonce(state, response)
}

/// The request header of a proof for the provider's token endpoint.
pub const UPSTREAM_PROOF_HEADER: &str = "dpop-upstream";

/// 400 `use_upstream_dpop`: the family's provider token is to be (re)bound to the browser's
/// key and a proof for the provider's token endpoint is needed (none came, or the provider
/// refused it or wants its nonce). The body names that endpoint (`dpop_upstream_htu`) and
/// the provider's last nonce (`dpop_upstream_nonce`); the browser retries once with a
/// `DPoP-Upstream` proof. Our cookie has rotated already: it is set here too.
fn upstream_dpop_challenge(state: &AppState, up: &Upstream, cookie: HeaderValue) -> Response {
    upstream::bump(&up.counters.dpop_challenges);
    let mut body = json!({ "error": "use_upstream_dpop" });
    if let Some(htu) = up.token_endpoint() {
        body["dpop_upstream_htu"] = json!(htu.as_str());
    }
    if let Some(nonce) = up.provider_nonce() {
        body["dpop_upstream_nonce"] = json!(nonce);
    }
    let response = (
        StatusCode::BAD_REQUEST,
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::SET_COOKIE, cookie),
        ],
        Json(body),
    )
        .into_response();
    super::with_dpop_nonce(state, response)
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

/// A refresh the provider's token endpoint answered 429 or 503 with `Retry-After`: 503
/// with the provider's wait passed on to the browser (whole seconds, rounded up; at least
/// 1 s, at most an hour, as the revocation queue caps it), so the client's next attempt
/// waits as the provider asked instead of its own backoff.
fn provider_busy(
    asked: upstream::revocation::RetryAfter,
    now_ms: i64,
    cookie: HeaderValue,
) -> Response {
    let wait_ms = asked
        .wait_ms(now_ms)
        .min(upstream::revocation::LONGEST_RETRY_MS);
    let secs = (wait_ms.saturating_add(999) / 1000).max(1);
    let mut response = provider_failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        cookie,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// The family's grant, opened (`None` if there is none or it does not open).
pub async fn load_grant(up: &Upstream, family_id: &str) -> Result<Option<Grant>, AppError> {
    Ok(up
        .store
        .grant(family_id)
        .await?
        .and_then(|sealed| up.open_grant(family_id, &sealed)))
}

/// The family's provider access token: the cached one while [`reusable`] (for this DPoP key),
/// else renewed at the provider by whoever holds the family's lease; the others wait for its
/// result. A renewal for a DPoP key needs the browser's proof for the provider
/// ([`ProviderError::NeedDpopProof`] without one). A family that ended meanwhile (logout,
/// reuse, the cap, on any instance) gets [`ProviderError::FamilyEnded`]: no grant is handed
/// out (a renewal racing the end may have stored one that is about to be revoked), and no
/// grant gone because of the end is mistaken for one the provider refused.
pub async fn access_for(
    state: &AppState,
    up: &Arc<Upstream>,
    family: &Family,
    dpop: Option<&UpstreamDpop>,
) -> Result<Result<Grant, ProviderError>, AppError> {
    let key = dpop.map(|d| d.jkt.as_str());
    let family_id = family.id.as_str();
    let holder = random_id(12);
    let deadline = tokio::time::Instant::now() + up.config.timeout + Duration::from_secs(2);
    let ttl_ms = i64::try_from(up.lease_ttl().as_millis()).unwrap_or(i64::MAX);
    let mut waited = false;
    loop {
        let now = state.now_ms();
        let Some(grant) = load_grant(up, family_id).await? else {
            return Ok(Err(no_grant(up, family_id).await?));
        };
        if reusable(&grant, now, key) {
            if up.store.family_ended(family_id).await? {
                return Ok(Err(ProviderError::FamilyEnded));
            }
            if !waited {
                upstream::bump(&up.counters.cached_served);
            }
            return Ok(Ok(grant));
        }
        if up.store.try_lease(family_id, &holder, now, ttl_ms).await? {
            // Someone may have renewed between our read and our lease.
            let grant = match load_grant(up, family_id).await? {
                Some(g) if reusable(&g, now, key) => {
                    up.store.release_lease(family_id, &holder).await?;
                    if up.store.family_ended(family_id).await? {
                        return Ok(Err(ProviderError::FamilyEnded));
                    }
                    return Ok(Ok(g));
                }
                Some(_) if dpop.is_some_and(|d| d.proof.is_none()) => {
                    up.store.release_lease(family_id, &holder).await?;
                    return Ok(Err(ProviderError::NeedDpopProof));
                }
                Some(g) => g,
                None => {
                    up.store.release_lease(family_id, &holder).await?;
                    return Ok(Err(no_grant(up, family_id).await?));
                }
            };
            // The provider call and the write of its answer run to the end even when our
            // caller goes away: a rotated provider refresh token must never be lost.
            let task = tokio::spawn(renew(
                up.clone(),
                family_id.to_string(),
                grant,
                family.expires_at_ms,
                holder,
                now,
                dpop.cloned(),
            ));
            return match task.await {
                Ok(Ok(result)) => Ok(result),
                Ok(Err(store_error)) => Err(store_error.into()),
                Err(_) => Err(AppError::Internal("provider refresh task failed".into())),
            };
        }
        if !waited {
            upstream::bump(&up.counters.lease_waits);
            waited = true;
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Err(ProviderError::Unavailable));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Why the family has no grant: it ended (its grant went to the revocation queue; a racing
/// renewal's grant goes there too), or the provider refused it earlier (deleted).
async fn no_grant(up: &Upstream, family_id: &str) -> Result<ProviderError, AppError> {
    Ok(if up.store.family_ended(family_id).await? {
        ProviderError::FamilyEnded
    } else {
        ProviderError::InvalidGrant
    })
}

/// Renew the family's grant at the provider and store the answer, by `holder` of the
/// family's lease (given back at the end). A renewed grant is stored whatever happens (the
/// provider may have rotated its refresh token), then revoked if the family ended meanwhile
/// ([`store_renewed`]): its access token is then not handed out ([`ProviderError::FamilyEnded`]).
async fn renew(
    up: Arc<Upstream>,
    family_id: String,
    grant: Grant,
    expires_at_ms: i64,
    holder: String,
    now: i64,
    dpop: Option<UpstreamDpop>,
) -> Result<Result<Grant, ProviderError>, crate::store::StoreError> {
    let result = up.refresh(&grant, now, dpop.as_ref()).await;
    let stored = match &result {
        Ok(renewed) => store_renewed(&up, &family_id, renewed, expires_at_ms, now).await,
        Err(ProviderError::InvalidGrant) => up.store.delete_grant(&family_id).await.map(|()| false),
        Err(_) => Ok(false),
    };
    let released = up.store.release_lease(&family_id, &holder).await;
    let ended = stored?;
    released?;
    if ended {
        return Ok(Err(ProviderError::FamilyEnded));
    }
    Ok(result)
}

/// Store a grant the provider just renewed; `true` when the family had ended meanwhile, in
/// which case the renewed grant has gone to the revocation queue ([`Upstream::revoke_grant`]).
///
/// Why no interleaving leaves the renewed grant live: an end ([`end_grant`]) is E1 =
/// `end_access_tokens`, then E2 = `queue_revocation` (which moves whatever grant is stored);
/// this is R1 = `put_grant`, then R2 = `family_ended`, then (if ended) R3 =
/// `queue_revocation`. Each is one store operation (one statement or transaction on
/// PostgreSQL and SQLite, under the lock in memory) and each side starts its second only once
/// its first has completed. If R2 sees the end, R3 comes after R1 and moves the renewed grant
/// (or finds it moved by E2 already, which also came after R1). If R2 does not see the end, E1
/// completed after R2 began, so E2 began after R1 had completed and moves the renewed grant.
/// Either way a `queue_revocation` comes after `put_grant`, and each queued grant is a row of
/// its own, settled by the attempt on it alone.
///
/// That argument needs every other way out of `upstream_grants` between R1 and R3 to be a
/// move to the queue too. Those ways are: another end (E2 again: a move); [`forget_grant`]
/// (the provider refused the grant; it queues rather than deletes, so a grant it did not see
/// is revoked, not lost); purge (moves expired grants); and the renewal's own `delete_grant`
/// after the provider refused the grant it holds the lease for. Nothing else writes a grant
/// meanwhile: the renewal keeps the family's lease until it returns (`queue_revocation` does
/// not drop it), so no other request renews the family. A request waiting on the lease that
/// finds no grant asks `family_ended` and answers [`ProviderError::FamilyEnded`] (not
/// `InvalidGrant`, which would send it to `forget_grant`); one that finds the renewed grant
/// asks too before handing it out ([`access_for`]). The end stays recorded in the store far
/// longer than a renewal takes (purged only after the maintenance grace, once no token of
/// the family is left).
///
/// The maintenance sweep ([`Upstream::queue_ended_grants`], S) is one more way out, and a
/// move too: one store operation that moves the stored grants (at most a bound per pass)
/// whose family's end is recorded. It never takes a live family's grant: it moves only grants
/// of ended families, and an end is never undone (only purged, long after). It never queues
/// a grant twice: it takes the grant out of `upstream_grants` as it queues it, like E2 and
/// R3, so whichever of them comes second finds nothing (on PostgreSQL a row another
/// statement is writing is skipped, left to the next pass). Run between R1 and R2 it moves
/// the renewed grant, and R2 sees the end (recorded before S moved anything of the family),
/// so R3 finds none and the renewal answers `FamilyEnded`. It closes what the argument above
/// leaves open when a store call fails: R2 failing after R1 (the renewal cannot tell whether
/// E2 came before R1), or E2 failing while the provider is down (the direct revocation fails
/// too). Either way the grant stays in `upstream_grants` with its family's end recorded, and
/// the next pass, within a minute, moves it to the queue and tries it. An E1 that fails is
/// covered too: every end but the provider's own refusal ([`forget_grant`]) comes after the
/// family's revocation on the refresh side (logout, reuse, the cap), and the store counts a
/// revoked family as ended (`family_ended`, `access_token_ended`, the sweep) whether or not
/// E1 recorded it.
async fn store_renewed(
    up: &Upstream,
    family_id: &str,
    renewed: &Grant,
    expires_at_ms: i64,
    now: i64,
) -> Result<bool, crate::store::StoreError> {
    let noted = note_access_token(up, family_id, renewed).await;
    // An access token that could not be noted is never handed out from the cache.
    let mut kept = renewed.clone();
    if noted.is_err() {
        kept.access_expires_at_ms = 0;
    }
    let sealed = up.seal_grant(family_id, &kept);
    up.store
        .put_grant(family_id, &sealed, expires_at_ms)
        .await?;
    if up.store.family_ended(family_id).await? {
        tracing::info!(family = %family_id, "the family ended during a provider renewal: the renewed grant is revoked");
        // `now` is when the renewal began: the revocation's claim (a lease longer than the
        // provider call's timeout) still holds, and a retry a little early is harmless.
        up.revoke_grant(family_id, now).await?;
        return Ok(true);
    }
    noted.map(|()| false)
}

/// `POST /auth/refresh` in upstream mode. Every candidate cookie is tried in order; the
/// cookie is cleared only when the request carried exactly one (as in the built-in mode).
pub async fn refresh(
    State(state): State<AppState>,
    csrf: Result<CsrfChecked, AppError>,
    RefreshCookies(candidates): RefreshCookies,
    counted: Option<Extension<RefreshCounted>>,
    parts: Parts,
) -> Response {
    let counters = &state.metrics.counters;
    if counted.is_none() {
        bump(&counters.refresh_requests);
    }
    let outcome = match csrf {
        Ok(CsrfChecked) => refresh_response(&state, &candidates, &parts).await,
        Err(e) => Err(e),
    };
    let response = match outcome {
        Ok(r) => r,
        Err(error) => {
            let refused = matches!(error, AppError::InvalidGrant);
            let mut response = error.into_response();
            if refused && candidates.len() == 1 {
                response
                    .headers_mut()
                    .insert(header::SET_COOKIE, cleared_refresh_cookie());
            }
            response
        }
    };
    match response.status() {
        StatusCode::OK => bump(&counters.refreshes_served),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => bump(&counters.refresh_rejected),
        _ => {}
    }
    response
}

/// Rotate the first live candidate; reuse of a retired one also ends its provider grant. A
/// proof by a key the family may not take is refused as in the built-in mode (400, the
/// cookie kept).
async fn rotate_any(
    state: &AppState,
    up: &Upstream,
    candidates: &[String],
    now: i64,
    jkt: Option<&str>,
) -> Result<Rotated, AppError> {
    let mut wrong_key = false;
    for token in candidates {
        match session::rotate_family(state, token, now, jkt).await? {
            Ok(rotated) => return Ok(rotated),
            Err(NotRotated::Reused { family_id }) => {
                end_grant(up, &family_id, now).await?;
            }
            Err(NotRotated::ProofRefused) => wrong_key = true,
            Err(NotRotated::Refused(_)) => {}
        }
    }
    if wrong_key {
        return Err(AppError::Dpop {
            at: DpopAt::Token,
            error: "invalid_dpop_proof",
            nonce: state.dpop_nonce(),
        });
    }
    Err(AppError::InvalidGrant)
}

/// The request's DPoP proof was refused before any cookie was looked at: as in the built-in
/// mode, `refusal` is the answer only if a cookie would otherwise have rotated; a retired
/// one is still reuse (and ends its provider grant), a dead one `invalid_grant`.
async fn hold_all(
    state: &AppState,
    up: &Upstream,
    candidates: &[String],
    now: i64,
    refusal: AppError,
) -> AppError {
    let mut held = false;
    for token in candidates {
        let settled = match session::hold(state, token, now).await {
            Ok(settled) => settled,
            Err(e) => return e,
        };
        match settled {
            NotRotated::ProofRefused => held = true,
            NotRotated::Reused { family_id } => {
                if let Err(e) = end_grant(up, &family_id, now).await {
                    return e;
                }
            }
            NotRotated::Refused(_) => {}
        }
    }
    if held {
        refusal
    } else {
        AppError::InvalidGrant
    }
}

/// The DPoP side of an upstream refresh: the key of the request's proof (RFC 9449 §4.3 as in
/// the built-in mode), and, when the provider supports DPoP, what binding the provider's
/// token to that key takes — with the `DPoP-Upstream` proof, checked, if one came.
async fn upstream_dpop(
    state: &AppState,
    up: &Upstream,
    parts: &Parts,
) -> Result<(Option<String>, Option<UpstreamDpop>), AppError> {
    let refuse = |state: &AppState| {
        bump(&state.metrics.counters.dpop_refused);
        AppError::Dpop {
            at: DpopAt::Token,
            error: "invalid_dpop_proof",
            nonce: state.dpop_nonce(),
        }
    };
    let jkt = match dpop_proof(state, parts, DpopAt::Token, None).await? {
        Some(p) => p.jkt,
        None if state.settings.dpop.required => return Err(refuse(state)),
        None => return Ok((None, None)),
    };
    if !up.dpop {
        return Ok((Some(jkt), None));
    }
    let mut values = parts.headers.get_all(UPSTREAM_PROOF_HEADER).iter();
    let proof = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(v), None) => {
            let text = v.to_str().map_err(|_| refuse(state))?;
            let s = &state.settings.dpop;
            let leeway_s = state.tunables().leeway_s.max(0);
            up.check_upstream_proof(text, &jkt, state.now_ms(), s.max_age_s, leeway_s)
                .map_err(|e| {
                    tracing::info!(check = ?e, "DPoP-Upstream proof refused");
                    refuse(state)
                })?;
            Some(text.to_string())
        }
        (Some(_), Some(_)) => return Err(refuse(state)),
    };
    let dpop = UpstreamDpop {
        jkt: jkt.clone(),
        proof,
    };
    Ok((Some(jkt), Some(dpop)))
}

async fn refresh_response(
    state: &AppState,
    candidates: &[String],
    parts: &Parts,
) -> Result<Response, AppError> {
    let up = upstream(state)?;
    let now = state.now_ms();
    let (jkt, dpop) = match upstream_dpop(state, &up, parts).await {
        Ok(found) => found,
        Err(refusal @ AppError::Dpop { .. }) => {
            return Err(hold_all(state, &up, candidates, now, refusal).await)
        }
        Err(e) => return Err(e),
    };
    let Rotated {
        family,
        refresh_token,
    } = rotate_any(state, &up, candidates, now, jkt.as_deref()).await?;
    let remaining_s = session::family_remaining_s(family.expires_at_ms, now);
    let cookie = refresh_cookie(&refresh_token, remaining_s);
    match access_for(state, &up, &family, dpop.as_ref()).await? {
        Ok(grant) => {
            // The DPoP key rule waits until the old key's tokens may have expired: count the
            // provider's lifetime too.
            state.note_token_life(grant.access_lifetime_ms);
            Ok(token_response(state, &grant, state.now_ms(), cookie))
        }
        Err(ProviderError::NeedDpopProof | ProviderError::DpopProofRefused) => {
            tracing::info!(family = %family.id, "a proof for the provider's token endpoint is needed");
            Ok(upstream_dpop_challenge(state, &up, cookie))
        }
        Err(ProviderError::FamilyEnded) => {
            // Ended by another request while the provider answered (the renewed grant is
            // revoked): nothing to hand out. Ending our side again is harmless.
            tracing::info!(family = %family.id, "the family ended during its renewal");
            session::end_family_of(state, &refresh_token, "ended during a provider renewal")
                .await?;
            Ok(invalid_grant())
        }
        Err(ProviderError::InvalidGrant) => {
            tracing::info!(family = %family.id, "provider refused the grant; family ends");
            session::end_family_of(state, &refresh_token, "provider refused the grant").await?;
            forget_grant(&up, &family.id, state.now_ms()).await?;
            // The cookie just rotated is ours: clearing it is safe.
            Ok(invalid_grant())
        }
        Err(ProviderError::Unavailable) => {
            tracing::warn!(family = %family.id, "provider unavailable during refresh");
            // Like a store failure's 503: the client waits 2 s, not its own shorter backoff.
            Ok(provider_busy(
                upstream::revocation::RetryAfter::Seconds(crate::error::STORE_RETRY_AFTER_S),
                state.now_ms(),
                cookie,
            ))
        }
        Err(ProviderError::RetryAfter(asked)) => {
            tracing::warn!(family = %family.id, "provider busy during refresh (Retry-After)");
            Ok(provider_busy(asked, state.now_ms(), cookie))
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

/// Remember the hash of the grant's access token (a JWT; an opaque one is introspected at
/// each use), before the grant that hands it out is stored: once the family ends, `/api/me`
/// refuses it ([`me_claims`]), whichever instance handed it out or is asked.
async fn note_access_token(
    up: &Upstream,
    family_id: &str,
    grant: &Grant,
) -> Result<(), crate::store::StoreError> {
    if !upstream::access::looks_like_jwt(&grant.access_token) {
        return Ok(());
    }
    let hash = upstream::access_token_hash(&grant.access_token);
    up.store
        .note_access_token(family_id, &hash, noted_until(grant))
        .await
}

/// How long a noted access token is kept: until the later of what `expires_in` said and the
/// JWT's own `exp`. A provider may omit `expires_in` (it is only RECOMMENDED; the grant then
/// assumes 60 s) or state less than the token lives, and once its row is purged an ended
/// family's token would be accepted again until its `exp`.
fn noted_until(grant: &Grant) -> i64 {
    upstream::access::unverified_exp_ms(&grant.access_token)
        .map_or(grant.access_expires_at_ms, |exp| {
            exp.max(grant.access_expires_at_ms)
        })
}

#[cfg(test)]
mod noted_until_tests {
    use super::*;

    fn grant(access_token: &str, access_expires_at_ms: i64) -> Grant {
        Grant {
            sub: "u".into(),
            refresh_token: None,
            access_token: access_token.into(),
            access_expires_at_ms,
            access_lifetime_ms: 60_000,
            id_token: None,
            dpop_key: None,
            dpop_bound: false,
        }
    }

    fn jwt(exp_s: i64) -> String {
        let b = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.sig",
            b(json!({"alg": "ES256"})),
            b(json!({"exp": exp_s}))
        )
    }

    #[test]
    fn a_noted_token_is_kept_until_the_later_of_expires_in_and_its_exp() {
        // expires_in absent (the grant assumed 60 s) for a token living 2 h: kept 2 h.
        assert_eq!(noted_until(&grant(&jwt(7_200), 60_000)), 7_200_000);
        // expires_in longer than exp: kept as long as expires_in said.
        assert_eq!(noted_until(&grant(&jwt(60), 120_000)), 120_000);
        // No exp (or not a JWT): expires_in.
        assert_eq!(noted_until(&grant("opaque", 60_000)), 60_000);
    }
}

/// The family ended because the provider refused its grant: its provider access tokens are
/// refused from now on (every one handed out, [`note_access_token`]). The refused grant is
/// gone already (the renewal that was refused deleted it); a grant still stored is one this
/// request did not see (a renewal racing an end stored it), so it is not deleted but queued
/// for revocation (due at once, for maintenance): a rotated provider refresh token is never
/// dropped unrevoked.
///
/// If the store fails to record the end or to queue the grant, the grant still stored is
/// revoked at the provider directly ([`Upstream::revoke_stored_now`]).
async fn forget_grant(up: &Upstream, family_id: &str, now_ms: i64) -> Result<(), AppError> {
    let queued = match up.store.end_access_tokens(family_id, now_ms).await {
        Ok(()) => up.store.queue_revocation(family_id, now_ms).await,
        Err(e) => Err(e),
    };
    if let Err(e) = queued {
        up.revoke_stored_now(family_id).await;
        return Err(e.into());
    }
    Ok(())
}

/// The family ended (logout, reuse, the per-user cap): its provider access tokens are
/// refused from now on, and its grant is revoked at the provider — at once, or by maintenance
/// once the provider answers again ([`Upstream::revoke_grant`]). If the store fails to record
/// the end or to queue the grant, the grant still stored is revoked at the provider directly
/// ([`Upstream::revoke_stored_now`]).
pub(crate) async fn end_grant(
    up: &Upstream,
    family_id: &str,
    now_ms: i64,
) -> Result<Option<Grant>, AppError> {
    if let Err(e) = up.store.end_access_tokens(family_id, now_ms).await {
        up.revoke_stored_now(family_id).await;
        return Err(e.into());
    }
    Ok(up.revoke_grant(family_id, now_ms).await?)
}

/// `POST /auth/logout` in upstream mode: the family of every candidate cookie ends, at the
/// provider too. A store failure is answered as in the built-in mode
/// ([`super::auth::logout`]): its 503, the cookie cleared all the same, the families not
/// ended noted for maintenance.
pub async fn logout(
    State(state): State<AppState>,
    _: CsrfChecked,
    RefreshCookies(candidates): RefreshCookies,
) -> Result<Response, AppError> {
    let up = upstream(&state)?;
    let mut end_session = None;
    let mut failed = None;
    for (i, token) in candidates.iter().enumerate() {
        let family_id = match session::end(&state, token).await {
            Ok(Some(family_id)) => family_id,
            Ok(None) => continue,
            Err(e) => {
                // As in the built-in mode: noted for maintenance (with the candidates not
                // tried yet), and the cookie cleared all the same.
                for token in &candidates[i..] {
                    session::note_failed_end(&state, token);
                }
                failed = Some(e);
                break;
            }
        };
        match end_grant(&up, &family_id, state.now_ms()).await {
            Ok(grant) => end_session = up.end_session_url(grant.as_ref()).or(end_session),
            // The family has ended here (its cookie cannot refresh); its grant was revoked
            // at the provider directly if it could be, else it waits for maintenance.
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
        tracing::info!(family = %family_id, "upstream session ended");
    }
    if let Some(e) = failed {
        return Ok(super::auth::clearing_cookie(e.into_response()));
    }
    bump(&state.metrics.counters.logouts);
    let headers = [
        (header::SET_COOKIE, cleared_refresh_cookie()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    Ok(match end_session {
        Some(url) => (headers, Json(json!({ "end_session_url": url.as_str() }))).into_response(),
        None => (StatusCode::NO_CONTENT, headers).into_response(),
    })
}

/// `POST /auth/backchannel-logout`: OpenID Connect Back-Channel Logout 1.0. The provider
/// POSTs a Logout Token (form field `logout_token`) when a session ends there; every family
/// signed in through that provider session ends as a logout ends it ([`end_grant`]: its
/// provider access tokens refused by `/api/me` from now on, its grant revoked at the provider,
/// its next refresh 401). No cookie and no CSRF header: the caller is the provider, and the
/// token's signature is what authenticates it.
///
/// 200 (`no-store`, empty) for a valid token, whether or not a family matched (§2.8). 400
/// `invalid_request` for a token that fails [`upstream::backchannel::verify_logout_token`],
/// or one whose `jti` was accepted before (a replay: a `sub`-only token replayed would end
/// sessions signed in since). The `jti` is remembered before the families end, so a store
/// failure after it (503) is not retried by the same token: each family whose end could not be
/// recorded had its grant revoked at the provider directly ([`end_grant`]), and the provider
/// has ended the session's refresh tokens itself in most set-ups.
pub async fn backchannel_logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let up = upstream(&state)?;
    let refused = |why: &str| {
        upstream::bump(&up.counters.backchannel_refused);
        tracing::info!(reason = %why, "back-channel logout refused");
        (
            StatusCode::BAD_REQUEST,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Json(json!({ "error": "invalid_request", "error_description": why })),
        )
            .into_response()
    };
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let mut tokens = url::form_urlencoded::parse(&body)
        .filter(|(k, _)| k == "logout_token")
        .map(|(_, v)| v);
    let (true, Some(logout_token), None) = (is_form, tokens.next(), tokens.next()) else {
        return Ok(refused("expected a form with one logout_token"));
    };
    let now = state.now_ms();
    let leeway_s = state.tunables().leeway_s.max(0);
    let claims = match up.verify_logout_token(&logout_token, now, leeway_s).await {
        Ok(claims) => claims,
        Err(upstream::access::JwtError::Invalid(detail)) => {
            return Ok(refused(&format!("invalid logout token: {detail}")))
        }
        Err(upstream::access::JwtError::Expired) => {
            return Ok(refused("invalid logout token: expired"))
        }
        Err(upstream::access::JwtError::UnknownKey) => {
            return Ok(refused("invalid logout token: unknown signing key"))
        }
    };
    let replay_key: [u8; 32] = {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"tokenwarden back-channel logout\0");
        h.update(up.config.issuer.as_bytes());
        h.update(b"\0");
        h.update(claims.jti.as_bytes());
        h.finalize().into()
    };
    let remember_until = claims.exp_ms.saturating_add(leeway_s.saturating_mul(1000));
    if !state
        .store
        .first_use_of_proof(&replay_key, remember_until, now)
        .await?
    {
        return Ok(refused("logout token replayed (jti seen)"));
    }
    upstream::bump(&up.counters.backchannel_logouts);
    let families = up
        .store
        .sessions_of(claims.sub.as_deref(), claims.sid.as_deref())
        .await?;
    let mut failed = None;
    let mut ended = 0u64;
    for family_id in &families {
        // One that ended already (a logout, an earlier Logout Token for the same subject).
        if up.store.family_ended(family_id).await? {
            continue;
        }
        match end_grant(&up, family_id, now).await {
            Ok(_) => ended += 1,
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    up.counters
        .backchannel_ended
        .fetch_add(ended, Ordering::Relaxed);
    tracing::info!(
        sessions = families.len(),
        ended,
        by_sid = claims.sid.is_some(),
        "back-channel logout: provider session ended"
    );
    if let Some(e) = failed {
        return Err(e);
    }
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
    )
        .into_response())
}

/// `GET /api/me` in upstream mode: the provider's token, checked against its JWKS (a JWT) or
/// by introspection (opaque). A token bound to a DPoP key (`cnf.jkt`) is accepted only under
/// the `DPoP` scheme with a valid proof by that key (RFC 9449 §7.1, the same checks as the
/// built-in mode's `/api/me`), an unbound one only as `Bearer`.
pub async fn me(State(state): State<AppState>, parts: Parts) -> Result<Response, AppError> {
    let up = upstream(&state)?;
    let c = &state.metrics.counters;
    bump(&c.api_calls);
    let outcome = me_claims(&state, &up, &parts).await;
    match &outcome {
        Ok(Ok(_)) => bump(&c.api_ok),
        Err(AppError::Unauthorized(BearerFailure::Missing)) => {
            bump(&c.api_unauthorized);
            bump(&c.api_no_token);
        }
        Err(AppError::Unauthorized(_) | AppError::Dpop { .. }) => bump(&c.api_unauthorized),
        _ => {}
    }
    let claims = match outcome? {
        Ok(claims) => claims,
        Err(CheckError::Unavailable) => {
            return Ok((
                StatusCode::SERVICE_UNAVAILABLE,
                [
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                    (
                        header::RETRY_AFTER,
                        HeaderValue::from(crate::error::STORE_RETRY_AFTER_S),
                    ),
                ],
                Json(json!({ "error": "temporarily_unavailable" })),
            )
                .into_response())
        }
        Err(CheckError::NoIntrospection) => {
            tracing::warn!("an opaque provider access token, and the provider offers no introspection: it cannot be checked");
            return Ok((
                StatusCode::NOT_IMPLEMENTED,
                [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
                Json(json!({
                    "error": "server_error",
                    "error_description": "this access token is opaque and the provider offers no \
                        introspection endpoint, so it cannot be checked here: have the provider \
                        issue JWT access tokens for this API (an audience or resource, see \
                        --oidc-audience) or offer token introspection (RFC 7662)",
                })),
            )
                .into_response());
        }
        Err(CheckError::Malformed(detail)) => {
            tracing::warn!(%detail, "introspection failed");
            return Ok((
                StatusCode::BAD_GATEWAY,
                Json(json!({ "error": "server_error" })),
            )
                .into_response());
        }
    };
    let response = (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(claims),
    )
        .into_response();
    Ok(super::with_dpop_nonce(&state, response))
}

/// The claims of the request's provider token, after the scheme and DPoP rules.
async fn me_claims(
    state: &AppState,
    up: &Upstream,
    parts: &Parts,
) -> Result<Result<upstream::access::ProviderClaims, CheckError>, AppError> {
    let dpop_error = |error: &'static str| resource_dpop_error(state, error);
    let required = state.settings.dpop.required;
    let (scheme, token) = presented_token(state, &parts.headers)?;
    let leeway_s = state.tunables().leeway_s.max(0);
    let claims = match up.check_access_token(token, state.now_ms(), leeway_s).await {
        Ok(Some(claims)) => claims,
        Ok(None) if scheme == Scheme::Bearer => {
            return Err(AppError::Unauthorized(BearerFailure::Invalid))
        }
        Ok(None) => return Err(dpop_error("invalid_token")),
        Err(e) => return Ok(Err(e)),
    };
    // A JWT stays valid at the provider until its exp: one this server handed out for a
    // family that has ended since (logout, reuse, …) is refused here. (An opaque token is
    // introspected: the provider answers inactive once the grant was revoked.)
    if claims.checked_by == "jwt"
        && up
            .store
            .access_token_ended(&upstream::access_token_hash(token))
            .await?
    {
        bump(&state.metrics.counters.api_revoked_tokens);
        tracing::info!("provider access token refused: its family has ended");
        return Err(match scheme {
            Scheme::Bearer => AppError::Unauthorized(BearerFailure::Revoked),
            Scheme::Dpop => dpop_error("invalid_token"),
        });
    }
    match (scheme, claims.jkt.as_deref()) {
        (Scheme::Bearer, None) if !required => Ok(Ok(claims)),
        (Scheme::Bearer, None) => Err(dpop_error("")),
        // A bound token sent as a plain Bearer token: no proof of possession.
        (Scheme::Bearer, Some(_)) => Err(AppError::Unauthorized(BearerFailure::Invalid)),
        (Scheme::Dpop, None) => Err(dpop_error("invalid_token")),
        (Scheme::Dpop, Some(jkt)) => {
            let proof = dpop_proof(state, parts, DpopAt::Resource, Some(token)).await?;
            match proof {
                Some(p) if p.jkt == jkt => Ok(Ok(claims)),
                _ => {
                    bump(&state.metrics.counters.dpop_refused);
                    Err(dpop_error("invalid_dpop_proof"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Notify;

    use super::*;
    use crate::store::{MemoryStore, UpstreamStore};
    use crate::upstream::config::{Secret, UpstreamConfig};

    const NOW: i64 = 1_000_000;
    const FAMILY_END: i64 = NOW + 86_400_000;

    /// A provider on a local port whose token endpoint answers a refresh only once the test
    /// releases it (after telling the test that the request arrived), and a code exchange at
    /// once (refresh token `rt-signin`, an ID token for `alice` whose nonce is the code: the
    /// test chooses both), and whose revocation endpoint is down (so that what is revoked
    /// stays in the queue to be looked at); it remembers the refresh tokens it was asked to
    /// revoke.
    struct FakeProvider {
        issuer: String,
        arrived: Arc<Notify>,
        release: Arc<Notify>,
        asked_to_revoke: Arc<Mutex<Vec<String>>>,
        /// When set, a revocation of rt-1 waits for `revoke_release`, then answers 200.
        hold_rt1: Arc<std::sync::atomic::AtomicBool>,
        revoke_arrived: Arc<Notify>,
        revoke_release: Arc<Notify>,
        /// When set, a revocation is answered with this status and `Retry-After` value.
        revoke_busy: Arc<Mutex<Option<(StatusCode, String)>>>,
        /// When set, a refresh at the token endpoint is answered so (status, `Retry-After`).
        token_busy: Arc<Mutex<Option<(StatusCode, String)>>>,
    }

    /// The provider's ID-token signing key.
    fn id_token_key() -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap()
    }

    fn id_token_jwks() -> serde_json::Value {
        let point = id_token_key().verifying_key().to_encoded_point(false);
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        json!({ "keys": [{"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
            "kid": "k1", "x": b(point.x().unwrap()), "y": b(point.y().unwrap())}] })
    }

    /// An ID token for `alice`, issued at `NOW` to `client`.
    fn id_token(issuer: &str, nonce: &str) -> String {
        use p256::ecdsa::signature::Signer as _;
        let b = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = json!({"iss": issuer, "aud": "client", "sub": "alice", "nonce": nonce,
            "iat": NOW / 1000, "exp": 4_000_000_000_i64, "sid": "sid-signin"});
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": "k1"});
        let input = format!("{}.{}", b(header), b(claims));
        let sig: p256::ecdsa::Signature = id_token_key().sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    fn form_value(body: &str, name: &str) -> String {
        url::form_urlencoded::parse(body.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    }

    impl FakeProvider {
        async fn start() -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let issuer = format!("http://{}", listener.local_addr().unwrap());
            let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
            let asked_to_revoke = Arc::new(Mutex::new(Vec::new()));
            let metadata = json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/auth"),
                "token_endpoint": format!("{issuer}/token"),
                "revocation_endpoint": format!("{issuer}/revoke"),
                "jwks_uri": format!("{issuer}/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
            });
            let (a, r, asked) = (arrived.clone(), release.clone(), asked_to_revoke.clone());
            let iss = issuer.clone();
            let hold_rt1 = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (revoke_arrived, revoke_release) =
                (Arc::new(Notify::new()), Arc::new(Notify::new()));
            let (h1, ra, rr) = (
                hold_rt1.clone(),
                revoke_arrived.clone(),
                revoke_release.clone(),
            );
            let revoke_busy = Arc::new(Mutex::new(None::<(StatusCode, String)>));
            let busy = revoke_busy.clone();
            let token_busy = Arc::new(Mutex::new(None::<(StatusCode, String)>));
            let tbusy = token_busy.clone();
            let router = Router::new()
                .route(
                    "/.well-known/openid-configuration",
                    get(move || async move { Json(metadata) }),
                )
                .route("/jwks", get(|| async { Json(id_token_jwks()) }))
                .route(
                    "/token",
                    post(move |body: String| async move {
                        if form_value(&body, "grant_type") == "authorization_code" {
                            return Json(json!({
                                "access_token": "at-signin",
                                "token_type": "Bearer",
                                "expires_in": 60,
                                "refresh_token": "rt-signin",
                                "id_token": id_token(&iss, &form_value(&body, "code")),
                            }))
                            .into_response();
                        }
                        if let Some((status, retry_after)) = tbusy.lock().unwrap().clone() {
                            return (status, [(header::RETRY_AFTER, retry_after)]).into_response();
                        }
                        let old = form_value(&body, "refresh_token");
                        a.notify_one();
                        r.notified().await;
                        Json(json!({
                            "access_token": format!("at-after-{old}"),
                            "token_type": "Bearer",
                            "expires_in": 60,
                            "refresh_token": format!("{old}-rotated"),
                        }))
                        .into_response()
                    }),
                )
                .route(
                    "/revoke",
                    post(move |body: String| async move {
                        let token = form_value(&body, "token");
                        asked.lock().unwrap().push(token.clone());
                        if token == "rt-1" && h1.load(std::sync::atomic::Ordering::SeqCst) {
                            ra.notify_one();
                            rr.notified().await;
                            return StatusCode::OK.into_response();
                        }
                        if let Some((status, retry_after)) = busy.lock().unwrap().clone() {
                            return (status, [(header::RETRY_AFTER, retry_after)]).into_response();
                        }
                        StatusCode::SERVICE_UNAVAILABLE.into_response()
                    }),
                );
            tokio::spawn(async move { axum::serve(listener, router).await });
            Self {
                issuer,
                arrived,
                release,
                asked_to_revoke,
                hold_rt1,
                revoke_arrived,
                revoke_release,
                revoke_busy,
                token_busy,
            }
        }

        fn asked_to_revoke(&self) -> Vec<String> {
            self.asked_to_revoke.lock().unwrap().clone()
        }
    }

    /// The upstream configuration of a client of `provider`.
    fn config_for(provider: &FakeProvider) -> UpstreamConfig {
        UpstreamConfig {
            issuer: provider.issuer.clone(),
            client_id: "client".into(),
            client_secret: Secret("secret".into()),
            redirect_uri: Url::parse("http://127.0.0.1/auth/upstream/callback").unwrap(),
            scopes: Vec::new(),
            allowed_return: Vec::new(),
            post_logout_uri: None,
            audience: "api".into(),
            timeout: Duration::from_secs(5),
            token_key: None,
        }
    }

    async fn upstream(provider: &FakeProvider) -> (Arc<Upstream>, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        let config = config_for(provider);
        let up = Upstream::connect(config, store.clone(), NOW).await.unwrap();
        (up, store)
    }

    fn grant(refresh_token: &str) -> Grant {
        Grant {
            sub: "u".into(),
            refresh_token: Some(refresh_token.into()),
            access_token: "at-old".into(),
            access_expires_at_ms: NOW,
            access_lifetime_ms: 60_000,
            id_token: None,
            dpop_key: None,
            dpop_bound: false,
        }
    }

    /// The family's grant stored, its lease held and its renewal started; returns once the
    /// provider has the refresh request (and holds its answer).
    async fn renewal_waiting_at_the_provider(
        provider: &FakeProvider,
        up: &Arc<Upstream>,
    ) -> tokio::task::JoinHandle<Result<Result<Grant, ProviderError>, crate::store::StoreError>>
    {
        let sealed = up.seal_grant("fam", &grant("rt-1"));
        up.store
            .put_grant("fam", &sealed, FAMILY_END)
            .await
            .unwrap();
        assert!(up
            .store
            .try_lease("fam", "holder", NOW, 11_000)
            .await
            .unwrap());
        let task = tokio::spawn(renew(
            up.clone(),
            "fam".into(),
            grant("rt-1"),
            FAMILY_END,
            "holder".into(),
            NOW,
            None,
        ));
        provider.arrived.notified().await;
        task
    }

    /// The refresh tokens of the grants waiting in the revocation queue.
    async fn queued_refresh_tokens(up: &Upstream, store: &MemoryStore) -> Vec<String> {
        let queued = store
            .claim_revocations(FAMILY_END * 2, 0, 10)
            .await
            .unwrap();
        queued
            .iter()
            .map(|q| {
                let g = up.open_grant(&q.family_id, &q.sealed).unwrap();
                g.refresh_token.unwrap_or_default()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_family_ended_while_the_provider_renews_its_grant_has_the_renewed_grant_revoked_and_nothing_handed_out(
    ) {
        let provider = FakeProvider::start().await;
        let (up, store) = upstream(&provider).await;
        let renewal = renewal_waiting_at_the_provider(&provider, &up).await;
        // Logout (on another instance, say) while the provider is answering: the old grant
        // goes to the revocation queue.
        end_grant(&up, "fam", NOW).await.unwrap();
        assert_eq!(store.grant("fam").await.unwrap(), None);
        // The provider answers the renewal with a new refresh token.
        provider.release.notify_one();
        let answer = renewal.await.unwrap().unwrap();
        assert_eq!(
            answer.err(),
            Some(ProviderError::FamilyEnded),
            "the renewed access token is not handed out"
        );
        assert_eq!(
            store.grant("fam").await.unwrap(),
            None,
            "no live grant is left for the ended family"
        );
        assert_eq!(
            queued_refresh_tokens(&up, &store).await,
            ["rt-1", "rt-1-rotated"],
            "the renewed grant waits for revocation (beside the old one, a row of its own)"
        );
        assert_eq!(provider.asked_to_revoke(), ["rt-1", "rt-1-rotated"]);
    }

    #[tokio::test]
    async fn a_family_ended_after_its_renewal_was_stored_has_the_renewed_grant_revoked() {
        let provider = FakeProvider::start().await;
        let (up, store) = upstream(&provider).await;
        let renewal = renewal_waiting_at_the_provider(&provider, &up).await;
        provider.release.notify_one();
        let renewed = renewal.await.unwrap().unwrap().unwrap();
        assert_eq!(renewed.refresh_token.as_deref(), Some("rt-1-rotated"));
        end_grant(&up, "fam", NOW).await.unwrap();
        assert_eq!(store.grant("fam").await.unwrap(), None);
        assert_eq!(queued_refresh_tokens(&up, &store).await, ["rt-1-rotated"]);
    }

    /// Logout's immediate revocation of the old grant is in flight when a racing renewal
    /// queues the renewed grant (whose own immediate attempt fails): the old grant's attempt,
    /// taken by the provider, settles its own queue row only; the renewed refresh token stays
    /// queued for maintenance.
    #[tokio::test]
    async fn a_logouts_attempt_on_the_old_grant_leaves_the_renewed_grant_queued_by_a_racing_renewal(
    ) {
        let provider = FakeProvider::start().await;
        provider
            .hold_rt1
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let (up, store) = upstream(&provider).await;
        let renewal = renewal_waiting_at_the_provider(&provider, &up).await;
        // Logout: the old grant is queued and its revocation is in flight at the provider.
        let up2 = up.clone();
        let logout = tokio::spawn(async move { end_grant(&up2, "fam", NOW).await.map(|_| ()) });
        provider.revoke_arrived.notified().await;
        // The renewal finishes: it sees the end and queues the renewed grant (a row of its
        // own); its own immediate attempt fails (503): it stays queued for maintenance.
        provider.release.notify_one();
        let answer = renewal.await.unwrap().unwrap();
        assert_eq!(answer.err(), Some(ProviderError::FamilyEnded));
        // The logout's attempt on rt-1 now succeeds: it drops its own row, not the renewal's.
        provider.revoke_release.notify_one();
        logout.await.unwrap().unwrap();
        assert_eq!(provider.asked_to_revoke(), ["rt-1", "rt-1-rotated"]);
        assert_eq!(
            queued_refresh_tokens(&up, &store).await,
            ["rt-1-rotated"],
            "the renewed grant must still wait for its revocation"
        );
    }

    /// A `forget_grant` (the provider-refused path) that runs between a racing renewal's
    /// `put_grant` (R1) and its `queue_revocation` (R3) does not delete the renewed grant it
    /// never saw: it queues it, so the rotated refresh token is still revoked.
    #[tokio::test]
    async fn a_forget_grant_between_a_renewals_put_and_queue_queues_the_renewed_grant_for_revocation(
    ) {
        let provider = FakeProvider::start().await;
        let inner = Arc::new(MemoryStore::new());
        let (reached, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let store = Arc::new(HookedStore::pausing(
            inner.clone(),
            "family_ended",
            reached.clone(),
            go.clone(),
        ));
        let config = config_for(&provider);
        let up = Upstream::connect(config, store, NOW).await.unwrap();
        let renewal = renewal_waiting_at_the_provider(&provider, &up).await;
        // A: logout ends the family; the old grant is queued (its revocation 503: stays).
        end_grant(&up, "fam", NOW).await.unwrap();
        // C: its access_for poll finds no grant -> InvalidGrant.
        assert!(load_grant(&up, "fam").await.unwrap().is_none());
        // B: the provider answers; put_grant(G2) done, B stops at family_ended.
        provider.release.notify_one();
        reached.notified().await;
        assert!(
            inner.grant("fam").await.unwrap().is_some(),
            "R1 done: the renewed grant is stored"
        );
        // C: refresh_response's InvalidGrant branch: forget_grant.
        forget_grant(&up, "fam", NOW).await.unwrap();
        go.notify_one();
        let answer = renewal.await.unwrap().unwrap();
        assert_eq!(answer.err(), Some(ProviderError::FamilyEnded));
        let queued = queued_refresh_tokens(&up, &inner).await;
        assert!(
            queued.contains(&"rt-1-rotated".to_string()),
            "the renewed refresh token must wait for revocation; queued: {queued:?}, asked: {:?}",
            provider.asked_to_revoke()
        );
    }

    /// A request asking for the family's access token after the family ended gets
    /// `FamilyEnded`: not the grant a racing renewal stored (about to be revoked), and not
    /// `InvalidGrant` (which would send it to `forget_grant`) when the end moved the grant.
    /// A family that did not end and has no grant (the provider refused it) is `InvalidGrant`.
    #[tokio::test]
    async fn a_request_for_an_ended_familys_token_gets_family_ended_not_its_grant_nor_invalid_grant(
    ) {
        let provider = FakeProvider::start().await;
        let (up, store) = upstream(&provider).await;
        let state = AppState::new(
            &crate::Config::default(),
            crate::keys::KeySet::generate(),
            store.clone(),
            Arc::new(crate::clock::ManualClock::new(NOW)),
        );
        let family = Family {
            id: "fam".into(),
            sub: "u".into(),
            expires_at_ms: FAMILY_END,
        };
        let mut fresh = grant("rt-1");
        fresh.access_expires_at_ms = NOW + 60_000;
        let sealed = up.seal_grant("fam", &fresh);
        store.put_grant("fam", &sealed, FAMILY_END).await.unwrap();
        let served = access_for(&state, &up, &family, None).await.unwrap();
        assert!(served.is_ok(), "a live family's reusable grant is served");
        // The family ends; a renewal racing the end has stored its grant, not yet queued.
        store.end_access_tokens("fam", NOW).await.unwrap();
        let answer = access_for(&state, &up, &family, None).await.unwrap();
        assert_eq!(answer.err(), Some(ProviderError::FamilyEnded));
        // The end moved the grant: still the end, not a refusal by the provider.
        assert!(store.queue_revocation("fam", NOW).await.unwrap().is_some());
        let answer = access_for(&state, &up, &family, None).await.unwrap();
        assert_eq!(answer.err(), Some(ProviderError::FamilyEnded));
        let other = Family {
            id: "refused".into(),
            ..family
        };
        let answer = access_for(&state, &up, &other, None).await.unwrap();
        assert_eq!(answer.err(), Some(ProviderError::InvalidGrant));
    }

    /// What a [`HookedStore`] runs before each call, given the call's name.
    type Before = Box<
        dyn Fn(
                &'static str,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<(), crate::store::StoreError>> + Send>,
            > + Send
            + Sync,
    >;

    /// A store in front of `inner` that runs `before` ahead of every call: a test makes the
    /// call of one name fail ([`HookedStore::failing`]: the database went away at that
    /// moment) or wait for its go ([`HookedStore::pausing`]).
    struct HookedStore {
        inner: Arc<MemoryStore>,
        before: Before,
    }

    impl HookedStore {
        /// The call named `fail` fails; every other call reaches `inner`.
        fn failing(inner: Arc<MemoryStore>, fail: &'static str) -> Self {
            let before: Before = Box::new(move |name| {
                Box::pin(async move {
                    if name == fail {
                        return Err(crate::store::StoreError(format!("{name}: connection lost")));
                    }
                    Ok(())
                })
            });
            Self { inner, before }
        }

        /// The call named `at` says it has `reached` it, then waits for `go`.
        fn pausing(
            inner: Arc<MemoryStore>,
            at: &'static str,
            reached: Arc<Notify>,
            go: Arc<Notify>,
        ) -> Self {
            let before: Before = Box::new(move |name| {
                let (reached, go) = (reached.clone(), go.clone());
                Box::pin(async move {
                    if name == at {
                        reached.notify_one();
                        go.notified().await;
                    }
                    Ok(())
                })
            });
            Self { inner, before }
        }
    }

    #[async_trait::async_trait]
    impl UpstreamStore for HookedStore {
        async fn put_pending(
            &self,
            key: &crate::tokens::TokenHash,
            sealed: &[u8],
            e: i64,
        ) -> Result<(), crate::store::StoreError> {
            (self.before)("put_pending").await?;
            self.inner.put_pending(key, sealed, e).await
        }
        async fn take_pending(
            &self,
            key: &crate::tokens::TokenHash,
            now: i64,
        ) -> Result<Option<Vec<u8>>, crate::store::StoreError> {
            (self.before)("take_pending").await?;
            self.inner.take_pending(key, now).await
        }
        async fn put_grant(
            &self,
            f: &str,
            s: &[u8],
            e: i64,
        ) -> Result<(), crate::store::StoreError> {
            (self.before)("put_grant").await?;
            self.inner.put_grant(f, s, e).await
        }
        async fn grant(&self, f: &str) -> Result<Option<Vec<u8>>, crate::store::StoreError> {
            (self.before)("grant").await?;
            self.inner.grant(f).await
        }
        async fn delete_grant(&self, f: &str) -> Result<(), crate::store::StoreError> {
            (self.before)("delete_grant").await?;
            self.inner.delete_grant(f).await
        }
        async fn try_lease(
            &self,
            f: &str,
            h: &str,
            n: i64,
            t: i64,
        ) -> Result<bool, crate::store::StoreError> {
            (self.before)("try_lease").await?;
            self.inner.try_lease(f, h, n, t).await
        }
        async fn release_lease(&self, f: &str, h: &str) -> Result<(), crate::store::StoreError> {
            (self.before)("release_lease").await?;
            self.inner.release_lease(f, h).await
        }
        async fn note_access_token(
            &self,
            f: &str,
            h: &crate::tokens::TokenHash,
            e: i64,
        ) -> Result<(), crate::store::StoreError> {
            (self.before)("note_access_token").await?;
            self.inner.note_access_token(f, h, e).await
        }
        async fn end_access_tokens(&self, f: &str, n: i64) -> Result<(), crate::store::StoreError> {
            (self.before)("end_access_tokens").await?;
            self.inner.end_access_tokens(f, n).await
        }
        async fn access_token_ended(
            &self,
            h: &crate::tokens::TokenHash,
        ) -> Result<bool, crate::store::StoreError> {
            (self.before)("access_token_ended").await?;
            self.inner.access_token_ended(h).await
        }
        async fn family_ended(&self, f: &str) -> Result<bool, crate::store::StoreError> {
            (self.before)("family_ended").await?;
            self.inner.family_ended(f).await
        }
        async fn queue_revocation(
            &self,
            f: &str,
            n: i64,
        ) -> Result<Option<crate::store::QueuedRevocation>, crate::store::StoreError> {
            (self.before)("queue_revocation").await?;
            self.inner.queue_revocation(f, n).await
        }
        async fn queue_ended_grants(
            &self,
            n: i64,
            lim: usize,
        ) -> Result<u64, crate::store::StoreError> {
            (self.before)("queue_ended_grants").await?;
            self.inner.queue_ended_grants(n, lim).await
        }
        async fn claim_revocations(
            &self,
            n: i64,
            l: i64,
            lim: usize,
        ) -> Result<Vec<crate::store::QueuedRevocation>, crate::store::StoreError> {
            (self.before)("claim_revocations").await?;
            self.inner.claim_revocations(n, l, lim).await
        }
        async fn retry_revocation(
            &self,
            id: i64,
            a: u32,
            n: i64,
        ) -> Result<(), crate::store::StoreError> {
            (self.before)("retry_revocation").await?;
            self.inner.retry_revocation(id, a, n).await
        }
        async fn drop_revocation(&self, id: i64) -> Result<(), crate::store::StoreError> {
            (self.before)("drop_revocation").await?;
            self.inner.drop_revocation(id).await
        }
        async fn give_up_revocations(&self, b: i64) -> Result<u64, crate::store::StoreError> {
            (self.before)("give_up_revocations").await?;
            self.inner.give_up_revocations(b).await
        }
        async fn purge_upstream(&self, b: i64) -> Result<u64, crate::store::StoreError> {
            (self.before)("purge_upstream").await?;
            self.inner.purge_upstream(b).await
        }
        async fn note_session(
            &self,
            f: &str,
            sub: &str,
            sid: Option<&str>,
            e: i64,
        ) -> Result<(), crate::store::StoreError> {
            (self.before)("note_session").await?;
            self.inner.note_session(f, sub, sid, e).await
        }
        async fn sessions_of(
            &self,
            sub: Option<&str>,
            sid: Option<&str>,
        ) -> Result<Vec<String>, crate::store::StoreError> {
            (self.before)("sessions_of").await?;
            self.inner.sessions_of(sub, sid).await
        }
    }

    /// A server in upstream mode whose upstream store fails `fail`, one family per user at
    /// most (the cap); the families are kept in the same memory store.
    async fn failing_at(
        provider: &FakeProvider,
        fail: &'static str,
    ) -> (AppState, Arc<Upstream>, Arc<MemoryStore>) {
        let inner = Arc::new(MemoryStore::new());
        let store = Arc::new(HookedStore::failing(inner.clone(), fail));
        let up = Upstream::connect(config_for(provider), store, NOW)
            .await
            .unwrap();
        let config = crate::Config {
            max_families_per_user: 1,
            ..crate::Config::default()
        };
        let state = AppState::new(
            &config,
            crate::keys::KeySet::generate(),
            inner.clone(),
            Arc::new(crate::clock::ManualClock::new(NOW)),
        );
        assert!(state.upstream.set(up.clone()).is_ok());
        (state, up, inner)
    }

    /// The provider's redirect back to `/auth/callback` with a code, in the browser that
    /// started the sign-in (its pending login stored, its binding cookie sent).
    async fn callback_with_a_code(state: &AppState, up: &Upstream) -> Result<Response, AppError> {
        let binding = random_id(32);
        let pending = Pending {
            binding: binding_hash(&binding),
            verifier: "v".repeat(43),
            nonce: "n-1".into(),
            return_to: "http://127.0.0.1/app".into(),
            expires_at_ms: NOW + PENDING_TTL_MS,
        };
        let sealed = up
            .key
            .seal(PENDING_CONTEXT, &serde_json::to_vec(&pending).unwrap());
        up.store
            .put_pending(
                &hash_refresh_token("state-1"),
                &sealed,
                pending.expires_at_ms,
            )
            .await
            .unwrap();
        let mut headers = HeaderMap::new();
        let cookie = format!("{LOGIN_COOKIE}={binding}");
        headers.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        // The fake provider's ID token carries the code as its nonce.
        let uri: Uri = "/auth/callback?state=state-1&code=n-1".parse().unwrap();
        callback(State(state.clone()), uri, headers).await
    }

    /// The refresh tokens of every grant still stored (purged into the queue to be read).
    async fn stored_refresh_tokens(up: &Upstream, store: &MemoryStore) -> Vec<String> {
        store.purge_upstream(FAMILY_END * 2).await.unwrap();
        let mut tokens = queued_refresh_tokens(up, store).await;
        tokens.sort();
        tokens
    }

    /// A Logout Token signed by the provider's ID-token key (`kid` k1), for `client`.
    fn logout_token(issuer: &str, changes: serde_json::Value) -> String {
        use p256::ecdsa::signature::Signer as _;
        let b = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let mut claims = json!({"iss": issuer, "aud": "client", "iat": NOW / 1000,
            "exp": NOW / 1000 + 120, "jti": "j-1", "sub": "alice", "sid": "sid-1",
            "events": { upstream::backchannel::EVENT: {} }});
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        let header = json!({"alg": "ES256", "typ": "logout+jwt", "kid": "k1"});
        let input = format!("{}.{}", b(&header), b(&claims));
        let sig: p256::ecdsa::Signature = id_token_key().sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    /// `POST /auth/logout` with one refresh cookie.
    async fn logout_with(state: &AppState, refresh_token: &str) -> Response {
        logout(
            State(state.clone()),
            CsrfChecked,
            RefreshCookies(vec![refresh_token.to_string()]),
        )
        .await
        .unwrap()
    }

    fn form_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers
    }

    async fn post_logout_token(state: &AppState, token: &str) -> Response {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("logout_token", token)
            .finish();
        backchannel_logout(State(state.clone()), form_headers(), body.into())
            .await
            .unwrap()
    }

    /// A sign-in notes the provider session it came through: the ID token's `sub` and `sid`.
    #[tokio::test]
    async fn a_sign_in_notes_its_provider_session_for_back_channel_logout() {
        let provider = FakeProvider::start().await;
        let (state, up, inner) = failing_at(&provider, "nothing").await;
        let answer = callback_with_a_code(&state, &up).await.unwrap();
        assert_eq!(answer.status(), StatusCode::SEE_OTHER);
        let families = inner
            .sessions_of(Some("alice"), Some("sid-signin"))
            .await
            .unwrap();
        assert_eq!(families.len(), 1, "{families:?}");
        assert!(inner.grant(&families[0]).await.unwrap().is_some());
    }

    /// Back-channel logout: a Logout Token naming a provider session ends the families signed
    /// in through it (their provider access tokens refused, their grants revoked at the
    /// provider), and no other; `sub` alone ends every family of that subject. A replayed,
    /// forged or malformed request is 400 and ends nothing.
    #[tokio::test]
    async fn a_logout_token_ends_the_families_of_its_provider_session_and_no_other() {
        let provider = FakeProvider::start().await;
        let (state, up, inner) = failing_at(&provider, "nothing").await;
        let families = [
            ("fam-1", "alice", Some("sid-1"), "rt-1"),
            ("fam-2", "alice", Some("sid-2"), "rt-2"),
            ("fam-3", "bob", Some("sid-1"), "rt-3"),
            ("fam-4", "alice", None, "rt-4"),
        ];
        for (family, sub, sid, rt) in families {
            inner
                .note_session(family, sub, sid, FAMILY_END)
                .await
                .unwrap();
            let sealed = up.seal_grant(family, &grant(rt));
            inner.put_grant(family, &sealed, FAMILY_END).await.unwrap();
            let at = upstream::access_token_hash(&format!("at-{family}"));
            inner
                .note_access_token(family, &at, FAMILY_END)
                .await
                .unwrap();
        }
        let ended = |family: &'static str| {
            let inner = inner.clone();
            async move {
                let at = upstream::access_token_hash(&format!("at-{family}"));
                let a = inner.family_ended(family).await.unwrap();
                assert_eq!(a, inner.access_token_ended(&at).await.unwrap(), "{family}");
                a
            }
        };
        let counter = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);

        let res = post_logout_token(&state, &logout_token(&provider.issuer, json!({}))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
        assert!(ended("fam-1").await, "alice's session sid-1");
        for other in ["fam-2", "fam-3", "fam-4"] {
            assert!(!ended(other).await, "{other} stays");
        }
        assert_eq!(provider.asked_to_revoke(), ["rt-1"]);
        assert_eq!(counter(&up.counters.backchannel_logouts), 1);
        assert_eq!(counter(&up.counters.backchannel_ended), 1);

        // The same token again: a replay.
        let res = post_logout_token(&state, &logout_token(&provider.issuer, json!({}))).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(counter(&up.counters.backchannel_refused), 1);

        // Refused, ending nothing: forged (another key under k1), for another client, with a
        // nonce (an ID token), not a form, two logout_token fields.
        let forged = {
            let t = logout_token(&provider.issuer, json!({"jti": "j-f", "sid": null}));
            let (input, _) = t.rsplit_once('.').unwrap();
            use p256::ecdsa::signature::Signer as _;
            let other = p256::ecdsa::SigningKey::from_slice(&[9; 32]).unwrap();
            let sig: p256::ecdsa::Signature = other.sign(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
        };
        let other_client = logout_token(&provider.issuer, json!({"jti": "j-c", "aud": "x"}));
        let with_nonce = logout_token(&provider.issuer, json!({"jti": "j-n", "nonce": "n"}));
        for token in [&forged, &other_client, &with_nonce] {
            let res = post_logout_token(&state, token).await;
            assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        }
        let sub_only = logout_token(&provider.issuer, json!({"jti": "j-s", "sid": null}));
        let json_body = backchannel_logout(
            State(state.clone()),
            HeaderMap::new(),
            format!("logout_token={sub_only}").into(),
        )
        .await
        .unwrap();
        assert_eq!(json_body.status(), StatusCode::BAD_REQUEST, "no form type");
        let twice = backchannel_logout(
            State(state.clone()),
            form_headers(),
            format!("logout_token={sub_only}&logout_token={sub_only}").into(),
        )
        .await
        .unwrap();
        assert_eq!(twice.status(), StatusCode::BAD_REQUEST, "two tokens");
        assert_eq!(counter(&up.counters.backchannel_refused), 6);
        for other in ["fam-2", "fam-3", "fam-4"] {
            assert!(!ended(other).await, "{other} still stays");
        }

        // `sub` alone: every session of alice; bob's stays.
        let res = post_logout_token(&state, &sub_only).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(ended("fam-2").await && ended("fam-4").await);
        assert!(!ended("fam-3").await, "bob's session");
        let mut revoked = provider.asked_to_revoke();
        revoked.sort();
        assert_eq!(revoked, ["rt-1", "rt-2", "rt-4"]);
        assert_eq!(counter(&up.counters.backchannel_logouts), 2);
        assert_eq!(
            counter(&up.counters.backchannel_ended),
            3,
            "fam-1, ended already, not again"
        );
    }

    /// The provider has issued a grant, and the store fails to keep it: the sign-in fails,
    /// and the grant's refresh token is revoked at the provider there and then (no queue row
    /// would ever cover it).
    #[tokio::test]
    async fn a_sign_in_whose_grant_cannot_be_stored_has_it_revoked_at_the_provider() {
        let provider = FakeProvider::start().await;
        let (state, up, _) = failing_at(&provider, "put_grant").await;
        let answer = callback_with_a_code(&state, &up).await;
        assert!(answer.is_err(), "the sign-in fails");
        assert_eq!(provider.asked_to_revoke(), ["rt-signin"]);
    }

    /// A sign-in over the per-user cap ends the user's oldest family, whose grant the store
    /// then fails to queue: the sign-in still succeeds (failing it stranded its new grant,
    /// stored under a family whose cookie never reached the browser), and the capped
    /// family's grant is revoked at the provider directly.
    #[tokio::test]
    async fn a_sign_in_over_the_cap_succeeds_when_the_oldest_familys_grant_cannot_be_queued() {
        let provider = FakeProvider::start().await;
        let (state, up, inner) = failing_at(&provider, "queue_revocation").await;
        let oldest = session::open_family(&state, "alice", NOW - 1_000)
            .await
            .unwrap()
            .family;
        let sealed = up.seal_grant(&oldest.id, &grant("rt-old"));
        inner
            .put_grant(&oldest.id, &sealed, oldest.expires_at_ms)
            .await
            .unwrap();
        let answer = callback_with_a_code(&state, &up)
            .await
            .expect("the sign-in succeeds");
        assert_eq!(answer.status(), StatusCode::SEE_OTHER);
        assert!(answer.headers().contains_key(header::SET_COOKIE));
        assert_eq!(
            provider.asked_to_revoke(),
            ["rt-old"],
            "the capped family's grant, not the new one"
        );
        assert_eq!(
            stored_refresh_tokens(&up, &inner).await,
            ["rt-old", "rt-signin"],
            "the new grant is kept (and the old one until its family expires)"
        );
    }

    /// A family ends (logout, reuse, the cap; or the provider refused its grant:
    /// `forget_grant`) and the store fails to queue its grant, or to record the end: the
    /// grant, still stored, is revoked at the provider directly.
    #[tokio::test]
    async fn a_grant_that_cannot_be_queued_when_its_family_ends_is_revoked_at_the_provider() {
        for fail in ["queue_revocation", "end_access_tokens"] {
            let provider = FakeProvider::start().await;
            let (_, up, inner) = failing_at(&provider, fail).await;
            for (family, rt) in [("ended", "rt-1"), ("refused", "rt-2")] {
                let sealed = up.seal_grant(family, &grant(rt));
                inner.put_grant(family, &sealed, FAMILY_END).await.unwrap();
            }
            assert!(end_grant(&up, "ended", NOW).await.is_err(), "{fail}");
            assert!(forget_grant(&up, "refused", NOW).await.is_err(), "{fail}");
            assert_eq!(provider.asked_to_revoke(), ["rt-1", "rt-2"], "{fail}");
        }
    }

    /// A logout ends the family and queues its grant while a renewal is at the provider; the
    /// renewal then writes the renewed grant back (after the end's queueing: nothing else
    /// moves it) and the store fails its `family_ended` check. The renewed refresh token, live
    /// at the provider, stayed in `upstream_grants` until the family expired (a day here) and
    /// the purge queued it. The next maintenance pass queues it (the sweep of ended families'
    /// grants) and tries it at once.
    #[tokio::test]
    async fn a_renewed_grant_left_stored_by_a_failed_family_ended_check_is_queued_by_the_next_maintenance_pass(
    ) {
        let provider = FakeProvider::start().await;
        let (state, up, inner) = failing_at(&provider, "family_ended").await;
        let renewal = renewal_waiting_at_the_provider(&provider, &up).await;
        end_grant(&up, "fam", NOW).await.unwrap();
        assert_eq!(
            inner.grant("fam").await.unwrap(),
            None,
            "the old grant queued"
        );
        provider.release.notify_one();
        assert!(
            renewal.await.unwrap().is_err(),
            "the renewal's family_ended check failed"
        );
        let stored = inner.grant("fam").await.unwrap().expect("left stored");
        let left = up.open_grant("fam", &stored).unwrap().refresh_token;
        assert_eq!(left.as_deref(), Some("rt-1-rotated"));
        assert_eq!(provider.asked_to_revoke(), ["rt-1"], "not tried");
        // One maintenance pass, on the state's clock (still NOW: the old grant's retry is
        // not due yet).
        session::maintain(&state, 3_600_000).await.unwrap();
        assert!(
            inner.grant("fam").await.unwrap().is_none(),
            "the renewed grant left upstream_grants"
        );
        assert_eq!(
            provider.asked_to_revoke(),
            ["rt-1", "rt-1-rotated"],
            "queued and tried in the same pass"
        );
        assert_eq!(
            queued_refresh_tokens(&up, &inner).await,
            ["rt-1", "rt-1-rotated"],
            "each waits for its revocation (the provider is down), once"
        );
    }

    /// A family ends, the store fails to queue its grant and the provider is down, so the
    /// direct revocation fails too: the grant stayed stored (its refresh token live at the
    /// provider) until the family expired. The next maintenance pass queues it and tries it.
    #[tokio::test]
    async fn a_grant_an_end_could_not_queue_or_revoke_is_queued_by_the_next_maintenance_pass() {
        let provider = FakeProvider::start().await;
        let (state, up, inner) = failing_at(&provider, "queue_revocation").await;
        let sealed = up.seal_grant("fam", &grant("rt-1"));
        inner.put_grant("fam", &sealed, FAMILY_END).await.unwrap();
        assert!(end_grant(&up, "fam", NOW).await.is_err());
        assert_eq!(provider.asked_to_revoke(), ["rt-1"], "tried directly, down");
        assert!(inner.grant("fam").await.unwrap().is_some(), "left stored");
        session::maintain(&state, 3_600_000).await.unwrap();
        assert!(inner.grant("fam").await.unwrap().is_none(), "moved");
        assert_eq!(provider.asked_to_revoke(), ["rt-1", "rt-1"], "tried again");
        assert_eq!(queued_refresh_tokens(&up, &inner).await, ["rt-1"]);
    }

    /// A logout ends the family (revoked on the refresh side), and then the store fails to
    /// record the end on the upstream side (`end_access_tokens`). The provider access token
    /// handed out for the family stayed accepted by `/api/me` until its exp, and its grant
    /// stayed in `upstream_grants` until the family expired (a day here): the store counts a
    /// revoked family as ended, so the token is refused at once and the next maintenance pass
    /// queues the grant and tries it.
    #[tokio::test]
    async fn a_logout_whose_end_cannot_be_recorded_still_ends_the_familys_tokens_and_grant() {
        let provider = FakeProvider::start().await;
        let (state, up, inner) = failing_at(&provider, "end_access_tokens").await;
        let opened = session::open_family(&state, "alice", NOW).await.unwrap();
        let family = opened.family.id.clone();
        let sealed = up.seal_grant(&family, &grant("rt-1"));
        inner.put_grant(&family, &sealed, FAMILY_END).await.unwrap();
        let handed_out = upstream::access_token_hash("provider-at-1");
        inner
            .note_access_token(&family, &handed_out, NOW + 3_600_000)
            .await
            .unwrap();
        assert!(!inner.access_token_ended(&handed_out).await.unwrap());

        let res = logout_with(&state, &opened.refresh_token).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "E1 failed");
        assert_eq!(
            res.headers()[header::SET_COOKIE],
            cleared_refresh_cookie(),
            "the cookie cleared"
        );
        assert_eq!(provider.asked_to_revoke(), ["rt-1"], "tried directly");
        assert!(
            inner.access_token_ended(&handed_out).await.unwrap(),
            "the family's provider access token is refused by /api/me"
        );
        assert!(inner.family_ended(&family).await.unwrap());

        session::maintain(&state, 3_600_000).await.unwrap();
        assert!(
            inner.grant(&family).await.unwrap().is_none(),
            "the grant left upstream_grants"
        );
        assert_eq!(
            provider.asked_to_revoke(),
            ["rt-1", "rt-1"],
            "queued and tried in the same pass"
        );
    }

    /// A logout while the store holding the families fails: 503 (`Retry-After`), and the
    /// cookie cleared all the same (it was not: the browser kept it and signed the user back
    /// in once the store was back). The family is noted, and the next maintenance pass that
    /// finds the store answering ends it, and queues and revokes its provider grant.
    #[tokio::test]
    async fn a_logout_the_store_fails_clears_the_cookie_and_maintenance_ends_the_family_later() {
        let provider = FakeProvider::start().await;
        let inner = Arc::new(MemoryStore::new());
        let up = Upstream::connect(config_for(&provider), inner.clone(), NOW)
            .await
            .unwrap();
        let families = Arc::new(crate::store::Flaky::new(inner.clone()));
        let state = AppState::new(
            &crate::Config::default(),
            crate::keys::KeySet::generate(),
            families.clone(),
            Arc::new(crate::clock::ManualClock::new(NOW)),
        );
        assert!(state.upstream.set(up.clone()).is_ok());
        let opened = session::open_family(&state, "alice", NOW).await.unwrap();
        let family = opened.family.id.clone();
        let sealed = up.seal_grant(&family, &grant("rt-1"));
        inner.put_grant(&family, &sealed, FAMILY_END).await.unwrap();

        families.fail(crate::store::Failing::All);
        let res = logout_with(&state, &opened.refresh_token).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            res.headers()[header::SET_COOKIE],
            cleared_refresh_cookie(),
            "the cookie is cleared as a 204 clears it"
        );
        assert!(provider.asked_to_revoke().is_empty(), "nothing ended yet");

        families.fail(crate::store::Failing::No);
        session::maintain(&state, 3_600_000).await.unwrap();
        assert_eq!(
            session::rotate(
                &state,
                &opened.refresh_token,
                crate::tokens::AccessLifetime::Normal,
                None
            )
            .await
            .unwrap()
            .err(),
            Some(session::NotRotated::Refused(
                crate::store::Rejection::Revoked
            )),
            "the family ended"
        );
        assert_eq!(provider.asked_to_revoke(), ["rt-1"], "its grant revoked");
    }

    /// The token endpoint answering a refresh with 429 or 503 and `Retry-After` is
    /// `RetryAfter` (the browser gets the wait, [`provider_busy`]); a 429 without one, or a
    /// 500 with one, is `Unavailable` (a 429 was read as an OAuth error body: 502 before).
    #[tokio::test]
    async fn a_refresh_the_provider_answers_busy_carries_its_retry_after() {
        use crate::upstream::revocation::RetryAfter;
        let provider = FakeProvider::start().await;
        let (up, _store) = upstream(&provider).await;
        for (status, retry_after, expected) in [
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "30",
                ProviderError::RetryAfter(RetryAfter::Seconds(30)),
            ),
            (
                StatusCode::TOO_MANY_REQUESTS,
                "7",
                ProviderError::RetryAfter(RetryAfter::Seconds(7)),
            ),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Sun, 06 Nov 1994 08:49:37 GMT",
                ProviderError::RetryAfter(RetryAfter::At(784_111_777_000)),
            ),
            (
                StatusCode::TOO_MANY_REQUESTS,
                "soon",
                ProviderError::Unavailable,
            ),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "30",
                ProviderError::Unavailable,
            ),
        ] {
            *provider.token_busy.lock().unwrap() = Some((status, retry_after.into()));
            let got = up.refresh(&grant("rt-1"), NOW, None).await;
            assert_eq!(
                got.err(),
                Some(expected),
                "{status} with Retry-After: {retry_after}"
            );
        }
    }

    #[test]
    fn a_busy_provider_s_wait_reaches_the_browser_in_whole_seconds_within_an_hour() {
        use crate::upstream::revocation::RetryAfter;
        let cookie = HeaderValue::from_static("tw=1");
        for (asked, expected) in [
            (RetryAfter::Seconds(30), "30"),
            (RetryAfter::Seconds(0), "1"),
            (RetryAfter::At(NOW + 1_500), "2"),
            (RetryAfter::At(NOW - 5_000), "1"),
            (RetryAfter::Seconds(u64::MAX), "3600"),
        ] {
            let res = provider_busy(asked, NOW, cookie.clone());
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(res.headers()[header::RETRY_AFTER], expected, "{asked:?}");
            assert_eq!(
                res.headers()[header::SET_COOKIE],
                "tw=1",
                "the rotated cookie is kept"
            );
        }
    }

    /// The revocation endpoint answers 503 or 429 with `Retry-After`, in seconds or as an
    /// HTTP-date: the queued revocation is not due again before then (ten minutes here,
    /// where the backoff alone says one); a value that is neither leaves the backoff's minute.
    #[tokio::test]
    async fn a_revocation_answered_with_retry_after_is_not_tried_again_before_then() {
        // NOW is 1970-01-01 00:16:40 GMT.
        for (status, retry_after, due_in_ms) in [
            (StatusCode::SERVICE_UNAVAILABLE, "600", 600_000),
            (StatusCode::TOO_MANY_REQUESTS, "600", 600_000),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Thu, 01 Jan 1970 00:26:40 GMT",
                600_000,
            ),
            (StatusCode::TOO_MANY_REQUESTS, "soon", 60_000),
        ] {
            let provider = FakeProvider::start().await;
            *provider.revoke_busy.lock().unwrap() = Some((status, retry_after.into()));
            let (up, store) = upstream(&provider).await;
            let sealed = up.seal_grant("fam", &grant("rt-1"));
            store.put_grant("fam", &sealed, FAMILY_END).await.unwrap();
            end_grant(&up, "fam", NOW).await.unwrap();
            assert_eq!(provider.asked_to_revoke(), ["rt-1"]);
            let due_at = |at: i64| {
                let store = store.clone();
                async move { store.claim_revocations(at, 0, 10).await.unwrap().len() }
            };
            let what = format!("{status} with Retry-After: {retry_after}");
            assert_eq!(
                due_at(NOW + due_in_ms - 1).await,
                0,
                "{what}: due too early"
            );
            assert_eq!(due_at(NOW + due_in_ms).await, 1, "{what}: due then");
        }
    }
}
