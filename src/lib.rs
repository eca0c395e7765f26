//! tokenwarden: an in-memory access-token manager for browser apps.
//!
//! `core` holds every rule (pure Rust, tested natively); `browser` is the
//! thin shell that touches fetch, timers, locks and channels; `client` is
//! the `#[wasm_bindgen]` facade JS sees.
#![deny(missing_docs)]
#![cfg_attr(feature = "tiny", no_std)]

extern crate alloc;

/// The `alloc` items the crate uses, so that it builds with and without std.
pub(crate) mod prelude {
    pub use alloc::string::String;
    pub use alloc::vec;
    pub use alloc::vec::Vec;
}

/// Release builds (`--features tiny`): no std, a trap on panic (no message
/// formatting), dlmalloc as the global allocator.
#[cfg(all(feature = "tiny", target_arch = "wasm32"))]
mod tiny {
    #[global_allocator]
    static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo) -> ! {
        core::arch::wasm32::unreachable()
    }
}

pub mod core;
pub mod error;

#[cfg(target_arch = "wasm32")]
pub mod browser;
#[cfg(target_arch = "wasm32")]
pub mod client;
