//! Log output never carries a token, cookie or Authorization value.
//!
//! A test binary of its own: `tracing::subscriber::set_default` races with callsites
//! registered by tests running in parallel threads of the same binary.

#[path = "http/common.rs"]
mod common;

use axum::body::Body;
use axum::http::StatusCode;

use crate::common::*;

#[tokio::test]
async fn logs_show_requests_and_reuse_but_never_a_token_or_cookie_value() {
    let capture = Capture::default();
    let _guard = capture.install(tracing::Level::TRACE);

    let s = server(true);
    let (access, first) = s.login().await;
    let res = s.send(refresh_request(&first)).await;
    let second = refresh_cookie_of(&res).unwrap();
    let refreshed = body_json(res).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(s.send(me_request(&access)).await.status(), StatusCode::OK);
    assert_eq!(
        s.send(me_request(&format!("{access}x"))).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // A replay within the lost-response window gets the same successor (logged, no token).
    assert_eq!(
        s.send(refresh_request(&first)).await.status(),
        StatusCode::OK
    );
    s.clock.advance_ms(10_000); // past the window: reuse
    assert_eq!(
        s.send(refresh_request(&first)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    s.send(
        with_cookie(post("/auth/logout"), &second)
            .header("X-Requested-With", "x")
            .body(Body::empty())
            .unwrap(),
    )
    .await;

    let output = capture.text();
    assert!(
        output.contains("path=/auth/refresh") && output.contains("status=401"),
        "{output}"
    );
    assert!(output.contains("latency_ms="), "{output}");
    assert!(
        output.contains("WARN") && output.contains("reuse detected"),
        "{output}"
    );
    for (what, secret) in [
        ("access token", &access),
        ("refreshed token", &refreshed),
        ("cookie", &first),
        ("cookie", &second),
    ] {
        assert!(
            !output.contains(secret.as_str()),
            "{what} leaked into the log"
        );
        let signature = secret.rsplit('.').next().unwrap();
        assert!(
            !output.contains(signature),
            "{what} signature leaked into the log"
        );
    }
    assert!(!output.contains("tw_refresh="), "cookie header leaked");
}
