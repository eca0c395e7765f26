//! tokenwarden: an in-memory access-token manager for browser apps.
//!
//! `core` holds every rule (pure Rust, tested natively); `browser` is the
//! thin shell that touches fetch, timers, locks and channels; `client` is
//! the `#[wasm_bindgen]` facade JS sees.
#![deny(missing_docs)]

pub mod core;
pub mod error;

#[cfg(target_arch = "wasm32")]
pub mod browser;
#[cfg(target_arch = "wasm32")]
pub mod client;
