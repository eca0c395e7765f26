//! Globals, bound through `extern "C"` so they work in windows and
//! workers alike: clocks, randomness, `fetch`, and feature detection.

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

/// `new Request(input, init)` with the global constructor, exactly as
/// `fetch(input, init)` would build it (string, URL or Request input).
pub fn new_request(input: &JsValue, init: &JsValue) -> Result<web_sys::Request, JsValue> {
    let ctor: js_sys::Function = global("Request")
        .ok_or(JsValue::UNDEFINED)?
        .unchecked_into();
    let args = if init.is_undefined() {
        js_sys::Array::of1(input)
    } else {
        js_sys::Array::of2(input, init)
    };
    Ok(Reflect::construct(&ctor, &args)?.unchecked_into())
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

/// `globalThis[name]`, if defined.
pub fn global(name: &str) -> Option<JsValue> {
    Reflect::get(&js_sys::global(), &JsValue::from_str(name))
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

/// The page's `location.href` and `location.origin`, in a window only.
pub fn page_location() -> Option<(String, String)> {
    let location = global("location")?;
    let get = |k: &str| {
        Reflect::get(&location, &JsValue::from_str(k))
            .ok()?
            .as_string()
    };
    Some((get("href")?, get("origin")?))
}

/// `new URL(input, base).href`, or `None` if it does not parse.
pub fn resolve_url(input: &str, base: &str) -> Option<String> {
    web_sys::Url::new_with_base(input, base)
        .ok()
        .map(|u| u.href())
}

/// The origin the browser's `URL` makes of `input` when `input` is an
/// origin (`scheme://host[:port]`, one trailing `/` allowed): `https://127.1`
/// → `https://127.0.0.1`, a default port dropped, an IDN host in punycode.
/// `None` when it is not one (the policy then says what is wrong).
pub fn canonical_origin(input: &str) -> Option<String> {
    let u = web_sys::Url::new(input).ok()?;
    let bare = u.pathname() == "/"
        && u.search().is_empty()
        && u.hash().is_empty()
        && u.username().is_empty()
        && u.password().is_empty()
        && !input.contains(['?', '#', '@'])
        && crate::policy::split_str(input, "://")?
            .1
            .trim_end_matches('/')
            .find('/')
            .is_none();
    let origin = u.origin();
    (bare && origin != "null").then_some(origin)
}
