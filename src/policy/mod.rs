//! The policy: no web-sys, no I/O, no clock of its own. Every rule of the
//! token lifecycle lives here and is tested natively; `machine` is the one
//! state machine the driver feeds.

pub mod clock;
pub mod dpop;
pub mod json;
pub mod jwt;
pub mod lifetime;
pub mod machine;
pub mod options;
pub mod origin;
pub mod response;
pub mod schedule;
pub mod session;
pub mod tabsync;
pub mod token;
