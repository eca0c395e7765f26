//! Operations endpoints: /healthz, /readyz, /metrics.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tokenwarden_server::clock::SystemClock;
use tokenwarden_server::keys::KeySet;
use tokenwarden_server::store::{Failing, Flaky, MemoryStore};
use tokenwarden_server::{app, AppState, Config};
use tower::ServiceExt as _;

use crate::common::*;

fn get(path: &str) -> Request<Body> {
    Request::builder().uri(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn healthz_and_readyz_answer_200_with_a_working_store() {
    let s = server(false);
    assert_eq!(s.send(get("/healthz")).await.status(), StatusCode::OK);
    assert_eq!(s.send(get("/readyz")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn readyz_is_503_while_healthz_stays_200_when_the_store_is_down() {
    // The database gone: every call fails.
    let store = Arc::new(Flaky::new(Arc::new(MemoryStore::new())));
    store.fail(Failing::All);
    let state = AppState::new(
        &Config::default(),
        KeySet::generate(),
        store,
        Arc::new(SystemClock),
    );
    let router = app(state);
    let status = |path: &'static str| {
        let router = router.clone();
        async move { router.oneshot(get(path)).await.unwrap().status() }
    };
    assert_eq!(status("/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status("/healthz").await, StatusCode::OK);
}

async fn readiness(s: &TestServer) -> (StatusCode, String) {
    let res = s.send(get("/readyz")).await;
    let status = res.status();
    (status, String::from_utf8(body_bytes(res).await).unwrap())
}

/// The audit's SQLite disk full: `/readyz` answered 200 (the store answers `SELECT 1`)
/// while every refresh and login got 503. It now says not ready while the latest write
/// failed with none gone through since, and ready again once a write goes through — its
/// own, with no traffic (a balancer sends none to an instance it took out).
#[tokio::test]
async fn readyz_is_503_while_the_stores_writes_fail_and_200_once_they_go_through() {
    let (s, store) = flaky_server(true);
    let (_, cookie) = s.login().await;
    assert_eq!(readiness(&s).await, (StatusCode::OK, "ready\n".into()));

    store.fail(Failing::Writes);
    assert_eq!(readiness(&s).await.0, StatusCode::OK, "no write tried yet");
    assert_eq!(
        s.send(refresh_request(&cookie)).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        readiness(&s).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "store writes failing\n".into()
        )
    );
    assert_eq!(
        s.send(get("/healthz")).await.status(),
        StatusCode::OK,
        "the process is alive"
    );
    assert_eq!(
        readiness(&s).await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "still: its own write failed too"
    );

    store.fail(Failing::No);
    assert_eq!(readiness(&s).await, (StatusCode::OK, "ready\n".into()));
    assert_eq!(
        s.send(refresh_request(&cookie)).await.status(),
        StatusCode::OK,
        "the failed rotation changed nothing"
    );
    assert_eq!(readiness(&s).await.0, StatusCode::OK);

    // Recovery through traffic: a failed login, then a refresh that goes through.
    store.fail(Failing::Writes);
    assert_eq!(
        s.send(json_request(
            "POST",
            "/auth/login",
            serde_json::json!({"username": "demo", "password": "demo"}),
        ))
        .await
        .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    store.fail(Failing::No);
    s.login().await;
    assert!(!s.state.store_health.writes_failing());
    assert_eq!(readiness(&s).await.0, StatusCode::OK);
}

/// A store host that never answers (the audit's black-holed PostgreSQL): `/readyz` waited
/// as long as the store did. It answers 503 after one store call's time (a third of
/// `--request-timeout`, at least 1 s).
#[tokio::test]
async fn readyz_is_503_within_a_store_calls_time_when_the_store_never_answers() {
    let (s, store) = flaky_server_with(Config {
        memory_store: true,
        request_timeout_s: 3.0,
        ..Config::default()
    });
    store.fail(Failing::Hang);
    let started = std::time::Instant::now();
    let answered = tokio::time::timeout(std::time::Duration::from_secs(5), readiness(&s))
        .await
        .expect("/readyz answered within 5 s");
    assert_eq!(
        answered,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "store unavailable\n".into()
        )
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

#[tokio::test]
async fn metrics_count_logins_rotations_reuse_revocations_limits_and_latency() {
    let s = server(false);
    let (_, first) = s.login().await;
    let res = s.send(refresh_request(&first)).await;
    assert_eq!(res.status(), StatusCode::OK);
    s.clock.advance_ms(10_000); // past the lost-response window
    s.send(refresh_request(&first)).await; // reuse: family revoked
    let res = s.send(get("/metrics")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = String::from_utf8(body_bytes(res).await).unwrap();
    for line in [
        "tokenwarden_logins_served_total 1",
        "tokenwarden_refreshes_served_total 1",
        "tokenwarden_reuse_detected_total 1",
        "tokenwarden_families_revoked_total 1",
        "tokenwarden_rate_limited_total 0",
        "tokenwarden_http_request_duration_seconds_count 3",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
    assert!(text.contains("tokenwarden_http_request_duration_seconds_bucket{le="));
    assert!(!text.contains(&first), "no token in metrics");
}
