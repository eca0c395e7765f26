//! Login, refresh rotation, reuse detection, CSRF, logout and family lifetime.

use axum::body::Body;
use axum::http::{header, StatusCode};
use serde_json::json;

use crate::common::*;
use tokenwarden_server::store::Failing;
use tokenwarden_server::Config;

#[tokio::test]
async fn login_with_the_demo_account_returns_a_bearer_token_response_and_a_refresh_cookie() {
    let s = server(false);
    let res = s
        .send(json_request(
            "POST",
            "/auth/login",
            json!({"username": "demo", "password": "demo"}),
        ))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(res.headers()[header::PRAGMA], "no-cache");
    let cookie = refresh_cookie_of(&res).unwrap();
    assert_eq!(cookie.len(), 43, "256-bit base64url refresh token");
    let body = body_json(res).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 60);
    let jwt = body["access_token"].as_str().unwrap();
    let header = decode_part(jwt, 0);
    assert_eq!(header["alg"], "ES256");
    assert!(header["kid"].is_string());
    let claims = decode_part(jwt, 1);
    for claim in ["iss", "aud", "sub", "iat", "exp", "jti", "scope"] {
        assert!(!claims[claim].is_null(), "claim {claim}");
    }
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        60
    );
    assert_eq!(claims["scope"], "read:me profile");
}

#[tokio::test]
async fn login_with_a_wrong_password_is_invalid_grant_and_sets_no_cookie() {
    let s = server(false);
    let res = s
        .send(json_request(
            "POST",
            "/auth/login",
            json!({"username": "demo", "password": "nope"}),
        ))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie_of(&res).is_none());
    assert_eq!(body_json(res).await, json!({"error": "invalid_grant"}));

    let res = s
        .send(
            post("/auth/login")
                .body(Body::from("username=demo&password=demo"))
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_refresh_cookie_has_exactly_the_contract_attributes() {
    let s = server(false);
    let res = s
        .send(json_request(
            "POST",
            "/auth/login",
            json!({"username": "demo", "password": "demo"}),
        ))
        .await;
    let set = set_cookie_of(&res).unwrap();
    let token = refresh_cookie_of(&res).unwrap();
    assert_eq!(
        set,
        format!("__Secure-tw_refresh={token}; HttpOnly; Secure; SameSite=Strict; Path=/auth; Max-Age=28800")
    );
}

#[tokio::test]
async fn refresh_rotates_the_cookie_and_replaying_the_old_one_revokes_the_whole_family() {
    let s = server(true);
    let (_, first) = s.login().await;

    let res = s.send(refresh_request(&first)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    let second = refresh_cookie_of(&res).unwrap();
    assert_ne!(first, second);
    assert_eq!(body_json(res).await["token_type"], "Bearer");

    // Past the lost-response window (10 s by default) a replay is reuse even though
    // `second` was never used.
    s.clock.advance_ms(10_000);
    let reuse = s.send(refresh_request(&first)).await;
    assert_eq!(reuse.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie_of(&reuse).unwrap().contains("Max-Age=0"));
    assert_eq!(body_json(reuse).await, json!({"error": "invalid_grant"}));

    let after = s.send(refresh_request(&second)).await;
    assert_eq!(
        after.status(),
        StatusCode::UNAUTHORIZED,
        "the family is revoked, the newest token too"
    );

    let c = s.counters().await;
    assert_eq!(c["reuseDetected"], 1);
    assert_eq!(c["familiesRevoked"], 1);
    assert_eq!(c["refreshesServed"], 1);
    assert_eq!(c["refreshRequests"], 3);
    assert_eq!(c["refreshRejected"], 2);
    assert_eq!(c["liveFamilies"], 0);
}

#[tokio::test]
async fn refresh_without_a_cookie_or_with_an_unknown_one_is_invalid_grant() {
    let s = server(false);
    let res = s
        .send(
            post("/auth/refresh")
                .header("X-Requested-With", "tokenwarden")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body_json(res).await, json!({"error": "invalid_grant"}));
    let res = s
        .send(refresh_request(
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_refreshes_of_one_cookie_rotate_once_and_both_get_the_same_successor() {
    for _ in 0..20 {
        let s = server(true);
        let (_, cookie) = s.login().await;
        let a = tokio::spawn(s.router.clone().oneshot_owned(refresh_request(&cookie)));
        let b = tokio::spawn(s.router.clone().oneshot_owned(refresh_request(&cookie)));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
        assert_eq!(refresh_cookie_of(&a), refresh_cookie_of(&b));
        let c = s.counters().await;
        assert_eq!(c["reuseDetected"], 0);
        assert_eq!(c["lostResponsesRepeated"], 1);
        assert_eq!(c["liveFamilies"], 1);
        assert_eq!(c["familiesWithOneLiveToken"], 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_window_off_two_concurrent_refreshes_let_exactly_one_win() {
    for _ in 0..20 {
        let s = server_with(Config {
            test_mode: true,
            memory_store: true,
            lost_response_window_s: 0.0,
            ..Config::default()
        });
        let (_, cookie) = s.login().await;
        let a = tokio::spawn(s.router.clone().oneshot_owned(refresh_request(&cookie)));
        let b = tokio::spawn(s.router.clone().oneshot_owned(refresh_request(&cookie)));
        let mut statuses = [a.await.unwrap().status(), b.await.unwrap().status()];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::UNAUTHORIZED],
            "{statuses:?}"
        );
        let c = s.counters().await;
        assert_eq!(c["reuseDetected"], 1);
        assert_eq!(c["refreshesServed"], 1);
    }
}

#[tokio::test]
async fn a_lost_response_is_answered_with_the_same_successor_until_it_is_used() {
    let s = server(true);
    let (_, first) = s.login().await;
    let res = s.send(refresh_request(&first)).await;
    let second = refresh_cookie_of(&res).unwrap();
    // The answer was lost: the browser still holds `first` and tries again, 9.9 s later.
    s.clock.advance_ms(9_900);
    let again = s.send(refresh_request(&first)).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(refresh_cookie_of(&again).unwrap(), second);
    let access = body_json(again).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(s.send(me_request(&access)).await.status(), StatusCode::OK);
    // Using the successor closes the window for its parent: a replay now is reuse.
    let res = s.send(refresh_request(&second)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let third = refresh_cookie_of(&res).unwrap();
    let replay = s.send(refresh_request(&first)).await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.send(refresh_request(&third)).await.status(),
        StatusCode::UNAUTHORIZED,
        "the family is revoked"
    );
    let c = s.counters().await;
    assert_eq!(c["lostResponsesRepeated"], 1);
    assert_eq!(c["reuseDetected"], 1);
    assert_eq!(c["liveFamilies"], 0);
}

#[tokio::test]
async fn the_lost_response_fault_commits_the_rotation_and_answers_502() {
    let s = server(true);
    let (_, first) = s.login().await;
    let res = s
        .send(json_request(
            "POST",
            "/test/faults",
            json!({"faults": [{"kind": "lostResponse"}]}),
        ))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let lost = s.send(refresh_request(&first)).await;
    assert_eq!(lost.status(), StatusCode::BAD_GATEWAY);
    assert!(set_cookie_of(&lost).is_none(), "the new cookie was lost");
    assert_eq!(s.counters().await["refreshesServed"], 1, "it was committed");
    let retry = s.send(refresh_request(&first)).await;
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(s.counters().await["lostResponsesRepeated"], 1);
}

/// `Router::oneshot` taking the request by value, for `tokio::spawn`.
trait OneshotOwned {
    fn oneshot_owned(
        self,
        request: axum::http::Request<Body>,
    ) -> impl std::future::Future<Output = axum::http::Response<Body>> + Send + 'static;
}

impl OneshotOwned for axum::Router {
    fn oneshot_owned(
        self,
        request: axum::http::Request<Body>,
    ) -> impl std::future::Future<Output = axum::http::Response<Body>> + Send + 'static {
        use tower::ServiceExt as _;
        async move { self.oneshot(request).await.unwrap() }
    }
}

#[tokio::test]
async fn refresh_and_logout_without_the_csrf_header_are_forbidden_and_leave_the_session_alone() {
    let s = server(true);
    let (_, cookie) = s.login().await;
    let res = s
        .send(
            with_cookie(post("/auth/refresh"), &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(body_json(res).await["error"], "csrf");
    let res = s
        .send(
            with_cookie(post("/auth/logout"), &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    let res = s.send(refresh_request(&cookie)).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the cookie was neither consumed nor revoked"
    );
    let c = s.counters().await;
    assert_eq!(c["csrfMissing"], 2);
    assert_eq!(c["refreshRejected"], 1);
}

#[tokio::test]
async fn logout_revokes_the_family_and_clears_the_cookie() {
    let s = server(true);
    let (_, cookie) = s.login().await;
    let res = s
        .send(
            with_cookie(post("/auth/logout"), &cookie)
                .header("X-Requested-With", "tokenwarden")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        set_cookie_of(&res).unwrap(),
        "__Secure-tw_refresh=; HttpOnly; Secure; SameSite=Strict; Path=/auth; Max-Age=0"
    );
    assert_eq!(
        s.send(refresh_request(&cookie)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let c = s.counters().await;
    assert_eq!(c["logouts"], 1);
    assert_eq!(c["familiesRevoked"], 1);
    assert_eq!(c["reuseDetected"], 0);
}

fn logout_request(cookie: &str) -> axum::http::Request<Body> {
    with_cookie(post("/auth/logout"), cookie)
        .header("X-Requested-With", "tokenwarden")
        .body(Body::empty())
        .unwrap()
}

/// The audit's s1g-logout: a logout while the store was down answered 503 without
/// `Set-Cookie`, so the browser kept the cookie and signed the user back in on the next page
/// load once the store was back. The 503 (with `Retry-After`, so the client reports that the
/// server could not be told) now clears the cookie and its anchor as the 204 does.
#[tokio::test]
async fn a_logout_the_store_fails_is_503_with_retry_after_and_still_clears_the_cookie() {
    let (s, store) = flaky_server(true);
    let (_, cookie) = s.login().await;
    store.fail(Failing::All);
    let res = s.send(logout_request(&cookie)).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[header::RETRY_AFTER], "2");
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    let set: Vec<_> = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        set,
        [
            "__Secure-tw_refresh=; HttpOnly; Secure; SameSite=Strict; Path=/auth; Max-Age=0",
            "__Host-tw_anchor=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0",
        ],
        "the cookie is cleared as a 204 clears it"
    );
    assert_eq!(
        body_json(res).await,
        json!({"error": "temporarily_unavailable"})
    );
    store.fail(Failing::No);
    assert_eq!(s.counters().await["logouts"], 0, "not counted as served");
}

/// The family of a logout the store failed is noted and ended by the next maintenance pass
/// once the store answers: a copy of the cookie kept elsewhere (or a browser that never got
/// the 503) cannot refresh with it afterwards. Every candidate of the request is noted.
#[tokio::test]
async fn a_logout_the_store_failed_ends_the_family_at_the_next_maintenance_pass() {
    let (s, store) = flaky_server(true);
    let (_, first) = s.login().await;
    let (_, second) = s.login().await;
    store.fail(Failing::Writes);
    let both = format!(
        "{}={first}; {}={second}; {}={}; {}={}",
        REFRESH_COOKIE_NAME,
        REFRESH_COOKIE_NAME,
        tokenwarden_server::extract::ANCHOR_COOKIE,
        tokenwarden_server::tokens::refresh_anchor(&first),
        tokenwarden_server::extract::ANCHOR_COOKIE,
        tokenwarden_server::tokens::refresh_anchor(&second),
    );
    let res = s
        .send(
            post("/auth/logout")
                .header(header::COOKIE, both)
                .header("X-Requested-With", "tokenwarden")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(set_cookie_of(&res).unwrap().contains("Max-Age=0"));
    assert_eq!(s.state.noted_ends.len(), 2);
    // Still down: the pass fails and keeps them.
    assert!(tokenwarden_server::session::maintain(&s.state, 0)
        .await
        .is_err());
    assert_eq!(s.state.noted_ends.len(), 2);
    store.fail(Failing::No);
    tokenwarden_server::session::maintain(&s.state, 3_600_000)
        .await
        .unwrap();
    assert!(s.state.noted_ends.is_empty());
    for cookie in [&first, &second] {
        assert_eq!(
            s.send(refresh_request(cookie)).await.status(),
            StatusCode::UNAUTHORIZED,
            "the family ended"
        );
    }
    assert_eq!(s.counters().await["familiesRevoked"], 2);
}

#[tokio::test]
async fn logout_without_a_session_still_answers_204() {
    let s = server(false);
    let res = s
        .send(
            post("/auth/logout")
                .header("X-Requested-With", "x")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(set_cookie_of(&res).unwrap().contains("Max-Age=0"));
}

#[tokio::test]
async fn a_family_ends_at_its_absolute_lifetime_however_often_it_rotates() {
    let s = server(true);
    let res = s
        .send(json_request(
            "POST",
            "/test/config",
            json!({"familyLifetimeSeconds": 10}),
        ))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (_, mut cookie) = s.login().await;
    for remaining in [8, 6, 4, 2] {
        s.advance_s(2);
        let res = s.send(refresh_request(&cookie)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(set_cookie_of(&res)
            .unwrap()
            .ends_with(&format!("Max-Age={remaining}")));
        cookie = refresh_cookie_of(&res).unwrap();
    }
    s.advance_s(2);
    assert_eq!(
        s.send(refresh_request(&cookie)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_family_lifetime_defaults_to_eight_hours() {
    let s = server(false);
    let (_, cookie) = s.login().await;
    s.advance_s(8 * 3600 - 1);
    let res = s.send(refresh_request(&cookie)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = refresh_cookie_of(&res).unwrap();
    s.advance_s(1);
    assert_eq!(
        s.send(refresh_request(&cookie)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

/// Send refresh and logout with `cookie` and one extra header, expect 403 `csrf` and no cookie
/// change from either, then check the session still refreshes.
async fn assert_csrf_refused_and_session_intact(s: &TestServer, name: &str, value: &str) {
    let (_, cookie) = s.login().await;
    for path in ["/auth/refresh", "/auth/logout"] {
        let res = s
            .send(
                with_cookie(post(path), &cookie)
                    .header(name, value)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::FORBIDDEN,
            "{path} with {name}: {value:?}"
        );
        assert!(
            set_cookie_of(&res).is_none(),
            "{path} with {name}: {value:?}"
        );
        assert_eq!(body_json(res).await["error"], "csrf");
    }
    let res = s.send(refresh_request(&cookie)).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "with {name}: {value:?} the cookie was neither consumed nor revoked"
    );
}

#[tokio::test]
async fn refresh_and_logout_with_an_empty_csrf_header_are_forbidden_and_leave_the_session_alone() {
    let s = server(true);
    assert_csrf_refused_and_session_intact(&s, "X-Requested-With", "").await;
    let c = s.counters().await;
    assert_eq!(c["csrfMissing"], 2);
    assert_eq!(c["refreshesServed"], 1);
}

#[tokio::test]
async fn refresh_and_logout_with_a_lookalike_header_instead_of_the_csrf_one_are_forbidden() {
    let s = server(true);
    for name in [
        "X-Requested-By",
        "X-Requested",
        "X-Requested-With-Not",
        "Requested-With",
        "X-Requested_With",
    ] {
        assert_csrf_refused_and_session_intact(&s, name, "tokenwarden").await;
    }
    let c = s.counters().await;
    assert_eq!(c["csrfMissing"], 10);
    assert_eq!(c["refreshesServed"], 5);
}
