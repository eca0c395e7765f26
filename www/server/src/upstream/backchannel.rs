//! OpenID Connect Back-Channel Logout 1.0: when a user's session ends at the provider (the
//! user signs out there, in this app or another, or an administrator ends the session), the
//! provider POSTs a Logout Token to the `backchannel_logout_uri` registered for this client,
//! `/auth/backchannel-logout` ([`crate::routes::upstream::backchannel_logout`]), which ends
//! every family signed in through that provider session.
//!
//! [`verify_logout_token`] is the validation of §2.6:
//! - a JWS signed with a key of the provider's JWKS ([`super::access::Jwks`], fetched again
//!   for an unknown `kid` under the same once-per-interval limit as access tokens: anyone can
//!   POST here), with an `alg` the provider signs ID tokens with (asymmetric only);
//! - `typ` absent, `JWT` or `logout+jwt` (the explicit type of §2.4; `application/…` forms
//!   too): any other type is another kind of JWT (an `at+jwt` access token, a `dpop+jwt`
//!   proof) and is refused; `crit` is refused;
//! - `iss` = the provider's issuer exactly, `aud` (string or array) holds our client id;
//! - `iat` present and not in the future, `exp` present and not past (both with the leeway);
//! - `jti` present (the caller refuses a second token with the same one: a replay);
//! - `events` an object holding the member `http://schemas.openid.net/event/backchannel-logout`
//!   whose value is an object;
//! - `sub` or `sid` (or both) present, as strings;
//! - no `nonce`: an ID token is not a Logout Token (§2.6 step 5).
//!
//! Hand-written claim checks: `openidconnect` has no Logout Token type, and its ID-token
//! verifier cannot read a token without `sub`, which a Logout Token may lack (`sid` alone).
//! The signature check is `openidconnect`'s, the same JWK code as ID and access tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use openidconnect::core::{CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{JsonWebKey as _, JsonWebKeyId, SignatureVerificationError};
use serde_json::{Map, Value};

use super::access::{JwtError, MAX_TOKEN_LEN};

/// The member of `events` that makes a JWT a Logout Token.
pub const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// What a valid Logout Token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutClaims {
    /// The subject whose sessions end (all of them when `sid` is absent).
    pub sub: Option<String>,
    /// The provider session that ended.
    pub sid: Option<String>,
    /// The token's id (for the replay check).
    pub jti: String,
    /// Its expiry, epoch ms.
    pub exp_ms: i64,
}

/// What a Logout Token is checked against.
#[derive(Debug, Clone)]
pub struct LogoutRules<'a> {
    /// The provider's issuer (`iss`, exactly).
    pub issuer: &'a str,
    /// Our client id (in `aud`).
    pub client_id: &'a str,
    /// Now, epoch ms.
    pub now_ms: i64,
    /// Clock-skew allowance for `iat` and `exp`, seconds.
    pub leeway_s: i64,
    /// The signature algorithms accepted (the provider's ID-token algorithms).
    pub algs: &'a [CoreJwsSigningAlgorithm],
}

fn invalid(why: &str) -> JwtError {
    JwtError::Invalid(why.into())
}

fn b64_json(part: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| invalid("not base64url"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(invalid("not a JSON object")),
    }
}

/// A JSON number as epoch seconds (an integer or a finite float).
fn seconds(v: Option<&Value>, name: &str) -> Result<f64, JwtError> {
    v.and_then(Value::as_f64)
        .filter(|s| s.is_finite())
        .ok_or_else(|| JwtError::Invalid(format!("no {name}")))
}

fn optional_string(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(JwtError::Invalid(format!("{name} not a string"))),
    }
}

/// Check a Logout Token against `keys` and `rules` (the module's list).
pub fn verify_logout_token(
    keys: &CoreJsonWebKeySet,
    token: &str,
    rules: &LogoutRules<'_>,
) -> Result<LogoutClaims, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not a JWS"));
    };
    let header = b64_json(h)?;
    let alg: CoreJwsSigningAlgorithm = header
        .get("alg")
        .cloned()
        .and_then(|a| serde_json::from_value(a).ok())
        .ok_or_else(|| invalid("no alg"))?;
    if !rules.algs.contains(&alg) {
        return Err(invalid("alg not allowed"));
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) => {
            let t = t.to_ascii_lowercase();
            let t = t.strip_prefix("application/").unwrap_or(&t);
            if t != "jwt" && t != "logout+jwt" {
                return Err(invalid("typ is not logout+jwt"));
            }
        }
        Some(_) => return Err(invalid("typ not a string")),
    }
    if header.contains_key("crit") {
        return Err(invalid("crit"));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(JsonWebKeyId::new(k.clone())),
        Some(_) => return Err(invalid("kid not a string")),
    };
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| invalid("signature not base64url"))?;
    let message = &token.as_bytes()[..h.len() + 1 + p.len()];
    // Every key the `kid` names (any key without one): openidconnect's `verify_signature`
    // refuses a key whose type, use or `alg` does not fit (`InvalidKey`) before checking.
    let mut fitting_key = false;
    let mut verified = false;
    for key in keys.keys() {
        if kid.is_some() && key.key_id() != kid.as_ref() {
            continue;
        }
        match key.verify_signature(&alg, message, &signature) {
            Ok(()) => {
                verified = true;
                break;
            }
            Err(SignatureVerificationError::InvalidKey(_)) => {}
            Err(_) => fitting_key = true,
        }
    }
    if !verified {
        return Err(if fitting_key {
            invalid("bad signature")
        } else {
            JwtError::UnknownKey
        });
    }
    let claims = b64_json(p)?;
    if claims.get("iss").and_then(Value::as_str) != Some(rules.issuer) {
        return Err(invalid("iss"));
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == rules.client_id,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(rules.client_id)),
        _ => false,
    };
    if !audience_ok {
        return Err(invalid("aud"));
    }
    let now_s = rules.now_ms as f64 / 1000.0;
    let leeway = rules.leeway_s as f64;
    if seconds(claims.get("iat"), "iat")? > now_s + leeway {
        return Err(invalid("issued in the future (iat)"));
    }
    let exp = seconds(claims.get("exp"), "exp")?;
    if exp <= now_s - leeway {
        return Err(JwtError::Expired);
    }
    let jti = match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() && j.len() <= 256 => j.clone(),
        _ => return Err(invalid("no jti")),
    };
    let is_logout = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|events| events.get(EVENT))
        .is_some_and(Value::is_object);
    if !is_logout {
        return Err(invalid("no back-channel logout event"));
    }
    if claims.contains_key("nonce") {
        return Err(invalid("a nonce: an ID token"));
    }
    let sub = optional_string(&claims, "sub")?;
    let sid = optional_string(&claims, "sid")?;
    if sub.is_none() && sid.is_none() {
        return Err(invalid("neither sub nor sid"));
    }
    Ok(LogoutClaims {
        sub,
        sid,
        jti,
        exp_ms: (exp * 1000.0).min(i64::MAX as f64) as i64,
    })
}

/// The `sid` of an ID token we validated at sign-in (read without checking again).
pub fn id_token_sid(id_token: &str) -> Option<String> {
    let payload = id_token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims
        .get("sid")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};
    use serde_json::json;

    const ISS: &str = "https://id.example.com";
    const CLIENT: &str = "app";
    const NOW_MS: i64 = 1_800_000_000_000;
    const NOW: i64 = NOW_MS / 1000;
    const ALGS: [CoreJwsSigningAlgorithm; 1] = [CoreJwsSigningAlgorithm::EcdsaP256Sha256];

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn jwks(keys: &[(&str, &SigningKey)]) -> CoreJsonWebKeySet {
        let jwk = |(kid, k): &(&str, &SigningKey)| {
            let point = k.verifying_key().to_encoded_point(false);
            let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
            json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                   "x": b(point.x().unwrap()), "y": b(point.y().unwrap())})
        };
        serde_json::from_value(json!({ "keys": keys.iter().map(jwk).collect::<Vec<_>>() })).unwrap()
    }

    fn sign(k: &SigningKey, header: &Value, claims: &Value) -> String {
        let b = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let input = format!("{}.{}", b(header), b(claims));
        let sig: Signature = k.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    fn header() -> Value {
        json!({"alg": "ES256", "typ": "logout+jwt", "kid": "k1"})
    }

    fn claims() -> Value {
        json!({"iss": ISS, "aud": CLIENT, "iat": NOW - 2, "exp": NOW + 118, "jti": "j-1",
               "sub": "kim", "sid": "s-1", "events": { EVENT: {} }})
    }

    fn with(base: Value, changes: Value) -> Value {
        let mut c = base;
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn rules() -> LogoutRules<'static> {
        LogoutRules {
            issuer: ISS,
            client_id: CLIENT,
            now_ms: NOW_MS,
            leeway_s: 5,
            algs: &ALGS,
        }
    }

    fn check(header: &Value, claims: &Value) -> Result<LogoutClaims, JwtError> {
        let k = key(1);
        verify_logout_token(&jwks(&[("k1", &k)]), &sign(&k, header, claims), &rules())
    }

    #[test]
    fn a_logout_token_of_the_provider_is_read() {
        assert_eq!(
            check(&header(), &claims()),
            Ok(LogoutClaims {
                sub: Some("kim".into()),
                sid: Some("s-1".into()),
                jti: "j-1".into(),
                exp_ms: (NOW + 118) * 1000,
            })
        );
        // sid alone, sub alone, aud as an array, typ absent / JWT / application/logout+jwt,
        // no kid.
        let sid_only = check(&header(), &with(claims(), json!({"sub": null}))).unwrap();
        assert_eq!((sid_only.sub, sid_only.sid.as_deref()), (None, Some("s-1")));
        let sub_only = check(&header(), &with(claims(), json!({"sid": null}))).unwrap();
        assert_eq!((sub_only.sub.as_deref(), sub_only.sid), (Some("kim"), None));
        let aud = json!({"aud": ["other", CLIENT]});
        assert!(check(&header(), &with(claims(), aud)).is_ok());
        for typ in [
            Value::Null,
            json!("JWT"),
            json!("application/logout+jwt"),
            json!("Logout+JWT"),
        ] {
            assert!(
                check(&with(header(), json!({ "typ": typ })), &claims()).is_ok(),
                "{typ}"
            );
        }
        assert!(check(&with(header(), json!({"kid": null})), &claims()).is_ok());
    }

    #[test]
    fn a_token_that_breaks_a_rule_of_section_2_6_is_refused() {
        let bad_claims = [
            json!({"iss": "https://evil.example.com"}),
            json!({"iss": null}),
            json!({"aud": "other"}),
            json!({"aud": ["other"]}),
            json!({"aud": null}),
            json!({"iat": null}),
            json!({"iat": NOW + 60}),
            json!({"iat": "now"}),
            json!({"exp": null}),
            json!({"jti": null}),
            json!({"jti": ""}),
            json!({"jti": 7}),
            json!({"events": null}),
            json!({"events": {}}),
            json!({"events": { EVENT: "yes" }}),
            json!({"events": [EVENT]}),
            json!({"nonce": "n-1"}),
            json!({"sub": null, "sid": null}),
            json!({"sub": 12}),
            json!({"sid": ""}),
        ];
        for change in bad_claims {
            let got = check(&header(), &with(claims(), change.clone()));
            assert!(
                matches!(got, Err(JwtError::Invalid(_))),
                "{change}: {got:?}"
            );
        }
        assert_eq!(
            check(&header(), &with(claims(), json!({"exp": NOW - 6}))),
            Err(JwtError::Expired)
        );
        assert!(
            check(&header(), &with(claims(), json!({"exp": NOW - 4}))).is_ok(),
            "within the leeway"
        );
        for change in [
            json!({"typ": "at+jwt"}),
            json!({"typ": "dpop+jwt"}),
            json!({"typ": 1}),
            json!({"crit": ["exp"]}),
            json!({"kid": 3}),
        ] {
            let got = check(&with(header(), change.clone()), &claims());
            assert!(
                matches!(got, Err(JwtError::Invalid(_))),
                "{change}: {got:?}"
            );
        }
    }

    #[test]
    fn the_signature_alg_and_key_are_checked() {
        let k = key(1);
        let set = jwks(&[("k1", &k)]);
        let token = sign(&k, &header(), &claims());
        // Another key, under our kid: a bad signature. Under an unknown kid: fetch the keys.
        let other = key(2);
        assert!(matches!(
            verify_logout_token(&set, &sign(&other, &header(), &claims()), &rules()),
            Err(JwtError::Invalid(_))
        ));
        assert_eq!(
            verify_logout_token(
                &set,
                &sign(&other, &with(header(), json!({"kid": "k9"})), &claims()),
                &rules()
            ),
            Err(JwtError::UnknownKey)
        );
        // A claim changed under the signature.
        let (input, sig) = token.rsplit_once('.').unwrap();
        let (h, _) = input.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&with(claims(), json!({"sub": "lee"}))).unwrap());
        assert!(matches!(
            verify_logout_token(&set, &format!("{h}.{forged}.{sig}"), &rules()),
            Err(JwtError::Invalid(_))
        ));
        // alg none, HS256 and an alg the provider does not use: refused before any key.
        for alg in ["none", "HS256", "ES384", "RS256"] {
            let t = sign(&k, &with(header(), json!({ "alg": alg })), &claims());
            assert!(
                matches!(
                    verify_logout_token(&set, &t, &rules()),
                    Err(JwtError::Invalid(_))
                ),
                "{alg}"
            );
        }
        // Not a JWS at all.
        for t in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.??.**",
            &"x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(
                matches!(
                    verify_logout_token(&set, t, &rules()),
                    Err(JwtError::Invalid(_))
                ),
                "{t:.20}"
            );
        }
    }

    #[test]
    fn the_sid_of_an_id_token_is_read_when_it_has_one() {
        let k = key(1);
        let with_sid = sign(&k, &header(), &json!({"sub": "kim", "sid": "s-9"}));
        assert_eq!(id_token_sid(&with_sid).as_deref(), Some("s-9"));
        assert_eq!(
            id_token_sid(&sign(&k, &header(), &json!({"sub": "kim"}))),
            None
        );
        assert_eq!(id_token_sid("garbage"), None);
    }
}
