//! The browser shell: the only code that touches fetch, timers, locks,
//! channels and page events (`shell::BrowserShell` puts them behind the
//! `Shell` trait). It never decides policy.

#[allow(unused_imports)]
use crate::prelude::*;
pub mod crypto;
pub mod env;
pub mod events;
pub mod http;
pub mod options;
pub mod shell;
pub mod tabs;
pub mod task;
pub mod timer;

use js_sys::{Function, Reflect};
use wasm_bindgen::prelude::*;

use crate::error::Error;

/// A `static` cell of the wasm's one thread (the registered error class, the
/// executor's state). wasm32 here is single-threaded: the wrapper only tells
/// the compiler so.
pub(crate) struct Local<T>(pub(crate) core::cell::RefCell<T>);
// SAFETY: the release and test wasm are built without the atomics target
// feature, so the module runs on one thread and the cell is never shared.
unsafe impl<T> Sync for Local<T> {}

/// The registered `TokenClientError` class.
static ERROR_CLASS: Local<Option<Function>> = Local(core::cell::RefCell::new(None));

/// Registers the JS `TokenClientError` class (the npm entry does this once
/// after loading the wasm) so that errors are real instances of it.
#[wasm_bindgen(js_name = __setErrorClass)]
pub fn set_error_class(ctor: Function) {
    *ERROR_CLASS.0.borrow_mut() = Some(ctor);
}

fn set(obj: &JsValue, key: &str, value: &JsValue) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

/// The one conversion from `Error` to a JS `TokenClientError`.
pub fn js_error(e: &Error) -> JsValue {
    let message = JsValue::from_str(&e.message());
    let ctor = ERROR_CLASS.0.borrow().clone();
    let err: JsValue =
        match ctor.and_then(|c| Reflect::construct(&c, &js_sys::Array::of1(&message)).ok()) {
            Some(obj) => obj,
            None => {
                let obj: JsValue = js_sys::Error::new(&e.message()).into();
                set(&obj, "name", &JsValue::from_str("TokenClientError"));
                obj
            }
        };
    set(&err, "code", &JsValue::from_str(e.code()));
    if let Some(status) = e.status() {
        set(&err, "status", &JsValue::from(status));
    }
    if let Error::RefreshRejected {
        error: Some(code), ..
    } = e
    {
        set(&err, "error", &JsValue::from_str(code));
    }
    err
}

impl From<Error> for JsValue {
    fn from(e: Error) -> JsValue {
        js_error(&e)
    }
}
