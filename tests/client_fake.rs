//! The whole client — `start`, `getToken`, `fetch`, refresh, cross-tab
//! hand-over, logout — natively on the fake shell with a virtual clock.
//! Nothing sleeps: time moves when a test says so (`World::advance`).
#![cfg(not(target_arch = "wasm32"))]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use tokenwarden::driver::FetchError;
use tokenwarden::error::Error;
use tokenwarden::fake::{FakeRequest, World};
use tokenwarden::policy::machine::{Event, Reason, Source};
use tokenwarden::policy::response::Reply;
use tokenwarden::policy::session::State;

#[path = "support/tabs.rs"]
mod tabs;
use tabs::{freeze_lock, refreshes, settle, tab, Client, Tab, T0};

fn ok(body: String) -> Result<Reply, Error> {
    Ok(Reply {
        status: 200,
        body,
        retry_after: None,
        dpop_nonce: None,
        date: None,
    })
}

fn status(status: u16, retry_after: Option<&str>) -> Result<Reply, Error> {
    Ok(Reply {
        status,
        body: String::new(),
        retry_after: retry_after.map(Into::into),
        dpop_nonce: None,
        date: None,
    })
}

/// The refresh endpoint mints `r1`, `r2`, … with `expires_in` seconds;
/// logout answers 204.
fn minting(world: &World, expires_in: u32) -> Rc<Cell<u32>> {
    let n = Rc::new(Cell::new(0));
    let c = n.clone();
    world.endpoint(move |url| {
        if url.ends_with("/auth/logout") {
            return status(204, None);
        }
        c.set(c.get() + 1);
        ok(format!(
            r#"{{"access_token":"r{}","token_type":"Bearer","expires_in":{expires_in}}}"#,
            c.get()
        ))
    });
    n
}

fn token(world: &World, c: &Client) -> Result<Option<String>, Error> {
    let slot = world.call({
        let c = c.clone();
        async move { c.token().await.map(|t| t.map(|t| t.expose().to_string())) }
    });
    world.run();
    let r = Rc::new(RefCell::new(None));
    let r2 = r.clone();
    let done = world.call(async move { *r2.borrow_mut() = Some(slot.wait().await) });
    world.run();
    drop(done);
    let out = r.borrow_mut().take();
    out.expect("settled")
}

#[test]
fn start_restores_a_session_from_the_refresh_endpoint() {
    let world = World::new(T0);
    minting(&world, 300);
    let a = tab(&world, "");
    let c = a.client.clone();
    assert_eq!(
        settle(&world, 1_000, async move { c.start().await }),
        Ok(true)
    );
    assert_eq!(refreshes(&world), 1);
    assert_eq!(a.kinds(), ["signedIn"]);
    assert_eq!(a.client.state(), State::Active);
    assert_eq!(token(&world, &a.client), Ok(Some("r1".into())));
}

#[test]
fn start_answers_false_on_a_rejection_and_rejects_on_a_transient_failure() {
    let world = World::new(T0);
    world.endpoint(|_| status(401, None));
    let a = tab(&world, "");
    let c = a.client.clone();
    assert_eq!(
        settle(&world, 1_000, async move { c.start().await }),
        Ok(false)
    );
    world.endpoint(|_| status(503, None));
    let b = tab(&world, r#","crossTab":false"#);
    let c = b.client.clone();
    let r = settle(&world, 5_000, async move { c.start().await });
    assert_eq!(
        r,
        Err(Error::ServerError {
            status: 503,
            retry_after_ms: None
        })
    );
}

#[test]
fn a_second_tab_starts_from_the_first_tabs_token_without_calling_the_endpoint() {
    let world = World::new(T0);
    minting(&world, 300);
    let a = tab(&world, "");
    a.sign_in("login", 300);
    let b = tab(&world, "");
    let c = b.client.clone();
    assert_eq!(
        settle(&world, 1_000, async move { c.start().await }),
        Ok(true)
    );
    assert_eq!(refreshes(&world), 0);
    assert_eq!(token(&world, &b.client), Ok(Some("login".into())));
    assert_eq!(b.kinds(), ["signedIn"]);
}

#[test]
fn a_due_token_is_refreshed_silently_and_other_tabs_adopt_it() {
    let world = World::new(T0);
    minting(&world, 120);
    let a = tab(&world, "");
    let b = tab(&world, "");
    a.sign_in("login", 120);
    world.run();
    assert_eq!(b.kinds(), ["signedIn"]);
    // Due 30 s before expiry: nothing before, exactly one refresh after.
    world.advance(89_000);
    assert_eq!(refreshes(&world), 0);
    world.advance(2_000);
    assert_eq!(refreshes(&world), 1, "one tab rotates, the other adopts");
    assert_eq!(token(&world, &a.client), Ok(Some("r1".into())));
    assert_eq!(token(&world, &b.client), Ok(Some("r1".into())));
    let sources: Vec<_> = [&a, &b]
        .iter()
        .flat_map(|t| t.events())
        .filter_map(|e| match e {
            Event::Refreshed { source, .. } => Some(source),
            _ => None,
        })
        .collect();
    assert_eq!(sources.len(), 2);
    assert!(sources.contains(&Source::SelfTab) && sources.contains(&Source::Tab));
}

#[test]
fn state_changed_follows_active_refreshing_active_and_refresh_at_is_the_due_time() {
    let world = World::new(T0);
    minting(&world, 120);
    world.latency(500);
    let a = tab(&world, r#","crossTab":false"#);
    a.sign_in("login", 120);
    assert_eq!(a.client.refresh_at(), Some(T0 + 90_000));
    world.advance(90_000);
    assert_eq!(a.client.state(), State::Refreshing);
    assert_eq!(
        a.client.refresh_at(),
        None,
        "none planned while one is in flight"
    );
    world.advance(600);
    assert_eq!(a.client.state(), State::Active);
    let states: Vec<_> = a
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::StateChanged { state } => Some(state),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [State::Active, State::Refreshing, State::Active],
        "stateChanged on every change of state"
    );
    // The new lifetime counts from when the request left (T0 + 90 s).
    assert_eq!(a.client.refresh_at(), Some(T0 + 90_000 + 90_000));
}

#[test]
fn concurrent_callers_of_a_due_token_share_one_refresh() {
    let world = World::new(T0);
    minting(&world, 300);
    let a = tab(&world, r#","crossTab":false"#);
    a.sign_in("login", 300);
    world.skew_wall(0);
    world.advance(271_000);
    let n = refreshes(&world);
    assert_eq!(n, 1, "the timer refreshed once");
    let slots: Vec<_> = (0..20)
        .map(|_| {
            let c = a.client.clone();
            world.call(async move { c.token().await.map(|t| t.map(|t| t.expose().to_string())) })
        })
        .collect();
    world.advance(100);
    assert_eq!(refreshes(&world), 1);
    for s in slots {
        let v = settle(&world, 10, async move { s.wait().await });
        assert_eq!(v, Ok(Some("r1".into())));
    }
}

#[test]
fn fetch_waits_for_a_forced_refresh_in_flight_and_sends_the_new_token() {
    let world = World::new(T0);
    minting(&world, 300);
    world.latency(200);
    let a = tab(&world, r#","crossTab":false"#);
    a.sign_in("login", 300);
    let c = a.client.clone();
    let forced = world.call(async move { c.refresh().await.map(|t| t.expose().to_string()) });
    world.advance(1);
    let c = a.client.clone();
    let res = settle(&world, 2_000, async move {
        c.fetch(FakeRequest::get("https://app.example/api/me"))
            .await
            .map(|r| r.status)
            .map_err(|_| ())
    });
    assert_eq!(res, Ok(200));
    assert_eq!(
        world.sent(),
        [(
            "https://app.example/api/me".into(),
            Some("Bearer r1".into())
        )],
        "the fresh old token was not sent while the forced refresh was in flight"
    );
    assert_eq!(
        settle(&world, 10, async move { forced.wait().await }),
        Ok("r1".into())
    );
}

#[test]
fn fetch_adds_the_bearer_only_for_allowed_origins_and_never_over_the_callers_header() {
    let world = World::new(T0);
    let a = tab(&world, r#","crossTab":false"#);
    a.sign_in("login", 300);
    let send = |req: FakeRequest| {
        let c = a.client.clone();
        settle(&world, 1_000, async move {
            c.fetch(req).await.map(|r| r.status).map_err(|_| ())
        })
    };
    assert_eq!(send(FakeRequest::get("https://app.example/a")), Ok(200));
    assert_eq!(send(FakeRequest::get("https://other.example/b")), Ok(200));
    let own = FakeRequest::get("https://app.example/c");
    own.headers
        .borrow_mut()
        .push(("authorization".into(), "Basic x".into()));
    assert_eq!(send(own), Ok(200));
    assert_eq!(
        world.sent(),
        [
            ("https://app.example/a".into(), Some("Bearer login".into())),
            ("https://other.example/b".into(), None),
            ("https://app.example/c".into(), Some("Basic x".into())),
        ]
    );
}

/// A world whose API answers 401 to the token `login` (200 to any other), a
/// refresh endpoint minting `r1`, `r2`, …, and one tab signed in with `login`.
fn refusing_login() -> (World, Tab) {
    let world = World::new(T0);
    minting(&world, 300);
    world.api(|req| {
        if req.authorization().as_deref() == Some("Bearer login") {
            401
        } else {
            200
        }
    });
    let a = tab(&world, r#","crossTab":false"#);
    a.sign_in("login", 300);
    (world, a)
}

#[test]
fn a_401_leads_to_one_refresh_and_one_replay_with_the_new_token() {
    let (world, a) = refusing_login();
    let c = a.client.clone();
    let res = settle(&world, 5_000, async move {
        c.fetch(FakeRequest::get("https://app.example/api"))
            .await
            .map(|r| r.status)
            .map_err(|_| ())
    });
    assert_eq!(res, Ok(200));
    assert_eq!(refreshes(&world), 1);
    let auths: Vec<_> = world.sent().into_iter().map(|(_, a)| a).collect();
    assert_eq!(
        auths,
        [Some("Bearer login".into()), Some("Bearer r1".into())]
    );

    // A request whose body cannot be sent twice is not replayed.
    world.api(|_| 401);
    let mut once = FakeRequest::get("https://app.example/upload");
    once.one_shot_body = true;
    let c = a.client.clone();
    let res = settle(&world, 5_000, async move {
        c.fetch(once).await.map(|r| r.status).map_err(|_| ())
    });
    assert_eq!(res, Ok(401));
    assert_eq!(refreshes(&world), 1);

    // A `no-cors` request never carries our token (the browser would drop the header), and
    // its 401 is not about our token: sent as the app made it, no refresh, no replay.
    let sent_before = world.sent().len();
    let mut opaque = FakeRequest::get("https://app.example/api");
    opaque.no_cors = true;
    let c = a.client.clone();
    let res = settle(&world, 5_000, async move {
        c.fetch(opaque).await.map(|r| r.status).map_err(|_| ())
    });
    assert_eq!(res, Ok(401));
    assert_eq!(refreshes(&world), 1, "no refresh");
    let sent = world.sent();
    assert_eq!(sent.len(), sent_before + 1, "sent once, not replayed");
    assert_eq!(sent.last().unwrap().1, None, "without our token");
}

/// What js/index.js's `client.fetch` fast path does, step by step, on the
/// fake: ask `fast_fetch`, send with that header itself, ask
/// `replay_needed`, end with `replay_401`.
fn fast_fetch(world: &World, c: &Client, url: &str) -> Result<u16, ()> {
    use tokenwarden::policy::machine::Fast;
    use tokenwarden::shell::Shell;
    let sent = c.fast_fetch("https://app.example", false, |f, _| match f {
        Fast::Attach(t) => Some(t.clone()),
        other => panic!("expected the fast path to attach, got {other:?}"),
    });
    let sent = sent.unwrap();
    let (c, url) = (c.clone(), url.to_string());
    settle(world, 5_000, async move {
        let req = FakeRequest::get(&url);
        c.shell()
            .set_authorization(&req, &format!("Bearer {}", sent.expose()));
        let res = c.shell().send(&req).await.map_err(|_| ())?;
        if !c.replay_needed(res.status, "") {
            return Ok(res.status);
        }
        let again = FakeRequest::get(&url);
        c.replay_401(res, again, sent)
            .await
            .map(|r| r.status)
            .map_err(|_| ())
    })
}

#[test]
fn the_fast_path_attaches_the_fresh_token_and_its_401_refreshes_once_and_replays() {
    use tokenwarden::policy::machine::Fast;
    let (world, a) = refusing_login();
    let kind = |c: &Client, origin: &str, app_auth: bool| {
        c.fast_fetch(origin, app_auth, |f, _| match f {
            Fast::Attach(_) => "attach",
            Fast::Plain => "plain",
            Fast::Slow => "slow",
        })
    };
    let signed_out = tab(&world, r#","crossTab":false"#);
    assert_eq!(
        kind(&signed_out.client, "https://app.example", false),
        "slow",
        "signed out: the full path decides (it may wait for start())"
    );
    assert_eq!(kind(&a.client, "https://evil.example", false), "plain");
    assert_eq!(kind(&a.client, "https://app.example", true), "plain");
    assert_eq!(
        fast_fetch(&world, &a.client, "https://app.example/api"),
        Ok(200)
    );
    assert_eq!(refreshes(&world), 1);
    let auths: Vec<_> = world.sent().into_iter().map(|(_, a)| a).collect();
    assert_eq!(
        auths,
        [Some("Bearer login".into()), Some("Bearer r1".into())]
    );
    // A 200 is handed back as it is: no refresh, one request.
    assert_eq!(
        fast_fetch(&world, &a.client, "https://app.example/api"),
        Ok(200)
    );
    assert_eq!(refreshes(&world), 1);
    assert_eq!(world.sent().len(), 3);
    assert!(
        !a.client.replay_needed(401, "https://evil.example/x"),
        "redirected elsewhere"
    );
    assert!(a.client.replay_needed(401, "https://app.example/x"));
    assert!(!a.client.replay_needed(403, ""));

    // Past the due time the silent refresh has run; the fast path sends its token.
    world.advance(271_000);
    world.run();
    assert_eq!(refreshes(&world), 2);
    let now = a
        .client
        .fast_fetch("https://app.example", false, |f, _| match f {
            Fast::Attach(t) => t.expose().to_string(),
            _ => String::new(),
        });
    assert_eq!(now, "r2");
}

#[test]
fn a_fast_path_401_for_a_token_already_replaced_replays_without_another_refresh() {
    let (world, a) = refusing_login();
    let c = a.client.clone();
    let res = settle(&world, 5_000, async move {
        let res = c
            .clone()
            .fetch(FakeRequest::get("https://app.example/api"))
            .await
            .map_err(|_| ())?;
        // The token was replaced by that fetch's refresh; a fast-path 401 for
        // the old one now only replays.
        c.replay_401(
            res,
            FakeRequest::get("https://app.example/b"),
            tokenwarden::policy::token::Secret::new("login".into()),
        )
        .await
        .map(|r| r.status)
        .map_err(|_| ())
    });
    assert_eq!(res, Ok(200));
    assert_eq!(refreshes(&world), 1, "one refresh for both 401s");
}

#[test]
fn a_rejected_refresh_signs_every_tab_out_with_reason_rejected() {
    let world = World::new(T0);
    world.endpoint(|_| {
        Ok(Reply {
            status: 400,
            body: r#"{"error":"invalid_grant"}"#.into(),
            retry_after: None,
            dpop_nonce: None,
            date: None,
        })
    });
    let a = tab(&world, "");
    let b = tab(&world, "");
    a.sign_in("login", 300);
    world.run();
    let c = a.client.clone();
    let r = settle(&world, 2_000, async move { c.refresh().await.map(|_| ()) });
    assert_eq!(
        r,
        Err(Error::RefreshRejected {
            status: 400,
            error: Some("invalid_grant".into())
        })
    );
    world.run();
    assert!(a.events().contains(&Event::SignedOut {
        reason: Reason::Rejected
    }));
    assert!(b.events().contains(&Event::SignedOut {
        reason: Reason::Tab
    }));
    assert_eq!(token(&world, &b.client), Ok(None));
}

#[test]
fn transient_failures_retry_with_backoff_honouring_retry_after() {
    let world = World::new(T0);
    let calls = Rc::new(Cell::new(0));
    let c2 = calls.clone();
    world.endpoint(move |_| {
        c2.set(c2.get() + 1);
        if c2.get() == 1 {
            status(503, Some("7"))
        } else {
            ok(r#"{"access_token":"r2","expires_in":300}"#.into())
        }
    });
    let a = tab(&world, r#","crossTab":false"#);
    a.sign_in("login", 60);
    world.advance(30_100);
    assert_eq!(calls.get(), 1);
    let retry = a.events().into_iter().find_map(|e| match e {
        Event::RefreshFailed { retry_in_ms, .. } => Some(retry_in_ms),
        _ => None,
    });
    assert_eq!(retry, Some(Some(7_000)));
    world.advance(6_800);
    assert_eq!(calls.get(), 1, "not before Retry-After");
    world.advance(200);
    assert_eq!(calls.get(), 2);
    assert_eq!(token(&world, &a.client), Ok(Some("r2".into())));
}

#[test]
fn an_expired_token_is_never_sent_fetch_rejects_while_retries_go_on() {
    let world = World::new(T0);
    world.endpoint(|_| Err(Error::Network));
    let a = tab(&world, r#","crossTab":false"#);
    a.sign_in("login", 10);
    world.advance(10_000);
    let c = a.client.clone();
    let r = settle(&world, 60_000, async move {
        match c.fetch(FakeRequest::get("https://app.example/api")).await {
            Ok(r) => Ok(r.status),
            Err(FetchError::Client(e)) => Err(e),
            Err(FetchError::Send(e)) => Err(e),
        }
    });
    assert_eq!(r, Err(Error::Network));
    assert!(world.sent().is_empty());
}

#[test]
fn an_abandoned_lock_is_stolen_after_the_wait() {
    let world = World::new(T0);
    minting(&world, 300);
    // A frozen tab holds the lock and never lets go.
    freeze_lock(&world);
    let a = tab(&world, r#","requestTimeoutMs":1000"#);
    a.sign_in("login", 300);
    let c = a.client.clone();
    let r = settle(&world, 10_000, async move {
        c.refresh().await.map(|t| t.expose().to_string())
    });
    assert_eq!(r, Ok("r1".into()));
    assert!(
        world.now() >= T0 + 3_000,
        "waited lock_wait_ms before stealing"
    );
}

#[test]
fn logout_clears_at_once_tells_other_tabs_and_the_server() {
    let world = World::new(T0);
    minting(&world, 300);
    let a = tab(&world, "");
    let b = tab(&world, "");
    a.sign_in("login", 300);
    world.run();
    let c = a.client.clone();
    let r = world.call(async move { c.logout().await });
    world.run();
    assert_eq!(a.client.state(), State::SignedOut);
    world.advance(100);
    assert_eq!(settle(&world, 10, async move { r.wait().await }), Ok(None));
    assert!(world.posts().iter().any(|u| u.ends_with("/auth/logout")));
    assert_eq!(b.client.state(), State::SignedOut);
    assert!(b.events().contains(&Event::SignedOut {
        reason: Reason::Tab
    }));
}

#[test]
fn a_page_coming_back_online_retries_a_given_up_refresh() {
    let world = World::new(T0);
    let fail = Rc::new(Cell::new(true));
    let f = fail.clone();
    world.endpoint(move |_| {
        if f.get() {
            Err(Error::Network)
        } else {
            ok(r#"{"access_token":"back","expires_in":300}"#.into())
        }
    });
    let a = tab(&world, r#","crossTab":false,"retry":{"maxAttempts":1}"#);
    a.sign_in("login", 300);
    world.advance(271_000);
    assert_eq!(refreshes(&world), 1);
    world.advance(5_000);
    assert_eq!(refreshes(&world), 1, "given up: no more attempts by itself");
    fail.set(false);
    let wake = a.wake.borrow().clone().unwrap();
    wake(true);
    world.advance(100);
    assert_eq!(refreshes(&world), 2);
    assert_eq!(token(&world, &a.client), Ok(Some("back".into())));
}

#[test]
fn callers_waiting_on_a_refresh_settle_disposed_at_dispose_not_at_its_answer() {
    let world = World::new(T0);
    minting(&world, 300);
    world.latency(5_000);
    let a = tab(&world, r#","crossTab":false"#);
    a.sign_in("login", 300);
    let c = a.client.clone();
    let forced = world.call(async move { c.refresh().await.map(|t| t.expose().to_string()) });
    let c = a.client.clone();
    let waiting = world.call(async move { c.token().await.map(|t| t.is_some()) });
    // A tab with no session yet, whose start() is waiting on its own refresh.
    let b = tab(&world, r#","crossTab":false"#);
    let c = b.client.clone();
    let started = world.call(async move { c.start().await });
    world.advance(1_000);
    assert_eq!(
        world.post_headers().len(),
        2,
        "both refreshes are on their way"
    );
    assert_eq!(refreshes(&world), 0, "not answered yet");
    assert_eq!(
        (forced.peek(), waiting.peek(), started.peek()),
        (None, None, None)
    );
    a.client.dispose();
    b.client.dispose();
    world.run();
    // Settled now, 4 s before the answer comes (no virtual time passed).
    assert_eq!(forced.peek(), Some(Err(Error::Disposed)));
    assert_eq!(waiting.peek(), Some(Err(Error::Disposed)));
    assert_eq!(started.peek(), Some(Err(Error::Disposed)));
    // The answer still comes (the browser stores the rotated cookie); nothing follows it.
    world.advance(20_000);
    assert_eq!(refreshes(&world), 2);
    assert_eq!(a.client.state(), State::SignedOut);
    assert_eq!(b.client.state(), State::SignedOut);
}

#[test]
fn a_disposed_client_rejects_with_disposed_and_stops_its_timer() {
    let world = World::new(T0);
    minting(&world, 60);
    let a = tab(&world, "");
    // A JWT (header {"alg":"none"}, payload {"sub":"u1"}): claims to forget.
    a.sign_in("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.", 60);
    assert!(a.client.with_machine(|m| m.session().claims().is_some()));
    assert!(a.client.expires_at().is_some());
    a.client.dispose();
    world.advance(120_000);
    assert_eq!(refreshes(&world), 0);
    assert_eq!(token(&world, &a.client), Err(Error::Disposed));
    assert_eq!(a.client.state(), State::SignedOut);
    // The token left memory with the client: the getters agree with `state`.
    assert_eq!(a.client.expires_at(), None);
    assert_eq!(a.client.refresh_at(), None);
    assert!(a.client.with_machine(|m| m.session().claims().is_none()));
}
