//! WebCrypto for DPoP: a non-extractable ECDSA P-256 key pair, ES256
//! signatures and SHA-256, through `crypto.subtle` (bound with `extern "C"`
//! like the other globals). The private key never leaves the `CryptoKey`: it
//! is made with `extractable: false` and only ever structured-cloned to the
//! origin's other tabs.

use super::task::JsPromise;
#[allow(unused_imports)]
use crate::prelude::*;
use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

use super::env::global;
use crate::error::Error;
use crate::policy::dpop::PublicJwk;

/// A DPoP key: the private `CryptoKey` and the public JWK coordinates.
#[derive(Clone)]
pub struct Key {
    /// The private `CryptoKey` (non-extractable).
    pub private: JsValue,
    /// Public `x`, `y`.
    pub jwk: PublicJwk,
}

#[wasm_bindgen]
extern "C" {
    type Subtle;
    #[wasm_bindgen(method, js_name = generateKey)]
    fn generate_key(
        this: &Subtle,
        algorithm: &Object,
        extractable: bool,
        usages: &Array,
    ) -> Promise;
    #[wasm_bindgen(method, js_name = exportKey)]
    fn export_key(this: &Subtle, format: &str, key: &JsValue) -> Promise;
    #[wasm_bindgen(method)]
    fn sign(this: &Subtle, algorithm: &Object, key: &JsValue, data: &Uint8Array) -> Promise;
    #[wasm_bindgen(method)]
    fn digest(this: &Subtle, algorithm: &str, data: &Uint8Array) -> Promise;
}

fn get(o: &JsValue, k: &str) -> JsValue {
    Reflect::get(o, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED)
}

fn object(pairs: &[(&str, &str)]) -> Object {
    let o = Object::new();
    for (k, v) in pairs {
        let _ = Reflect::set(&o, &JsValue::from_str(k), &JsValue::from_str(v));
    }
    o
}

fn subtle() -> Result<Subtle, Error> {
    let s = get(
        &global("crypto").ok_or(Error::UnsupportedEnvironment)?,
        "subtle",
    );
    if s.is_undefined() || s.is_null() {
        // No WebCrypto: not a secure context.
        return Err(Error::UnsupportedEnvironment);
    }
    Ok(s.unchecked_into())
}

async fn wait(p: Promise) -> Result<JsValue, Error> {
    JsPromise::from(p)
        .await
        .map_err(|_| Error::UnsupportedEnvironment)
}

/// A new non-extractable key pair.
pub async fn make_key() -> Result<Key, Error> {
    let s = subtle()?;
    let alg = object(&[("name", "ECDSA"), ("namedCurve", "P-256")]);
    let usages = Array::of1(&JsValue::from_str("sign"));
    let pair = wait(s.generate_key(&alg, false, &usages)).await?;
    // The public half is always extractable, whatever `extractable` says.
    let jwk = wait(s.export_key("jwk", &get(&pair, "publicKey"))).await?;
    let (x, y) = (get(&jwk, "x").as_string(), get(&jwk, "y").as_string());
    let (Some(x), Some(y)) = (x, y) else {
        return Err(Error::UnsupportedEnvironment);
    };
    Ok(Key {
        private: get(&pair, "privateKey"),
        jwk: PublicJwk { x, y },
    })
}

/// ES256 signature (raw r || s) of `input`.
pub async fn sign(key: Key, input: String) -> Result<Vec<u8>, Error> {
    let s = subtle()?;
    let alg = object(&[("name", "ECDSA"), ("hash", "SHA-256")]);
    let data = Uint8Array::from(input.as_bytes());
    let sig = wait(s.sign(&alg, &key.private, &data)).await?;
    Ok(Uint8Array::new(&sig).to_vec())
}

/// SHA-256 of `input`.
pub async fn sha256(input: String) -> Result<Vec<u8>, Error> {
    let data = Uint8Array::from(input.as_bytes());
    let digest = wait(subtle()?.digest("SHA-256", &data)).await?;
    Ok(Uint8Array::new(&digest).to_vec())
}

/// 128 random bits from `crypto.getRandomValues`, base64url.
pub fn unique_id() -> String {
    let bytes = Uint8Array::new_with_length(16);
    if let Some(c) = global("crypto") {
        let f = get(&c, "getRandomValues");
        if let Some(f) = f.dyn_ref::<js_sys::Function>() {
            let _ = f.call1(&c, &bytes);
        }
    }
    crate::policy::dpop::b64url(&bytes.to_vec())
}

/// The channel message that carries a key along with `text`:
/// `[text, privateKey, x, y]` (structured-cloned; the key stays non-extractable).
pub fn message_with_key(text: &str, key: &Key) -> JsValue {
    let a = Array::of4(
        &JsValue::from_str(text),
        &key.private,
        &JsValue::from_str(&key.jwk.x),
        &JsValue::from_str(&key.jwk.y),
    );
    a.into()
}

/// Reads a channel message: its text, and the key it carries if any.
pub fn read_message(data: &JsValue) -> Option<(String, Option<Key>)> {
    if let Some(text) = data.as_string() {
        return Some((text, None));
    }
    if !Array::is_array(data) {
        return None;
    }
    let a: &Array = data.unchecked_ref();
    let text = a.get(0).as_string()?;
    let key = match (a.get(2).as_string(), a.get(3).as_string()) {
        (Some(x), Some(y)) if a.get(1).is_object() => Some(Key {
            private: a.get(1),
            jwk: PublicJwk { x, y },
        }),
        _ => None,
    };
    Some((text, key))
}
