//! The seven holes of issue #12 and the Origin check, each shown closed through the router.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::Signature;
use serde_json::json;
use tokenwarden_server::clock::ManualClock;
use tokenwarden_server::keys::KeySet;
use tokenwarden_server::store::SqliteStore;
use tokenwarden_server::{app, session, AppState, Config};

use crate::common::*;

fn login_request(username: &str, password: &str, from: Option<[u8; 4]>) -> Request<Body> {
    let mut req = json_request(
        "POST",
        "/auth/login",
        json!({"username": username, "password": password}),
    );
    if let Some(ip) = from {
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
    }
    req
}

// ---- 1. login rate limit ------------------------------------------------------------------

#[tokio::test]
async fn a_burst_of_wrong_passwords_ends_in_429_with_retry_after_and_locks_the_account() {
    let s = server(true);
    let mut plain = 0;
    let mut limited = 0;
    for _ in 0..200 {
        let res = s
            .send(login_request("demo", "guess", Some([10, 0, 0, 1])))
            .await;
        match res.status() {
            StatusCode::UNAUTHORIZED => plain += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                let retry: u64 = res.headers()[header::RETRY_AFTER]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=60).contains(&retry), "Retry-After {retry}");
                assert_eq!(body_json(res).await, json!({"error": "rate_limited"}));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(plain, 10, "the account's burst of failures");
    assert_eq!(limited, 190);
    // Locked means locked: the right password is not even checked, from anywhere.
    let res = s
        .send(login_request("demo", "demo", Some([10, 9, 9, 9])))
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(set_cookie_of(&res).is_none());
    let c = s.counters().await;
    assert_eq!(c["rateLimited"], 191);
    assert_eq!(c["loginsRefused"], 11, "credentials checked and wrong");
}

#[tokio::test]
async fn one_address_guessing_many_accounts_is_limited_and_other_addresses_are_not() {
    let s = server(false);
    for i in 0..30 {
        let res = s
            .send(login_request(&format!("user{i}"), "x", Some([10, 0, 0, 1])))
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let res = s
        .send(login_request("user99", "x", Some([10, 0, 0, 1])))
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let res = s
        .send(login_request("demo", "demo", Some([10, 0, 0, 1])))
        .await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the address is locked"
    );
    let res = s
        .send(login_request("demo", "demo", Some([10, 0, 0, 2])))
        .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "another address, unlocked account"
    );
}

#[tokio::test]
async fn successful_logins_are_never_throttled() {
    let s = server(false);
    for _ in 0..300 {
        let res = s
            .send(login_request("demo", "demo", Some([10, 0, 0, 1])))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
}

// ---- 3. security headers on the demo page --------------------------------------------------

#[tokio::test]
async fn the_demo_page_has_a_strict_csp_nosniff_a_referrer_policy_and_no_framing() {
    let s = server_with(Config {
        www_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo"),
        ..Config::default()
    });
    for path in ["/", "/app.js", "/api/me"] {
        let res = s
            .send(Request::builder().uri(path).body(Body::empty()).unwrap())
            .await;
        let h = res.headers();
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self' 'wasm-unsafe-eval'"),
            "{path}: {csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("'unsafe-eval'"),
            "{csp}"
        );
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    }
}

#[test]
fn the_demo_page_has_no_inline_script_or_style_for_the_csp_to_block() {
    let html = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../demo/index.html"))
        .unwrap();
    for (i, tag) in html.match_indices("<script").map(|(i, _)| (i, &html[i..])) {
        let open = &tag[..tag.find('>').unwrap()];
        assert!(open.contains(" src="), "inline script at byte {i}: {open}");
    }
    assert!(!html.contains("<style"), "inline <style>");
    assert!(!html.contains(" style="), "inline style attribute");
    assert!(
        !html.contains(" onclick=") && !html.contains(" onload="),
        "inline handler"
    );
}

// ---- 4. family cap and purge ----------------------------------------------------------------

#[tokio::test]
async fn a_login_beyond_the_per_user_cap_revokes_the_oldest_family_and_its_access_token() {
    let s = server_with(Config {
        test_mode: true,
        memory_store: true,
        max_families_per_user: 3,
        ..Config::default()
    });
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(s.login().await);
        s.advance_s(1);
    }
    let (oldest_access, oldest_cookie) = &sessions[0];
    assert_eq!(
        s.send(refresh_request(oldest_cookie)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.send(me_request(oldest_access)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    for (access, cookie) in &sessions[1..] {
        assert_eq!(s.send(me_request(access)).await.status(), StatusCode::OK);
        assert_eq!(
            s.send(refresh_request(cookie)).await.status(),
            StatusCode::OK
        );
    }
    let c = s.counters().await;
    assert_eq!(c["familiesRevoked"], 1);
    assert_eq!(c["liveFamilies"], 3);
}

#[tokio::test]
async fn ended_families_are_purged_from_the_memory_store() {
    let s = server_with(Config {
        test_mode: true,
        memory_store: true,
        family_lifetime_s: 60.0,
        ..Config::default()
    });
    let (_, cookie) = s.login().await;
    let (_, other) = s.login().await;
    s.send(
        with_cookie(post("/auth/logout"), &other)
            .header("X-Requested-With", "x")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        session::maintain(&s.state, 0).await.unwrap(),
        0,
        "too recent"
    );
    s.advance_s(2 * 3600);
    assert_eq!(session::maintain(&s.state, 3_600_000).await.unwrap(), 2);
    let res = s.send(refresh_request(&cookie)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

// ---- 5. lenient cookies, never clearing a cookie the request may not own --------------------

fn refresh_with_cookie_header(value: &[u8]) -> Request<Body> {
    post("/auth/refresh")
        .header(header::COOKIE, HeaderValue::from_bytes(value).unwrap())
        .header("X-Requested-With", "tokenwarden")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn a_non_ascii_byte_elsewhere_in_the_cookie_header_does_not_hide_the_refresh_cookie() {
    let s = server(false);
    let (_, cookie) = s.login().await;
    let header = [
        b"theme=caf\xe9; ".as_slice(),
        REFRESH_COOKIE_NAME.as_bytes(),
        b"=",
        cookie.as_bytes(),
        b"; ",
        anchor(&cookie).as_bytes(),
    ]
    .concat();
    let res = s.send(refresh_with_cookie_header(&header)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_ne!(refresh_cookie_of(&res).unwrap(), cookie);
}

fn anchor(token: &str) -> String {
    format!(
        "{}={}",
        tokenwarden_server::extract::ANCHOR_COOKIE,
        tokenwarden_server::tokens::refresh_anchor(token)
    )
}

/// A sibling host can plant a `__Secure-` cookie for the whole domain, ahead of the real
/// one: a live refresh cookie of the planter's own session. Before the anchor cookie, it was
/// rotated first: the user's app got the planter's session and, in place of the user's own
/// cookie, the planter's next one; in a browser with no session, it signed the app in as
/// the planter (login CSRF).
#[tokio::test]
async fn a_planted_live_refresh_cookie_of_another_session_is_ignored() {
    let s = server(false);
    let (user_access, user) = s.login().await;
    let (_, planter) = s.login().await;
    let header = format!(
        "{REFRESH_COOKIE_NAME}={planter}; {REFRESH_COOKIE_NAME}={user}; {}",
        anchor(&user)
    );
    let res = s.send(refresh_with_cookie_header(header.as_bytes())).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = body_json(res).await;
    let sid = |t: &str| decode_part(t, 1)["sid"].clone();
    assert_eq!(
        sid(body["access_token"].as_str().unwrap()),
        sid(&user_access),
        "the user's own session rotated"
    );
    // Alone, without its anchor: no session at all.
    let header = format!("{REFRESH_COOKIE_NAME}={planter}");
    let res = s.send(refresh_with_cookie_header(header.as_bytes())).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        set_cookie_of(&res).is_none(),
        "and nothing of it is cleared"
    );
    // The planter's cookie was never rotated: it still works with its anchor.
    assert_eq!(
        s.send(refresh_request(&planter)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_planted_refresh_cookie_ahead_of_the_real_one_neither_fails_nor_logs_out() {
    let s = server(false);
    let (_, cookie) = s.login().await;
    let planted = "A".repeat(43);
    let header = format!(
        "{REFRESH_COOKIE_NAME}={planted}; {REFRESH_COOKIE_NAME}={cookie}; {}; {}",
        anchor(&planted),
        anchor(&cookie)
    );
    let res = s.send(refresh_with_cookie_header(header.as_bytes())).await;
    assert_eq!(res.status(), StatusCode::OK);
    let rotated = refresh_cookie_of(&res).unwrap();
    assert_ne!(rotated, cookie);

    // Two candidates, both dead: 401, but the cookie is not cleared (it may not be ours).
    let header = format!(
        "{REFRESH_COOKIE_NAME}={planted}; {REFRESH_COOKIE_NAME}={planted}B; {}; {}",
        anchor(&planted),
        anchor(&format!("{planted}B"))
    );
    let res = s.send(refresh_with_cookie_header(header.as_bytes())).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie_of(&res).is_none(), "{:?}", set_cookie_of(&res));

    // One candidate, dead: it is the request's own, and is cleared.
    let res = s.send(refresh_request(&planted)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie_of(&res).unwrap().contains("Max-Age=0"));

    assert_eq!(
        s.send(refresh_request(&rotated)).await.status(),
        StatusCode::OK
    );
}

// ---- 6. low-S only ------------------------------------------------------------------------------

fn with_high_s(token: &str) -> String {
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
    assert!(sig.normalize_s().is_none(), "issued tokens are low-S");
    let high = Signature::from_scalars(sig.r(), -sig.s()).unwrap();
    assert!(high.normalize_s().is_some());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(high.to_bytes()))
}

#[tokio::test]
async fn the_high_s_twin_of_a_valid_token_is_refused() {
    let s = server(false);
    for _ in 0..8 {
        let (access, _) = s.login().await;
        let twin = with_high_s(&access);
        assert_ne!(twin, access);
        assert_eq!(s.send(me_request(&access)).await.status(), StatusCode::OK);
        assert_eq!(
            s.send(me_request(&twin)).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

// ---- 7. access tokens die with their family ----------------------------------------------------

#[tokio::test]
async fn an_access_token_is_refused_after_logout_long_before_it_expires() {
    let s = server(true);
    let (access, cookie) = s.login().await;
    let claims = decode_part(&access, 1);
    assert!(claims["sid"].is_string(), "{claims}");
    assert_eq!(s.send(me_request(&access)).await.status(), StatusCode::OK);
    s.send(
        with_cookie(post("/auth/logout"), &cookie)
            .header("X-Requested-With", "x")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let res = s.send(me_request(&access)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()[header::WWW_AUTHENTICATE],
        "Bearer error=\"invalid_token\""
    );
    assert_eq!(s.counters().await["apiRevokedTokens"], 1);
}

#[tokio::test]
async fn reuse_revokes_the_access_tokens_of_the_whole_family() {
    let s = server(false);
    let (first_access, first) = s.login().await;
    let res = s.send(refresh_request(&first)).await;
    let newest_access = body_json(res).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (other_access, _) = s.login().await;
    s.clock.advance_ms(10_000); // past the lost-response window
    assert_eq!(
        s.send(refresh_request(&first)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    for token in [&first_access, &newest_access] {
        assert_eq!(
            s.send(me_request(token)).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        s.send(me_request(&other_access)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_token_without_a_sid_is_refused() {
    let s = server(false);
    let mut claims = s.valid_claims();
    claims.as_object_mut().unwrap().remove("sid");
    assert_eq!(
        s.send(me_request(&s.sign(&claims))).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_restart_on_the_same_store_and_key_still_refuses_tokens_of_revoked_families() {
    let dir = tempfile::tempdir().unwrap();
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let clock = Arc::new(ManualClock::new(START_MS));
    let start = || {
        let state = AppState::new(
            &Config::default(),
            KeySet::from_signing_key(key.clone()),
            Arc::new(SqliteStore::open(dir.path()).unwrap()),
            clock.clone(),
        );
        (app(state.clone()), state)
    };
    let (router, _) = start();
    let s = TestServer::from_router(router, clock.clone(), key.clone());
    let (access, cookie) = s.login().await;
    s.send(
        with_cookie(post("/auth/logout"), &cookie)
            .header("X-Requested-With", "x")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let (router, state) = start();
    assert_eq!(session::restore_revocations(&state).await.unwrap(), 1);
    let s = TestServer::from_router(router, clock, key);
    assert_eq!(
        s.send(me_request(&access)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

// ---- Origin / Sec-Fetch-Site ----------------------------------------------------------------

#[tokio::test]
async fn login_refresh_and_logout_from_a_foreign_origin_are_refused_and_leave_the_session_alone() {
    let s = server(true);
    let (_, cookie) = s.login().await;
    let foreign = |builder: axum::http::request::Builder| {
        builder
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::ORIGIN, "https://evil.example")
    };
    let res = s
        .send(
            foreign(post("/auth/login"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"username":"demo","password":"demo"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    for path in ["/auth/refresh", "/auth/logout"] {
        let res = s
            .send(
                foreign(with_cookie(post(path), &cookie))
                    .header("X-Requested-With", "x")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(set_cookie_of(&res).is_none(), "{path}");
    }
    let res = s
        .send(
            with_cookie(post("/auth/refresh"), &cookie)
                .header("Sec-Fetch-Site", "cross-site")
                .header("X-Requested-With", "x")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(s.counters().await["originRefused"], 4);
    // Same origin, and no browser headers at all, both pass.
    let res = s
        .send(
            with_cookie(post("/auth/refresh"), &cookie)
                .header(header::HOST, "127.0.0.1:8080")
                .header(header::ORIGIN, "http://127.0.0.1:8080")
                .header("Sec-Fetch-Site", "same-origin")
                .header("X-Requested-With", "x")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let next = refresh_cookie_of(&res).unwrap();
    assert_eq!(
        s.send(refresh_request(&next)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_allow_listed_origin_may_log_in() {
    let s = server_with(Config {
        memory_store: true,
        allowed_origins: vec!["https://app.example".into()],
        ..Config::default()
    });
    let res = s
        .send(
            post("/auth/login")
                .header(header::HOST, "api.example")
                .header(header::ORIGIN, "https://app.example")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"username":"demo","password":"demo"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}
