//! Tabs on the fake World for the native client tests (tests/client_fake.rs,
//! tests/client_tabs_races_fake.rs): options for a page of
//! https://app.example, a tab with its events and page wake-up hook, and the
//! refresh calls the World saw. Each test file uses what it needs.
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use tokenwarden::driver::Driver;
use tokenwarden::fake::{FakeShell, WakeHook, World};
use tokenwarden::policy::machine::Event;
use tokenwarden::policy::options;
use tokenwarden::policy::token::parse_token_response;

pub const T0: i64 = 1_700_000_000_000;
pub const ORIGIN: &str = "https://app.example";

pub type Client = Rc<Driver<FakeShell>>;

/// Options with `/auth/refresh` and `/auth/logout`, plus `extra` (`,"key":value…`).
pub fn opts(extra: &str) -> options::Options {
    let text = format!(r#"{{"refreshUrl":"/auth/refresh","logoutUrl":"/auth/logout"{extra}}}"#);
    options::parse(&text, Some(ORIGIN), &|u| {
        Some(if u.starts_with('/') {
            format!("{ORIGIN}{u}")
        } else {
            u.to_string()
        })
    })
    .expect("valid options")
}

/// A page's client, the events it emitted and its wake-up hook.
pub struct Tab {
    pub client: Client,
    pub events: Rc<RefCell<Vec<Event>>>,
    pub wake: WakeHook,
}

/// A tab whose `random()` is 0.5.
pub fn tab(world: &World, extra: &str) -> Tab {
    tab_drawing(world, extra, 0.5)
}

/// A tab whose `random()` is `r`.
pub fn tab_drawing(world: &World, extra: &str, r: f64) -> Tab {
    let shell = world.tab().with_random(r);
    let events = shell.events();
    let wake = shell.waker();
    Tab {
        client: Driver::new(shell, opts(extra)),
        events,
        wake,
    }
}

impl Tab {
    /// `setSession` with the token response `body`.
    pub fn sign_in_body(&self, body: &str) {
        self.client
            .set_session(parse_token_response(body).unwrap())
            .unwrap();
    }

    /// `setSession` with `token` living `expires_in` seconds.
    pub fn sign_in(&self, token: &str, expires_in: u32) {
        self.sign_in_body(&format!(
            r#"{{"access_token":"{token}","expires_in":{expires_in}}}"#
        ));
    }

    /// The page wakes up (`online`: the network came back).
    pub fn wake(&self, online: bool) {
        let w = self.wake.borrow().clone().unwrap();
        w(online);
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.borrow().clone()
    }

    /// The kinds of the events so far, `stateChanged` left out.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.events
            .borrow()
            .iter()
            .map(|e| match e {
                Event::SignedIn { .. } => "signedIn",
                Event::Refreshed { .. } => "refreshed",
                Event::RefreshFailed { .. } => "refreshFailed",
                Event::SignedOut { .. } => "signedOut",
                Event::StateChanged { .. } => "stateChanged",
            })
            .filter(|k| *k != "stateChanged")
            .collect()
    }
}

/// How many refresh calls the World has seen.
pub fn refreshes(world: &World) -> usize {
    world
        .posts()
        .iter()
        .filter(|u| u.ends_with("/auth/refresh"))
        .count()
}

/// Runs `f` to completion, letting virtual time pass as needed (at most `max_ms`).
pub fn settle<T: Clone + 'static>(
    world: &World,
    max_ms: i64,
    f: impl std::future::Future<Output = T> + 'static,
) -> T {
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    let _ = world.call(async move { *o.borrow_mut() = Some(f.await) });
    let mut waited = 0;
    loop {
        world.run();
        if let Some(v) = out.borrow_mut().take() {
            return v;
        }
        assert!(waited < max_ms, "did not settle within {max_ms} ms");
        world.advance(1);
        waited += 1;
    }
}

/// A frozen tab: takes the refresh lock "tokenwarden" and never lets go.
pub fn freeze_lock(world: &World) {
    use tokenwarden::policy::tabsync::LockRequest;
    use tokenwarden::shell::Shell;
    let frozen = world.tab();
    let held = settle(world, 10, async move {
        let lock = frozen.lock("tokenwarden", LockRequest::Wait(1)).await;
        let held = lock.is_some();
        std::mem::forget(lock);
        held
    });
    assert!(held, "the frozen tab holds the lock");
}
