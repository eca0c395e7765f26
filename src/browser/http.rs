//! The network. [`fetch`] is `send` of js/shell.js, the one function that
//! calls the browser's `fetch`. [`post`] makes the refresh and logout
//! calls through js/shell.js's `post`: plain data in, plain data out, a
//! timeout that aborts the request.

#[allow(unused_imports)]
use crate::prelude::*;

use core::future::Future;

use super::task::JsPromise;
use js_sys::{Array, Promise};
use wasm_bindgen::prelude::*;

use crate::error::Error;
use crate::policy::response::Reply;
use crate::policy::schedule::timer_delay;

#[wasm_bindgen(module = "/js/shell.js")]
extern "C" {
    #[wasm_bindgen(js_name = send)]
    fn js_send(input: &JsValue, init: &JsValue) -> Promise;
    #[wasm_bindgen(js_name = post)]
    fn js_post(url: &str, headers: &str, ms: u32) -> Promise;
}

/// POSTs an empty body to `url` with the cookie (`credentials: include`)
/// and `headers`; the whole exchange, body included, is bounded by
/// `timeout_ms`. The request starts now; the future only awaits it.
pub fn post(
    url: &str,
    headers: &[(String, String)],
    timeout_ms: i64,
) -> impl Future<Output = Result<Reply, Error>> {
    // Header names and values never hold a line feed (`policy::options`
    // refuses them; proofs are base64url), so one string carries them all.
    let mut flat = String::new();
    for (name, value) in headers {
        if !flat.is_empty() {
            flat.push('\n');
        }
        flat.push_str(name);
        flat.push('\n');
        flat.push_str(value);
    }
    let pending = JsPromise::from(js_post(url, &flat, timer_delay(timeout_ms)));
    async move {
        let reply: Array = match pending.await {
            Ok(v) => v.unchecked_into(),
            Err(late) if late.is_truthy() => return Err(Error::Timeout),
            Err(_) => return Err(Error::Network),
        };
        Ok(Reply {
            status: reply.get(0).as_f64().map_or(0, |s| s as u16),
            body: reply.get(1).as_string().unwrap_or_default(),
            retry_after: reply.get(2).as_string(),
            dpop_nonce: reply.get(3).as_string(),
            date: reply.get(4).as_string(),
        })
    }
}

/// The one function that calls `fetch`: refresh and logout calls and the
/// app's own requests all go through here, those of the JS entry's fast
/// path too (`TokenClient.send`).
pub fn fetch(input: &JsValue, init: &JsValue) -> Promise {
    js_send(input, init)
}
