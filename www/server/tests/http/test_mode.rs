//! The `/test/*` API: routes exist only in test mode; config, faults, counters, log, reset.
//! Also static files.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use tokenwarden_server::Config;

use crate::common::*;

fn get(path: &str) -> Request<Body> {
    Request::builder().uri(path).body(Body::empty()).unwrap()
}

async fn queue(s: &TestServer, faults: Value) {
    let res = s
        .send(json_request(
            "POST",
            "/test/faults",
            json!({ "faults": faults }),
        ))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

/// Refresh with `cookie` and check that the cookie is still live afterwards (not consumed).
async fn assert_cookie_untouched(s: &TestServer, cookie: &str) {
    let res = s.send(refresh_request(cookie)).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the faulted refresh must not consume the token"
    );
}

#[tokio::test]
async fn test_routes_do_not_exist_without_test_mode() {
    let s = server(false);
    for (method, path) in [
        ("POST", "/test/config"),
        ("POST", "/test/faults"),
        ("DELETE", "/test/faults"),
        ("GET", "/test/counters"),
        ("GET", "/test/log"),
        ("POST", "/test/reset"),
        ("POST", "/test/rotate-key"),
        ("POST", "/test/panic"),
    ] {
        let res = s.send(json_request(method, path, json!({}))).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{method} {path}");
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_server_serves_on() {
    let s = server(true);
    let requests_seen = |text: String| -> u64 {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("tokenwarden_http_request_duration_seconds_count "))
            .expect("the request histogram");
        line.parse().unwrap()
    };
    let before =
        requests_seen(String::from_utf8(body_bytes(s.send(get("/metrics")).await).await).unwrap());
    let res = s.send(json_request("POST", "/test/panic", json!({}))).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // Caught inside the outer layers: the 500 has the security headers and is counted.
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let after =
        requests_seen(String::from_utf8(body_bytes(s.send(get("/metrics")).await).await).unwrap());
    assert_eq!(
        after,
        before + 2,
        "the first /metrics call and the panicking request"
    );
    let body = body_json(res).await;
    assert_eq!(body["error"], "server_error");
    assert!(
        !body.to_string().contains("deliberate"),
        "the panic message stays out of the response"
    );
    assert_eq!(s.send(get("/healthz")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_fractional_access_ttl_rounds_expires_in_and_exp_up() {
    let s = server(true);
    let res = s
        .send(json_request(
            "POST",
            "/test/config",
            json!({"accessTtlSeconds": 1.5}),
        ))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = s
        .send(json_request(
            "POST",
            "/auth/login",
            json!({"username": "demo", "password": "demo"}),
        ))
        .await;
    let body = body_json(res).await;
    assert_eq!(body["expires_in"], 2);
    let claims = decode_part(body["access_token"].as_str().unwrap(), 1);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        2
    );

    let res = s
        .send(json_request(
            "POST",
            "/test/config",
            json!({"accessTtlSeconds": -1}),
        ))
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = s
        .send(json_request(
            "POST",
            "/test/config",
            json!({"accessTTL": 5}),
        ))
        .await;
    assert_eq!(
        res.status(),
        StatusCode::BAD_REQUEST,
        "unknown fields are refused"
    );
}

#[tokio::test]
async fn status_faults_answer_with_that_status_and_leave_the_token_alone() {
    let s = server(true);
    let (_, cookie) = s.login().await;
    queue(
        &s,
        json!([{"kind": "status", "status": 500}, {"kind": "status", "status": 401}]),
    )
    .await;
    let res = s.send(refresh_request(&cookie)).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(set_cookie_of(&res).is_none());
    assert_eq!(body_json(res).await, json!({"error": "server_error"}));
    assert_eq!(
        s.send(refresh_request(&cookie)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_cookie_untouched(&s, &cookie).await;
    let c = s.counters().await;
    assert_eq!(c["refreshRequests"], 3);
    assert_eq!(c["refreshesServed"], 1);
    assert_eq!(c["refreshRejected"], 1);
}

#[tokio::test]
async fn retry_after_faults_send_the_retry_after_header() {
    let s = server(true);
    let (_, cookie) = s.login().await;
    queue(&s, json!([{"kind": "retryAfter", "status": 429, "retryAfterSeconds": 3}, {"kind": "retryAfter", "status": 503, "retryAfterSeconds": 1}])).await;
    let res = s.send(refresh_request(&cookie)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()[header::RETRY_AFTER], "3");
    let res = s.send(refresh_request(&cookie)).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[header::RETRY_AFTER], "1");
    assert_cookie_untouched(&s, &cookie).await;
}

#[tokio::test]
async fn body_faults_send_broken_bodies_and_leave_the_token_alone() {
    let s = server(true);
    let (_, cookie) = s.login().await;
    queue(&s, json!([{"kind": "malformed"}, {"kind": "html"}, {"kind": "html200"}, {"kind": "empty"}, {"kind": "missingToken"}])).await;

    let res = s.send(refresh_request(&cookie)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_bytes(res).await, br#"{"access_token":"ab"#);

    let res = s.send(refresh_request(&cookie)).await;
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert!(res.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));

    let res = s.send(refresh_request(&cookie)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(String::from_utf8(body_bytes(res).await)
        .unwrap()
        .contains("<html>"));

    let res = s.send(refresh_request(&cookie)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(body_bytes(res).await.is_empty());

    let res = s.send(refresh_request(&cookie)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        body_json(res).await,
        json!({"token_type": "Bearer", "expires_in": 60})
    );

    assert_cookie_untouched(&s, &cookie).await;
    assert_eq!(s.counters().await["refreshesServed"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_delay_fault_waits_then_refreshes_normally() {
    let s = server(true);
    let (_, cookie) = s.login().await;
    queue(&s, json!([{"kind": "delay", "ms": 1500}])).await;
    let started = tokio::time::Instant::now();
    let res = s.send(refresh_request(&cookie)).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
    assert_eq!(res.status(), StatusCode::OK);
    let next = refresh_cookie_of(&res).unwrap();
    assert_ne!(next, cookie, "rotated");
    assert_eq!(
        s.send(refresh_request(&next)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_expired_fault_rotates_but_hands_out_an_already_expired_token() {
    let s = server(true);
    let (_, cookie) = s.login().await;
    queue(&s, json!([{"kind": "expired"}])).await;
    let res = s.send(refresh_request(&cookie)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let next = refresh_cookie_of(&res).unwrap();
    let body = body_json(res).await;
    assert_eq!(body["expires_in"], 0);
    let claims = decode_part(body["access_token"].as_str().unwrap(), 1);
    assert_eq!(
        claims["exp"].as_i64().unwrap(),
        claims["iat"].as_i64().unwrap() - 1
    );
    assert_eq!(s.counters().await["refreshesServed"], 1);
    assert_eq!(
        s.send(refresh_request(&next)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn a_hang_fault_does_not_answer_for_two_minutes() {
    let s = server(true);
    let (_, cookie) = s.login().await;
    queue(&s, json!([{"kind": "hang"}])).await;
    let pending = tokio::time::timeout(
        std::time::Duration::from_secs(100),
        s.send(refresh_request(&cookie)),
    )
    .await;
    assert!(pending.is_err(), "still hanging after 100 s");
    assert_cookie_untouched(&s, &cookie).await;
}

#[tokio::test]
async fn faults_are_used_in_order_and_can_be_cleared() {
    let s = server(true);
    let (_, cookie) = s.login().await;
    queue(&s, json!([{"kind": "status", "status": 502}])).await;
    queue(
        &s,
        json!([{"kind": "status", "status": 504}, {"kind": "status", "status": 500}]),
    )
    .await;
    assert_eq!(
        s.send(refresh_request(&cookie)).await.status(),
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        s.send(refresh_request(&cookie)).await.status(),
        StatusCode::GATEWAY_TIMEOUT
    );
    let res = s
        .send(
            Request::builder()
                .method("DELETE")
                .uri("/test/faults")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_cookie_untouched(&s, &cookie).await;

    let res = s
        .send(json_request(
            "POST",
            "/test/faults",
            json!({"faults": [{"kind": "explode"}]}),
        ))
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = s
        .send(json_request(
            "POST",
            "/test/faults",
            json!({"faults": [{"kind": "status", "status": 1000}]}),
        ))
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn counters_list_every_field_and_reset_clears_counters_log_and_faults() {
    let s = server(true);
    let (token, _) = s.login().await;
    s.send(me_request(&token)).await;
    queue(&s, json!([{"kind": "status", "status": 500}])).await;
    let c = s.counters().await;
    let names: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
    for name in [
        "refreshesServed",
        "refreshRequests",
        "refreshRejected",
        "reuseDetected",
        "familiesRevoked",
        "loginsServed",
        "logouts",
        "apiCalls",
        "apiOk",
        "apiUnauthorized",
        "apiExpiredTokens",
        "apiNoToken",
        "csrfMissing",
        "loginsRefused",
        "rateLimited",
        "apiRevokedTokens",
        "originRefused",
        "liveFamilies",
        "familiesWithOneLiveToken",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert_eq!(c["loginsServed"], 1);
    assert_eq!(c["liveFamilies"], 1);
    assert_eq!(c["familiesWithOneLiveToken"], 1);

    let res = s
        .send(post("/test/reset").body(Body::empty()).unwrap())
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let c = s.counters().await;
    assert_eq!(c["loginsServed"], 0);
    assert_eq!(c["apiCalls"], 0);
    assert_eq!(c["liveFamilies"], 1, "sessions survive a reset");
    assert_eq!(body_json(s.send(get("/test/log")).await).await, json!([]));
    let (_, cookie) = s.login().await;
    assert_eq!(
        s.send(refresh_request(&cookie)).await.status(),
        StatusCode::OK,
        "the queued fault is gone"
    );
}

#[tokio::test]
async fn the_request_log_classifies_bearer_csrf_and_cookie_without_values() {
    let s = server(true);
    let (token, cookie) = s.login().await;
    s.send(me_request(&token)).await;
    s.send(me_request("garbage")).await;
    let mut claims = s.valid_claims();
    claims["exp"] = json!(s.now_s() - 60);
    s.send(me_request(&s.sign(&claims))).await;
    s.send(refresh_request(&cookie)).await;
    let log = body_json(s.send(get("/test/log")).await).await;
    let entries = log.as_array().unwrap();
    assert_eq!(entries.len(), 5, "test routes are not logged: {log}");
    let bearer: Vec<&str> = entries
        .iter()
        .map(|e| e["bearer"].as_str().unwrap())
        .collect();
    assert_eq!(bearer, ["none", "valid", "invalid", "expired", "none"]);
    let last = &entries[4];
    assert_eq!(last["method"], "POST");
    assert_eq!(last["path"], "/auth/refresh");
    assert_eq!(last["status"], 200);
    assert_eq!(last["csrf"], true);
    assert_eq!(last["cookie"], true);
    assert_eq!(last["t"], START_MS);
    let text = log.to_string();
    assert!(!text.contains(&token) && !text.contains(&cookie));
}

#[tokio::test]
async fn static_files_are_served_with_wasm_as_application_wasm_and_pkg_uncached_in_test_mode() {
    let pkg = tempfile::tempdir().unwrap();
    std::fs::write(pkg.path().join("tokenwarden_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(
        www.path().join("index.html"),
        "<!doctype html><title>demo</title>",
    )
    .unwrap();
    let s = server_with(Config {
        test_mode: true,
        memory_store: true,
        pkg_dir: pkg.path().into(),
        www_dir: www.path().into(),
        ..Config::default()
    });

    let res = s.send(get("/pkg/tokenwarden_bg.wasm")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/wasm");
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");

    let res = s.send(get("/")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(String::from_utf8(body_bytes(res).await)
        .unwrap()
        .contains("demo"));
    assert_eq!(
        s.send(get("/missing.txt")).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn the_served_demo_directory_holds_no_server_source_or_data() {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo");
    assert!(demo.join("index.html").is_file(), "{}", demo.display());
    let mut stack = vec![demo];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                !(name.ends_with(".rs") || name == "Cargo.toml" || name.contains("sqlite")),
                "{}",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn a_refresh_the_client_gives_up_on_during_a_hang_is_still_counted() {
    let s = server(true);
    let (_, cookie) = s.login().await;
    queue(
        &s,
        json!([{"kind": "hang"}, {"kind": "delay", "ms": 60_000}]),
    )
    .await;
    for _ in 0..2 {
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            s.send(refresh_request(&cookie)),
        )
        .await;
        assert!(gave_up.is_err(), "the fault answered");
    }
    let c = s.counters().await;
    assert_eq!(c["refreshRequests"], 2);
    assert_eq!(
        s.send(refresh_request(&cookie)).await.status(),
        StatusCode::OK
    );
    assert_eq!(s.counters().await["refreshRequests"], 3, "counted once");
}
