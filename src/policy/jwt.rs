//! JWT payload decoding: base64url and the claims the client uses. Nothing
//! here verifies a signature — the client only reads its own token's claims
//! to schedule refreshes and for UI (`claims()` says "not verified").

use super::json::{self, Value};
use crate::error::Error;
#[allow(unused_imports)]
use crate::prelude::*;

/// The claims the client reads; the whole payload is kept for `claims()`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Claims {
    /// `exp`, seconds since the epoch.
    pub exp: Option<f64>,
    /// `iat`, seconds since the epoch.
    pub iat: Option<f64>,
    /// `nbf`, seconds since the epoch.
    pub nbf: Option<f64>,
    /// `scope` (space-separated string or array), else `scp`.
    pub scopes: Vec<String>,
    /// The payload as JSON text, for `claims()` to hand to `JSON.parse`.
    pub payload_json: String,
    /// `cnf.jkt` is present: the token is bound to a key (RFC 9449 §6.1).
    pub key_bound: bool,
}

impl Claims {
    /// Whether `scope` is one of the token's scopes.
    pub fn has_scope(&self, scope: &str) -> bool {
        !scope.is_empty() && self.scopes.iter().any(|s| s == scope)
    }
}

/// Whether the token has the JWS compact shape: three dot-separated parts.
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}

fn sextet(b: u8) -> Option<u32> {
    Some(u32::from(match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    }))
}

/// Decodes base64url (RFC 4648 §5), with or without `=` padding.
pub fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    let bytes = input.as_bytes();
    let trimmed = match bytes.iter().position(|&b| b == b'=') {
        Some(p) => {
            // Padding only at the end, at most two, and only to a multiple of 4.
            if bytes[p..].iter().any(|&b| b != b'=')
                || bytes.len() - p > 2
                || !bytes.len().is_multiple_of(4)
            {
                return None;
            }
            &bytes[..p]
        }
        None => bytes,
    };
    if trimmed.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    for chunk in trimmed.chunks(4) {
        let mut acc = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            acc |= sextet(b)? << (18 - 6 * i);
        }
        out.push((acc >> 16) as u8);
        if chunk.len() > 2 {
            out.push((acc >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(acc as u8);
        }
    }
    Some(out)
}

fn numeric_date(payload: &Value, name: &'static str) -> Result<Option<f64>, Error> {
    match payload.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Num(n)) => Ok(Some(*n)),
        Some(_) => Err(Error::InvalidResponse(match name {
            "exp" => "the JWT's exp claim is not a number",
            "iat" => "the JWT's iat claim is not a number",
            _ => "the JWT's nbf claim is not a number",
        })),
    }
}

fn scopes(payload: &Value) -> Vec<String> {
    let raw = payload.get("scope").or_else(|| payload.get("scp"));
    match raw {
        Some(Value::Str(s)) => {
            let mut out = Vec::new();
            let mut rest = s.as_str();
            loop {
                let end = super::find_str(rest, " ").unwrap_or(rest.len());
                if end > 0 {
                    out.push(String::from(&rest[..end]));
                }
                if end == rest.len() {
                    break out;
                }
                rest = &rest[end + 1..];
            }
        }
        Some(Value::Arr(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

/// Decodes the claims of a token that looks like a JWT. Opaque tokens give
/// `Ok(None)`; a JWT-shaped token that does not decode is `invalid_response`.
pub fn decode(token: &str) -> Result<Option<Claims>, Error> {
    if !looks_like_jwt(token) {
        return Ok(None);
    }
    let (header, rest) =
        super::split_str(token, ".").ok_or(Error::InvalidResponse("the JWT is malformed"))?;
    let payload = &rest[..super::find_str(rest, ".").unwrap_or(rest.len())];
    let header_ok = base64url_decode(header)
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| json::parse(&t).ok())
        .is_some_and(|v| matches!(v, Value::Obj(_)));
    if !header_ok {
        return Err(Error::InvalidResponse("the JWT header does not decode"));
    }
    let text = base64url_decode(payload)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(Error::InvalidResponse(
            "the JWT payload is not base64url UTF-8",
        ))?;
    let value =
        json::parse(&text).map_err(|_| Error::InvalidResponse("the JWT payload is not JSON"))?;
    if !matches!(value, Value::Obj(_)) {
        return Err(Error::InvalidResponse(
            "the JWT payload is not a JSON object",
        ));
    }
    Ok(Some(Claims {
        exp: numeric_date(&value, "exp")?,
        iat: numeric_date(&value, "iat")?,
        nbf: numeric_date(&value, "nbf")?,
        scopes: scopes(&value),
        key_bound: value
            .get("cnf")
            .and_then(|c| c.get("jkt"))
            .is_some_and(|j| matches!(j, Value::Str(_))),
        payload_json: text,
    }))
}

#[cfg(all(test, not(target_arch = "wasm32")))]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// base64url without padding, for building test tokens.
    pub fn b64(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    /// A JWT-shaped token with the given payload JSON (signature is junk).
    pub fn jwt(payload: &str) -> String {
        b64(br#"{"alg":"ES256","typ":"JWT","kid":"k1"}"#) + "." + &b64(payload.as_bytes()) + ".c2ln"
    }

    #[test]
    fn decodes_base64url_with_and_without_padding() {
        assert_eq!(base64url_decode("").unwrap(), b"");
        assert_eq!(base64url_decode("Zg").unwrap(), b"f");
        assert_eq!(base64url_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64url_decode("Zm8").unwrap(), b"fo");
        assert_eq!(base64url_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64url_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        for bad in [
            "Z", "Zm9vY", "Zg=", "Z===", "Zg==Zg==", "Zm+v", "Zm/v", "Zm 9v", "Zé",
        ] {
            assert_eq!(base64url_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn decodes_the_rfc7519_example_claims() {
        // RFC 7519 §3.1 example (payload with \r\n line breaks).
        let t = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let c = decode(t).unwrap().unwrap();
        assert_eq!(c.exp, Some(1_300_819_380.0));
        assert_eq!(c.iat, None);
        assert!(c.payload_json.contains("\"iss\":\"joe\""));
    }

    #[test]
    fn reads_exp_iat_nbf_and_both_scope_forms() {
        let c = decode(&jwt(
            r#"{"exp":200,"iat":100,"nbf":100,"scope":"read:me  write"}"#,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.exp, c.iat, c.nbf),
            (Some(200.0), Some(100.0), Some(100.0))
        );
        assert!(
            c.has_scope("read:me")
                && c.has_scope("write")
                && !c.has_scope("read")
                && !c.has_scope("")
        );
        let c = decode(&jwt(r#"{"scp":["a","b",3]}"#)).unwrap().unwrap();
        assert_eq!(c.scopes, ["a", "b"]);
    }

    #[test]
    fn opaque_tokens_have_no_claims() {
        assert_eq!(decode("opaque-token-value").unwrap(), None);
        assert_eq!(decode("a.b").unwrap(), None);
        assert_eq!(
            decode("a.b.c.d.e").unwrap(),
            None,
            "JWE-shaped tokens are opaque to us"
        );
    }

    #[test]
    fn jwt_shaped_tokens_that_do_not_decode_are_invalid_responses() {
        let bad = [
            "a.b.c".to_string(),
            "..".to_string(),
            b64(b"{}") + ".!!!." + "x",
            b64(b"{}") + "." + &b64(b"not json") + ".x",
            b64(b"{}") + "." + &b64(b"[1,2]") + ".x",
            b64(b"{}") + "." + &b64(&[0xff, 0xfe]) + ".x",
            jwt(r#"{"exp":"tomorrow"}"#),
            jwt(r#"{"iat":true}"#),
        ];
        for t in &bad {
            assert_eq!(decode(t).unwrap_err().code(), "invalid_response", "{t}");
        }
    }

    #[test]
    fn unicode_claims_survive_decoding() {
        let c = decode(&jwt(r#"{"name":"Zoë 😀","exp":1}"#))
            .unwrap()
            .unwrap();
        assert!(c.payload_json.contains("Zoë 😀"));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_text_never_panics(s in ".{0,300}") {
            let _ = decode(&s);
        }

        #[test]
        fn decoding_arbitrary_three_part_tokens_never_panics(a in "[A-Za-z0-9_=-]{0,40}", b in "[A-Za-z0-9_=-]{0,80}", c in ".{0,10}") {
            let _ = decode(&(a + "." + &b + "." + &c));
        }

        #[test]
        fn scopes_split_on_spaces_like_str(s in "[a-z: é]{0,30}") {
            let mut payload = String::from("{\"scope\":");
            json::push_string(&mut payload, &s);
            payload.push('}');
            let want: Vec<String> = s.split(' ').filter(|p| !p.is_empty()).map(String::from).collect();
            prop_assert_eq!(scopes(&json::parse(&payload).unwrap()), want);
        }

        #[test]
        fn base64url_round_trips(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(base64url_decode(&b64(&data)), Some(data));
        }
    }
}
