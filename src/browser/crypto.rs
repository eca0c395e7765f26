//! WebCrypto for DPoP: a non-extractable ECDSA P-256 key pair, ES256
//! signatures and SHA-256, through `crypto.subtle` (called by js/shell.js).
//! The private key never leaves the `CryptoKey`: it is made with
//! `extractable: false` and only ever structured-cloned to the origin's
//! other tabs.

use core::future::Future;

use super::task::JsPromise;
#[allow(unused_imports)]
use crate::prelude::*;
use js_sys::{Array, Promise, Uint8Array};
use wasm_bindgen::prelude::*;

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

#[wasm_bindgen(module = "/js/shell.js")]
extern "C" {
    #[wasm_bindgen(js_name = makeKey)]
    fn js_make_key() -> Promise;
    #[wasm_bindgen(js_name = sign)]
    fn js_sign(key: &JsValue, input: &str) -> Promise;
    #[wasm_bindgen(js_name = sha256)]
    fn js_sha256(input: &str) -> Promise;
    #[wasm_bindgen(js_name = random128)]
    fn js_random128() -> Uint8Array;
}

/// What js/shell.js resolved with; any rejection (no WebCrypto: not a
/// secure context) is `unsupported_environment`.
async fn wait(p: Promise) -> Result<JsValue, Error> {
    JsPromise::from(p)
        .await
        .map_err(|_| Error::UnsupportedEnvironment)
}

async fn bytes(p: Promise) -> Result<Vec<u8>, Error> {
    Ok(Uint8Array::new(&wait(p).await?).to_vec())
}

/// A new non-extractable key pair.
pub async fn make_key() -> Result<Key, Error> {
    let pair: Array = wait(js_make_key()).await?.unchecked_into();
    let (Some(x), Some(y)) = (pair.get(1).as_string(), pair.get(2).as_string()) else {
        return Err(Error::UnsupportedEnvironment);
    };
    Ok(Key {
        private: pair.get(0),
        jwk: PublicJwk { x, y },
    })
}

/// ES256 signature (raw r || s) of `input` (started now).
pub fn sign(key: &Key, input: &str) -> impl Future<Output = Result<Vec<u8>, Error>> {
    bytes(js_sign(&key.private, input))
}

/// SHA-256 of `input` (started now).
pub fn sha256(input: &str) -> impl Future<Output = Result<Vec<u8>, Error>> {
    bytes(js_sha256(input))
}

/// 128 random bits from `crypto.getRandomValues`, base64url.
pub fn unique_id() -> String {
    crate::policy::dpop::b64url(&js_random128().to_vec())
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
