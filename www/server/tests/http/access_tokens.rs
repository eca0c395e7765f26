//! `/api/me` validation, JWKS and key rotation.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use hmac::{Hmac, Mac as _};
use p256::pkcs8::EncodePublicKey as _;
use serde_json::{json, Value};
use sha2::Sha256;
use tokenwarden_server::keys::KeySet;

use crate::common::*;

async fn me_status(s: &TestServer, token: &str) -> (StatusCode, Option<String>) {
    let res = s.send(me_request(token)).await;
    let challenge = res
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_string());
    (res.status(), challenge)
}

async fn assert_refused(s: &TestServer, token: &str, why: &str) {
    let (status, challenge) = me_status(s, token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}");
    assert_eq!(
        challenge.as_deref(),
        Some("Bearer error=\"invalid_token\""),
        "{why}"
    );
}

fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

#[tokio::test]
async fn a_fresh_access_token_gets_the_callers_claims_from_api_me() {
    let s = server(true);
    let (token, _) = s.login().await;
    let res = s.send(me_request(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let claims = body_json(res).await;
    assert_eq!(claims["sub"], "demo");
    assert_eq!(claims["scope"], "read:me profile");
    let c = s.counters().await;
    assert_eq!(
        (c["apiCalls"].as_u64(), c["apiOk"].as_u64()),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn api_me_without_a_token_answers_a_bare_bearer_challenge() {
    let s = server(true);
    let res = s
        .send(
            Request::builder()
                .uri("/api/me")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()[header::WWW_AUTHENTICATE], "Bearer");
    let c = s.counters().await;
    assert_eq!(c["apiNoToken"], 1);
    assert_eq!(c["apiUnauthorized"], 1);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let s = server(false);
    let kid = s.state.with_keys(|k| k.current_kid().to_string());
    let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    let token = format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(s.valid_claims().to_string().as_bytes())
    );
    assert_refused(&s, &token, "alg none").await;
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_as_hmac_secret_is_refused() {
    let s = server(false);
    let (kid, point, pem) = s.state.with_keys(|k| {
        let (kid, key) = k.verification_keys().next().unwrap();
        let pem = key.to_public_key_pem(p256::pkcs8::LineEnding::LF).unwrap();
        (
            kid.to_string(),
            key.to_encoded_point(false).as_bytes().to_vec(),
            pem,
        )
    });
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let jwks = s.state.with_keys(|k| k.jwks().to_string());
    for secret in [point.as_slice(), pem.as_bytes(), jwks.as_bytes()] {
        assert_refused(
            &s,
            &hs256(&header, &s.valid_claims(), secret),
            "HS256 key confusion",
        )
        .await;
    }
}

#[tokio::test]
async fn a_token_for_another_audience_or_issuer_is_refused() {
    let s = server(false);
    let mut claims = s.valid_claims();
    claims["aud"] = json!("someone-else");
    assert_refused(&s, &s.sign(&claims), "wrong aud").await;
    claims["aud"] = json!(["someone-else", "tokenwarden-demo-api"]);
    assert_eq!(
        me_status(&s, &s.sign(&claims)).await.0,
        StatusCode::OK,
        "aud array containing ours"
    );
    let mut claims = s.valid_claims();
    claims["iss"] = json!("https://evil.example");
    assert_refused(&s, &s.sign(&claims), "wrong iss").await;
    let mut claims = s.valid_claims();
    claims.as_object_mut().unwrap().remove("aud");
    assert_refused(&s, &s.sign(&claims), "no aud").await;
}

#[tokio::test]
async fn an_expired_token_is_refused_after_the_five_second_leeway() {
    let s = server(true);
    let mut claims = s.valid_claims();
    claims["exp"] = json!(s.now_s() - 4);
    assert_eq!(
        me_status(&s, &s.sign(&claims)).await.0,
        StatusCode::OK,
        "within leeway"
    );
    claims["exp"] = json!(s.now_s() - 5);
    assert_refused(&s, &s.sign(&claims), "expired").await;
    let mut claims = s.valid_claims();
    claims.as_object_mut().unwrap().remove("exp");
    assert_refused(&s, &s.sign(&claims), "no exp").await;
    let c = s.counters().await;
    assert_eq!(c["apiExpiredTokens"], 1);
    assert_eq!(c["apiUnauthorized"], 2);
}

#[tokio::test]
async fn a_login_token_stops_working_once_its_lifetime_and_leeway_pass() {
    let s = server(false);
    let (token, _) = s.login().await;
    s.advance_s(64);
    assert_eq!(me_status(&s, &token).await.0, StatusCode::OK);
    s.advance_s(1);
    assert_refused(&s, &token, "expired").await;
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let s = server(false);
    let mut claims = s.valid_claims();
    claims["nbf"] = json!(s.now_s() + 60);
    assert_refused(&s, &s.sign(&claims), "nbf in the future").await;
    claims["nbf"] = json!(s.now_s() + 3);
    assert_eq!(
        me_status(&s, &s.sign(&claims)).await.0,
        StatusCode::OK,
        "within leeway"
    );
}

#[tokio::test]
async fn a_tampered_signature_or_payload_is_refused() {
    let s = server(false);
    let (token, _) = s.login().await;
    let parts: Vec<&str> = token.split('.').collect();
    let mut sig: Vec<char> = parts[2].chars().collect();
    sig[10] = if sig[10] == 'A' { 'B' } else { 'A' };
    let bad_sig = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        sig.into_iter().collect::<String>()
    );
    assert_refused(&s, &bad_sig, "bad signature").await;

    let mut claims = decode_part(&token, 1);
    claims["sub"] = json!("admin");
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    );
    assert_refused(&s, &swapped, "payload changed").await;
    assert_refused(&s, "not-a-jwt", "garbage").await;
    assert_refused(&s, &format!("{token}.extra"), "four parts").await;
}

#[tokio::test]
async fn a_token_signed_by_an_unknown_key_is_refused() {
    let s = server(false);
    let stranger = KeySet::generate();
    assert_refused(
        &s,
        &stranger.sign(&s.valid_claims()).unwrap(),
        "unknown kid",
    )
    .await;
}

#[tokio::test]
async fn the_jwks_lists_every_verification_key_by_kid() {
    let s = server(false);
    let res = s
        .send(
            Request::builder()
                .uri("/.well-known/jwks.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let jwks = body_json(res).await;
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(
        key["kid"],
        s.state.with_keys(|k| k.current_kid().to_string())
    );
    assert!(key.get("d").is_none(), "no private part");
}

#[tokio::test]
async fn rotating_the_signing_key_keeps_tokens_signed_by_the_old_key_valid() {
    let s = server(true);
    let (old_token, cookie) = s.login().await;
    let res = s
        .send(post("/test/rotate-key").body(Body::empty()).unwrap())
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    assert_eq!(me_status(&s, &old_token).await.0, StatusCode::OK);
    let res = s.send(refresh_request(&cookie)).await;
    let new_token = body_json(res).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        decode_part(&old_token, 0)["kid"],
        decode_part(&new_token, 0)["kid"]
    );
    assert_eq!(me_status(&s, &new_token).await.0, StatusCode::OK);

    let res = s
        .send(
            Request::builder()
                .uri("/.well-known/jwks.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let kids: Vec<Value> = body_json(res).await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert_eq!(
        kids,
        vec![
            decode_part(&new_token, 0)["kid"].clone(),
            decode_part(&old_token, 0)["kid"].clone()
        ]
    );
}

/// The public half of `key` as an EC JWK, as an attacker would embed it.
fn public_jwk(key: &p256::ecdsa::SigningKey) -> Value {
    let point = key.verifying_key().to_encoded_point(false);
    json!({
        "kty": "EC", "crv": "P-256",
        "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
    })
}

#[tokio::test]
async fn a_hand_built_es256_token_signed_by_the_server_key_is_accepted() {
    // Control for the header tests below: the hand-built signer itself produces valid tokens,
    // so each refusal there is caused by the header under test.
    let s = server(false);
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": s.kid()});
    let (status, _) = me_status(&s, &s.sign_with_header(&header, &s.valid_claims())).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_crit_header_is_refused_whatever_its_value() {
    let s = server(false);
    for crit in [
        json!(["exp"]),
        json!(["b64"]),
        json!([]),
        json!("exp"),
        json!({}),
        json!(true),
        json!(0),
        json!(null),
    ] {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": s.kid(), "crit": crit});
        assert_refused(
            &s,
            &s.sign_with_header(&header, &s.valid_claims()),
            &format!("crit {crit}"),
        )
        .await;
    }
}

#[tokio::test]
async fn a_correctly_signed_token_without_a_kid_is_refused() {
    let s = server(false);
    let header = json!({"alg": "ES256", "typ": "JWT"});
    assert_refused(
        &s,
        &s.sign_with_header(&header, &s.valid_claims()),
        "no kid",
    )
    .await;
    for kid in [json!(null), json!(""), json!(0), json!([s.kid()])] {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": kid});
        assert_refused(
            &s,
            &s.sign_with_header(&header, &s.valid_claims()),
            &format!("kid {kid}"),
        )
        .await;
    }
}

#[tokio::test]
async fn an_embedded_jwk_header_is_ignored_so_a_strangers_self_signed_token_is_refused() {
    let s = server(false);
    let stranger = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let stranger_kid = KeySet::from_signing_key(stranger.clone())
        .current_kid()
        .to_string();
    let jwk = public_jwk(&stranger);
    for kid in [None, Some(stranger_kid), Some(s.kid())] {
        let mut header = json!({"alg": "ES256", "typ": "JWT", "jwk": jwk});
        let mut jwk_with_kid = jwk.clone();
        if let Some(kid) = &kid {
            header["kid"] = json!(kid);
            jwk_with_kid["kid"] = json!(kid);
        }
        let token = es256_with_header(&stranger, &header, &s.valid_claims());
        assert_refused(&s, &token, &format!("jwk, kid {kid:?}")).await;
        header["jwk"] = jwk_with_kid;
        let token = es256_with_header(&stranger, &header, &s.valid_claims());
        assert_refused(&s, &token, &format!("jwk carrying kid {kid:?}")).await;
    }
}

#[tokio::test]
async fn a_jku_header_is_ignored_so_a_strangers_token_pointing_at_its_own_key_set_is_refused() {
    let s = server(false);
    let stranger = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let stranger_kid = KeySet::from_signing_key(stranger.clone())
        .current_kid()
        .to_string();
    for kid in [None, Some(stranger_kid), Some(s.kid())] {
        for jku in [
            "https://evil.example/.well-known/jwks.json",
            "http://127.0.0.1/.well-known/jwks.json",
        ] {
            let mut header = json!({"alg": "ES256", "typ": "JWT", "jku": jku});
            if let Some(kid) = &kid {
                header["kid"] = json!(kid);
            }
            let token = es256_with_header(&stranger, &header, &s.valid_claims());
            assert_refused(&s, &token, &format!("jku {jku}, kid {kid:?}")).await;
            header["jwk"] = public_jwk(&stranger);
            let token = es256_with_header(&stranger, &header, &s.valid_claims());
            assert_refused(&s, &token, &format!("jku + jwk, kid {kid:?}")).await;
        }
    }
}

#[tokio::test]
async fn alg_none_in_any_letter_case_is_refused_with_or_without_a_signature() {
    let s = server(false);
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": s.kid()});
        let unsigned = format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(s.valid_claims().to_string().as_bytes())
        );
        assert_refused(&s, &unsigned, &format!("alg {alg}, empty signature")).await;
        let signed = s.sign_with_header(&header, &s.valid_claims());
        assert_refused(&s, &signed, &format!("alg {alg}, ES256 signature")).await;
    }
}

#[tokio::test]
async fn a_valid_es256_signature_under_another_claimed_alg_is_refused() {
    let s = server(false);
    for alg in [
        json!("ES384"),
        json!("ES512"),
        json!("RS256"),
        json!("PS256"),
        json!("EdDSA"),
        json!("HS256"),
        json!("es256"),
        json!("ES256 "),
        json!(["ES256"]),
        json!(null),
    ] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": s.kid()});
        assert_refused(
            &s,
            &s.sign_with_header(&header, &s.valid_claims()),
            &format!("alg {alg}"),
        )
        .await;
    }
    let header = json!({"typ": "JWT", "kid": s.kid()});
    assert_refused(
        &s,
        &s.sign_with_header(&header, &s.valid_claims()),
        "no alg",
    )
    .await;
}
