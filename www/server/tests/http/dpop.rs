//! DPoP (RFC 9449) on the refresh endpoint and `/api/me`: every check of §4.3 refused on
//! its own, `cnf.jkt` binding, the family's key rule, nonces and the §7.1 challenges.

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use p256::ecdsa::SigningKey;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokenwarden_server::Config;

use crate::common::*;

const HOST: &str = "127.0.0.1:8080";
const REFRESH_URL: &str = "http://127.0.0.1:8080/auth/refresh";
const ME_URL: &str = "http://127.0.0.1:8080/api/me";

/// A browser's DPoP key pair, as WebCrypto would make it.
struct Key(SigningKey);

impl Key {
    fn new() -> Self {
        Key(SigningKey::random(&mut rand_core::OsRng))
    }

    fn jwk(&self) -> Value {
        let point = self.0.verifying_key().to_encoded_point(false);
        json!({ "kty": "EC", "crv": "P-256", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()) })
    }

    fn jkt(&self) -> String {
        let j = self.jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            j["x"].as_str().unwrap(),
            j["y"].as_str().unwrap()
        );
        b64(&Sha256::digest(canonical.as_bytes()))
    }

    fn header(&self) -> Value {
        json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk() })
    }

    fn claims(&self, ts: &TestServer, htm: &str, htu: &str) -> Value {
        json!({ "jti": tokenwarden_server::tokens::random_id(12), "htm": htm, "htu": htu, "iat": ts.now_s() })
    }

    /// A valid proof for `htm htu` (with `ath` for `token`), then changed by `edit`.
    fn proof_with(
        &self,
        ts: &TestServer,
        htm: &str,
        htu: &str,
        token: Option<&str>,
        edit: impl FnOnce(&mut Value, &mut Value),
    ) -> String {
        let mut header = self.header();
        let mut claims = self.claims(ts, htm, htu);
        if let Some(t) = token {
            claims["ath"] = json!(b64(&Sha256::digest(t.as_bytes())));
        }
        edit(&mut header, &mut claims);
        es256_with_header(&self.0, &header, &claims)
    }

    fn refresh_proof(&self, ts: &TestServer) -> String {
        self.proof_with(ts, "POST", REFRESH_URL, None, |_, _| {})
    }

    fn me_proof(&self, ts: &TestServer, token: &str) -> String {
        self.proof_with(ts, "GET", ME_URL, Some(token), |_, _| {})
    }
}

fn dpop_refresh(cookie: &str, proof: Option<&str>) -> Request<Body> {
    let mut b = with_cookie(post("/auth/refresh"), cookie)
        .header(header::HOST, HOST)
        .header("X-Requested-With", "tokenwarden");
    if let Some(p) = proof {
        b = b.header("DPoP", p);
    }
    b.body(Body::empty()).unwrap()
}

fn dpop_me(token: &str, proof: Option<&str>) -> Request<Body> {
    let mut b = Request::builder()
        .uri("/api/me")
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, format!("DPoP {token}"));
    if let Some(p) = proof {
        b = b.header("DPoP", p);
    }
    b.body(Body::empty()).unwrap()
}

fn challenge(res: &Response<Body>) -> String {
    res.headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn nonce_of(res: &Response<Body>) -> Option<String> {
    res.headers()
        .get("dpop-nonce")
        .map(|v| v.to_str().unwrap().to_string())
}

/// Log in, then bind the session with one DPoP refresh; returns (bound token, cookie).
async fn bound_session(ts: &TestServer, key: &Key) -> (String, String) {
    let (_, cookie) = ts.login().await;
    let res = ts
        .send(dpop_refresh(&cookie, Some(&key.refresh_proof(ts))))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = refresh_cookie_of(&res).unwrap();
    let body = body_json(res).await;
    assert_eq!(body["token_type"], "DPoP");
    (body["access_token"].as_str().unwrap().to_string(), cookie)
}

fn memory(config: Config) -> TestServer {
    server_with(Config {
        memory_store: true,
        ..config
    })
}

#[tokio::test]
async fn a_refresh_with_a_proof_binds_the_token_to_the_key_and_me_accepts_it_with_a_proof() {
    let ts = server(false);
    let key = Key::new();
    let (token, _) = bound_session(&ts, &key).await;
    assert_eq!(decode_part(&token, 1)["cnf"]["jkt"], key.jkt());
    let res = ts
        .send(dpop_me(&token, Some(&key.me_proof(&ts, &token))))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_json(res).await["cnf"]["jkt"], key.jkt());
}

#[tokio::test]
async fn a_bound_token_is_refused_without_a_proof_as_bearer_and_with_another_key() {
    let ts = server(false);
    let key = Key::new();
    let (token, _) = bound_session(&ts, &key).await;
    let res = ts.send(dpop_me(&token, None)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&res),
        r#"DPoP error="invalid_dpop_proof", algs="ES256""#
    );
    let res = ts.send(me_request(&token)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let thief = Key::new();
    let res = ts
        .send(dpop_me(&token, Some(&thief.me_proof(&ts, &token))))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&res).contains("invalid_dpop_proof"));
}

#[tokio::test]
async fn an_unbound_token_under_the_dpop_scheme_is_an_invalid_token() {
    let ts = server(false);
    let key = Key::new();
    let (token, _) = ts.login().await;
    let res = ts
        .send(dpop_me(&token, Some(&key.me_proof(&ts, &token))))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&res),
        r#"DPoP error="invalid_token", algs="ES256""#
    );
}

/// One §4.3 check broken at a time on /api/me; everything else in the proof is valid.
#[tokio::test]
async fn each_proof_check_on_its_own_refuses_the_api_call() {
    let ts = server(false);
    let key = Key::new();
    let (token, _) = bound_session(&ts, &key).await;
    let hs256 = {
        // A well-formed HS256 JWS (HMAC with a key the attacker chose).
        use hmac::{Hmac, Mac};
        let mut header = key.header();
        header["alg"] = json!("HS256");
        let mut claims = key.claims(&ts, "GET", ME_URL);
        claims["ath"] = json!(b64(&Sha256::digest(token.as_bytes())));
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    };
    let alg_none = {
        let mut header = key.header();
        header["alg"] = json!("none");
        let mut claims = key.claims(&ts, "GET", ME_URL);
        claims["ath"] = json!(b64(&Sha256::digest(token.as_bytes())));
        format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        )
    };
    let bad_signature = {
        let p = key.me_proof(&ts, &token);
        let other = Key::new().me_proof(&ts, &token);
        let (input, _) = p.rsplit_once('.').unwrap();
        format!("{input}.{}", other.rsplit_once('.').unwrap().1)
    };
    let now = ts.now_s();
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong typ",
            key.proof_with(&ts, "GET", ME_URL, Some(&token), |h, _| {
                h["typ"] = json!("JWT")
            }),
        ),
        (
            "no typ",
            key.proof_with(&ts, "GET", ME_URL, Some(&token), |h, _| {
                h.as_object_mut().unwrap().remove("typ");
            }),
        ),
        ("alg none", alg_none),
        ("HS256", hs256),
        (
            "RS256 label",
            key.proof_with(&ts, "GET", ME_URL, Some(&token), |h, _| {
                h["alg"] = json!("RS256")
            }),
        ),
        (
            "private key in jwk",
            key.proof_with(&ts, "GET", ME_URL, Some(&token), |h, _| {
                h["jwk"]["d"] = json!(b64(&[7u8; 32]))
            }),
        ),
        (
            "no jwk",
            key.proof_with(&ts, "GET", ME_URL, Some(&token), |h, _| {
                h.as_object_mut().unwrap().remove("jwk");
            }),
        ),
        (
            "crit header",
            key.proof_with(&ts, "GET", ME_URL, Some(&token), |h, _| {
                h["crit"] = json!(["x"])
            }),
        ),
        ("bad signature", bad_signature),
        (
            "wrong htm",
            key.proof_with(&ts, "POST", ME_URL, Some(&token), |_, _| {}),
        ),
        (
            "wrong htu path",
            key.proof_with(
                &ts,
                "GET",
                "http://127.0.0.1:8080/api/you",
                Some(&token),
                |_, _| {},
            ),
        ),
        (
            "wrong htu host",
            key.proof_with(
                &ts,
                "GET",
                "http://evil.example/api/me",
                Some(&token),
                |_, _| {},
            ),
        ),
        (
            "stale iat",
            key.proof_with(&ts, "GET", ME_URL, Some(&token), |_, c| {
                c["iat"] = json!(now - 61)
            }),
        ),
        (
            "future iat",
            key.proof_with(&ts, "GET", ME_URL, Some(&token), |_, c| {
                c["iat"] = json!(now + 60)
            }),
        ),
        (
            "no ath",
            key.proof_with(&ts, "GET", ME_URL, None, |_, _| {}),
        ),
        (
            "wrong ath",
            key.proof_with(&ts, "GET", ME_URL, Some("another token"), |_, _| {}),
        ),
        (
            "no jti",
            key.proof_with(&ts, "GET", ME_URL, Some(&token), |_, c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
        ),
        ("not a JWS", "not.a.proof".to_string()),
    ];
    let before = ts.state.metrics.counters.dpop_refused.get();
    for (what, proof) in &cases {
        let res = ts.send(dpop_me(&token, Some(proof))).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(
            challenge(&res),
            r#"DPoP error="invalid_dpop_proof", algs="ES256""#,
            "{what}"
        );
        let body = String::from_utf8(body_bytes(res).await).unwrap();
        assert!(
            !body.contains(proof.as_str()) && !body.contains(&token),
            "{what}"
        );
    }
    assert_eq!(
        ts.state.metrics.counters.dpop_refused.get() - before,
        cases.len() as u64
    );
    // The same request with an intact proof passes: each case failed on its one change.
    let res = ts
        .send(dpop_me(&token, Some(&key.me_proof(&ts, &token))))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_proof_is_accepted_within_the_window_and_not_twice() {
    let ts = server(false);
    let key = Key::new();
    let (token, _) = bound_session(&ts, &key).await;
    let proof = key.me_proof(&ts, &token);
    ts.advance_s(59);
    assert_eq!(
        ts.send(dpop_me(&token, Some(&proof))).await.status(),
        StatusCode::OK
    );
    let res = ts.send(dpop_me(&token, Some(&proof))).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "replayed jti");
    assert!(challenge(&res).contains("invalid_dpop_proof"));
    // Two proofs with the same jti but fresh signatures: still a replay.
    let jti = "fixed-jti";
    let a = key.proof_with(&ts, "GET", ME_URL, Some(&token), |_, c| {
        c["jti"] = json!(jti)
    });
    let b = key.proof_with(&ts, "GET", ME_URL, Some(&token), |_, c| {
        c["jti"] = json!(jti)
    });
    assert_eq!(
        ts.send(dpop_me(&token, Some(&a))).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        ts.send(dpop_me(&token, Some(&b))).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn two_dpop_headers_are_refused() {
    let ts = server(false);
    let key = Key::new();
    let (token, _) = bound_session(&ts, &key).await;
    let req = Request::builder()
        .uri("/api/me")
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, format!("DPoP {token}"))
        .header("DPoP", key.me_proof(&ts, &token))
        .header("DPoP", key.me_proof(&ts, &token))
        .body(Body::empty())
        .unwrap();
    assert_eq!(ts.send(req).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_refresh_endpoint_refuses_a_bad_proof_with_400_and_keeps_the_session() {
    let ts = server(false);
    let key = Key::new();
    let (_, cookie) = bound_session(&ts, &key).await;
    let cases = [
        (
            "wrong htm",
            key.proof_with(&ts, "GET", REFRESH_URL, None, |_, _| {}),
        ),
        (
            "wrong htu",
            key.proof_with(&ts, "POST", ME_URL, None, |_, _| {}),
        ),
        (
            "wrong typ",
            key.proof_with(&ts, "POST", REFRESH_URL, None, |h, _| {
                h["typ"] = json!("jwt")
            }),
        ),
    ];
    for (what, proof) in &cases {
        let res = ts.send(dpop_refresh(&cookie, Some(proof))).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{what}");
        assert!(
            set_cookie_of(&res).is_none(),
            "{what}: the cookie is not touched"
        );
        assert_eq!(
            body_json(res).await["error"],
            "invalid_dpop_proof",
            "{what}"
        );
    }
    // The cookie did not rotate: it still works with a good proof.
    let res = ts
        .send(dpop_refresh(&cookie, Some(&key.refresh_proof(&ts))))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_bound_family_refuses_a_refresh_without_a_proof_or_with_a_new_key_while_its_tokens_live()
{
    let ts = server(false);
    let key = Key::new();
    let (_, cookie) = bound_session(&ts, &key).await;
    let res = ts.send(dpop_refresh(&cookie, None)).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "downgrade to Bearer");
    let thief = Key::new();
    let res = ts
        .send(dpop_refresh(&cookie, Some(&thief.refresh_proof(&ts))))
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "another key");
    assert_eq!(body_json(res).await["error"], "invalid_dpop_proof");
    // Once every token of the old key has expired (60 s + 5 s leeway + 1 s), a new key
    // (a new browser session) may take the family over.
    ts.advance_s(67);
    let fresh = Key::new();
    let res = ts
        .send(dpop_refresh(&cookie, Some(&fresh.refresh_proof(&ts))))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let token = body_json(res).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(decode_part(&token, 1)["cnf"]["jkt"], fresh.jkt());
}

#[tokio::test]
async fn a_login_with_a_proof_is_bound_from_the_start() {
    let ts = server(false);
    let key = Key::new();
    let proof = key.proof_with(
        &ts,
        "POST",
        "http://127.0.0.1:8080/auth/login",
        None,
        |_, _| {},
    );
    let req = Request::builder()
        .method("POST")
        .uri("/auth/login")
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/json")
        .header("DPoP", proof)
        .body(Body::from(
            json!({"username": "demo", "password": "demo"}).to_string(),
        ))
        .unwrap();
    let res = ts.send(req).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = body_json(res).await;
    assert_eq!(body["token_type"], "DPoP");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(decode_part(token, 1)["cnf"]["jkt"], key.jkt());
}

#[tokio::test]
async fn when_dpop_is_required_bearer_calls_and_proofless_refreshes_are_refused() {
    let ts = memory(Config {
        dpop_required: true,
        ..Config::default()
    });
    let (token, cookie) = ts.login().await;
    let res = ts.send(me_request(&token)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&res), r#"DPoP algs="ES256""#);
    let res = ts.send(dpop_refresh(&cookie, None)).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(res).await["error"], "invalid_dpop_proof");
    let key = Key::new();
    let res = ts
        .send(dpop_refresh(&cookie, Some(&key.refresh_proof(&ts))))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn with_nonces_on_a_missing_or_stale_nonce_is_answered_with_use_dpop_nonce() {
    let ts = memory(Config {
        dpop_nonce: true,
        ..Config::default()
    });
    let key = Key::new();
    let (_, cookie) = ts.login().await;
    // Refresh without a nonce: 400 use_dpop_nonce and the nonce to use.
    let res = ts
        .send(dpop_refresh(&cookie, Some(&key.refresh_proof(&ts))))
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let nonce = nonce_of(&res).expect("DPoP-Nonce");
    assert_eq!(body_json(res).await["error"], "use_dpop_nonce");
    let with = |n: &str| {
        let n = n.to_string();
        move |_: &mut Value, c: &mut Value| c["nonce"] = json!(n)
    };
    let proof = key.proof_with(&ts, "POST", REFRESH_URL, None, with(&nonce));
    let res = ts.send(dpop_refresh(&cookie, Some(&proof))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(nonce_of(&res).as_deref(), Some(nonce.as_str()));
    let cookie = refresh_cookie_of(&res).unwrap();
    let token = body_json(res).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // /api/me with the nonce: 200; without: 401 use_dpop_nonce.
    let proof = key.proof_with(&ts, "GET", ME_URL, Some(&token), with(&nonce));
    assert_eq!(
        ts.send(dpop_me(&token, Some(&proof))).await.status(),
        StatusCode::OK
    );
    let res = ts
        .send(dpop_me(&token, Some(&key.me_proof(&ts, &token))))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&res),
        r#"DPoP error="use_dpop_nonce", algs="ES256""#
    );
    // A changed nonce: the old one is stale.
    ts.state.change_dpop_nonce();
    let proof = key.proof_with(&ts, "GET", ME_URL, Some(&token), with(&nonce));
    let res = ts.send(dpop_me(&token, Some(&proof))).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&res).contains("use_dpop_nonce"));
    let fresh = nonce_of(&res).unwrap();
    assert_ne!(fresh, nonce);
    let proof = key.proof_with(&ts, "GET", ME_URL, Some(&token), with(&fresh));
    assert_eq!(
        ts.send(dpop_me(&token, Some(&proof))).await.status(),
        StatusCode::OK
    );
    // Rotation by age (300 s) keeps the previous nonce valid for one more lifetime and
    // hands out the new one.
    ts.advance_s(301);
    let proof = key.proof_with(&ts, "POST", REFRESH_URL, None, with(&fresh));
    let res = ts.send(dpop_refresh(&cookie, Some(&proof))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let newer = nonce_of(&res).unwrap();
    assert_ne!(newer, fresh);
    let cookie = refresh_cookie_of(&res).unwrap();
    ts.advance_s(301);
    let proof = key.proof_with(&ts, "POST", REFRESH_URL, None, with(&fresh));
    let res = ts.send(dpop_refresh(&cookie, Some(&proof))).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "two lifetimes later");
}

/// Two instances on one store (as behind a round-robin proxy) hand out and accept the same
/// nonce: the nonce key is shared through the store. With a nonce drawn per instance, the
/// second instance answered the first one's nonce with `use_dpop_nonce`, every time.
#[tokio::test]
async fn two_instances_on_one_store_accept_each_others_dpop_nonce() {
    let config = Config {
        dpop_nonce: true,
        memory_store: true,
        ..Config::default()
    };
    let a = server_with(config.clone());
    let state = tokenwarden_server::AppState::new(
        &config,
        tokenwarden_server::keys::KeySet::from_signing_key(a.signing_key.clone()),
        a.state.store.clone(),
        a.clock.clone(),
    );
    let b = TestServer {
        router: tokenwarden_server::app(state.clone()),
        state,
        clock: a.clock.clone(),
        signing_key: a.signing_key.clone(),
    };
    for ts in [&a, &b] {
        tokenwarden_server::shared::init_nonce_key(&ts.state)
            .await
            .unwrap();
    }
    let key = Key::new();
    let (_, cookie) = a.login().await;
    let res = a
        .send(dpop_refresh(&cookie, Some(&key.refresh_proof(&a))))
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let nonce = nonce_of(&res).expect("DPoP-Nonce");
    let proof = key.proof_with(&b, "POST", REFRESH_URL, None, |_, c| {
        c["nonce"] = json!(nonce)
    });
    let res = b.send(dpop_refresh(&cookie, Some(&proof))).await;
    assert_eq!(res.status(), StatusCode::OK, "b takes a's nonce");
    assert_eq!(
        nonce_of(&res),
        Some(nonce.clone()),
        "and hands out the same"
    );
    // A nonce lives one to two lifetimes on every instance alike.
    let cookie = refresh_cookie_of(&res).unwrap();
    a.advance_s(2 * 300 + 1);
    let proof = key.proof_with(&a, "POST", REFRESH_URL, None, |_, c| {
        c["nonce"] = json!(nonce)
    });
    let res = a.send(dpop_refresh(&cookie, Some(&proof))).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "stale on a");
    let fresh = nonce_of(&res).unwrap();
    assert_ne!(fresh, nonce);
    let proof = key.proof_with(&b, "POST", REFRESH_URL, None, |_, c| {
        c["nonce"] = json!(nonce)
    });
    let res = b.send(dpop_refresh(&cookie, Some(&proof))).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "and on b");
    assert_eq!(nonce_of(&res), Some(fresh));
}

/// A bound family after two rotations: (the login token, retired and its successor used,
/// so presenting it is reuse; the live token).
async fn bound_family_with_a_retired_token(ts: &TestServer, key: &Key) -> (String, String) {
    let (_, retired) = ts.login().await;
    let res = ts
        .send(dpop_refresh(&retired, Some(&key.refresh_proof(ts))))
        .await;
    assert_eq!(res.status(), StatusCode::OK, "binding refresh");
    let next = refresh_cookie_of(&res).unwrap();
    let res = ts
        .send(dpop_refresh(&next, Some(&key.refresh_proof(ts))))
        .await;
    assert_eq!(res.status(), StatusCode::OK, "second refresh");
    (retired, refresh_cookie_of(&res).unwrap())
}

/// A refused refresh that ended the session: 401 invalid_grant, the one cookie cleared.
async fn assert_invalid_grant_and_cleared(res: Response<Body>, what: &str) {
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what}");
    assert!(
        set_cookie_of(&res).is_some_and(|c| c.contains("Max-Age=0")),
        "{what}: the cookie is cleared"
    );
    assert_eq!(body_json(res).await["error"], "invalid_grant", "{what}");
}

/// Reuse of a retired token is reuse whatever the proof: the key rule protects a token that
/// would rotate, not a retired one (SERVER.md: reuse revokes the family and is logged).
#[tokio::test]
async fn a_retired_token_of_a_bound_family_without_a_proof_is_reuse_and_revokes_the_family() {
    let ts = server(false);
    let key = Key::new();
    let (retired, live) = bound_family_with_a_retired_token(&ts, &key).await;
    let counters = &ts.state.metrics.counters;
    let reuse_before = counters.reuse_detected.get();
    let res = ts.send(dpop_refresh(&retired, None)).await;
    assert_invalid_grant_and_cleared(res, "retired token, no proof").await;
    assert_eq!(counters.reuse_detected.get() - reuse_before, 1);
    let res = ts
        .send(dpop_refresh(&live, Some(&key.refresh_proof(&ts))))
        .await;
    assert_invalid_grant_and_cleared(res, "the live token after the reuse").await;
}

#[tokio::test]
async fn a_retired_token_of_a_bound_family_with_another_keys_proof_is_reuse() {
    let ts = server(false);
    let key = Key::new();
    let (retired, live) = bound_family_with_a_retired_token(&ts, &key).await;
    let thief = Key::new();
    let reuse_before = ts.state.metrics.counters.reuse_detected.get();
    let res = ts
        .send(dpop_refresh(&retired, Some(&thief.refresh_proof(&ts))))
        .await;
    assert_invalid_grant_and_cleared(res, "retired token, another key").await;
    assert_eq!(
        ts.state.metrics.counters.reuse_detected.get() - reuse_before,
        1
    );
    let res = ts
        .send(dpop_refresh(&live, Some(&key.refresh_proof(&ts))))
        .await;
    assert_invalid_grant_and_cleared(res, "the live token after the reuse").await;
}

/// An invalid proof, or none under --dpop-required, does not hide reuse either.
#[tokio::test]
async fn a_retired_token_with_an_invalid_proof_or_none_when_required_is_reuse() {
    let ts = server(false);
    let key = Key::new();
    let (retired, live) = bound_family_with_a_retired_token(&ts, &key).await;
    let bad = key.proof_with(&ts, "POST", ME_URL, None, |_, _| {}); // wrong htu
    let res = ts.send(dpop_refresh(&retired, Some(&bad))).await;
    assert_invalid_grant_and_cleared(res, "retired token, invalid proof").await;
    let res = ts
        .send(dpop_refresh(&live, Some(&key.refresh_proof(&ts))))
        .await;
    assert_invalid_grant_and_cleared(res, "the live token after the reuse").await;

    let ts = memory(Config {
        dpop_required: true,
        ..Config::default()
    });
    let (retired, live) = bound_family_with_a_retired_token(&ts, &key).await;
    let res = ts.send(dpop_refresh(&retired, None)).await;
    assert_invalid_grant_and_cleared(res, "required: retired token, no proof").await;
    let res = ts
        .send(dpop_refresh(&live, Some(&key.refresh_proof(&ts))))
        .await;
    assert_invalid_grant_and_cleared(res, "required: the live token after the reuse").await;
}

#[tokio::test]
async fn after_logout_a_bound_familys_token_without_a_proof_is_invalid_grant() {
    let ts = server(false);
    let key = Key::new();
    let (_, cookie) = bound_session(&ts, &key).await;
    let res = ts
        .send(
            with_cookie(post("/auth/logout"), &cookie)
                .header("X-Requested-With", "tokenwarden")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = ts.send(dpop_refresh(&cookie, None)).await;
    assert_invalid_grant_and_cleared(res, "after logout, no proof").await;
    let res = ts
        .send(dpop_refresh(&cookie, Some(&Key::new().refresh_proof(&ts))))
        .await;
    assert_invalid_grant_and_cleared(res, "after logout, another key").await;
    let res = ts
        .send(dpop_refresh(&cookie, Some(&key.refresh_proof(&ts))))
        .await;
    assert_invalid_grant_and_cleared(res, "after logout, the family's key").await;
}

/// The key rule still guards every token that would otherwise be accepted: the live token,
/// and the parent replayed inside the lost-response window (its successor is handed out
/// again only to the family's key). Refusing it changes nothing.
#[tokio::test]
async fn the_live_token_and_a_lost_response_replay_still_need_the_familys_key() {
    let ts = server(false);
    let key = Key::new();
    let (_, parent) = bound_session(&ts, &key).await;
    let res = ts
        .send(dpop_refresh(&parent, Some(&key.refresh_proof(&ts))))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let successor = refresh_cookie_of(&res).unwrap();
    let thief = Key::new();
    for (what, cookie) in [("replayed parent", &parent), ("live token", &successor)] {
        let res = ts.send(dpop_refresh(cookie, None)).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{what}, no proof");
        assert!(set_cookie_of(&res).is_none(), "{what}: cookie kept");
        assert_eq!(body_json(res).await["error"], "invalid_dpop_proof");
        let res = ts
            .send(dpop_refresh(cookie, Some(&thief.refresh_proof(&ts))))
            .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{what}, another key");
        assert!(set_cookie_of(&res).is_none(), "{what}: cookie kept");
    }
    assert_eq!(ts.state.metrics.counters.reuse_detected.get(), 0);
    // The parent with the family's key: the same successor again (the lost response).
    let res = ts
        .send(dpop_refresh(&parent, Some(&key.refresh_proof(&ts))))
        .await;
    assert_eq!(res.status(), StatusCode::OK, "replayed parent, the key");
    assert_eq!(refresh_cookie_of(&res).as_deref(), Some(successor.as_str()));
    let res = ts
        .send(dpop_refresh(&successor, Some(&key.refresh_proof(&ts))))
        .await;
    assert_eq!(res.status(), StatusCode::OK, "live token, the key");
}
