//! Thin HTTP handlers: `auth` (login, refresh, logout), `api` (me, JWKS), `ops` (healthz,
//! readyz, metrics).

pub mod api;
pub mod auth;
pub mod ops;
