//! DPoP (RFC 9449), the client's side: what a proof says, where the server's
//! nonce is kept, when an answer asks for a nonce, and when a session must be
//! bound. Pure: the shell makes the key, signs and hashes; this module only
//! builds the bytes to sign and reads answers. Nothing here ever puts a key,
//! a proof or a token into an error or an event.

#[allow(unused_imports)]
use crate::prelude::*;

use super::clock::Stamp;
use super::json;
use super::origin;
use super::token::oauth_error;

/// base64url without padding (RFC 4648 §5).
pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// `htu`: the request URL without query and fragment (§4.2).
pub fn htu(url: &str) -> &str {
    let end = super::find_any(url, b"?#").unwrap_or(url.len());
    &url[..end]
}

/// The public half of a key, as the `jwk` header member wants it.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicJwk {
    /// x coordinate, base64url.
    pub x: String,
    /// y coordinate, base64url.
    pub y: String,
}

// Public, but still: no key material in debug output.
impl core::fmt::Debug for PublicJwk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PublicJwk(..)")
    }
}

/// What one proof claims.
#[derive(Debug, Clone, Copy)]
pub struct ProofClaims<'a> {
    /// HTTP method (upper case as sent).
    pub htm: &'a str,
    /// Absolute request URL (query and fragment are dropped here).
    pub url: &'a str,
    /// Seconds since the epoch (page clock).
    pub iat: i64,
    /// A unique id.
    pub jti: &'a str,
    /// base64url SHA-256 of the access token, on resource requests.
    pub ath: Option<&'a str>,
    /// The server's nonce for this origin, when it gave one.
    pub nonce: Option<&'a str>,
}

/// The JWS signing input `base64url(header) . base64url(claims)` of a proof
/// with `typ` `dpop+jwt`, `alg` ES256 and the public `jwk`.
pub fn signing_input(jwk: &PublicJwk, c: &ProofClaims<'_>) -> String {
    let mut h =
        String::from(r#"{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"#);
    json::push_string(&mut h, &jwk.x);
    h.push_str(r#","y":"#);
    json::push_string(&mut h, &jwk.y);
    h.push_str("}}");
    let mut p = String::from(r#"{"jti":"#);
    json::push_string(&mut p, c.jti);
    p.push_str(r#","htm":"#);
    json::push_string(&mut p, c.htm);
    p.push_str(r#","htu":"#);
    json::push_string(&mut p, htu(c.url));
    p.push_str(r#","iat":"#);
    crate::error::push_u64(&mut p, c.iat.max(0) as u64);
    if let Some(ath) = c.ath {
        p.push_str(r#","ath":"#);
        json::push_string(&mut p, ath);
    }
    if let Some(n) = c.nonce {
        p.push_str(r#","nonce":"#);
        json::push_string(&mut p, n);
    }
    p.push('}');
    let mut out = b64url(h.as_bytes());
    out.push('.');
    out.push_str(&b64url(p.as_bytes()));
    out
}

/// The compact proof: signing input and the raw (r || s) signature.
pub fn assemble(input: &str, signature: &[u8]) -> String {
    let mut out = String::with_capacity(input.len() + 90);
    out.push_str(input);
    out.push('.');
    out.push_str(&b64url(signature));
    out
}

/// The `Authorization` value for `token`: `DPoP <token>` when it goes with a
/// proof ([`with_proof`]), else `Bearer <token>`.
pub fn authorization(token: &str, dpop: bool) -> String {
    let mut out = String::from(if dpop { "DPoP " } else { "Bearer " });
    out.push_str(token);
    out
}

/// How many origins' nonces are kept (then they are forgotten and kept anew).
pub const MAX_NONCE_ORIGINS: usize = 16;

/// The last `DPoP-Nonce` each origin gave.
#[derive(Debug, Default)]
pub struct Nonces(Vec<(String, String)>);

impl Nonces {
    /// The nonce to put in a proof for `url`.
    pub fn for_url(&self, url: &str) -> Option<&str> {
        let o = origin::of_url(url)?;
        self.0.iter().find(|(k, _)| k == o).map(|(_, v)| v.as_str())
    }

    /// Keeps `nonce` (a `DPoP-Nonce` header) for the origin of `url`; `true`
    /// when it differs from the one kept.
    pub fn remember(&mut self, url: &str, nonce: Option<&str>) -> bool {
        let (Some(o), Some(n)) = (origin::of_url(url), nonce) else {
            return false;
        };
        // A nonce is a header value; keep only sane ones.
        if n.is_empty() || n.len() > 512 || !n.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return false;
        }
        match self.0.iter_mut().find(|(k, _)| k == o) {
            Some((_, v)) if v == n => false,
            Some((_, v)) => {
                *v = String::from(n);
                true
            }
            None => {
                // Bounded: redirects may bring nonces of any number of origins.
                // Forgetting them all costs at most one `use_dpop_nonce` retry each.
                if self.0.len() >= MAX_NONCE_ORIGINS {
                    self.0.clear();
                }
                self.0.push((String::from(o), String::from(n)));
                true
            }
        }
    }
}

/// A resource's answer asks for a (new) nonce: 401 with
/// `WWW-Authenticate: DPoP error="use_dpop_nonce"` (§8, §9).
/// The header may hold several challenges (RFC 9110 §11.6.1; a resource that takes both
/// schemes sends `Bearer …, DPoP error="use_dpop_nonce"`): the `error` counts when the
/// challenge it is in — the nearest scheme name before it — is `DPoP`.
pub fn resource_wants_nonce(status: u16, www_authenticate: Option<&str>) -> bool {
    let Some(h) = www_authenticate.filter(|_| status == 401) else {
        return false;
    };
    // Comma-separated: a part whose first word has no `=` starts a challenge (its scheme);
    // the others are its parameters. (A comma inside a quoted value would split it too;
    // no DPoP parameter has one.)
    let mut dpop = false;
    for part in h.as_bytes().split(|&b| b == b',') {
        let part = part.trim_ascii_start();
        let word = part.split(|&b| b == b' ').next().unwrap_or_default();
        if !word.contains(&b'=') {
            dpop = word.eq_ignore_ascii_case(b"dpop");
        }
        if part.windows(14).any(|w| w == b"use_dpop_nonce") {
            return dpop;
        }
    }
    false
}

/// The token endpoint's answer asks for a nonce: 400 (or 401) with OAuth
/// error `use_dpop_nonce` (§8).
pub fn token_endpoint_wants_nonce(status: u16, body: &str) -> bool {
    matches!(status, 400 | 401) && oauth_error(body).as_deref() == Some("use_dpop_nonce")
}

/// A nonce retry is made once, and only when the server gave a nonce other
/// than the one the proof carried (else a retry would fail the same way).
pub fn retry_with_nonce(asked: bool, nonce_changed: bool, retried: bool) -> bool {
    asked && nonce_changed && !retried
}

/// Whether the nonce this tab would sign with now (`kept`, after keeping
/// the answer's `DPoP-Nonce`) differs from the one the refused request was
/// signed with: then one retry may succeed. Compared with the request's own
/// nonce, not with whether this answer changed the kept one: another request
/// of the tab (the refresh call, another `fetch`) may have brought the new
/// nonce while this one was on its way, and this one must still be retried.
pub fn nonce_moved(signed_with: Option<&str>, kept: Option<&str>) -> bool {
    kept.is_some() && kept != signed_with
}

/// Upstream mode (a backend in front of an OpenID Provider that supports DPoP): a 400
/// `use_upstream_dpop` from the refresh endpoint asks for a second proof, by the same key,
/// for the provider's token endpoint (`htm` POST, `htu` = `dpop_upstream_htu` of the body,
/// `nonce` = `dpop_upstream_nonce` when given), which the backend forwards with its
/// refresh-token grant so that the provider binds its access token to our key (RFC 9449 §5).
/// Returns that endpoint (an absolute http(s) URL) and nonce.
pub fn upstream_challenge(status: u16, body: &str) -> Option<(String, Option<String>)> {
    let v = json::parse(body).ok().filter(|_| status == 400)?;
    if v.get("error")?.as_str()? != "use_upstream_dpop" {
        return None;
    }
    let htu = v.get("dpop_upstream_htu")?.as_str()?;
    if !(htu.starts_with("https://") || htu.starts_with("http://")) {
        return None;
    }
    let nonce = v.get("dpop_upstream_nonce").and_then(|n| n.as_str());
    Some((String::from(htu), nonce.map(String::from)))
}

/// The server's clock, from an answer's `Date` header (RFC 9110 §6.6.1) read at `now`: its
/// epoch ms and the monotonic ms it was read at. Proofs are dated by it ([`proof_iat`]): the
/// server accepts an `iat` only a few seconds ahead of its own clock (a minute behind), so a
/// page clock some seconds fast made every proof `invalid_dpop_proof`, and the session end
/// (RFC 9449 §11.1: the client's clock cannot be trusted).
pub fn server_clock(date: Option<&str>, now: Stamp) -> Option<(i64, i64)> {
    let at = super::schedule::http_date(date?.trim_ascii(), now.wall)?;
    Some((at, now.mono))
}

/// The `iat` (seconds) of a proof made at `now`: by the server's clock when an answer gave
/// it ([`server_clock`], moved on by the monotonic clock since, so a page clock changed
/// meanwhile does not matter), else by the page's.
pub fn proof_iat(server: Option<(i64, i64)>, now: Stamp) -> i64 {
    match server {
        Some((at, mono)) => at.saturating_add(now.mono - mono),
        None => now.wall,
    }
    .div_euclid(1000)
}

/// Whether what the page knows of the server's clock moved by more than 2 s (`Date` has
/// whole seconds) between two answers: then a proof the server refused may have been
/// refused for its `iat`, and one made now would not be.
pub fn clock_moved(before: Option<(i64, i64)>, after: Option<(i64, i64)>, now: Stamp) -> bool {
    (proof_iat(before, now) - proof_iat(after, now)).abs() > 2
}

/// Retries made of one refresh call, by kind ([`retry_refresh`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retries {
    nonce: bool,
    clock: bool,
    upstream: u8,
}

/// Why a refresh answer may be retried ([`retry_refresh`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct RefreshAnswer {
    /// `use_dpop_nonce`, and the nonce kept now is not the one the proof carried.
    pub nonce: bool,
    /// `use_upstream_dpop`: a proof for the provider's token endpoint is wanted.
    pub upstream: bool,
    /// `invalid_dpop_proof`, and the server's clock as now known moved ([`clock_moved`]).
    pub clock: bool,
}

/// Whether the refresh call is made again, counting in `r`: once for a `use_dpop_nonce`
/// that brought a new nonce ([`retry_with_nonce`]); twice for `use_upstream_dpop` (the first
/// answer names the provider's endpoint, a second one may bring the provider's nonce or
/// refuse a stale proof); once for a proof refused while the page's idea of the server's
/// clock was off. Counted apart: a first refresh in upstream mode may need our nonce and
/// then both provider answers (three retries); one budget of two for all of them ended
/// such a session.
pub fn retry_refresh(r: &mut Retries, a: RefreshAnswer) -> bool {
    let retry = if a.upstream {
        r.upstream < 2
    } else if a.nonce {
        !r.nonce
    } else {
        a.clock && !r.clock
    };
    if retry {
        if a.upstream {
            r.upstream += 1;
        } else if a.nonce {
            r.nonce = true;
        } else {
            r.clock = true;
        }
    }
    retry
}

/// A refresh answer refused the proof itself (`invalid_dpop_proof`).
pub fn proof_refused(status: u16, body: &str) -> bool {
    matches!(status, 400 | 401) && oauth_error(body).as_deref() == Some("invalid_dpop_proof")
}

/// Whether a request with `token` carries a proof and the `DPoP` scheme:
/// only a token issued bound (`token_type: "DPoP"`) with DPoP on. A token
/// the backend returned as `Bearer` (it, or its OpenID Provider, does not
/// bind) goes as `Bearer` without a proof (RFC 9449 §7.1: the `DPoP`
/// scheme is for DPoP-bound tokens; a resource refuses an unbound one under it).
pub fn with_proof(dpop: bool, bound: bool) -> bool {
    dpop && bound
}

/// After `setSession` with DPoP on: a token that is not bound to our key
/// (the app's own login call could not sign) is bound by a refresh at once.
pub fn bind_after_set_session(dpop: bool, bound: bool) -> bool {
    dpop && !bound
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::super::jwt::base64url_decode;
    use super::*;

    #[test]
    fn a_use_upstream_dpop_answer_names_the_providers_token_endpoint_and_nonce() {
        let body = r#"{"error":"use_upstream_dpop","dpop_upstream_htu":"https://id.example/token","dpop_upstream_nonce":"n1"}"#;
        assert_eq!(
            upstream_challenge(400, body),
            Some(("https://id.example/token".into(), Some("n1".into())))
        );
        let bare =
            r#"{"error":"use_upstream_dpop","dpop_upstream_htu":"https://id.example/token"}"#;
        assert_eq!(
            upstream_challenge(400, bare),
            Some(("https://id.example/token".into(), None))
        );
        for (status, body) in [
            (401, body),
            (
                400,
                r#"{"error":"use_dpop_nonce","dpop_upstream_htu":"https://id.example/token"}"#,
            ),
            (400, r#"{"error":"use_upstream_dpop"}"#),
            (
                400,
                r#"{"error":"use_upstream_dpop","dpop_upstream_htu":"/token"}"#,
            ),
            (
                400,
                r#"{"error":"use_upstream_dpop","dpop_upstream_htu":"javascript:x"}"#,
            ),
            (
                400,
                r#"{"error":"use_upstream_dpop","dpop_upstream_htu":"ftp://id.example/t"}"#,
            ),
        ] {
            assert_eq!(upstream_challenge(status, body), None, "{status} {body}");
        }
    }

    fn decode(part: &str) -> String {
        String::from_utf8(base64url_decode(part).unwrap()).unwrap()
    }

    #[test]
    fn a_proof_has_the_rfc_9449_header_and_claims_and_no_query_in_htu() {
        let jwk = PublicJwk {
            x: "xx".into(),
            y: "yy".into(),
        };
        let input = signing_input(
            &jwk,
            &ProofClaims {
                htm: "GET",
                url: "https://api.example/v1/me?a=1#frag",
                iat: 1_700_000_000,
                jti: "j-1",
                ath: Some("hash"),
                nonce: Some("n\"1"),
            },
        );
        let (h, p) = input.split_once('.').unwrap();
        assert_eq!(
            decode(h),
            r#"{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"xx","y":"yy"}}"#
        );
        assert_eq!(
            decode(p),
            r#"{"jti":"j-1","htm":"GET","htu":"https://api.example/v1/me","iat":1700000000,"ath":"hash","nonce":"n\"1"}"#
        );
        let proof = assemble(&input, &[0xff; 64]);
        assert_eq!(proof.split('.').count(), 3);
        assert_eq!(
            base64url_decode(proof.rsplit('.').next().unwrap()).unwrap(),
            [0xff; 64]
        );
    }

    #[test]
    fn a_refresh_proof_has_no_ath_and_no_nonce_until_one_is_given() {
        let jwk = PublicJwk {
            x: "x".into(),
            y: "y".into(),
        };
        let input = signing_input(
            &jwk,
            &ProofClaims {
                htm: "POST",
                url: "http://127.0.0.1:1/auth/refresh",
                iat: 5,
                jti: "j",
                ath: None,
                nonce: None,
            },
        );
        let claims = decode(input.split_once('.').unwrap().1);
        assert!(!claims.contains("ath") && !claims.contains("nonce"));
    }

    #[test]
    fn nonces_are_kept_per_origin_and_a_change_is_reported() {
        let mut n = Nonces::default();
        assert!(n.remember("https://a.example/x", Some("1")));
        assert!(!n.remember("https://a.example/y?z", Some("1")));
        assert!(n.remember("https://b.example/", Some("2")));
        assert!(n.remember("https://a.example/", Some("3")));
        assert!(!n.remember("https://a.example/", None));
        assert!(!n.remember("https://a.example/", Some("bad value")));
        assert_eq!(n.for_url("https://a.example/q"), Some("3"));
        assert_eq!(n.for_url("https://b.example/q"), Some("2"));
        assert_eq!(n.for_url("https://c.example/q"), None);
        // Bounded: past the limit, forgotten and kept anew.
        for i in 0..MAX_NONCE_ORIGINS {
            n.remember(&format!("https://o{i}.example/"), Some("x"));
        }
        assert_eq!(n.for_url("https://a.example/q"), None, "forgotten");
        assert_eq!(n.for_url("https://o15.example/q"), Some("x"));
        assert!(n.0.len() <= MAX_NONCE_ORIGINS);
    }

    #[test]
    fn a_request_may_retry_when_the_kept_nonce_is_not_the_one_it_was_signed_with() {
        assert!(nonce_moved(Some("1"), Some("2")), "an answer brought 2");
        assert!(nonce_moved(None, Some("1")), "the first nonce");
        assert!(
            !nonce_moved(Some("1"), Some("1")),
            "the same again: no retry"
        );
        assert!(!nonce_moved(Some("1"), None));
        assert!(!nonce_moved(None, None));
    }

    #[test]
    fn use_dpop_nonce_is_recognised_on_resources_and_the_token_endpoint_only() {
        assert!(resource_wants_nonce(
            401,
            Some(r#"DPoP error="use_dpop_nonce", algs="ES256""#)
        ));
        assert!(!resource_wants_nonce(
            401,
            Some(r#"DPoP error="invalid_token""#)
        ));
        assert!(!resource_wants_nonce(
            401,
            Some(r#"Bearer error="use_dpop_nonce""#)
        ));
        // Several challenges in one header: the error belongs to the one it is in.
        assert!(resource_wants_nonce(
            401,
            Some(r#"Bearer realm="api", DPoP error="use_dpop_nonce", algs="ES256""#)
        ));
        assert!(resource_wants_nonce(
            401,
            Some(r#"dpop error="use_dpop_nonce""#)
        ));
        assert!(!resource_wants_nonce(
            401,
            Some(r#"DPoP algs="ES256", Bearer error="use_dpop_nonce""#)
        ));
        assert!(!resource_wants_nonce(
            403,
            Some(r#"DPoP error="use_dpop_nonce""#)
        ));
        assert!(token_endpoint_wants_nonce(
            400,
            r#"{"error":"use_dpop_nonce"}"#
        ));
        assert!(!token_endpoint_wants_nonce(
            400,
            r#"{"error":"invalid_dpop_proof"}"#
        ));
        assert!(!token_endpoint_wants_nonce(
            500,
            r#"{"error":"use_dpop_nonce"}"#
        ));
    }

    #[test]
    fn a_nonce_retry_happens_once_and_only_for_a_new_nonce() {
        let nonce = RefreshAnswer {
            nonce: true,
            ..RefreshAnswer::default()
        };
        let upstream = RefreshAnswer {
            upstream: true,
            ..RefreshAnswer::default()
        };
        let clock = RefreshAnswer {
            clock: true,
            ..RefreshAnswer::default()
        };
        let mut r = Retries::default();
        assert!(retry_refresh(&mut r, nonce));
        assert!(!retry_refresh(&mut r, nonce), "once");
        assert!(!retry_refresh(&mut r, RefreshAnswer::default()));
        // Our nonce, then both of the provider's answers: three retries, counted apart.
        assert!(
            retry_refresh(&mut r, upstream),
            "the provider's endpoint named"
        );
        assert!(retry_refresh(&mut r, upstream), "then its nonce");
        assert!(!retry_refresh(&mut r, upstream), "never a third time");
        assert!(
            retry_refresh(&mut r, clock),
            "a proof dated by a clock now corrected"
        );
        assert!(!retry_refresh(&mut r, clock), "once");
        assert!(retry_with_nonce(true, true, false));
        assert!(!retry_with_nonce(true, true, true));
        assert!(!retry_with_nonce(true, false, false));
        assert!(!retry_with_nonce(false, true, false));
    }

    #[test]
    fn proofs_are_dated_by_the_servers_clock_once_an_answer_gave_it() {
        // The page's clock is 30 s fast; the server's Date says 08:49:37.
        let server = 784_111_777_000;
        let page = Stamp {
            wall: server + 30_000,
            mono: 5_000,
        };
        assert_eq!(
            proof_iat(None, page),
            (server + 30_000) / 1000,
            "nothing known yet"
        );
        let known = server_clock(Some("Sun, 06 Nov 1994 08:49:37 GMT"), page);
        assert_eq!(known, Some((server, 5_000)));
        assert_eq!(proof_iat(known, page), server / 1000);
        // 10 s later, and the user set the page's clock back an hour meanwhile: the
        // monotonic clock carries the server's on.
        let later = Stamp {
            wall: page.wall - 3_600_000 + 10_000,
            mono: 15_000,
        };
        assert_eq!(proof_iat(known, later), server / 1000 + 10);
        assert!(
            clock_moved(None, known, page),
            "30 s off: a refused proof is retried"
        );
        let close = Stamp {
            wall: server + 1_500,
            mono: 5_000,
        };
        assert!(
            !clock_moved(None, known, close),
            "1.5 s: Date's own rounding"
        );
        assert_eq!(server_clock(Some("soon"), page), None);
        assert_eq!(server_clock(None, page), None);
        assert!(proof_refused(400, r#"{"error":"invalid_dpop_proof"}"#));
        assert!(!proof_refused(400, r#"{"error":"use_dpop_nonce"}"#));
        assert!(!proof_refused(503, r#"{"error":"invalid_dpop_proof"}"#));
    }

    #[test]
    fn only_an_unbound_session_with_dpop_on_is_bound_by_a_refresh() {
        assert!(bind_after_set_session(true, false));
        assert!(!bind_after_set_session(true, true));
        assert!(!bind_after_set_session(false, false));
    }

    #[test]
    fn only_a_bound_token_with_dpop_on_gets_a_proof() {
        assert!(with_proof(true, true));
        assert!(
            !with_proof(true, false),
            "a Bearer token under dpop: no proof"
        );
        assert!(!with_proof(false, true));
        assert!(!with_proof(false, false));
    }

    #[test]
    fn authorization_uses_the_dpop_scheme_when_on() {
        assert_eq!(authorization("t", true), "DPoP t");
        assert_eq!(authorization("t", false), "Bearer t");
    }
}
