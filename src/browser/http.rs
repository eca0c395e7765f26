//! The network: [`fetch`] is the one function that calls the browser's
//! `fetch`. [`post`] makes the refresh and logout calls: plain data in,
//! plain data out, a timeout that aborts the request, and an
//! `AbortController` that aborts on drop.

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::rc::Rc;
use core::cell::Cell;

use super::task::JsPromise;
use js_sys::Promise;
use wasm_bindgen::prelude::*;
use web_sys::{AbortController, Request, RequestCredentials, RequestInit, Response};

use super::timer::Timeout;
use crate::error::Error;
use crate::policy::response::Reply;
use crate::policy::schedule::timer_delay;

/// Aborts the request when dropped, and owns the timeout that aborts it.
struct AbortGuard {
    controller: AbortController,
    timed_out: Rc<Cell<bool>>,
    _timer: Timeout,
}

impl AbortGuard {
    fn new(timeout_ms: i64) -> Result<Self, Error> {
        let controller = AbortController::new().map_err(|_| Error::UnsupportedEnvironment)?;
        let timed_out = Rc::new(Cell::new(false));
        let (c, t) = (controller.clone(), timed_out.clone());
        let timer = Timeout::new(timer_delay(timeout_ms), move || {
            t.set(true);
            c.abort();
        });
        Ok(AbortGuard {
            controller,
            timed_out,
            _timer: timer,
        })
    }

    fn failure(&self) -> Error {
        if self.timed_out.get() {
            Error::Timeout
        } else {
            Error::Network
        }
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        self.controller.abort();
    }
}

/// POSTs an empty body to `url` with the cookie (`credentials: include`)
/// and `headers`; the whole exchange, body included, is bounded by
/// `timeout_ms`.
pub async fn post(
    url: String,
    headers: Vec<(String, String)>,
    timeout_ms: i64,
) -> Result<Reply, Error> {
    let guard = AbortGuard::new(timeout_ms)?;
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_credentials(RequestCredentials::Include);
    init.set_cache(web_sys::RequestCache::NoStore);
    init.set_signal(Some(&guard.controller.signal()));
    let request = Request::new_with_str_and_init(&url, &init).map_err(|_| Error::Network)?;
    let h = request.headers();
    for (name, value) in &headers {
        h.set(name, value).map_err(|_| Error::Network)?;
    }
    let response: Response = JsPromise::from(fetch(&request, &JsValue::UNDEFINED))
        .await
        .map_err(|_| guard.failure())?
        .unchecked_into();
    let status = response.status();
    let retry_after = response.headers().get("retry-after").ok().flatten();
    let dpop_nonce = response.headers().get("dpop-nonce").ok().flatten();
    let body = match response.text() {
        Ok(p) => JsPromise::from(p)
            .await
            .map_err(|_| guard.failure())?
            .as_string()
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    Ok(Reply {
        status,
        body,
        retry_after,
        dpop_nonce,
    })
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(input: &JsValue, init: &JsValue) -> Promise;
}

/// The one function that calls `fetch`: refresh and logout calls and the
/// app's own requests all go through here, those of the JS entry's fast
/// path too (`TokenClient.send`).
pub fn fetch(input: &JsValue, init: &JsValue) -> Promise {
    global_fetch(input, init)
}
