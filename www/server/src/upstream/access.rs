//! The provider's JWT access tokens, checked against its JWKS (the way an API checks them:
//! RFC 9068, with the common pre-9068 `typ: JWT` tokens of Keycloak and Auth0 accepted too).
//!
//! Parsing, the signature (RSA, RSA-PSS, ECDSA, EdDSA) and the `typ`, `iss`, `aud` and `exp`
//! checks are `openidconnect`'s JWT verifier: it is written for ID tokens, whose checks are
//! a superset of an access token's, so it is configured here as an access token needs:
//!
//! - `alg` on [`ALLOWED_ALGS`] (asymmetric only: `none` and HS* are refused, so a token
//!   "signed" with the provider's public key as an HMAC secret fails);
//! - `typ` absent, `JWT` or `at+jwt` (`application/…` forms too); `crit` and `cty` refused;
//! - `iss` = the provider's issuer exactly; `aud` (string or array) contains the expected
//!   audience (`--oidc-audience`, by default the client id); other audiences beside it are
//!   allowed (Auth0 adds its userinfo URL);
//! - `exp` after now − leeway, `nbf` (when present) before now + leeway; `iat` and `sub`
//!   required (RFC 9068 §2.2);
//! - no `nonce`: an ID token is not an access token. Our ID tokens always carry the login's
//!   nonce, and the end-session URL hands one to the browser as `id_token_hint`; with the
//!   default audience (the client id) it would otherwise pass for an access token.
//!
//! Keys come from the provider's `jwks_uri` ([`Jwks`]): loaded at discovery, fetched again
//! when a token names a key we do not have (the provider rotated), at most once per
//! [`JWKS_MIN_REFETCH_MS`] however many such tokens arrive (only these fetches count: the
//! first unknown key after discovery or an age refresh fetches at once), so forged `kid`s
//! cannot turn the server into a JWKS-fetching amplifier; and fetched again before use once they are
//! [`JWKS_MAX_AGE_MS`] old, so a key the provider withdrew (compromised, retired) stops
//! being trusted within that time, without a restart.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use openidconnect::core::{
    CoreGenderClaim, CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AdditionalClaims, ClaimsVerificationError, ClientId, IdToken, IdTokenVerifier, IssuerUrl,
    JsonWebTokenType, Nonce, SignatureVerificationError,
};
use serde::{Deserialize, Serialize};

/// Signature algorithms accepted on provider access tokens.
pub const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// A token naming an unknown key makes the JWKS be fetched again at most this often.
pub const JWKS_MIN_REFETCH_MS: i64 = 10_000;

/// Keys older than this are fetched again before the next token is checked. If that fetch
/// fails (provider down) the old keys stay in use and the next try is one interval later.
pub const JWKS_MAX_AGE_MS: i64 = 5 * 60_000;

/// Longest access token looked at.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The `cnf` claim (RFC 7800; `jkt` from RFC 9449).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Confirmation {
    /// RFC 7638 thumbprint of the DPoP key the token is bound to.
    #[serde(default)]
    pub jkt: Option<String>,
}

/// Claims of an access token beyond those of an ID token.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct AccessExtra {
    /// Not before (epoch s).
    #[serde(default)]
    pub nbf: Option<f64>,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: Option<String>,
    /// The client the token was issued to (RFC 9068).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Confirmation (DPoP binding).
    #[serde(default)]
    pub cnf: Option<Confirmation>,
}
impl AdditionalClaims for AccessExtra {}

type AccessJwt = IdToken<
    AccessExtra,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// What `/api/me` learns from a provider access token, however it was checked.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProviderClaims {
    /// Subject.
    pub sub: Option<String>,
    /// Scopes.
    pub scope: Option<String>,
    /// Expiry (epoch s).
    pub exp: Option<i64>,
    /// Issuer.
    pub iss: String,
    /// Audiences (JWT only; introspection does not always say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aud: Vec<String>,
    /// The client the token was issued to.
    pub client_id: Option<String>,
    /// The DPoP key the token is bound to (`cnf.jkt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    /// `"jwt"` (signature against the JWKS) or `"introspection"` (RFC 7662).
    pub checked_by: &'static str,
}

/// What a JWT check expects.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The provider's issuer (`iss`, exactly).
    pub issuer: IssuerUrl,
    /// The audience that must be in `aud`.
    pub audience: String,
    /// Now, epoch ms.
    pub now_ms: i64,
    /// Clock-skew allowance for `exp` and `nbf`, seconds.
    pub leeway_s: i64,
}

/// Why a JWT access token was refused. The detail is for logs (it never holds the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// No key of the JWKS matches its `kid` and `alg`: fetch the JWKS again.
    UnknownKey,
    /// Correctly signed, but expired.
    Expired,
    /// Anything else.
    Invalid(String),
}

/// Whether `token` is shaped like a JWS (three base64url parts, the first two non-empty; an
/// empty signature is an unsigned JWT, refused as one); anything else is opaque and goes to
/// introspection.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let b64 = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(h), Some(p), Some(s), None)
            if !h.is_empty() && !p.is_empty() && b64(h) && b64(p) && b64(s)
    )
}

/// The `exp` of a JWT the provider just handed us (epoch ms), read without checking its
/// signature: only to remember the token for as long as `/api/me` could accept it (a provider
/// may omit `expires_in`, or state less than the token lives). `None` when it has none.
pub fn unverified_exp_ms(token: &str) -> Option<i64> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let exp = claims.get("exp")?;
    let secs = exp.as_i64().or_else(|| exp.as_f64().map(|f| f as i64))?;
    Some(secs.saturating_mul(1000))
}

/// Check a JWT access token against `keys` and `rules`.
pub fn verify(
    keys: &CoreJsonWebKeySet,
    token: &str,
    rules: &Rules,
) -> Result<ProviderClaims, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Invalid("token too long".into()));
    }
    let jwt = AccessJwt::from_str(token).map_err(|_| JwtError::Invalid("not a JWT".into()))?;
    let shifted = |by_s: i64| {
        chrono::DateTime::from_timestamp_millis(rules.now_ms - by_s * 1000).unwrap_or_default()
    };
    // The verifier's `exp` check is `now < exp`: asking it with now − leeway is the leeway.
    let then = shifted(rules.leeway_s);
    let typ = |t: &str| JsonWebTokenType::new(t.to_string()).normalize();
    let types = [typ("JWT"), typ("at+jwt")]
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| JwtError::Invalid("type".into()))?;
    let verifier = IdTokenVerifier::<CoreJsonWebKey>::new_public_client(
        ClientId::new(rules.audience.clone()),
        rules.issuer.clone(),
        keys.clone(),
    )
    .set_allowed_algs(ALLOWED_ALGS)
    .set_allowed_jose_types(types)
    .set_other_audience_verifier_fn(|_| true)
    .set_time_fn(move || then);
    let no_nonce = |n: Option<&Nonce>| match n {
        None => Ok(()),
        Some(_) => Err("a nonce: this is an ID token".to_string()),
    };
    let claims = jwt.claims(&verifier, no_nonce).map_err(|e| match e {
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        ) => JwtError::UnknownKey,
        ClaimsVerificationError::Expired(_) => JwtError::Expired,
        other => JwtError::Invalid(other.to_string()),
    })?;
    let extra = claims.additional_claims();
    let now_s = rules.now_ms as f64 / 1000.0;
    if let Some(nbf) = extra.nbf {
        if !nbf.is_finite() || nbf > now_s + rules.leeway_s as f64 {
            return Err(JwtError::Invalid("not yet valid (nbf)".into()));
        }
    }
    Ok(ProviderClaims {
        sub: Some(claims.subject().as_str().to_string()),
        scope: extra.scope.clone(),
        exp: Some(claims.expiration().timestamp()),
        iss: claims.issuer().as_str().to_string(),
        aud: claims.audiences().iter().map(|a| a.to_string()).collect(),
        client_id: extra.client_id.clone(),
        jkt: extra.cnf.as_ref().and_then(|c| c.jkt.clone()),
        checked_by: "jwt",
    })
}

/// Fetches the provider's JWKS (with a timeout); the detail of a failure is for logs.
pub type FetchJwks = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<CoreJsonWebKeySet, String>> + Send>>
        + Send
        + Sync,
>;

/// The provider's signing keys, fetched again (rate-limited, single-flight) when a token
/// names one we do not have.
pub struct Jwks {
    keys: RwLock<CoreJsonWebKeySet>,
    /// When a fetch of any kind last started (discovery, old keys, an unknown key): the keys'
    /// age, for [`JWKS_MAX_AGE_MS`] (an attempt counts even when it fails).
    fetched_at_ms: AtomicI64,
    /// When a fetch for an unknown key last started, for [`JWKS_MIN_REFETCH_MS`]; `i64::MIN`
    /// before the first. Only these count toward that limit: the keys of discovery, or of a
    /// fetch because they were old, may predate a rotation just as well.
    unknown_key_at_ms: AtomicI64,
    /// Fetches finished; a caller that waited for another's fetch sees it changed.
    generation: AtomicU64,
    refetch: tokio::sync::Mutex<()>,
    fetch: FetchJwks,
    /// JWKS fetches after the first (for tests and metrics).
    pub refetches: AtomicU64,
}

impl Jwks {
    /// Keys loaded at `now_ms` (at discovery); `fetch` gets fresh ones.
    pub fn new(keys: CoreJsonWebKeySet, now_ms: i64, fetch: FetchJwks) -> Self {
        Self {
            keys: RwLock::new(keys),
            fetched_at_ms: AtomicI64::new(now_ms),
            unknown_key_at_ms: AtomicI64::new(i64::MIN),
            generation: AtomicU64::new(0),
            refetch: tokio::sync::Mutex::new(()),
            fetch,
            refetches: AtomicU64::new(0),
        }
    }

    /// How many fetches have finished: taken before using the keys, for [`Self::refetch`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The current keys.
    pub fn keys(&self) -> CoreJsonWebKeySet {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A token names a key we do not have: fetch the keys again, unless a fetch for an
    /// unknown key started less than [`JWKS_MIN_REFETCH_MS`] ago (forged `kid`s cannot make
    /// the server fetch more often). A fetch at discovery or because the keys were old does
    /// not count: the first unknown key after them fetches at once (it counted, and after a
    /// provider's key rotation its new key's tokens — ID tokens at sign-in too — were refused
    /// for up to 10 s). Concurrent callers share one fetch. `true` when keys newer than the
    /// caller's were loaded (by this call or by the one it waited for).
    ///
    /// `seen`: [`Self::generation`] when the caller began with the keys (before its
    /// [`Self::refresh_if_old`]): keys loaded since are as fresh as a fetch now would be, so
    /// the caller is told to check again instead (a withdrawn key's token right after an age
    /// refresh fetched twice).
    pub async fn refetch(&self, seen: u64, now_ms: i64) -> bool {
        self.refetch_limited(seen, now_ms, true).await
    }

    /// [`Self::refetch`] for a token the provider itself just handed us — the ID token of a
    /// code exchange, over our authenticated back channel — without the once-per-interval
    /// limit: its `kid` cannot be forged by a client (and each such token costs a sign-in at
    /// the provider), so a key rotation right after another fetch does not fail the sign-in
    /// with `invalid_id_token`. Still single-flight, and it counts toward the limit of
    /// [`Self::refetch`].
    pub async fn refetch_for_provider_token(&self, seen: u64, now_ms: i64) -> bool {
        self.refetch_limited(seen, now_ms, false).await
    }

    async fn refetch_limited(&self, seen: u64, now_ms: i64, limited: bool) -> bool {
        let _one_at_a_time = self.refetch.lock().await;
        if self.generation.load(Ordering::SeqCst) != seen {
            return true;
        }
        let last = self.unknown_key_at_ms.load(Ordering::SeqCst);
        if limited && now_ms.saturating_sub(last) < JWKS_MIN_REFETCH_MS {
            return false;
        }
        // An attempt counts even when it fails: a provider that is down is not hammered.
        self.unknown_key_at_ms.store(now_ms, Ordering::SeqCst);
        self.fetch_now(now_ms).await
    }

    /// Fetch the keys again first when they are [`JWKS_MAX_AGE_MS`] old, so that a key the
    /// provider withdrew is dropped: before every use of the keys (access tokens here, ID
    /// tokens at sign-in — which used to take the cached keys however old).
    pub async fn refresh_if_old(&self, now_ms: i64) {
        let old = || now_ms - self.fetched_at_ms.load(Ordering::SeqCst) >= JWKS_MAX_AGE_MS;
        if !old() {
            return;
        }
        let seen = self.generation.load(Ordering::SeqCst);
        let _one_at_a_time = self.refetch.lock().await;
        if self.generation.load(Ordering::SeqCst) == seen && old() {
            self.fetch_now(now_ms).await;
        }
    }

    /// One fetch (the caller holds `refetch`); `true` when it loaded keys.
    async fn fetch_now(&self, now_ms: i64) -> bool {
        self.fetched_at_ms.store(now_ms, Ordering::SeqCst);
        self.refetches.fetch_add(1, Ordering::Relaxed);
        let fetched = match (self.fetch)().await {
            Ok(keys) => {
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
                true
            }
            Err(detail) => {
                tracing::warn!(%detail, "fetching the provider's JWKS failed");
                false
            }
        };
        self.generation.fetch_add(1, Ordering::SeqCst);
        fetched
    }

    /// [`verify`] with the current keys (fetched again first when [`JWKS_MAX_AGE_MS`] old);
    /// a token naming an unknown key makes the keys be fetched again (see
    /// [`Jwks::refetch`]) and is checked once more.
    pub async fn verify(&self, token: &str, rules: &Rules) -> Result<ProviderClaims, JwtError> {
        self.check(rules.now_ms, |keys| verify(keys, token, rules))
            .await
    }

    /// `check` with the current keys, as [`Self::verify`] does it: fetched again first when
    /// old, and once more (rate-limited) when `check` names a key we do not have.
    pub async fn check<T>(
        &self,
        now_ms: i64,
        check: impl Fn(&CoreJsonWebKeySet) -> Result<T, JwtError>,
    ) -> Result<T, JwtError> {
        let seen = self.generation();
        self.refresh_if_old(now_ms).await;
        match check(&self.keys()) {
            Err(JwtError::UnknownKey) if self.refetch(seen, now_ms).await => check(&self.keys()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};
    use serde_json::{json, Value};
    use std::sync::Mutex;

    const ISS: &str = "https://id.example.com";
    const AUD: &str = "https://api.example.com";
    const NOW_MS: i64 = 1_800_000_000_000;
    const NOW: i64 = NOW_MS / 1000;

    struct Key {
        kid: String,
        signing: SigningKey,
    }

    impl Key {
        fn new(kid: &str) -> Self {
            Self {
                kid: kid.into(),
                signing: SigningKey::random(&mut rand_core::OsRng),
            }
        }

        fn jwk(&self) -> Value {
            let point = self.signing.verifying_key().to_encoded_point(false);
            let b = |v: Option<&p256::FieldBytes>| URL_SAFE_NO_PAD.encode(v.unwrap());
            json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
                   "x": b(point.x()), "y": b(point.y())})
        }

        fn sign(&self, header: Value, claims: &Value) -> String {
            let b = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
            let input = format!("{}.{}", b(&header), b(claims));
            let sig: Signature = self.signing.sign(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
        }

        fn token(&self, claims: &Value) -> String {
            self.sign(
                json!({"alg": "ES256", "typ": "at+jwt", "kid": self.kid}),
                claims,
            )
        }
    }

    fn set(keys: &[&Key]) -> CoreJsonWebKeySet {
        serde_json::from_value(json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() }))
            .unwrap()
    }

    fn claims() -> Value {
        json!({"iss": ISS, "aud": AUD, "sub": "alice", "client_id": "app", "iat": NOW - 10,
               "exp": NOW + 50, "jti": "j1", "scope": "api:read", "cnf": {"jkt": "thumb"}})
    }

    fn with(changes: Value) -> Value {
        let mut c = claims();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn rules() -> Rules {
        Rules {
            issuer: IssuerUrl::new(ISS.into()).unwrap(),
            audience: AUD.into(),
            now_ms: NOW_MS,
            leeway_s: 5,
        }
    }

    fn invalid(r: Result<ProviderClaims, JwtError>) -> bool {
        matches!(r, Err(JwtError::Invalid(_)))
    }

    #[test]
    fn the_unverified_exp_is_read_in_ms_and_absent_or_garbage_is_none() {
        let k = Key::new("k1");
        assert_eq!(
            unverified_exp_ms(&k.token(&claims())),
            Some((NOW + 50) * 1000)
        );
        assert_eq!(
            unverified_exp_ms(&k.token(&with(json!({"exp": null})))),
            None
        );
        assert_eq!(
            unverified_exp_ms(&k.token(&with(json!({"exp": "soon"})))),
            None
        );
        assert_eq!(
            unverified_exp_ms(&k.token(&with(json!({"exp": 1.5e9})))),
            Some(1_500_000_000_000)
        );
        assert_eq!(
            unverified_exp_ms(&k.token(&with(json!({"exp": i64::MAX})))),
            Some(i64::MAX)
        );
        assert_eq!(unverified_exp_ms("opaque"), None);
        assert_eq!(unverified_exp_ms("a.!!!.c"), None);
    }

    #[test]
    fn a_valid_token_gives_its_claims() {
        let k = Key::new("k1");
        let c = verify(&set(&[&k]), &k.token(&claims()), &rules()).unwrap();
        assert_eq!(c.sub.as_deref(), Some("alice"));
        assert_eq!(c.iss, ISS);
        assert_eq!(c.aud, [AUD]);
        assert_eq!(c.scope.as_deref(), Some("api:read"));
        assert_eq!(c.client_id.as_deref(), Some("app"));
        assert_eq!(c.jkt.as_deref(), Some("thumb"));
        assert_eq!(c.exp, Some(NOW + 50));
        assert_eq!(c.checked_by, "jwt");
        // typ JWT (Keycloak, Auth0) and no typ are accepted too; an array aud with ours in it.
        for header in [
            json!({"alg": "ES256", "typ": "JWT", "kid": "k1"}),
            json!({"alg": "ES256", "kid": "k1"}),
            json!({"alg": "ES256", "typ": "application/at+jwt", "kid": "k1"}),
        ] {
            assert!(verify(&set(&[&k]), &k.sign(header.clone(), &claims()), &rules()).is_ok());
        }
        let multi = with(json!({"aud": [AUD, "https://id.example.com/userinfo"]}));
        assert!(verify(&set(&[&k]), &k.token(&multi), &rules()).is_ok());
    }

    #[test]
    fn a_wrong_issuer_or_audience_is_refused() {
        let k = Key::new("k1");
        let keys = set(&[&k]);
        for c in [
            with(json!({"iss": "https://evil.example.com"})),
            with(json!({"iss": "https://id.example.com/"})),
            with(json!({"iss": null})),
            with(json!({"aud": "https://other-api.example.com"})),
            with(json!({"aud": ["app", "https://other-api.example.com"]})),
            with(json!({"aud": null})),
        ] {
            assert!(invalid(verify(&keys, &k.token(&c), &rules())), "{c}");
        }
    }

    #[test]
    fn exp_and_nbf_are_checked_with_the_leeway() {
        let k = Key::new("k1");
        let keys = set(&[&k]);
        let at = |c: Value| verify(&keys, &k.token(&c), &rules());
        assert!(
            at(with(json!({"exp": NOW - 4}))).is_ok(),
            "inside the leeway"
        );
        assert_eq!(
            at(with(json!({"exp": NOW - 6}))).unwrap_err(),
            JwtError::Expired
        );
        assert!(at(with(json!({"exp": null}))).is_err(), "exp required");
        assert!(at(with(json!({"nbf": NOW + 4}))).is_ok());
        assert!(invalid(at(with(json!({"nbf": NOW + 6})))));
        assert!(at(with(json!({"iat": null}))).is_err(), "iat required");
        assert!(at(with(json!({"sub": null}))).is_err(), "sub required");
    }

    #[test]
    fn alg_none_hs256_a_bad_signature_and_an_id_token_are_refused() {
        let k = Key::new("k1");
        let keys = set(&[&k]);
        let b = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let body = b(&claims());
        let none = format!("{}.{body}.", b(&json!({"alg": "none", "typ": "at+jwt"})));
        assert!(verify(&keys, &none, &rules()).is_err(), "alg none");
        let none_sig = format!("{}.{body}.AAAA", b(&json!({"alg": "none"})));
        assert!(
            verify(&keys, &none_sig, &rules()).is_err(),
            "alg none with a signature"
        );
        // HS256 "signed" with the public key's JSON as the secret (the confusion attack).
        use hmac::Mac as _;
        let header = b(&json!({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}));
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(k.jwk().to_string().as_bytes()).unwrap();
        mac.update(format!("{header}.{body}").as_bytes());
        let hs = format!(
            "{header}.{body}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        assert!(invalid(verify(&keys, &hs, &rules())), "HS256");
        // A signature of other claims.
        let good = k.token(&claims());
        let other = k.token(&with(json!({"sub": "mallory"})));
        let spliced = format!(
            "{}.{}",
            other.rsplit_once('.').unwrap().0,
            good.rsplit_once('.').unwrap().1
        );
        assert!(invalid(verify(&keys, &spliced, &rules())), "bad signature");
        // The right kid, another key's signature.
        let impostor = Key {
            kid: "k1".into(),
            ..Key::new("x")
        };
        assert!(invalid(verify(&keys, &impostor.token(&claims()), &rules())));
        let id_token = with(json!({"nonce": "n-0S6_WzA2Mj", "aud": AUD}));
        assert!(
            invalid(verify(&keys, &k.token(&id_token), &rules())),
            "nonce"
        );
        let header = |h: Value| k.sign(h, &claims());
        for h in [
            json!({"alg": "ES256", "typ": "dpop+jwt", "kid": "k1"}),
            json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1", "crit": ["exp"]}),
            json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1", "cty": "JWT"}),
        ] {
            assert!(invalid(verify(&keys, &header(h.clone()), &rules())), "{h}");
        }
    }

    #[test]
    fn only_jws_shaped_tokens_are_taken_for_jwts() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(
            looks_like_jwt("eyJh.eyJz."),
            "unsigned: a JWT, refused as one"
        );
        for opaque in [
            "",
            "abc",
            "a.b",
            "a..c",
            ".b.c",
            "a.b.c.d.e",
            "a.b.c=",
            "a b.c.d",
        ] {
            assert!(!looks_like_jwt(opaque), "{opaque}");
        }
    }

    fn fetcher(keys: Arc<Mutex<CoreJsonWebKeySet>>, calls: Arc<AtomicU64>) -> FetchJwks {
        Arc::new(move || {
            let (keys, calls) = (keys.clone(), calls.clone());
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                // A fetch takes time: the other caller arrives while it is in flight.
                tokio::task::yield_now().await;
                Ok(keys.lock().unwrap().clone())
            })
        })
    }

    #[tokio::test]
    async fn an_unknown_kid_fetches_the_jwks_again_at_most_once_per_interval() {
        let (old, new) = (Key::new("old"), Key::new("new"));
        let published = Arc::new(Mutex::new(set(&[&old])));
        let calls = Arc::new(AtomicU64::new(0));
        let jwks = Jwks::new(
            set(&[&old]),
            NOW_MS - 60_000,
            fetcher(published.clone(), calls.clone()),
        );
        assert!(jwks.verify(&old.token(&claims()), &rules()).await.is_ok());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "a known key needs no fetch"
        );

        // The provider rotates: the first token with the new kid fetches the keys once.
        *published.lock().unwrap() = set(&[&old, &new]);
        let token = new.token(&claims());
        let r = rules();
        let (a, b) = tokio::join!(jwks.verify(&token, &r), jwks.verify(&token, &r));
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "concurrent callers share one fetch"
        );

        // Forged kids right after: no fetch within the interval, however many.
        let forged = Key::new("forged");
        for _ in 0..5 {
            let r = jwks.verify(&forged.token(&claims()), &rules()).await;
            assert_eq!(r.unwrap_err(), JwtError::UnknownKey);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let later = Rules {
            now_ms: NOW_MS + JWKS_MIN_REFETCH_MS,
            ..rules()
        };
        let _ = jwks.verify(&forged.token(&claims()), &later).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "one more after the interval"
        );
        assert_eq!(jwks.refetches.load(Ordering::SeqCst), 2);
    }

    /// The audit's s6d: the provider rotates its keys right after discovery (or right after
    /// a fetch because the keys were old); a token with the new key was refused for up to
    /// 10 s (a sign-in failed with `invalid_id_token`), because those fetches counted toward
    /// the unknown-key limit. Now only unknown-key fetches count, and forged kids still fetch
    /// at most once per interval.
    #[tokio::test]
    async fn the_first_unknown_kid_after_discovery_or_an_age_refresh_fetches_at_once() {
        let (old, new, newer) = (Key::new("old"), Key::new("new"), Key::new("newer"));
        let published = Arc::new(Mutex::new(set(&[&old, &new])));
        let calls = Arc::new(AtomicU64::new(0));
        // Discovered just now, with the keys from before the rotation.
        let jwks = Jwks::new(
            set(&[&old]),
            NOW_MS,
            fetcher(published.clone(), calls.clone()),
        );
        let at = |ms: i64| Rules {
            now_ms: NOW_MS + ms,
            ..rules()
        };
        let claims = || with(json!({ "exp": NOW + 3600 }));
        let r = jwks.verify(&new.token(&claims()), &at(1_000)).await;
        assert!(r.is_ok(), "1 s after discovery: {r:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // The keys grow old: fetched again before a token is checked (no unknown key).
        assert!(jwks
            .verify(&old.token(&claims()), &at(JWKS_MAX_AGE_MS + 1_000))
            .await
            .is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "the age refresh");
        // The provider rotates right after it.
        *published.lock().unwrap() = set(&[&new, &newer]);
        let r = jwks
            .verify(&newer.token(&claims()), &at(JWKS_MAX_AGE_MS + 2_000))
            .await;
        assert!(r.is_ok(), "1 s after the age refresh: {r:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // Forged kids right after that unknown-key fetch: none within the interval.
        let forged = Key::new("forged");
        for ms in [3_000, 5_000, JWKS_MIN_REFETCH_MS + 1_999] {
            let r = jwks
                .verify(&forged.token(&claims()), &at(JWKS_MAX_AGE_MS + ms))
                .await;
            assert_eq!(r.unwrap_err(), JwtError::UnknownKey);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let _ = jwks
            .verify(
                &forged.token(&claims()),
                &at(JWKS_MAX_AGE_MS + 2_000 + JWKS_MIN_REFETCH_MS),
            )
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 4, "one after the interval");

        // A second rotation right after that fetch: a client's token with the newest key
        // waits for the interval, an ID token straight from the provider does not.
        let newest = Key::new("newest");
        *published.lock().unwrap() = set(&[&newer, &newest]);
        let now = at(JWKS_MAX_AGE_MS + 2_000 + JWKS_MIN_REFETCH_MS + 1_000);
        let r = jwks.verify(&newest.token(&claims()), &now).await;
        assert_eq!(r.unwrap_err(), JwtError::UnknownKey, "limited");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let seen = jwks.generation();
        assert!(jwks.refetch_for_provider_token(seen, now.now_ms).await);
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert!(jwks.verify(&newest.token(&claims()), &now).await.is_ok());
    }

    #[tokio::test]
    async fn a_withdrawn_key_stops_being_trusted_once_the_keys_are_max_age_old() {
        let (a, b) = (Key::new("a"), Key::new("b"));
        let published = Arc::new(Mutex::new(set(&[&a, &b])));
        let calls = Arc::new(AtomicU64::new(0));
        let jwks = Jwks::new(
            set(&[&a, &b]),
            NOW_MS,
            fetcher(published.clone(), calls.clone()),
        );
        let at = |ms: i64| Rules {
            now_ms: NOW_MS + ms,
            ..rules()
        };
        // The provider withdraws `a` (say it leaked); tokens signed by it still claim to be
        // valid for a while.
        *published.lock().unwrap() = set(&[&b]);
        let stolen = a.token(&with(json!({ "exp": NOW + 3600 })));
        let good = b.token(&with(json!({ "exp": NOW + 3600 })));
        assert!(jwks.verify(&stolen, &at(JWKS_MAX_AGE_MS - 1)).await.is_ok());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "young keys are not fetched"
        );
        assert_eq!(
            jwks.verify(&stolen, &at(JWKS_MAX_AGE_MS))
                .await
                .unwrap_err(),
            JwtError::UnknownKey,
            "old keys are fetched again first: the withdrawn key is gone"
        );
        assert!(jwks.verify(&good, &at(JWKS_MAX_AGE_MS + 1)).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one fetch for both");

        // What the ID-token verifier takes at sign-in (`keys()` after `refresh_if_old`): the
        // withdrawn key is gone there too once the keys are old. Before, sign-in took the
        // cached keys however old.
        let jwks = Jwks::new(
            set(&[&a, &b]),
            NOW_MS,
            fetcher(published.clone(), calls.clone()),
        );
        jwks.refresh_if_old(NOW_MS + JWKS_MAX_AGE_MS - 1).await;
        assert_eq!(jwks.keys().keys().len(), 2, "young keys are kept");
        jwks.refresh_if_old(NOW_MS + JWKS_MAX_AGE_MS).await;
        assert_eq!(jwks.keys().keys().len(), 1, "old keys are fetched again");

        // The provider is down at the next expiry: the keys we have stay in use.
        let down: FetchJwks = Arc::new(|| Box::pin(async { Err(String::from("refused")) }));
        let jwks = Jwks::new(set(&[&b]), NOW_MS, down);
        assert!(jwks.verify(&good, &at(2 * JWKS_MAX_AGE_MS)).await.is_ok());
        assert_eq!(jwks.refetches.load(Ordering::SeqCst), 1);
    }
}
