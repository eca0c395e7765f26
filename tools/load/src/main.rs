//! Load test of the tokenwarden reference server (`make load`, via `tools/load/run.sh`).
//!
//! Phase 1 (throughput): N virtual users each log in once (demo/demo, so one token family
//! each), then loop, strictly sequentially, `POST /auth/refresh` (current cookie + CSRF
//! header, keeping the rotated cookie) and `GET /api/me` (Bearer), until the deadline.
//! Per endpoint: requests, req/s, p50/p90/p99/max latency, status counts.
//!
//! Checks (a failure makes the exit code non-zero; timing never does):
//! - no 5xx, no transport error or timeout;
//! - no 401 from `/auth/refresh` (a lost or double-issued rotation would show as one);
//! - every refresh token handed out in phase 1 is new. Phase 1 drives each family strictly
//!   sequentially, so this catches an echo (the presented token back) or a token repeated
//!   across families, never a double-issued rotation: only phase 2 can;
//! - `/test/counters`: `liveFamilies == familiesWithOneLiveToken == users`, `reuseDetected`
//!   unchanged, and the server's counts agree with the client's;
//! - phase 2 (duplicates): for a few fresh families, two connections (to two instances when
//!   there are two) present the SAME cookie at once. The lost-response rule: both get 200
//!   with the same successor (one rotation, one `lostResponsesRepeated`); then the successor
//!   is used, and the parent presented again is reuse: 401, family revoked;
//! - phase 3: the phase-1 users log out, and no live family is left.
//!
//! Several `--addr` (instances on one database): each virtual user alternates its requests
//! over them, and the server counters are summed (the store's counts read once).
//! `--summary FILE` writes the headline figures as JSON for `run.sh`'s side-by-side table.
//!
//! Talks only to the loopback addresses that `run.sh` gives it.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

mod oidc;

/// The refresh cookie's name: `LOAD_COOKIE`, by default the reference server's
/// `__Secure-tw_refresh` (set `LOAD_COOKIE=tw_refresh` to measure a server from before the rename).
fn cookie_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::env::var("LOAD_COOKIE").unwrap_or_else(|_| "__Secure-tw_refresh".to_string())
    })
}
const CSRF_HEADER: &str = "x-requested-with";
/// One request that takes longer than this is a failure (the server is on loopback).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on phase-2 pairs, whatever the duration.
const MAX_DUP_PAIRS: usize = 20_000;

// ---------------------------------------------------------------------------------------
// Options

struct Options {
    addrs: Vec<SocketAddr>,
    summary: Option<String>,
    users: usize,
    seconds: f64,
    dup_seconds: f64,
    dup_workers: usize,
    results: Option<String>,
    server_pid: Vec<u32>,
    meta: Vec<(String, String)>,
    /// `ID:SECRET`: drive oidc-provider (`oidc-provider.mjs`) instead of tokenwarden.
    oidc_client: Option<String>,
}

const USAGE: &str = "usage: tokenwarden-load --addr 127.0.0.1:PORT [--addr ...] [--users N] [--seconds S] \
[--dup-seconds S] [--dup-workers N] [--results FILE] [--summary FILE] [--server-pid PID[,PID]] [--meta KEY=VALUE]... \
[--oidc-client ID:SECRET (the addr is oidc-provider.mjs: its refresh_token grant instead)]";

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        addrs: Vec::new(),
        summary: None,
        users: 64,
        seconds: 20.0,
        dup_seconds: 3.0,
        dup_workers: 8,
        results: None,
        server_pid: Vec::new(),
        meta: Vec::new(),
        oidc_client: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--addr" => o.addrs.push(value.parse().map_err(|e| bad(&e))?),
            "--summary" => o.summary = Some(value),
            "--users" => o.users = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => o.seconds = value.parse().map_err(|e| bad(&e))?,
            "--dup-seconds" => o.dup_seconds = value.parse().map_err(|e| bad(&e))?,
            "--dup-workers" => o.dup_workers = value.parse().map_err(|e| bad(&e))?,
            "--results" => o.results = Some(value),
            "--oidc-client" => o.oidc_client = Some(value),
            "--server-pid" => {
                for pid in value.split(',') {
                    o.server_pid.push(pid.parse().map_err(|e| bad(&e))?);
                }
            }
            "--meta" => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| bad(&"expected KEY=VALUE"))?;
                o.meta.push((k.to_string(), v.to_string()));
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if o.addrs.is_empty() {
        return Err(format!("--addr is required\n{USAGE}"));
    }
    for addr in &o.addrs {
        if !addr.ip().is_loopback() || addr.port() == 0 {
            return Err(format!(
                "--addr must be a loopback address with a port, got {addr}"
            ));
        }
    }
    if !(1..=10_000).contains(&o.users) {
        return Err("--users must be 1..=10000".into());
    }
    if !(o.seconds.is_finite() && (2.0..=3600.0).contains(&o.seconds)) {
        return Err("--seconds must be 2..=3600".into());
    }
    if !(o.dup_seconds.is_finite() && o.dup_seconds >= 0.0 && o.dup_seconds < o.seconds) {
        return Err("--dup-seconds must be >= 0 and < --seconds".into());
    }
    if !(1..=256).contains(&o.dup_workers) {
        return Err("--dup-workers must be 1..=256".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------
// A keep-alive HTTP/1 connection

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

struct Conn {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn, String> {
        let sender = Self::handshake(addr).await?;
        let host = HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?;
        Ok(Conn { addr, sender, host })
    }

    async fn handshake(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Send one request (reconnecting first if the server closed the connection) and read
    /// the whole answer, within [`REQUEST_TIMEOUT`].
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&'static str>,
    ) -> Result<Reply, String> {
        let content_type = body.map(|_| "application/json");
        let body = Bytes::from_static(body.unwrap_or_default().as_bytes());
        self.send_body(method, path, headers, content_type, body)
            .await
    }

    /// [`Conn::send`] with any body and content type.
    async fn send_body(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Reply, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.host.clone());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let exchange = async {
            if self.sender.is_closed() || self.sender.ready().await.is_err() {
                self.sender = Self::handshake(self.addr).await?;
            }
            let response = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| format!("request: {e}"))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{path}: timed out after {REQUEST_TIMEOUT:?}"))?
    }

    async fn login(&mut self) -> Result<(Reply, Option<Session>), String> {
        let reply = self
            .send(
                Method::POST,
                "/auth/login",
                &[],
                Some(r#"{"username":"demo","password":"demo"}"#),
            )
            .await?;
        let session = (reply.status == StatusCode::OK)
            .then(|| session_from(&reply))
            .transpose()?;
        Ok((reply, session))
    }

    async fn refresh(&mut self, cookie: &str) -> Result<Reply, String> {
        let cookie = format!("{}={cookie}", cookie_name());
        self.send(
            Method::POST,
            "/auth/refresh",
            &[("cookie", &cookie), (CSRF_HEADER, "XMLHttpRequest")],
            None,
        )
        .await
    }

    async fn logout(&mut self, cookie: &str) -> Result<Reply, String> {
        let cookie = format!("{}={cookie}", cookie_name());
        self.send(
            Method::POST,
            "/auth/logout",
            &[("cookie", &cookie), (CSRF_HEADER, "XMLHttpRequest")],
            None,
        )
        .await
    }

    async fn me(&mut self, access: &str) -> Result<Reply, String> {
        let bearer = format!("Bearer {access}");
        self.send(Method::GET, "/api/me", &[("authorization", &bearer)], None)
            .await
    }

    async fn counters(&mut self) -> Result<Counters, String> {
        let reply = self.send(Method::GET, "/test/counters", &[], None).await?;
        if reply.status != StatusCode::OK {
            return Err(format!(
                "GET /test/counters: {} (is the server in --test-mode?)",
                reply.status
            ));
        }
        let v: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("/test/counters is not JSON: {e}"))?;
        // A counter renamed or dropped would read as the same placeholder before and after,
        // so every difference check on it would pass: refuse the snapshot instead.
        if let Some(name) = COUNTERS.iter().find(|n| !v[**n].is_u64()) {
            return Err(format!("/test/counters has no {name}"));
        }
        Ok(Counters(v))
    }
}

/// What a 200 from login or refresh hands out.
struct Session {
    cookie: String,
    access: String,
}

/// The rotated refresh token from `Set-Cookie`, if the response sets a non-empty one.
fn set_cookie_token(reply: &Reply) -> Option<(&str, &str)> {
    reply
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (name, value) = pair.trim().split_once('=')?;
            (name == cookie_name()).then_some((value, attrs))
        })
}

/// Check a 200 token response and take the cookie and access token out of it.
fn session_from(reply: &Reply) -> Result<Session, String> {
    let (cookie, attrs) =
        set_cookie_token(reply).ok_or("200 token response without a refresh cookie")?;
    if cookie.len() < 43 {
        return Err(format!(
            "refresh token of {} chars (want >= 43)",
            cookie.len()
        ));
    }
    for want in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/auth"] {
        if !attrs.split(';').any(|a| a.trim() == want) {
            return Err(format!("refresh cookie without {want}"));
        }
    }
    if reply.headers.get(header::CACHE_CONTROL) != Some(&HeaderValue::from_static("no-store")) {
        return Err("token response without Cache-Control: no-store".into());
    }
    let v: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| format!("token response is not JSON: {e}"))?;
    let access = v["access_token"]
        .as_str()
        .filter(|t| t.split('.').count() == 3)
        .ok_or("token response without a JWT access_token")?;
    if v["token_type"] != "Bearer" {
        return Err("token_type is not Bearer".into());
    }
    // The server's anchor cookie goes back with the refresh cookie, as a browser's jar sends
    // it (a refresh cookie without its anchor is ignored); kept beside the token in the
    // `Cookie` pairs this session sends.
    let anchor = reply
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.split(';')
                .next()?
                .trim()
                .strip_prefix("__Host-tw_anchor=")
        });
    let cookie = match anchor {
        Some(a) => format!("{cookie}; __Host-tw_anchor={a}"),
        None => cookie.to_string(),
    };
    Ok(Session {
        cookie,
        access: access.to_string(),
    })
}

struct Counters(Value);

/// The server counters the checks read ([`Counters::get`]).
const COUNTERS: &[&str] = &[
    "apiOk",
    "familiesRevoked",
    "familiesWithOneLiveToken",
    "liveFamilies",
    "loginsServed",
    "lostResponsesRepeated",
    "refreshesServed",
    "reuseDetected",
];

impl Counters {
    fn get(&self, name: &str) -> u64 {
        debug_assert!(COUNTERS.contains(&name), "{name} is not in COUNTERS");
        self.0[name].as_u64().unwrap_or(u64::MAX)
    }
}

// ---------------------------------------------------------------------------------------
// Measurements

#[derive(Default)]
struct Endpoint {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
}

impl Endpoint {
    fn record(&mut self, started: Instant, result: &Result<Reply, String>) {
        match result {
            Ok(reply) => {
                let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                self.latencies_us.push(us);
                *self.statuses.entry(reply.status.as_u16()).or_default() += 1;
            }
            Err(_) => self.transport_errors += 1,
        }
    }

    fn merge(&mut self, other: Endpoint) {
        self.latencies_us.extend(other.latencies_us);
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
    }

    fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    fn count_5xx(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| **s >= 500)
            .map(|(_, n)| n)
            .sum()
    }

    fn requests(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.transport_errors
    }
}

/// Nearest-rank percentile of sorted microseconds, in ms.
fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// What one virtual user did in phase 1.
#[derive(Default)]
struct UserReport {
    login: Endpoint,
    refresh: Endpoint,
    me: Endpoint,
    issued: Vec<String>,
    final_cookie: Option<String>,
    failures: Vec<String>,
}

async fn virtual_user(
    addrs: Vec<SocketAddr>,
    start: Arc<tokio::sync::Barrier>,
    mut clock: tokio::sync::watch::Receiver<Option<Instant>>,
) -> UserReport {
    let mut r = UserReport::default();
    let mut conns = Vec::new();
    for addr in addrs {
        match Conn::open(addr).await {
            Ok(c) => conns.push(c),
            Err(e) => {
                r.failures.push(e);
                start.wait().await;
                return r;
            }
        }
    }
    // Requests alternate over the instances: refresh on one, /api/me on the next, …
    let mut turn = 0usize;
    let n = conns.len();
    let t = Instant::now();
    let login = conns[0].login().await;
    let session = match login {
        Ok((reply, session)) => {
            r.login.record(t, &Ok(reply));
            session
        }
        Err(e) => {
            r.login.record(t, &Err(e.clone()));
            r.failures.push(format!("login: {e}"));
            None
        }
    };
    // Everyone starts the measured loop together, after every login is done.
    start.wait().await;
    let deadline = match clock.wait_for(Option::is_some).await {
        Ok(d) => d.unwrap_or_else(Instant::now),
        Err(_) => Instant::now(),
    };
    let Some(mut session) = session else {
        if r.failures.is_empty() {
            r.failures.push("login refused".into());
        }
        return r;
    };
    r.issued.push(session.cookie.clone());
    while Instant::now() < deadline {
        let t = Instant::now();
        turn += 1;
        let result = conns[turn % n].refresh(&session.cookie).await;
        r.refresh.record(t, &result);
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => {
                // The rotation may or may not have happened: this user cannot go on.
                r.failures.push(format!("refresh: {e}"));
                r.final_cookie = None;
                return r;
            }
        };
        if reply.status != StatusCode::OK {
            r.failures.push(format!(
                "refresh answered {} ({})",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ));
            // A 401 clears the cookie: the family is gone for this user. Stop.
            r.final_cookie = None;
            return r;
        }
        match session_from(&reply) {
            Ok(next) => {
                if next.cookie == session.cookie {
                    r.failures
                        .push("refresh returned the presented token again".into());
                }
                r.issued.push(next.cookie.clone());
                session = next;
            }
            Err(e) => {
                r.failures.push(format!("refresh 200: {e}"));
                return r;
            }
        }
        r.final_cookie = Some(session.cookie.clone());
        let t = Instant::now();
        let result = conns[(turn + 1) % n].me(&session.access).await;
        r.me.record(t, &result);
        match result {
            Ok(reply) if reply.status == StatusCode::OK => {}
            Ok(reply) => r
                .failures
                .push(format!("/api/me answered {}", reply.status)),
            Err(e) => r.failures.push(format!("/api/me: {e}")),
        }
    }
    r.final_cookie = Some(session.cookie);
    r
}

// ---------------------------------------------------------------------------------------
// Phase 2: two connections present the same cookie at once

#[derive(Default)]
struct DupReport {
    pairs: u64,
    /// Both 200 with the same successor (one rotation, one repeat).
    same_successor: u64,
    /// Both 200 with different successors: a double-issued rotation.
    diverged: u64,
    /// One 200, one 401: the lost-response rule did not hold.
    split: u64,
    other: u64,
    /// After the successor was used, the parent was refused (reuse).
    parent_refused_after_use: u64,
    /// … and the family was revoked (the newest token refused too).
    family_revoked_after: u64,
    first_to_answer: [u64; 2],
    latencies_us: Vec<u32>,
    failures: Vec<String>,
}

async fn dup_worker(
    addrs: Vec<SocketAddr>,
    deadline: Instant,
    budget: Arc<std::sync::atomic::AtomicUsize>,
) -> DupReport {
    use std::sync::atomic::Ordering;
    let mut r = DupReport::default();
    let (first, last) = (addrs[0], addrs[addrs.len() - 1]);
    let (mut a, mut b) = match (Conn::open(first).await, Conn::open(last).await) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            r.failures.push(e);
            return r;
        }
    };
    let take = || {
        budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    };
    while Instant::now() < deadline && take() {
        let session = match a.login().await {
            Ok((_, Some(s))) => s,
            Ok((reply, None)) => {
                r.failures
                    .push(format!("dup login answered {}", reply.status));
                return r;
            }
            Err(e) => {
                r.failures.push(format!("dup login: {e}"));
                return r;
            }
        };
        let started = Instant::now();
        // Both requests go out at once, on two keep-alive connections (two instances when
        // there are two): a browser that lost the first answer and retried, or two tabs.
        let timed = |fut| async move {
            let out = fut.await;
            (Instant::now(), out)
        };
        let ((ta, ra), (tb, rb)) = tokio::join!(
            timed(a.refresh(&session.cookie)),
            timed(b.refresh(&session.cookie))
        );
        r.latencies_us
            .push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
        r.pairs += 1;
        r.first_to_answer[usize::from(tb < ta)] += 1;
        let (ra, rb) = match (ra, rb) {
            (Ok(x), Ok(y)) => (x, y),
            (Err(e), _) | (_, Err(e)) => {
                r.failures.push(format!("duplicate refresh: {e}"));
                r.other += 1;
                continue;
            }
        };
        let (sa, sb) = (ra.status.as_u16(), rb.status.as_u16());
        let successor = match (sa, sb) {
            (200, 200) => match (session_from(&ra), session_from(&rb)) {
                (Ok(x), Ok(y)) if x.cookie == y.cookie => {
                    r.same_successor += 1;
                    x
                }
                (Ok(_), Ok(_)) => {
                    r.diverged += 1;
                    r.failures.push(
                        "both duplicates got 200 with different successors (double-issued rotation)"
                            .into(),
                    );
                    continue;
                }
                (Err(e), _) | (_, Err(e)) => {
                    r.other += 1;
                    r.failures.push(format!("duplicate 200: {e}"));
                    continue;
                }
            },
            (200, 401) | (401, 200) => {
                r.split += 1;
                r.failures
                    .push("one duplicate refused within the lost-response window".into());
                continue;
            }
            _ => {
                r.other += 1;
                r.failures
                    .push(format!("duplicate refreshes answered {sa} and {sb}"));
                continue;
            }
        };
        // Use the successor (on the other instance), then present the parent again: reuse.
        let newest = match b.refresh(&successor.cookie).await {
            Ok(reply) if reply.status == StatusCode::OK => match session_from(&reply) {
                Ok(s) => s,
                Err(e) => {
                    r.failures.push(format!("successor refresh: {e}"));
                    continue;
                }
            },
            Ok(reply) => {
                r.failures
                    .push(format!("the successor's refresh answered {}", reply.status));
                continue;
            }
            Err(e) => {
                r.failures.push(format!("successor refresh: {e}"));
                continue;
            }
        };
        match a.refresh(&session.cookie).await {
            Ok(reply) if reply.status == StatusCode::UNAUTHORIZED => {
                r.parent_refused_after_use += 1
            }
            Ok(reply) => r.failures.push(format!(
                "the parent after its successor was used got {} (not reuse)",
                reply.status
            )),
            Err(e) => r.failures.push(format!("parent replay: {e}")),
        }
        match b.refresh(&newest.cookie).await {
            Ok(reply) if reply.status == StatusCode::UNAUTHORIZED => r.family_revoked_after += 1,
            Ok(reply) => r.failures.push(format!(
                "after reuse, the newest cookie got {} (family not revoked)",
                reply.status
            )),
            Err(e) => r.failures.push(format!("follow-up refresh: {e}")),
        }
    }
    r
}

/// One row of the endpoint table: requests, rate over `secs` (if timed), percentiles, statuses.
fn endpoint_row(md: &mut String, name: &str, e: &Endpoint, secs: Option<f64>) {
    let mut statuses: Vec<String> = e
        .statuses
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect();
    if e.transport_errors > 0 {
        statuses.push(format!("errors: {}", e.transport_errors));
    }
    let rate = secs
        .map(|s| format!("{:.0}", e.requests() as f64 / s))
        .unwrap_or_else(|| "—".into());
    let l = &e.latencies_us;
    let _ = writeln!(
        md,
        "| {name} | {} | {rate} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
        e.requests(),
        pct(l, 50.0),
        pct(l, 90.0),
        pct(l, 99.0),
        l.last().map(|m| *m as f64 / 1000.0).unwrap_or(f64::NAN),
        statuses.join(", ")
    );
}

// ---------------------------------------------------------------------------------------
// CPU time of a process, from /proc (Linux); None elsewhere.

fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ": state is field 3, utime 14, stime 15 (1-based) → 11, 12 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------------------------------

struct Check {
    name: String,
    ok: bool,
    detail: String,
}

fn check(checks: &mut Vec<Check>, name: &str, ok: bool, detail: String) {
    checks.push(Check {
        name: name.to_string(),
        ok,
        detail,
    });
}

/// The check that no virtual user met a failure (each stopped at its first).
fn check_failures(checks: &mut Vec<Check>, failures: &BTreeMap<String, u64>) {
    check(
        checks,
        "no failure seen by a virtual user",
        failures.is_empty(),
        if failures.is_empty() {
            String::from("none")
        } else {
            format!("{} kinds, listed below", failures.len())
        },
    );
}

/// The checks table, the failures the virtual users saw, and the verdict.
fn write_checks(md: &mut String, checks: &[Check], failures: &BTreeMap<String, u64>, ok: bool) {
    let _ = writeln!(md, "\n| check | result | detail |\n| --- | --- | --- |");
    for c in checks {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            c.name,
            if c.ok { "ok" } else { "**FAILED**" },
            c.detail
        );
    }
    if !failures.is_empty() {
        let _ = writeln!(md, "\nFailures seen by the virtual users:\n");
        for (f, n) in failures {
            let _ = writeln!(md, "- {n} × {f}");
        }
    }
    let _ = writeln!(
        md,
        "\n{}",
        if ok {
            "All correctness checks passed."
        } else {
            "CORRECTNESS CHECKS FAILED."
        }
    );
}

fn main() -> std::process::ExitCode {
    let options = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let hard_limit = Duration::from_secs_f64(options.seconds + 120.0);
    let work = async {
        match &options.oidc_client {
            Some(credentials) => oidc::run(&options, credentials).await,
            None => run(&options).await,
        }
    };
    match runtime.block_on(async { tokio::time::timeout(hard_limit, work).await }) {
        Ok(Ok(true)) => std::process::ExitCode::SUCCESS,
        Ok(Ok(false)) => std::process::ExitCode::FAILURE,
        Ok(Err(e)) => {
            eprintln!("load: {e}");
            std::process::ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("load: gave up after {hard_limit:?}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One connection per instance for `/test/counters` (summed) and logout.
struct Control(Vec<Conn>);

impl Control {
    async fn counters(&mut self) -> Result<Counters, String> {
        let mut sum = serde_json::Map::new();
        for (i, conn) in self.0.iter_mut().enumerate() {
            let Counters(Value::Object(c)) = conn.counters().await? else {
                return Err("/test/counters is not a JSON object".into());
            };
            for (k, v) in c {
                let n = v.as_u64().unwrap_or(0);
                // The store's counts come from the one shared database: read once.
                let shared = k == "liveFamilies" || k == "familiesWithOneLiveToken";
                let entry = sum.entry(k).or_insert(Value::from(0u64));
                if i == 0 || !shared {
                    *entry = Value::from(entry.as_u64().unwrap_or(0) + n);
                }
            }
        }
        Ok(Counters(Value::Object(sum)))
    }
}

fn cpu_of(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|p| cpu_seconds(&p.to_string()))
        .sum::<Option<f64>>()
}

async fn run(o: &Options) -> Result<bool, String> {
    let mut conns = Vec::new();
    for a in &o.addrs {
        conns.push(Conn::open(*a).await?);
    }
    let mut control = Control(conns);
    let before = control.counters().await?;
    let mut checks = Vec::new();
    check(
        &mut checks,
        "fresh server (no live family before the run)",
        before.get("liveFamilies") == 0,
        format!("liveFamilies = {}", before.get("liveFamilies")),
    );

    // ---- Phase 1 -----------------------------------------------------------------------
    let load_secs = o.seconds - o.dup_seconds;
    eprintln!(
        "load: phase 1: {} users, {:.1} s of refresh + /api/me on {:?}",
        o.users, load_secs, o.addrs
    );
    let barrier = Arc::new(tokio::sync::Barrier::new(o.users + 1));
    let (clock_tx, clock_rx) = tokio::sync::watch::channel(None);
    let tasks: Vec<_> = (0..o.users)
        .map(|_| {
            tokio::spawn(virtual_user(
                o.addrs.clone(),
                barrier.clone(),
                clock_rx.clone(),
            ))
        })
        .collect();
    let login_started = Instant::now();
    // Wait until every user has logged in, then start the clock.
    barrier.wait().await;
    let login_secs = login_started.elapsed().as_secs_f64();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(load_secs);
    clock_tx
        .send(Some(deadline))
        .map_err(|_| "no virtual user is waiting".to_string())?;
    let server_cpu0 = cpu_of(&o.server_pid);
    let client_cpu0 = cpu_seconds("self");
    let mut reports = Vec::with_capacity(o.users);
    for t in tasks {
        reports.push(t.await.map_err(|e| format!("user task: {e}"))?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = cpu_of(&o.server_pid).zip(server_cpu0).map(|(b, a)| b - a);
    let client_cpu = cpu_seconds("self").zip(client_cpu0).map(|(b, a)| b - a);
    let after_load = control.counters().await?;

    let mut login = Endpoint::default();
    let mut refresh = Endpoint::default();
    let mut me = Endpoint::default();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut issued = HashSet::new();
    let mut issued_total = 0u64;
    let mut final_cookies = Vec::new();
    for r in reports {
        login.merge(r.login);
        refresh.merge(r.refresh);
        me.merge(r.me);
        for f in r.failures {
            *failures.entry(f).or_default() += 1;
        }
        issued_total += r.issued.len() as u64;
        issued.extend(r.issued);
        final_cookies.extend(r.final_cookie);
    }
    for e in [&mut login, &mut refresh, &mut me] {
        e.latencies_us.sort_unstable();
    }
    let users = o.users as u64;
    let d = |name: &str| after_load.get(name).wrapping_sub(before.get(name));

    check(
        &mut checks,
        "every user logged in",
        login.count(200) == users,
        format!("{} of {users} logins got 200", login.count(200)),
    );
    let five = login.count_5xx() + refresh.count_5xx() + me.count_5xx();
    check(
        &mut checks,
        "zero 5xx",
        five == 0,
        format!("{five} 5xx answers"),
    );
    let transport = login.transport_errors + refresh.transport_errors + me.transport_errors;
    check(
        &mut checks,
        "zero transport errors / timeouts",
        transport == 0,
        format!("{transport}"),
    );
    check(
        &mut checks,
        "zero 401 from /auth/refresh",
        refresh.count(401) == 0,
        format!(
            "{} × 401, {} × 200 of {}",
            refresh.count(401),
            refresh.count(200),
            refresh.requests()
        ),
    );
    check(
        &mut checks,
        "/api/me always 200",
        me.count(200) == me.requests(),
        format!("{} of {}", me.count(200), me.requests()),
    );
    check(
        &mut checks,
        "phase 1 (sequential per family): every refresh token handed out new, none repeated \
         (catches an echo, not a double-issued rotation: phase 2 does)",
        issued.len() as u64 == issued_total,
        format!("{} distinct of {issued_total} issued", issued.len()),
    );
    let live = after_load.get("liveFamilies");
    let one = after_load.get("familiesWithOneLiveToken");
    check(
        &mut checks,
        "liveFamilies == familiesWithOneLiveToken == users",
        live == users && one == users,
        format!("liveFamilies {live}, familiesWithOneLiveToken {one}, users {users}"),
    );
    check(
        &mut checks,
        "reuseDetected unchanged, no family revoked",
        d("reuseDetected") == 0 && d("familiesRevoked") == 0,
        format!(
            "reuseDetected +{}, familiesRevoked +{}",
            d("reuseDetected"),
            d("familiesRevoked")
        ),
    );
    check(
        &mut checks,
        "server counters agree (refreshesServed, apiOk, loginsServed)",
        d("refreshesServed") == refresh.count(200)
            && d("apiOk") == me.count(200)
            && d("loginsServed") == login.count(200),
        format!(
            "refreshesServed +{} / client {}; apiOk +{} / client {}; loginsServed +{} / client {}",
            d("refreshesServed"),
            refresh.count(200),
            d("apiOk"),
            me.count(200),
            d("loginsServed"),
            login.count(200)
        ),
    );

    // ---- Phase 2 -----------------------------------------------------------------------
    let mut dup = DupReport::default();
    if o.dup_seconds > 0.0 {
        eprintln!(
            "load: phase 2: duplicate refreshes, {} workers, {:.1} s",
            o.dup_workers, o.dup_seconds
        );
        let dup_deadline = Instant::now() + Duration::from_secs_f64(o.dup_seconds);
        let budget = Arc::new(std::sync::atomic::AtomicUsize::new(MAX_DUP_PAIRS));
        let workers: Vec<_> = (0..o.dup_workers)
            .map(|_| tokio::spawn(dup_worker(o.addrs.clone(), dup_deadline, budget.clone())))
            .collect();
        for w in workers {
            let r = w.await.map_err(|e| format!("dup task: {e}"))?;
            dup.pairs += r.pairs;
            dup.same_successor += r.same_successor;
            dup.diverged += r.diverged;
            dup.split += r.split;
            dup.other += r.other;
            dup.parent_refused_after_use += r.parent_refused_after_use;
            dup.family_revoked_after += r.family_revoked_after;
            dup.first_to_answer[0] += r.first_to_answer[0];
            dup.first_to_answer[1] += r.first_to_answer[1];
            dup.latencies_us.extend(r.latencies_us);
            for f in r.failures {
                *failures.entry(format!("phase 2: {f}")).or_default() += 1;
            }
        }
        dup.latencies_us.sort_unstable();
    }
    let after_dup = control.counters().await?;
    let d2 = |name: &str| after_dup.get(name).wrapping_sub(after_load.get(name));
    if o.dup_seconds > 0.0 {
        check(
            &mut checks,
            "duplicates: both 200 with the same successor (lost-response rule)",
            dup.pairs > 0 && dup.same_successor == dup.pairs,
            format!(
                "{} of {} pairs (different successors: {}, one refused: {}, other: {})",
                dup.same_successor, dup.pairs, dup.diverged, dup.split, dup.other
            ),
        );
        check(
            &mut checks,
            "duplicates: once the successor was used, the parent is reuse and the family revoked",
            dup.parent_refused_after_use == dup.same_successor
                && dup.family_revoked_after == dup.same_successor,
            format!(
                "parent refused {} / family revoked {} of {}",
                dup.parent_refused_after_use, dup.family_revoked_after, dup.same_successor
            ),
        );
        check(
            &mut checks,
            "duplicates: lostResponsesRepeated, reuseDetected and familiesRevoked +1 per pair",
            d2("lostResponsesRepeated") == dup.pairs
                && d2("reuseDetected") == dup.pairs
                && d2("familiesRevoked") == dup.pairs,
            format!(
                "lostResponsesRepeated +{}, reuseDetected +{}, familiesRevoked +{}, pairs {}",
                d2("lostResponsesRepeated"),
                d2("reuseDetected"),
                d2("familiesRevoked"),
                dup.pairs
            ),
        );
        let live = after_dup.get("liveFamilies");
        let one = after_dup.get("familiesWithOneLiveToken");
        check(
            &mut checks,
            "duplicates: phase-1 families untouched",
            live == users && one == users,
            format!("liveFamilies {live}, familiesWithOneLiveToken {one}"),
        );
    }

    // ---- Phase 3: logout ---------------------------------------------------------------
    let mut logout = Endpoint::default();
    for cookie in &final_cookies {
        let t = Instant::now();
        let result = control.0[0].logout(cookie).await;
        logout.record(t, &result);
    }
    logout.latencies_us.sort_unstable();
    let after_logout = control.counters().await?;
    let d3 = |name: &str| after_logout.get(name).wrapping_sub(after_dup.get(name));
    check(
        &mut checks,
        "logout: 204 each, no live family left",
        logout.count(204) == final_cookies.len() as u64
            && after_logout.get("liveFamilies") == 0
            && d3("familiesRevoked") == final_cookies.len() as u64,
        format!(
            "{} × 204 of {}; liveFamilies {}; familiesRevoked +{}",
            logout.count(204),
            final_cookies.len(),
            after_logout.get("liveFamilies"),
            d3("familiesRevoked")
        ),
    );

    // A virtual user that met anything unexpected (a 200 without the cookie's attributes or
    // a Bearer JWT, say) stopped there; the checks above need not see it.
    check_failures(&mut checks, &failures);

    // ---- Report ------------------------------------------------------------------------
    let ok = checks.iter().all(|c| c.ok);
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mut md = String::new();
    let _ = writeln!(md, "# tokenwarden-server under load\n");
    let _ = writeln!(
        md,
        "Written by `make load` (`tools/load/run.sh`). Client and server share the machine; \
         figures are for comparison between runs on the same machine, not absolute.\n"
    );
    let _ = writeln!(md, "| | |\n| --- | --- |");
    for (k, v) in &o.meta {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(md, "| nproc | {nproc} |");
    let _ = writeln!(md, "| CPU | {} |", cpu_model());
    let _ = writeln!(
        md,
        "| virtual users | {} (one token family each) |",
        o.users
    );
    let _ = writeln!(
        md,
        "| phase 1 | {elapsed:.1} s measured (after {login_secs:.2} s of logins) |"
    );
    if let Some(s) = server_cpu {
        let _ = writeln!(
            md,
            "| server CPU in phase 1 | {s:.1} s ({:.2} cores) |",
            s / elapsed
        );
    }
    if let Some(c) = client_cpu {
        let _ = writeln!(
            md,
            "| load-client CPU in phase 1 | {c:.1} s ({:.2} cores) |",
            c / elapsed
        );
    }
    let _ = writeln!(
        md,
        "\n| endpoint | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | statuses |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    let row = endpoint_row;
    row(&mut md, "`POST /auth/refresh`", &refresh, Some(elapsed));
    row(&mut md, "`GET /api/me`", &me, Some(elapsed));
    let total = Endpoint {
        latencies_us: Vec::new(),
        statuses: [(0u16, refresh.requests() + me.requests())].into(),
        transport_errors: 0,
    };
    let _ = writeln!(
        md,
        "| refresh + me | {} | {:.0} | | | | | |",
        total.requests(),
        total.requests() as f64 / elapsed
    );
    row(
        &mut md,
        "`POST /auth/login` (before the clock)",
        &login,
        None,
    );
    row(
        &mut md,
        "`POST /auth/logout` (after, sequential)",
        &logout,
        None,
    );
    if o.dup_seconds > 0.0 {
        let l = &dup.latencies_us;
        let _ = writeln!(
            md,
            "\nPhase 2, duplicate refreshes ({:.1} s, {} workers, two connections each{}): \
             {} pairs; same successor on both in {}; the first connection answered first in {}; \
             pair latency p50 {:.2} ms, p99 {:.2} ms.",
            o.dup_seconds,
            o.dup_workers,
            if o.addrs.len() > 1 {
                ", one per instance"
            } else {
                ""
            },
            dup.pairs,
            dup.same_successor,
            dup.first_to_answer[0],
            pct(l, 50.0),
            pct(l, 99.0)
        );
    }
    write_checks(&mut md, &checks, &failures, ok);
    print!("{md}");
    if let Some(path) = &o.results {
        std::fs::write(path, &md).map_err(|e| format!("cannot write {path}: {e}"))?;
        eprintln!("load: wrote {path}");
    }
    if let Some(path) = &o.summary {
        let l = &refresh.latencies_us;
        let summary = serde_json::json!({
            "instances": o.addrs.len(),
            "rotations": refresh.count(200),
            "seconds": elapsed,
            "rotations_per_s": refresh.count(200) as f64 / elapsed,
            "refresh_p50_ms": pct(l, 50.0),
            "refresh_p99_ms": pct(l, 99.0),
            "issued": issued_total,
            "distinct_issued": issued.len(),
            "refresh_401": refresh.count(401),
            "dup_pairs": dup.pairs,
            "dup_same_successor": dup.same_successor,
            "dup_diverged": dup.diverged,
            "server_cores": server_cpu.map(|c| c / elapsed),
            "client_cores": client_cpu.map(|c| c / elapsed),
            "checks_ok": ok,
        });
        std::fs::write(path, summary.to_string())
            .map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    Ok(ok)
}
