//! Extractors and header readers: the refresh cookie (every candidate, leniently), the CSRF
//! check (the `X-Requested-With` header, then `Origin` / `Sec-Fetch-Site`), the client
//! address, Bearer and DPoP authentication.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq as _;

use crate::dpop;
use crate::error::{AppError, BearerFailure, DpopAt};
use crate::metrics::bump;
use crate::state::AppState;
use crate::tokens::{self, AccessTokenError};

/// Name of the HttpOnly refresh cookie. `__Secure-`: browsers accept it only with `Secure`
/// from a secure origin, so a plain-HTTP page on a sibling host cannot plant one.
pub const REFRESH_COOKIE: &str = "__Secure-tw_refresh";
/// Path the refresh cookie is scoped to: it goes to refresh and logout only.
pub const REFRESH_COOKIE_PATH: &str = "/auth";
/// The cookie that ties a refresh cookie to this host: `__Host-` (no `Domain`, `Path=/`), so
/// no other host can set it, and its value is [`tokens::refresh_anchor`] of the refresh token.
/// A refresh cookie without its anchor is ignored. A `__Secure-` cookie can be set by a
/// sibling host for the whole domain: without the anchor, one planted ahead of the real one
/// was rotated first, and the user's app got the planter's session (and its next cookie in
/// place of the user's), and one planted in a browser with no session signed it in as the
/// planter (login CSRF). The refresh cookie itself stays on `/auth` (see the README); the
/// anchor, sent everywhere, is not a credential. Set by [`anchor_set_cookies`].
pub const ANCHOR_COOKIE: &str = "__Host-tw_anchor";
/// The CSRF header required on refresh and logout.
pub const CSRF_HEADER: &str = "x-requested-with";
/// At most this many refresh-cookie candidates of one request are tried.
pub const MAX_CANDIDATES: usize = 4;

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
        "__Secure-tw_refresh=; HttpOnly; Secure; SameSite=Strict; Path=/auth; Max-Age=0",
    )
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Every non-empty value of the cookie `name` in the `Cookie` header(s), in order, at most
/// [`MAX_CANDIDATES`]. Lenient: the header is read as bytes, so a non-ASCII byte or a
/// malformed pair elsewhere does not hide the cookie, and values that cannot be a token
/// of ours (base64url) are skipped.
pub fn cookie_candidates(headers: &HeaderMap, name: &str) -> Vec<String> {
    let name = name.as_bytes();
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .filter_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            let (n, v) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
            let v = v
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v);
            (n == name && !v.is_empty() && v.iter().all(|b| is_token_char(*b)))
                .then(|| String::from_utf8_lossy(v).into_owned())
        })
        .take(MAX_CANDIDATES)
        .collect()
}

/// Every refresh-cookie candidate of the request ([`cookie_candidates`] of
/// [`REFRESH_COOKIE`]).
pub fn refresh_cookie_candidates(headers: &HeaderMap) -> Vec<String> {
    let anchors = cookie_candidates(headers, ANCHOR_COOKIE);
    if anchors.is_empty() {
        return Vec::new();
    }
    cookie_candidates(headers, REFRESH_COOKIE)
        .into_iter()
        .filter(|t| {
            let want = tokens::refresh_anchor(t);
            anchors
                .iter()
                .any(|a| a.as_bytes().ct_eq(want.as_bytes()).into())
        })
        .collect()
}

/// Middleware: each `Set-Cookie` of the refresh cookie gets its anchor cookie
/// ([`ANCHOR_COOKIE`]) beside it, with the same lifetime (cleared with it). Every response
/// that sets the refresh cookie passes here, whatever made it.
pub async fn anchor_set_cookies(
    mut response: axum::response::Response,
) -> axum::response::Response {
    let prefix = format!("{REFRESH_COOKIE}=");
    let anchors: Vec<HeaderValue> = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| {
            let rest = v.to_str().ok()?.strip_prefix(&prefix)?;
            let mut parts = rest.split(';');
            let token = parts.next()?.trim();
            let max_age = parts
                .find_map(|p| p.trim().strip_prefix("Max-Age="))
                .unwrap_or("0");
            let value = if token.is_empty() {
                String::new()
            } else {
                tokens::refresh_anchor(token)
            };
            HeaderValue::from_str(&format!(
                "{ANCHOR_COOKIE}={value}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age}"
            ))
            .ok()
        })
        .collect();
    for a in anchors {
        response.headers_mut().append(header::SET_COOKIE, a);
    }
    response
}

/// Extractor: the refresh-cookie candidates of the request (possibly none).
#[derive(Clone, Default)]
pub struct RefreshCookies(pub Vec<String>);

// Redacting Debug: the values are refresh tokens.
impl std::fmt::Debug for RefreshCookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RefreshCookies({} candidates)", self.0.len())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RefreshCookies {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(refresh_cookie_candidates(&parts.headers)))
    }
}

/// Whether the CSRF header is present and non-empty.
pub fn has_csrf_header(headers: &HeaderMap) -> bool {
    headers.get(CSRF_HEADER).is_some_and(|v| !v.is_empty())
}

/// The request's own origin authority (`host[:port]`), from `Host`.
fn own_authority(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST)?.to_str().ok()
}

/// Second CSRF defence: a browser request must come from this origin or an allow-listed
/// one. `Origin` decides when present (`null` is foreign); else `Sec-Fetch-Site` must be
/// `same-origin` or `none`; a request with neither is not from a browser and passes.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if allowed.contains(&origin) {
            return true;
        }
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        return match (authority, own_authority(headers)) {
            (Some(a), Some(host)) => a.eq_ignore_ascii_case(host.trim()),
            _ => false,
        };
    }
    match headers.get("sec-fetch-site").map(HeaderValue::as_bytes) {
        None => true,
        Some(site) => {
            site.eq_ignore_ascii_case(b"same-origin") || site.eq_ignore_ascii_case(b"none")
        }
    }
}

/// Extractor for login: the `Origin` / `Sec-Fetch-Site` check only (a login form needs no
/// custom header).
#[derive(Debug, Clone, Copy)]
pub struct SameOrigin;

impl FromRequestParts<AppState> for SameOrigin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if origin_allowed(&parts.headers, &state.settings.allowed_origins) {
            Ok(SameOrigin)
        } else {
            bump(&state.metrics.counters.origin_refused);
            Err(AppError::ForeignOrigin)
        }
    }
}

/// Extractor for refresh and logout: the CSRF header, then the origin check.
#[derive(Debug, Clone, Copy)]
pub struct CsrfChecked;

impl FromRequestParts<AppState> for CsrfChecked {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if !has_csrf_header(&parts.headers) {
            bump(&state.metrics.counters.csrf_missing);
            return Err(AppError::CsrfHeaderMissing);
        }
        SameOrigin::from_request_parts(parts, state).await?;
        Ok(CsrfChecked)
    }
}

/// Extractor: the client's address (the TCP peer; `None` when the router runs without a
/// socket, as in tests).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(a)| a.ip()),
        ))
    }
}

/// The scheme of an `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Bearer` (RFC 6750).
    Bearer,
    /// `DPoP` (RFC 9449 §7.1).
    Dpop,
}

/// A DPoP error at a resource (RFC 9449 §7.1), with the current nonce.
pub fn resource_dpop_error(state: &AppState, error: &'static str) -> AppError {
    AppError::Dpop {
        at: DpopAt::Resource,
        error,
        nonce: state.dpop_nonce(),
    }
}

/// The request's access token and its scheme. Without one: 401, under the DPoP scheme when
/// DPoP is required (the built-in and the upstream `/api/me` both start here).
pub fn presented_token<'a>(
    state: &AppState,
    headers: &'a HeaderMap,
) -> Result<(Scheme, &'a str), AppError> {
    access_token(headers).ok_or_else(|| {
        if state.settings.dpop.required {
            resource_dpop_error(state, "")
        } else {
            AppError::Unauthorized(BearerFailure::Missing)
        }
    })
}

/// The scheme and token of `Authorization`, if it uses `Bearer` or `DPoP`.
pub fn access_token(headers: &HeaderMap) -> Option<(Scheme, &str)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return None;
    };
    Some((scheme, token.trim())).filter(|(_, t)| !t.is_empty())
}

/// The Bearer token from `Authorization`, if that header uses the Bearer scheme.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    access_token(headers).and_then(|(s, t)| (s == Scheme::Bearer).then_some(t))
}

fn validate_token(state: &AppState, token: &str) -> Result<Map<String, Value>, BearerFailure> {
    let rules = state.validation();
    let now = state.now_ms();
    let claims = state
        .with_keys(|keys| tokens::validate(keys, token, &rules, now))
        .map_err(|e| match e {
            AccessTokenError::Expired => BearerFailure::Expired,
            AccessTokenError::Invalid => BearerFailure::Invalid,
        })?;
    let sid = claims.get("sid").and_then(Value::as_str).unwrap_or("");
    if !state.revoked.is_empty() && state.revoked.is_revoked(sid, now) {
        return Err(BearerFailure::Revoked);
    }
    Ok(claims)
}

/// Validate the request's access token (`Bearer` or `DPoP` scheme), including its family's
/// revocation. The DPoP proof is checked by [`Authenticated`].
pub fn check_bearer(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Map<String, Value>, BearerFailure> {
    let (_, token) = access_token(headers).ok_or(BearerFailure::Missing)?;
    validate_token(state, token)
}

/// The `cnf.jkt` of verified claims.
pub fn bound_key(claims: &Map<String, Value>) -> Option<&str> {
    claims.get("cnf")?.get("jkt")?.as_str()
}

/// Check the request's `DPoP` header per RFC 9449 §4.3 (see [`crate::dpop`]), remembering
/// its `jti`. `Ok(None)`: the request has no proof. `access_token`: the token the proof must
/// be bound to (`ath`), on resource requests.
pub async fn dpop_proof(
    state: &AppState,
    parts: &Parts,
    at: DpopAt,
    access_token: Option<&str>,
) -> Result<Option<dpop::Parsed>, AppError> {
    let nonces = state.dpop_nonces();
    let refuse = |error: dpop::ProofError| {
        let counters = &state.metrics.counters;
        bump(if error == dpop::ProofError::Nonce {
            &counters.dpop_nonce_asked
        } else {
            &counters.dpop_refused
        });
        AppError::Dpop {
            at,
            error: error.code(),
            nonce: nonces.as_ref().and_then(|n| n.first().cloned()),
        }
    };
    let mut values = parts.headers.get_all(dpop::PROOF_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(refuse(dpop::ProofError::Several));
    }
    let text = value
        .to_str()
        .map_err(|_| refuse(dpop::ProofError::Malformed))?;
    let parsed = dpop::parse(text).map_err(refuse)?;
    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let now_ms = state.now_ms();
    let leeway_s = state.tunables().leeway_s.max(0);
    let max_age_s = state.settings.dpop.max_age_s;
    let expected = dpop::Expected {
        method: parts.method.as_str(),
        authority,
        path: parts.uri.path(),
        now_ms,
        max_age_s,
        leeway_s,
        access_token,
        nonces: nonces.as_deref(),
    };
    dpop::check(&parsed, &expected).map_err(refuse)?;
    // Remembered until it can no longer pass the iat check.
    let until_ms = ((parsed.claims.iat + (max_age_s + 1) as f64) * 1000.0).ceil() as i64;
    let first = state
        .store
        .first_use_of_proof(&dpop::replay_key(&parsed), until_ms.max(now_ms), now_ms)
        .await?;
    if !first {
        return Err(refuse(dpop::ProofError::Replayed));
    }
    Ok(Some(parsed))
}

/// Extractor: the verified claims of the caller's access token. A token bound to a DPoP key
/// (`cnf.jkt`) is accepted only under the `DPoP` scheme with a valid proof from that key;
/// an unbound token only under `Bearer`, and not at all when the server requires DPoP.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The token's claims.
    pub claims: Map<String, Value>,
    /// The DPoP nonce to hand out, when nonces are on.
    pub nonce: Option<String>,
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let dpop_error = |error: &'static str| resource_dpop_error(state, error);
        let required = state.settings.dpop.required;
        let (scheme, token) = presented_token(state, &parts.headers)?;
        let claims = match (validate_token(state, token), scheme) {
            (Ok(claims), _) => claims,
            (Err(failure), Scheme::Bearer) => return Err(AppError::Unauthorized(failure)),
            (Err(failure), Scheme::Dpop) => {
                return Err(AppError::Dpop {
                    at: DpopAt::Resource,
                    error: "invalid_token",
                    nonce: state.dpop_nonce(),
                })
                .inspect_err(|_| tracing::debug!(?failure, "DPoP-scheme token refused"))
            }
        };
        match (scheme, bound_key(&claims)) {
            (Scheme::Bearer, None) if !required => Ok(Authenticated {
                claims,
                nonce: None,
            }),
            (Scheme::Bearer, None) => Err(dpop_error("")),
            // A bound token sent as a plain Bearer token: no proof of possession.
            (Scheme::Bearer, Some(_)) => Err(AppError::Unauthorized(BearerFailure::Invalid)),
            (Scheme::Dpop, None) => Err(dpop_error("invalid_token")),
            (Scheme::Dpop, Some(jkt)) => {
                let proof = dpop_proof(state, parts, DpopAt::Resource, Some(token))
                    .await?
                    .ok_or_else(|| {
                        bump(&state.metrics.counters.dpop_refused);
                        dpop_error("invalid_dpop_proof")
                    })?;
                if proof.jkt != jkt {
                    bump(&state.metrics.counters.dpop_refused);
                    return Err(dpop_error("invalid_dpop_proof"));
                }
                Ok(Authenticated {
                    nonce: state.dpop_nonce(),
                    claims,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn every_refresh_cookie_candidate_is_found_despite_non_ascii_bytes_and_junk() {
        let h = headers(&[(
            "cookie",
            b"a=\xe9t\xe9; __Secure-tw_refresh=first; junk; __Secure-tw_refresh=\"second\"; __Secure-tw_refresh=; __Secure-tw_refresh=no spaces",
        )]);
        assert_eq!(cookie_candidates(&h, REFRESH_COOKIE), ["first", "second"]);
    }

    #[test]
    fn a_refresh_cookie_counts_only_with_its_anchor() {
        let anchor = |t: &str| format!("{ANCHOR_COOKIE}={}", tokens::refresh_anchor(t));
        let cookie = |v: String| headers(&[("cookie", v.as_bytes())]);
        let planted = "__Secure-tw_refresh=planted";
        let own = "__Secure-tw_refresh=own";
        // The planted one (no anchor: only this host can set a __Host- cookie) is ignored,
        // ahead of the real one or alone.
        assert_eq!(
            refresh_cookie_candidates(&cookie(format!("{planted}; {own}; {}", anchor("own")))),
            ["own"]
        );
        assert!(refresh_cookie_candidates(&cookie(planted.into())).is_empty());
        assert!(
            refresh_cookie_candidates(&cookie(format!("{planted}; {}", anchor("own")))).is_empty()
        );
        // Two anchored ones (two tabs' worth of a lost response): both count.
        assert_eq!(
            refresh_cookie_candidates(&cookie(format!(
                "{own}; __Secure-tw_refresh=older; {}; {}",
                anchor("own"),
                anchor("older")
            ))),
            ["own", "older"]
        );
    }

    #[tokio::test]
    async fn every_refresh_set_cookie_gets_its_anchor_with_the_same_lifetime() {
        let mut res = axum::response::Response::new(axum::body::Body::empty());
        res.headers_mut()
            .append(header::SET_COOKIE, refresh_cookie("tok", 600));
        res.headers_mut()
            .append(header::SET_COOKIE, HeaderValue::from_static("theme=dark"));
        let res = anchor_set_cookies(res).await;
        let set: Vec<_> = res.headers().get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(set.len(), 3);
        assert_eq!(
            set[2].to_str().unwrap(),
            format!(
                "__Host-tw_anchor={}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=600",
                tokens::refresh_anchor("tok")
            )
        );
        let mut res = axum::response::Response::new(axum::body::Body::empty());
        res.headers_mut()
            .append(header::SET_COOKIE, cleared_refresh_cookie());
        let res = anchor_set_cookies(res).await;
        let set: Vec<_> = res.headers().get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(
            set[1].to_str().unwrap(),
            "__Host-tw_anchor=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0"
        );
    }

    #[test]
    fn same_origin_allow_listed_and_header_less_requests_pass_the_origin_check() {
        let allowed = vec!["https://app.example".to_string()];
        let ok: [&[(&str, &[u8])]; 5] = [
            &[
                ("host", b"127.0.0.1:8080"),
                ("origin", b"http://127.0.0.1:8080"),
            ],
            &[("host", b"api.example"), ("origin", b"https://app.example")],
            &[("host", b"api.example")],
            &[("host", b"api.example"), ("sec-fetch-site", b"same-origin")],
            &[("host", b"api.example"), ("sec-fetch-site", b"none")],
        ];
        for h in ok {
            assert!(origin_allowed(&headers(h), &allowed), "{h:?}");
        }
        let refused: [&[(&str, &[u8])]; 5] = [
            &[
                ("host", b"127.0.0.1:8080"),
                ("origin", b"http://evil.example"),
            ],
            &[("host", b"127.0.0.1:8080"), ("origin", b"null")],
            &[
                ("host", b"127.0.0.1:8080"),
                ("origin", b"http://127.0.0.1:8081"),
            ],
            &[("host", b"api.example"), ("sec-fetch-site", b"cross-site")],
            &[("host", b"api.example"), ("sec-fetch-site", b"same-site")],
        ];
        for h in refused {
            assert!(!origin_allowed(&headers(h), &allowed), "{h:?}");
        }
    }
}
