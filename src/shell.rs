//! The shell trait: what the driver needs from the world — a clock, timers,
//! the network, the cross-tab lock and channel, page wake-ups and event
//! delivery — and nothing else. `browser::BrowserShell` performs it in a
//! page; `fake::FakeShell` with a virtual clock in native tests.
//!
//! Every resource is a value that releases itself on drop (a timer cancels,
//! a lock is released, a channel is left, listeners are removed).
//!
//! DPoP (RFC 9449): the shell makes a non-extractable key, signs and hashes
//! bytes, and carries the key to other tabs with a channel message; what to
//! sign, when, and which key wins is decided by `policy::dpop` and the
//! machine.

use alloc::boxed::Box;
use alloc::rc::Rc;
use core::cell::RefCell;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use crate::error::Error;
use crate::policy::clock::Stamp;
use crate::policy::machine::Event;
use crate::policy::response::Reply;
use crate::policy::tabsync::LockRequest;
#[allow(unused_imports)]
use crate::prelude::*;

/// A boxed future on one thread.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// See the module docs.
pub trait Shell: 'static {
    /// A pending timer; cancelled on drop.
    type Timer;
    /// The held refresh lock; released on drop.
    type Lock: 'static;
    /// Membership of the cross-tab channel; left on drop.
    type Channel;
    /// Page wake-up listeners; removed on drop.
    type Hooks;
    /// An app request (`client.fetch`).
    type Request: 'static;
    /// Its response.
    type Response: 'static;
    /// Why an app request got no response (passed to the caller as is).
    type SendError: 'static;
    /// A DPoP key pair whose private half cannot be exported (a WebCrypto
    /// `CryptoKey`); cloning shares the same key.
    type Key: Clone + 'static;

    /// Both clocks now.
    fn now(&self) -> Stamp;
    /// A number in [0, 1) for jitter.
    fn random(&self) -> f64;
    /// Whether the browser says it has a network (`navigator.onLine`; true
    /// where it cannot tell).
    fn online(&self) -> bool;
    /// Calls `f` once after `ms`.
    fn timer(&self, ms: u32, f: Box<dyn FnOnce()>) -> Self::Timer;
    /// Runs `task` to completion in the background.
    fn spawn(&self, task: LocalFuture<()>);

    /// POSTs to the refresh or logout endpoint with credentials and
    /// `headers`, aborting after `timeout_ms` (`Error::Timeout`).
    fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        timeout_ms: i64,
    ) -> LocalFuture<Result<Reply, Error>>;

    /// Asks for the refresh lock `name`; `None` when it was not granted
    /// (the wait timed out, or the host has no locks).
    fn lock(&self, name: &str, how: LockRequest) -> LocalFuture<Option<Self::Lock>>;

    /// Joins the cross-tab channel `name` (`None` where there is none). A
    /// message may carry a DPoP key along with its text.
    fn join(
        &self,
        name: &str,
        on_message: Box<dyn FnMut(String, Option<Self::Key>)>,
    ) -> Option<Self::Channel>;
    /// Posts `text` (and `key`, structured-cloned) to the other tabs.
    fn broadcast(&self, channel: &Self::Channel, text: &str, key: Option<&Self::Key>);

    /// Makes a new non-extractable ECDSA P-256 key pair.
    fn make_key(&self) -> LocalFuture<Result<Self::Key, Error>>;
    /// The public half of `key` (JWK `x`, `y`).
    fn public_jwk(&self, key: &Self::Key) -> crate::policy::dpop::PublicJwk;
    /// ES256 signature (raw r || s) of `input` with `key`.
    fn sign(&self, key: &Self::Key, input: &str) -> LocalFuture<Result<Vec<u8>, Error>>;
    /// SHA-256 of `input`.
    fn sha256(&self, input: &str) -> LocalFuture<Result<Vec<u8>, Error>>;
    /// A unique id for a proof's `jti` (at least 96 random bits).
    fn unique_id(&self) -> String;

    /// Listens for page wake-ups; `on_wake(true)` when the network came back.
    fn hooks(&self, on_wake: Rc<dyn Fn(bool)>) -> Self::Hooks;

    /// Delivers an event to the subscribers.
    fn emit(&self, event: &Event);

    /// Sends an app request.
    fn send(&self, request: &Self::Request)
        -> LocalFuture<Result<Self::Response, Self::SendError>>;
    /// The request's absolute URL.
    fn url(&self, request: &Self::Request) -> String;
    /// Whether the caller set an `Authorization` header itself.
    fn has_authorization(&self, request: &Self::Request) -> bool;
    /// Whether the request is `mode: "no-cors"`: the browser drops an `Authorization`
    /// header from it, so it never carries our token.
    fn no_cors(&self, request: &Self::Request) -> bool;
    /// Sets the `Authorization` header.
    fn set_authorization(&self, request: &Self::Request, value: &str);
    /// Sets the header `name` (replacing it).
    fn set_header(&self, request: &Self::Request, name: &str, value: &str);
    /// The request's method, upper case.
    fn method(&self, request: &Self::Request) -> String;
    /// A response header.
    fn response_header(&self, response: &Self::Response, name: &str) -> Option<String>;
    /// A copy to send again after a 401, if the request can be replayed.
    fn replayable(&self, request: &Self::Request) -> Option<Self::Request>;
    /// The response's HTTP status.
    fn status(&self, response: &Self::Response) -> u16;
    /// The response's final URL (after redirects; empty when unknown).
    fn response_url(&self, response: &Self::Response) -> String;
}

/// A value set once and awaited by any number of tasks.
pub struct Slot<T>(Rc<RefCell<SlotState<T>>>);

struct SlotState<T> {
    value: Option<T>,
    wakers: Vec<Waker>,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        Slot(self.0.clone())
    }
}

impl<T: Clone> Default for Slot<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> Slot<T> {
    /// An empty slot.
    pub fn new() -> Self {
        Slot(Rc::new(RefCell::new(SlotState {
            value: None,
            wakers: Vec::new(),
        })))
    }

    /// Sets the value (the first one wins) and wakes the waiters.
    pub fn set(&self, value: T) {
        let wakers = {
            let mut s = self.0.borrow_mut();
            if s.value.is_some() {
                return;
            }
            s.value = Some(value);
            core::mem::take(&mut s.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// The value, if set (tests look without waiting).
    pub fn peek(&self) -> Option<T> {
        self.0.borrow().value.clone()
    }

    /// Resolves with the value once set.
    pub fn wait(&self) -> SlotWait<T> {
        SlotWait(self.clone())
    }
}

/// The future of [`Slot::wait`].
pub struct SlotWait<T>(Slot<T>);

impl<T: Clone> Future for SlotWait<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = (self.0).0.borrow_mut();
        match &s.value {
            Some(v) => Poll::Ready(v.clone()),
            None => {
                if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    s.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// Waits `ms` on the shell's timers.
pub async fn sleep<S: Shell>(shell: &S, ms: u32) {
    let slot = Slot::new();
    let s = slot.clone();
    let _timer = shell.timer(ms, Box::new(move || s.set(())));
    slot.wait().await
}
