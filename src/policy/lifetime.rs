//! How long a token lives, counted from the moment its response arrived.
//!
//! Order (API.md "Lifetime and scheduling rules"): `expires_in`, else the
//! JWT's `exp - iat`, else `exp` against the page clock. Only the last one
//! depends on the client clock being right, and only when the server gave
//! neither `expires_in` nor `iat`.

use super::token::Grant;
#[allow(unused_imports)]
use crate::prelude::*;

/// Longest lifetime the client schedules for: ten years. Keeps arithmetic
/// bounded; longer tokens are simply re-checked on that horizon.
pub const MAX_LIFETIME_MS: i64 = 315_576_000_000;

fn secs_to_ms(s: f64) -> i64 {
    // `as` saturates and maps NaN to 0; the clamp bounds the rest.
    ((s * 1000.0) as i64).clamp(0, MAX_LIFETIME_MS)
}

/// Lifetime in ms, or `None` when nothing says (use it until a 401).
/// `arrival_wall` is `Date.now()` when the response arrived.
pub fn lifetime_ms(grant: &Grant, arrival_wall: i64) -> Option<i64> {
    if let Some(e) = grant.expires_in {
        return Some(secs_to_ms(e));
    }
    let claims = grant.claims.as_ref()?;
    match (claims.exp, claims.iat) {
        (Some(exp), Some(iat)) => Some(secs_to_ms(exp - iat)),
        (Some(exp), None) => Some(secs_to_ms(exp - arrival_wall as f64 / 1000.0)),
        _ => None,
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::super::jwt::tests::jwt;
    use super::super::token::parse_token_response;
    use super::*;

    fn grant(payload: &str, expires_in: Option<&str>) -> Grant {
        let mut body = String::from(r#"{"access_token":""#) + &jwt(payload) + "\"";
        if let Some(e) = expires_in {
            body = body + r#","expires_in":"# + e;
        }
        parse_token_response(&(body + "}")).unwrap()
    }

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn expires_in_wins_over_the_claims() {
        assert_eq!(
            lifetime_ms(&grant(r#"{"exp":1,"iat":0}"#, Some("300")), NOW),
            Some(300_000)
        );
    }

    #[test]
    fn exp_minus_iat_is_used_when_expires_in_is_absent_whatever_the_client_clock() {
        // Server clock in 2001, client in 2023: still 60 s.
        let g = grant(r#"{"iat":1000000000,"exp":1000000060}"#, None);
        assert_eq!(lifetime_ms(&g, NOW), Some(60_000));
        assert_eq!(lifetime_ms(&g, NOW + 3_600_000), Some(60_000));
        assert_eq!(lifetime_ms(&g, NOW - 3_600_000), Some(60_000));
    }

    #[test]
    fn exp_alone_is_measured_against_the_page_clock() {
        let g = grant(r#"{"exp":1700000090}"#, None);
        assert_eq!(lifetime_ms(&g, NOW), Some(90_000));
        assert_eq!(
            lifetime_ms(&g, NOW + 100_000),
            Some(0),
            "already expired on arrival"
        );
    }

    #[test]
    fn thirty_day_tokens_keep_their_full_lifetime() {
        assert_eq!(
            lifetime_ms(&grant("{}", Some("2592000")), NOW),
            Some(2_592_000_000)
        );
    }

    #[test]
    fn opaque_tokens_without_expires_in_have_no_known_lifetime() {
        let g = parse_token_response(r#"{"access_token":"opaque"}"#).unwrap();
        assert_eq!(lifetime_ms(&g, NOW), None);
        let g = parse_token_response(r#"{"access_token":"opaque","expires_in":60}"#).unwrap();
        assert_eq!(lifetime_ms(&g, NOW), Some(60_000));
        assert_eq!(lifetime_ms(&grant(r#"{"sub":"x"}"#, None), NOW), None);
    }

    #[test]
    fn absurd_values_are_clamped_not_overflowed() {
        assert_eq!(
            lifetime_ms(&grant("{}", Some("1e300")), NOW),
            Some(MAX_LIFETIME_MS)
        );
        assert_eq!(
            lifetime_ms(&grant(r#"{"exp":1e300,"iat":0}"#, None), NOW),
            Some(MAX_LIFETIME_MS)
        );
        assert_eq!(
            lifetime_ms(&grant(r#"{"exp":0,"iat":1e300}"#, None), NOW),
            Some(0)
        );
    }
}
