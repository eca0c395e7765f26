//! Globals, bound through `extern "C"` so they work in windows and
//! workers alike: clocks and randomness; the page's location, URL parsing
//! and `new Request` through js/shell.js.

#[allow(unused_imports)]
use crate::prelude::*;
use js_sys::Reflect;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::policy::clock::Stamp;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = Date, js_name = now)]
    fn date_now() -> f64;
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn perf_now() -> f64;
    #[wasm_bindgen(js_namespace = Math, js_name = random)]
    fn math_random() -> f64;
}

#[wasm_bindgen(module = "/js/shell.js")]
extern "C" {
    #[wasm_bindgen(catch, js_name = request)]
    fn js_request(input: &JsValue, init: &JsValue) -> Result<web_sys::Request, JsValue>;
    #[wasm_bindgen(js_name = page)]
    fn js_page() -> JsValue;
    #[wasm_bindgen(js_name = resolve)]
    fn js_resolve(input: &str, base: &str) -> Option<String>;
    #[wasm_bindgen(js_name = canon)]
    fn js_canon(input: &str) -> Option<String>;
    // A JsValue, not a bool: wasm-bindgen imports a `() -> bool` function
    // directly from the snippet, past the glue, and scripts/short-names.mjs
    // renames what goes through the glue.
    #[wasm_bindgen(js_name = online)]
    fn js_online() -> JsValue;
}

/// `new Request(input, init)` with the global constructor, exactly as
/// `fetch(input, init)` would build it (string, URL or Request input).
pub fn new_request(input: &JsValue, init: &JsValue) -> Result<web_sys::Request, JsValue> {
    js_request(input, init)
}

#[wasm_bindgen]
extern "C" {
    /// `Headers`, bound again for a `set` that takes a JS string value.
    #[wasm_bindgen(js_name = Headers)]
    type JsHeaders;
    #[wasm_bindgen(method, js_name = set)]
    fn set(this: &JsHeaders, name: &str, value: &JsValue);
}

/// Sets a header to an already-JS string value (no re-encoding).
pub fn set_header(headers: &web_sys::Headers, name: &str, value: &JsValue) {
    headers.unchecked_ref::<JsHeaders>().set(name, value);
}

/// Whether a request may carry a body: `Request.body` is not null. Firefox has no
/// `Request.body` (it reads `undefined`): there any method but GET and HEAD may carry one.
pub fn has_body(request: &web_sys::Request) -> bool {
    match Reflect::get(request, &JsValue::from_str("body")) {
        Ok(b) if b.is_null() => false,
        Ok(b) if b.is_undefined() => !matches!(request.method().as_str(), "GET" | "HEAD"),
        _ => true,
    }
}

/// Reads both clocks. `mono` is `performance.now()` shifted by `base`
/// (taken once per client) so that both read near epoch milliseconds.
pub fn now(base: f64) -> Stamp {
    Stamp {
        wall: date_now() as i64,
        mono: (base + perf_now()) as i64,
    }
}

/// The shift that makes `performance.now()` read like `Date.now()`.
pub fn mono_base() -> f64 {
    date_now() - perf_now()
}

/// Uniform in [0, 1), for backoff jitter.
pub fn random() -> f64 {
    math_random()
}

/// `navigator.onLine` (true where there is no navigator).
pub fn online() -> bool {
    js_online().as_bool().unwrap_or(true)
}

/// The page's `location.href` and `location.origin`, in a window with
/// `fetch` only.
pub fn page_location() -> Option<(String, String)> {
    let pair = js_page();
    let pair: &js_sys::Array = pair.dyn_ref()?;
    Some((pair.get(0).as_string()?, pair.get(1).as_string()?))
}

/// The document's base URL (`document.baseURI`: a `<base>` element moves it
/// off the page's address), which `fetch` resolves a relative URL against.
pub fn base_url() -> Option<String> {
    js_page().dyn_ref::<js_sys::Array>()?.get(2).as_string()
}

/// Whether the page has WebCrypto (`crypto.subtle`: a secure context), which DPoP needs.
pub fn webcrypto() -> bool {
    js_page()
        .dyn_ref::<js_sys::Array>()
        .is_some_and(|p| p.get(3).is_truthy())
}

/// `new URL(input, base).href`, or `None` if it does not parse.
pub fn resolve_url(input: &str, base: &str) -> Option<String> {
    js_resolve(input, base)
}

/// The origin the browser's `URL` makes of `input` when `input` is an
/// origin (`scheme://host[:port]`, one trailing `/` allowed): `https://127.1`
/// → `https://127.0.0.1`, a default port dropped, an IDN host in punycode.
/// `None` when it is not one (the policy then says what is wrong).
pub fn canonical_origin(input: &str) -> Option<String> {
    js_canon(input)
}
