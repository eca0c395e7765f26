//! Shared helpers: an in-process server driven with `oneshot`, on a manual clock.
#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};
use tokenwarden_server::clock::ManualClock;
use tokenwarden_server::extract::ANCHOR_COOKIE;
use tokenwarden_server::keys::KeySet;
use tokenwarden_server::store::{Flaky, MemoryStore};
use tokenwarden_server::{app, AppState, Config, REFRESH_COOKIE};
use tower::ServiceExt as _;

/// 2027-01-15T08:00:00Z, on a whole second.
pub const START_MS: i64 = 1_800_000_000_000;

pub struct TestServer {
    pub router: Router,
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    /// The server's signing key at start (before any rotation), for hand-built tokens.
    pub signing_key: SigningKey,
}

pub fn server_with(config: Config) -> TestServer {
    let clock = Arc::new(ManualClock::new(START_MS));
    let signing_key = SigningKey::random(&mut rand_core::OsRng);
    let state = AppState::new(
        &config,
        KeySet::from_signing_key(signing_key.clone()),
        Arc::new(MemoryStore::new()),
        clock.clone(),
    );
    TestServer {
        router: app(state.clone()),
        state,
        clock,
        signing_key,
    }
}

/// A test server whose store fails on demand ([`Flaky`] around a memory store).
pub fn flaky_server(test_mode: bool) -> (TestServer, Arc<Flaky>) {
    flaky_server_with(Config {
        test_mode,
        memory_store: true,
        ..Config::default()
    })
}

/// [`flaky_server`] with `config`.
pub fn flaky_server_with(config: Config) -> (TestServer, Arc<Flaky>) {
    let clock = Arc::new(ManualClock::new(START_MS));
    let signing_key = SigningKey::random(&mut rand_core::OsRng);
    let store = Arc::new(Flaky::new(Arc::new(MemoryStore::new())));
    let state = AppState::new(
        &config,
        KeySet::from_signing_key(signing_key.clone()),
        store.clone(),
        clock.clone(),
    );
    let server = TestServer {
        router: app(state.clone()),
        state,
        clock,
        signing_key,
    };
    (server, store)
}

/// The refresh cookie's name.
pub const REFRESH_COOKIE_NAME: &str = REFRESH_COOKIE;

impl TestServer {
    /// A test server around an already built router (its `state` is a throwaway).
    pub fn from_router(router: Router, clock: Arc<ManualClock>, signing_key: SigningKey) -> Self {
        let state = AppState::new(
            &Config::default(),
            KeySet::from_signing_key(signing_key.clone()),
            Arc::new(MemoryStore::new()),
            clock.clone(),
        );
        TestServer {
            router,
            state,
            clock,
            signing_key,
        }
    }
}

pub fn server(test_mode: bool) -> TestServer {
    server_with(Config {
        test_mode,
        memory_store: true,
        ..Config::default()
    })
}

pub fn post(path: &str) -> axum::http::request::Builder {
    Request::builder().method("POST").uri(path)
}

pub fn with_cookie(
    builder: axum::http::request::Builder,
    token: &str,
) -> axum::http::request::Builder {
    builder.header(
        header::COOKIE,
        format!(
            "theme=dark; {REFRESH_COOKIE}={token}; {ANCHOR_COOKIE}={}",
            tokenwarden_server::tokens::refresh_anchor(token)
        ),
    )
}

pub fn refresh_request(token: &str) -> Request<Body> {
    with_cookie(post("/auth/refresh"), token)
        .header("X-Requested-With", "tokenwarden")
        .body(Body::empty())
        .unwrap()
}

pub fn json_request(method: &str, path: &str, body: Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub fn me_request(token: &str) -> Request<Body> {
    Request::builder()
        .uri("/api/me")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

impl TestServer {
    pub async fn send(&self, request: Request<Body>) -> Response<Body> {
        self.router.clone().oneshot(request).await.unwrap()
    }

    /// Log in as demo/demo; returns (access token, refresh token).
    pub async fn login(&self) -> (String, String) {
        let res = self
            .send(json_request(
                "POST",
                "/auth/login",
                json!({"username": "demo", "password": "demo"}),
            ))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let cookie = refresh_cookie_of(&res).expect("login sets the refresh cookie");
        let body = body_json(res).await;
        (body["access_token"].as_str().unwrap().to_string(), cookie)
    }

    pub async fn counters(&self) -> Value {
        let res = self
            .send(
                Request::builder()
                    .uri("/test/counters")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        body_json(res).await
    }

    pub fn advance_s(&self, s: i64) {
        self.clock.advance_ms(s * 1000);
    }

    pub fn now_s(&self) -> i64 {
        self.state.now_ms() / 1000
    }

    /// Claims a valid access token would carry right now.
    pub fn valid_claims(&self) -> Value {
        let now = self.now_s();
        json!({
            "iss": "tokenwarden-demo", "aud": "tokenwarden-demo-api", "sub": "demo",
            "iat": now, "exp": now + 60, "jti": "test", "scope": "read:me profile",
            "sid": "test-family"
        })
    }

    /// Sign `claims` with the server's current key.
    pub fn sign(&self, claims: &Value) -> String {
        self.state.with_keys(|k| k.sign(claims)).unwrap()
    }

    /// The `kid` of the server's current key.
    pub fn kid(&self) -> String {
        self.state.with_keys(|k| k.current_kid().to_string())
    }

    /// A token with exactly `header`, correctly ES256-signed by the server's own key.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        es256_with_header(&self.signing_key, header, claims)
    }
}

pub fn set_cookie_of(res: &Response<Body>) -> Option<String> {
    res.headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_string())
}

/// The refresh token set by `res`, if it sets a non-empty one.
pub fn refresh_cookie_of(res: &Response<Body>) -> Option<String> {
    let set = set_cookie_of(res)?;
    let value = set
        .strip_prefix(&format!("{REFRESH_COOKIE}="))?
        .split(';')
        .next()?
        .to_string();
    (!value.is_empty()).then_some(value)
}

pub async fn body_bytes(res: Response<Body>) -> Vec<u8> {
    axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec()
}

pub async fn body_json(res: Response<Body>) -> Value {
    serde_json::from_slice(&body_bytes(res).await).unwrap()
}

/// A compact JWS with exactly `header` and `claims`, ES256-signed by `key` whatever the header says.
pub fn es256_with_header(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature: Signature = key.sign(input.as_bytes());
    // The server accepts only low-S signatures (one spelling per token).
    let signature = signature.normalize_s().unwrap_or(signature);
    format!("{input}.{}", b64(&signature.to_bytes()))
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode_part(token: &str, index: usize) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(index).unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// A log sink for a test binary of its own (`tracing::subscriber::set_default` races with
/// callsites registered by tests on other threads of one binary): everything written, kept.
#[derive(Clone, Default)]
pub struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// A plain-text `fmt` subscriber at `level` writing here, for this thread while the guard lives.
    pub fn install(&self, level: tracing::Level) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}
