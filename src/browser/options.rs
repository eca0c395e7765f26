//! Options from JS to the policy: a strict walk of the JS value into JSON
//! text (no `JSON.stringify` round trip, which turns `NaN`/`Infinity` into
//! `null`, drops functions and misreports a nested BigInt). Anything that is
//! not JSON data (a `URL` counts as its href) is `invalid_options` naming the
//! option's path.

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::borrow::Cow;

use js_sys::{Array, Object, Reflect, JSON};
use wasm_bindgen::prelude::*;

use crate::error::Error;

const MAX_DEPTH: u32 = 8;

fn bad(path: &str, why: &str) -> Error {
    let mut m = String::with_capacity(path.len() + why.len() + 1);
    m.push_str(if path.is_empty() { "options" } else { path });
    m.push(' ');
    m.push_str(why);
    Error::InvalidOptions(Cow::Owned(m))
}

fn is_plain_object(v: &JsValue) -> bool {
    if !v.is_object() || v.is_function() || Array::is_array(v) {
        return false;
    }
    let proto = Object::get_prototype_of(v);
    proto.is_null()
        || JsValue::from(proto) == JsValue::from(Object::get_prototype_of(&Object::new()))
}

/// The options object as JSON text, or `invalid_options` naming the path
/// of the first value that is not JSON data.
pub fn to_json(options: &JsValue) -> Result<String, Error> {
    if !is_plain_object(options) {
        return Err(bad("", "must be a plain object"));
    }
    let mut out = String::new();
    walk(options, &mut String::new(), &mut out, 0)?;
    Ok(out)
}

fn push_json(out: &mut String, v: &JsValue) {
    if let Some(s) = JSON::stringify(v).ok().and_then(|s| s.as_string()) {
        out.push_str(&s);
    }
}

fn walk(v: &JsValue, path: &mut String, out: &mut String, depth: u32) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(bad(path, "is nested too deeply"));
    }
    if v.is_null() {
        out.push_str("null");
    } else if let Some(b) = v.as_bool() {
        out.push_str(if b { "true" } else { "false" });
    } else if let Some(n) = v.as_f64() {
        if !n.is_finite() {
            return Err(bad(path, "must be a finite number"));
        }
        push_json(out, v);
    } else if v.is_string() {
        push_json(out, v);
    } else if let Some(url) = v.dyn_ref::<web_sys::Url>() {
        // A `URL` counts as its href: index.d.ts types the URL options
        // `string | URL`, and the React provider compares them so.
        push_json(out, &JsValue::from(url.href()));
    } else if Array::is_array(v) {
        out.push('[');
        let items: Array = v.clone().unchecked_into();
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let len = path.len();
            path.push('[');
            crate::error::push_u64(path, i as u64);
            path.push(']');
            walk(&item, path, out, depth + 1)?;
            path.truncate(len);
        }
        out.push(']');
    } else if is_plain_object(v) {
        out.push('{');
        let mut first = true;
        for key in Object::keys(v.unchecked_ref::<Object>()).iter() {
            let value = Reflect::get(v, &key).map_err(|_| bad(path, "cannot be read"))?;
            if value.is_undefined() {
                continue; // an option set to `undefined` is an option not given
            }
            if !first {
                out.push(',');
            }
            first = false;
            push_json(out, &key);
            out.push(':');
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&key.as_string().unwrap_or_default());
            walk(&value, path, out, depth + 1)?;
            path.truncate(len);
        }
        out.push('}');
    } else {
        // undefined in an array, a function, a symbol, a BigInt, a Date…
        return Err(bad(path, "has an unsupported type (JSON data only)"));
    }
    Ok(())
}
