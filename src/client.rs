//! The `#[wasm_bindgen]` facade: `TokenClient` as JS sees it. JS types in,
//! JS types out; every decision is delegated to `core`, every browser call
//! to `browser`. JS naming lives here only.

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::rc::{Rc, Weak};
use core::cell::{Cell, RefCell};

use js_sys::{Function, Object, Promise, Reflect, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, JsFuture};
use web_sys::{Request, Response};

use crate::browser::events::{page_lifecycle, Listener, Subscribers};
use crate::browser::http;
use crate::browser::tabs::{self, Channel};
use crate::browser::timer::{self, Timeout};
use crate::browser::{env, js_error};
use crate::core::clock::Stamp;
use crate::core::options::{self, Options};
use crate::core::schedule::{parse_retry_after, timer_delay};
use crate::core::session::{Failure, Session, Standing, Tick};
use crate::core::tabsync::{self, Message};
use crate::core::token::{oauth_error, parse_token_response, Grant, Secret};
use crate::error::Error;

/// After broadcasting a new token, the lock is held this much longer so
/// that a tab waiting for it sees the message before it gets the lock.
const LOCK_LINGER_MS: u32 = 50;
/// How long `start()` listens for another tab's token.
const START_QUERY_MS: u32 = 100;

/// Where a `signedOut` came from.
#[derive(Clone, Copy)]
enum Reason {
    Logout,
    Rejected,
    Expired,
    Tab,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Logout => "logout",
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Tab => "tab",
        }
    }
}

struct Inner {
    opts: Options,
    mono_base: f64,
    session: RefCell<Session>,
    subscribers: Subscribers,
    /// The refresh attempt in flight: resolves with `undefined` on success
    /// or the error object on failure; never rejects (no unhandled
    /// rejections from background refreshes).
    inflight: RefCell<Option<Promise>>,
    timer: RefCell<Option<Timeout>>,
    channel: RefCell<Option<Channel>>,
    lifecycle: RefCell<Vec<Listener>>,
    /// Bumped on every sign-out, so a refresh that was in flight cannot
    /// bring a session back after logout.
    epoch: Cell<u32>,
    /// `start()` in progress (resolves, never rejects, when it ends).
    starting: RefCell<Option<Promise>>,
    /// Keeps the cross-tab lock a moment after a refresh (see LOCK_LINGER_MS).
    lock_linger: RefCell<Option<Timeout>>,
    /// Resolves `start()`'s wait when a tab hands over a token.
    start_waiter: RefCell<Option<Function>>,
    claims_cache: RefCell<Option<(u64, JsValue)>>,
    /// The current token and its `Bearer` header as JS strings, made once
    /// per token version (a JWT is ~700 characters: re-encoding it on every
    /// call was most of `getToken`'s cost).
    js_cache: RefCell<Option<(u64, JsValue, JsValue)>>,
    disposed: Cell<bool>,
}

fn obj(pairs: &[(&str, JsValue)]) -> Object {
    let o = Object::new();
    for (k, v) in pairs {
        let _ = Reflect::set(&o, &JsValue::from_str(k), v);
    }
    o
}

fn num_or_undefined(v: Option<i64>) -> JsValue {
    v.map_or(JsValue::UNDEFINED, |n| JsValue::from_f64(n as f64))
}

fn classify(reply: http::Reply, now_wall: i64) -> Result<Grant, Error> {
    match reply.status {
        200..=299 => parse_token_response(&reply.body),
        400 | 401 | 403 => Err(Error::RefreshRejected {
            status: reply.status,
            error: oauth_error(&reply.body),
        }),
        status => Err(Error::ServerError {
            status,
            retry_after_ms: reply
                .retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, now_wall)),
        }),
    }
}

impl Inner {
    fn now(&self) -> Stamp {
        env::now(self.mono_base)
    }

    fn check_live(&self) -> Result<(), Error> {
        if self.disposed.get() {
            Err(Error::Disposed)
        } else {
            Ok(())
        }
    }

    fn emit(&self, event: Object) {
        self.subscribers.emit(&event);
    }

    fn expires_at_js(&self) -> JsValue {
        let now = self.now();
        num_or_undefined(self.session.borrow().expires_at(now))
    }

    fn emit_signed_in(&self) {
        self.emit(obj(&[
            ("type", "signedIn".into()),
            ("expiresAt", self.expires_at_js()),
        ]));
    }

    fn emit_refreshed(&self, source: &str) {
        self.emit(obj(&[
            ("type", "refreshed".into()),
            ("expiresAt", self.expires_at_js()),
            ("source", source.into()),
        ]));
    }

    fn emit_signed_out(&self, reason: Reason) {
        self.emit(obj(&[
            ("type", "signedOut".into()),
            ("reason", reason.as_str().into()),
        ]));
    }

    fn post(&self, text: &str) {
        if let Some(c) = self.channel.borrow().as_ref() {
            c.post(text);
        }
    }

    fn broadcast_token(&self) {
        if self.channel.borrow().is_none() {
            return;
        }
        let now = self.now();
        let text = {
            let s = self.session.borrow();
            match (s.usable(now), s.lifetime_and_age(now)) {
                (Some(t), Some((life, age))) => {
                    tabsync::encode_token(s.version(), t.expose(), life, age)
                }
                _ => return,
            }
        };
        self.post(&text);
    }

    fn broadcast_signed_out(&self) {
        let text = tabsync::encode_signed_out(self.session.borrow().version());
        self.post(&text);
    }

    /// Ends the session locally: emits, tells other tabs unless the news
    /// came from one, and re-arms (which cancels) the timer.
    fn end_session(self: &Rc<Self>, reason: Reason, was_signed_in: bool) {
        self.epoch.set(self.epoch.get().wrapping_add(1));
        if !matches!(reason, Reason::Tab | Reason::Expired) {
            self.broadcast_signed_out();
        }
        self.arm();
        if was_signed_in {
            self.emit_signed_out(reason);
        }
    }

    /// (Re-)arms the one timer from the session's next wake-up. The delay
    /// is clamped to what `setTimeout` honours; when it fires, `wake`
    /// re-reads the clock and re-arms, so long delays are chained.
    fn arm(self: &Rc<Self>) {
        if self.disposed.get() {
            return;
        }
        let wake = self.session.borrow().next_wake(self.now());
        let timer = wake.map(|ms| {
            let weak = Rc::downgrade(self);
            Timeout::new(timer_delay(ms), move || {
                if let Some(inner) = weak.upgrade() {
                    inner.wake();
                }
            })
        });
        *self.timer.borrow_mut() = timer;
    }

    /// Re-checks the clock: timer firings, page wake-ups and every
    /// `getToken`/`fetch` come through here.
    fn wake(self: &Rc<Self>) {
        if self.disposed.get() {
            return;
        }
        let now = self.now();
        let tick = self.session.borrow().tick(now);
        match tick {
            Tick::Refresh => {
                // Background: the outcome is reported through events.
                let _ = self.ensure_refresh();
            }
            Tick::Expire => {
                let had = self.session.borrow_mut().sign_out(now);
                self.end_session(Reason::Expired, had);
            }
            Tick::Idle => self.arm(),
        }
    }

    /// The shared refresh: joins the attempt in flight or starts one.
    fn ensure_refresh(self: &Rc<Self>) -> Promise {
        if let Some(p) = self.inflight.borrow().as_ref() {
            return p.clone();
        }
        let inner = self.clone();
        let p = promise(async move {
            let outcome = inner.clone().run_refresh().await;
            *inner.inflight.borrow_mut() = None;
            Ok(match outcome {
                Ok(()) => JsValue::UNDEFINED,
                Err(e) => js_error(&e),
            })
        });
        *self.inflight.borrow_mut() = Some(p.clone());
        p
    }

    /// One refresh attempt, start to finish: storm floor, cross-tab lock,
    /// adopt-or-rotate, the call, and the bookkeeping of its outcome.
    async fn run_refresh(self: Rc<Self>) -> Result<(), Error> {
        *self.timer.borrow_mut() = None;
        loop {
            let now = self.now();
            let wait = self.session.borrow_mut().try_begin_attempt(now);
            match wait {
                Ok(()) => break,
                Err(ms) => timer::sleep(timer_delay(ms)).await,
            }
            self.check_live()?;
        }
        let version_at_decision = self.session.borrow().version();
        let epoch = self.epoch.get();

        let lock = if self.opts.cross_tab {
            let wait = timer_delay(self.opts.request_timeout_ms.saturating_add(2_000));
            tabs::acquire(&self.opts.channel_name, wait).await
        } else {
            None
        };
        self.check_live()?;

        // Inside the lock: has another tab delivered a fresh token since we
        // decided to refresh? Then adopt it instead of rotating again.
        let now = self.now();
        let adopt = {
            let s = self.session.borrow();
            tabsync::adopt_instead_of_rotating(
                version_at_decision,
                s.version(),
                s.fresh(now).is_some(),
            )
        };
        if adopt || self.epoch.get() != epoch {
            self.session.borrow_mut().attempt_settled();
            self.arm();
            return if self.epoch.get() != epoch {
                Err(Error::SignedOut)
            } else {
                Ok(())
            };
        }

        // The lifetime is counted from when the request left, not when the
        // answer came: the server issued the token in between, so this never
        // overestimates what is left (the answer's transit is on our side).
        let sent = self.now();
        let reply = http::post(
            &self.opts.refresh_url,
            &self.opts.refresh_headers,
            self.opts.request_timeout_ms,
        )
        .await;
        let now = self.now();
        if self.disposed.get() {
            return Err(Error::Disposed);
        }
        if self.epoch.get() != epoch {
            // Logged out while the call was in flight: drop the result.
            self.session.borrow_mut().attempt_settled();
            return Err(Error::SignedOut);
        }
        let result = reply.and_then(|r| classify(r, now.wall));
        let was_signed_in = self.session.borrow().is_signed_in();
        let accepted = result.and_then(|grant| self.session.borrow_mut().accept(grant, sent));
        match accepted {
            Ok(()) => {
                self.broadcast_token();
                if let Some(guard) = lock {
                    // Let the message reach waiting tabs before they get the lock.
                    let release = Timeout::new(LOCK_LINGER_MS, move || drop(guard));
                    *self.lock_linger.borrow_mut() = Some(release);
                }
                self.arm();
                if was_signed_in {
                    self.emit_refreshed("self");
                } else {
                    self.emit_signed_in();
                }
                Ok(())
            }
            Err(e) => {
                drop(lock);
                let failure =
                    self.session
                        .borrow_mut()
                        .attempt_failed(e.clone(), now, env::random());
                match failure {
                    Failure::Retry { in_ms } => {
                        self.arm();
                        self.emit_refresh_failed(&e, Some(in_ms));
                    }
                    Failure::GaveUp => {
                        self.arm();
                        self.emit_refresh_failed(&e, None);
                    }
                    Failure::Expired { was_signed_in } => {
                        self.emit_refresh_failed(&e, None);
                        self.end_session(Reason::Expired, was_signed_in);
                    }
                    Failure::Rejected { was_signed_in } => {
                        self.end_session(Reason::Rejected, was_signed_in)
                    }
                }
                Err(e)
            }
        }
    }

    fn emit_refresh_failed(&self, e: &Error, retry_in: Option<i64>) {
        self.emit(obj(&[
            ("type", "refreshFailed".into()),
            ("error", js_error(e)),
            (
                "retryInMs",
                retry_in.map_or(JsValue::NULL, |n| JsValue::from_f64(n as f64)),
            ),
        ]));
    }

    /// Awaits the shared refresh; `Err` with its error if it failed.
    async fn await_refresh(self: &Rc<Self>) -> Result<(), JsValue> {
        let outcome = JsFuture::from(self.ensure_refresh())
            .await
            .unwrap_or(JsValue::UNDEFINED);
        if outcome.is_undefined() {
            Ok(())
        } else {
            Err(outcome)
        }
    }

    /// The token to send now, refreshing first when due. `Ok(None)` when
    /// signed out. Never returns an expired token.
    async fn token_for_use(self: &Rc<Self>) -> Result<Option<Secret>, JsValue> {
        self.check_live()?;
        let now = self.now();
        let (standing, in_flight, tick) = {
            let s = self.session.borrow();
            (
                s.standing(now),
                s.in_flight() || self.inflight.borrow().is_some(),
                s.tick(now),
            )
        };
        if standing == Standing::None && !in_flight {
            // Signed out, unless a `start()` is still asking other tabs.
            let starting = self.starting.borrow().clone();
            match starting {
                Some(p) => {
                    let _ = JsFuture::from(p).await;
                    self.check_live()?;
                    let now = self.now();
                    return Ok(self.session.borrow().usable(now).cloned());
                }
                None => return Ok(None),
            }
        }
        match standing {
            Standing::Fresh => return Ok(self.session.borrow().fresh(now).cloned()),
            Standing::Due | Standing::Expired if !in_flight && tick != Tick::Refresh => {
                // Backing off or given up: no attempt to wait for.
                if tick == Tick::Expire {
                    self.wake();
                    return Ok(None);
                }
                let s = self.session.borrow();
                return match s.usable(now) {
                    Some(t) => Ok(Some(t.clone())),
                    None => Err(js_error(s.last_error().unwrap_or(&Error::SignedOut))),
                };
            }
            _ => {}
        }
        let outcome = self.await_refresh().await;
        self.check_live()?;
        let now = self.now();
        let s = self.session.borrow();
        match (s.usable(now), outcome) {
            (Some(t), _) => Ok(Some(t.clone())),
            (None, Err(e)) if s.is_signed_in() => Err(e),
            (None, Err(e)) if standing != Standing::None => Err(e),
            (None, _) => Ok(None),
        }
    }

    /// `(token, "Bearer token")` as JS strings for `t`, cached per version
    /// while `t` is the session's current token.
    fn js_strings(&self, t: &Secret) -> (JsValue, JsValue) {
        let version = self.session.borrow().version();
        if let Some((v, token, header)) = self.js_cache.borrow().as_ref() {
            if *v == version {
                return (token.clone(), header.clone());
            }
        }
        let pair = (JsValue::from_str(t.expose()), JsValue::from_str(&bearer(t)));
        let current = self.session.borrow().holds(t);
        if current {
            *self.js_cache.borrow_mut() = Some((version, pair.0.clone(), pair.1.clone()));
        }
        pair
    }

    /// The fast path: a live client with a fresh token answers at once.
    fn fresh_js(&self) -> Option<(Secret, JsValue, JsValue)> {
        if self.disposed.get() {
            return None;
        }
        let now = self.now();
        let t = self.session.borrow().fresh(now).cloned()?;
        let (token, header) = self.js_strings(&t);
        Some((t, token, header))
    }

    fn on_tab_message(self: &Rc<Self>, text: String) {
        if self.disposed.get() {
            return;
        }
        let Some(msg) = tabsync::decode(&text) else {
            return;
        };
        let now = self.now();
        match msg {
            Message::Token {
                version,
                grant,
                lifetime,
                age,
            } => {
                let was_signed_in = self.session.borrow().is_signed_in();
                let adopted = self
                    .session
                    .borrow_mut()
                    .adopt(grant, lifetime, age, version, now);
                if adopted {
                    self.arm();
                    if let Some(resolve) = self.start_waiter.borrow_mut().take() {
                        let _ = resolve.call0(&JsValue::UNDEFINED);
                    }
                    if was_signed_in {
                        self.emit_refreshed("tab");
                    } else {
                        self.emit_signed_in();
                    }
                }
            }
            Message::SignedOut { version } => {
                let had = self.session.borrow_mut().remote_sign_out(version);
                if had {
                    self.end_session(Reason::Tab, true);
                }
            }
            Message::Query => {
                let fresh = self.session.borrow().fresh(now).is_some();
                if fresh {
                    self.broadcast_token();
                }
            }
        }
    }

    fn dispose(&self) {
        self.disposed.set(true);
        *self.timer.borrow_mut() = None;
        *self.channel.borrow_mut() = None;
        self.lifecycle.borrow_mut().clear();
        self.subscribers.clear();
        *self.start_waiter.borrow_mut() = None;
    }
}

/// The token manager. See the package README for the full contract.
#[wasm_bindgen]
pub struct TokenClient {
    inner: Rc<Inner>,
}

/// Every async method goes through this one boxed instantiation of the
/// executor: one copy of `future_to_promise` in the wasm instead of one per
/// method (measured: ~10 KB).
fn promise(f: impl core::future::Future<Output = Result<JsValue, JsValue>> + 'static) -> Promise {
    let boxed: core::pin::Pin<
        alloc::boxed::Box<dyn core::future::Future<Output = Result<JsValue, JsValue>>>,
    > = alloc::boxed::Box::pin(f);
    future_to_promise(boxed)
}

fn options_json(options: &JsValue) -> Result<String, Error> {
    let invalid = || Error::InvalidOptions("options must be a plain object".into());
    if !options.is_object() || js_sys::Array::is_array(options) {
        return Err(invalid());
    }
    // JSON.stringify silently drops functions and symbols: refuse them.
    for key in Object::keys(options.unchecked_ref::<Object>()).iter() {
        let v = Reflect::get(options, &key).map_err(|_| invalid())?;
        if v.is_function() || v.is_symbol() || v.is_bigint() {
            let mut m = key.as_string().unwrap_or_default();
            m.push_str(" has an unsupported type");
            return Err(Error::InvalidOptions(m.into()));
        }
    }
    JSON::stringify(options)
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(invalid)
}

#[wasm_bindgen]
impl TokenClient {
    /// `new TokenClient(options)`; throws `TokenClientError`
    /// (`invalid_options`, `unsupported_environment`).
    #[wasm_bindgen(constructor)]
    pub fn new(options: JsValue) -> Result<TokenClient, JsValue> {
        let (href, origin) = env::page_location().ok_or(Error::UnsupportedEnvironment)?;
        if env::global("fetch").is_none() {
            return Err(Error::UnsupportedEnvironment.into());
        }
        let text = options_json(&options)?;
        let opts = options::parse(&text, Some(&origin), &|u| env::resolve_url(u, &href))?;
        let inner = Rc::new(Inner {
            session: RefCell::new(Session::new(opts.session)),
            opts,
            mono_base: env::mono_base(),
            subscribers: Subscribers::default(),
            inflight: RefCell::new(None),
            timer: RefCell::new(None),
            channel: RefCell::new(None),
            lifecycle: RefCell::new(Vec::new()),
            epoch: Cell::new(0),
            start_waiter: RefCell::new(None),
            lock_linger: RefCell::new(None),
            starting: RefCell::new(None),
            claims_cache: RefCell::new(None),
            js_cache: RefCell::new(None),
            disposed: Cell::new(false),
        });
        if inner.opts.cross_tab {
            let weak: Weak<Inner> = Rc::downgrade(&inner);
            *inner.channel.borrow_mut() = Channel::join(&inner.opts.channel_name, move |text| {
                if let Some(i) = weak.upgrade() {
                    i.on_tab_message(text);
                }
            });
        }
        let weak = Rc::downgrade(&inner);
        *inner.lifecycle.borrow_mut() = page_lifecycle(move |online| {
            if let Some(i) = weak.upgrade() {
                if online {
                    i.session.borrow_mut().reset_give_up();
                }
                i.wake();
            }
        });
        Ok(TokenClient { inner })
    }

    /// Restores a session: asks other tabs first, then the refresh
    /// endpoint once. `true` signed in, `false` no session (400/401/403).
    pub fn start(&self) -> Promise {
        let inner = self.inner.clone();
        // Callers of getToken/fetch during start() wait for its outcome.
        let mut resolver = None;
        let settled = Promise::new(&mut |resolve, _| resolver = Some(resolve));
        *inner.starting.borrow_mut() = Some(settled);
        promise(async move {
            let outcome = Self::start_inner(inner.clone()).await;
            *inner.starting.borrow_mut() = None;
            if let Some(resolve) = resolver {
                let _ = resolve.call0(&JsValue::UNDEFINED);
            }
            outcome
        })
    }

    async fn start_inner(inner: Rc<Inner>) -> Result<JsValue, JsValue> {
        {
            inner.check_live()?;
            let now = inner.now();
            if inner.session.borrow().usable(now).is_some() {
                return Ok(JsValue::TRUE);
            }
            if inner.channel.borrow().is_some() {
                let mut resolver = None;
                let handed_over = Promise::new(&mut |resolve, _| resolver = Some(resolve));
                *inner.start_waiter.borrow_mut() = resolver;
                inner.post(&tabsync::encode_query());
                let timeout = timer::delay(START_QUERY_MS);
                let _ = JsFuture::from(Promise::race(&js_sys::Array::of2(&handed_over, &timeout)))
                    .await;
                *inner.start_waiter.borrow_mut() = None;
                inner.check_live()?;
                if inner.session.borrow().usable(inner.now()).is_some() {
                    return Ok(JsValue::TRUE);
                }
            }
            match inner.await_refresh().await {
                Ok(()) => Ok(JsValue::from_bool(
                    inner.session.borrow().usable(inner.now()).is_some(),
                )),
                Err(e) => {
                    let code = Reflect::get(&e, &JsValue::from_str("code"))
                        .ok()
                        .and_then(|c| c.as_string());
                    if code.as_deref() == Some("refresh_rejected") {
                        Ok(JsValue::FALSE)
                    } else {
                        Err(e)
                    }
                }
            }
        }
    }

    /// Accepts the app's own login response (RFC 6749 §5.1) and tells
    /// other tabs. Throws `invalid_response` for a bad one.
    #[wasm_bindgen(js_name = setSession)]
    pub fn set_session(&self, response: JsValue) -> Result<(), JsValue> {
        let inner = &self.inner;
        inner.check_live()?;
        let text = if response.is_object() {
            JSON::stringify(&response).ok().and_then(|s| s.as_string())
        } else {
            None
        };
        let text = text.ok_or(Error::InvalidResponse(
            "setSession needs the token response object",
        ))?;
        let grant = parse_token_response(&text)?;
        let now = inner.now();
        inner.session.borrow_mut().accept(grant, now)?;
        inner.broadcast_token();
        inner.arm();
        inner.emit_signed_in();
        Ok(())
    }

    /// A token that is not due for refresh (refreshing first when due), or
    /// `null` when signed out.
    #[wasm_bindgen(js_name = getToken)]
    pub fn get_token(&self) -> Promise {
        if let Some((_, token, _)) = self.inner.fresh_js() {
            return Promise::resolve(&token);
        }
        let inner = self.inner.clone();
        promise(async move {
            let t = inner.token_for_use().await?;
            Ok(t.map_or(JsValue::NULL, |t| inner.js_strings(&t).0))
        })
    }

    /// `"Bearer <token>"` or `null`, for axios/ky interceptors.
    #[wasm_bindgen(js_name = authorizationHeader)]
    pub fn authorization_header(&self) -> Promise {
        if let Some((_, _, header)) = self.inner.fresh_js() {
            return Promise::resolve(&header);
        }
        let inner = self.inner.clone();
        promise(async move {
            let t = inner.token_for_use().await?;
            Ok(t.map_or(JsValue::NULL, |t| inner.js_strings(&t).1))
        })
    }

    /// `window.fetch` with the Bearer header for allowed origins, one
    /// refresh and replay on a 401.
    pub fn fetch(&self, input: JsValue, init: JsValue) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            inner.check_live()?;
            let request = env::new_request(&input, &init).map_err(network_error)?;
            let url = request.url();
            let headers = request.headers();
            if !inner.opts.allows(&url) || headers.has("authorization").unwrap_or(true) {
                return send(&request).await;
            }
            let (token, header) = match inner.fresh_js() {
                Some((t, _, header)) => (t, header),
                None => match inner.token_for_use().await? {
                    Some(t) => {
                        let header = inner.js_strings(&t).1;
                        (t, header)
                    }
                    None => return send(&request).await,
                },
            };
            // For one replay after a 401: a request without a body can be
            // sent again as it is; one with a body is cloned before sending.
            let replay = if !env::has_body(&request) {
                Some(JsValue::from(&request).unchecked_into::<Request>())
            } else if request.body_used() {
                None
            } else {
                request.clone().ok()
            };
            let version = inner.session.borrow().version();
            env::set_header(&headers, "Authorization", &header);
            let response = send(&request).await?;
            let status = Reflect::get(&response, &JsValue::from_str("status"))
                .ok()
                .and_then(|s| s.as_f64());
            // Only a 401 from an allowed origin says our token was refused: a
            // redirect to another origin dropped the header on the way.
            let final_url = Reflect::get(&response, &JsValue::from_str("url"))
                .ok()
                .and_then(|u| u.as_string())
                .unwrap_or_default();
            let ours = final_url.is_empty() || inner.opts.allows(&final_url);
            let Some(replay) = replay.filter(|_| status == Some(401.0) && ours) else {
                return Ok(response);
            };
            // Refresh only if nobody replaced the token meanwhile.
            let unchanged = inner.session.borrow().version() == version;
            if unchanged && inner.await_refresh().await.is_err() {
                return Ok(response);
            }
            let now = inner.now();
            let fresh = inner.session.borrow().usable(now).cloned();
            match fresh {
                Some(t) if t != token => {
                    env::set_header(&replay.headers(), "Authorization", &inner.js_strings(&t).1);
                    send(&replay).await
                }
                _ => Ok(response),
            }
        })
    }

    /// Forces a refresh now (sharing one in flight); resolves with the new
    /// token, or rejects with the first attempt's error.
    pub fn refresh(&self) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            inner.check_live()?;
            inner.session.borrow_mut().reset_give_up();
            inner.await_refresh().await?;
            let now = inner.now();
            let t = inner.session.borrow().usable(now).cloned();
            t.map(|t| JsValue::from_str(t.expose()))
                .ok_or_else(|| js_error(&Error::SignedOut))
        })
    }

    /// Clears the token at once, tells other tabs, then POSTs `logoutUrl`.
    pub fn logout(&self) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            inner.check_live()?;
            let now = inner.now();
            let had = inner.session.borrow_mut().sign_out(now);
            inner.end_session(Reason::Logout, had);
            if let Some(url) = inner.opts.logout_url.clone() {
                let reply = http::post(
                    &url,
                    &inner.opts.refresh_headers,
                    inner.opts.request_timeout_ms,
                )
                .await?;
                match reply.status {
                    // Upstream mode: where to send the browser for RP-initiated logout.
                    200 => {
                        let url = JSON::parse(&reply.body)
                            .ok()
                            .and_then(|v| {
                                Reflect::get(&v, &JsValue::from_str("end_session_url")).ok()
                            })
                            .filter(|u| u.is_string());
                        return Ok(url.unwrap_or(JsValue::UNDEFINED));
                    }
                    201..=399 => {}
                    400 | 401 | 403 => {
                        return Err(js_error(&Error::RefreshRejected {
                            status: reply.status,
                            error: oauth_error(&reply.body),
                        }))
                    }
                    status => {
                        return Err(js_error(&Error::ServerError {
                            status,
                            retry_after_ms: None,
                        }))
                    }
                }
            }
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Navigates the page (top level) to `loginUrl?returnTo=<returnTo or this page>`, where
    /// the backend starts the provider's sign-in; after its callback, `start()` resolves true.
    pub fn login(&self, return_to: Option<String>) -> Result<(), JsValue> {
        self.inner.check_live()?;
        let url = self
            .inner
            .opts
            .login_url
            .clone()
            .ok_or(Error::InvalidOptions(
                "login() needs the loginUrl option".into(),
            ))?;
        let location = Reflect::get(&js_sys::global(), &JsValue::from_str("location"))
            .ok()
            .filter(|l| l.is_object())
            .ok_or(Error::UnsupportedEnvironment)?;
        let back = match return_to {
            Some(r) => r,
            None => Reflect::get(&location, &JsValue::from_str("href"))
                .ok()
                .and_then(|h| h.as_string())
                .unwrap_or_default(),
        };
        let mut target = url;
        target.push(if target.contains('?') { '&' } else { '?' });
        target.push_str("returnTo=");
        target.push_str(&String::from(js_sys::encode_uri_component(&back)));
        let assign = Reflect::get(&location, &JsValue::from_str("assign"))?;
        assign
            .dyn_into::<Function>()?
            .call1(&location, &JsValue::from_str(&target))?;
        Ok(())
    }

    /// Adds an event listener; returns the function that removes it.
    pub fn subscribe(&self, listener: JsValue) -> Result<Function, JsValue> {
        self.inner.check_live()?;
        if !listener.is_function() {
            return Err(Error::InvalidOptions("subscribe needs a listener function".into()).into());
        }
        let id = self.inner.subscribers.add(listener.unchecked_into());
        let weak = Rc::downgrade(&self.inner);
        let unsubscribe = Closure::<dyn FnMut()>::new(move || {
            if let Some(i) = weak.upgrade() {
                i.subscribers.remove(id);
            }
        });
        Ok(unsubscribe.into_js_value().unchecked_into())
    }

    /// `"signedOut"`, `"active"` or `"refreshing"`.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        if self.inner.disposed.get() {
            return String::from("signedOut");
        }
        String::from(self.inner.session.borrow().state().as_str())
    }

    /// Expiry in epoch ms of the page clock, or `undefined`.
    #[wasm_bindgen(getter, js_name = expiresAt)]
    pub fn expires_at(&self) -> JsValue {
        self.inner.expires_at_js()
    }

    /// The JWT payload, decoded but NOT verified; `undefined` otherwise.
    pub fn claims(&self) -> JsValue {
        let s = self.inner.session.borrow();
        let Some(c) = s.claims() else {
            return JsValue::UNDEFINED;
        };
        let version = s.version();
        if let Some((v, cached)) = self.inner.claims_cache.borrow().as_ref() {
            if *v == version {
                return cached.clone();
            }
        }
        let parsed = JSON::parse(&c.payload_json).unwrap_or(JsValue::UNDEFINED);
        *self.inner.claims_cache.borrow_mut() = Some((version, parsed.clone()));
        parsed
    }

    /// Whether the token's `scope` claim holds `scope`.
    #[wasm_bindgen(js_name = hasScope)]
    pub fn has_scope(&self, scope: JsValue) -> bool {
        let Some(scope) = scope.as_string() else {
            return false;
        };
        self.inner
            .session
            .borrow()
            .claims()
            .is_some_and(|c| c.has_scope(&scope))
    }

    /// Stops timers, leaves the channel, releases callbacks.
    pub fn dispose(&self) {
        self.inner.dispose();
    }
}

impl Drop for TokenClient {
    fn drop(&mut self) {
        self.inner.dispose();
    }
}

fn bearer(t: &Secret) -> String {
    let mut h = String::with_capacity(t.expose().len() + 7);
    h.push_str("Bearer ");
    h.push_str(t.expose());
    h
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
fn network_error(e: JsValue) -> JsValue {
    if is_abort(&e) {
        return e;
    }
    let err = js_error(&Error::Network);
    let _ = Reflect::set(&err, &JsValue::from_str("cause"), &e);
    err
}

async fn send(request: &Request) -> Result<JsValue, JsValue> {
    let response = JsFuture::from(env::global_fetch(request))
        .await
        .map_err(network_error)?;
    debug_assert!(response.is_instance_of::<Response>());
    Ok(response)
}
