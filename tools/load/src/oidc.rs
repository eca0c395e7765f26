//! The anchor set-up: oidc-provider (`tools/load/oidc-provider.mjs`), a token server people
//! use today, driven like tokenwarden's phase 1 (`--oidc-client ID:SECRET`).
//!
//! Each virtual user signs in once before the clock with the real authorization-code flow
//! (`GET /auth` with its own `login_hint`, the interaction the provider script finishes at
//! once, the resume, `POST /token`), then loops, strictly sequentially, the `refresh_token`
//! grant with rotation (`POST /token`, HTTP Basic client authentication, keeping the new
//! refresh token) and `GET /me` (userinfo, Bearer), until the deadline: the same shape as
//! tokenwarden's `POST /auth/refresh` + `GET /api/me`. A rotation is a 200 from the grant.
//!
//! Checks, the ones that apply to a provider without tokenwarden's test counters or its
//! lost-response rule: every sign-in ended with tokens; no 5xx, no transport error; the grant
//! and userinfo always 200; every refresh token handed out new; the provider's own counts
//! (`/load/stats`) agree with the client's, with no grant refused and no server error.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header;
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::{
    check, check_failures, cpu_model, cpu_of, cpu_seconds, endpoint_row, pct, write_checks, Conn,
    Endpoint, Options, Reply, UserReport,
};

/// How to reach the provider and authenticate as its client.
struct Client {
    addr: SocketAddr,
    /// `Basic base64(id:secret)`.
    authorization: String,
    /// `http://127.0.0.1:PORT`: the issuer, the prefix of its redirects.
    origin: String,
}

/// What a 200 from the token endpoint hands out.
struct Tokens {
    refresh: String,
    access: String,
}

fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Cookies the provider sets during the sign-in (its interaction and resume cookies).
#[derive(Default)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn take(&mut self, reply: &Reply) {
        for v in reply.headers.get_all(header::SET_COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            let pair = v.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            self.0.retain(|(n, _)| n != name);
            self.0.push((name.to_string(), value.to_string()));
        }
    }

    fn header(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        pairs.join("; ")
    }
}

impl Client {
    fn redirect_uri(&self) -> String {
        format!("{}/cb", self.origin)
    }

    /// The authorization-code flow for account `account`, to its tokens.
    async fn sign_in(&self, conn: &mut Conn, account: &str) -> Result<Tokens, String> {
        let mut jar = Jar::default();
        let mut path = format!(
            "/auth?client_id=load&response_type=code&scope=openid&state=s&redirect_uri={}&login_hint={}",
            form_escape(&self.redirect_uri()),
            form_escape(account)
        );
        let code = 'flow: {
            // /auth → /interaction/… → /auth/… (resume) → the redirect URI with the code.
            for _ in 0..6 {
                let cookie = jar.header();
                let reply = conn
                    .send(Method::GET, &path, &[("cookie", &cookie)], None)
                    .await?;
                jar.take(&reply);
                if !reply.status.is_redirection() {
                    return Err(format!(
                        "sign-in: GET {} answered {}",
                        path.split('?').next().unwrap_or_default(),
                        reply.status
                    ));
                }
                let location = reply
                    .headers
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or("sign-in: a redirect without Location")?;
                let next = location.strip_prefix(&self.origin).unwrap_or(location);
                if let Some(query) = next.strip_prefix("/cb?") {
                    let code = query
                        .split('&')
                        .find_map(|p| p.strip_prefix("code="))
                        .ok_or_else(|| format!("sign-in ended without a code: {query}"))?;
                    break 'flow code.to_string();
                }
                path = next.to_string();
            }
            return Err("sign-in: more than 6 redirects".into());
        };
        let body = format!(
            "grant_type=authorization_code&code={}&redirect_uri={}",
            form_escape(&code),
            form_escape(&self.redirect_uri())
        );
        let reply = self.token(conn, body).await?;
        tokens_from(&reply).map_err(|e| format!("code exchange: {e}"))
    }

    async fn token(&self, conn: &mut Conn, body: String) -> Result<Reply, String> {
        conn.send_body(
            Method::POST,
            "/token",
            &[("authorization", &self.authorization)],
            Some("application/x-www-form-urlencoded"),
            Bytes::from(body),
        )
        .await
    }

    async fn refresh(&self, conn: &mut Conn, refresh_token: &str) -> Result<Reply, String> {
        let body = format!(
            "grant_type=refresh_token&refresh_token={}",
            form_escape(refresh_token)
        );
        self.token(conn, body).await
    }

    async fn userinfo(&self, conn: &mut Conn, access: &str) -> Result<Reply, String> {
        let bearer = format!("Bearer {access}");
        conn.send(Method::GET, "/me", &[("authorization", &bearer)], None)
            .await
    }

    async fn stats(&self, conn: &mut Conn) -> Result<Value, String> {
        let reply = conn.send(Method::GET, "/load/stats", &[], None).await?;
        if reply.status != StatusCode::OK {
            return Err(format!("GET /load/stats: {}", reply.status));
        }
        let v: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("/load/stats is not JSON: {e}"))?;
        if let Some(name) = STATS.iter().find(|n| !v[**n].is_u64()) {
            return Err(format!("/load/stats has no {name}"));
        }
        Ok(v)
    }
}

const STATS: &[&str] = &[
    "codeGrants",
    "refreshGrants",
    "grantErrors",
    "refreshReuse",
    "serverErrors",
];

/// A token response of 200 with a refresh token and an access token.
fn tokens_from(reply: &Reply) -> Result<Tokens, String> {
    if reply.status != StatusCode::OK {
        return Err(format!(
            "answered {} ({})",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    let v: Value = serde_json::from_slice(&reply.body).map_err(|e| format!("200 not JSON: {e}"))?;
    let field = |name: &str| {
        v[name]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("200 without {name}"))
    };
    Ok(Tokens {
        refresh: field("refresh_token")?,
        access: field("access_token")?,
    })
}

async fn virtual_user(
    client: Arc<Client>,
    index: usize,
    start: Arc<tokio::sync::Barrier>,
    mut clock: tokio::sync::watch::Receiver<Option<Instant>>,
) -> UserReport {
    let mut r = UserReport::default();
    let mut conn = match Conn::open(client.addr).await {
        Ok(c) => c,
        Err(e) => {
            r.failures.push(e);
            start.wait().await;
            return r;
        }
    };
    let t = Instant::now();
    let tokens = match client.sign_in(&mut conn, &format!("load-{index}")).await {
        Ok(tokens) => {
            // The whole flow (four requests) as one "login".
            r.login
                .latencies_us
                .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            *r.login.statuses.entry(200).or_default() += 1;
            Some(tokens)
        }
        Err(e) => {
            // Not a transport error (it may be a status anywhere in the four requests): the
            // "every user signed in" and "no failure seen" checks fail the run on it.
            r.failures.push(e);
            None
        }
    };
    start.wait().await;
    let deadline = match clock.wait_for(Option::is_some).await {
        Ok(d) => d.unwrap_or_else(Instant::now),
        Err(_) => Instant::now(),
    };
    let Some(mut tokens) = tokens else {
        return r;
    };
    r.issued.push(tokens.refresh.clone());
    while Instant::now() < deadline {
        let t = Instant::now();
        let result = client.refresh(&mut conn, &tokens.refresh).await;
        r.refresh.record(t, &result);
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => {
                r.failures.push(format!("refresh grant: {e}"));
                return r;
            }
        };
        match tokens_from(&reply) {
            Ok(next) => {
                if next.refresh == tokens.refresh {
                    r.failures
                        .push("the grant returned the presented refresh token again".into());
                }
                r.issued.push(next.refresh.clone());
                tokens = next;
            }
            Err(e) => {
                r.failures.push(format!("refresh grant {e}"));
                return r;
            }
        }
        let t = Instant::now();
        let result = client.userinfo(&mut conn, &tokens.access).await;
        r.me.record(t, &result);
        match result {
            Ok(reply) if reply.status == StatusCode::OK => {}
            Ok(reply) => r.failures.push(format!("/me answered {}", reply.status)),
            Err(e) => r.failures.push(format!("/me: {e}")),
        }
    }
    r
}

/// Phase 1 only, against oidc-provider, for `seconds - dup_seconds` (the window tokenwarden's
/// phase 1 is measured over).
pub async fn run(o: &Options, client_credentials: &str) -> Result<bool, String> {
    let addr = o.addrs[0];
    let client = Arc::new(Client {
        addr,
        authorization: format!("Basic {}", base64(client_credentials.as_bytes())),
        origin: format!("http://{addr}"),
    });
    let mut control = Conn::open(addr).await?;
    let before = client.stats(&mut control).await?;
    let mut checks = Vec::new();

    let load_secs = o.seconds - o.dup_seconds;
    eprintln!(
        "load: oidc-provider: {} users, {:.1} s of refresh_token grant + /me on {addr}",
        o.users, load_secs
    );
    let barrier = Arc::new(tokio::sync::Barrier::new(o.users + 1));
    let (clock_tx, clock_rx) = tokio::sync::watch::channel(None);
    let tasks: Vec<_> = (0..o.users)
        .map(|i| {
            tokio::spawn(virtual_user(
                client.clone(),
                i,
                barrier.clone(),
                clock_rx.clone(),
            ))
        })
        .collect();
    let login_started = Instant::now();
    barrier.wait().await;
    let login_secs = login_started.elapsed().as_secs_f64();
    let started = Instant::now();
    clock_tx
        .send(Some(started + Duration::from_secs_f64(load_secs)))
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
    let after = client.stats(&mut control).await?;
    let d = |name: &str| {
        after[name]
            .as_u64()
            .unwrap_or(0)
            .wrapping_sub(before[name].as_u64().unwrap_or(0))
    };

    let mut login = Endpoint::default();
    let mut refresh = Endpoint::default();
    let mut me = Endpoint::default();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut issued = HashSet::new();
    let mut issued_total = 0u64;
    for r in reports {
        login.merge(r.login);
        refresh.merge(r.refresh);
        me.merge(r.me);
        for f in r.failures {
            *failures.entry(f).or_default() += 1;
        }
        issued_total += r.issued.len() as u64;
        issued.extend(r.issued);
    }
    for e in [&mut login, &mut refresh, &mut me] {
        e.latencies_us.sort_unstable();
    }
    let users = o.users as u64;
    check(
        &mut checks,
        "every user signed in (code flow, each its own account)",
        login.count(200) == users,
        format!("{} of {users}", login.count(200)),
    );
    let five = refresh.count_5xx() + me.count_5xx();
    check(
        &mut checks,
        "zero 5xx",
        five == 0,
        format!("{five} 5xx answers"),
    );
    let transport = refresh.transport_errors + me.transport_errors;
    check(
        &mut checks,
        "zero transport errors / timeouts",
        transport == 0,
        format!("{transport}"),
    );
    check(
        &mut checks,
        "refresh_token grant always 200",
        refresh.count(200) == refresh.requests(),
        format!("{} of {}", refresh.count(200), refresh.requests()),
    );
    check(
        &mut checks,
        "/me (userinfo) always 200",
        me.count(200) == me.requests(),
        format!("{} of {}", me.count(200), me.requests()),
    );
    check(
        &mut checks,
        "every refresh token handed out new (none repeated)",
        issued.len() as u64 == issued_total,
        format!("{} distinct of {issued_total} issued", issued.len()),
    );
    check(
        &mut checks,
        "provider counts agree, nothing refused, no server error",
        d("refreshGrants") == refresh.count(200)
            && d("codeGrants") == login.count(200)
            && d("grantErrors") == 0
            && d("serverErrors") == 0,
        format!(
            "refreshGrants +{} / client {}; codeGrants +{} / client {}; grantErrors +{} (reuse +{}); serverErrors +{}",
            d("refreshGrants"),
            refresh.count(200),
            d("codeGrants"),
            login.count(200),
            d("grantErrors"),
            d("refreshReuse"),
            d("serverErrors")
        ),
    );
    check_failures(&mut checks, &failures);

    let ok = checks.iter().all(|c| c.ok);
    let mut md = String::new();
    let _ = writeln!(md, "# oidc-provider under load (the anchor)\n");
    let _ = writeln!(
        md,
        "Written by `make load` (`tools/load/run.sh`): the same load client, users and window as \
         tokenwarden's phase 1. No phase 2 or logout: the lost-response rule is tokenwarden's own.\n"
    );
    let _ = writeln!(md, "| | |\n| --- | --- |");
    for (k, v) in &o.meta {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let _ = writeln!(md, "| nproc | {nproc} |");
    let _ = writeln!(md, "| CPU | {} |", cpu_model());
    let _ = writeln!(
        md,
        "| virtual users | {} (one account and grant each) |",
        o.users
    );
    let _ = writeln!(
        md,
        "| measured | {elapsed:.1} s (after {login_secs:.2} s of sign-ins) |"
    );
    if let Some(s) = server_cpu {
        let _ = writeln!(md, "| provider CPU | {s:.1} s ({:.2} cores) |", s / elapsed);
    }
    if let Some(c) = client_cpu {
        let _ = writeln!(
            md,
            "| load-client CPU | {c:.1} s ({:.2} cores) |",
            c / elapsed
        );
    }
    let _ = writeln!(
        md,
        "\n| endpoint | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | statuses |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    endpoint_row(
        &mut md,
        "`POST /token` (refresh_token grant)",
        &refresh,
        Some(elapsed),
    );
    endpoint_row(&mut md, "`GET /me` (userinfo)", &me, Some(elapsed));
    endpoint_row(
        &mut md,
        "sign-in, code flow (before the clock)",
        &login,
        None,
    );
    write_checks(&mut md, &checks, &failures, ok);
    print!("{md}");
    if let Some(path) = &o.results {
        std::fs::write(path, &md).map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    if let Some(path) = &o.summary {
        let l = &refresh.latencies_us;
        let summary = serde_json::json!({
            "instances": 1,
            "rotations": refresh.count(200),
            "seconds": elapsed,
            "rotations_per_s": refresh.count(200) as f64 / elapsed,
            "refresh_p50_ms": pct(l, 50.0),
            "refresh_p99_ms": pct(l, 99.0),
            "issued": issued_total,
            "distinct_issued": issued.len(),
            "refresh_401": refresh.requests() - refresh.count(200),
            "dup_pairs": null,
            "dup_same_successor": null,
            "dup_diverged": null,
            "server_cores": server_cpu.map(|c| c / elapsed),
            "client_cores": client_cpu.map(|c| c / elapsed),
            "checks_ok": ok,
        });
        std::fs::write(path, summary.to_string())
            .map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn form_escape_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(
            form_escape("http://127.0.0.1:1/cb"),
            "http%3A%2F%2F127.0.0.1%3A1%2Fcb"
        );
        assert_eq!(form_escape("aZ09-._~"), "aZ09-._~");
    }
}
