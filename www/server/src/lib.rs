//! Reference backend for tokenwarden: login, rotating HttpOnly refresh cookie, ES256 access
//! tokens, a protected `/api/me`, operations endpoints, static files for the demo, and a
//! test mode for browser tests. In upstream mode ([`upstream`]) it is a token-mediating
//! backend in front of an OpenID Provider instead.
//!
//! [`app`] builds the whole [`Router`] from an [`AppState`], so tests drive it with
//! `tower::ServiceExt::oneshot` without a socket; [`serve::serve`] puts it on a socket with
//! timeouts and a connection cap. See `README.md` for flags and the test API.
#![deny(missing_docs)]

pub mod clock;
pub mod config;
pub mod dpop;
pub mod error;
pub mod extract;
pub mod keys;
pub mod limiter;
pub mod logging;
pub mod metrics;
pub mod revoked;
pub mod routes;
pub mod serve;
pub mod session;
pub mod shared;
pub mod state;
pub mod store;
pub mod testing;
pub mod tls;
pub mod tokens;
pub mod upstream;

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower::ServiceExt as _;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

pub use config::Config;
pub use extract::REFRESH_COOKIE;
pub use state::AppState;

/// The Content-Security-Policy of every response. The demo page loads its script, style,
/// icon and wasm from its own origin and has no inline script or style; the wasm needs
/// `'wasm-unsafe-eval'` (not `'unsafe-eval'`); nothing may frame it.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
style-src 'self'; img-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// The security headers of every response: [`app`]'s layers add them where a handler did
/// not, and the connection's backstop 503 ([`serve`], which answers when the app did not)
/// carries them itself.
pub const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
];

/// Why the server could not start.
#[derive(Debug)]
pub struct StartupError(pub String);

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartupError {}

/// Build the state for `config`: load or generate the signing key, open the store (with
/// PostgreSQL: connect, migrate, and load the shared signing keys).
pub async fn build_state(config: &Config) -> Result<AppState, StartupError> {
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
    let call_timeout = config.store_call_timeout();
    let store: Arc<dyn store::RefreshStore> = if let Some(url) = &config.database_url {
        let store =
            store::PgStore::connect_with(url, None, config.db_pool_size as usize, call_timeout)
                .await
                .map_err(|e| StartupError(store::with_pg_target(&e, url)))?;
        tracing::info!("refresh tokens stored in PostgreSQL");
        Arc::new(store)
    } else if config.memory_store {
        Arc::new(store::MemoryStore::new())
    } else {
        let store = store::SqliteStore::open_with(&config.data_dir, call_timeout)
            .map_err(|e| StartupError(e.to_string()))?;
        tracing::info!(path = %store.path().display(), "refresh tokens stored in SQLite");
        Arc::new(store)
    };
    let state = AppState::new(config, keys, store, Arc::new(clock::SystemClock));
    if shared::init_keys(&state)
        .await
        .map_err(|e| StartupError(format!("cannot load the shared signing keys: {e:?}")))?
    {
        tracing::info!("signing keys shared through PostgreSQL");
    }
    shared::init_nonce_key(&state)
        .await
        .map_err(|e| StartupError(format!("cannot load the DPoP nonce key: {e:?}")))?;
    Ok(state)
}

/// The whole application.
pub fn app(state: AppState) -> Router {
    // Upstream mode replaces the /auth/* and /api/me handlers.
    let router = match state.upstream.get() {
        Some(_) => routes::upstream::router(),
        None => Router::new()
            .route("/auth/login", post(routes::auth::login))
            .route("/auth/refresh", post(routes::auth::refresh))
            .route("/auth/logout", post(routes::auth::logout))
            .route("/api/me", get(routes::api::me)),
    };
    let mut router = router
        .route("/.well-known/jwks.json", get(routes::api::jwks))
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .nest_service("/pkg", ServeDir::new(&state.settings.pkg_dir))
        .fallback(static_www);
    if state.settings.test_mode {
        router = testing::install(router, &state);
    }
    let mut router = router
        // Innermost: the 500 gets the headers below and is logged and counted.
        .layer(CatchPanicLayer::custom(handler_panicked))
        // The request timeout: inside the security headers, so its 503 gets them too, and
        // inside the request log, so a request cut off is logged.
        .layer(axum::middleware::from_fn(serve::enforce_deadline));
    for (name, value) in SECURITY_HEADERS {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router
        .layer(axum::middleware::map_response(extract::anchor_set_cookies))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            logging::log_requests,
        ))
        .with_state(state)
}

/// A handler that panicked (a bug): that request gets the 500 of any internal
/// error and the process goes on serving everyone else. The panic's message is
/// not in the response or in this log line (it could carry request data); Rust's
/// panic hook has already printed it with its location on stderr.
fn handler_panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    error::AppError::Internal("a request handler panicked".into()).into_response()
}

/// Serve the demo directory. Anything that is not a GET/HEAD of a file is 404 (so
/// `/test/*` is 404 outside test mode).
async fn static_www(State(state): State<AppState>, request: Request) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
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
