//! The client's one state machine. Inputs: set, tick (timer, page wake-up,
//! `online`), the steps of a refresh attempt and its outcome, a tab
//! message, a 401, logout, dispose. Each input returns an [`Out`]: the
//! effects for the shell to perform (broadcast, re-arm, start a refresh,
//! end `start()`'s wait) and the events to emit. No I/O, no clock of its
//! own: `now` is always an argument.

use super::clock::Stamp;
use super::response::{refresh_outcome, Reply};
use super::session::{Config, Failure, Session, Standing, State, Tick};
use super::tabsync::{self, LockRequest, Message};
use super::token::{Grant, Secret};
use crate::error::Error;
#[allow(unused_imports)]
use crate::prelude::*;

/// Where a `refreshed` token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// This tab called the refresh endpoint.
    SelfTab,
    /// Another tab handed it over.
    Tab,
}

/// Why the session ended (`signedOut.reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `logout()`.
    Logout,
    /// The refresh endpoint answered 400/401/403.
    Rejected,
    /// The token expired and no refresh could replace it.
    Expired,
    /// Another tab signed out.
    Tab,
}

impl Reason {
    /// The JS spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Logout => "logout",
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Tab => "tab",
        }
    }
}

/// What subscribers are told.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A session began (`setSession`, a first refresh, a tab's token).
    SignedIn {
        /// `expiresAt`.
        expires_at: Option<i64>,
    },
    /// The token was replaced.
    Refreshed {
        /// `expiresAt`.
        expires_at: Option<i64>,
        /// `self` or `tab`.
        source: Source,
    },
    /// A transient refresh failure; `retry_in_ms` when another attempt follows.
    RefreshFailed {
        /// What went wrong.
        error: Error,
        /// Delay of the next attempt.
        retry_in_ms: Option<i64>,
    },
    /// The session ended.
    SignedOut {
        /// Why.
        reason: Reason,
    },
    /// `state` changed.
    StateChanged {
        /// The new state.
        state: State,
    },
}

/// Effects and events of one input, for the shell to perform in order:
/// broadcast, re-arm, end `start()`'s wait, start a refresh, then emit.
#[derive(Debug, Default, PartialEq)]
pub struct Out {
    /// A message for the other tabs.
    pub broadcast: Option<String>,
    /// The one timer: fire in this many ms (`None`: no timer).
    pub wake_in: Option<i64>,
    /// Start the shared refresh in the background (or join the one in flight).
    pub refresh: bool,
    /// A tab handed over a token: `start()` may stop listening.
    pub handed_over: bool,
    /// Events, in order.
    pub events: Vec<Event>,
}

/// A refresh attempt that has begun (from [`Machine::begin_attempt`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    version: u64,
    signouts: u32,
}

/// What to do once the refresh lock is held (or given up on).
#[derive(Debug, PartialEq)]
pub enum InLock {
    /// Call the refresh endpoint.
    Call,
    /// No call: the attempt ends with this result (a tab's token adopted,
    /// or a sign-out happened meanwhile).
    Settled(Result<(), Error>, Out),
}

/// What the JS entry's `client.fetch` fast path does with an app request
/// (a string or `URL` input, no body or a string body), before anything is
/// awaited: the common case costs one call into the wasm and no `Request`
/// object (issue 14: `client.fetch` overhead).
#[derive(Debug, PartialEq)]
pub enum Fast<'a> {
    /// Send it with this token's header.
    Attach(&'a Secret),
    /// Send it as the app made it (origin not allowed, or the app set its
    /// own `Authorization`).
    Plain,
    /// Take the full path (`Driver::fetch`): no fresh token at hand, a
    /// refresh or `start()` in flight, DPoP on (a proof is async), disposed.
    Slow,
}

/// What `getToken`/`fetch` should do at a moment.
#[derive(Debug, PartialEq)]
pub enum Use {
    /// Answer now.
    Now(Option<Secret>),
    /// Fail now (backing off or given up, and the token expired).
    Fail(Error),
    /// The token expired and nothing will replace it: tick (signs out), answer `None`.
    Expire,
    /// Wait for `start()` to end, then answer with what is held.
    AwaitStart,
    /// Wait for the shared refresh (start one if none is in flight), then
    /// ask [`Machine::after_refresh`].
    AwaitRefresh {
        /// Whether a token was held when the wait began.
        had: bool,
    },
}

/// The error of a wait another tab's refresh call was told to keep.
fn quiet_error(status: u16, ms: i64) -> Error {
    Error::ServerError {
        status,
        retry_after_ms: Some(ms),
    }
}

/// The state machine. See the module docs.
#[derive(Debug)]
pub struct Machine {
    session: Session,
    cross_tab: bool,
    /// Bumped on every sign-out: an attempt that began before one cannot
    /// bring the session back.
    signouts: u32,
    /// The `state` subscribers last heard of.
    shown: State,
    disposed: bool,
    /// When (monotonic ms) the refresh lock's holder last said it was busy.
    busy_at: Option<i64>,
    /// Until when (monotonic ms) the server asked every tab to wait, as
    /// another tab heard it, and the status it answered with.
    quiet: (i64, u16),
}

impl Machine {
    /// A signed-out machine.
    pub fn new(cfg: Config, cross_tab: bool) -> Self {
        Machine {
            session: Session::new(cfg),
            cross_tab,
            signouts: 0,
            shown: State::SignedOut,
            disposed: false,
            busy_at: None,
            quiet: (i64::MIN, 0),
        }
    }

    /// The session, for reads.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// `state`.
    pub fn state(&self) -> State {
        if self.disposed {
            State::SignedOut
        } else {
            self.session.state()
        }
    }

    /// Whether `dispose` was called.
    pub fn disposed(&self) -> bool {
        self.disposed
    }

    /// `refreshAt`: epoch ms (page clock) of the next planned silent
    /// refresh, `None` when none is planned (signed out, in flight, given up,
    /// or a token without a known lifetime).
    pub fn refresh_at(&self, now: Stamp) -> Option<i64> {
        let s = &self.session;
        let gave_up = s.last_error().is_some() && s.state() != State::Refreshing;
        if self.disposed || !s.is_signed_in() || s.in_flight() || gave_up {
            return None;
        }
        Some(now.wall.saturating_add(s.next_wake(now)?))
    }

    /// Whether an event of an earlier input is still to be emitted: a
    /// `stateChanged` is not once `state` has moved on — a listener of an
    /// event before it in the same batch called in (a `setSession` in a
    /// `signedOut` handler), and that call emitted its own `stateChanged`.
    /// Emitted anyway, it left subscribers reading a state the client was
    /// not in.
    pub fn current(&self, e: &Event) -> bool {
        match e {
            Event::StateChanged { state } => *state == self.state(),
            _ => true,
        }
    }

    /// Closes an input: a `stateChanged` when `state` moved, and the timer.
    fn finish(&mut self, mut out: Out, now: Stamp) -> Out {
        let state = self.state();
        if state != self.shown {
            self.shown = state;
            out.events.push(Event::StateChanged { state });
        }
        out.wake_in = if self.disposed {
            None
        } else {
            self.session.next_wake(now)
        };
        out
    }

    fn token_message(&self, now: Stamp) -> Option<String> {
        if !self.cross_tab {
            return None;
        }
        let s = &self.session;
        if s.bind_pending() {
            return None;
        }
        let t = s.usable(now)?;
        let (life, age) = s.lifetime_and_age(now)?;
        Some(tabsync::encode_token(
            s.version(),
            t.expose(),
            s.bound(t),
            life,
            age,
        ))
    }

    /// The session ended locally: tells other tabs unless the news came
    /// from one (or is the same expiry every tab sees).
    fn end_session(&mut self, out: &mut Out, reason: Reason, was_signed_in: bool) {
        self.signouts = self.signouts.wrapping_add(1);
        if self.cross_tab && !matches!(reason, Reason::Tab | Reason::Expired) {
            out.broadcast = Some(tabsync::encode_signed_out(self.session.version()));
        }
        if was_signed_in {
            out.events.push(Event::SignedOut { reason });
        }
    }

    /// `setSession(response)`: the app's own login answer; `bind`: it is to
    /// be bound by a refresh at once ([`super::dpop::bind_after_set_session`]),
    /// and is not handed to other tabs before.
    pub fn set_session(&mut self, grant: Grant, now: Stamp, bind: bool) -> Result<Out, Error> {
        self.live()?;
        self.session.accept(grant, now)?;
        if bind {
            self.session.await_binding();
        }
        let out = Out {
            refresh: bind,
            broadcast: self.token_message(now),
            events: vec![Event::SignedIn {
                expires_at: self.session.expires_at(now),
            }],
            ..Out::default()
        };
        Ok(self.finish(out, now))
    }

    /// The timer fired, the page woke up (`online`: the network came back,
    /// which forgets an exhausted retry cycle), or a caller checks the clock.
    pub fn tick(&mut self, online: bool, now: Stamp) -> Out {
        let mut out = Out::default();
        if self.disposed {
            return out;
        }
        if online {
            self.session.reset_give_up();
            self.quiet.0 = i64::MIN;
        }
        match self.session.tick(now) {
            Tick::Refresh => out.refresh = true,
            Tick::Expire => {
                let had = self.session.sign_out(now);
                self.end_session(&mut out, Reason::Expired, had);
            }
            Tick::Idle => {}
        }
        self.finish(out, now)
    }

    /// `refresh()`: the user asks, so an exhausted cycle is forgotten.
    pub fn force(&mut self) -> Result<(), Error> {
        self.live()?;
        self.session.reset_give_up();
        self.quiet.0 = i64::MIN;
        Ok(())
    }

    /// Begins a refresh attempt, or `Err(ms)` to wait first (the storm floor).
    pub fn begin_attempt(&mut self, now: Stamp) -> Result<Result<(Attempt, Out), i64>, Error> {
        self.begin_attempt_for(now, self.signouts)
    }

    /// The sign-outs so far, when a refresh is asked for: the attempt, begun
    /// once the storm floor allows, is for that session
    /// ([`Machine::begin_attempt_for`]).
    pub fn refresh_asked(&self) -> u32 {
        self.signouts
    }

    /// [`Machine::begin_attempt`] for a refresh asked for when the sign-outs
    /// were `asked`: `SignedOut` when one happened since (a logout while the
    /// attempt waited for the storm floor). Beginning it anyway made a refresh
    /// call after the logout, which — sent before the logout's answer cleared
    /// the cookie — could bring the session back.
    pub fn begin_attempt_for(
        &mut self,
        now: Stamp,
        asked: u32,
    ) -> Result<Result<(Attempt, Out), i64>, Error> {
        self.live()?;
        if asked != self.signouts {
            return Err(Error::SignedOut);
        }
        Ok(match self.session.try_begin_attempt(now) {
            Ok(()) => {
                let attempt = Attempt {
                    version: self.session.version(),
                    signouts: self.signouts,
                };
                Ok((attempt, self.finish(Out::default(), now)))
            }
            Err(ms) => Err(ms),
        })
    }

    /// How to ask for the refresh lock after `previous` failed (`None`
    /// first) at `now`: `None` means go on without it (or cross-tab is off).
    /// `random` ∈ [0, 1) jitters the wait ([`tabsync::lock_wait_ms`]).
    pub fn lock_request(
        &self,
        previous: Option<LockRequest>,
        request_timeout_ms: i64,
        now: Stamp,
        random: f64,
    ) -> Option<LockRequest> {
        // Disposed: no lock move at all. It no longer hears the holder's busy notices, and
        // a wait that ran out stole the lock from a live holder.
        if !self.cross_tab || self.disposed {
            return None;
        }
        let heard_busy = match previous {
            Some(LockRequest::Wait(ms)) => self.busy_at.is_some_and(|at| now.mono - at < ms),
            _ => false,
        };
        tabsync::next_lock_request(previous, request_timeout_ms, heard_busy, random)
    }

    /// What the lock's holder tells the other tabs before each refresh
    /// request it sends (`None`: cross-tab is off): it is alive and working.
    pub fn busy_message(&self) -> Option<String> {
        self.cross_tab.then(tabsync::encode_busy)
    }

    /// Inside the lock: adopt what another tab delivered meanwhile, give up
    /// after a sign-out, or call the endpoint.
    pub fn in_lock(&mut self, attempt: Attempt, now: Stamp) -> InLock {
        let signed_out = self.signouts != attempt.signouts;
        let adopt = tabsync::adopt_instead_of_rotating(
            attempt.version,
            self.session.version(),
            self.session.fresh(now).is_some(),
        );
        let quiet_ms = self.quiet.0.saturating_sub(now.mono);
        let mut out = Out::default();
        let result = if signed_out {
            Err(Error::SignedOut)
        } else if adopt {
            Ok(())
        } else if quiet_ms > 0 {
            // Another tab's call was just told to wait: wait with it, not call.
            self.hold_off(&mut out, quiet_ms, now, true);
            Err(quiet_error(self.quiet.1, quiet_ms))
        } else {
            return InLock::Call;
        };
        self.session.attempt_settled();
        InLock::Settled(result, self.finish(out, now))
    }

    /// [`Session::hold_off`], and the `refreshFailed` that says so.
    fn hold_off(&mut self, out: &mut Out, ms: i64, now: Stamp, force: bool) {
        let status = self.quiet.1;
        if self
            .session
            .hold_off(quiet_error(status, ms), ms, now, force)
        {
            out.events.push(Event::RefreshFailed {
                error: quiet_error(status, ms),
                retry_in_ms: Some(ms),
            });
        }
    }

    /// The refresh call leaves now (the storm floor counts from here).
    pub fn request_sent(&mut self, now: Stamp) {
        self.session.request_sent(now);
    }

    /// The refresh call ended: `reply` as the shell saw it, `sent` when the
    /// request left (the lifetime counts from there: never overestimated),
    /// `random` ∈ [0,1) for jitter, `online` what the browser says of its
    /// network ([`Session::attempt_failed`]). Returns the attempt's result,
    /// the effects, and whether the lock should linger (a token was broadcast).
    pub fn outcome(
        &mut self,
        attempt: Attempt,
        sent: Stamp,
        reply: Result<Reply, Error>,
        now: Stamp,
        random: f64,
        online: bool,
    ) -> (Result<(), Error>, Out, bool) {
        if self.disposed {
            return (Err(Error::Disposed), Out::default(), false);
        }
        let mut out = Out::default();
        if self.signouts != attempt.signouts {
            // Signed out while the call was in flight: drop the result.
            self.session.attempt_settled();
            return (Err(Error::SignedOut), self.finish(out, now), false);
        }
        let was_signed_in = self.session.is_signed_in();
        let accepted = reply
            .and_then(|r| refresh_outcome(&r, now.wall))
            .and_then(|grant| self.session.accept_refreshed(grant, sent, now));
        if let (Err(_), true) = (&accepted, self.session.version() != attempt.version) {
            // Superseded: while the call was on its way this tab took a newer
            // token (another tab's refresh or sign-in, or setSession here).
            // The failure is about a session this tab no longer holds; the
            // attempt ends with the token it holds now.
            self.session.attempt_settled();
            let result = match self.session.usable(now) {
                Some(_) => Ok(()),
                None => accepted,
            };
            return (result, self.finish(out, now), false);
        }
        match accepted {
            Ok(()) => {
                out.broadcast = self.token_message(now);
                let expires_at = self.session.expires_at(now);
                out.events.push(if was_signed_in {
                    Event::Refreshed {
                        expires_at,
                        source: Source::SelfTab,
                    }
                } else {
                    Event::SignedIn { expires_at }
                });
                let linger = out.broadcast.is_some();
                (Ok(()), self.finish(out, now), linger)
            }
            Err(e) => {
                let mut linger = false;
                match self.session.attempt_failed(e.clone(), now, random, online) {
                    Failure::Retry { in_ms } => {
                        if let (
                            true,
                            Error::ServerError {
                                status,
                                retry_after_ms: Some(_),
                            },
                        ) = (self.cross_tab, &e)
                        {
                            // The server asked for quiet: the other tabs wait too, and
                            // hear it before one of them gets the lock (the linger).
                            out.broadcast = Some(tabsync::encode_quiet(in_ms, *status));
                            linger = true;
                        }
                        out.events.push(Event::RefreshFailed {
                            error: e.clone(),
                            retry_in_ms: Some(in_ms),
                        })
                    }
                    Failure::GaveUp => out.events.push(Event::RefreshFailed {
                        error: e.clone(),
                        retry_in_ms: None,
                    }),
                    Failure::Expired { was_signed_in } => {
                        out.events.push(Event::RefreshFailed {
                            error: e.clone(),
                            retry_in_ms: None,
                        });
                        self.end_session(&mut out, Reason::Expired, was_signed_in);
                    }
                    Failure::Rejected { was_signed_in } => {
                        self.end_session(&mut out, Reason::Rejected, was_signed_in)
                    }
                }
                (Err(e), self.finish(out, now), linger)
            }
        }
    }

    /// A message from another tab (malformed or foreign text is ignored).
    pub fn tab_message(&mut self, text: &str, now: Stamp) -> Out {
        let mut out = Out::default();
        if self.disposed {
            return out;
        }
        match tabsync::decode(text) {
            Some(Message::Token {
                version,
                grant,
                lifetime,
                age,
            }) => {
                let was_signed_in = self.session.is_signed_in();
                if self.session.adopt(grant, lifetime, age, version, now) {
                    out.handed_over = true;
                    let expires_at = self.session.expires_at(now);
                    out.events.push(if was_signed_in {
                        Event::Refreshed {
                            expires_at,
                            source: Source::Tab,
                        }
                    } else {
                        Event::SignedIn { expires_at }
                    });
                }
            }
            Some(Message::SignedOut { version }) => {
                // A logout is versioned ahead of the clock (tabsync::logout_horizon_ms): an
                // attempt this tab has on its way — also one of a tab that holds no token
                // yet, like a `start()` waiting for the lock — is for the session the user
                // left, and its token (versioned after the logout) would sign every tab in
                // again. Other sign-outs (a rejection, a signed-out tab answering a query)
                // end only a session held.
                let logout = version > u64::try_from(now.wall).unwrap_or(0);
                match self.session.remote_sign_out(version) {
                    Some(had) if had || logout => self.end_session(&mut out, Reason::Tab, had),
                    _ => {}
                }
            }
            Some(Message::Busy) => self.busy_at = Some(now.mono),
            Some(Message::Quiet { ms, status }) => {
                self.quiet = (now.mono.saturating_add(ms), status);
                self.hold_off(&mut out, ms, now, false);
            }
            Some(Message::Query) => {
                if self.session.fresh(now).is_some() {
                    out.broadcast = self.token_message(now);
                } else if !self.session.is_signed_in() && self.session.version() > 0 {
                    // A signed-out tab answers with its version, so that a tab
                    // that just opened takes it (the version clock only moves
                    // forward on what a tab hears): a sign-in there then wins
                    // over a logout that was versioned ahead of the clock
                    // ([`tabsync::logout_horizon_ms`]).
                    out.broadcast = Some(tabsync::encode_signed_out(self.session.version()));
                }
            }
            // Ignored; `finish` keeps the timer armed (an empty `Out` would cancel it).
            None => {}
        }
        self.finish(out, now)
    }

    /// The query `start()` sends to the other tabs (`None`: cross-tab off).
    pub fn start_query(&self) -> Option<String> {
        self.cross_tab.then(tabsync::encode_query)
    }

    /// `logout()`: clears at once and tells the other tabs, with a version
    /// ahead of any token a refresh on its way may still bring
    /// ([`tabsync::logout_horizon_ms`] of `request_timeout_ms`).
    pub fn logout(&mut self, now: Stamp, request_timeout_ms: i64) -> Result<Out, Error> {
        self.live()?;
        let had = self
            .session
            .log_out(now, tabsync::logout_horizon_ms(request_timeout_ms));
        let mut out = Out::default();
        self.end_session(&mut out, Reason::Logout, had);
        Ok(self.finish(out, now))
    }

    /// `dispose()`.
    pub fn dispose(&mut self) {
        self.disposed = true;
        self.session.forget();
    }

    /// `Err(Disposed)` once disposed.
    pub fn live(&self) -> Result<(), Error> {
        if self.disposed {
            Err(Error::Disposed)
        } else {
            Ok(())
        }
    }

    /// The fresh token if a caller may have it without waiting: fresh, and
    /// no refresh in flight (`fetch` waits for a forced `refresh()`).
    pub fn ready(&self, now: Stamp, refreshing: bool) -> Option<&Secret> {
        if self.disposed || refreshing || self.session.in_flight() {
            return None;
        }
        self.session.fresh(now)
    }

    /// The fast path's decision for an app request: `allowed`, its origin is
    /// on the allow-list; `app_auth`, the app set `Authorization` itself
    /// (which is never replaced); `dpop`, proofs are on.
    pub fn fast_fetch(
        &self,
        now: Stamp,
        refreshing: bool,
        allowed: bool,
        app_auth: bool,
        dpop: bool,
    ) -> Fast<'_> {
        if self.disposed {
            Fast::Slow
        } else if !allowed || app_auth {
            Fast::Plain
        } else if dpop {
            Fast::Slow
        } else {
            self.ready(now, refreshing).map_or(Fast::Slow, Fast::Attach)
        }
    }

    /// A 401 came back for a request sent on the fast path with `sent`:
    /// refresh first only if `sent` is still the token held (else another
    /// refresh or tab replaced it, and the replay uses the new one).
    pub fn refresh_for_401_of(&self, sent: &Secret) -> bool {
        self.session.holds(sent)
    }

    /// What `getToken`/`fetch` do at `now`. `refreshing`: the shared
    /// refresh is under way; `starting`: `start()` is still asking.
    pub fn token_for_use(&self, now: Stamp, refreshing: bool, starting: bool) -> Use {
        if self.disposed {
            return Use::Fail(Error::Disposed);
        }
        let s = &self.session;
        let standing = s.standing(now);
        let in_flight = refreshing || s.in_flight();
        if standing == Standing::None && !in_flight {
            return if starting {
                Use::AwaitStart
            } else {
                Use::Now(None)
            };
        }
        let tick = s.tick(now);
        match standing {
            Standing::Fresh if !in_flight => Use::Now(s.fresh(now).cloned()),
            Standing::Due | Standing::Expired if !in_flight && tick != Tick::Refresh => {
                // Backing off or given up: no attempt to wait for.
                if tick == Tick::Expire {
                    return Use::Expire;
                }
                match s.usable(now) {
                    Some(t) => Use::Now(Some(t.clone())),
                    None => Use::Fail(s.last_error().cloned().unwrap_or(Error::SignedOut)),
                }
            }
            _ => Use::AwaitRefresh {
                had: standing != Standing::None,
            },
        }
    }

    /// After waiting for a refresh: the token to use, `None` when signed
    /// out, or the attempt's error when the token has expired meanwhile.
    pub fn after_refresh(
        &self,
        now: Stamp,
        had: bool,
        outcome: Result<(), Error>,
    ) -> Result<Option<Secret>, Error> {
        self.live()?;
        let s = &self.session;
        match (s.usable(now), outcome) {
            (Some(t), _) => Ok(Some(t.clone())),
            (None, Err(e)) if s.is_signed_in() || had => Err(e),
            (None, _) => Ok(None),
        }
    }

    /// `start()`'s answer from the refresh it made: signed in or not;
    /// a rejection means "no session", other failures are errors.
    pub fn start_result(&self, now: Stamp, outcome: Result<(), Error>) -> Result<bool, Error> {
        self.live()?;
        match outcome {
            Ok(()) => Ok(self.session.usable(now).is_some()),
            Err(Error::RefreshRejected { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A 401 came back for a request that carried the token of `version`:
    /// refresh first only if nobody replaced the token meanwhile.
    pub fn refresh_for_401(&self, version: u64) -> bool {
        self.session.version() == version
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::policy::schedule::RetryPolicy;
    use crate::policy::token::parse_token_response;
    use proptest::prelude::*;

    const T0: i64 = 1_700_000_000_000;

    fn machine(cross_tab: bool) -> Machine {
        Machine::new(
            Config {
                skew_ms: 30_000,
                retry: RetryPolicy::default(),
                dpop: true,
            },
            cross_tab,
        )
    }

    fn grant(token: &str, expires_in: u32) -> Grant {
        let body = format!(r#"{{"access_token":"{token}","expires_in":{expires_in}}}"#);
        parse_token_response(&body).unwrap()
    }

    fn reply(status: u16, body: &str) -> Result<Reply, Error> {
        Ok(Reply {
            status,
            body: body.into(),
            retry_after: None,
            dpop_nonce: None,
            date: None,
        })
    }

    #[test]
    fn set_session_broadcasts_emits_signed_in_and_state_changed_and_arms_the_timer() {
        let mut m = machine(true);
        let now = Stamp::at(T0);
        let out = m.set_session(grant("a", 300), now, false).unwrap();
        assert!(out.broadcast.is_some());
        assert_eq!(out.wake_in, Some(270_000));
        assert_eq!(
            out.events,
            [
                Event::SignedIn {
                    expires_at: Some(T0 + 300_000)
                },
                Event::StateChanged {
                    state: State::Active
                }
            ]
        );
        assert_eq!(m.refresh_at(now), Some(T0 + 270_000));
    }

    #[test]
    fn a_due_tick_asks_for_a_refresh_and_an_attempt_shows_refreshing() {
        let mut m = machine(false);
        m.set_session(grant("a", 300), Stamp::at(T0), false)
            .unwrap();
        let now = Stamp::at(T0 + 270_000);
        assert!(m.tick(false, now).refresh);
        let (attempt, out) = m.begin_attempt(now).unwrap().unwrap();
        assert_eq!(
            out.events,
            [Event::StateChanged {
                state: State::Refreshing
            }]
        );
        assert_eq!(m.in_lock(attempt, now), InLock::Call);
        let (result, out, linger) = m.outcome(
            attempt,
            now,
            reply(200, r#"{"access_token":"b","expires_in":300}"#),
            now,
            0.5,
            true,
        );
        assert_eq!(result, Ok(()));
        assert!(
            !linger,
            "no broadcast without cross-tab: nothing to linger for"
        );
        assert_eq!(
            out.events,
            [
                Event::Refreshed {
                    expires_at: Some(T0 + 570_000),
                    source: Source::SelfTab
                },
                Event::StateChanged {
                    state: State::Active
                }
            ]
        );
    }

    #[test]
    fn a_logout_during_an_attempt_drops_its_result() {
        let mut m = machine(true);
        let now = Stamp::at(T0);
        m.set_session(grant("a", 300), now, false).unwrap();
        let (attempt, _) = m.begin_attempt(now).unwrap().unwrap();
        let out = m.logout(now, 10_000).unwrap();
        assert!(out.broadcast.is_some(), "other tabs are told");
        assert!(out.events.contains(&Event::SignedOut {
            reason: Reason::Logout
        }));
        let (result, _, _) = m.outcome(
            attempt,
            now,
            reply(200, r#"{"access_token":"b","expires_in":300}"#),
            now,
            0.5,
            true,
        );
        assert_eq!(result, Err(Error::SignedOut));
        assert!(!m.session().is_signed_in());
    }

    #[test]
    fn a_rejection_ends_the_session_and_start_reads_it_as_no_session() {
        let mut m = machine(true);
        let now = Stamp::at(T0);
        m.set_session(grant("a", 300), now, false).unwrap();
        let (attempt, _) = m.begin_attempt(now).unwrap().unwrap();
        let (result, out, _) = m.outcome(attempt, now, reply(401, ""), now, 0.5, true);
        assert!(out.events.contains(&Event::SignedOut {
            reason: Reason::Rejected
        }));
        assert!(out.broadcast.is_some());
        assert_eq!(m.start_result(now, result), Ok(false));
        assert_eq!(
            m.start_result(now, Err(Error::Network)),
            Err(Error::Network),
            "a transient failure is an error, not 'no session'"
        );
    }

    #[test]
    fn callers_wait_for_a_refresh_in_flight_even_with_a_fresh_token() {
        let mut m = machine(false);
        let now = Stamp::at(T0);
        m.set_session(grant("a", 300), now, false).unwrap();
        assert!(matches!(
            m.token_for_use(now, false, false),
            Use::Now(Some(_))
        ));
        assert!(m.ready(now, false).is_some());
        assert_eq!(
            m.token_for_use(now, true, false),
            Use::AwaitRefresh { had: true }
        );
        assert!(m.ready(now, true).is_none());
    }

    #[test]
    fn the_fetch_fast_path_attaches_only_a_fresh_token_with_nothing_in_flight() {
        let mut m = machine(false);
        let now = Stamp::at(T0);
        assert_eq!(
            m.fast_fetch(now, false, true, false, false),
            Fast::Slow,
            "signed out: the full path decides (it may wait for start())"
        );
        m.set_session(grant("a", 300), now, false).unwrap();
        let a = Secret::new("a".into());
        assert_eq!(
            m.fast_fetch(now, false, true, false, false),
            Fast::Attach(&a)
        );
        assert_eq!(m.fast_fetch(now, false, false, false, false), Fast::Plain);
        assert_eq!(
            m.fast_fetch(now, false, true, true, false),
            Fast::Plain,
            "the app's own Authorization is never replaced"
        );
        assert_eq!(m.fast_fetch(now, true, true, false, false), Fast::Slow);
        assert_eq!(m.fast_fetch(now, false, true, false, true), Fast::Slow);
        let due = Stamp::at(T0 + 270_000);
        assert_eq!(
            m.fast_fetch(due, false, true, false, false),
            Fast::Slow,
            "due for refresh: the full path refreshes first"
        );
        assert!(m.refresh_for_401_of(&a));
        m.set_session(grant("b", 300), now, false).unwrap();
        assert!(
            !m.refresh_for_401_of(&a),
            "replaced meanwhile: replay with b"
        );
        m.dispose();
        assert_eq!(m.fast_fetch(now, false, false, false, false), Fast::Slow);
    }

    /// `attempt` answered with `token` (`expires_in` s), sent at T0 + `sent`
    /// and answered at T0 + `now`: the broadcast that follows.
    fn answered(
        m: &mut Machine,
        attempt: Attempt,
        sent: i64,
        now: i64,
        token: &str,
        expires_in: u32,
    ) -> String {
        let body = format!(r#"{{"access_token":"{token}","expires_in":{expires_in}}}"#);
        let (result, out, _) = m.outcome(
            attempt,
            Stamp::at(T0 + sent),
            reply(200, &body),
            Stamp::at(T0 + now),
            0.5,
            true,
        );
        assert_eq!(result, Ok(()));
        out.broadcast.unwrap()
    }

    /// The token message `m` would send now (its broadcast after a refresh).
    fn token_out(m: &mut Machine, now: Stamp, token: &str) -> String {
        let (attempt, _) = m.begin_attempt(now).unwrap().unwrap();
        answered(m, attempt, now.wall - T0, now.wall - T0, token, 300)
    }

    #[test]
    fn a_refreshed_token_is_versioned_when_it_arrives_so_it_wins_over_a_sign_in_made_while_it_was_on_its_way(
    ) {
        // Tab A's refresh leaves at T0 and is answered at T0 + 500; the user
        // signs in in tab B at T0 + 200 (the rotation happened after that).
        let mut a = machine(true);
        let mut b = machine(true);
        let (attempt, _) = a.begin_attempt(Stamp::at(T0)).unwrap().unwrap();
        b.set_session(grant("login", 300), Stamp::at(T0 + 200), false)
            .unwrap();
        let message = answered(&mut a, attempt, 0, 500, "rotated", 300);
        let out = b.tab_message(&message, Stamp::at(T0 + 510));
        assert!(out.handed_over, "B takes the newer token");
        assert_eq!(
            b.session().fresh(Stamp::at(T0 + 510)),
            Some(&Secret::new("rotated".into()))
        );
        // Its lifetime still counts from when the request left.
        assert_eq!(
            a.session().expires_at(Stamp::at(T0 + 500)),
            Some(T0 + 300_000)
        );
    }

    #[test]
    fn a_rejection_signs_out_the_tabs_holding_that_session_but_not_one_signed_in_since() {
        let now = Stamp::at(T0);
        let mut a = machine(true);
        let mut same = machine(true);
        let mut newer = machine(true);
        a.set_session(grant("a", 300), now, false).unwrap();
        let message = token_out(&mut a, Stamp::at(T0 + 10), "a2");
        assert!(same.tab_message(&message, Stamp::at(T0 + 11)).handed_over);
        newer
            .set_session(grant("login", 300), Stamp::at(T0 + 20), false)
            .unwrap();
        let (attempt, _) = a.begin_attempt(Stamp::at(T0 + 2_000)).unwrap().unwrap();
        let (result, out, _) = a.outcome(
            attempt,
            Stamp::at(T0 + 2_000),
            reply(401, ""),
            Stamp::at(T0 + 3_000),
            0.5,
            true,
        );
        assert!(matches!(result, Err(Error::RefreshRejected { .. })));
        let signed_out = out.broadcast.expect("the other tabs are told");
        let later = Stamp::at(T0 + 3_010);
        let out = same.tab_message(&signed_out, later);
        assert!(out.events.contains(&Event::SignedOut {
            reason: Reason::Tab
        }));
        let out = newer.tab_message(&signed_out, later);
        assert!(out.events.is_empty(), "a newer session is not that session");
        assert_eq!(newer.state(), State::Active);
    }

    #[test]
    fn a_failure_of_an_attempt_superseded_by_another_tab_s_token_keeps_that_token() {
        let failures = [
            reply(401, ""),
            reply(400, r#"{"error":"invalid_dpop_proof"}"#),
            Err(Error::Network),
        ];
        for failure in failures {
            let now = Stamp::at(T0);
            let mut a = machine(true);
            let mut b = machine(true);
            b.set_session(grant("b", 300), now, false).unwrap();
            // A starts (no session: start()), B rotates meanwhile and tells A.
            let (attempt, _) = a.begin_attempt(now).unwrap().unwrap();
            let message = token_out(&mut b, Stamp::at(T0 + 100), "b2");
            assert!(a.tab_message(&message, Stamp::at(T0 + 110)).handed_over);
            assert_eq!(
                a.state(),
                State::Refreshing,
                "A's own call is still on its way"
            );
            let (result, out, _) = a.outcome(attempt, now, failure, Stamp::at(T0 + 200), 0.5, true);
            assert_eq!(result, Ok(()), "waiters get the token A holds");
            assert_eq!(out.broadcast, None, "nothing to tell");
            assert!(!out
                .events
                .iter()
                .any(|e| matches!(e, Event::SignedOut { .. } | Event::RefreshFailed { .. })));
            assert_eq!(a.state(), State::Active);
            assert_eq!(
                a.session().fresh(Stamp::at(T0 + 200)),
                Some(&Secret::new("b2".into()))
            );
        }
    }

    #[test]
    fn a_sign_in_to_bind_is_due_at_once_is_not_handed_to_tabs_and_outlives_an_attempt_already_on_its_way(
    ) {
        let now = Stamp::at(T0);
        let mut m = machine(true);
        // start() is on its way when the app's login answer is set.
        let (attempt, _) = m.begin_attempt(now).unwrap().unwrap();
        let out = m
            .set_session(grant("login", 300), Stamp::at(T0 + 100), true)
            .unwrap();
        assert!(out.refresh, "bind at once");
        assert_eq!(out.broadcast, None, "not handed to other tabs unbound");
        assert!(m
            .tab_message(r#"{"p":"tokenwarden/1","k":"query"}"#, Stamp::at(T0 + 110))
            .broadcast
            .is_none());
        // start()'s call was sent before the login: no session. It is
        // superseded; the login token stays, still due for binding.
        let (result, out, _) =
            m.outcome(attempt, now, reply(401, ""), Stamp::at(T0 + 300), 0.5, true);
        assert_eq!(result, Ok(()));
        assert_eq!(m.state(), State::Active);
        let later = Stamp::at(T0 + 1_000);
        assert_eq!(out.wake_in, Some(700), "after the storm floor");
        assert!(m.tick(false, later).refresh, "the binding refresh follows");
        assert_eq!(
            m.token_for_use(later, false, false),
            Use::AwaitRefresh { had: true }
        );
        // Once a token replaces it (bound or not), it is an ordinary session.
        let message = token_out(&mut m, later, "bound");
        assert!(message.contains("bound"));
        assert!(m.ready(later, false).is_some());
    }

    #[test]
    fn an_attempt_that_waited_for_the_storm_floor_across_a_logout_does_not_begin() {
        let mut m = machine(true);
        m.set_session(grant("a", 3), Stamp::at(T0), false).unwrap();
        let (attempt, _) = m.begin_attempt(Stamp::at(T0)).unwrap().unwrap();
        let _ = answered(&mut m, attempt, 0, 100, "b", 3);
        let asked = m.refresh_asked();
        assert!(
            m.begin_attempt_for(Stamp::at(T0 + 200), asked)
                .unwrap()
                .is_err(),
            "the storm floor"
        );
        m.logout(Stamp::at(T0 + 500), 10_000).unwrap();
        assert_eq!(
            m.begin_attempt_for(Stamp::at(T0 + 1_000), asked)
                .map(|r| r.is_ok()),
            Err(Error::SignedOut)
        );
        let asked = m.refresh_asked();
        assert!(
            matches!(m.begin_attempt_for(Stamp::at(T0 + 1_000), asked), Ok(Ok(_))),
            "a refresh asked for after it (start())"
        );
    }

    #[test]
    fn a_logout_wins_over_a_token_from_a_refresh_that_was_on_its_way_in_another_tab() {
        // Tab A refreshes; the user logs out in tab B meanwhile; A's call had
        // reached the server first, so A gets a token, after the logout.
        let now = Stamp::at(T0);
        let mut a = machine(true);
        let mut b = machine(true);
        let mut c = machine(true);
        a.set_session(grant("s", 300), now, false).unwrap();
        let message = token_out(&mut a, now, "s1");
        assert!(
            b.tab_message(&message, now).handed_over && c.tab_message(&message, now).handed_over
        );
        let (attempt, _) = a.begin_attempt(Stamp::at(T0 + 1_000)).unwrap().unwrap();
        let signed_out = b
            .logout(Stamp::at(T0 + 1_050), 10_000)
            .unwrap()
            .broadcast
            .unwrap();
        let token = answered(&mut a, attempt, 1_000, 1_400, "s2", 300);
        // C hears A first, then B; A hears B: both end signed out.
        assert!(c.tab_message(&token, Stamp::at(T0 + 1_410)).handed_over);
        for m in [&mut a, &mut c] {
            let out = m.tab_message(&signed_out, Stamp::at(T0 + 1_500));
            assert!(out.events.contains(&Event::SignedOut {
                reason: Reason::Tab
            }));
            assert_eq!(m.state(), State::SignedOut);
        }
        assert!(
            !b.tab_message(&token, Stamp::at(T0 + 1_410)).handed_over,
            "B stays out"
        );
        // A sign-in after the logout still wins.
        let login = {
            let out = b
                .set_session(grant("again", 300), Stamp::at(T0 + 2_000), false)
                .unwrap();
            out.broadcast.unwrap()
        };
        assert!(a.tab_message(&login, Stamp::at(T0 + 2_010)).handed_over);
    }

    #[test]
    fn a_sign_out_during_an_attempt_detaches_it_until_it_ends() {
        let now = Stamp::at(T0);
        let mut a = machine(true);
        let mut b = machine(true);
        a.set_session(grant("s", 3), now, false).unwrap();
        let (attempt, _) = a.begin_attempt(Stamp::at(T0 + 1_500)).unwrap().unwrap();
        let out = a.logout(Stamp::at(T0 + 1_510), 10_000).unwrap();
        assert_eq!(
            a.state(),
            State::SignedOut,
            "not 'refreshing' after a logout"
        );
        assert_eq!(out.wake_in, None);
        // A tab opened since asks the tabs (start()), takes A's version from
        // its answer, and signs in by a refresh whose token is already due
        // when A gets it.
        let query = b.start_query().unwrap();
        let answer = a
            .tab_message(&query, Stamp::at(T0 + 2_000))
            .broadcast
            .unwrap();
        assert!(b
            .tab_message(&answer, Stamp::at(T0 + 2_001))
            .events
            .is_empty());
        let (attempt_b, _) = b.begin_attempt(Stamp::at(T0 + 3_000)).unwrap().unwrap();
        let login = answered(&mut b, attempt_b, 3_000, 4_600, "n", 3);
        let later = Stamp::at(T0 + 4_610);
        assert!(a.tab_message(&login, later).handed_over);
        assert_eq!(a.state(), State::Active);
        let out = a.tick(false, later);
        assert!(
            !out.refresh && out.wake_in.is_none(),
            "nothing until A's own call ends: {out:?}"
        );
        let (result, out, _) = a.outcome(
            attempt,
            Stamp::at(T0 + 1_500),
            reply(200, r#"{"access_token":"x","expires_in":3}"#),
            later,
            0.5,
            true,
        );
        assert_eq!(result, Err(Error::SignedOut), "its answer is dropped");
        assert_eq!(out.wake_in, Some(0), "then the due token is refreshed");
        assert!(a.tick(false, later).refresh);
    }

    #[test]
    fn a_due_token_waits_for_the_storm_floor_instead_of_re_arming_at_once() {
        // B's refresh left at T0 and came back at T0 + 1,600: its 3 s token
        // is due (past half-life) when A adopts it, while A's own attempt,
        // sent at T0 + 1,600, is on its way; that attempt then fails.
        let mut a = machine(true);
        let mut b = machine(true);
        let (attempt_b, _) = b.begin_attempt(Stamp::at(T0)).unwrap().unwrap();
        let message = answered(&mut b, attempt_b, 0, 1_600, "t", 3);
        let (attempt, _) = a.begin_attempt(Stamp::at(T0 + 1_600)).unwrap().unwrap();
        a.request_sent(Stamp::at(T0 + 1_600));
        assert!(a.tab_message(&message, Stamp::at(T0 + 1_610)).handed_over);
        let (result, out, _) = a.outcome(
            attempt,
            Stamp::at(T0 + 1_600),
            Err(Error::Network),
            Stamp::at(T0 + 1_700),
            0.5,
            true,
        );
        assert_eq!(result, Ok(()), "superseded");
        assert_eq!(
            out.wake_in,
            Some(900),
            "a due token: the next attempt when the storm floor allows, not a 0 ms timer"
        );
        // A token adopted while an attempt is in flight does not end it: no
        // tick asks for a refresh the shell would only join.
        let mut m = machine(true);
        let mut other = machine(true);
        let now = Stamp::at(T0);
        let (_attempt, _) = m.begin_attempt(now).unwrap().unwrap();
        let message = token_out(&mut other, now, "t");
        assert!(m.tab_message(&message, Stamp::at(T0 + 10)).handed_over);
        assert_eq!(m.state(), State::Refreshing);
        let out = m.tick(false, Stamp::at(T0 + 200_000));
        assert!(!out.refresh);
        assert_eq!(out.wake_in, None, "the attempt's outcome re-arms");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Set(u32),
        Advance(u32, bool),
        Attempt(u16),
        TabToken(u32, u64),
        TabSignedOut(u64),
        Query,
        Logout,
        Quiet(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u32..4_000).prop_map(Op::Set),
            (0u32..400_000, any::<bool>()).prop_map(|(ms, online)| Op::Advance(ms, online)),
            prop_oneof![Just(200u16), Just(401), Just(503), Just(0)].prop_map(Op::Attempt),
            (1u32..4_000, 0u64..3).prop_map(|(l, v)| Op::TabToken(l, v)),
            (0u64..3).prop_map(Op::TabSignedOut),
            Just(Op::Query),
            Just(Op::Logout),
            (0u32..120_000).prop_map(Op::Quiet),
        ]
    }

    proptest! {
        /// Any sequence of inputs: `stateChanged` events always track
        /// `state`, a token handed to callers is never expired, the timer is
        /// never negative and `refreshAt` is never in the past.
        #[test]
        fn any_input_sequence_keeps_the_invariants(ops in proptest::collection::vec(op(), 1..40)) {
            let mut m = machine(true);
            let mut now = Stamp::at(T0);
            let mut shown = State::SignedOut;
            let mut n = 0u32;
            for op in ops {
                let out = match op {
                    Op::Set(s) => {
                        n += 1;
                        m.set_session(grant(&format!("s{n}"), s), now, false).unwrap_or_default()
                    }
                    Op::Advance(ms, online) => {
                        now = Stamp::at(now.wall + i64::from(ms));
                        m.tick(online, now)
                    }
                    Op::Attempt(status) => match m.begin_attempt(now).unwrap() {
                        Err(wait) => {
                            prop_assert!(wait > 0);
                            Out::default()
                        }
                        Ok((attempt, out)) => {
                            for e in &out.events {
                                if let Event::StateChanged { state } = e { shown = *state; }
                            }
                            match m.in_lock(attempt, now) {
                                InLock::Settled(_, out) => out,
                                InLock::Call => {
                                    n += 1;
                                    let r = if status == 0 {
                                        Err(Error::Network)
                                    } else {
                                        reply(status, &format!(r#"{{"access_token":"r{n}","expires_in":600}}"#))
                                    };
                                    m.outcome(attempt, now, r, now, 0.5, true).1
                                }
                            }
                        }
                    },
                    Op::TabToken(l, dv) => {
                        n += 1;
                        let v = m.session().version() + dv;
                        let text = tabsync::encode_token(v, &format!("t{n}"), false, Some(i64::from(l) * 1000), 0);
                        m.tab_message(&text, now)
                    }
                    Op::TabSignedOut(dv) => {
                        let v = m.session().version() + dv;
                        m.tab_message(&tabsync::encode_signed_out(v), now)
                    }
                    Op::Query => m.tab_message(&tabsync::encode_query(), now),
                    Op::Logout => m.logout(now, 10_000).unwrap(),
                    Op::Quiet(ms) => m.tab_message(&tabsync::encode_quiet(i64::from(ms), 503), now),
                };
                for e in &out.events {
                    if let Event::StateChanged { state } = e { shown = *state; }
                }
                prop_assert_eq!(shown, m.state(), "stateChanged tracks state");
                prop_assert!(out.wake_in.is_none_or(|ms| ms >= 0));
                if let Some(at) = m.refresh_at(now) {
                    prop_assert!(at >= now.wall);
                }
                if let Use::Now(Some(_)) = m.token_for_use(now, false, false) {
                    prop_assert!(m.session().usable(now).is_some(), "never an expired token");
                }
                // The fetch fast path attaches exactly what the full path
                // would send at once, and never while a refresh is awaited.
                for refreshing in [false, true] {
                    if let Fast::Attach(t) = m.fast_fetch(now, refreshing, true, false, false) {
                        prop_assert_eq!(
                            m.token_for_use(now, refreshing, false),
                            Use::Now(Some(t.clone()))
                        );
                        prop_assert!(m.session().fresh(now).is_some());
                    }
                }
            }
        }
    }
}
