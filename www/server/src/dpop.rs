//! DPoP proofs (RFC 9449): parsing and checking a `DPoP` header value, RFC 7638 thumbprints
//! and the server's nonce. Pure functions over their inputs (the clock is an argument);
//! the replay cache lives in the store ([`crate::store::RefreshStore::first_use_of_proof`]),
//! and the routes decide which requests need a proof ([`crate::extract`]).
//!
//! The checks of RFC 9449 §4.3, in order: one well-formed JWS; `typ` is `dpop+jwt`; `alg`
//! is on the allow-list ([`ALGS`]: ES256 only, so `none`, HS* and RS* are refused); `jwk`
//! is a public P-256 key (a private member such as `d` is refused); the signature verifies
//! with that key; `htm` and `htu` match the request; `iat` is within the window; `ath`
//! matches the access token when one is presented; `nonce` matches when nonces are on.
//! `jti` must be new: that check needs the store and is done by the caller.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::EncodedPoint;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// The signature algorithms accepted in proofs (the `algs` of a `WWW-Authenticate: DPoP`).
pub const ALGS: &str = "ES256";
/// The response header that carries the server's nonce.
pub const NONCE_HEADER: &str = "dpop-nonce";
/// The request header that carries a proof.
pub const PROOF_HEADER: &str = "dpop";
/// The proof's `typ`.
pub const TYP: &str = "dpop+jwt";
/// Longest `DPoP` header value looked at (a P-256 proof is about 600 bytes).
pub const MAX_PROOF_LEN: usize = 4096;
/// Longest `jti` accepted.
pub const MAX_JTI_LEN: usize = 256;
/// Members of a JWK that only a private key has (RFC 7518 §6.2.2, §6.3.2, §6.4).
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

/// Why a proof was refused. Each variant is one check of RFC 9449 §4.3; clients only see
/// `invalid_dpop_proof` (or `use_dpop_nonce` for the nonce ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofError {
    /// No `DPoP` header where one is needed.
    Missing,
    /// More than one `DPoP` header.
    Several,
    /// Not a compact JWS with JSON header and claims, or a claim of the wrong type.
    Malformed,
    /// `typ` is not `dpop+jwt`.
    Type,
    /// `alg` is not on the allow-list, or `crit` is present.
    Algorithm,
    /// `jwk` is missing, not a P-256 public key, or carries a private member.
    Key,
    /// The signature does not verify with `jwk`.
    Signature,
    /// `htm` is not the request's method.
    Method,
    /// `htu` is not the request's URI (without query and fragment).
    Uri,
    /// `iat` is too old or in the future.
    IssuedAt,
    /// `jti` was seen before within the window.
    Replayed,
    /// `ath` is missing or not the hash of the presented access token.
    AccessTokenHash,
    /// Nonces are on and the proof has none, or an old one: answer with `use_dpop_nonce`.
    Nonce,
    /// The proof's key is not the one the token or the session is bound to.
    WrongKey,
}

impl ProofError {
    /// The OAuth error code for this failure.
    pub fn code(self) -> &'static str {
        match self {
            ProofError::Nonce => "use_dpop_nonce",
            _ => "invalid_dpop_proof",
        }
    }
}

/// A proof whose framing, header, key and signature are valid; its claims are not checked
/// against a request yet.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// RFC 7638 thumbprint of the proof's `jwk`.
    pub jkt: String,
    /// The claims.
    pub claims: Claims,
}

/// The claims of a proof.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// Unique id of this proof.
    pub jti: String,
    /// HTTP method.
    pub htm: String,
    /// HTTP URI, without query and fragment.
    pub htu: String,
    /// Creation time (seconds).
    pub iat: f64,
    /// Hash of the access token (resource requests).
    #[serde(default)]
    pub ath: Option<String>,
    /// The server's nonce, when it asked for one.
    #[serde(default)]
    pub nonce: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    typ: Option<String>,
    alg: String,
    #[serde(default)]
    jwk: Option<Map<String, Value>>,
    #[serde(default)]
    crit: Option<Value>,
}

fn b64(part: &str) -> Result<Vec<u8>, ProofError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| ProofError::Malformed)
}

fn coordinate(jwk: &Map<String, Value>, name: &str) -> Result<[u8; 32], ProofError> {
    let text = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or(ProofError::Key)?;
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| ProofError::Key)?;
    bytes.try_into().map_err(|_| ProofError::Key)
}

/// The public key in a proof's `jwk` and its RFC 7638 thumbprint.
pub fn public_key(jwk: &Map<String, Value>) -> Result<(VerifyingKey, String), ProofError> {
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(ProofError::Key);
    }
    if jwk.get("kty").and_then(Value::as_str) != Some("EC")
        || jwk.get("crv").and_then(Value::as_str) != Some("P-256")
    {
        return Err(ProofError::Key);
    }
    let (x, y) = (coordinate(jwk, "x")?, coordinate(jwk, "y")?);
    let point = EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
    let key = VerifyingKey::from_encoded_point(&point).map_err(|_| ProofError::Key)?;
    Ok((key, thumbprint(&x, &y)))
}

/// RFC 7638 thumbprint of a P-256 public key given by its coordinates.
pub fn thumbprint(x: &[u8; 32], y: &[u8; 32]) -> String {
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(x),
        URL_SAFE_NO_PAD.encode(y)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// `ath`: base64url SHA-256 of an access token.
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// Check framing, `typ`, `alg`, `jwk` and the signature of a `DPoP` header value. Never
/// panics, whatever the input (fuzzed by `fuzz/fuzz_targets/dpop_proof.rs`).
pub fn parse(proof: &str) -> Result<Parsed, ProofError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::Malformed);
    }
    let mut parts = proof.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProofError::Malformed);
    };
    let header: Header = serde_json::from_slice(&b64(h)?).map_err(|_| ProofError::Malformed)?;
    if header.typ.as_deref() != Some(TYP) {
        return Err(ProofError::Type);
    }
    if header.alg != "ES256" || header.crit.is_some() {
        return Err(ProofError::Algorithm);
    }
    let (key, jkt) = public_key(header.jwk.as_ref().ok_or(ProofError::Key)?)?;
    let signature = Signature::from_slice(&b64(s)?).map_err(|_| ProofError::Signature)?;
    // WebCrypto does not normalise S, so both spellings verify; a re-spelt proof keeps its
    // `jti` and is caught by the replay cache.
    key.verify(&proof.as_bytes()[..h.len() + 1 + p.len()], &signature)
        .map_err(|_| ProofError::Signature)?;
    let claims: Claims = serde_json::from_slice(&b64(p)?).map_err(|_| ProofError::Malformed)?;
    if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN || !claims.iat.is_finite() {
        return Err(ProofError::Malformed);
    }
    Ok(Parsed { jkt, claims })
}

/// What the request a proof came with looks like, and what the server expects.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The request's method.
    pub method: &'a str,
    /// The request's authority (the `Host` header).
    pub authority: &'a str,
    /// The request's path (no query).
    pub path: &'a str,
    /// Now, epoch ms.
    pub now_ms: i64,
    /// How old a proof may be, seconds.
    pub max_age_s: i64,
    /// How far in the future `iat` may be (clock skew), seconds.
    pub leeway_s: i64,
    /// The access token the proof must be bound to (`ath`), for resource requests.
    pub access_token: Option<&'a str>,
    /// The nonces accepted now, when nonces are on.
    pub nonces: Option<&'a [String]>,
}

/// Whether `htu` names the request: `http` or `https` in any case, the request's authority
/// (default ports dropped, case-insensitive) and its path; query and fragment are ignored
/// (RFC 9449 §4.3 step 9). Both paths are compared after RFC 3986's syntax-based
/// normalisation (§6.2.2: percent-encoding hex in upper case, unreserved characters decoded,
/// dot segments removed) and scheme-based normalisation (§6.2.3: an empty path is `/`), as
/// RFC 9449 §4.3 says servers SHOULD, so a client that writes `%7e` or `%2F` differently from
/// the browser is not refused.
fn htu_matches(htu: &str, authority: &str, path: &str) -> bool {
    let without = htu.split(['?', '#']).next().unwrap_or("");
    let Some((scheme, rest)) = without.split_once("://") else {
        return false;
    };
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        ":443"
    } else if scheme.eq_ignore_ascii_case("http") {
        ":80"
    } else {
        return false;
    };
    let (host, htu_path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = host.strip_suffix(default_port).unwrap_or(host);
    let authority = authority.trim();
    let authority = authority.strip_suffix(default_port).unwrap_or(authority);
    host.eq_ignore_ascii_case(authority) && normalized_path(htu_path) == normalized_path(path)
}

/// A URI path after RFC 3986 §6.2.2.1–3 and §6.2.3 (see [`htu_matches`]). Hand-written:
/// twenty lines, where a URL crate would also reinterpret what the request line carried.
fn normalized_path(path: &str) -> String {
    let b = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                let c = (hi * 16 + lo) as u8;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(char::from(c));
                } else {
                    decoded.push('%');
                    decoded.push_str(&path[i + 1..i + 3].to_ascii_uppercase());
                }
                i += 3;
            }
            _ => {
                // Whole UTF-8 characters: `i` only stops at ASCII or at a character's start.
                let ch = path[i..].chars().next().unwrap_or('\u{fffd}');
                decoded.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    // Dot segments (RFC 3986 §5.2.4), on the decoded path ("%2E%2E" is ".." too).
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').collect();
    let last = segments.len() - 1;
    for (n, seg) in segments.iter().enumerate().skip(1) {
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                if n == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut normalized = String::with_capacity(decoded.len() + 1);
    for seg in &out {
        normalized.push('/');
        normalized.push_str(seg);
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    normalized
}

/// Check a parsed proof's claims against the request (everything but `jti` replay).
pub fn check(parsed: &Parsed, expected: &Expected<'_>) -> Result<(), ProofError> {
    let c = &parsed.claims;
    if c.htm != expected.method {
        return Err(ProofError::Method);
    }
    if !htu_matches(&c.htu, expected.authority, expected.path) {
        return Err(ProofError::Uri);
    }
    let now = expected.now_ms as f64 / 1000.0;
    if c.iat < now - expected.max_age_s as f64 || c.iat > now + expected.leeway_s as f64 {
        return Err(ProofError::IssuedAt);
    }
    if let Some(token) = expected.access_token {
        if c.ath.as_deref() != Some(access_token_hash(token).as_str()) {
            return Err(ProofError::AccessTokenHash);
        }
    }
    if let Some(nonces) = expected.nonces {
        match &c.nonce {
            Some(n) if nonces.iter().any(|x| x == n) => {}
            _ => return Err(ProofError::Nonce),
        }
    }
    Ok(())
}

/// The key under which a proof's `jti` is remembered: SHA-256 of the key thumbprint and the
/// `jti` (so two clients cannot collide on purpose, and no proof text is stored).
pub fn replay_key(parsed: &Parsed) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(parsed.jkt.as_bytes());
    h.update([0]);
    h.update(parsed.claims.jti.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_ignores_query_fragment_default_port_and_host_case() {
        assert!(htu_matches(
            "http://LOCALHOST:80/api/me?x=1#f",
            "localhost",
            "/api/me"
        ));
        assert!(htu_matches(
            "https://a.example/api/me",
            "a.example:443",
            "/api/me"
        ));
        assert!(htu_matches(
            "http://127.0.0.1:8080/auth/refresh",
            "127.0.0.1:8080",
            "/auth/refresh"
        ));
        assert!(!htu_matches(
            "http://127.0.0.1:8081/auth/refresh",
            "127.0.0.1:8080",
            "/auth/refresh"
        ));
        assert!(!htu_matches(
            "http://127.0.0.1:8080/auth/refresh/",
            "127.0.0.1:8080",
            "/auth/refresh"
        ));
        assert!(!htu_matches(
            "ftp://127.0.0.1:8080/auth/refresh",
            "127.0.0.1:8080",
            "/auth/refresh"
        ));
        assert!(!htu_matches(
            "/auth/refresh",
            "127.0.0.1:8080",
            "/auth/refresh"
        ));
    }

    #[test]
    fn htu_is_compared_after_rfc_3986_normalisation() {
        let (auth, path) = ("a.example", "/api/~me/x%2Fy");
        // RFC 3986 §6.2.2.1: scheme and host case, percent-encoding hex case.
        assert!(htu_matches("HTTPS://A.example/api/~me/x%2fy", auth, path));
        // §6.2.2.2: unreserved characters percent-encoded.
        assert!(htu_matches(
            "https://a.example/%61pi/%7Eme/x%2Fy",
            auth,
            path
        ));
        // §6.2.2.3: dot segments.
        assert!(htu_matches(
            "https://a.example/api/v1/../~me/./x%2Fy",
            auth,
            path
        ));
        assert!(htu_matches(
            "https://a.example/api/%2E%2E/api/~me/x%2Fy",
            auth,
            path
        ));
        // §6.2.3: an empty path is "/".
        assert!(htu_matches("https://a.example", auth, "/"));
        assert!(htu_matches("https://a.example?q", auth, "/"));
        // Still refused: a reserved character decoded changes the path, another path, another
        // host, a trailing slash.
        assert!(!htu_matches("https://a.example/api/~me/x/y", auth, path));
        assert!(!htu_matches("https://a.example/api/me/x%2Fy", auth, path));
        assert!(!htu_matches("https://b.example/api/~me/x%2Fy", auth, path));
        assert!(!htu_matches("https://a.example/api/~me/x%2Fy/", auth, path));
        // Malformed escapes are compared as they are, and non-ASCII paths do not panic.
        assert!(htu_matches("https://a.example/a%zz%4", auth, "/a%zz%4"));
        assert!(htu_matches("https://a.example/é/%C3%A9", auth, "/é/%c3%a9"));
        assert_eq!(normalized_path("/a/b/.."), "/a/");
        assert_eq!(normalized_path("/a/./b/."), "/a/b/");
        assert_eq!(normalized_path("/../.."), "/");
    }

    #[test]
    fn the_thumbprint_is_the_rfc_7638_example_for_its_key() {
        // RFC 7638 §3.1 uses an RSA key; this is the P-256 key of RFC 7515 appendix A.3.
        let x = URL_SAFE_NO_PAD
            .decode("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU")
            .unwrap();
        let y = URL_SAFE_NO_PAD
            .decode("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0")
            .unwrap();
        let t = thumbprint(&x.try_into().unwrap(), &y.try_into().unwrap());
        let canonical = r#"{"crv":"P-256","kty":"EC","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        assert_eq!(t, URL_SAFE_NO_PAD.encode(Sha256::digest(canonical)));
        assert_eq!(t.len(), 43);
    }

    #[test]
    fn garbage_is_malformed_and_never_panics() {
        for input in ["", ".", "..", "a.b.c", "e30.e30.", "e30.e30.e30.e30"] {
            assert!(parse(input).is_err(), "{input}");
        }
        assert_eq!(
            parse(&"a".repeat(MAX_PROOF_LEN + 1)).unwrap_err(),
            ProofError::Malformed
        );
    }
}
