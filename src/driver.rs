//! Runs the machine: feeds it inputs (calls, timer firings, tab messages,
//! page wake-ups, HTTP answers) and performs its effects through a
//! [`Shell`]. Generic over the shell, so the same code runs in a page and in
//! native tests on a virtual clock. It decides nothing: every `if` about the
//! session is a question to `policy::machine`.

use alloc::boxed::Box;
use alloc::rc::Rc;
use core::cell::{Cell, RefCell};

use crate::error::Error;
use crate::policy::clock::Stamp;
use crate::policy::dpop::{self, Nonces, ProofClaims};
use crate::policy::machine::{Attempt, Fast, InLock, Machine, Out, Use};
use crate::policy::options::Options;
use crate::policy::response::{logout_outcome, replay_after, Reply};
use crate::policy::schedule::timer_delay;
use crate::policy::session::State;
use crate::policy::tabsync::{LOCK_LINGER_MS, START_QUERY_MS};
use crate::policy::token::{Grant, Secret};
#[allow(unused_imports)]
use crate::prelude::*;
use crate::shell::{sleep, Shell, Slot};

/// Why `fetch` produced no response.
#[derive(Debug)]
pub enum FetchError<E> {
    /// The client's own failure (disposed, a refresh error on an expired token).
    Client(Error),
    /// The request itself failed (passed on as the shell reported it).
    Send(E),
}

impl<E> From<Error> for FetchError<E> {
    fn from(e: Error) -> Self {
        FetchError::Client(e)
    }
}

/// The client, generic over its shell.
pub struct Driver<S: Shell> {
    shell: S,
    /// The options it was made with.
    pub opts: Options,
    machine: RefCell<Machine>,
    /// The shared refresh in flight (from the storm floor to the outcome).
    inflight: RefCell<Option<Slot<Result<(), Error>>>>,
    /// `start()` in progress: callers that find no token wait for it.
    starting: RefCell<Option<Slot<()>>>,
    /// Ends `start()`'s listening when a tab hands a token over.
    start_waiter: RefCell<Option<Slot<()>>>,
    timer: RefCell<Option<S::Timer>>,
    lock_linger: RefCell<Option<S::Timer>>,
    channel: RefCell<Option<S::Channel>>,
    hooks: RefCell<Option<S::Hooks>>,
    /// The DPoP key (memory only; shared with the tabs along with tokens).
    key: RefCell<Option<S::Key>>,
    /// The last `DPoP-Nonce` of each origin (the provider's too, in upstream mode).
    nonces: RefCell<Nonces>,
    /// Upstream mode: the provider's token endpoint a `use_upstream_dpop` named; from then
    /// on every refresh also carries a proof for it.
    upstream_htu: RefCell<Option<String>>,
    /// The server's clock as the last refresh answer's `Date` gave it
    /// ([`dpop::server_clock`]): what proofs are dated by.
    server_clock: Cell<Option<(i64, i64)>>,
}

impl<S: Shell> Driver<S> {
    /// A signed-out client: joins the channel and listens for wake-ups.
    pub fn new(shell: S, opts: Options) -> Rc<Self> {
        let machine = Machine::new(opts.session, opts.cross_tab);
        let d = Rc::new(Driver {
            shell,
            opts,
            machine: RefCell::new(machine),
            inflight: RefCell::new(None),
            starting: RefCell::new(None),
            start_waiter: RefCell::new(None),
            timer: RefCell::new(None),
            lock_linger: RefCell::new(None),
            channel: RefCell::new(None),
            hooks: RefCell::new(None),
            key: RefCell::new(None),
            nonces: RefCell::new(Nonces::default()),
            upstream_htu: RefCell::new(None),
            server_clock: Cell::new(None),
        });
        if d.opts.cross_tab {
            let weak = Rc::downgrade(&d);
            let channel = d.shell.join(
                &d.opts.channel_name,
                Box::new(move |text, key| {
                    if let Some(d) = weak.upgrade() {
                        let out = d.machine.borrow_mut().tab_message(&text, d.shell.now());
                        // The key travels with the token it is bound to: adopting
                        // a tab's token means adopting its key.
                        if let (true, true, Some(k)) = (d.opts.dpop, out.handed_over, key) {
                            *d.key.borrow_mut() = Some(k);
                        }
                        d.perform(out);
                    }
                }),
            );
            *d.channel.borrow_mut() = channel;
        }
        let weak = Rc::downgrade(&d);
        let hooks = d.shell.hooks(Rc::new(move |online| {
            if let Some(d) = weak.upgrade() {
                d.tick(online);
            }
        }));
        *d.hooks.borrow_mut() = Some(hooks);
        d
    }

    /// The shell.
    pub fn shell(&self) -> &S {
        &self.shell
    }

    /// The options.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Reads the machine.
    pub fn with_machine<R>(&self, f: impl FnOnce(&Machine) -> R) -> R {
        f(&self.machine.borrow())
    }

    /// `state`.
    pub fn state(&self) -> State {
        self.machine.borrow().state()
    }

    /// `expiresAt`.
    pub fn expires_at(&self) -> Option<i64> {
        let now = self.shell.now();
        self.machine.borrow().session().expires_at(now)
    }

    /// `refreshAt`.
    pub fn refresh_at(&self) -> Option<i64> {
        let now = self.shell.now();
        self.machine.borrow().refresh_at(now)
    }

    /// The version of a token callers may have at once (fresh, no refresh
    /// in flight), for the fast path; `None` otherwise.
    pub fn ready_version(&self) -> Option<u64> {
        let now = self.shell.now();
        let refreshing = self.inflight.borrow().is_some();
        let m = self.machine.borrow();
        m.ready(now, refreshing).map(|_| m.session().version())
    }

    /// Performs one `Out`: broadcast, timer, `start()`'s wait, a refresh,
    /// then the events (last: a listener may call back into the client).
    fn perform(self: &Rc<Self>, out: Out) {
        if self.machine.borrow().disposed() {
            return;
        }
        if let Some(text) = &out.broadcast {
            if let Some(c) = self.channel.borrow().as_ref() {
                let key = self.key.borrow();
                let key = if self.opts.dpop { key.as_ref() } else { None };
                self.shell.broadcast(c, text, key);
            }
        }
        let timer = out.wake_in.map(|ms| {
            let weak = Rc::downgrade(self);
            self.shell.timer(
                timer_delay(ms),
                Box::new(move || {
                    if let Some(d) = weak.upgrade() {
                        d.tick(false);
                    }
                }),
            )
        });
        *self.timer.borrow_mut() = timer;
        if out.handed_over {
            if let Some(w) = self.start_waiter.borrow_mut().take() {
                w.set(());
            }
        }
        if out.refresh {
            let _ = self.ensure_refresh();
        }
        for e in &out.events {
            if self.machine.borrow().current(e) {
                self.shell.emit(e);
            }
        }
    }

    /// Re-checks the clock (timer, page wake-up, callers).
    pub fn tick(self: &Rc<Self>, online: bool) {
        let out = self.machine.borrow_mut().tick(online, self.shell.now());
        self.perform(out);
    }

    /// `setSession`. With DPoP on, a token that is not bound yet (the app's
    /// own login call could not sign) is bound by a refresh right away.
    pub fn set_session(self: &Rc<Self>, grant: Grant) -> Result<(), Error> {
        let bound = grant.bound;
        let bind = dpop::bind_after_set_session(self.opts.dpop, bound);
        let out = self
            .machine
            .borrow_mut()
            .set_session(grant, self.shell.now(), bind)?;
        self.perform(out);
        Ok(())
    }

    /// A DPoP proof for `htm url` (with `ath` for `token`), signed by this
    /// tab's key, and the nonce it carries; the first proof of a tab with no
    /// key makes one.
    async fn proof(
        &self,
        htm: &str,
        url: &str,
        token: Option<&str>,
    ) -> Result<(String, Option<String>), Error> {
        let existing = self.key.borrow().clone();
        let key = match existing {
            Some(k) => k,
            None => {
                let k = self.shell.make_key().await?;
                // Not kept by a client disposed meanwhile: dispose forgot the key, so
                // every proof after it comes here, and a refresh's retry (a new
                // rotation: nonce, provider, clock) stops here too.
                self.machine.borrow().live()?;
                self.key.borrow_mut().get_or_insert(k).clone()
            }
        };
        let ath = match token {
            Some(t) => Some(dpop::b64url(&self.shell.sha256(t).await?)),
            None => None,
        };
        let jti = self.shell.unique_id();
        let nonce = self.nonces.borrow().for_url(url).map(String::from);
        let claims = ProofClaims {
            htm,
            url,
            iat: dpop::proof_iat(self.server_clock.get(), self.shell.now()),
            jti: &jti,
            ath: ath.as_deref(),
            nonce: nonce.as_deref(),
        };
        let input = dpop::signing_input(&self.shell.public_jwk(&key), &claims);
        let signature = self.shell.sign(&key, &input).await?;
        Ok((dpop::assemble(&input, &signature), nonce))
    }

    /// The refresh call, with a proof when DPoP is on (and one for the
    /// provider's token endpoint once a `use_upstream_dpop` named it); retried
    /// as [`dpop::retry_refresh`] says. `sent`: when the last request left
    /// (after its proof was signed): the token's lifetime counts from there.
    async fn post_refresh(&self, sent: &Cell<Stamp>) -> Result<Reply, Error> {
        let url = &self.opts.refresh_url;
        let mut retries = dpop::Retries::default();
        loop {
            let mut headers = self.opts.refresh_headers.clone();
            let mut signed_with = None;
            if self.opts.dpop {
                let (proof, nonce) = self.proof("POST", url, None).await?;
                headers.push((String::from("DPoP"), proof));
                signed_with = nonce;
                let upstream = self.upstream_htu.borrow().clone();
                if let Some(htu) = upstream {
                    let (proof, _) = self.proof("POST", &htu, None).await?;
                    headers.push((String::from("DPoP-Upstream"), proof));
                }
            }
            // Tabs waiting for the lock hear that its holder is working, each request.
            let busy = self.machine.borrow().busy_message();
            if let (Some(text), Some(c)) = (busy, self.channel.borrow().as_ref()) {
                self.shell.broadcast(c, &text, None);
            }
            sent.set(self.shell.now());
            let reply = self
                .shell
                .post(url, &headers, self.opts.request_timeout_ms)
                .await?;
            if !self.opts.dpop {
                return Ok(reply);
            }
            let now = self.shell.now();
            let clock = self.server_clock.get();
            if let Some(c) = dpop::server_clock(reply.date.as_deref(), now) {
                self.server_clock.set(Some(c));
            }
            self.nonces
                .borrow_mut()
                .remember(url, reply.dpop_nonce.as_deref());
            let changed =
                dpop::nonce_moved(signed_with.as_deref(), self.nonces.borrow().for_url(url));
            let asked = dpop::token_endpoint_wants_nonce(reply.status, &reply.body);
            let upstream = dpop::upstream_challenge(reply.status, &reply.body);
            let named = upstream.is_some();
            if let Some((htu, nonce)) = upstream {
                self.nonces.borrow_mut().remember(&htu, nonce.as_deref());
                *self.upstream_htu.borrow_mut() = Some(htu);
            }
            let answer = dpop::RefreshAnswer {
                nonce: asked && changed,
                upstream: named,
                clock: dpop::proof_refused(reply.status, &reply.body)
                    && dpop::clock_moved(clock, self.server_clock.get(), now),
            };
            if !dpop::retry_refresh(&mut retries, answer) {
                return Ok(reply);
            }
        }
    }

    /// Whether requests with `token` carry a proof and the `DPoP` scheme
    /// ([`dpop::with_proof`]).
    pub fn with_proof(&self, token: &Secret) -> bool {
        dpop::with_proof(self.opts.dpop, self.machine.borrow().session().bound(token))
    }

    /// Sets `Authorization` (and `DPoP`) on an app request for `token`;
    /// the nonce its proof carries.
    async fn authorize_request(
        &self,
        request: &S::Request,
        url: &str,
        token: &Secret,
    ) -> Result<Option<String>, Error> {
        let sh = &self.shell;
        let proof = self.with_proof(token);
        sh.set_authorization(request, &dpop::authorization(token.expose(), proof));
        if !proof {
            return Ok(None);
        }
        let (proof, nonce) = self
            .proof(&sh.method(request), url, Some(token.expose()))
            .await?;
        sh.set_header(request, "DPoP", &proof);
        Ok(nonce)
    }

    /// `authorize(method, url)`: the headers `fetch` would add, `None` for
    /// an origin not allowed or when signed out.
    pub async fn authorize(
        self: Rc<Self>,
        method: &str,
        url: &str,
    ) -> Result<Option<Vec<(String, String)>>, Error> {
        self.machine.borrow().live()?;
        if !self.opts.allows(url) {
            return Ok(None);
        }
        let Some(token) = self.clone().token().await? else {
            return Ok(None);
        };
        let proof = self.with_proof(&token);
        let mut headers = vec![(
            String::from("Authorization"),
            dpop::authorization(token.expose(), proof),
        )];
        if proof {
            let method = method.to_ascii_uppercase();
            let (proof, _) = self.proof(&method, url, Some(token.expose())).await?;
            headers.push((String::from("DPoP"), proof));
        }
        Ok(Some(headers))
    }

    /// The shared refresh: joins the attempt in flight or starts one.
    fn ensure_refresh(self: &Rc<Self>) -> Slot<Result<(), Error>> {
        if let Some(s) = self.inflight.borrow().as_ref() {
            return s.clone();
        }
        let slot = Slot::new();
        *self.inflight.borrow_mut() = Some(slot.clone());
        let d = self.clone();
        let done = slot.clone();
        self.shell.spawn(Box::pin(async move {
            let result = d.clone().run_refresh().await;
            *d.inflight.borrow_mut() = None;
            done.set(result);
        }));
        slot
    }

    async fn begin(self: &Rc<Self>) -> Result<Attempt, Error> {
        *self.timer.borrow_mut() = None;
        let asked = self.machine.borrow().refresh_asked();
        loop {
            let step = self
                .machine
                .borrow_mut()
                .begin_attempt_for(self.shell.now(), asked)?;
            match step {
                Ok((attempt, out)) => {
                    self.perform(out);
                    return Ok(attempt);
                }
                Err(ms) => sleep(&self.shell, timer_delay(ms)).await,
            }
        }
    }

    /// One attempt: storm floor, lock, adopt-or-call, outcome.
    async fn run_refresh(self: Rc<Self>) -> Result<(), Error> {
        let attempt = self.begin().await?;
        let mut lock = None;
        let mut asked = None;
        loop {
            let how = self.machine.borrow().lock_request(
                asked,
                self.opts.request_timeout_ms,
                self.shell.now(),
                self.shell.random(),
            );
            let Some(how) = how else { break };
            lock = self.shell.lock(&self.opts.channel_name, how).await;
            if lock.is_some() {
                break;
            }
            asked = Some(how);
        }
        self.machine.borrow().live()?;
        let step = self.machine.borrow_mut().in_lock(attempt, self.shell.now());
        if let InLock::Settled(result, out) = step {
            self.perform(out);
            return result;
        }
        let sent = Cell::new(self.shell.now());
        self.machine.borrow_mut().request_sent(sent.get());
        let reply = self.post_refresh(&sent).await;
        let sent = sent.get();
        let now = self.shell.now();
        let random = self.shell.random();
        let (result, out, linger) = self.machine.borrow_mut().outcome(
            attempt,
            sent,
            reply,
            now,
            random,
            self.shell.online(),
        );
        self.perform(out);
        if let (Some(guard), true) = (lock, linger) {
            // Let the message reach waiting tabs before they get the lock.
            let release = self
                .shell
                .timer(LOCK_LINGER_MS as u32, Box::new(move || drop(guard)));
            *self.lock_linger.borrow_mut() = Some(release);
        }
        result
    }

    /// `refresh()`: forces an attempt (sharing one in flight); the new token
    /// or the first attempt's error.
    pub async fn refresh(self: Rc<Self>) -> Result<Secret, Error> {
        self.machine.borrow_mut().force()?;
        self.ensure_refresh().wait().await?;
        let now = self.shell.now();
        let m = self.machine.borrow();
        m.live()?;
        m.session().usable(now).cloned().ok_or(Error::SignedOut)
    }

    /// The token to send now, refreshing first when due or waiting for a
    /// refresh in flight. `None` when signed out; never an expired token.
    pub async fn token(self: Rc<Self>) -> Result<Option<Secret>, Error> {
        let now = self.shell.now();
        let refreshing = self.inflight.borrow().is_some();
        let starting = self.starting.borrow().clone();
        let todo = self
            .machine
            .borrow()
            .token_for_use(now, refreshing, starting.is_some());
        match todo {
            Use::Now(t) => Ok(t),
            Use::Fail(e) => Err(e),
            Use::Expire => {
                self.tick(false);
                Ok(None)
            }
            Use::AwaitStart => {
                if let Some(s) = starting {
                    s.wait().await;
                }
                let now = self.shell.now();
                let m = self.machine.borrow();
                m.live()?;
                Ok(m.session().usable(now).cloned())
            }
            Use::AwaitRefresh { had } => {
                let outcome = self.ensure_refresh().wait().await;
                let now = self.shell.now();
                self.machine.borrow().after_refresh(now, had, outcome)
            }
        }
    }

    /// `start()`: asks other tabs first, then the refresh endpoint once.
    pub async fn start(self: Rc<Self>) -> Result<bool, Error> {
        self.machine.borrow().live()?;
        let done = Slot::new();
        *self.starting.borrow_mut() = Some(done.clone());
        let result = self.clone().start_inner().await;
        *self.starting.borrow_mut() = None;
        done.set(());
        result
    }

    async fn start_inner(self: Rc<Self>) -> Result<bool, Error> {
        let usable = |d: &Self| {
            let now = d.shell.now();
            d.machine.borrow().session().usable(now).is_some()
        };
        if usable(&self) {
            return Ok(true);
        }
        let query = self.machine.borrow().start_query();
        let joined = self.channel.borrow().is_some();
        if let (Some(text), true) = (query, joined) {
            let waiter = Slot::new();
            *self.start_waiter.borrow_mut() = Some(waiter.clone());
            if let Some(c) = self.channel.borrow().as_ref() {
                self.shell.broadcast(c, &text, None);
            }
            let w = waiter.clone();
            let timeout = self
                .shell
                .timer(START_QUERY_MS as u32, Box::new(move || w.set(())));
            waiter.wait().await;
            drop(timeout);
            *self.start_waiter.borrow_mut() = None;
            self.machine.borrow().live()?;
            if usable(&self) {
                return Ok(true);
            }
        }
        let outcome = self.ensure_refresh().wait().await;
        let now = self.shell.now();
        self.machine.borrow().start_result(now, outcome)
    }

    /// `logout()`: clears at once, tells the other tabs, then tells the server.
    /// `Some(url)`: the backend (upstream mode) named the provider's end-session URL.
    pub async fn logout(self: Rc<Self>) -> Result<Option<String>, Error> {
        let out = self
            .machine
            .borrow_mut()
            .logout(self.shell.now(), self.opts.request_timeout_ms)?;
        self.perform(out);
        let Some(url) = self.opts.logout_url.as_deref() else {
            return Ok(None);
        };
        let reply = self
            .shell
            .post(
                url,
                &self.opts.refresh_headers,
                self.opts.request_timeout_ms,
            )
            .await?;
        logout_outcome(&reply)
    }

    /// `client.fetch`: the Bearer header for allowed origins, one refresh
    /// and one replay after a 401 to a request that carried our token.
    pub async fn fetch(
        self: Rc<Self>,
        request: S::Request,
    ) -> Result<S::Response, FetchError<S::SendError>> {
        self.machine.borrow().live()?;
        let sh = &self.shell;
        // Sent as the app made it: an origin not allowed, the app's own `Authorization`, or a
        // `no-cors` request (the browser would drop our header, and its 401 is not about our
        // token: no refresh, no replay).
        if !self.opts.allows(&sh.url(&request))
            || sh.has_authorization(&request)
            || sh.no_cors(&request)
        {
            return sh.send(&request).await.map_err(FetchError::Send);
        }
        let Some(token) = self.clone().token().await? else {
            return sh.send(&request).await.map_err(FetchError::Send);
        };
        let replay = sh.replayable(&request);
        let url = sh.url(&request);
        let version = self.machine.borrow().session().version();
        let proof = self.with_proof(&token);
        let signed_with = self.authorize_request(&request, &url, &token).await?;
        let nonce_retry = if proof { sh.replayable(&request) } else { None };
        let mut response = sh.send(&request).await.map_err(FetchError::Send)?;
        if proof {
            // Kept for the origin that answered: after a redirect, not the one asked.
            let nonce = sh.response_header(&response, "dpop-nonce");
            let from = sh.response_url(&response);
            let from = if from.is_empty() { &url } else { &from };
            self.nonces.borrow_mut().remember(from, nonce.as_deref());
            let changed =
                dpop::nonce_moved(signed_with.as_deref(), self.nonces.borrow().for_url(&url));
            let challenge = sh.response_header(&response, "www-authenticate");
            let asked = dpop::resource_wants_nonce(sh.status(&response), challenge.as_deref());
            if let (true, Some(again)) =
                (dpop::retry_with_nonce(asked, changed, false), nonce_retry)
            {
                self.authorize_request(&again, &url, &token).await?;
                response = sh.send(&again).await.map_err(FetchError::Send)?;
            }
            let challenge = sh.response_header(&response, "www-authenticate");
            if dpop::resource_wants_nonce(sh.status(&response), challenge.as_deref()) {
                // Still asking for a nonce: a new token would not help.
                return Ok(response);
            }
        }
        let final_url = sh.response_url(&response);
        let Some(replay) = replay.filter(|_| self.replay_needed(sh.status(&response), &final_url))
        else {
            return Ok(response);
        };
        let refresh = self.machine.borrow().refresh_for_401(version);
        self.replay(response, replay, &url, &token, refresh).await
    }

    /// Whether a response of `status` whose final URL is `final_url` (empty:
    /// not redirected) is answered by one refresh and one replay.
    pub fn replay_needed(&self, status: u16, final_url: &str) -> bool {
        let ours = final_url.is_empty() || self.opts.allows(final_url);
        replay_after(status, ours, true)
    }

    /// The fetch fast path's decision for an app request to `origin` (see
    /// [`Fast`]), given to `f` with the session's version.
    pub fn fast_fetch<R>(
        &self,
        origin: &str,
        app_auth: bool,
        f: impl FnOnce(Fast<'_>, u64) -> R,
    ) -> R {
        let now = self.shell.now();
        let refreshing = self.inflight.borrow().is_some();
        let allowed = self.opts.allows(origin);
        let m = self.machine.borrow();
        f(
            m.fast_fetch(now, refreshing, allowed, app_auth, self.opts.dpop),
            m.session().version(),
        )
    }

    /// `fetch`'s ending for a request the fast path sent with `sent` and
    /// that came back as `response`, when [`Driver::replay_needed`] said so:
    /// `request` is the app's request again (without our header).
    pub async fn replay_401(
        self: Rc<Self>,
        response: S::Response,
        request: S::Request,
        sent: Secret,
    ) -> Result<S::Response, FetchError<S::SendError>> {
        self.machine.borrow().live()?;
        let url = self.shell.url(&request);
        let refresh = self.machine.borrow().refresh_for_401_of(&sent);
        self.replay(response, request, &url, &sent, refresh).await
    }

    /// One refresh (unless another already replaced `token`) and one replay
    /// with the new token; the first response when there is none.
    async fn replay(
        self: Rc<Self>,
        response: S::Response,
        replay: S::Request,
        url: &str,
        token: &Secret,
        refresh: bool,
    ) -> Result<S::Response, FetchError<S::SendError>> {
        if refresh && self.ensure_refresh().wait().await.is_err() {
            return Ok(response);
        }
        let now = self.shell.now();
        let fresh = self.machine.borrow().session().usable(now).cloned();
        match fresh {
            Some(t) if t != *token => {
                self.authorize_request(&replay, url, &t).await?;
                self.shell.send(&replay).await.map_err(FetchError::Send)
            }
            _ => Ok(response),
        }
    }

    /// `dispose()`: forgets the token and the DPoP key, stops timers, leaves
    /// the channel, removes listeners, settles the callers waiting on a refresh.
    pub fn dispose(&self) {
        self.machine.borrow_mut().dispose();
        *self.timer.borrow_mut() = None;
        *self.lock_linger.borrow_mut() = None;
        *self.channel.borrow_mut() = None;
        *self.hooks.borrow_mut() = None;
        *self.key.borrow_mut() = None;
        if let Some(w) = self.start_waiter.borrow_mut().take() {
            w.set(());
        }
        // Callers waiting on a refresh on its way settle now, not at its answer (the
        // attempt still ends with it, its own later result ignored: the first set wins).
        if let Some(s) = self.inflight.borrow_mut().take() {
            s.set(Err(Error::Disposed));
        }
    }
}
