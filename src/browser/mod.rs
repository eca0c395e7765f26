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

use js_sys::Function;
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

#[wasm_bindgen(module = "/js/shell.js")]
extern "C" {
    #[wasm_bindgen(js_name = error)]
    fn js_new_error(
        class: &JsValue,
        message: &str,
        code: &str,
        status: u16,
        oauth: &str,
    ) -> JsValue;
}

/// The one conversion from `Error` to a JS `TokenClientError` (made by
/// js/shell.js's `error`).
pub fn js_error(e: &Error) -> JsValue {
    let class = ERROR_CLASS.0.borrow().clone();
    let oauth = match e {
        Error::RefreshRejected {
            error: Some(code), ..
        } => code.as_str(),
        _ => "",
    };
    // 0 and "": none (no HTTP status is 0; an OAuth error code is never empty).
    js_new_error(
        class.as_ref().map_or(&JsValue::UNDEFINED, |c| c),
        &e.message(),
        e.code(),
        e.status().unwrap_or(0),
        oauth,
    )
}

impl From<Error> for JsValue {
    fn from(e: Error) -> JsValue {
        js_error(&e)
    }
}
