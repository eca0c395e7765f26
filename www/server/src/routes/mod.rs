//! Thin HTTP handlers: `auth` (login, refresh, logout), `api` (me, JWKS), `ops` (healthz,
//! readyz, metrics), and `upstream` (login, callback, refresh, logout, me in upstream mode).

pub mod api;
pub mod auth;
pub mod ops;
pub mod upstream;
