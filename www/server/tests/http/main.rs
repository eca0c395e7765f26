//! The reference server through its router (`app()` + `oneshot`, in-memory store, manual clock).

mod access_tokens;
mod common;
mod dpop;
mod hardening;
mod ops;
mod sessions;
mod test_mode;
