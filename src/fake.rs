//! The shell with a virtual clock (native only): the whole client —
//! `start`, `fetch`, refresh, cross-tab hand-over — runs in `cargo test`
//! without a browser and without real time. The `MemoryHistory` beside
//! gloo's `BrowserHistory`.
//!
//! A [`World`] is one origin: a virtual clock with its timer queue, a task
//! executor, a `BroadcastChannel` bus, a Web Locks manager, and a scripted
//! server. Each tab is a [`FakeShell`] on the same world. Nothing happens
//! until the test calls [`World::run`] or [`World::advance`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

use crate::error::Error;
use crate::policy::clock::Stamp;
use crate::policy::machine::Event;
use crate::policy::response::Reply;
use crate::policy::tabsync::LockRequest;
use crate::shell::{LocalFuture, Shell, Slot};

type Task = Pin<Box<dyn Future<Output = ()>>>;

/// How the fake server answers the refresh or logout endpoint: the URL and
/// the request's headers as sent (with `Cookie` when the jar holds one).
pub type Endpoint = Box<dyn FnMut(&str, &[(String, String)]) -> Result<Reply, Error>>;

/// How the fake API answers an app request: status and response headers.
pub type Api = Box<dyn FnMut(&FakeRequest) -> (u16, Vec<(String, String)>)>;

/// A tab's page wake-up callback, once the driver registered it.
pub type WakeHook = Rc<RefCell<Option<Rc<dyn Fn(bool)>>>>;

type Listener = Rc<RefCell<Box<dyn FnMut(String, Option<FakeKey>)>>>;

/// A fake DPoP key: an id (the "private key", which tests never see
/// outside the shell) and a public JWK derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeKey {
    /// Which key.
    pub id: u64,
}

impl FakeKey {
    /// The public JWK of this key.
    pub fn jwk(&self) -> crate::policy::dpop::PublicJwk {
        crate::policy::dpop::PublicJwk {
            x: format!("x{}", self.id),
            y: format!("y{}", self.id),
        }
    }
}

/// The fake hash (FNV-1a, 64 bits, widened to `n` bytes): deterministic, so
/// tests can check `ath` and signatures.
pub fn fake_digest(seed: u64, input: &str, n: usize) -> Vec<u8> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in input.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..n)
        .map(|i| (h >> ((i % 8) * 8)) as u8 ^ i as u8)
        .collect()
}

/// The fake signature of `input` by the key `id`: tests verify a proof by
/// recomputing it.
pub fn fake_signature(id: u64, input: &str) -> Vec<u8> {
    fake_digest(id.wrapping_add(1), input, 64)
}

/// The fake SHA-256 of `input` (`ath` is base64url of it).
pub fn fake_sha256(input: &str) -> Vec<u8> {
    fake_digest(0, input, 32)
}

struct Ready(Arc<Mutex<Vec<usize>>>, usize);

impl Wake for Ready {
    fn wake(self: Arc<Self>) {
        if let Ok(mut q) = self.0.lock() {
            q.push(self.1);
        }
    }
}

#[derive(Default)]
struct Locks {
    holder: Option<u64>,
    queue: VecDeque<(u64, Slot<bool>)>,
}

struct State {
    now: i64,
    /// Added to the wall clock only (a clock the user moved).
    wall_skew: i64,
    seq: u64,
    timers: BTreeMap<(i64, u64), Box<dyn FnOnce()>>,
    tasks: HashMap<usize, Task>,
    next_task: usize,
    channels: Vec<(u64, String, Listener)>,
    locks: HashMap<String, Locks>,
    endpoint: Endpoint,
    /// The refresh cookie the browser holds (see [`World::set_cookie`]).
    cookie: Option<String>,
    api: Api,
    latency_ms: i64,
    /// `(generator state, max ms)`: every request and crypto operation takes
    /// a further 0..=max ms (see [`World::jitter`]).
    jitter: Option<(u64, i64)>,
    /// Tab messages take 0..=this many ms more (see [`World::jitter`]).
    message_jitter_ms: i64,
    /// When the app request the API handler is answering left its tab.
    request_left_at: i64,
    /// What `navigator.onLine` says (see [`World::set_online`]).
    online: bool,
    /// Every POST to an endpoint: the URL.
    posts: Vec<String>,
    /// The headers of every POST to an endpoint.
    post_headers: Vec<Vec<(String, String)>>,
    /// DPoP keys made by all tabs.
    keys_made: u32,
    /// Every app request sent: (URL, Authorization header).
    sent: Vec<(String, Option<String>)>,
}

/// One origin with its tabs. See the module docs.
#[derive(Clone)]
pub struct World {
    state: Rc<RefCell<State>>,
    ready: Arc<Mutex<Vec<usize>>>,
}

impl World {
    /// A world at epoch ms `now` whose endpoints answer 401.
    pub fn new(now: i64) -> World {
        World {
            state: Rc::new(RefCell::new(State {
                now,
                wall_skew: 0,
                seq: 0,
                timers: BTreeMap::new(),
                tasks: HashMap::new(),
                next_task: 0,
                channels: Vec::new(),
                locks: HashMap::new(),
                cookie: None,
                endpoint: Box::new(|_, _| {
                    Ok(Reply {
                        status: 401,
                        body: String::new(),
                        retry_after: None,
                        dpop_nonce: None,
                        date: None,
                    })
                }),
                api: Box::new(|_| (200, Vec::new())),
                latency_ms: 10,
                jitter: None,
                message_jitter_ms: 0,
                request_left_at: 0,
                online: true,
                posts: Vec::new(),
                post_headers: Vec::new(),
                keys_made: 0,
                sent: Vec::new(),
            })),
            ready: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A new tab on this world.
    pub fn tab(&self) -> FakeShell {
        FakeShell {
            world: self.clone(),
            events: Rc::new(RefCell::new(Vec::new())),
            on_wake: Rc::new(RefCell::new(None)),
            random: 0.5,
        }
    }

    /// Scripts the refresh and logout endpoints.
    pub fn endpoint(&self, mut f: impl FnMut(&str) -> Result<Reply, Error> + 'static) {
        self.state.borrow_mut().endpoint = Box::new(move |url, _| f(url));
    }

    /// Scripts the endpoints with each request's own headers (as sent,
    /// `Cookie` included): what a server needs when replies may arrive in
    /// another order than the requests went (see [`World::jitter`]).
    pub fn endpoint_with_headers(
        &self,
        f: impl FnMut(&str, &[(String, String)]) -> Result<Reply, Error> + 'static,
    ) {
        self.state.borrow_mut().endpoint = Box::new(f);
    }

    /// Sets the browser's HttpOnly refresh cookie (`None`: cleared). A POST
    /// carries the cookie the jar held when it was sent; the server's
    /// `Set-Cookie` is this call, made by the endpoint as it answers.
    pub fn set_cookie(&self, cookie: Option<String>) {
        self.state.borrow_mut().cookie = cookie;
    }

    /// Scripts the API (the status it answers an app request with).
    pub fn api(&self, mut f: impl FnMut(&FakeRequest) -> u16 + 'static) {
        self.state.borrow_mut().api = Box::new(move |r| (f(r), Vec::new()));
    }

    /// Scripts the API with response headers too.
    pub fn api_with_headers(
        &self,
        f: impl FnMut(&FakeRequest) -> (u16, Vec<(String, String)>) + 'static,
    ) {
        self.state.borrow_mut().api = Box::new(f);
    }

    /// How many DPoP keys the tabs made.
    pub fn keys_made(&self) -> u32 {
        self.state.borrow().keys_made
    }

    /// The headers of every refresh/logout POST so far.
    pub fn post_headers(&self) -> Vec<Vec<(String, String)>> {
        self.state.borrow().post_headers.clone()
    }

    /// How long every request takes.
    pub fn latency(&self, ms: i64) {
        self.state.borrow_mut().latency_ms = ms;
    }

    /// From now on every request and crypto operation takes a further
    /// 0..=`max_ms`, and every tab message 0..=`message_max_ms`, drawn from a
    /// generator seeded with `seed`: the same seed, the same run. Explores
    /// the orders in which tabs, the network and WebCrypto can finish.
    pub fn jitter(&self, seed: u64, max_ms: i64, message_max_ms: i64) {
        let mut s = self.state.borrow_mut();
        s.jitter = Some((seed, max_ms.max(0)));
        s.message_jitter_ms = message_max_ms.max(0);
    }

    /// Sets what every tab's `navigator.onLine` says (true at first). The
    /// endpoints answer as scripted either way: a test makes them fail too.
    pub fn set_online(&self, online: bool) {
        self.state.borrow_mut().online = online;
    }

    /// When the app request the API handler is answering now left its tab
    /// (the handler runs when it arrives, `latency` and jitter later).
    pub fn request_left_at(&self) -> i64 {
        self.state.borrow().request_left_at
    }

    /// The next jitter delay (0 without [`World::jitter`]).
    fn draw(&self) -> i64 {
        let max = self.state.borrow().jitter.map_or(0, |(_, m)| m);
        self.draw_upto(max)
    }

    /// The next jitter delay of a tab message.
    fn draw_message(&self) -> i64 {
        let max = self.state.borrow().message_jitter_ms;
        self.draw_upto(max)
    }

    fn draw_upto(&self, max: i64) -> i64 {
        let mut s = self.state.borrow_mut();
        let Some((x, _)) = s.jitter.as_mut() else {
            return 0;
        };
        // splitmix64: a well-mixed sequence from any seed.
        *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z % (max as u64 + 1)) as i64
    }

    /// Waits the next jitter delay, if jitter is on (no timer turn when off,
    /// so runs without jitter keep their exact order).
    async fn jittered(&self) {
        if self.state.borrow().jitter.is_some() {
            let ms = self.draw();
            after(self.clone(), ms).await;
        }
    }

    /// Moves the wall clock only (the user changed it, or the machine slept).
    pub fn skew_wall(&self, ms: i64) {
        self.state.borrow_mut().wall_skew += ms;
    }

    /// Virtual time now (monotonic).
    pub fn now(&self) -> i64 {
        self.state.borrow().now
    }

    /// URLs POSTed to the endpoints so far.
    pub fn posts(&self) -> Vec<String> {
        self.state.borrow().posts.clone()
    }

    /// App requests sent so far: (URL, Authorization).
    pub fn sent(&self) -> Vec<(String, Option<String>)> {
        self.state.borrow().sent.clone()
    }

    fn stamp(&self) -> Stamp {
        let s = self.state.borrow();
        Stamp {
            wall: s.now + s.wall_skew,
            mono: s.now,
        }
    }

    fn add_timer(&self, ms: i64, f: Box<dyn FnOnce()>) -> (i64, u64) {
        let mut s = self.state.borrow_mut();
        s.seq += 1;
        let key = (s.now + ms.max(0), s.seq);
        s.timers.insert(key, f);
        key
    }

    fn spawn(&self, task: Task) {
        let id = {
            let mut s = self.state.borrow_mut();
            s.next_task += 1;
            let id = s.next_task;
            s.tasks.insert(id, task);
            id
        };
        if let Ok(mut q) = self.ready.lock() {
            q.push(id);
        }
    }

    fn run_tasks(&self) -> bool {
        let mut progressed = false;
        loop {
            let ids: Vec<usize> = match self.ready.lock() {
                Ok(mut q) => std::mem::take(&mut *q),
                Err(_) => return progressed,
            };
            if ids.is_empty() {
                return progressed;
            }
            for id in ids {
                let task = self.state.borrow_mut().tasks.remove(&id);
                let Some(mut task) = task else { continue };
                progressed = true;
                let waker = Waker::from(Arc::new(Ready(self.ready.clone(), id)));
                let mut cx = Context::from_waker(&waker);
                if task.as_mut().poll(&mut cx).is_pending() {
                    self.state.borrow_mut().tasks.insert(id, task);
                }
            }
        }
    }

    /// Runs every task and every timer due at the current time, until
    /// nothing more happens.
    pub fn run(&self) {
        // A client that keeps re-arming timers (or waking tasks) without
        // time passing would spin a browser tab: a bug, reported here
        // instead of hanging the test.
        let mut turns = 0u32;
        loop {
            turns += 1;
            assert!(
                turns < 100_000,
                "timers or tasks keep firing at {} ms without time passing",
                self.now()
            );
            self.run_tasks();
            let due = {
                let mut s = self.state.borrow_mut();
                let now = s.now;
                match s.timers.first_key_value() {
                    Some((&(at, _), _)) if at <= now => s.timers.pop_first().map(|(_, f)| f),
                    _ => None,
                }
            };
            match due {
                Some(f) => f(),
                None => break,
            }
        }
    }

    /// Lets `ms` of virtual time pass, firing timers in order.
    pub fn advance(&self, ms: i64) {
        let target = self.now() + ms;
        loop {
            self.run();
            let next = self
                .state
                .borrow()
                .timers
                .first_key_value()
                .map(|(k, _)| k.0);
            match next {
                Some(at) if at <= target => self.state.borrow_mut().now = at,
                _ => break,
            }
        }
        self.state.borrow_mut().now = target;
        self.run();
    }

    /// Spawns `f` and returns a slot holding its output once it is done.
    pub fn call<T: Clone + 'static>(&self, f: impl Future<Output = T> + 'static) -> Slot<T> {
        let slot = Slot::new();
        let s = slot.clone();
        self.spawn(Box::pin(async move { s.set(f.await) }));
        slot
    }

    fn lock_release(&self, name: &str, id: u64) {
        let next = {
            let Ok(mut s) = self.state.try_borrow_mut() else {
                return;
            };
            let Some(l) = s.locks.get_mut(name) else {
                return;
            };
            if l.holder != Some(id) {
                return;
            }
            l.holder = None;
            let next = l.queue.pop_front();
            if let Some((nid, _)) = &next {
                l.holder = Some(*nid);
            }
            next
        };
        if let Some((_, slot)) = next {
            slot.set(true);
        }
    }
}

/// A held fake lock; released on drop.
pub struct FakeLock {
    world: Weak<RefCell<State>>,
    ready: Arc<Mutex<Vec<usize>>>,
    name: String,
    id: u64,
}

impl Drop for FakeLock {
    fn drop(&mut self) {
        if let Some(state) = self.world.upgrade() {
            World {
                state,
                ready: self.ready.clone(),
            }
            .lock_release(&self.name, self.id);
        }
    }
}

/// A pending fake timer; cancelled on drop.
pub struct FakeTimer {
    world: Weak<RefCell<State>>,
    key: (i64, u64),
}

impl Drop for FakeTimer {
    fn drop(&mut self) {
        if let Some(s) = self.world.upgrade() {
            if let Ok(mut s) = s.try_borrow_mut() {
                s.timers.remove(&self.key);
            }
        }
    }
}

/// Channel membership; left on drop.
pub struct FakeChannel {
    world: Weak<RefCell<State>>,
    id: u64,
    name: String,
}

impl Drop for FakeChannel {
    fn drop(&mut self) {
        if let Some(s) = self.world.upgrade() {
            s.borrow_mut().channels.retain(|(id, _, _)| *id != self.id);
        }
    }
}

/// An app request: URL, headers, whether it has a body that was used.
#[derive(Clone, Debug)]
pub struct FakeRequest {
    /// Absolute URL.
    pub url: String,
    /// Headers (name as set).
    pub headers: Rc<RefCell<Vec<(String, String)>>>,
    /// A body stream that cannot be sent twice.
    pub one_shot_body: bool,
    /// HTTP method.
    pub method: String,
    /// `mode: "no-cors"`.
    pub no_cors: bool,
}

impl FakeRequest {
    /// A GET to `url`.
    pub fn get(url: &str) -> FakeRequest {
        FakeRequest {
            url: url.to_string(),
            headers: Rc::new(RefCell::new(Vec::new())),
            one_shot_body: false,
            method: "GET".into(),
            no_cors: false,
        }
    }

    /// A header, if set.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .borrow()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// The `Authorization` header, if set.
    pub fn authorization(&self) -> Option<String> {
        self.headers
            .borrow()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.clone())
    }
}

/// A fake response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeResponse {
    /// HTTP status.
    pub status: u16,
    /// Final URL.
    pub url: String,
    /// Response headers.
    pub headers: Vec<(String, String)>,
}

/// One tab's shell on a [`World`].
pub struct FakeShell {
    world: World,
    events: Rc<RefCell<Vec<Event>>>,
    on_wake: WakeHook,
    random: f64,
}

impl FakeShell {
    /// This tab's `random()` (0.5 unless set): tabs of a page each draw
    /// their own numbers, which a test of jitter between tabs sets apart.
    pub fn with_random(mut self, r: f64) -> Self {
        self.random = r;
        self
    }

    /// A handle on the events this tab emitted (kept after the shell moves
    /// into a driver).
    pub fn events(&self) -> Rc<RefCell<Vec<Event>>> {
        self.events.clone()
    }

    /// A handle to wake this tab's page (visibility, focus; `true`: online).
    pub fn waker(&self) -> WakeHook {
        self.on_wake.clone()
    }
}

async fn after(world: World, ms: i64) {
    let slot = Slot::new();
    let s = slot.clone();
    let key = world.add_timer(ms, Box::new(move || s.set(())));
    let _t = FakeTimer {
        world: Rc::downgrade(&world.state),
        key,
    };
    slot.wait().await
}

impl Shell for FakeShell {
    type Timer = FakeTimer;
    type Lock = FakeLock;
    type Channel = FakeChannel;
    type Hooks = ();
    type Request = FakeRequest;
    type Response = FakeResponse;
    type SendError = Error;
    type Key = FakeKey;

    fn now(&self) -> Stamp {
        self.world.stamp()
    }

    fn random(&self) -> f64 {
        self.random
    }

    fn online(&self) -> bool {
        self.world.state.borrow().online
    }

    fn timer(&self, ms: u32, f: Box<dyn FnOnce()>) -> FakeTimer {
        let key = self.world.add_timer(i64::from(ms), f);
        FakeTimer {
            world: Rc::downgrade(&self.world.state),
            key,
        }
    }

    fn spawn(&self, task: LocalFuture<()>) {
        self.world.spawn(task);
    }

    fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        timeout_ms: i64,
    ) -> LocalFuture<Result<Reply, Error>> {
        let world = self.world.clone();
        let url = url.to_string();
        let mut headers = headers.to_vec();
        if let Some(c) = world.state.borrow().cookie.clone() {
            headers.push((String::from("Cookie"), c));
        }
        world.state.borrow_mut().post_headers.push(headers.clone());
        Box::pin(async move {
            let base = world.state.borrow().latency_ms;
            let latency = base + world.draw();
            if latency > timeout_ms {
                after(world.clone(), timeout_ms).await;
                world.state.borrow_mut().posts.push(url);
                return Err(Error::Timeout);
            }
            after(world.clone(), latency).await;
            let mut endpoint = {
                let mut s = world.state.borrow_mut();
                s.posts.push(url.clone());
                std::mem::replace(&mut s.endpoint, Box::new(|_, _| Err(Error::Network)))
            };
            let reply = endpoint(&url, &headers);
            world.state.borrow_mut().endpoint = endpoint;
            reply
        })
    }

    fn lock(&self, name: &str, how: LockRequest) -> LocalFuture<Option<FakeLock>> {
        let world = self.world.clone();
        let name = name.to_string();
        Box::pin(async move {
            let (id, slot) = {
                let mut s = world.state.borrow_mut();
                s.seq += 1;
                let id = s.seq;
                let l = s.locks.entry(name.clone()).or_default();
                if l.holder.is_none() || how == LockRequest::Steal {
                    l.holder = Some(id);
                    return Some(FakeLock {
                        world: Rc::downgrade(&world.state),
                        ready: world.ready.clone(),
                        name: name.clone(),
                        id,
                    });
                }
                let slot = Slot::new();
                l.queue.push_back((id, slot.clone()));
                (id, slot)
            };
            let LockRequest::Wait(ms) = how else {
                return None;
            };
            let s = slot.clone();
            let w = world.clone();
            let n = name.clone();
            let key = world.add_timer(
                ms,
                Box::new(move || {
                    if let Some(l) = w.state.borrow_mut().locks.get_mut(&n) {
                        l.queue.retain(|(qid, _)| *qid != id);
                    }
                    s.set(false);
                }),
            );
            let _t = FakeTimer {
                world: Rc::downgrade(&world.state),
                key,
            };
            slot.wait().await.then(|| FakeLock {
                world: Rc::downgrade(&world.state),
                ready: world.ready.clone(),
                name,
                id,
            })
        })
    }

    fn join(
        &self,
        name: &str,
        on_message: Box<dyn FnMut(String, Option<FakeKey>)>,
    ) -> Option<FakeChannel> {
        let mut s = self.world.state.borrow_mut();
        s.seq += 1;
        let id = s.seq;
        s.channels
            .push((id, name.to_string(), Rc::new(RefCell::new(on_message))));
        Some(FakeChannel {
            world: Rc::downgrade(&self.world.state),
            id,
            name: name.to_string(),
        })
    }

    fn broadcast(&self, channel: &FakeChannel, text: &str, key: Option<&FakeKey>) {
        let targets: Vec<_> = self
            .world
            .state
            .borrow()
            .channels
            .iter()
            .filter(|(id, name, _)| *id != channel.id && *name == channel.name)
            .map(|(id, _, f)| (*id, Rc::downgrade(f)))
            .collect();
        for (_, f) in targets {
            let text = text.to_string();
            let key = key.cloned();
            // Delivered asynchronously, like a BroadcastChannel.
            let delay = self.world.draw_message();
            self.world.add_timer(
                delay,
                Box::new(move || {
                    if let Some(f) = f.upgrade() {
                        (f.borrow_mut())(text, key);
                    }
                }),
            );
        }
    }

    fn hooks(&self, on_wake: Rc<dyn Fn(bool)>) {
        *self.on_wake.borrow_mut() = Some(on_wake);
    }

    fn emit(&self, event: &Event) {
        self.events.borrow_mut().push(event.clone());
    }

    fn send(&self, request: &FakeRequest) -> LocalFuture<Result<FakeResponse, Error>> {
        let world = self.world.clone();
        let request = request.clone();
        Box::pin(async move {
            let base = world.state.borrow().latency_ms;
            let latency = base + world.draw();
            let left_at = world.now();
            after(world.clone(), latency).await;
            let mut api = {
                let mut s = world.state.borrow_mut();
                s.request_left_at = left_at;
                s.sent.push((request.url.clone(), request.authorization()));
                std::mem::replace(&mut s.api, Box::new(|_| (500, Vec::new())))
            };
            let (status, headers) = api(&request);
            world.state.borrow_mut().api = api;
            Ok(FakeResponse {
                status,
                url: request.url.clone(),
                headers,
            })
        })
    }

    fn url(&self, request: &FakeRequest) -> String {
        request.url.clone()
    }

    fn has_authorization(&self, request: &FakeRequest) -> bool {
        request.authorization().is_some()
    }

    fn no_cors(&self, request: &FakeRequest) -> bool {
        request.no_cors
    }

    fn set_authorization(&self, request: &FakeRequest, value: &str) {
        let mut h = request.headers.borrow_mut();
        h.retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
        h.push(("Authorization".into(), value.into()));
    }

    fn replayable(&self, request: &FakeRequest) -> Option<FakeRequest> {
        if request.one_shot_body {
            return None;
        }
        Some(FakeRequest {
            url: request.url.clone(),
            headers: Rc::new(RefCell::new(request.headers.borrow().clone())),
            one_shot_body: false,
            method: request.method.clone(),
            no_cors: request.no_cors,
        })
    }

    fn status(&self, response: &FakeResponse) -> u16 {
        response.status
    }

    fn response_url(&self, response: &FakeResponse) -> String {
        response.url.clone()
    }

    fn set_header(&self, request: &FakeRequest, name: &str, value: &str) {
        let mut h = request.headers.borrow_mut();
        h.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        h.push((name.into(), value.into()));
    }

    fn method(&self, request: &FakeRequest) -> String {
        request.method.clone()
    }

    fn response_header(&self, response: &FakeResponse, name: &str) -> Option<String> {
        response
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    fn make_key(&self) -> LocalFuture<Result<FakeKey, Error>> {
        let world = self.world.clone();
        Box::pin(async move {
            world.jittered().await;
            let id = {
                let mut s = world.state.borrow_mut();
                s.seq += 1;
                s.seq
            };
            world.state.borrow_mut().keys_made += 1;
            Ok(FakeKey { id })
        })
    }

    fn public_jwk(&self, key: &FakeKey) -> crate::policy::dpop::PublicJwk {
        key.jwk()
    }

    fn sign(&self, key: &FakeKey, input: &str) -> LocalFuture<Result<Vec<u8>, Error>> {
        let sig = fake_signature(key.id, input);
        let world = self.world.clone();
        Box::pin(async move {
            world.jittered().await;
            Ok(sig)
        })
    }

    fn sha256(&self, input: &str) -> LocalFuture<Result<Vec<u8>, Error>> {
        let d = fake_sha256(input);
        let world = self.world.clone();
        Box::pin(async move {
            world.jittered().await;
            Ok(d)
        })
    }

    fn unique_id(&self) -> String {
        let mut s = self.world.state.borrow_mut();
        s.seq += 1;
        format!("jti-{}", s.seq)
    }
}
