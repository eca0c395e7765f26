//! Page-lifecycle listeners that remove themselves on drop, and the
//! subscriber list with its fan-out.

#[allow(unused_imports)]
use crate::prelude::*;
use core::cell::RefCell;

use js_sys::{Function, Object, Reflect};
use wasm_bindgen::prelude::*;
use web_sys::EventTarget;

use super::env::global;

/// An event listener that is removed when dropped.
pub struct Listener {
    target: EventTarget,
    kind: &'static str,
    callback: Closure<dyn FnMut(JsValue)>,
}

impl Listener {
    fn on(
        target: EventTarget,
        kind: &'static str,
        f: impl FnMut(JsValue) + 'static,
    ) -> Option<Listener> {
        let callback = Closure::<dyn FnMut(JsValue)>::new(f);
        target
            .add_event_listener_with_callback(kind, callback.as_ref().unchecked_ref())
            .ok()?;
        Some(Listener {
            target,
            kind,
            callback,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self
            .target
            .remove_event_listener_with_callback(self.kind, self.callback.as_ref().unchecked_ref());
    }
}

/// Listens for the moments a sleeping or hidden page comes back:
/// `visibilitychange` (to visible), `focus`, `online`, `pageshow`.
/// `on_wake(is_online_event)` runs for each.
pub fn page_lifecycle(on_wake: impl Fn(bool) + Clone + 'static) -> Vec<Listener> {
    let mut out = Vec::new();
    let window = global("window").map(|w| w.unchecked_into::<EventTarget>());
    let document = global("document");
    if let Some(doc) = document.clone() {
        let f = on_wake.clone();
        let d = doc.clone();
        out.extend(Listener::on(
            doc.unchecked_into(),
            "visibilitychange",
            move |_| {
                let state = Reflect::get(&d, &JsValue::from_str("visibilityState"))
                    .ok()
                    .and_then(|v| v.as_string());
                if state.as_deref() != Some("hidden") {
                    f(false);
                }
            },
        ));
    }
    if let Some(w) = window {
        for kind in ["focus", "online", "pageshow"] {
            let f = on_wake.clone();
            out.extend(Listener::on(w.clone(), kind, move |_| f(kind == "online")));
        }
    }
    out
}

/// Subscribers. Delivery copies the list first, so a listener may
/// subscribe, unsubscribe or call the client while being called.
#[derive(Default)]
pub struct Subscribers {
    next_id: core::cell::Cell<u32>,
    list: RefCell<Vec<(u32, Function)>>,
}

impl Subscribers {
    /// Adds a listener; returns its id for `remove`.
    pub fn add(&self, f: Function) -> u32 {
        let id = self.next_id.get().wrapping_add(1);
        self.next_id.set(id);
        self.list.borrow_mut().push((id, f));
        id
    }

    /// Removes a listener (idempotent).
    pub fn remove(&self, id: u32) {
        self.list.borrow_mut().retain(|(i, _)| *i != id);
    }

    /// Drops every listener.
    pub fn clear(&self) {
        self.list.borrow_mut().clear();
    }

    /// Calls every listener with `event`; one that throws is reported to
    /// the console and does not stop the others.
    pub fn emit(&self, event: &Object) {
        let listeners: Vec<Function> = self.list.borrow().iter().map(|(_, f)| f.clone()).collect();
        for f in listeners {
            if let Err(e) = f.call1(&JsValue::UNDEFINED, event) {
                web_sys::console::error_2(
                    &JsValue::from_str("tokenwarden: a subscriber threw"),
                    &e,
                );
            }
        }
    }
}
