//! tokenwarden: an in-memory access-token manager for browser apps.
//!
//! `policy` holds every rule (pure Rust, tested natively) and the one state
//! machine; `driver` runs that machine through a `shell::Shell`;
//! `browser` is the shell of a page, `fake` (native only) the shell with a
//! virtual clock; `client` is the `#[wasm_bindgen]` facade JS sees.
#![deny(missing_docs)]
#![cfg_attr(feature = "tiny", no_std)]

extern crate alloc;

/// The `alloc` items the crate uses, so that it builds with and without std.
pub(crate) mod prelude {
    pub use alloc::string::String;
    pub use alloc::vec;
    pub use alloc::vec::Vec;
}

/// Release builds (`--features tiny`): no std, a trap on panic, lol_alloc.
#[cfg(all(feature = "tiny", target_arch = "wasm32"))]
mod tiny;

pub mod driver;
pub mod error;
pub mod policy;
pub mod shell;

#[cfg(target_arch = "wasm32")]
pub mod browser;
#[cfg(target_arch = "wasm32")]
pub mod client;
#[cfg(not(target_arch = "wasm32"))]
pub mod fake;
