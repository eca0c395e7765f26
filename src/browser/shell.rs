//! The [`Shell`] of a page: `Date.now`/`performance.now`, `setTimeout`,
//! `fetch` (through `http::fetch` only), Web Locks, `BroadcastChannel`,
//! page events and the subscribers. It performs; it never decides.

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::boxed::Box;
use alloc::rc::Rc;

use js_sys::Reflect;
use wasm_bindgen::prelude::*;
use web_sys::{Request, Response};

use super::events::{page_lifecycle, Hooks, Subscribers};
use super::tabs::{self, Channel, LockGuard};
use super::task::{self, JsPromise};
use super::timer::Timeout;
use super::{crypto, env, http, js_error};
use crate::error::Error;
use crate::policy::clock::Stamp;
use crate::policy::dpop::PublicJwk;
use crate::policy::machine::{Event, Source};
use crate::policy::response::Reply;
use crate::policy::tabsync::LockRequest;
use crate::shell::{LocalFuture, Shell};

/// The page's shell. See the module docs.
pub struct BrowserShell {
    mono_base: f64,
    /// Event listeners (`subscribe`).
    pub subscribers: Subscribers,
}

impl BrowserShell {
    /// The shell of the current page.
    pub fn new() -> BrowserShell {
        BrowserShell {
            mono_base: env::mono_base(),
            subscribers: Subscribers::default(),
        }
    }
}

impl Default for BrowserShell {
    fn default() -> Self {
        Self::new()
    }
}

fn num(v: Option<i64>) -> JsValue {
    v.map_or(JsValue::UNDEFINED, |n| JsValue::from_f64(n as f64))
}

/// An event as the subscribers' `(type, first value, second value)`
/// (js/shell.js's `emit` names the values).
fn event_parts(e: &Event) -> (&'static str, JsValue, JsValue) {
    match e {
        Event::SignedIn { expires_at } => ("signedIn", num(*expires_at), JsValue::UNDEFINED),
        Event::Refreshed { expires_at, source } => {
            let source = match source {
                Source::SelfTab => "self",
                Source::Tab => "tab",
            };
            ("refreshed", num(*expires_at), source.into())
        }
        Event::RefreshFailed { error, retry_in_ms } => {
            let retry = retry_in_ms.map_or(JsValue::NULL, |n| JsValue::from_f64(n as f64));
            ("refreshFailed", js_error(error), retry)
        }
        Event::SignedOut { reason } => ("signedOut", reason.as_str().into(), JsValue::UNDEFINED),
        Event::StateChanged { state } => {
            ("stateChanged", state.as_str().into(), JsValue::UNDEFINED)
        }
    }
}

fn is_abort(e: &JsValue) -> bool {
    Reflect::get(e, &JsValue::from_str("name"))
        .ok()
        .and_then(|n| n.as_string())
        .as_deref()
        == Some("AbortError")
}

/// A failure of the app's own request: the caller's abort stays an
/// `AbortError`; anything else becomes `network` with the original `cause`.
pub fn network_error(e: JsValue) -> JsValue {
    if is_abort(&e) {
        return e;
    }
    let err = js_error(&Error::Network);
    let _ = Reflect::set(&err, &JsValue::from_str("cause"), &e);
    err
}

fn prop(v: &JsValue, k: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED)
}

impl Shell for BrowserShell {
    type Timer = Timeout;
    type Lock = LockGuard;
    type Channel = Channel;
    type Hooks = Hooks;
    type Request = Request;
    type Response = Response;
    type SendError = JsValue;
    type Key = crypto::Key;

    fn now(&self) -> Stamp {
        env::now(self.mono_base)
    }

    fn random(&self) -> f64 {
        env::random()
    }

    fn online(&self) -> bool {
        env::online()
    }

    fn timer(&self, ms: u32, f: Box<dyn FnOnce()>) -> Timeout {
        Timeout::new(ms, f)
    }

    fn spawn(&self, task: LocalFuture<()>) {
        task::spawn(task);
    }

    fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        timeout_ms: i64,
    ) -> LocalFuture<Result<Reply, Error>> {
        Box::pin(http::post(url, headers, timeout_ms))
    }

    fn lock(&self, name: &str, how: LockRequest) -> LocalFuture<Option<LockGuard>> {
        Box::pin(tabs::request(name, how))
    }

    fn join(
        &self,
        name: &str,
        on_message: Box<dyn FnMut(String, Option<crypto::Key>)>,
    ) -> Option<Channel> {
        Channel::join(name, on_message)
    }

    fn broadcast(&self, channel: &Channel, text: &str, key: Option<&crypto::Key>) {
        channel.post(text, key);
    }

    fn make_key(&self) -> LocalFuture<Result<crypto::Key, Error>> {
        Box::pin(crypto::make_key())
    }

    fn public_jwk(&self, key: &crypto::Key) -> PublicJwk {
        key.jwk.clone()
    }

    fn sign(&self, key: &crypto::Key, input: &str) -> LocalFuture<Result<Vec<u8>, Error>> {
        Box::pin(crypto::sign(key, input))
    }

    fn sha256(&self, input: &str) -> LocalFuture<Result<Vec<u8>, Error>> {
        Box::pin(crypto::sha256(input))
    }

    fn unique_id(&self) -> String {
        crypto::unique_id()
    }

    fn hooks(&self, on_wake: Rc<dyn Fn(bool)>) -> Hooks {
        page_lifecycle(move |online| on_wake(online))
    }

    fn emit(&self, event: &Event) {
        let (kind, a, b) = event_parts(event);
        self.subscribers.emit(kind, &a, &b);
    }

    fn send(&self, request: &Request) -> LocalFuture<Result<Response, JsValue>> {
        let pending = JsPromise::from(http::fetch(request, &JsValue::UNDEFINED));
        Box::pin(async move {
            pending
                .await
                .map(JsCast::unchecked_into)
                .map_err(network_error)
        })
    }

    fn url(&self, request: &Request) -> String {
        request.url()
    }

    fn has_authorization(&self, request: &Request) -> bool {
        request.headers().has("authorization").unwrap_or(true)
    }

    fn no_cors(&self, request: &Request) -> bool {
        prop(request, "mode").as_string().as_deref() == Some("no-cors")
    }

    fn set_authorization(&self, request: &Request, value: &str) {
        env::set_header(
            &request.headers(),
            "Authorization",
            &JsValue::from_str(value),
        );
    }

    fn set_header(&self, request: &Request, name: &str, value: &str) {
        env::set_header(&request.headers(), name, &JsValue::from_str(value));
    }

    fn method(&self, request: &Request) -> String {
        request.method()
    }

    fn response_header(&self, response: &Response, name: &str) -> Option<String> {
        response.headers().get(name).ok().flatten()
    }

    fn replayable(&self, request: &Request) -> Option<Request> {
        // A request without a body can be sent again as it is; one with a
        // body is cloned before sending.
        if !env::has_body(request) {
            Some(JsValue::from(request).unchecked_into())
        } else if request.body_used() {
            None
        } else {
            request.clone().ok()
        }
    }

    fn status(&self, response: &Response) -> u16 {
        prop(response, "status").as_f64().map_or(0, |s| s as u16)
    }

    fn response_url(&self, response: &Response) -> String {
        prop(response, "url").as_string().unwrap_or_default()
    }
}
