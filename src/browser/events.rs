//! Page-lifecycle listeners that remove themselves on drop, and the
//! subscriber list with its fan-out (both performed by js/shell.js).

#[allow(unused_imports)]
use crate::prelude::*;
use js_sys::Function;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(module = "/js/shell.js")]
extern "C" {
    /// js/shell.js: listens for wake-ups; returns the function that stops.
    #[wasm_bindgen(js_name = wake)]
    fn js_wake(on_wake: &JsValue) -> Function;
}

/// Page-lifecycle listeners; removed when dropped.
pub struct Hooks {
    stop: Function,
    _on_wake: Closure<dyn FnMut(bool)>,
}

impl Drop for Hooks {
    fn drop(&mut self) {
        let _ = self.stop.call0(&JsValue::UNDEFINED);
    }
}

/// Listens for the moments a sleeping or hidden page comes back:
/// `visibilitychange` (to visible), `focus`, `online`, `pageshow`.
/// `on_wake(is_online_event)` runs for each.
pub fn page_lifecycle(on_wake: impl Fn(bool) + 'static) -> Hooks {
    let on_wake = Closure::<dyn FnMut(bool)>::new(on_wake);
    Hooks {
        stop: js_wake(on_wake.as_ref()),
        _on_wake: on_wake,
    }
}

/// Subscribers: a JS `Set` that js/shell.js adds to, removes from and
/// tells events to.
pub struct Subscribers(JsValue);

#[wasm_bindgen(module = "/js/shell.js")]
extern "C" {
    #[wasm_bindgen(js_name = subscribe)]
    fn js_subscribe(listeners: &JsValue, f: &Function) -> Function;
    #[wasm_bindgen(js_name = emit)]
    fn js_emit(listeners: &JsValue, kind: &str, a: &JsValue, b: &JsValue);
}

impl Default for Subscribers {
    fn default() -> Self {
        Subscribers(js_sys::Set::new(&JsValue::UNDEFINED).into())
    }
}

impl Subscribers {
    /// Adds a listener; returns the function that removes it.
    pub fn add(&self, f: &Function) -> Function {
        js_subscribe(&self.0, f)
    }

    /// Drops every listener.
    pub fn clear(&self) {
        self.0.unchecked_ref::<js_sys::Set>().clear();
    }

    /// Tells every listener of the event `kind` with its values `a` and `b`
    /// (js/shell.js names them); a listener that throws is reported to the
    /// console and does not stop the others.
    pub fn emit(&self, kind: &str, a: &JsValue, b: &JsValue) {
        js_emit(&self.0, kind, a, b);
    }
}
