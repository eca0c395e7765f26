//! The size floor (bench/floor.sh, reported by make bench): the crate's
//! `policy` module, compiled from the same files, behind a synchronous ABI —
//! numbers and length-prefixed UTF-8 in linear memory, one import (the
//! browser's `URL`), no wasm-bindgen, no futures, no JS values. Each export
//! is one decision a client asks for (options, setSession, a tick, a tab
//! message, the refresh attempt's steps and outcome, getToken/fetch's rule,
//! the 401 replay, DPoP's nonce rules and proof input, logout); together
//! they reach every policy function the client's driver calls, so nothing
//! the client needs is optimised away. What this measures is the smallest
//! wasm of any client that keeps every decision in Rust: the shell's JS and
//! the driver's sequencing come on top.
#![no_std]
#![allow(static_mut_refs, clippy::missing_safety_doc)]
extern crate alloc;

pub(crate) mod prelude {
    pub use alloc::string::String;
    pub use alloc::vec;
    pub use alloc::vec::Vec;
}
#[path = "../../../src/error.rs"]
pub mod error;
#[path = "../../../src/policy/mod.rs"]
pub mod policy;

use alloc::string::String;
use alloc::vec::Vec;
use error::Error;
use policy::clock::Stamp;
use policy::dpop::{self, Nonces, ProofClaims, PublicJwk};
use policy::machine::{Attempt, Event, Fast, InLock, Machine, Out, Use};
use policy::options::{self, Options};
use policy::response::{logout_outcome, replay_after, Reply};
use policy::schedule::timer_delay;
use policy::tabsync::LockRequest;
use policy::token::{parse_token_response, Secret};

// The release wasm's allocator and panic handler.
#[path = "../../../src/tiny.rs"]
mod tiny;

#[link(wasm_import_module = "env")]
extern "C" {
    /// The host's `URL`: kind 0 resolve against the page, 1 canonical origin.
    /// Writes the result at `RES`, returns its length or -1.
    fn url(ptr: *const u8, len: usize, kind: u32) -> i32;
}

static mut IN: [u8; 65536] = [0; 65536];
static mut RES: [u8; 4096] = [0; 4096];
static mut OUT: Vec<u8> = Vec::new();

struct St {
    opts: Options,
    m: Machine,
    attempt: Option<Attempt>,
    nonces: Nonces,
    upstream: Option<String>,
    retries: dpop::Retries,
    server_clock: Option<(i64, i64)>,
}
static mut ST: Option<St> = None;

fn st() -> &'static mut St {
    unsafe {
        ST.as_mut()
            .unwrap_or_else(|| core::arch::wasm32::unreachable())
    }
}

/// Field `i` of the input: fields are u32 length-prefixed.
fn field(i: usize) -> &'static str {
    unsafe {
        let mut p = 0;
        let mut k = 0;
        loop {
            let n = u32::from_le_bytes([IN[p], IN[p + 1], IN[p + 2], IN[p + 3]]) as usize;
            p += 4;
            if k == i {
                return core::str::from_utf8(&IN[p..p + n]).unwrap_or("");
            }
            p += n;
            k += 1;
        }
    }
}

fn opt_field(i: usize) -> Option<&'static str> {
    let f = field(i);
    (!f.is_empty()).then_some(f)
}

fn host_url(s: &str, kind: u32) -> Option<String> {
    unsafe {
        let n = url(s.as_ptr(), s.len(), kind);
        if n < 0 {
            return None;
        }
        core::str::from_utf8(&RES[..n as usize])
            .ok()
            .map(String::from)
    }
}

fn o_bytes(b: &[u8]) {
    unsafe {
        OUT.extend_from_slice(&(b.len() as u32).to_le_bytes());
        OUT.extend_from_slice(b);
    }
}
fn o_str(s: &str) {
    o_bytes(s.as_bytes());
}
fn o_num(n: i64) {
    unsafe { OUT.extend_from_slice(&n.to_le_bytes()) }
}
fn o_opt(n: Option<i64>) {
    o_num(n.unwrap_or(i64::MIN));
}
fn o_err(e: &Error) {
    o_str(e.code());
    o_str(&e.message());
    o_num(e.status().map_or(-1, i64::from));
    o_num(e.is_transient() as i64);
}
fn o_result<T>(r: &Result<T, Error>) {
    match r {
        Ok(_) => o_num(0),
        Err(e) => {
            o_num(1);
            o_err(e)
        }
    }
}
fn o_out(out: &Out) {
    o_str(out.broadcast.as_deref().unwrap_or(""));
    o_opt(out.wake_in.map(|ms| timer_delay(ms) as i64));
    o_num(out.refresh as i64 | (out.handed_over as i64) << 1);
    for e in &out.events {
        match e {
            Event::SignedIn { expires_at } => {
                o_num(1);
                o_opt(*expires_at)
            }
            Event::Refreshed { expires_at, source } => {
                o_num(2);
                o_opt(*expires_at);
                o_num(*source as i64)
            }
            Event::RefreshFailed { error, retry_in_ms } => {
                o_num(3);
                o_err(error);
                o_opt(*retry_in_ms)
            }
            Event::SignedOut { reason } => {
                o_num(4);
                o_str(reason.as_str())
            }
            Event::StateChanged { state } => {
                o_num(5);
                o_str(state.as_str())
            }
        }
    }
    o_num(0);
}

fn now(w: f64, m: f64) -> Stamp {
    Stamp {
        wall: w as i64,
        mono: m as i64,
    }
}

#[no_mangle]
pub unsafe extern "C" fn io() -> *mut u8 {
    OUT.clear();
    IN.as_mut_ptr()
}
#[no_mangle]
pub unsafe extern "C" fn res() -> *mut u8 {
    RES.as_mut_ptr()
}
#[no_mangle]
pub unsafe extern "C" fn out() -> *const u8 {
    OUT.as_ptr()
}
#[no_mangle]
pub unsafe extern "C" fn out_len() -> usize {
    OUT.len()
}

/// `new TokenClient(options)`: 0 options JSON, 1 page origin.
#[no_mangle]
pub unsafe extern "C" fn create() -> i32 {
    let r = options::parse_with(field(0), opt_field(1), &|u| host_url(u, 0), &|u| {
        host_url(u, 1)
    });
    o_result(&r);
    match r {
        Ok(opts) => {
            let m = Machine::new(opts.session, opts.cross_tab);
            o_num(opts.cross_tab as i64 | (opts.dpop as i64) << 1);
            o_str(&opts.channel_name);
            ST = Some(St {
                opts,
                m,
                attempt: None,
                nonces: Nonces::default(),
                upstream: None,
                retries: dpop::Retries::default(),
                server_clock: None,
            });
            0
        }
        Err(_) => 1,
    }
}

#[no_mangle]
pub extern "C" fn set_session(w: f64, m: f64) {
    let s = st();
    let r = parse_token_response(field(0)).and_then(|grant| {
        if grant.bound && !s.opts.dpop {
            return Err(Error::InvalidResponse("token_type is not Bearer"));
        }
        let bind = dpop::bind_after_set_session(s.opts.dpop, grant.bound);
        s.m.set_session(grant, now(w, m), bind)
    });
    o_result(&r);
    if let Ok(out) = r {
        o_out(&out)
    }
}

#[no_mangle]
pub extern "C" fn tick(online: u32, w: f64, m: f64) {
    let out = st().m.tick(online != 0, now(w, m));
    o_out(&out)
}

#[no_mangle]
pub extern "C" fn tab_message(w: f64, m: f64) {
    let out = st().m.tab_message(field(0), now(w, m));
    o_out(&out)
}

#[no_mangle]
pub extern "C" fn force() {
    o_result(&st().m.force())
}

#[no_mangle]
pub extern "C" fn begin(w: f64, m: f64) {
    let s = st();
    let asked = s.m.refresh_asked();
    match s.m.begin_attempt_for(now(w, m), asked) {
        Err(e) => {
            o_num(2);
            o_err(&e)
        }
        Ok(Err(ms)) => {
            o_num(1);
            o_num(timer_delay(ms) as i64)
        }
        Ok(Ok((a, out))) => {
            s.attempt = Some(a);
            s.retries = dpop::Retries::default();
            o_num(0);
            o_out(&out)
        }
    }
}

#[no_mangle]
pub extern "C" fn lock_request(prev: i64, w: f64, m: f64, random: f64) -> i64 {
    let s = st();
    let prev = match prev {
        -1 => None,
        -2 => Some(LockRequest::Steal),
        n => Some(LockRequest::Wait(n)),
    };
    match s
        .m
        .lock_request(prev, s.opts.request_timeout_ms, now(w, m), random)
    {
        None => -1,
        Some(LockRequest::Steal) => -2,
        Some(LockRequest::Wait(n)) => n,
    }
}

/// The lock holder's notice before each refresh request.
#[no_mangle]
pub extern "C" fn busy_message() {
    o_str(&st().m.busy_message().unwrap_or_default())
}

#[no_mangle]
pub extern "C" fn in_lock(w: f64, m: f64) -> u32 {
    let s = st();
    let Some(a) = s.attempt else { return 2 };
    match s.m.in_lock(a, now(w, m)) {
        InLock::Call => {
            s.m.request_sent(now(w, m));
            0
        }
        InLock::Settled(r, out) => {
            o_result(&r);
            o_out(&out);
            1
        }
    }
}

/// The refresh request's headers (DPoP proofs signed by the host before).
#[no_mangle]
pub extern "C" fn refresh_request() {
    let s = st();
    o_str(&s.opts.refresh_url);
    for (k, v) in &s.opts.refresh_headers {
        o_str(k);
        o_str(v);
    }
    o_str("");
    o_str(s.upstream.as_deref().unwrap_or(""));
}

/// The refresh answer: 0 body, 1 Retry-After, 2 DPoP-Nonce, 3 the nonce the
/// proof carried, 4 Date; `status` 0 = no response (`err` code).
#[no_mangle]
pub extern "C" fn outcome(
    status: u32,
    err: u32,
    retries: u32,
    sw: f64,
    sm: f64,
    w: f64,
    m: f64,
    random: f64,
    online: u32,
) -> u32 {
    let s = st();
    let reply = if status == 0 {
        Err(if err == 1 {
            Error::Timeout
        } else {
            Error::Network
        })
    } else {
        Ok(Reply {
            status: status as u16,
            body: String::from(field(0)),
            retry_after: opt_field(1).map(String::from),
            dpop_nonce: opt_field(2).map(String::from),
            date: opt_field(4).map(String::from),
        })
    };
    if let (true, Ok(r)) = (s.opts.dpop, &reply) {
        let url = s.opts.refresh_url.clone();
        s.nonces.remember(&url, r.dpop_nonce.as_deref());
        let changed = dpop::nonce_moved(opt_field(3), s.nonces.for_url(&url));
        let asked = dpop::token_endpoint_wants_nonce(r.status, &r.body);
        let upstream = dpop::upstream_challenge(r.status, &r.body);
        let named = upstream.is_some();
        if let Some((htu, nonce)) = upstream {
            s.nonces.remember(&htu, nonce.as_deref());
            s.upstream = Some(htu);
        }
        let clock = s.server_clock;
        let at = now(w, m);
        if let Some(c) = dpop::server_clock(r.date.as_deref(), at) {
            s.server_clock = Some(c);
        }
        let answer = dpop::RefreshAnswer {
            nonce: asked && changed,
            upstream: named,
            clock: dpop::proof_refused(r.status, &r.body)
                && dpop::clock_moved(clock, s.server_clock, at),
        };
        let _ = retries;
        if dpop::retry_refresh(&mut s.retries, answer) {
            return 2;
        }
    }
    let Some(a) = s.attempt.take() else { return 3 };
    let (r, out, linger) =
        s.m.outcome(a, now(sw, sm), reply, now(w, m), random, online != 0);
    o_result(&r);
    o_out(&out);
    linger as u32
}

/// What a caller of getToken/fetch does now: 0 token, 1 fail, 2 expire, 3
/// await start, 4 await refresh (had).
#[no_mangle]
pub extern "C" fn token_for_use(w: f64, m: f64, refreshing: u32, starting: u32) -> u32 {
    let s = st();
    match s.m.token_for_use(now(w, m), refreshing != 0, starting != 0) {
        Use::Now(t) => {
            o_str(t.as_ref().map_or("", |t| t.expose()));
            if let Some(t) = t {
                o_str(&dpop::authorization(
                    t.expose(),
                    dpop::with_proof(s.opts.dpop, s.m.session().bound(&t)),
                ));
            }
            0
        }
        Use::Fail(e) => {
            o_err(&e);
            1
        }
        Use::Expire => {
            let out = s.m.tick(false, now(w, m));
            o_out(&out);
            2
        }
        Use::AwaitStart => 3,
        Use::AwaitRefresh { had } => 4 + had as u32,
    }
}

fn outcome_of(code: u32) -> Result<(), Error> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::Network)
    }
}

#[no_mangle]
pub extern "C" fn after_refresh(w: f64, m: f64, had: u32, ok: u32) {
    let r = st().m.after_refresh(now(w, m), had != 0, outcome_of(ok));
    o_result(&r);
    if let Ok(Some(t)) = r {
        o_str(t.expose())
    }
}

#[no_mangle]
pub extern "C" fn start_query() {
    let s = st();
    if let Err(e) = s.m.live() {
        o_err(&e);
        return;
    }
    o_str(&s.m.start_query().unwrap_or_default())
}

#[no_mangle]
pub extern "C" fn start_result(w: f64, m: f64, ok: u32) -> i32 {
    match st().m.start_result(now(w, m), outcome_of(ok)) {
        Ok(b) => b as i32,
        Err(e) => {
            o_err(&e);
            -1
        }
    }
}

#[no_mangle]
pub extern "C" fn usable(w: f64, m: f64) {
    let s = st();
    o_str(s.m.session().usable(now(w, m)).map_or("", |t| t.expose()))
}

#[no_mangle]
pub extern "C" fn logout(w: f64, m: f64) {
    let s = st();
    let r = s.m.logout(now(w, m), s.opts.request_timeout_ms);
    o_result(&r);
    if let Ok(out) = r {
        o_out(&out);
        o_str(s.opts.logout_url.as_deref().unwrap_or(""))
    }
}

#[no_mangle]
pub extern "C" fn logout_reply(status: u32) {
    let reply = Reply {
        status: status as u16,
        body: String::from(field(0)),
        retry_after: None,
        dpop_nonce: None,
        date: None,
    };
    let r = logout_outcome(&reply);
    o_result(&r);
    if let Ok(Some(u)) = r {
        o_str(&u)
    }
}

#[no_mangle]
pub extern "C" fn dispose() {
    st().m.dispose()
}

/// The fetch fast path for 0 origin: 0 attach (header out), 1 plain, 2 slow.
#[no_mangle]
pub extern "C" fn fast_fetch(w: f64, m: f64, refreshing: u32, app_auth: u32) -> u32 {
    let s = st();
    let allowed = s.opts.allows(field(0));
    match s.m.fast_fetch(
        now(w, m),
        refreshing != 0,
        allowed,
        app_auth != 0,
        s.opts.dpop,
    ) {
        Fast::Attach(t) => {
            o_str(&dpop::authorization(t.expose(), false));
            o_num(s.m.session().version() as i64);
            0
        }
        Fast::Plain => 1,
        Fast::Slow => 2,
    }
}

#[no_mangle]
pub extern "C" fn replay_needed(status: u32) -> u32 {
    let s = st();
    let f = field(0);
    let ours = f.is_empty() || s.opts.allows(f);
    replay_after(status as u16, ours, true) as u32
}

#[no_mangle]
pub extern "C" fn refresh_for_401(version: f64) -> u32 {
    st().m.refresh_for_401(version as u64) as u32
}

#[no_mangle]
pub extern "C" fn refresh_for_401_of() -> u32 {
    let sent = Secret::new(String::from(field(0)));
    st().m.refresh_for_401_of(&sent) as u32
}

#[no_mangle]
pub extern "C" fn replay_token(w: f64, m: f64) -> u32 {
    let s = st();
    let old = Secret::new(String::from(field(0)));
    match s.m.session().usable(now(w, m)) {
        Some(t) if *t != old => {
            o_str(&dpop::authorization(
                t.expose(),
                dpop::with_proof(s.opts.dpop, s.m.session().bound(t)),
            ));
            1
        }
        _ => 0,
    }
}

/// Resource response (DPoP): 0 url, 1 DPoP-Nonce, 2 WWW-Authenticate, 3 the
/// nonce its proof carried. 1: retry with the new nonce, 2: return as is.
#[no_mangle]
pub extern "C" fn resource_reply(status: u32, retried: u32) -> u32 {
    let s = st();
    let url = field(0);
    s.nonces.remember(url, opt_field(1));
    let changed = dpop::nonce_moved(opt_field(3), s.nonces.for_url(url));
    let asked = dpop::resource_wants_nonce(status as u16, opt_field(2));
    if dpop::retry_with_nonce(asked, changed, retried != 0) {
        return 1;
    }
    asked as u32 * 2
}

/// A DPoP proof's signing input: 0 htm, 1 url, 2 jti, 3 ath, 4 x, 5 y.
#[no_mangle]
pub extern "C" fn proof_input(w: f64, m: f64) {
    let s = st();
    let url = field(1);
    let nonce = s.nonces.for_url(url).map(String::from);
    let jwk = PublicJwk {
        x: String::from(field(4)),
        y: String::from(field(5)),
    };
    let claims = ProofClaims {
        htm: field(0),
        url,
        iat: dpop::proof_iat(s.server_clock, now(w, m)),
        jti: field(2),
        ath: opt_field(3),
        nonce: nonce.as_deref(),
    };
    o_str(&dpop::signing_input(&jwk, &claims));
    o_str(nonce.as_deref().unwrap_or(""));
}

#[no_mangle]
pub unsafe extern "C" fn proof_assemble(sig_len: usize) {
    let sig = &IN[..sig_len];
    let input = String::from(field_at(sig_len));
    o_str(&dpop::assemble(&input, sig))
}

unsafe fn field_at(off: usize) -> &'static str {
    let n = u32::from_le_bytes([IN[off], IN[off + 1], IN[off + 2], IN[off + 3]]) as usize;
    core::str::from_utf8(&IN[off + 4..off + 4 + n]).unwrap_or("")
}

#[no_mangle]
pub unsafe extern "C" fn b64url(len: usize) {
    o_str(&dpop::b64url(&IN[..len]))
}

#[no_mangle]
pub extern "C" fn allows() -> u32 {
    st().opts.allows(field(0)) as u32
}

#[no_mangle]
pub extern "C" fn login_target() -> u32 {
    let s = st();
    if s.m.live().is_err() {
        return 0;
    }
    let Some(mut target) = s.opts.login_url.clone() else {
        return 1;
    };
    let q = policy::find_str(&target, "?").is_some();
    target.push(if q { '&' } else { '?' });
    target.push_str("returnTo=");
    o_str(&target);
    2
}

#[no_mangle]
pub extern "C" fn state() -> u32 {
    st().m.state() as u32
}

#[no_mangle]
pub extern "C" fn expires_at(w: f64, m: f64) -> f64 {
    st().m
        .session()
        .expires_at(now(w, m))
        .map_or(f64::NAN, |n| n as f64)
}

#[no_mangle]
pub extern "C" fn refresh_at(w: f64, m: f64) -> f64 {
    st().m.refresh_at(now(w, m)).map_or(f64::NAN, |n| n as f64)
}

#[no_mangle]
pub extern "C" fn claims() -> f64 {
    let s = st();
    match s.m.session().claims() {
        Some(c) => {
            o_str(&c.payload_json);
            s.m.session().version() as f64
        }
        None => -1.0,
    }
}

#[no_mangle]
pub extern "C" fn has_scope() -> u32 {
    st().m
        .session()
        .claims()
        .is_some_and(|c| c.has_scope(field(0))) as u32
}
