//! Cross-tab plumbing: a `BroadcastChannel` that closes on drop, and a
//! Web Lock held by a guard that releases on drop. Which message wins and
//! when to adopt is decided in `policy::tabsync` (also when to steal the lock); this file
//! only moves bytes.

use super::task::JsPromise;
#[allow(unused_imports)]
use crate::prelude::*;
use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use web_sys::{BroadcastChannel, MessageEvent};

use super::crypto::{message_with_key, read_message, Key};
use super::env::global;
use crate::policy::schedule::timer_delay;
use crate::policy::tabsync::LockRequest;

/// A joined channel; leaving it (drop) closes it and frees the callback.
pub struct Channel {
    bc: BroadcastChannel,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

impl Channel {
    /// Joins `name`, delivering string messages to `on_text`. `None` where
    /// `BroadcastChannel` is missing: the client then works within its tab.
    pub fn join(
        name: &str,
        mut on_text: impl FnMut(String, Option<Key>) + 'static,
    ) -> Option<Channel> {
        global("BroadcastChannel")?;
        let bc = BroadcastChannel::new(name).ok()?;
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            if let Some((text, key)) = read_message(&ev.data()) {
                on_text(text, key);
            }
        });
        bc.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        Some(Channel {
            bc,
            _on_message: on_message,
        })
    }

    /// Sends to every other tab on the channel.
    pub fn post(&self, text: &str, key: Option<&Key>) {
        let message = match key {
            Some(k) => message_with_key(text, k),
            None => JsValue::from_str(text),
        };
        let _ = self.bc.post_message(&message);
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.bc.set_onmessage(None);
        self.bc.close();
    }
}

#[wasm_bindgen]
extern "C" {
    type LockManager;
    #[wasm_bindgen(method, js_name = request)]
    fn request(this: &LockManager, name: &str, options: &Object, callback: &Function) -> Promise;
    #[wasm_bindgen(js_namespace = AbortSignal, js_name = timeout)]
    fn abort_signal_timeout(ms: u32) -> JsValue;
}

/// A held Web Lock; dropping it releases the lock.
pub struct LockGuard {
    release: Function,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = self.release.call0(&JsValue::UNDEFINED);
    }
}

fn lock_manager() -> Option<LockManager> {
    let navigator = global("navigator")?;
    let locks = Reflect::get(&navigator, &JsValue::from_str("locks")).ok()?;
    if locks.is_undefined() || locks.is_null() {
        None
    } else {
        Some(locks.unchecked_into())
    }
}

async fn request_once(locks: &LockManager, name: &str, wait_ms: Option<u32>) -> Option<LockGuard> {
    let mut release = None;
    let held = Promise::new(&mut |resolve, _| release = Some(resolve));
    let mut grant = None;
    let granted = Promise::new(&mut |resolve, _| grant = Some(resolve));
    let (release, grant) = (release?, grant?);
    let callback = Closure::once_into_js(move |_lock: JsValue| -> JsValue {
        let _ = grant.call1(&JsValue::UNDEFINED, &JsValue::TRUE);
        held.into()
    });
    let options = Object::new();
    match wait_ms {
        Some(ms) => {
            let _ = Reflect::set(
                &options,
                &JsValue::from_str("signal"),
                &abort_signal_timeout(ms),
            );
        }
        None => {
            // The holder outlived the time limit: it is frozen or hung.
            let _ = Reflect::set(&options, &JsValue::from_str("steal"), &JsValue::TRUE);
        }
    }
    let pending = locks.request(name, &options, callback.unchecked_ref());
    // `pending` rejects if the wait is aborted (or the lock is later stolen
    // from us); racing it with `granted` also keeps that rejection handled.
    let race = Promise::race(&Array::of2(&granted, &pending));
    match JsPromise::from(race).await {
        Ok(v) if v.is_truthy() => Some(LockGuard { release }),
        _ => {
            let _ = release.call0(&JsValue::UNDEFINED);
            None
        }
    }
}

/// Asks for the lock `name` as the policy says (`tabsync::next_lock_request`):
/// wait at most some time, or steal. `None` without Web Locks.
pub async fn request(name: &str, how: LockRequest) -> Option<LockGuard> {
    let locks = lock_manager()?;
    let wait = match how {
        LockRequest::Wait(ms) => Some(timer_delay(ms)),
        LockRequest::Steal => None,
    };
    request_once(&locks, name, wait).await
}
