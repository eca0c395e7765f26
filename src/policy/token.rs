//! The access token as a value the rest of the code can hold without
//! leaking it: `Secret`'s `Debug` is redacted, and a token response is
//! validated (RFC 6749 §5.1) into a `Grant` before anything else sees it.

use super::json::{self, Value};
use super::jwt::{self, Claims};
use crate::error::{sanitize_oauth_error, Error};
#[allow(unused_imports)]
use crate::prelude::*;

/// An access token. `Debug` never prints it; only `expose()` does, and the
/// only callers are the header builder and the cross-tab message encoder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a token.
    pub fn new(token: String) -> Self {
        Secret(token)
    }

    /// The token itself, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl core::fmt::Debug for Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A validated token response: what the session stores.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    /// The access token.
    pub token: Secret,
    /// `expires_in` in seconds, when the response had it.
    pub expires_in: Option<f64>,
    /// Decoded (unverified) claims for JWTs; `None` for opaque tokens.
    pub claims: Option<Claims>,
    /// Bound to a key: `token_type` was `DPoP` (RFC 9449 §5), or the JWT
    /// carries `cnf.jkt` (§6.1) whatever `token_type` says.
    pub bound: bool,
}

/// Longest accepted `expires_in`: ten years. Larger values are clamped by
/// the lifetime rules; this only keeps arithmetic far from overflow.
const MAX_EXPIRES_IN: f64 = 315_576_000.0;

/// Parses and validates an OAuth 2.0 token response body (RFC 6749 §5.1).
pub fn parse_token_response(body: &str) -> Result<Grant, Error> {
    let v = json::parse(body).map_err(|_| Error::InvalidResponse("the body is not JSON"))?;
    grant_from_value(&v)
}

/// Validates an already parsed token response.
pub fn grant_from_value(v: &Value) -> Result<Grant, Error> {
    if !matches!(v, Value::Obj(_)) {
        return Err(Error::InvalidResponse("the body is not a JSON object"));
    }
    let token = match v.get("access_token") {
        Some(Value::Str(s)) if !s.is_empty() => s,
        Some(Value::Str(_)) => return Err(Error::InvalidResponse("access_token is empty")),
        Some(_) => return Err(Error::InvalidResponse("access_token is not a string")),
        None => return Err(Error::InvalidResponse("access_token is missing")),
    };
    if !token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        // RFC 6750 b64token charset is narrower; anything with spaces or
        // control characters cannot go into an Authorization header.
        return Err(Error::InvalidResponse(
            "access_token has characters a header cannot carry",
        ));
    }
    let bound = match v.get("token_type") {
        None | Some(Value::Null) => false,
        Some(Value::Str(t)) if t.eq_ignore_ascii_case("bearer") => false,
        Some(Value::Str(t)) if t.eq_ignore_ascii_case("dpop") => true,
        Some(_) => return Err(Error::InvalidResponse("token_type is not Bearer")),
    };
    let expires_in = match v.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Num(n)) => Some(*n),
        Some(Value::Str(s)) => Some(
            json::parse(s.trim_ascii())
                .ok()
                .and_then(|n| n.as_f64())
                .ok_or(Error::InvalidResponse("expires_in is not a number"))?,
        ),
        Some(_) => return Err(Error::InvalidResponse("expires_in is not a number")),
    };
    if let Some(e) = expires_in {
        if e < 0.0 {
            return Err(Error::InvalidResponse("expires_in is negative"));
        }
    }
    let claims = jwt::decode(token)?;
    // API.md: "a token bound to a key (`cnf.jkt`) is only ever sent with a
    // proof from that key", also when the response leaves `token_type` out
    // or says `Bearer`.
    let bound = bound || claims.as_ref().is_some_and(|c| c.key_bound);
    Ok(Grant {
        token: Secret::new(token.clone()),
        expires_in: expires_in.map(|e| e.min(MAX_EXPIRES_IN)),
        claims,
        bound,
    })
}

/// The OAuth `error` code of an error body, if it has a well-formed one.
pub fn oauth_error(body: &str) -> Option<String> {
    let v = json::parse(body).ok()?;
    sanitize_oauth_error(v.get("error")?.as_str()?)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::super::jwt::tests::jwt;
    use super::*;
    use proptest::prelude::*;

    fn code(body: &str) -> &'static str {
        parse_token_response(body).unwrap_err().code()
    }

    #[test]
    fn accepts_a_minimal_and_a_full_response() {
        let g = parse_token_response(r#"{"access_token":"opaque"}"#).unwrap();
        assert_eq!(g.token.expose(), "opaque");
        assert_eq!(g.expires_in, None);
        assert_eq!(g.claims, None);
        let t = jwt(r#"{"exp":2000,"iat":1000}"#);
        let body = String::from(r#"{"access_token":""#)
            + &t
            + r#"","token_type":"bEaReR","expires_in":"60"}"#;
        let g = parse_token_response(&body).unwrap();
        assert_eq!(g.expires_in, Some(60.0));
        assert_eq!(g.claims.unwrap().exp, Some(2000.0));
    }

    #[test]
    fn a_jwt_with_cnf_jkt_is_bound_whatever_token_type_says() {
        for (payload, token_type, bound) in [
            (r#"{"cnf":{"jkt":"t"}}"#, "", true),
            (r#"{"cnf":{"jkt":"t"}}"#, r#","token_type":"Bearer""#, true),
            (r#"{"cnf":{"jkt":"t"}}"#, r#","token_type":"DPoP""#, true),
            (r#"{"sub":"u"}"#, r#","token_type":"DPoP""#, true),
            (r#"{"sub":"u"}"#, r#","token_type":"Bearer""#, false),
            (r#"{"cnf":{"x5t#S256":"t"}}"#, "", false),
            (r#"{"cnf":{"jkt":7}}"#, "", false),
            (r#"{"cnf":"jkt"}"#, "", false),
        ] {
            let body =
                String::from(r#"{"access_token":""#) + &jwt(payload) + r#"""# + token_type + "}";
            let g = parse_token_response(&body).unwrap();
            assert_eq!(g.bound, bound, "{payload} {token_type}");
        }
    }

    #[test]
    fn rejects_each_malformed_body_with_invalid_response() {
        for body in [
            "",
            "<!doctype html><h1>502</h1>",
            r#"{"access_token":"ab"#,
            "[]",
            "null",
            r#"{"token_type":"Bearer","expires_in":60}"#,
            r#"{"access_token":""}"#,
            r#"{"access_token":42}"#,
            r#"{"access_token":"a b"}"#,
            r#"{"access_token":"t","token_type":"mac"}"#,
            r#"{"access_token":"t","token_type":1}"#,
            r#"{"access_token":"t","expires_in":-1}"#,
            r#"{"access_token":"t","expires_in":"soon"}"#,
            r#"{"access_token":"t","expires_in":true}"#,
            r#"{"access_token":"x.y.z"}"#,
        ] {
            assert_eq!(code(body), "invalid_response", "{body}");
        }
    }

    #[test]
    fn expires_in_strings_are_trimmed_of_ascii_whitespace_only() {
        let g = parse_token_response(r#"{"access_token":"t","expires_in":" 60\t"}"#).unwrap();
        assert_eq!(g.expires_in, Some(60.0));
        // HTTP and JSON whitespace is ASCII: a no-break space is not trimmed.
        assert_eq!(
            code("{\"access_token\":\"t\",\"expires_in\":\"\u{a0}60\"}"),
            "invalid_response"
        );
    }

    #[test]
    fn huge_expires_in_is_clamped() {
        let g = parse_token_response(r#"{"access_token":"t","expires_in":1e300}"#).unwrap();
        assert_eq!(g.expires_in, Some(MAX_EXPIRES_IN));
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let g = parse_token_response(r#"{"access_token":"s3cr3t-value"}"#).unwrap();
        let shown = format!("{g:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn oauth_error_reads_the_error_field_only_when_sane() {
        assert_eq!(
            oauth_error(r#"{"error":"invalid_grant"}"#).as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(oauth_error("<html>"), None);
        assert_eq!(oauth_error(r#"{"error":"<script>\n"}"#), None);
        assert_eq!(oauth_error(r#"{"error":5}"#), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(s in ".{0,300}") {
            let _ = parse_token_response(&s);
            let _ = oauth_error(&s);
        }
    }
}
