//! Signing keys and compact JWS (ES256) encoding/verification.
//!
//! All cryptography is done by the `p256` crate (ECDSA P-256 with SHA-256, RFC 6979
//! deterministic signatures). This module only does the JWS framing: base64url, JSON, and
//! choosing the key by `kid`.

use std::collections::VecDeque;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePrivateKey as _;
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// The only JWS algorithm this server signs with and accepts.
pub const ALG: &str = "ES256";

/// How many retired keys stay valid for verification after rotations.
pub const MAX_PREVIOUS_KEYS: usize = 4;

/// Why a key could not be loaded.
#[derive(Debug)]
pub struct KeyError(String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// Why a compact JWS was refused. Deliberately coarse: clients only learn `invalid_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwsError {
    /// Not three base64url parts, or the header/payload is not JSON.
    Malformed,
    /// `alg` is not ES256 (this refuses `none` and HS*), or `crit` is present.
    Algorithm,
    /// No live key has this `kid`.
    UnknownKey,
    /// The signature does not verify, or is not in low-S form.
    Signature,
}

#[derive(Clone)]
struct VerificationKey {
    kid: String,
    key: VerifyingKey,
}

/// The current signing key plus the previous keys that still verify tokens.
pub struct KeySet {
    current_kid: String,
    current: SigningKey,
    previous: VecDeque<VerificationKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("current_kid", &self.current_kid)
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    /// Whether the header has a `crit` member at all, whatever its value (`null` included).
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

/// `true` for any JSON value: used with `#[serde(default)]` to record that a member exists.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(deserializer).map(|_| true)
}

impl KeySet {
    /// A key set with one fresh key from the OS CSPRNG.
    pub fn generate() -> Self {
        Self::from_signing_key(SigningKey::random(&mut OsRng))
    }

    /// A key set whose current key is `key`.
    pub fn from_signing_key(key: SigningKey) -> Self {
        Self {
            current_kid: kid_of(key.verifying_key()),
            current: key,
            previous: VecDeque::new(),
        }
    }

    /// Load a P-256 private key from PEM (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = SigningKey::from_pkcs8_pem(pem)
            .or_else(|_| p256::SecretKey::from_sec1_pem(pem).map(SigningKey::from))
            .map_err(|_| KeyError("not a P-256 private key in PKCS#8 or SEC1 PEM".into()))?;
        Ok(Self::from_signing_key(key))
    }

    /// A key set that signs with `current` and also verifies (and publishes) `others`, in
    /// their order (keys shared by several instances, see [`crate::shared`]).
    pub fn from_parts(current: SigningKey, others: impl IntoIterator<Item = SigningKey>) -> Self {
        let mut set = Self::from_signing_key(current);
        set.previous = others
            .into_iter()
            .map(|k| VerificationKey {
                kid: kid_of(k.verifying_key()),
                key: *k.verifying_key(),
            })
            .collect();
        set
    }

    /// The signing key as PKCS#8 PEM (to share it through the store).
    pub fn current_pem(&self) -> Result<String, KeyError> {
        use p256::pkcs8::EncodePrivateKey as _;
        self.current
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| KeyError(format!("cannot encode the signing key: {e}")))
    }

    /// The `kid` (RFC 7638 thumbprint) `key` signs with.
    pub fn kid_of_key(key: &SigningKey) -> String {
        kid_of(key.verifying_key())
    }

    /// Make `key` the signing key; the old one keeps verifying (up to
    /// [`MAX_PREVIOUS_KEYS`] old keys are kept).
    pub fn rotate_to(&mut self, key: SigningKey) {
        let old = VerificationKey {
            kid: std::mem::take(&mut self.current_kid),
            key: *self.current.verifying_key(),
        };
        self.previous.push_front(old);
        self.previous.truncate(MAX_PREVIOUS_KEYS);
        self.current_kid = kid_of(key.verifying_key());
        self.current = key;
    }

    /// Rotate to a freshly generated key.
    pub fn rotate(&mut self) {
        self.rotate_to(SigningKey::random(&mut OsRng));
    }

    /// The `kid` of the signing key.
    pub fn current_kid(&self) -> &str {
        &self.current_kid
    }

    /// Every key that verifies tokens, current first, as `(kid, key)`.
    pub fn verification_keys(&self) -> impl Iterator<Item = (&str, &VerifyingKey)> {
        std::iter::once((self.current_kid.as_str(), self.current.verifying_key()))
            .chain(self.previous.iter().map(|k| (k.kid.as_str(), &k.key)))
    }

    /// Sign `claims` as a compact JWS with header `{"alg":"ES256","typ":"JWT","kid":…}`.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, serde_json::Error> {
        let header = json!({ "alg": ALG, "typ": "JWT", "kid": self.current_kid });
        let mut input = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);
        input.push('.');
        input.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?));
        let signature: Signature = self.current.sign(input.as_bytes());
        // Low-S form: the only spelling `verify` accepts.
        let signature = signature.normalize_s().unwrap_or(signature);
        input.push('.');
        input.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        Ok(input)
    }

    /// Check framing, `alg`, `kid` and signature; return the payload as a JSON object.
    /// Claims (`iss`, `aud`, `exp`, …) are checked by [`crate::tokens`].
    pub fn verify(&self, token: &str) -> Result<serde_json::Map<String, Value>, JwsError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed);
        };
        let header_bytes = URL_SAFE_NO_PAD.decode(h).map_err(|_| JwsError::Malformed)?;
        let header: Header =
            serde_json::from_slice(&header_bytes).map_err(|_| JwsError::Malformed)?;
        if header.alg != ALG || header.crit {
            return Err(JwsError::Algorithm);
        }
        let kid = header.kid.ok_or(JwsError::UnknownKey)?;
        let (_, key) = self
            .verification_keys()
            .find(|(k, _)| *k == kid)
            .ok_or(JwsError::UnknownKey)?;
        let sig_bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwsError::Signature)?;
        let signature = Signature::from_slice(&sig_bytes).map_err(|_| JwsError::Signature)?;
        // (r, n - s) verifies as well as (r, s); accept only the low-S one, so one token has
        // exactly one spelling.
        if signature.normalize_s().is_some() {
            return Err(JwsError::Signature);
        }
        let signing_input_len = h.len() + 1 + p.len();
        key.verify(&token.as_bytes()[..signing_input_len], &signature)
            .map_err(|_| JwsError::Signature)?;
        let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| JwsError::Malformed)?;
        serde_json::from_slice(&payload).map_err(|_| JwsError::Malformed)
    }

    /// The public keys as a JWK Set (RFC 7517), current first.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .verification_keys()
            .map(|(kid, key)| {
                let (x, y) = coordinates(key);
                json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": ALG })
            })
            .collect();
        json!({ "keys": keys })
    }
}

fn coordinates(key: &VerifyingKey) -> (String, String) {
    let point = key.to_encoded_point(false);
    let x = point
        .x()
        .map(|x| URL_SAFE_NO_PAD.encode(x))
        .unwrap_or_default();
    let y = point
        .y()
        .map(|y| URL_SAFE_NO_PAD.encode(y))
        .unwrap_or_default();
    (x, y)
}

/// RFC 7638 JWK thumbprint, used as `kid`.
fn kid_of(key: &VerifyingKey) -> String {
    let (x, y) = coordinates(key);
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_verifies_and_carries_the_kid() {
        let keys = KeySet::generate();
        let token = keys.sign(&json!({ "sub": "demo" })).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!(claims["sub"], "demo");
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["kid"], keys.current_kid());
        assert_eq!(header["alg"], "ES256");
    }

    #[test]
    fn a_pkcs8_pem_key_loads_with_the_same_kid() {
        use p256::pkcs8::EncodePrivateKey as _;
        let key = SigningKey::random(&mut OsRng);
        let pem = key.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).unwrap();
        let loaded = KeySet::from_pem(&pem).unwrap();
        assert_eq!(
            loaded.current_kid(),
            KeySet::from_signing_key(key).current_kid()
        );
        assert!(
            KeySet::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
    }

    #[test]
    fn rotation_keeps_a_bounded_number_of_old_keys() {
        let mut keys = KeySet::generate();
        for _ in 0..10 {
            keys.rotate();
        }
        assert_eq!(keys.verification_keys().count(), MAX_PREVIOUS_KEYS + 1);
        assert_eq!(
            keys.jwks()["keys"].as_array().unwrap().len(),
            MAX_PREVIOUS_KEYS + 1
        );
    }
}
