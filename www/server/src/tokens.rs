//! Access tokens (minting, claims and their checks) and opaque refresh tokens. The JWS
//! framing and signatures are in [`crate::keys`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand_core::{OsRng, RngCore as _};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::keys::KeySet;

/// Scopes granted to the demo user.
pub const DEMO_SCOPE: &str = "read:me profile";

/// Claims of an access token issued by this server.
#[derive(Debug, Clone, Serialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject (the user id; no other personal data).
    pub sub: String,
    /// Issued at (seconds).
    pub iat: i64,
    /// Expiry (seconds).
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
    /// Space-separated scopes.
    pub scope: String,
    /// The refresh-token family (session) the token was issued for: tokens of a revoked
    /// family are refused before their `exp`.
    pub sid: String,
    /// Confirmation (RFC 9449 §6): the DPoP key the token is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// `cnf` of a DPoP-bound token.
#[derive(Debug, Clone, Serialize)]
pub struct Confirmation {
    /// RFC 7638 thumbprint of the key.
    pub jkt: String,
}

/// Whether the access token is normal or (fault injection) already expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLifetime {
    /// `exp` = ceil(now + ttl), `expires_in` = ceil(ttl).
    Normal,
    /// `exp` = `iat` - 1, `expires_in` = 0.
    AlreadyExpired,
}

/// Who a new access token is for, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    /// `iss`.
    pub issuer: &'a str,
    /// `aud`.
    pub audience: &'a str,
    /// `sub`.
    pub sub: &'a str,
    /// `sid`: the family id.
    pub sid: &'a str,
    /// Lifetime in seconds (may be fractional).
    pub ttl_s: f64,
    /// Normal or already expired.
    pub lifetime: AccessLifetime,
    /// The DPoP key thumbprint to bind the token to (`cnf.jkt`), if any.
    pub jkt: Option<&'a str>,
}

/// Mint and sign an access token at `now_ms`. Returns the JWT and `expires_in`.
pub fn mint(
    keys: &KeySet,
    grant: Grant<'_>,
    now_ms: i64,
) -> Result<(String, u64), serde_json::Error> {
    let iat = now_ms.div_euclid(1000);
    let (exp, expires_in) = match grant.lifetime {
        // exp is rounded up so the token never dies before the client expects it to.
        AccessLifetime::Normal => (
            ((now_ms as f64) / 1000.0 + grant.ttl_s).ceil() as i64,
            grant.ttl_s.ceil() as u64,
        ),
        AccessLifetime::AlreadyExpired => (iat - 1, 0),
    };
    let claims = AccessClaims {
        iss: grant.issuer.to_string(),
        aud: grant.audience.to_string(),
        sub: grant.sub.to_string(),
        iat,
        exp,
        jti: random_id(16),
        scope: DEMO_SCOPE.to_string(),
        sid: grant.sid.to_string(),
        cnf: grant.jkt.map(|jkt| Confirmation {
            jkt: jkt.to_string(),
        }),
    };
    Ok((keys.sign(&claims)?, expires_in))
}

/// What a validated access token must say about where it comes from and for whom.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud` (a string, or one element of an array).
    pub audience: String,
    /// Clock-skew allowance for `exp` and `nbf`, in seconds.
    pub leeway_s: i64,
}

/// Why an access token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessTokenError {
    /// Signature, algorithm, key, issuer, audience or format is wrong, `sid` is missing, or
    /// `nbf` is in the future.
    Invalid,
    /// Correctly signed but past `exp` (+ leeway).
    Expired,
}

/// Verify a compact JWS and its registered claims at `now_s`; return the claims.
pub fn validate(
    keys: &KeySet,
    token: &str,
    rules: &Validation,
    now_ms: i64,
) -> Result<Map<String, Value>, AccessTokenError> {
    let claims = keys.verify(token).map_err(|_| AccessTokenError::Invalid)?;
    if claims.get("iss").and_then(Value::as_str) != Some(rules.issuer.as_str()) {
        return Err(AccessTokenError::Invalid);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => *a == rules.audience,
        Some(Value::Array(list)) => list
            .iter()
            .any(|a| a.as_str() == Some(rules.audience.as_str())),
        _ => false,
    };
    if !aud_ok {
        return Err(AccessTokenError::Invalid);
    }
    let now = now_ms as f64 / 1000.0;
    let leeway = rules.leeway_s as f64;
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or(AccessTokenError::Invalid)?;
    match claims.get("nbf") {
        None => {}
        Some(nbf) => match nbf.as_f64() {
            Some(nbf) if now + leeway >= nbf => {}
            _ => return Err(AccessTokenError::Invalid),
        },
    }
    if now >= exp + leeway {
        return Err(AccessTokenError::Expired);
    }
    if !claims.get("sid").is_some_and(Value::is_string) {
        return Err(AccessTokenError::Invalid);
    }
    Ok(claims)
}

/// `n` random bytes from the OS CSPRNG, base64url without padding.
pub fn random_id(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new opaque refresh token: 256 bits from the OS CSPRNG, base64url (43 chars).
pub fn new_refresh_token() -> String {
    random_id(32)
}

/// The successor of refresh token `parent`: HMAC-SHA256 keyed with the servers' shared
/// successor key, base64url (43 chars, like [`new_refresh_token`]). Unpredictable without
/// the key, and the same on every instance, so a lost response can be answered again.
pub fn successor(key: &[u8; 32], parent: &str) -> String {
    use hmac::{Hmac, Mac as _};
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(parent.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The DPoP nonce of window `window` (RFC 9449 §8): HMAC-SHA256 keyed with the servers'
/// shared nonce key over `salt` and the window, truncated to 128 bits, base64url (22 chars).
/// Derived rather than drawn, so that every instance hands out and accepts the same nonce.
pub fn dpop_nonce(key: &[u8; 32], salt: u64, window: i64) -> String {
    use hmac::{Hmac, Mac as _};
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(b"dpop-nonce\0");
    mac.update(&salt.to_be_bytes());
    mac.update(&window.to_be_bytes());
    URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..16])
}

/// The value of the anchor cookie of refresh token `token` ([`crate::extract::ANCHOR_COOKIE`]):
/// base64url of the first 128 bits of SHA-256 over a context string and the token. It goes
/// with every request to the host, so it is not the token, and the token cannot be worked
/// back from it; a token planted without it is ignored.
pub fn refresh_anchor(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tokenwarden refresh anchor\0");
    h.update(token.as_bytes());
    URL_SAFE_NO_PAD.encode(&h.finalize()[..16])
}

/// SHA-256 of a refresh token; only this is stored.
pub type TokenHash = [u8; 32];

/// Hash a refresh token for storage and lookup.
pub fn hash_refresh_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refresh_anchor_is_pinned_for_clients_that_compute_it() {
        // tests/support/cookies.mjs computes the same value (plain HTTP test clients).
        assert_eq!(refresh_anchor("tok"), "-fURxoHHV27PdhSgaa9TDw");
    }
}
