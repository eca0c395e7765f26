//! A DPoP proof of the fake shell checked the way the reference server
//! checks one (typ, alg, jwk, the fake key's signature, iat), for the native
//! DPoP tests (tests/client_dpop_fake.rs, tests/client_dpop_tabs_fake.rs).

use tokenwarden::fake::fake_signature;
use tokenwarden::policy::json::{self, Value};
use tokenwarden::policy::jwt::base64url_decode;

/// A proof checked like the reference server checks it; `Err` names the check.
#[derive(Debug, Clone)]
pub struct Checked {
    #[allow(dead_code)] // read by client_dpop_fake only
    pub iat: i64,
    pub key: String,
    pub htm: String,
    pub htu: String,
    pub jti: String,
    pub ath: Option<String>,
    pub nonce: Option<String>,
}

pub fn check(proof: &str, now_s: i64) -> Result<Checked, &'static str> {
    let parts: Vec<&str> = proof.split('.').collect();
    let [h, p, s] = parts[..] else {
        return Err("framing");
    };
    let text = |part: &str| String::from_utf8(base64url_decode(part).unwrap()).unwrap();
    let header = json::parse(&text(h)).map_err(|_| "header json")?;
    let claims = json::parse(&text(p)).map_err(|_| "claims json")?;
    let get = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    if get(&header, "typ").as_deref() != Some("dpop+jwt") {
        return Err("typ");
    }
    if get(&header, "alg").as_deref() != Some("ES256") {
        return Err("alg");
    }
    let jwk = header.get("jwk").ok_or("jwk")?;
    if jwk.get("d").is_some() || get(jwk, "kty").as_deref() != Some("EC") {
        return Err("jwk");
    }
    let x = get(jwk, "x").ok_or("x")?;
    let id: u64 = x.trim_start_matches('x').parse().map_err(|_| "x")?;
    let input = format!("{h}.{p}");
    if base64url_decode(s).unwrap() != fake_signature(id, &input) {
        return Err("signature");
    }
    let iat = claims.get("iat").and_then(Value::as_f64).ok_or("iat")? as i64;
    if (now_s - iat).abs() > 60 {
        return Err("iat");
    }
    Ok(Checked {
        iat,
        key: x,
        htm: get(&claims, "htm").ok_or("htm")?,
        htu: get(&claims, "htu").ok_or("htu")?,
        jti: get(&claims, "jti").ok_or("jti")?,
        ath: get(&claims, "ath"),
        nonce: get(&claims, "nonce"),
    })
}

pub fn header(h: &[(String, String)], name: &str) -> Option<String> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}
