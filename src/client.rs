//! The `#[wasm_bindgen]` facade: `TokenClient` as JS sees it. JS values in
//! and out, and errors converted once (`From<Error> for JsValue`); every
//! call goes to the driver, which asks the policy. JS naming lives here.

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::rc::Rc;
use core::cell::RefCell;

use js_sys::{Function, Promise, JSON};
use wasm_bindgen::prelude::*;

use crate::browser::shell::{network_error, BrowserShell};
use crate::browser::{env, options as js_options};
use crate::driver::{Driver, FetchError};
use crate::error::Error;
use crate::policy::dpop::authorization;
use crate::policy::machine::Fast;
use crate::policy::options;
use crate::policy::token::{parse_token_response, Secret};
use crate::shell::Shell;

type Client = Rc<Driver<BrowserShell>>;

/// The token manager. See the package README for the full contract.
#[wasm_bindgen]
pub struct TokenClient {
    driver: Client,
    /// The current token and its `Bearer` header as JS strings, made once
    /// per token version (a JWT is ~700 characters: re-encoding it on every
    /// call was most of `getToken`'s cost).
    strings: Rc<RefCell<Option<(u64, JsValue, JsValue)>>>,
    claims: RefCell<Option<(u64, JsValue)>>,
}

/// Every async method goes through this one boxed instantiation of
/// `task::promise`: one copy in the wasm instead of one per method
/// (measured with `future_to_promise`: ~10 KB).
fn promise(f: impl core::future::Future<Output = Result<JsValue, JsValue>> + 'static) -> Promise {
    let boxed: core::pin::Pin<
        alloc::boxed::Box<dyn core::future::Future<Output = Result<JsValue, JsValue>>>,
    > = alloc::boxed::Box::pin(f);
    crate::browser::task::promise(boxed)
}

type Strings = Rc<RefCell<Option<(u64, JsValue, JsValue)>>>;

/// `(token, "Bearer token")` as JS strings for `t` of `version`, cached;
/// `"DPoP token"` when it goes with a proof (`Driver::with_proof`).
fn js_strings(cache: &Strings, version: u64, t: &Secret, proof: bool) -> (JsValue, JsValue) {
    if let Some((v, token, header)) = cache.borrow().as_ref() {
        if *v == version {
            return (token.clone(), header.clone());
        }
    }
    let header = authorization(t.expose(), proof);
    let pair = (JsValue::from_str(t.expose()), JsValue::from_str(&header));
    *cache.borrow_mut() = Some((version, pair.0.clone(), pair.1.clone()));
    pair
}

impl TokenClient {
    /// The fast path: a fresh token and no refresh in flight answer at once.
    fn ready(&self, header: bool) -> Option<JsValue> {
        let version = self.driver.ready_version()?;
        if let Some((v, token, h)) = self.strings.borrow().as_ref() {
            if *v == version {
                return Some(if header { h.clone() } else { token.clone() });
            }
        }
        let now = self.driver.shell().now();
        let t = self
            .driver
            .with_machine(|m| m.session().fresh(now).cloned())?;
        let proof = self.driver.with_proof(&t);
        let (token, h) = js_strings(&self.strings, version, &t, proof);
        Some(if header { h } else { token })
    }

    /// `getToken`/`authorizationHeader`.
    fn token_promise(&self, header: bool) -> Promise {
        if let Some(v) = self.ready(header) {
            return Promise::resolve(&v);
        }
        let d = self.driver.clone();
        let cache = self.strings.clone();
        promise(async move {
            let Some(t) = d.clone().token().await? else {
                return Ok(JsValue::NULL);
            };
            // Cached only while `t` is the session's token of that version.
            let current = d.with_machine(|m| {
                let s = m.session();
                s.holds(&t).then(|| s.version())
            });
            let proof = d.with_proof(&t);
            let (token, h) = match current {
                Some(version) => js_strings(&cache, version, &t, proof),
                None => (
                    JsValue::from_str(t.expose()),
                    JsValue::from_str(&authorization(t.expose(), proof)),
                ),
            };
            Ok(if header { h } else { token })
        })
    }
}

#[wasm_bindgen]
impl TokenClient {
    /// `new TokenClient(options)`; throws `TokenClientError`
    /// (`invalid_options`, `unsupported_environment`).
    #[wasm_bindgen(constructor)]
    pub fn new(options: JsValue) -> Result<TokenClient, JsValue> {
        let (href, origin) = env::page_location().ok_or(Error::UnsupportedEnvironment)?;
        let text = js_options::to_json(&options)?;
        let opts = options::parse_with(
            &text,
            Some(&origin),
            &|u| env::resolve_url(u, &href),
            &env::canonical_origin,
        )?;
        if opts.dpop && !env::webcrypto() {
            // Said now, not as a `signedOut: rejected` at the first refresh.
            return Err(Error::UnsupportedEnvironment.into());
        }
        Ok(TokenClient {
            driver: Driver::new(BrowserShell::new(), opts),
            strings: Rc::new(RefCell::new(None)),
            claims: RefCell::new(None),
        })
    }

    /// Restores a session: asks other tabs first, then the refresh
    /// endpoint once. `true` signed in, `false` no session (400/401/403).
    pub fn start(&self) -> Promise {
        let d = self.driver.clone();
        promise(async move { Ok(d.start().await.map(JsValue::from_bool)?) })
    }

    /// Accepts the app's own login response (RFC 6749 §5.1) and tells
    /// other tabs. Throws `invalid_response` for a bad one.
    #[wasm_bindgen(js_name = setSession)]
    pub fn set_session(&self, response: JsValue) -> Result<(), JsValue> {
        self.driver.with_machine(|m| m.live())?;
        let text = if response.is_object() {
            JSON::stringify(&response).ok().and_then(|s| s.as_string())
        } else {
            None
        };
        let text = text.ok_or(Error::InvalidResponse(
            "setSession needs the token response object",
        ))?;
        let grant = parse_token_response(&text)?;
        Ok(self.driver.set_session(grant)?)
    }

    /// A token that is not due for refresh (refreshing first when due, or
    /// waiting for a refresh in flight), or `null` when signed out.
    #[wasm_bindgen(js_name = getToken)]
    pub fn get_token(&self) -> Promise {
        self.token_promise(false)
    }

    /// `"Bearer <token>"` or `null`, for axios/ky interceptors.
    #[wasm_bindgen(js_name = authorizationHeader)]
    pub fn authorization_header(&self) -> Promise {
        self.token_promise(true)
    }

    /// `window.fetch` with the Bearer header for allowed origins, one
    /// refresh and replay on a 401.
    pub fn fetch(&self, input: JsValue, init: JsValue) -> Promise {
        let d = self.driver.clone();
        let request = env::new_request(&input, &init).map_err(network_error);
        promise(async move {
            match d.fetch(request?).await {
                Ok(response) => Ok(response.into()),
                Err(FetchError::Client(e)) => Err(e.into()),
                Err(FetchError::Send(e)) => Err(e),
            }
        })
    }

    /// The JS entry's `fetch` fast path (js/index.js) asks here first, for a
    /// request to `origin` (`appAuth`: the app set `Authorization` itself):
    /// the `Authorization` value to send, `null` to send the request as it
    /// is, or `undefined` to call the full `fetch` above. The entry then
    /// sends through `send` and asks `replayNeeded`.
    #[wasm_bindgen(js_name = fastAuth)]
    pub fn fast_auth(&self, origin: &str, app_auth: bool) -> JsValue {
        self.driver
            .fast_fetch(origin, app_auth, |fast, version| match fast {
                Fast::Attach(t) => js_strings(&self.strings, version, t, false).1,
                Fast::Plain => JsValue::NULL,
                Fast::Slow => JsValue::UNDEFINED,
            })
    }

    /// Whether a fast-path response (`status`, and its final URL when
    /// redirected, else "") is answered by one refresh and one replay
    /// (`replay`).
    #[wasm_bindgen(js_name = replayNeeded)]
    pub fn replay_needed(&self, status: u16, final_url: &str) -> bool {
        self.driver.replay_needed(status, final_url)
    }

    /// The fast path's ending after a 401 to its request sent with `sent`
    /// (the `Authorization` value `fastAuth` gave): refreshes once unless
    /// the token was already replaced, then replays `input`/`init` once.
    pub fn replay(
        &self,
        response: JsValue,
        input: JsValue,
        init: JsValue,
        sent: String,
    ) -> Promise {
        let d = self.driver.clone();
        let request = env::new_request(&input, &init).map_err(network_error);
        let sent = Secret::new(
            sent.strip_prefix("Bearer ")
                .map(String::from)
                .unwrap_or(sent),
        );
        promise(async move {
            match d
                .replay_401(response.unchecked_into(), request?, sent)
                .await
            {
                Ok(response) => Ok(response.into()),
                Err(FetchError::Client(e)) => Err(e.into()),
                Err(FetchError::Send(e)) => Err(e),
            }
        })
    }

    /// The headers `fetch` would add to a `method` request to `url`
    /// (`Authorization`, and `DPoP` when on) as an object, or `null` for an
    /// origin not allowed or when signed out; for axios/ky.
    pub fn authorize(&self, method: String, url: JsValue) -> Promise {
        let d = self.driver.clone();
        // A string, or a URL object (its toString() is its href).
        let url = url
            .as_string()
            .or_else(|| {
                url.dyn_ref::<js_sys::Object>()
                    .and_then(|o| o.to_string().as_string())
            })
            .unwrap_or_default();
        promise(async move {
            // Against the base `fetch` and XHR resolve it against, not the page's address:
            // with a `<base>` on another origin they are not the same origin.
            let abs = env::base_url()
                .and_then(|base| env::resolve_url(&url, &base))
                .ok_or(Error::InvalidOptions(alloc::borrow::Cow::Borrowed(
                    "authorize: url is not a valid URL",
                )))?;
            let Some(headers) = d.authorize(&method, &abs).await? else {
                return Ok(JsValue::NULL);
            };
            let o = js_sys::Object::new();
            for (k, v) in headers {
                let _ = js_sys::Reflect::set(&o, &JsValue::from_str(&k), &JsValue::from_str(&v));
            }
            Ok(o.into())
        })
    }

    /// Forces a refresh now (sharing one in flight); resolves with the new
    /// token, or rejects with the first attempt's error.
    pub fn refresh(&self) -> Promise {
        let d = self.driver.clone();
        promise(async move {
            let t = d.refresh().await?;
            Ok(JsValue::from_str(t.expose()))
        })
    }

    /// Clears the token at once, tells other tabs, then POSTs `logoutUrl`.
    pub fn logout(&self) -> Promise {
        let d = self.driver.clone();
        promise(async move {
            // Upstream mode: where to send the browser for RP-initiated logout.
            if let Some(url) = d.logout().await? {
                return Ok(JsValue::from_str(&url));
            }
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Where `login(returnTo)` sends the page: `loginUrl?returnTo=<returnTo>`
    /// (the entry passes this page's URL when `returnTo` is absent and
    /// navigates; js/index.js). Throws `disposed`, or `invalid_options`
    /// without `loginUrl`.
    #[wasm_bindgen(js_name = loginTarget)]
    pub fn login_target(&self, return_to: String) -> Result<String, JsValue> {
        self.driver.with_machine(|m| m.live())?;
        let mut target = self
            .driver
            .opts
            .login_url
            .clone()
            .ok_or(Error::InvalidOptions(
                "login() needs the loginUrl option".into(),
            ))?;
        let query = crate::policy::find_str(&target, "?").is_some();
        target.push(if query { '&' } else { '?' });
        target.push_str("returnTo=");
        target.push_str(&String::from(js_sys::encode_uri_component(&return_to)));
        Ok(target)
    }

    /// Adds an event listener; returns the function that removes it.
    pub fn subscribe(&self, listener: JsValue) -> Result<Function, JsValue> {
        self.driver.with_machine(|m| m.live())?;
        if !listener.is_function() {
            return Err(Error::InvalidOptions("subscribe needs a listener function".into()).into());
        }
        Ok(self
            .driver
            .shell()
            .subscribers
            .add(listener.unchecked_ref()))
    }

    /// `"signedOut"`, `"active"` or `"refreshing"`.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        String::from(self.driver.state().as_str())
    }

    /// Expiry in epoch ms of the page clock, or `undefined`.
    #[wasm_bindgen(getter, js_name = expiresAt)]
    pub fn expires_at(&self) -> JsValue {
        self.driver
            .expires_at()
            .map_or(JsValue::UNDEFINED, |n| JsValue::from_f64(n as f64))
    }

    /// When the next silent refresh is planned (epoch ms of the page
    /// clock), or `undefined`.
    #[wasm_bindgen(getter, js_name = refreshAt)]
    pub fn refresh_at(&self) -> JsValue {
        self.driver
            .refresh_at()
            .map_or(JsValue::UNDEFINED, |n| JsValue::from_f64(n as f64))
    }

    /// The JWT payload, decoded but NOT verified; `undefined` otherwise.
    pub fn claims(&self) -> JsValue {
        let found = self.driver.with_machine(|m| {
            let s = m.session();
            s.claims().map(|c| (s.version(), c.payload_json.clone()))
        });
        let Some((version, payload)) = found else {
            return JsValue::UNDEFINED;
        };
        if let Some((v, cached)) = self.claims.borrow().as_ref() {
            if *v == version {
                return cached.clone();
            }
        }
        let parsed = JSON::parse(&payload).unwrap_or(JsValue::UNDEFINED);
        *self.claims.borrow_mut() = Some((version, parsed.clone()));
        parsed
    }

    /// Whether the token's `scope` claim holds `scope`.
    #[wasm_bindgen(js_name = hasScope)]
    pub fn has_scope(&self, scope: JsValue) -> bool {
        let Some(scope) = scope.as_string() else {
            return false;
        };
        self.driver
            .with_machine(|m| m.session().claims().is_some_and(|c| c.has_scope(&scope)))
    }

    /// Forgets the token, stops timers, leaves the channel, releases callbacks.
    pub fn dispose(&self) {
        self.driver.dispose();
        *self.claims.borrow_mut() = None;
        self.driver.shell().subscribers.clear();
    }
}

impl Drop for TokenClient {
    fn drop(&mut self) {
        self.dispose();
    }
}

/// `fetch(input, init)` as the page's `fetch` answers it: the entry's fast
/// path sends through here, so one function in the crate calls `fetch`.
#[wasm_bindgen]
pub fn send(input: JsValue, init: JsValue) -> Promise {
    crate::browser::http::fetch(&input, &init)
}

/// What a failed `send` rejects `client.fetch` with: the full path's error
/// (`TokenClientError` `network` with the cause; an abort as it is).
#[wasm_bindgen(js_name = sendError)]
pub fn send_error(e: JsValue) -> JsValue {
    network_error(e)
}
