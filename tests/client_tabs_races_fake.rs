//! Races between tabs and the clock on the fake World, against a strict
//! rotating server (a refresh cookie presented twice is reuse and revokes the
//! session): a tab waiting behind a queue, two tabs waiting for a hung holder,
//! a DPoP nonce retry longer than the lock wait, a logout while a tab with no
//! token waits for the lock; and sleep, long tokens and wrong clocks. Written
//! by an audit of 2026-12-05: the first four failed on the previous policy.
#![cfg(not(target_arch = "wasm32"))]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use tokenwarden::error::Error;
use tokenwarden::fake::World;
use tokenwarden::policy::machine::Event;
use tokenwarden::policy::response::Reply;
use tokenwarden::policy::session::State;
use tokenwarden::shell::Shell;

#[path = "support/http_date.rs"]
mod http_date;
use http_date::http_date;
#[path = "support/tabs.rs"]
mod tabs;
use tabs::{freeze_lock, refreshes, settle, tab, tab_drawing, Client, Tab, T0};

fn reply(status: u16, body: &str, retry_after: Option<String>) -> Result<Reply, Error> {
    Ok(Reply {
        status,
        body: body.into(),
        retry_after,
        dpop_nonce: None,
        date: None,
    })
}

fn token(world: &World, c: &Client) -> Result<Option<String>, Error> {
    let c = c.clone();
    settle(world, 60_000, async move {
        c.token().await.map(|t| t.map(|t| t.expose().to_string()))
    })
}

/// The refresh endpoint mints "back" while the switch is on and fails with a
/// network error while it is off.
fn network_switch(world: &World, on: bool) -> Rc<Cell<bool>> {
    let up = Rc::new(Cell::new(on));
    let u = up.clone();
    world.endpoint(move |_| {
        if u.get() {
            reply(200, r#"{"access_token":"back","expires_in":300}"#, None)
        } else {
            Err(Error::Network)
        }
    });
    up
}

/// A strict rotating server: each refresh must present the live cookie
/// `c{n}`; it then rotates to `c{n+1}`. A retired cookie is reuse: the family
/// is revoked (401 invalid_grant from then on). `fail_first` refreshes are
/// answered 503 (without rotating).
#[derive(Default)]
struct Server {
    live: u32,
    revoked: bool,
    reuse: u32,
    minted: u32,
    fail_first: u32,
    /// `Retry-After` of those 503s.
    retry_after: Option<&'static str>,
    seen: u32,
    log: Vec<String>,
}

fn strict_server(world: &World, fail_first: u32, expires_in: u32) -> Rc<RefCell<Server>> {
    let s = Rc::new(RefCell::new(Server {
        fail_first,
        ..Server::default()
    }));
    world.set_cookie(Some("c0".into()));
    let (st, w) = (s.clone(), world.clone());
    world.endpoint_with_headers(move |url, headers| {
        if url.ends_with("/auth/logout") {
            st.borrow_mut().revoked = true;
            w.set_cookie(None);
            return reply(204, "", None);
        }
        let now = w.now() - T0;
        let cookie = headers
            .iter()
            .find(|(k, _)| k == "Cookie")
            .map(|(_, v)| v.clone());
        let mut s = st.borrow_mut();
        s.seen += 1;
        let n = cookie
            .as_deref()
            .and_then(|c| c.strip_prefix('c')?.parse::<u32>().ok());
        s.log.push(format!("{now} ms: refresh with {cookie:?}"));
        if s.seen <= s.fail_first {
            return reply(503, "", s.retry_after.map(String::from));
        }
        match n {
            _ if s.revoked => reply(401, r#"{"error":"invalid_grant"}"#, None),
            Some(n) if n == s.live => {
                s.live += 1;
                s.minted += 1;
                w.set_cookie(Some(format!("c{}", s.live)));
                let body = format!(
                    r#"{{"access_token":"r{}","expires_in":{expires_in}}}"#,
                    s.minted
                );
                reply(200, &body, None)
            }
            Some(_) => {
                s.reuse += 1;
                s.revoked = true;
                s.log.push(format!("{now} ms: REUSE, family revoked"));
                reply(401, r#"{"error":"invalid_grant"}"#, None)
            }
            None => reply(401, r#"{"error":"invalid_grant"}"#, None),
        }
    });
    s
}

// ------------------------------------------------------ the lock and logout

/// Three live tabs, a slow and struggling server (each call ~4 s, under
/// requestTimeoutMs 5 s; the first answer a 503). A holds the lock, fails;
/// B gets it and calls; C, which began waiting when A took the lock, reaches
/// its wait limit while B's call is on its way. B said it was busy before its
/// request, so C waits again instead of stealing and sending B's cookie (the
/// wait is timed from when C asked, not from when B took the lock).
#[test]
fn a_queued_waiter_hears_the_holder_is_busy_and_waits_instead_of_stealing() {
    let world = World::new(T0);
    world.latency(4_000);
    let server = strict_server(&world, 1, 300);
    let extra = r#","requestTimeoutMs":5000"#;
    let a = tab(&world, extra);
    let b = tab(&world, extra);
    let c = tab(&world, extra);
    a.sign_in("login", 300);
    world.run();
    world.advance(270_000 + 30_000);
    let s = server.borrow();
    let log = s.log.join("\n");
    assert_eq!(s.reuse, 0, "a refresh cookie was sent twice:\n{log}");
    for t in [&a, &b, &c] {
        assert_eq!(t.client.state(), State::Active, "{log}");
    }
}

/// B waits for the lock while A's slow call (9 s) is on its way; B's own wait is short
/// (requestTimeoutMs 1 s: 3.5 s). Live, B hears A's busy notice and waits again. Disposed
/// during its wait, it heard nothing more, stole the lock when its next wait ran out and
/// let it go at once — to C, which then called with the cookie A's call had presented:
/// reuse, and every tab signed out. (Lifecycle audit of 2026-12-05.)
#[test]
fn a_disposed_tab_waiting_for_the_lock_never_steals_it_from_a_live_holder() {
    let world = World::new(T0);
    world.latency(9_000);
    let server = strict_server(&world, 0, 300);
    let a = tab(&world, "");
    let b = tab(&world, r#","requestTimeoutMs":1000"#);
    let c = tab(&world, "");
    a.sign_in("login", 300);
    world.run();
    world.advance(270_000 + 1_000);
    b.client.dispose();
    world.advance(40_000);
    let s = server.borrow();
    let log = s.log.join("\n");
    assert_eq!(s.reuse, 0, "a refresh cookie was sent twice:\n{log}");
    assert_eq!(s.minted, 1, "{log}");
    for t in [&a, &c] {
        assert_eq!(t.client.state(), State::Active, "{log}");
    }
}

/// A frozen tab holds the lock forever; B and C become due at once and wait
/// for it. Their waits are jittered (tabsync::lock_wait_ms), so one runs out
/// first and steals; it says it is busy before its request, and the other,
/// whose wait runs out later, waits again instead of stealing it back: one
/// refresh, not two with one cookie.
#[test]
fn of_two_waiters_for_a_hung_holder_only_the_first_steals() {
    let world = World::new(T0);
    let server = strict_server(&world, 0, 300);
    freeze_lock(&world);
    let extra = r#","requestTimeoutMs":1000"#;
    let b = tab_drawing(&world, extra, 0.1);
    let c = tab_drawing(&world, extra, 0.9);
    b.sign_in("login", 300);
    world.run();
    world.advance(270_000 + 10_000);
    let s = server.borrow();
    let log = s.log.join("\n");
    assert_eq!(
        s.reuse, 0,
        "two concurrent refreshes with one cookie:\n{log}"
    );
    assert_eq!(s.seen, 1, "one refresh for the rotation:\n{log}");
    for t in [&b, &c] {
        assert_eq!(t.client.state(), State::Active, "{log}");
    }
}

/// DPoP on, default requestTimeoutMs (10 s), two live tabs. The server is
/// slow (9 s). B learned the current nonce from an API answer, A did not, so
/// A's refresh is two requests (18 s, within its timeouts), longer than the
/// 12.5 s B waits; A says it is busy before each request, so B waits again
/// instead of stealing and sending the cookie A's retry still presents.
#[test]
fn a_dpop_nonce_retry_longer_than_the_lock_wait_is_not_stolen_from() {
    let world = World::new(T0);
    world.latency(9_000);
    world.set_cookie(Some("c0".into()));
    let s = Rc::new(RefCell::new(Server::default()));
    let (st, w) = (s.clone(), world.clone());
    world.endpoint_with_headers(move |_url, headers| {
        let now = w.now() - T0;
        let h = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let mut s = st.borrow_mut();
        s.seen += 1;
        let cookie = h("Cookie");
        s.log.push(format!("{now} ms: refresh with {cookie:?}"));
        let proof = h("DPoP").unwrap_or_default();
        // The nonce "n2" is in the proof's payload once the client kept it;
        // the fake proof is base64url JSON, so look for the encoded claim.
        let payload = proof.split('.').nth(1).unwrap_or("");
        let has_nonce = tokenwarden::policy::jwt::base64url_decode(payload)
            .map(|b| String::from_utf8_lossy(&b).contains("\"nonce\":\"n2\""))
            .unwrap_or(false);
        if !has_nonce {
            return Ok(Reply {
                status: 400,
                body: r#"{"error":"use_dpop_nonce"}"#.into(),
                retry_after: None,
                dpop_nonce: Some("n2".into()),
                date: None,
            });
        }
        let n = cookie
            .as_deref()
            .and_then(|c| c.strip_prefix('c')?.parse::<u32>().ok());
        match n {
            Some(n) if n == s.live && !s.revoked => {
                s.live += 1;
                s.minted += 1;
                w.set_cookie(Some(format!("c{}", s.live)));
                Ok(Reply {
                    status: 200,
                    body: format!(
                        r#"{{"access_token":"r{}","token_type":"DPoP","expires_in":300}}"#,
                        s.minted
                    ),
                    retry_after: None,
                    dpop_nonce: Some("n2".into()),
                    date: None,
                })
            }
            _ => {
                s.reuse += 1;
                s.revoked = true;
                s.log.push(format!("{now} ms: REUSE"));
                reply(401, r#"{"error":"invalid_grant"}"#, None)
            }
        }
    });
    let extra = r#","dpop":true"#;
    let a = tab(&world, extra);
    let b = tab(&world, extra);
    a.sign_in_body(r#"{"access_token":"login","token_type":"DPoP","expires_in":300}"#);
    world.run();
    // B calls the API (same origin), which hands it the current nonce n2;
    // A has none.
    world.api_with_headers(|_| (200, vec![("DPoP-Nonce".into(), "n2".into())]));
    world.latency(10);
    let bc = b.client.clone();
    let _ = settle(&world, 1_000, async move {
        bc.fetch(tokenwarden::fake::FakeRequest::get(
            "https://app.example/api",
        ))
        .await
        .map(|r| r.status)
        .map_err(|_| ())
    });
    world.latency(9_000);
    world.advance(270_000 + 60_000 - world.now() + T0);
    let s = s.borrow();
    let log = s.log.join("\n");
    assert_eq!(
        s.reuse, 0,
        "the stealer sent the cookie still in flight:\n{log}"
    );
    for t in [&a, &b] {
        assert_eq!(t.client.state(), State::Active, "{log}");
    }
}

// ----------------------------------- sleep, long tokens, wrong clocks, logout

#[test]
fn three_tabs_waking_after_sleep_past_expiry_share_one_refresh() {
    let world = World::new(T0);
    let server = strict_server(&world, 0, 300);
    let tabs: Vec<Tab> = (0..3).map(|_| tab(&world, "")).collect();
    tabs[0].sign_in("login", 300);
    world.run();
    world.advance(10_000);
    world.skew_wall(8 * 3_600_000);
    for t in &tabs {
        t.wake(false);
    }
    world.advance(5_000);
    assert_eq!(server.borrow().seen, 1, "{:?}", server.borrow().log);
    for t in &tabs {
        assert_eq!(token(&world, &t.client), Ok(Some("r1".into())));
    }
    assert!(world.sent().is_empty());
}

#[test]
fn a_thirty_day_token_is_refreshed_once_just_before_expiry() {
    let world = World::new(T0);
    let server = strict_server(&world, 0, 30 * 86_400);
    let a = tab(&world, "");
    let b = tab(&world, "");
    a.sign_in("login", 30 * 86_400);
    world.run();
    world.advance(2_147_483_647 + 1_000);
    assert_eq!(server.borrow().seen, 0, "nothing at the clamped timer");
    world.advance(30 * 86_400_000 - 30_000 - 2_147_483_647 - 1_000 - 1);
    assert_eq!(server.borrow().seen, 0);
    world.advance(100);
    assert_eq!(server.borrow().seen, 1);
    assert_eq!(token(&world, &b.client), Ok(Some("r1".into())));
}

#[test]
fn jwt_iat_exp_schedule_ignores_a_client_clock_three_hours_off() {
    // payload {"iat":1000,"exp":1300}: 300 s, server clock far from the page's.
    let jwt = "eyJhbGciOiJub25lIn0.eyJpYXQiOjEwMDAsImV4cCI6MTMwMH0.";
    for skew in [-3 * 3_600_000i64, 3 * 3_600_000] {
        let world = World::new(T0);
        world.skew_wall(skew);
        let server = strict_server(&world, 0, 300);
        let a = tab(&world, r#","crossTab":false"#);
        a.sign_in_body(&format!(r#"{{"access_token":"{jwt}"}}"#));
        world.advance(269_900);
        assert_eq!(server.borrow().seen, 0);
        world.advance(200);
        assert_eq!(server.borrow().seen, 1);
    }
}

/// Three tabs due together; the server answers the first call 503 with
/// `Retry-After: 60`. The holder tells the others, which wait the same 60 s
/// instead of each calling once more as soon as they get the lock (before:
/// three calls within a second of each other, each tab with its own wait).
#[test]
fn a_retry_after_heard_by_one_tab_holds_every_tab_back() {
    let world = World::new(T0);
    let server = strict_server(&world, 1, 300);
    server.borrow_mut().retry_after = Some("60");
    let tabs: Vec<Tab> = (0..3).map(|_| tab(&world, "")).collect();
    tabs[0].sign_in("login", 300);
    world.run();
    world.advance(270_100);
    assert_eq!(server.borrow().seen, 1, "{:?}", server.borrow().log);
    world.advance(59_000);
    assert_eq!(server.borrow().seen, 1, "{:?}", server.borrow().log);
    for t in &tabs {
        assert!(
            t.events().iter().any(|e| matches!(
                e,
                Event::RefreshFailed {
                    error: Error::ServerError { status: 503, .. },
                    retry_in_ms: Some(ms),
                } if (59_000..=60_000).contains(ms)
            )),
            "every tab reports the wait: {:?}",
            t.events()
        );
        assert_eq!(t.client.state(), State::Refreshing);
    }
    world.advance(3_000);
    let s = server.borrow();
    assert_eq!((s.seen, s.minted, s.reuse), (2, 1, 0), "{:?}", s.log);
    drop(s);
    for t in &tabs {
        assert_eq!(token(&world, &t.client), Ok(Some("r1".into())));
    }
}

/// A tab whose own refresh is not due within the wait is left alone, and a
/// `refresh()` the user asks for is not held back.
#[test]
fn a_retry_after_does_not_delay_what_is_not_due_or_a_forced_refresh() {
    let world = World::new(T0);
    let server = strict_server(&world, 1, 300);
    server.borrow_mut().retry_after = Some("60");
    let a = tab(&world, "");
    let b = tab(&world, "");
    a.sign_in("login", 300);
    world.run();
    // a's refresh (forced) fails; b's token is due in 270 s, after the wait.
    let c = a.client.clone();
    let _ = world.call(async move {
        let _ = c.refresh().await;
    });
    world.advance(100);
    assert_eq!(server.borrow().seen, 1);
    assert!(
        !b.events()
            .iter()
            .any(|e| matches!(e, Event::RefreshFailed { .. })),
        "{:?}",
        b.events()
    );
    assert_eq!(b.client.state(), State::Active);
    // b's user asks: it calls at once (and gets the token).
    world.advance(2_000);
    let c = b.client.clone();
    let _ = world.call(async move {
        let _ = c.refresh().await;
    });
    world.advance(100);
    assert_eq!(server.borrow().seen, 2, "{:?}", server.borrow().log);
    assert_eq!(token(&world, &b.client), Ok(Some("r1".into())));
}

#[test]
fn an_http_date_retry_after_is_read_against_the_servers_date_not_the_page_clock() {
    assert_eq!(http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
    // The server's clock is right; the page's is 2 h slow or 2 h fast. It answers
    // 503 with `Retry-After` 10 s after its own `Date`. Before, a slow page read
    // 2 h 10 s (capped to one hour) and a fast one retried after 1 s.
    for skew in [-7_200_000i64, 7_200_000] {
        let world = World::new(T0);
        world.skew_wall(skew);
        let n = Rc::new(Cell::new(0));
        let (c, w) = (n.clone(), world.clone());
        world.endpoint(move |_| {
            c.set(c.get() + 1);
            if c.get() == 1 {
                let now = w.now();
                Ok(Reply {
                    status: 503,
                    body: String::new(),
                    retry_after: Some(http_date(now + 10_000)),
                    dpop_nonce: None,
                    date: Some(http_date(now)),
                })
            } else {
                reply(200, r#"{"access_token":"r2","expires_in":300}"#, None)
            }
        });
        let a = tab(&world, r#","crossTab":false"#);
        a.sign_in("login", 300);
        world.advance(270_100);
        assert_eq!(n.get(), 1, "skew {skew}");
        world.advance(9_000);
        assert_eq!(n.get(), 1, "skew {skew}: not before the server's 10 s");
        world.advance(3_000);
        assert_eq!(n.get(), 2, "skew {skew}: retried when the server asked");
        assert_eq!(token(&world, &a.client), Ok(Some("r2".into())));
    }
}

#[test]
fn logout_is_not_undone_by_a_refresh_outcome_in_another_tab() {
    let world = World::new(T0);
    world.latency(500);
    let _server = strict_server(&world, 0, 300);
    let a = tab(&world, "");
    let b = tab(&world, "");
    let c = tab(&world, "");
    a.sign_in("login", 300);
    world.run();
    world.advance(270_000);
    world.advance(100); // A's call is on its way
    let bc = b.client.clone();
    let _ = world.call(async move { bc.logout().await });
    world.advance(5_000);
    for t in [&a, &b, &c] {
        assert_eq!(t.client.state(), State::SignedOut);
    }
}

#[test]
fn an_old_token_message_from_a_slow_tab_after_logout_is_ignored() {
    use tokenwarden::policy::tabsync::encode_token;
    let world = World::new(T0);
    let _server = strict_server(&world, 0, 300);
    let a = tab(&world, "");
    let b = tab(&world, "");
    a.sign_in("login", 300);
    world.run();
    let v = a.client.with_machine(|m| m.session().version());
    let ac = a.client.clone();
    let _ = world.call(async move { ac.logout().await });
    world.advance(100);
    // A slow tab's message from before the logout, delivered now.
    let slow = world.tab();
    let ch = slow.join("tokenwarden", Box::new(|_, _| {})).unwrap();
    slow.broadcast(
        &ch,
        &encode_token(v + 5, "stale", false, Some(300_000), 0),
        None,
    );
    world.advance(100);
    assert_eq!(b.client.state(), State::SignedOut);
    assert_eq!(a.client.state(), State::SignedOut);
}

#[test]
fn online_after_give_up_retries_in_one_of_two_tabs() {
    let world = World::new(T0);
    let up = network_switch(&world, false);
    let extra = r#","retry":{"maxAttempts":2}"#;
    let a = tab(&world, extra);
    let b = tab(&world, extra);
    a.sign_in("login", 300);
    world.run();
    world.advance(280_000);
    let n = refreshes(&world);
    world.advance(5_000);
    assert_eq!(refreshes(&world), n, "gave up");
    up.set(true);
    a.wake(true);
    world.advance(1_000);
    assert_eq!(token(&world, &b.client), Ok(Some("back".into())));
}

/// A new tab D runs `start()` while A's token is due (A's refresh in flight,
/// so A does not answer D's query); D's refresh waits for the lock. The user
/// logs out in A. D holds no token, but the logout (versioned ahead of the
/// clock) still ends D's attempt: otherwise D gets the lock, calls, and its
/// token (versioned above the logout) signs every tab in again — the logout
/// request being slower than D's refresh.
#[test]
fn a_logout_drops_the_start_refresh_of_a_tab_that_holds_no_token() {
    let world = World::new(T0);
    world.latency(300);
    let server = strict_server(&world, 0, 300);
    let a = tab(&world, "");
    a.sign_in("login", 300);
    world.run();
    world.advance(270_000); // A is due: its refresh is on its way
    world.advance(10);
    let d = tab(&world, "");
    let dc = d.client.clone();
    let started = world.call(async move { dc.start().await });
    world.advance(140); // D asked, nobody answered, D waits for the lock
    world.latency(1_000); // the logout call is slow
    let ac = a.client.clone();
    let _ = world.call(async move { ac.logout().await });
    world.run();
    world.latency(50);
    world.advance(400);
    let log = server.borrow().log.join("\n");
    let d_start = settle(&world, 10, async move { started.wait().await });
    assert_eq!(
        a.client.state(),
        State::SignedOut,
        "A after its own logout; D's start() -> {d_start:?}; A's events {:?}\n{log}",
        a.events()
    );
    world.advance(2_000);
    assert_eq!(d.client.state(), State::SignedOut);
}

/// Text on the channel that is not a message of ours (another library using
/// the same channel name, garbage) leaves the tab's silent refresh armed: an
/// ignored message gave the driver an empty effect list, which cancelled the
/// timer, and the token was refreshed only when something asked for it.
#[test]
fn a_foreign_message_on_the_channel_leaves_the_refresh_timer_armed() {
    let world = World::new(T0);
    let server = strict_server(&world, 0, 300);
    let a = tab(&world, "");
    a.sign_in("login", 300);
    world.run();
    let other = world.tab();
    let channel = other
        .join("tokenwarden", Box::new(|_, _| {}))
        .expect("a channel");
    other.broadcast(&channel, "not ours", None);
    other.broadcast(&channel, r#"{"p":"tokenwarden/1","k":"nope"}"#, None);
    world.run();
    world.advance(271_000);
    let s = server.borrow();
    assert_eq!(s.minted, 1, "refreshed on time:\n{}", s.log.join("\n"));
    assert_eq!(a.client.state(), State::Active);
}

/// A laptop sleeps 8 h (past expiry) and wakes before its Wi-Fi: for 20 s
/// every refresh fails with a network error while `navigator.onLine` is
/// false, then the network comes back with an `online` event. The refresh
/// cookie is still good, and the session comes back: attempts made offline
/// are not counted (five of them used to give up in about 8 s and end the
/// expired session, which `online` could not bring back), and `online` ends
/// the wait before the next attempt.
#[test]
fn waking_from_sleep_before_the_network_keeps_the_session() {
    let world = World::new(T0);
    let up = network_switch(&world, true);
    let a = tab(&world, r#","crossTab":false"#);
    a.sign_in("login", 300);
    world.advance(60_000);
    up.set(false);
    world.set_online(false);
    world.skew_wall(8 * 3_600_000);
    a.wake(false);
    world.advance(20_000);
    assert_eq!(a.client.state(), State::Refreshing, "{:?}", a.events());
    up.set(true);
    world.set_online(true);
    a.wake(true);
    world.advance(1_000);
    assert_eq!(
        token(&world, &a.client),
        Ok(Some("back".into())),
        "events: {:?}",
        a.events()
    );
    let online_refreshes = refreshes(&world);
    // A network that fails while the browser says it is online still counts:
    // the documented give-up after `retry.maxAttempts` holds.
    up.set(false);
    world.advance(300_000);
    assert!(
        refreshes(&world) - online_refreshes <= 5,
        "at most five attempts"
    );
}
