//! The one copy of every fuzz harness.
//!
//! Each `pub fn <target>(data: &[u8])` is the whole body of the fuzz target
//! of the same name (`fuzz/fuzz_targets/<target>.rs` includes this file with
//! `#[path]`), and `tests/fuzz_corpus.rs` in the root crate includes it the
//! same way to replay `fuzz/corpus/<target>/` on the stable toolchain. A
//! harness returns normally for any input; a panic or a failed `assert!` is
//! a finding.
//!
//! Inputs that are not UTF-8 are fed through `String::from_utf8_lossy`
//! (the APIs take `&str`) and, where the API decodes bytes itself (base64url
//! payloads and headers), as raw bytes too.

#![allow(dead_code)]

use arbitrary::{Arbitrary, Unstructured};

use tokenwarden::error::Error;
use tokenwarden::policy::clock::Stamp;
use tokenwarden::policy::json::{self, Value};
use tokenwarden::policy::jwt;
use tokenwarden::policy::lifetime::{lifetime_ms, MAX_LIFETIME_MS};
use tokenwarden::policy::options;
use tokenwarden::policy::origin;
use tokenwarden::policy::schedule::{
    self, backoff_ms, RetryPolicy, MAX_RETRY_AFTER_MS, MAX_TIMER_MS, MIN_ATTEMPT_GAP_MS,
};
use tokenwarden::policy::session::{self, Config, Failure, Session, Standing, State, Tick};
use tokenwarden::policy::tabsync::{self, Message};
use tokenwarden::policy::token::{self, Grant, Secret};

/// `expires_in` ceiling of `token::parse_token_response` (ten years, s).
const MAX_EXPIRES_IN: f64 = 315_576_000.0;

/// base64url without padding (RFC 4648 §5), to wrap fuzz bytes into tokens.
pub fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len() * 4 / 3 + 4);
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

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

// ---------------------------------------------------------------- jwt_decode

fn check_decoded(token: &str) {
    match jwt::decode(token) {
        Ok(None) => assert!(
            !jwt::looks_like_jwt(token),
            "a JWT-shaped token decoded to None"
        ),
        Ok(Some(c)) => {
            assert!(jwt::looks_like_jwt(token));
            for n in [c.exp, c.iat, c.nbf].into_iter().flatten() {
                assert!(n.is_finite(), "a NumericDate is not finite: {n}");
            }
            let v = json::parse(&c.payload_json).expect("payload_json is not JSON");
            assert!(matches!(v, Value::Obj(_)), "payload_json is not an object");
            assert!(!c.has_scope(""), "the empty scope matched");
            for s in &c.scopes {
                if !s.is_empty() {
                    assert!(c.has_scope(s));
                }
            }
        }
        Err(e) => assert_eq!(e.code(), "invalid_response"),
    }
}

/// `core::jwt::decode` on the input as text, and on the input's raw bytes
/// as the header and as the payload of an otherwise valid token.
pub fn jwt_decode(data: &[u8]) {
    let s = text(data);
    check_decoded(&s);

    // base64url: no panic, and a decode re-encodes to the same bytes.
    if let Some(bytes) = jwt::base64url_decode(&s) {
        assert_eq!(jwt::base64url_decode(&b64(&bytes)), Some(bytes));
    }
    assert_eq!(jwt::base64url_decode(&b64(data)).as_deref(), Some(data));

    // The raw bytes (any encoding, any JSON) as payload and as header.
    const HEADER: &str = "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9"; // {"alg":"ES256","typ":"JWT"}
    let enc = b64(data);
    let as_payload = String::from(HEADER) + "." + &enc + ".c2ln";
    check_decoded(&as_payload);
    let as_header = enc + ".e30.c2ln"; // payload {}
    check_decoded(&as_header);
    if std::str::from_utf8(data).is_err() {
        assert!(
            jwt::decode(&as_payload).is_err(),
            "a non-UTF-8 payload decoded"
        );
    }

    // The JSON reader on its own.
    if let Ok(Value::Str(v)) = json::parse(&s) {
        let mut out = String::new();
        json::push_string(&mut out, &v);
        assert_eq!(json::parse(&out), Ok(Value::Str(v)));
    }
}

// ------------------------------------------------------------ token_response

fn check_grant(g: &Grant) {
    let t = g.token.expose();
    assert!(!t.is_empty(), "empty access_token accepted");
    assert!(
        t.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "access_token with characters a header cannot carry"
    );
    if let Some(e) = g.expires_in {
        assert!(
            e.is_finite() && (0.0..=MAX_EXPIRES_IN).contains(&e),
            "expires_in out of range: {e}"
        );
    }
    assert_eq!(g.claims.is_some(), jwt::looks_like_jwt(t));
    // Debug never shows the token: it must not depend on the token at all.
    let blank = Grant {
        token: Secret::new(String::new()),
        ..g.clone()
    };
    assert_eq!(
        format!("{g:?}"),
        format!("{blank:?}"),
        "Debug shows the token"
    );
    for arrival in [0, -1, 1_700_000_000_000, i64::MIN, i64::MAX] {
        if let Some(l) = lifetime_ms(g, arrival) {
            assert!(
                (0..=MAX_LIFETIME_MS).contains(&l),
                "lifetime out of range: {l}"
            );
        }
    }
    if g.expires_in.is_some() {
        assert!(lifetime_ms(g, 0).is_some());
    }
}

/// `core::token::parse_token_response` and `oauth_error` on the input.
pub fn token_response(data: &[u8]) {
    let s = text(data);
    match token::parse_token_response(&s) {
        Ok(g) => check_grant(&g),
        Err(e) => {
            assert_eq!(e.code(), "invalid_response");
            // Error messages never carry caller text (so never a token).
            assert!(e.message().starts_with("invalid token response: "));
        }
    }
    if let Some(code) = token::oauth_error(&s) {
        assert!(
            (1..=64).contains(&code.len()),
            "oauth error length {}",
            code.len()
        );
        assert!(
            code.bytes()
                .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)),
            "oauth error charset: {code:?}"
        );
    }
}

// ------------------------------------------------------------------- options

/// Resolves like `new URL(u, "https://app.example.com/page")` for the simple
/// shapes: absolute URLs as given, `/path`, `path`; spaces do not resolve.
fn resolve(u: &str) -> Option<String> {
    if u.contains("://") {
        Some(u.to_string())
    } else if u.contains(' ') {
        None
    } else if u.starts_with('/') {
        Some(String::from("https://app.example.com") + u)
    } else {
        Some(String::from("https://app.example.com/") + u)
    }
}

fn check_origin(o: &str) {
    assert_eq!(
        origin::normalize(o).as_deref(),
        Ok(o),
        "normalize is not idempotent"
    );
    assert_eq!(origin::of_url(o), Some(o));
    let url = String::from(o) + "/path?q#f";
    assert_eq!(origin::of_url(&url), Some(o));
}

/// `core::options::parse` on the input as JSON text, with each kind of page.
pub fn options(data: &[u8]) {
    let s = text(data);
    let pages: [Option<&str>; 3] = [
        Some("https://app.example.com"),
        Some("http://127.0.0.1:8080"),
        None,
    ];
    for page in pages {
        match options::parse(&s, page, &resolve) {
            Ok(o) => {
                assert!(origin::of_url(&o.refresh_url).is_some());
                if let Some(u) = &o.logout_url {
                    assert!(origin::of_url(u).is_some());
                }
                for a in &o.allowed_origins {
                    check_origin(a);
                    assert!(o.allows(&(a.clone() + "/x")));
                    assert!(
                        !o.allows(&(a.clone() + ".evil.example/x")) || o.allowed_origins.len() > 1
                    );
                    if let Some(host) = a.strip_prefix("http://") {
                        let host = host.rsplit_once(':').map_or(host, |(h, p)| {
                            if h.is_empty() || p.contains(']') {
                                host
                            } else {
                                h
                            }
                        });
                        assert!(origin::is_loopback(host), "http: origin for {host}");
                    }
                }
                assert!((1..=2_147_483_647).contains(&o.request_timeout_ms));
                assert!((0..=31_536_000_000).contains(&o.session.skew_ms));
                let r = o.session.retry;
                assert!(r.max_attempts >= 1);
                assert!(0 <= r.base_delay_ms && r.base_delay_ms <= r.max_delay_ms);
                assert!(r.max_delay_ms <= 2_147_483_647);
                assert!(!o.channel_name.is_empty() && o.channel_name.len() <= 256);
                for (name, value) in &o.refresh_headers {
                    assert!(!name.is_empty());
                    assert!(!value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0));
                }
            }
            Err(e) => {
                assert_eq!(e.code(), "invalid_options");
                assert!(!e.message().is_empty());
            }
        }
    }
    // The origin rules on the raw text.
    if let Ok(o) = origin::normalize(&s) {
        check_origin(&o);
    }
    let _ = origin::of_url(&s);
}

// ----------------------------------------------------------------- scheduler

/// How a grant reaches the session: built as a token-response body and
/// parsed, exactly as the shell gets it.
#[derive(Arbitrary, Debug)]
pub enum GrantSpec {
    /// Opaque token, optional `expires_in` (seconds, as sent).
    Opaque { expires_in: Option<u32> },
    /// Opaque token with a fractional or huge `expires_in`.
    OpaqueFloat { expires_in: f64 },
    /// A JWT with optional `exp`/`iat` claims and `expires_in`.
    Jwt {
        exp: Option<i64>,
        iat: Option<i64>,
        expires_in: Option<u32>,
    },
    /// A JWT with `exp` a little after the session's wall clock.
    JwtNear {
        exp_in_s: i32,
        iat_before_s: Option<u16>,
    },
}

/// When an operation happens: a step forward from the last moment (the
/// common case), or any pair of readings at all (clock changes, sleep).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum When {
    /// Same moment as the previous operation.
    Same,
    /// Both clocks advance by `ms`.
    Step { ms: u32 },
    /// Clocks advance apart (sleep: wall only; a clock change: either way).
    Skewed { wall: i32, mono: u32 },
    /// Any stamp at all.
    Anywhere { wall: i64, mono: i64 },
}

/// The error an attempt fails with.
#[derive(Arbitrary, Debug, Clone)]
pub enum ErrSpec {
    Network,
    Timeout,
    Server {
        status: u16,
        retry_after_ms: Option<i64>,
    },
    Rejected {
        status: u16,
    },
    Invalid,
    SignedOut,
    Disposed,
}

impl ErrSpec {
    fn error(&self) -> Error {
        match self {
            ErrSpec::Network => Error::Network,
            ErrSpec::Timeout => Error::Timeout,
            ErrSpec::Server {
                status,
                retry_after_ms,
            } => Error::ServerError {
                status: *status,
                retry_after_ms: *retry_after_ms,
            },
            ErrSpec::Rejected { status } => Error::RefreshRejected {
                status: *status,
                error: None,
            },
            ErrSpec::Invalid => Error::InvalidResponse("fuzz"),
            ErrSpec::SignedOut => Error::SignedOut,
            ErrSpec::Disposed => Error::Disposed,
        }
    }
}

/// A version in a message from another tab.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum VersionSpec {
    /// This tab's version plus `n` (0: the same version, ignored).
    Relative { n: u8 },
    /// This tab's version minus `n` (older: ignored).
    Older { n: u16 },
    /// Any version at all.
    Raw(u64),
}

/// One thing the shell does to the session.
#[derive(Arbitrary, Debug)]
pub enum Op {
    Accept {
        when: When,
        grant: GrantSpec,
    },
    TryBegin {
        when: When,
    },
    Failed {
        when: When,
        err: ErrSpec,
        random: f64,
    },
    Settled,
    ResetGiveUp,
    Tick {
        when: When,
    },
    NextWake {
        when: When,
    },
    Adopt {
        when: When,
        grant: GrantSpec,
        lifetime: Option<i64>,
        age: i64,
        version: VersionSpec,
    },
    RemoteSignOut {
        version: VersionSpec,
    },
    SignOut {
        when: When,
    },
    /// `schedule::parse_retry_after` on its own.
    RetryAfter {
        value: String,
        now_wall: i64,
        /// The response's `Date` header.
        date: Option<String>,
    },
    /// `schedule::backoff_ms` on its own, any policy.
    Backoff {
        base: i64,
        max: i64,
        failures: u32,
        random: f64,
        retry_after: Option<i64>,
    },
    /// `schedule::refresh_after` / `timer_delay` on their own.
    RefreshAfter {
        lifetime: i64,
        skew: i64,
    },
}

/// A whole scheduler run.
#[derive(Arbitrary, Debug)]
pub struct SchedInput {
    pub skew_ms: i64,
    pub max_attempts: u32,
    pub base_delay_ms: i64,
    pub max_delay_ms: i64,
    pub start_wall: i64,
    pub start_mono: i64,
    pub ops: Vec<Op>,
}

fn advance(now: Stamp, when: When) -> Stamp {
    match when {
        When::Same => now,
        When::Step { ms } => Stamp {
            wall: now.wall.saturating_add(i64::from(ms)),
            mono: now.mono.saturating_add(i64::from(ms)),
        },
        When::Skewed { wall, mono } => Stamp {
            wall: now.wall.saturating_add(i64::from(wall)),
            mono: now.mono.saturating_add(i64::from(mono)),
        },
        When::Anywhere { wall, mono } => Stamp { wall, mono },
    }
}

fn body_for(spec: &GrantSpec, now: Stamp) -> String {
    let mut body = String::from(r#"{"token_type":"Bearer","access_token":""#);
    let mut claims = String::from("{");
    let mut push_claim = |name: &str, v: i64| {
        if claims.len() > 1 {
            claims.push(',');
        }
        claims.push('"');
        claims.push_str(name);
        claims.push_str("\":");
        claims.push_str(&v.to_string());
    };
    let expires_in: Option<String> = match spec {
        GrantSpec::Opaque { expires_in } => {
            body.push_str("opaque-token");
            expires_in.map(|e| e.to_string())
        }
        GrantSpec::OpaqueFloat { expires_in } => {
            body.push_str("opaque-token");
            // Rust prints finite floats as JSON-compatible decimals.
            expires_in.is_finite().then(|| format!("{expires_in:?}"))
        }
        GrantSpec::Jwt {
            exp,
            iat,
            expires_in,
        } => {
            if let Some(e) = exp {
                push_claim("exp", *e);
            }
            if let Some(i) = iat {
                push_claim("iat", *i);
            }
            expires_in.map(|e| e.to_string())
        }
        GrantSpec::JwtNear {
            exp_in_s,
            iat_before_s,
        } => {
            let now_s = now.wall.div_euclid(1000);
            push_claim("exp", now_s.saturating_add(i64::from(*exp_in_s)));
            if let Some(b) = iat_before_s {
                push_claim("iat", now_s.saturating_sub(i64::from(*b)));
            }
            None
        }
    };
    if matches!(spec, GrantSpec::Jwt { .. } | GrantSpec::JwtNear { .. }) {
        claims.push('}');
        body.push_str("eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.");
        body.push_str(&b64(claims.as_bytes()));
        body.push_str(".c2ln");
    }
    body.push('"');
    if let Some(e) = expires_in {
        body.push_str(r#","expires_in":"#);
        body.push_str(&e);
    }
    body.push('}');
    body
}

fn grant_for(spec: &GrantSpec, now: Stamp) -> Option<Grant> {
    token::parse_token_response(&body_for(spec, now)).ok()
}

fn version_for(spec: VersionSpec, current: u64) -> u64 {
    match spec {
        VersionSpec::Relative { n } => current.saturating_add(u64::from(n)),
        VersionSpec::Older { n } => current.saturating_sub(u64::from(n)),
        VersionSpec::Raw(v) => v,
    }
}

/// Invariants that hold at any moment, whatever happened before.
fn check_session(s: &Session, now: Stamp) {
    let standing = s.standing(now);
    if let Some(w) = s.next_wake(now) {
        assert!(w >= 0, "negative next_wake {w}");
    }
    match standing {
        Standing::Expired | Standing::None => {
            assert!(
                s.usable(now).is_none(),
                "usable() handed out a token that is {standing:?}"
            );
            assert!(s.fresh(now).is_none());
        }
        Standing::Due => {
            assert!(s.usable(now).is_some());
            assert!(s.fresh(now).is_none());
        }
        Standing::Fresh => {
            assert!(s.usable(now).is_some());
            assert!(s.fresh(now).is_some());
        }
    }
    assert_eq!(standing == Standing::None, !s.is_signed_in());
    if let Some((life, age)) = s.lifetime_and_age(now) {
        assert!(age >= 0);
        if let Some(l) = life {
            assert!((0..=MAX_LIFETIME_MS).contains(&l));
            assert_eq!(
                age >= l - session::expiry_margin(l),
                standing == Standing::Expired
            );
        } else {
            assert_ne!(standing, Standing::Expired);
        }
    }
    if let Some(at) = s.expires_at(now) {
        // In the future while usable; once expired it stays put in the past
        // (within the 1 s the two clocks may disagree by, plus the up-to-1 s
        // expiry margin).
        if standing == Standing::Expired {
            assert!(at <= now.wall.saturating_add(2_000));
        } else {
            // `at == i64::MAX`: the wall clock itself sits at the end of i64
            // (the harness may put it anywhere; no JS clock reads that:
            // `Date.now()` stays within ±8.64e15), so both saturate. Found
            // by the 10 M-run campaign of 2026-12-02.
            assert!(at > now.wall || at == i64::MAX);
        }
    }
    match s.state() {
        State::SignedOut => assert!(!s.is_signed_in()),
        State::Active => assert!(s.is_signed_in() && !s.in_flight()),
        State::Refreshing => {}
    }
    if s.in_flight() {
        assert_eq!(
            s.tick(now),
            Tick::Idle,
            "tick asks for a second attempt in flight"
        );
        assert_eq!(s.next_wake(now), None);
    }
    let _ = s.claims();
    let _ = s.last_error();
}

/// The operations a scheduler input decodes to (for reports and triage).
pub fn describe_scheduler(data: &[u8]) -> String {
    match SchedInput::arbitrary_take_rest(Unstructured::new(data)) {
        Ok(input) => format!("{input:#?}"),
        Err(e) => format!("(does not decode: {e})"),
    }
}

/// The operation kinds of a scheduler input, dash-separated (for names).
pub fn summarize_scheduler(data: &[u8]) -> String {
    let Ok(input) = SchedInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return String::from("undecodable");
    };
    let kinds: Vec<String> = input
        .ops
        .iter()
        .map(|op| {
            let d = format!("{op:?}");
            let end = d.find([' ', '{', '(']).unwrap_or(d.len());
            d[..end].to_ascii_lowercase()
        })
        .collect();
    if kinds.is_empty() {
        String::from("no-ops")
    } else {
        kinds.join("-")
    }
}

/// An `arbitrary`-driven sequence of `Session` operations (and the
/// scheduling functions on their own), checking invariants after each.
pub fn scheduler(data: &[u8]) {
    let Ok(input) = SchedInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let cfg = Config {
        dpop: true,
        skew_ms: input.skew_ms,
        retry: RetryPolicy {
            max_attempts: input.max_attempts,
            base_delay_ms: input.base_delay_ms,
            max_delay_ms: input.max_delay_ms,
        },
    };
    let mut s = Session::new(cfg);
    let mut now = Stamp {
        wall: input.start_wall,
        mono: input.start_mono,
    };
    check_session(&s, now);
    for op in &input.ops {
        let before = s.version();
        match op {
            Op::Accept { when, grant } => {
                now = advance(now, *when);
                let Some(g) = grant_for(grant, now) else {
                    continue;
                };
                let was = s.is_signed_in();
                // In flight: the attempt's answer; otherwise `setSession`
                // (which leaves an attempt in flight going).
                let accepted = if s.in_flight() {
                    s.accept_refreshed(g, now, now)
                } else {
                    s.accept(g, now)
                };
                match accepted {
                    Ok(()) => {
                        assert!(s.version() > before, "accept did not move the version");
                        assert_eq!(s.state(), State::Active);
                        assert!(s.usable(now).is_some(), "a token just accepted is unusable");
                    }
                    Err(e) => {
                        assert_eq!(e.code(), "invalid_response");
                        assert_eq!(s.version(), before);
                        assert_eq!(s.is_signed_in(), was);
                    }
                }
            }
            Op::TryBegin { when } => {
                now = advance(now, *when);
                match s.try_begin_attempt(now) {
                    Ok(()) => {
                        assert!(s.in_flight());
                        assert_eq!(s.state(), State::Refreshing);
                    }
                    Err(wait) => {
                        assert!(
                            0 < wait && wait <= MIN_ATTEMPT_GAP_MS,
                            "attempt gap wait {wait}"
                        );
                    }
                }
            }
            Op::Failed { when, err, random } => {
                now = advance(now, *when);
                let e = err.error();
                let transient = e.is_transient();
                let retry_after = match &e {
                    Error::ServerError { retry_after_ms, .. } => *retry_after_ms,
                    _ => None,
                };
                match s.attempt_failed(e, now, *random, true) {
                    Failure::Retry { in_ms } => {
                        assert!(transient);
                        assert!(
                            (MIN_ATTEMPT_GAP_MS..=MAX_TIMER_MS).contains(&in_ms),
                            "backoff out of bounds: {in_ms}"
                        );
                        if let Some(ra) = retry_after {
                            assert!(
                                in_ms >= ra.clamp(0, MAX_RETRY_AFTER_MS),
                                "Retry-After not honoured"
                            );
                        }
                        assert_eq!(s.state(), State::Refreshing);
                        assert_eq!(s.tick(now), Tick::Idle);
                        assert_eq!(s.next_wake(now), Some(in_ms));
                        assert!(s.last_error().is_some());
                    }
                    Failure::GaveUp => {
                        assert!(transient);
                        assert!(s.is_signed_in());
                        assert_ne!(s.standing(now), Standing::Expired);
                        assert_ne!(s.tick(now), Tick::Refresh, "refresh right after giving up");
                    }
                    Failure::Expired { .. } | Failure::Rejected { .. } => {
                        assert!(!s.is_signed_in());
                        assert_eq!(s.state(), State::SignedOut);
                        assert!(s.version() > before);
                    }
                }
            }
            Op::Settled => s.attempt_settled(),
            Op::ResetGiveUp => s.reset_give_up(),
            Op::Tick { when } => {
                now = advance(now, *when);
                match s.tick(now) {
                    Tick::Expire => assert_eq!(s.standing(now), Standing::Expired),
                    Tick::Refresh | Tick::Idle => {}
                }
            }
            Op::NextWake { when } => {
                now = advance(now, *when);
                if let Some(w) = s.next_wake(now) {
                    assert!(w >= 0);
                    // Nothing changes before the wake: `tick` answers the
                    // same just before it as now (when the clocks agree).
                    if w > 0 && !s.in_flight() {
                        let t = s.tick(now);
                        if let (Some(wall), Some(mono)) =
                            (now.wall.checked_add(w - 1), now.mono.checked_add(w - 1))
                        {
                            let just_before = Stamp { wall, mono };
                            assert_eq!(s.tick(just_before), t, "tick changed before next_wake");
                        }
                    }
                }
            }
            Op::Adopt {
                when,
                grant,
                lifetime,
                age,
                version,
            } => {
                now = advance(now, *when);
                let Some(g) = grant_for(grant, now) else {
                    continue;
                };
                let v = version_for(*version, before);
                if s.adopt(g, *lifetime, *age, v, now) {
                    assert!(v > before && v <= session::MAX_VERSION);
                    assert_eq!(s.version(), v);
                    assert!(s.usable(now).is_some(), "adopted an expired token");
                } else {
                    assert_eq!(s.version(), before);
                }
            }
            Op::RemoteSignOut { version } => {
                let v = version_for(*version, before);
                let had = s.is_signed_in();
                let followed = s.remote_sign_out(v);
                if v > before && v <= session::MAX_VERSION {
                    assert_eq!(followed, Some(had));
                    assert!(!s.is_signed_in());
                    assert_eq!(s.version(), v);
                } else {
                    assert_eq!(followed, None);
                    assert_eq!(s.is_signed_in(), had);
                }
            }
            Op::SignOut { when } => {
                now = advance(now, *when);
                let had = s.is_signed_in();
                assert_eq!(s.sign_out(now), had);
                assert!(s.version() > before, "sign_out did not move the version");
                assert_eq!(s.state(), State::SignedOut);
                assert_eq!(s.tick(now), Tick::Idle);
            }
            Op::RetryAfter {
                value,
                now_wall,
                date,
            } => {
                let d = schedule::parse_retry_after(value, *now_wall, date.as_deref());
                if let Some(d) = d {
                    assert!((0..=MAX_RETRY_AFTER_MS).contains(&d), "Retry-After {d}");
                }
                // Whether it parses does not depend on the Date header.
                assert_eq!(
                    d.is_some(),
                    schedule::parse_retry_after(value, *now_wall, None).is_some()
                );
            }
            Op::Backoff {
                base,
                max,
                failures,
                random,
                retry_after,
            } => {
                let p = RetryPolicy {
                    max_attempts: 5,
                    base_delay_ms: *base,
                    max_delay_ms: *max,
                };
                let d = backoff_ms(p, *failures, *random, *retry_after);
                assert!(
                    (MIN_ATTEMPT_GAP_MS..=MAX_TIMER_MS).contains(&d),
                    "backoff {d}"
                );
                let ceiling = (*max).clamp(0, MAX_TIMER_MS);
                let server = retry_after.unwrap_or(0).clamp(0, MAX_RETRY_AFTER_MS);
                assert!(d >= server);
                assert!(
                    d <= ceiling.max(server).max(MIN_ATTEMPT_GAP_MS),
                    "backoff above ceiling"
                );
            }
            Op::RefreshAfter { lifetime, skew } => {
                let r = schedule::refresh_after(*lifetime, *skew);
                assert!(0 <= r && r <= (*lifetime).max(0));
                assert!(i64::from(schedule::timer_delay(*lifetime)) <= MAX_TIMER_MS);
            }
        }
        assert!(s.version() >= before, "version went backwards");
        check_session(&s, now);
    }
}

// ------------------------------------------------------------------- tabsync

/// `core::tabsync::decode` on the input; what decodes re-encodes to the
/// same message and can be adopted without breaking a session.
pub fn tabsync(data: &[u8]) {
    let s = text(data);
    let Some(m) = tabsync::decode(&s) else {
        return;
    };
    match &m {
        Message::Token {
            version,
            grant,
            lifetime,
            age,
        } => {
            check_grant(grant);
            assert!(*version <= session::MAX_VERSION);
            assert!(*age >= 0);
            assert!(lifetime.is_none_or(|l| l >= 0));
            let again =
                tabsync::encode_token(*version, grant.token.expose(), grant.bound, *lifetime, *age);
            match tabsync::decode(&again) {
                Some(Message::Token {
                    version: v2,
                    grant: g2,
                    lifetime: l2,
                    age: a2,
                }) => {
                    assert_eq!((v2, l2, a2), (*version, *lifetime, *age));
                    assert_eq!(g2.token, grant.token);
                    assert_eq!(g2.claims, grant.claims);
                    assert_eq!(g2.bound, grant.bound);
                }
                other => panic!("a decoded token message does not round-trip: {other:?}"),
            }
            // Adopting it into a session keeps the session's invariants.
            let mut session = Session::new(Config {
                skew_ms: 30_000,
                retry: RetryPolicy::default(),
                dpop: true,
            });
            let now = Stamp::at(1_700_000_000_000);
            let took = session.adopt(grant.clone(), *lifetime, *age, *version, now);
            if took {
                assert!(session.usable(now).is_some());
            }
            check_session(&session, now);
            assert!(tabsync::adopt_instead_of_rotating(0, *version, true) == (*version != 0));
        }
        Message::SignedOut { version } => {
            assert!(*version <= session::MAX_VERSION);
            assert_eq!(
                tabsync::decode(&tabsync::encode_signed_out(*version)),
                Some(m)
            );
        }
        Message::Query => {
            assert_eq!(
                tabsync::decode(&tabsync::encode_query()),
                Some(Message::Query)
            );
        }
        Message::Busy => {
            assert_eq!(
                tabsync::decode(&tabsync::encode_busy()),
                Some(Message::Busy)
            );
        }
        Message::Quiet { ms, status } => {
            assert_eq!(
                tabsync::decode(&tabsync::encode_quiet(*ms, *status)),
                Some(Message::Quiet {
                    ms: *ms,
                    status: *status
                })
            );
        }
    }
}

/// Differential: `policy::json` against serde_json (the reference reader).
/// Both accept or both refuse a document, and what they read is the same
/// value (objects as maps, the last duplicate winning as in `JSON.parse`;
/// numbers as `f64`). Where they may differ by design: ours refuses nesting
/// deeper than its cap (serde_json's is 128) and numbers near or beyond the
/// `f64` range (above 1e300), and it reads long mantissas to within a few
/// ulps instead of correctly rounded (a correctly rounding reader costs
/// kilobytes of wasm; every number the client reads — `expires_in`, `exp`,
/// `iat`, versions — is an integer below 2^53, which is read exactly, and
/// this target asserts that too).
pub fn json_diff(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else {
        return; // both take &str: the bytes must be UTF-8 first
    };
    let ours = json::parse(text);
    let theirs = serde_json::from_str::<serde_json::Value>(text);
    match (ours, theirs) {
        (Ok(a), Ok(b)) => assert!(
            same_json(&a, &b),
            "json.rs and serde_json read {text:?} differently"
        ),
        (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) => panic!("json.rs accepts what serde_json refuses ({e}): {text:?}"),
        // The document's text, not serde's value, is what decides: a duplicate key drops an
        // earlier value from the map (`{"k":[1.8e308],"k":0}`), but json.rs has already
        // refused the number (json_diff campaign, 2026-12-02; kept in the corpus).
        (Err(_), Ok(b)) => assert!(
            json_depth(&b) > 60 || has_huge_number(&b) || text_exceeds_limits(text),
            "json.rs refuses what serde_json accepts: {text:?}"
        ),
    }
}

fn same_json(a: &Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as S;
    match (a, b) {
        (Value::Null, S::Null) => true,
        (Value::Bool(x), S::Bool(y)) => x == y,
        (Value::Num(x), S::Number(y)) => {
            // serde_json keeps an integer literal as an integer: only those
            // must be read exactly (below 2^53). A literal with a fraction or
            // an exponent may land on an integer-valued f64 (883410673858507.97767693
            // is 883410673858508.0) and is held to the few-ulps rule.
            let literal_int = y.is_u64() || y.is_i64();
            y.as_f64().is_some_and(|y| same_number(*x, y, literal_int))
        }
        (Value::Str(x), S::String(y)) => x == y,
        (Value::Arr(x), S::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q))
        }
        (Value::Obj(x), S::Object(y)) => {
            let mut keys: Vec<&String> = x.iter().map(|(k, _)| k).collect();
            keys.sort();
            keys.dedup();
            keys.len() == y.len()
                && keys.iter().all(|k| {
                    y.get(k.as_str())
                        .is_some_and(|q| a.get(k).is_some_and(|p| same_json(p, q)))
                })
        }
        _ => false,
    }
}

/// Exact for integer literals below 2^53; otherwise within 16 steps of the f64
/// grid (ulps, counted on the bit patterns, so subnormals are held to the same
/// rule). json.rs scales by powers of ten made by squaring, whose rounding
/// compounds: 9 ulps is the worst of 300,000 random literals (1-30 digits,
/// exponents -330..300), and `99007199254740538585072014e-308` was read 6 ulps
/// low (json_diff campaign, 2026-12-02; both kept in the corpus with the
/// subnormal `2.2250738585072014e-309`, one step low, which a relative bound
/// refused because it underflows to 0 there). The 109-digit literal of the
/// first campaign was dozens of ulps off: this bound still catches that.
fn same_number(ours: f64, reference: f64, literal_int: bool) -> bool {
    if literal_int && reference.abs() <= 9_007_199_254_740_992.0 {
        return ours == reference;
    }
    ours == reference
        || (ours.is_sign_negative() == reference.is_sign_negative()
            && ours.to_bits().abs_diff(reference.to_bits()) <= 16)
}

fn json_depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(json_depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether the text nests deeper than 60 or holds a number literal beyond
/// 1e300 anywhere (outside strings), including values a later duplicate key
/// replaced.
fn text_exceeds_limits(text: &str) -> bool {
    let (mut depth, mut max_depth, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    let mut number = String::new();
    let mut huge = false;
    let mut end_number = |number: &mut String| {
        if !number.is_empty() {
            huge |= number
                .parse::<f64>()
                .map_or(true, |f| !f.is_finite() || f.abs() > 1e300);
            number.clear();
        }
    };
    for c in text.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        // A number starts with a digit or `-` (the `e` of `true` is not one).
        let starts = c.is_ascii_digit() || c == '-';
        if starts || (!number.is_empty() && matches!(c, '+' | '.' | 'e' | 'E')) {
            number.push(c);
            continue;
        }
        end_number(&mut number);
        match c {
            '"' => in_string = true,
            '[' | '{' => {
                depth += 1;
                max_depth = max_depth.max(depth);
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    end_number(&mut number);
    huge || max_depth > 60
}

fn has_huge_number(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => {
            n.as_f64().is_none_or(|f| !f.is_finite() || f.abs() > 1e300)
        }
        serde_json::Value::Array(a) => a.iter().any(has_huge_number),
        serde_json::Value::Object(o) => o.values().any(has_huge_number),
        _ => false,
    }
}
