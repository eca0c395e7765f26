//! Cross-tab plumbing (performed by js/shell.js): a `BroadcastChannel` that
//! closes on drop, and a Web Lock held by a guard that releases on drop.
//! Which message wins and when to adopt is decided in `policy::tabsync`
//! (also when to steal the lock); this file only moves bytes.

use core::future::Future;

use super::task::JsPromise;
#[allow(unused_imports)]
use crate::prelude::*;
use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;

use super::crypto::{message_with_key, read_message, Key};
use crate::policy::schedule::timer_delay;
use crate::policy::tabsync::LockRequest;

#[wasm_bindgen(module = "/js/shell.js")]
extern "C" {
    #[wasm_bindgen(js_name = join)]
    fn js_join(name: &str, on_message: &JsValue) -> JsValue;
    #[wasm_bindgen(js_name = tell)]
    fn js_tell(channel: &JsValue, message: &JsValue);
    #[wasm_bindgen(js_name = leave)]
    fn js_leave(channel: &JsValue);
}

/// A joined channel; leaving it (drop) closes it and frees the callback.
pub struct Channel {
    bc: JsValue,
    _on_message: Closure<dyn FnMut(JsValue)>,
}

impl Channel {
    /// Joins `name`, delivering string messages to `on_text`. `None` where
    /// `BroadcastChannel` is missing: the client then works within its tab.
    pub fn join(
        name: &str,
        mut on_text: impl FnMut(String, Option<Key>) + 'static,
    ) -> Option<Channel> {
        let on_message = Closure::<dyn FnMut(JsValue)>::new(move |data: JsValue| {
            if let Some((text, key)) = read_message(&data) {
                on_text(text, key);
            }
        });
        let bc = js_join(name, on_message.as_ref());
        if bc.is_null() {
            // Not `then_some`: it builds the `Channel` first, and dropping it
            // leaves a null channel (a TypeError out of the constructor).
            return None;
        }
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
        js_tell(&self.bc, &message);
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        js_leave(&self.bc);
    }
}

#[wasm_bindgen(module = "/js/shell.js")]
extern "C" {
    /// js/shell.js: the release function of the granted lock, or `null`.
    #[wasm_bindgen(js_name = lock)]
    fn js_lock(name: &str, wait: i32) -> Promise;
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

/// Asks for the lock `name` as the policy says (`tabsync::next_lock_request`):
/// wait at most some time, or steal (the holder outlived the time limit: it
/// is frozen or hung). `None` without Web Locks, or when not granted.
/// The request is made now; the future only awaits the answer.
pub fn request(name: &str, how: LockRequest) -> impl Future<Output = Option<LockGuard>> {
    let wait = match how {
        LockRequest::Wait(ms) => timer_delay(ms) as i32,
        LockRequest::Steal => -1,
    };
    let pending = JsPromise::from(js_lock(name, wait));
    async move {
        let release = pending.await.ok()?;
        release
            .dyn_into::<Function>()
            .ok()
            .map(|release| LockGuard { release })
    }
}
