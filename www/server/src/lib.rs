//! Reference backend for tokenwarden: login, rotating HttpOnly refresh cookie, ES256 access
//! tokens, a protected `/api/me`, static files for the demo, and a test mode for browser tests.
//!
//! [`app`] builds the whole [`Router`] from an [`AppState`], so tests drive it with
//! `tower::ServiceExt::oneshot` without a socket. See `README.md` for flags and the test API.
#![deny(missing_docs)]

pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod keys;
pub mod logging;
pub mod routes;
pub mod session;
pub mod sqlite;
pub mod state;
pub mod store;
pub mod testing;
pub mod tls;
pub mod tokens;

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower::ServiceExt as _;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeader;

pub use auth::REFRESH_COOKIE;
pub use config::Config;
pub use state::AppState;

/// Why the server could not start.
#[derive(Debug)]
pub struct StartupError(pub String);

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartupError {}

/// Build the state for `config`: load or generate the signing key, open the store.
pub fn build_state(config: &Config) -> Result<AppState, StartupError> {
    let keys = match &config.signing_key_file {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                StartupError(format!("cannot read signing key {}: {e}", path.display()))
            })?;
            keys::KeySet::from_pem(&pem)
                .map_err(|e| StartupError(format!("{}: {e}", path.display())))?
        }
        None => keys::KeySet::generate(),
    };
    let store: Box<dyn store::RefreshStore> = if config.memory_store {
        Box::new(store::MemoryStore::new())
    } else {
        let store =
            sqlite::SqliteStore::open(&config.data_dir).map_err(|e| StartupError(e.to_string()))?;
        tracing::info!(path = %store.path().display(), "refresh tokens stored in SQLite");
        Box::new(store)
    };
    Ok(AppState::new(
        config,
        keys,
        store,
        Arc::new(clock::SystemClock),
    ))
}

/// The whole application.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/auth/login", post(routes::login))
        .route("/auth/refresh", post(routes::refresh))
        .route("/auth/logout", post(routes::logout))
        .route("/.well-known/jwks.json", get(routes::jwks))
        .route("/api/me", get(routes::me));
    if state.settings.test_mode {
        router = router.nest("/test", testing::router());
    }
    let pkg = ServeDir::new(&state.settings.pkg_dir);
    router = if state.settings.test_mode {
        router.nest_service(
            "/pkg",
            SetResponseHeader::overriding(
                pkg,
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            ),
        )
    } else {
        router.nest_service("/pkg", pkg)
    };
    router
        .fallback(static_www)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            logging::log_requests,
        ))
        .with_state(state)
}

/// Serve the `www/` directory, except the server's own sources and data under `/server`.
/// Anything that is not a GET/HEAD of a file is 404 (so `/test/*` is 404 outside test mode).
async fn static_www(State(state): State<AppState>, request: Request) -> Response {
    let readable = matches!(*request.method(), Method::GET | Method::HEAD);
    if !readable || is_server_path(request.uri().path()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let served: Result<_, Infallible> = ServeDir::new(&state.settings.www_dir)
        .oneshot(request)
        .await;
    match served {
        Ok(response) => response.into_response(),
        Err(never) => match never {},
    }
}

/// Whether `path` (after percent-decoding and dropping `.`/empty segments) is under `/server`.
fn is_server_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                decoded.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&decoded);
    decoded
        .split(['/', '\\'])
        .find(|segment| !segment.is_empty() && *segment != ".")
        .is_some_and(|first| first.eq_ignore_ascii_case("server"))
}

#[cfg(test)]
mod tests {
    use super::is_server_path;

    #[test]
    fn server_sources_are_recognised_however_the_path_is_spelled() {
        for p in [
            "/server",
            "/server/Cargo.toml",
            "/./server/src/lib.rs",
            "//%73erver/data/x",
            "/SERVER/",
        ] {
            assert!(is_server_path(p), "{p}");
        }
        for p in ["/", "/index.html", "/servers.html", "/pkg/server"] {
            assert!(!is_server_path(p), "{p}");
        }
    }
}
