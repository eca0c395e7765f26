//! The cross-tab protocol: the messages tabs exchange over a
//! `BroadcastChannel`, and which of them wins.
//!
//! Messages are JSON text (encoded and checked here, so the rules are
//! tested natively). A token travels with the lifetime the sender computed
//! and its age when sent, so the receiver schedules exactly as the sender
//! does. Every message carries the sender's version (a hybrid logical
//! clock: `max(version + 1, Date.now())` on each local change) and only a
//! strictly newer version changes a tab's session.

use super::json::{self, push_string, Value};
use super::schedule::MAX_RETRY_AFTER_MS;
use super::token::{grant_from_value, Grant};
use crate::error::push_u64;
#[allow(unused_imports)]
use crate::prelude::*;

/// Protocol tag, so foreign messages on the same channel name are ignored.
const TAG: &str = "tokenwarden/1";

/// A message between tabs.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// A tab holds this token (set, refreshed, or in answer to `Query`).
    Token {
        /// Sender's version.
        version: u64,
        /// The token, as a validated grant.
        grant: Grant,
        /// Lifetime in ms as the sender computed it (`None`: unknown).
        lifetime: Option<i64>,
        /// Age in ms when sent.
        age: i64,
    },
    /// A tab signed out (logout, rejection or expiry): all tabs follow.
    SignedOut {
        /// Sender's version.
        version: u64,
    },
    /// A tab starting up asks whether anyone holds a live token.
    Query,
    /// The refresh lock's holder is about to send a refresh request: it is
    /// alive and working, so a tab whose wait for the lock ran out waits
    /// again instead of stealing ([`next_lock_request`]).
    Busy,
    /// The refresh endpoint asked the lock's holder to wait (a 429 or 5xx
    /// with `Retry-After`): every tab waits `ms` from when it hears this
    /// before its own next call, instead of each calling once for itself.
    Quiet {
        /// How long, ms (at most [`MAX_RETRY_AFTER_MS`]).
        ms: i64,
        /// The answer's status, for the error the other tabs report.
        status: u16,
    },
}

fn push_i64(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    push_u64(out, n.unsigned_abs());
}

fn head(out: &mut String, kind: &str) {
    out.push_str(r#"{"p":"#);
    push_string(out, TAG);
    out.push_str(r#","k":""#);
    out.push_str(kind);
    out.push('"');
}

/// Encodes a token message. The token is written only into this string,
/// which goes only to same-origin tabs' memory. A `bound` token travels
/// with `"token_type":"DPoP"`, as the backend issued it.
pub fn encode_token(
    version: u64,
    token: &str,
    bound: bool,
    lifetime: Option<i64>,
    age: i64,
) -> String {
    let mut out = String::with_capacity(token.len() + 120);
    head(&mut out, "token");
    out.push_str(r#","v":"#);
    push_u64(&mut out, version);
    out.push_str(r#","access_token":"#);
    push_string(&mut out, token);
    if bound {
        out.push_str(r#","token_type":"DPoP""#);
    }
    if let Some(l) = lifetime {
        out.push_str(r#","life":"#);
        push_i64(&mut out, l);
    }
    out.push_str(r#","age":"#);
    push_i64(&mut out, age);
    out.push('}');
    out
}

/// Encodes a sign-out message.
pub fn encode_signed_out(version: u64) -> String {
    let mut out = String::new();
    head(&mut out, "signedOut");
    out.push_str(r#","v":"#);
    push_u64(&mut out, version);
    out.push('}');
    out
}

/// Encodes a query.
pub fn encode_query() -> String {
    let mut out = String::new();
    head(&mut out, "query");
    out.push('}');
    out
}

/// Encodes the lock holder's "busy" notice.
pub fn encode_busy() -> String {
    let mut out = String::new();
    head(&mut out, "busy");
    out.push('}');
    out
}

/// Encodes the holder's "the server asked us to wait `ms`" notice.
pub fn encode_quiet(ms: i64, status: u16) -> String {
    let mut out = String::new();
    head(&mut out, "quiet");
    out.push_str(r#","ms":"#);
    push_i64(&mut out, ms);
    out.push_str(r#","s":"#);
    push_u64(&mut out, u64::from(status));
    out.push('}');
    out
}

fn whole_ms(v: Option<&Value>) -> Option<i64> {
    let n = v?.as_f64()?;
    if json::is_whole(n) && n.abs() < 9.0e15 {
        Some(n as i64)
    } else {
        None
    }
}

/// Decodes a message; anything malformed or foreign is `None` (ignored).
pub fn decode(text: &str) -> Option<Message> {
    let v = json::parse(text).ok()?;
    if v.get("p")?.as_str()? != TAG {
        return None;
    }
    let version = || {
        whole_ms(v.get("v"))
            .and_then(|n| u64::try_from(n).ok())
            .filter(|&n| n <= super::session::MAX_VERSION)
    };
    match v.get("k")?.as_str()? {
        "token" => {
            let grant = grant_from_value(&v).ok()?;
            let lifetime = match v.get("life") {
                None => None,
                Some(l) => Some(whole_ms(Some(l))?.max(0)),
            };
            Some(Message::Token {
                version: version()?,
                grant,
                lifetime,
                age: whole_ms(v.get("age"))?.max(0),
            })
        }
        "signedOut" => Some(Message::SignedOut {
            version: version()?,
        }),
        "query" => Some(Message::Query),
        "busy" => Some(Message::Busy),
        "quiet" => Some(Message::Quiet {
            ms: whole_ms(v.get("ms"))?.clamp(0, MAX_RETRY_AFTER_MS),
            status: u16::try_from(whole_ms(v.get("s"))?)
                .ok()
                .filter(|s| (100..600).contains(s))?,
        }),
        _ => None,
    }
}

/// How far ahead of the clock a logout's sign-out is versioned: past the
/// end of any refresh attempt that was on its way in another tab when the
/// user logged out (at most three requests: a `use_dpop_nonce` retry, or two
/// `use_upstream_dpop` retries, each within `requestTimeoutMs`), plus 2 s.
/// A token from such an attempt — the server may have rotated before the
/// logout reached it — then loses to the sign-out wherever both arrive,
/// instead of signing every tab in again until the revoked tokens are
/// refused. A sign-in after the logout still wins: it takes the next version.
pub fn logout_horizon_ms(request_timeout_ms: i64) -> i64 {
    request_timeout_ms.clamp(0, 600_000) * 3 + 2_000
}

/// After broadcasting a new token, the lock is held this much longer so
/// that a tab waiting for it sees the message before it gets the lock.
pub const LOCK_LINGER_MS: i64 = 50;

/// How long `start()` listens for another tab's token.
pub const START_QUERY_MS: i64 = 100;

/// How long a tab waits for the refresh lock before it may steal it: a
/// holder that has not finished one request (plus a margin) by then, and has
/// not said it is busy meanwhile, has been abandoned (a frozen or crashed
/// tab). `random` ∈ [0, 1) adds up to 1 s, so that tabs that began waiting
/// together do not all time out in the same instant: the first to steal
/// says it is busy before its request, and the others hear it and wait again
/// instead of stealing it back (two refreshes with one cookie).
pub fn lock_wait_ms(request_timeout_ms: i64, random: f64) -> i64 {
    let jitter = (random.clamp(0.0, 1.0) * 1_000.0) as i64;
    request_timeout_ms.saturating_add(2_000 + jitter)
}

/// How the refresh lock is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockRequest {
    /// Wait at most this long.
    Wait(i64),
    /// Take it from its holder now.
    Steal,
}

/// The lock rule: first wait (`lock_wait_ms`). After a wait that timed out,
/// wait again if the holder said it was busy during it (`heard_busy`: a
/// holder behind a queue, a slow server, a DPoP nonce retry — the wait is
/// timed from when this tab asked, not from when the holder took the lock),
/// else steal once; after a steal that failed too, go on without the lock
/// (`None`): a refresh without the lock beats no refresh.
pub fn next_lock_request(
    previous: Option<LockRequest>,
    request_timeout_ms: i64,
    heard_busy: bool,
    random: f64,
) -> Option<LockRequest> {
    let wait = LockRequest::Wait(lock_wait_ms(request_timeout_ms, random));
    match previous {
        None => Some(wait),
        Some(LockRequest::Wait(_)) if heard_busy => Some(wait),
        Some(LockRequest::Wait(_)) => Some(LockRequest::Steal),
        Some(LockRequest::Steal) => None,
    }
}

/// Inside the refresh lock: whether to adopt the token another tab
/// delivered since this tab decided to refresh (`version_at_decision`)
/// instead of rotating the refresh token again.
pub fn adopt_instead_of_rotating(
    version_at_decision: u64,
    version_now: u64,
    token_is_fresh: bool,
) -> bool {
    version_now != version_at_decision && token_is_fresh
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn token_messages_round_trip() {
        let text = encode_token(1_700_000_000_123, "a\"b", false, Some(60_000), 1_234);
        match decode(&text).unwrap() {
            Message::Token {
                version,
                grant,
                lifetime,
                age,
            } => {
                assert_eq!(version, 1_700_000_000_123);
                assert_eq!(grant.token.expose(), "a\"b");
                assert!(!grant.bound);
                assert_eq!(lifetime, Some(60_000));
                assert_eq!(age, 1_234);
            }
            other => panic!("{other:?}"),
        }
        let text = encode_token(5, "opaque", false, None, 0);
        assert!(matches!(
            decode(&text),
            Some(Message::Token { lifetime: None, .. })
        ));
    }

    #[test]
    fn a_bound_token_travels_as_dpop_and_an_unbound_one_as_bearer() {
        for bound in [true, false] {
            match decode(&encode_token(9, "opaque", bound, Some(1_000), 0)) {
                Some(Message::Token { grant, .. }) => assert_eq!(grant.bound, bound),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn sign_out_and_query_round_trip() {
        assert_eq!(
            decode(&encode_signed_out(42)),
            Some(Message::SignedOut { version: 42 })
        );
        assert_eq!(decode(&encode_query()), Some(Message::Query));
        assert_eq!(decode(&encode_busy()), Some(Message::Busy));
    }

    #[test]
    fn quiet_round_trips_and_bad_ones_are_ignored() {
        assert_eq!(
            decode(&encode_quiet(60_000, 503)),
            Some(Message::Quiet {
                ms: 60_000,
                status: 503
            })
        );
        let q = |rest: &str| decode(&format!(r#"{{"p":"tokenwarden/1","k":"quiet"{rest}}}"#));
        assert_eq!(
            q(r#","ms":9e15,"s":429"#),
            None,
            "not a whole ms it can hold"
        );
        assert_eq!(
            q(r#","ms":99999999999,"s":429"#),
            Some(Message::Quiet {
                ms: MAX_RETRY_AFTER_MS,
                status: 429
            }),
            "capped as Retry-After is"
        );
        assert_eq!(
            q(r#","ms":-5,"s":429"#),
            Some(Message::Quiet { ms: 0, status: 429 })
        );
        for bad in [
            r#","ms":1000"#,
            r#","s":503"#,
            r#","ms":1000,"s":99"#,
            r#","ms":1000,"s":600"#,
            r#","ms":1000,"s":503.5"#,
            r#","ms":"1000","s":503"#,
        ] {
            assert_eq!(q(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_wait_that_ran_out_steals_only_if_the_holder_said_nothing() {
        let wait = |r| LockRequest::Wait(lock_wait_ms(10_000, r));
        assert_eq!(wait(0.0), LockRequest::Wait(12_000));
        assert_eq!(wait(0.999), LockRequest::Wait(12_999));
        assert_eq!(next_lock_request(None, 10_000, false, 0.5), Some(wait(0.5)));
        assert_eq!(
            next_lock_request(Some(wait(0.5)), 10_000, true, 0.25),
            Some(wait(0.25)),
            "the holder is busy: wait again"
        );
        assert_eq!(
            next_lock_request(Some(wait(0.5)), 10_000, false, 0.5),
            Some(LockRequest::Steal),
            "silent: abandoned"
        );
        assert_eq!(
            next_lock_request(Some(LockRequest::Steal), 10_000, true, 0.5),
            None
        );
    }

    #[test]
    fn foreign_and_malformed_messages_are_ignored() {
        for text in [
            "",
            "hello",
            r#"{"k":"query"}"#,
            r#"{"p":"other/1","k":"query"}"#,
            r#"{"p":"tokenwarden/1","k":"nope"}"#,
            r#"{"p":"tokenwarden/1","k":"signedOut"}"#,
            r#"{"p":"tokenwarden/1","k":"signedOut","v":-1}"#,
            r#"{"p":"tokenwarden/1","k":"signedOut","v":1.5}"#,
            r#"{"p":"tokenwarden/1","k":"token","v":1,"age":0}"#,
            r#"{"p":"tokenwarden/1","k":"token","v":1,"access_token":"x.y.z","age":0}"#,
            r#"{"p":"tokenwarden/1","k":"token","v":1,"access_token":"t","life":"x","age":0}"#,
        ] {
            assert_eq!(decode(text), None, "{text}");
        }
    }

    #[test]
    fn a_tab_adopts_only_when_another_tab_delivered_a_fresh_token_meanwhile() {
        assert!(adopt_instead_of_rotating(10, 11, true));
        assert!(
            !adopt_instead_of_rotating(10, 10, true),
            "nothing arrived: rotate"
        );
        assert!(
            !adopt_instead_of_rotating(10, 11, false),
            "what arrived is already due: rotate"
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_text_never_panics(s in ".{0,200}") {
            let _ = decode(&s);
        }

        #[test]
        fn any_token_and_times_round_trip(tok in "[!-~]{1,80}", bound in any::<bool>(), v in 0u64..(1u64 << 52), life in proptest::option::of(0i64..(1i64 << 50)), age in 0i64..(1i64 << 50)) {
            prop_assume!(!super::super::jwt::looks_like_jwt(&tok));
            let m = decode(&encode_token(v, &tok, bound, life, age)).unwrap();
            match m {
                Message::Token { version, grant, lifetime, age: a } => {
                    prop_assert_eq!(version, v);
                    prop_assert_eq!(grant.bound, bound);
                    prop_assert_eq!(grant.token.expose(), tok.as_str());
                    prop_assert_eq!(lifetime, life);
                    prop_assert_eq!(a, age);
                }
                _ => prop_assert!(false),
            }
        }
    }
}
