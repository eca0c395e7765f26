//! The session state machine: which token is held, whether a refresh is
//! in flight or backing off, and what should happen at any moment.
//!
//! The browser shell owns the clock, the timers and the network; it asks
//! this type what to do (`tick`, `standing`, `next_wake`) and reports what
//! happened (`try_begin_attempt`, `accept`, `attempt_failed`). Nothing here
//! waits or performs I/O, so every rule is tested with a fixed clock.

use super::clock::Stamp;
use super::jwt::Claims;
use super::lifetime::lifetime_ms;
use super::schedule::{backoff_ms, refresh_after, RetryPolicy, MIN_ATTEMPT_GAP_MS};
use super::token::{Grant, Secret};
use crate::error::Error;
#[allow(unused_imports)]
use crate::prelude::*;

/// Versions travel as JSON numbers: above 2^53 they are not exact, so
/// messages claiming one are ignored (and local versions stay far below).
pub const MAX_VERSION: u64 = 1 << 53;

/// Wall and monotonic elapsed times closer than this count as agreeing.
const CLOCKS_AGREE_MS: u64 = 1_000;

/// `state` as JS sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No token.
    SignedOut,
    /// A token, no refresh under way.
    Active,
    /// A refresh attempt is in flight or a retry is scheduled.
    Refreshing,
}

impl State {
    /// The JS spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            State::SignedOut => "signedOut",
            State::Active => "active",
            State::Refreshing => "refreshing",
        }
    }
}

/// How the held token stands at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// No token.
    None,
    /// Usable and not due for refresh.
    Fresh,
    /// Usable, but due for refresh.
    Due,
    /// Past its expiry: must never be sent.
    Expired,
}

/// What the shell should do now (from `tick`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    /// Nothing to do.
    Idle,
    /// Start a refresh attempt (it is due, or a retry's time has come).
    Refresh,
    /// The token expired and no refresh will come: sign out (`expired`).
    Expire,
}

/// What a failed attempt leads to (from `attempt_failed`).
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// Transient: another attempt in `in_ms`.
    Retry {
        /// Delay before the next attempt.
        in_ms: i64,
    },
    /// Transient, attempts exhausted; the token (still valid) is kept until
    /// it expires. No more automatic attempts.
    GaveUp,
    /// Attempts exhausted and the token has expired: the session is over
    /// (`signedOut`, reason `expired`). `was_signed_in` says if it had one.
    Expired {
        /// Whether there was a token to lose.
        was_signed_in: bool,
    },
    /// The endpoint said the session is over (400/401/403).
    Rejected {
        /// Whether there was a token to lose.
        was_signed_in: bool,
    },
}

/// Session configuration, from the options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// `refreshSkewSeconds` in ms.
    pub skew_ms: i64,
    /// `retry`.
    pub retry: RetryPolicy,
    /// `dpop`: a token bound to a key is refused when off, wherever it comes from.
    pub dpop: bool,
}

#[derive(Clone, Debug)]
struct Held {
    token: Secret,
    claims: Option<Claims>,
    /// Issued as `token_type: "DPoP"` (bound to a key).
    bound: bool,
    received: Stamp,
    lifetime: Option<i64>,
    /// Age at which the token counts as expired: its lifetime less
    /// `expiry_margin` (the API call's transit, whole-second `exp`s).
    usable_for: Option<i64>,
    due_after: Option<i64>,
}

/// How much earlier than its lifetime says a token stops being sent:
/// a tenth of the lifetime, at most one second. Covers the time the API
/// call takes to reach the server and servers that round `exp` to whole
/// seconds; without it a token used in its last milliseconds can arrive
/// expired (found by the chaos suite).
pub fn expiry_margin(lifetime: i64) -> i64 {
    (lifetime / 10).clamp(0, 1_000)
}

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Idle,
    InFlight {
        failures: u32,
    },
    Backoff {
        failures: u32,
        since: Stamp,
        delay: i64,
        last: Error,
    },
    GaveUp {
        last: Error,
    },
    /// An attempt is still on its way for a session that ended meanwhile
    /// (signed out here or in another tab): its outcome will be dropped.
    /// Nothing is scheduled until it ends — a token adopted meanwhile waits
    /// for that — and `state` follows the token held. Dropping to idle
    /// instead made a due token re-arm a 0 ms timer until the call ended.
    Detached,
}

/// The session. See the module docs.
#[derive(Debug)]
pub struct Session {
    cfg: Config,
    held: Option<Held>,
    phase: Phase,
    last_attempt: Option<Stamp>,
    version: u64,
    /// The held token came from `setSession` unbound while DPoP is on: it is
    /// due at once, for the refresh that binds it (see [`Session::await_binding`]).
    bind_pending: bool,
}

impl Session {
    /// A signed-out session.
    pub fn new(cfg: Config) -> Self {
        Session {
            cfg,
            held: None,
            phase: Phase::Idle,
            last_attempt: None,
            version: 0,
            bind_pending: false,
        }
    }

    /// The token just set is to be bound to the tab's key by a refresh
    /// (`setSession` with DPoP on and an unbound login token): until a token
    /// replaces it, it is due, so that the next tick or caller refreshes —
    /// also when an attempt that was already on its way when it was set (a
    /// `start()`) ends without a token — and it is not handed to other tabs
    /// (they would sign with keys of their own).
    pub fn await_binding(&mut self) {
        self.bind_pending = self.held.is_some();
    }

    /// See [`Session::await_binding`].
    pub fn bind_pending(&self) -> bool {
        self.bind_pending && self.held.is_some()
    }

    /// The cross-tab version of the current token (or sign-out): a hybrid
    /// logical clock, bumped on every local change and raised by messages.
    pub fn version(&self) -> u64 {
        self.version
    }

    fn bump_version(&mut self, wall: i64) {
        let wall = u64::try_from(wall).unwrap_or(0);
        self.version = self.version.saturating_add(1).max(wall);
    }

    /// `state`.
    pub fn state(&self) -> State {
        match (&self.phase, &self.held) {
            (Phase::InFlight { .. } | Phase::Backoff { .. }, _) => State::Refreshing,
            (_, Some(_)) => State::Active,
            (_, None) => State::SignedOut,
        }
    }

    /// Whether a token is held (expired or not).
    pub fn is_signed_in(&self) -> bool {
        self.held.is_some()
    }

    /// Whether an attempt is in flight right now.
    pub fn in_flight(&self) -> bool {
        matches!(self.phase, Phase::InFlight { .. })
    }

    /// The error of the last failed attempt, while backing off or given up.
    pub fn last_error(&self) -> Option<&Error> {
        match &self.phase {
            Phase::Backoff { last, .. } | Phase::GaveUp { last } => Some(last),
            _ => None,
        }
    }

    /// How the token stands at `now`.
    pub fn standing(&self, now: Stamp) -> Standing {
        let Some(h) = &self.held else {
            return Standing::None;
        };
        let age = now.since(h.received);
        match (h.usable_for, h.due_after) {
            (Some(usable), _) if age >= usable => Standing::Expired,
            (_, Some(due)) if age >= due => Standing::Due,
            _ if self.bind_pending => Standing::Due,
            _ => Standing::Fresh,
        }
    }

    /// The token if it has not expired at `now` (due or not).
    pub fn usable(&self, now: Stamp) -> Option<&Secret> {
        match self.standing(now) {
            Standing::Fresh | Standing::Due => self.held.as_ref().map(|h| &h.token),
            _ => None,
        }
    }

    /// The token if it is not due for refresh at `now`.
    pub fn fresh(&self, now: Stamp) -> Option<&Secret> {
        match self.standing(now) {
            Standing::Fresh => self.held.as_ref().map(|h| &h.token),
            _ => None,
        }
    }

    /// Whether `t` is the token held now (expired or not).
    pub fn holds(&self, t: &Secret) -> bool {
        self.held.as_ref().is_some_and(|h| &h.token == t)
    }

    /// Whether `t` was issued bound to a key (`token_type: "DPoP"`). A
    /// token that is no longer held counts as bound: it is never sent
    /// without a proof on a guess.
    pub fn bound(&self, t: &Secret) -> bool {
        self.held.as_ref().is_none_or(|h| &h.token != t || h.bound)
    }

    /// Claims of the held token, if it is a JWT.
    pub fn claims(&self) -> Option<&Claims> {
        self.held.as_ref()?.claims.as_ref()
    }

    /// `expiresAt`: expiry in epoch ms of the page clock at `now`.
    /// Stable between reads (React's `useSyncExternalStore` needs that):
    /// arrival plus lifetime while the two clocks agree; only when the wall
    /// clock was moved (or slept) does it follow the elapsed-time rule.
    pub fn expires_at(&self, now: Stamp) -> Option<i64> {
        let h = self.held.as_ref()?;
        let life = h.lifetime?;
        let wall = now.wall.saturating_sub(h.received.wall);
        let mono = now.mono.saturating_sub(h.received.mono);
        if wall.abs_diff(mono) <= CLOCKS_AGREE_MS {
            return Some(h.received.wall.saturating_add(life));
        }
        let left = life.saturating_sub(now.since(h.received));
        Some(now.wall.saturating_add(left))
    }

    /// (lifetime, age) of the held token at `now`, for cross-tab hand-over.
    pub fn lifetime_and_age(&self, now: Stamp) -> Option<(Option<i64>, i64)> {
        let h = self.held.as_ref()?;
        Some((h.lifetime, now.since(h.received)))
    }

    fn store(&mut self, grant: Grant, received: Stamp, lifetime: Option<i64>) -> Result<(), Error> {
        if lifetime == Some(0) {
            return Err(Error::InvalidResponse("the token has already expired"));
        }
        if grant.bound && !self.cfg.dpop {
            // Never sent as Bearer (RFC 9449 §7.2): from `setSession`, from the refresh
            // endpoint (which took it as Bearer before) or from another tab.
            return Err(Error::InvalidResponse(
                "the token is bound to a key (DPoP) and dpop is off",
            ));
        }
        let usable_for = lifetime.map(|l| l - expiry_margin(l));
        let due_after =
            lifetime.map(|l| refresh_after(l, self.cfg.skew_ms).min(l - expiry_margin(l)));
        self.bind_pending = false;
        self.held = Some(Held {
            token: grant.token,
            claims: grant.claims,
            bound: grant.bound,
            received,
            lifetime,
            usable_for,
            due_after,
        });
        // A retry cycle ends with a token; an attempt in flight does not: it
        // ends with its outcome (`accept_refreshed`, `attempt_failed`,
        // `attempt_settled`). Dropping it to idle here made the next tick ask
        // for a refresh that the shell joins to the one in flight, and a due
        // token then re-armed a 0 ms timer until that call ended.
        if !matches!(self.phase, Phase::InFlight { .. } | Phase::Detached) {
            self.phase = Phase::Idle;
        }
        Ok(())
    }

    /// A token arrived (`setSession`) at `now`.
    /// A token that is already expired on arrival is `invalid_response`.
    /// An attempt in flight goes on (its outcome is then superseded).
    pub fn accept(&mut self, grant: Grant, now: Stamp) -> Result<(), Error> {
        self.take(grant, now, now)
    }

    /// Holds `grant`, its lifetime counted from `received`, versioned at `now`.
    fn take(&mut self, grant: Grant, received: Stamp, now: Stamp) -> Result<(), Error> {
        let lifetime = lifetime_ms(&grant, received.wall);
        self.store(grant, received, lifetime)?;
        self.bump_version(now.wall);
        Ok(())
    }

    /// A refresh response arrived at `now` for a request that left at
    /// `sent`: the lifetime counts from `sent` (never overestimated), the
    /// version from `now`. The rotation happened after anything this tab
    /// saw before the answer (a `setSession` in another tab while the
    /// request was on its way included): stamping the version with `sent`
    /// made such a newer token lose to the older one.
    pub fn accept_refreshed(&mut self, grant: Grant, sent: Stamp, now: Stamp) -> Result<(), Error> {
        self.take(grant, sent, now)?;
        self.phase = Phase::Idle;
        Ok(())
    }

    /// A token another tab holds: `lifetime` as it computed it, `age` how
    /// old it was when sent, `version` the sender's version. Ignored
    /// (returns false) unless the message is newer than what this tab has.
    pub fn adopt(
        &mut self,
        grant: Grant,
        lifetime: Option<i64>,
        age: i64,
        version: u64,
        now: Stamp,
    ) -> bool {
        if version <= self.version || version > MAX_VERSION {
            return false;
        }
        let lifetime = lifetime.map(|l| l.clamp(0, super::lifetime::MAX_LIFETIME_MS));
        let age = age.clamp(0, lifetime.unwrap_or(i64::MAX));
        if lifetime.is_some_and(|l| age >= l - expiry_margin(l)) {
            return false; // already expired: worthless
        }
        if self.store(grant, now.minus(age), lifetime).is_err() {
            return false;
        }
        self.version = version;
        true
    }

    /// Another tab signed out with `version`: `None` when it is not newer
    /// (ignored), else whether this tab held a token.
    pub fn remote_sign_out(&mut self, version: u64) -> Option<bool> {
        if version <= self.version || version > MAX_VERSION {
            return None;
        }
        self.version = version;
        self.end_phase();
        Some(self.held.take().is_some())
    }

    /// A session ends: an attempt on its way is detached, anything else ends.
    fn end_phase(&mut self) {
        self.phase = match self.phase {
            Phase::InFlight { .. } | Phase::Detached => Phase::Detached,
            _ => Phase::Idle,
        };
    }

    /// `dispose()`: the token (and its claims) leave memory with the client,
    /// so its getters answer as a signed-out client's do.
    pub fn forget(&mut self) {
        self.held = None;
        self.end_phase();
    }

    /// The user's logout: ends the session with a version `horizon_ms`
    /// ahead of the clock ([`super::tabsync::logout_horizon_ms`]); returns
    /// whether there was a token.
    pub fn log_out(&mut self, now: Stamp, horizon_ms: i64) -> bool {
        self.end_at(now.wall.saturating_add(horizon_ms.max(0)))
    }

    /// Ends the session locally (rejection, expiry); returns whether there
    /// was a token.
    pub fn sign_out(&mut self, now: Stamp) -> bool {
        self.end_at(now.wall)
    }

    /// Ends the session with a version of at least `wall`.
    fn end_at(&mut self, wall: i64) -> bool {
        self.bump_version(wall);
        self.end_phase();
        self.held.take().is_some()
    }

    /// Starts an attempt, unless one ran less than a second ago: then
    /// `Err(ms)` to wait first. Joining an attempt already in flight is the
    /// shell's job (it checks `in_flight()` first).
    pub fn try_begin_attempt(&mut self, now: Stamp) -> Result<(), i64> {
        if let Some(last) = self.last_attempt {
            let gap = now.since(last);
            if gap < MIN_ATTEMPT_GAP_MS {
                return Err(MIN_ATTEMPT_GAP_MS - gap);
            }
        }
        let failures = match self.phase {
            Phase::Backoff { failures, .. } => failures,
            _ => 0,
        };
        self.phase = Phase::InFlight { failures };
        self.last_attempt = Some(now);
        Ok(())
    }

    /// The attempt's request leaves now (after waiting for the cross-tab
    /// lock): the one-second floor counts from here, so that two refresh
    /// *calls* are a second apart even when getting the lock took longer for
    /// the first attempt than for the second.
    pub fn request_sent(&mut self, now: Stamp) {
        if matches!(self.phase, Phase::InFlight { .. }) {
            self.last_attempt = Some(now);
        }
    }

    /// The attempt in flight finished without a new token (the shell calls
    /// `accept` on success). `random` ∈ [0,1) for jitter. `online`: the
    /// browser says it has a network (`navigator.onLine`); a network failure
    /// while it has none is not counted against `retry.maxAttempts`, so a
    /// laptop that wakes before its Wi-Fi does keeps retrying (and ends the
    /// wait on `online`) instead of giving up and ending an expired session
    /// whose refresh cookie is still good.
    pub fn attempt_failed(&mut self, err: Error, now: Stamp, random: f64, online: bool) -> Failure {
        let counted = match self.phase {
            Phase::InFlight { failures } => failures + 1,
            _ => 1,
        };
        let failures = if !online && err == Error::Network {
            counted - 1
        } else {
            counted
        };
        if !err.is_transient() {
            // The session of this version is over, not every newer one: the
            // sign-out goes out as the next version, which tabs holding this
            // session (or an older one) follow and a tab that signed in
            // meanwhile (a newer version) does not.
            self.version = self.version.saturating_add(1);
            self.phase = Phase::Idle;
            let was_signed_in = self.held.take().is_some();
            return Failure::Rejected { was_signed_in };
        }
        if failures >= self.cfg.retry.max_attempts.max(1) {
            if self.standing(now) == Standing::Expired || self.held.is_none() {
                let was_signed_in = self.sign_out(now);
                self.phase = Phase::GaveUp { last: err };
                return Failure::Expired { was_signed_in };
            }
            self.phase = Phase::GaveUp { last: err };
            return Failure::GaveUp;
        }
        let retry_after = match err {
            Error::ServerError { retry_after_ms, .. } => retry_after_ms,
            _ => None,
        };
        let delay = backoff_ms(self.cfg.retry, failures.max(1), random, retry_after);
        self.phase = Phase::Backoff {
            failures,
            since: now,
            delay,
            last: err,
        };
        Failure::Retry { in_ms: delay }
    }

    /// The lock's holder in another tab was told by the server to wait `ms`
    /// ([`super::tabsync::Message::Quiet`]): this tab waits as long, in a
    /// backoff that ends with `err`, when its own next attempt was due sooner,
    /// or (`force`) instead of the call its attempt was about to make. Its
    /// failure count is left as it is: it did not call. `true` when it waits.
    pub fn hold_off(&mut self, err: Error, ms: i64, now: Stamp, force: bool) -> bool {
        let failures = match self.phase {
            Phase::InFlight { failures } | Phase::Backoff { failures, .. } => failures,
            Phase::Idle => 0,
            _ => return false,
        };
        if !force && self.next_wake(now).is_none_or(|w| w >= ms) {
            return false;
        }
        self.phase = Phase::Backoff {
            failures,
            since: now,
            delay: ms,
            last: err,
        };
        true
    }

    /// An attempt ended without touching the session (another tab's token
    /// was adopted inside the lock, or the attempt was abandoned).
    pub fn attempt_settled(&mut self) {
        if matches!(self.phase, Phase::InFlight { .. } | Phase::Detached) {
            self.phase = Phase::Idle;
        }
    }

    /// The network came back or the user asked: forget an exhausted cycle,
    /// or the wait before the next attempt, so that the next due check starts
    /// a fresh cycle at once.
    pub fn reset_give_up(&mut self) {
        if matches!(self.phase, Phase::GaveUp { .. } | Phase::Backoff { .. }) {
            self.phase = Phase::Idle;
        }
    }

    /// What should happen at `now`: the timer, page-lifecycle events and
    /// every `getToken`/`fetch` call this.
    pub fn tick(&self, now: Stamp) -> Tick {
        let standing = self.standing(now);
        match &self.phase {
            Phase::InFlight { .. } | Phase::Detached => Tick::Idle,
            Phase::Backoff { since, delay, .. } => {
                if now.since(*since) >= *delay {
                    Tick::Refresh
                } else {
                    Tick::Idle
                }
            }
            Phase::GaveUp { .. } => {
                if standing == Standing::Expired {
                    Tick::Expire
                } else {
                    Tick::Idle
                }
            }
            Phase::Idle => match standing {
                Standing::Due | Standing::Expired => Tick::Refresh,
                _ => Tick::Idle,
            },
        }
    }

    /// Milliseconds from `now` until `tick` could answer differently, or
    /// `None` when only an outside event can change anything. The shell
    /// clamps this for `setTimeout` and re-arms after each firing.
    pub fn next_wake(&self, now: Stamp) -> Option<i64> {
        let h = self.held.as_ref();
        let age = h.map(|h| now.since(h.received));
        match &self.phase {
            Phase::InFlight { .. } | Phase::Detached => None,
            Phase::Backoff { since, delay, .. } => Some((delay - now.since(*since)).max(0)),
            Phase::GaveUp { .. } => Some((h?.usable_for? - age?).max(0)),
            Phase::Idle => {
                let due = if self.bind_pending && h.is_some() {
                    0
                } else {
                    (h?.due_after? - age?).max(0)
                };
                // Not before the storm floor lets an attempt begin: a due
                // token would otherwise re-arm a 0 ms timer until then.
                let floor = self
                    .last_attempt
                    .map_or(0, |last| MIN_ATTEMPT_GAP_MS - now.since(last));
                Some(due.max(floor))
            }
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::super::jwt::tests::jwt;
    use super::super::token::parse_token_response;
    use super::*;
    use proptest::prelude::*;

    const T0: i64 = 1_700_000_000_000;

    fn cfg() -> Config {
        Config {
            skew_ms: 30_000,
            retry: RetryPolicy::default(),
            dpop: true,
        }
    }

    fn grant(expires_in: u32) -> Grant {
        let body =
            String::from(r#"{"access_token":"tok","expires_in":"#) + &expires_in.to_string() + "}";
        parse_token_response(&body).unwrap()
    }

    fn at(ms: i64) -> Stamp {
        Stamp::at(T0 + ms)
    }

    fn signed_in(expires_in: u32) -> Session {
        let mut s = Session::new(cfg());
        s.accept(grant(expires_in), at(0)).unwrap();
        s
    }

    #[test]
    fn the_one_second_floor_counts_from_when_the_request_left() {
        let mut s = Session::new(cfg());
        let t = Stamp::at(T0);
        s.try_begin_attempt(t).unwrap();
        // The lock took 300 ms; the call left then.
        s.request_sent(Stamp::at(T0 + 300));
        s.attempt_settled();
        assert_eq!(s.try_begin_attempt(Stamp::at(T0 + 1_000)), Err(300));
        assert_eq!(s.try_begin_attempt(Stamp::at(T0 + 1_300)), Ok(()));
    }

    #[test]
    fn a_new_session_is_signed_out_and_idle() {
        let s = Session::new(cfg());
        assert_eq!(s.state(), State::SignedOut);
        assert_eq!(s.standing(at(0)), Standing::None);
        assert_eq!(s.tick(at(0)), Tick::Idle);
        assert_eq!(s.next_wake(at(0)), None);
        assert_eq!(s.expires_at(at(0)), None);
    }

    #[test]
    fn an_hour_token_is_fresh_until_thirty_seconds_before_expiry() {
        let s = signed_in(3600);
        assert_eq!(s.state(), State::Active);
        assert_eq!(s.expires_at(at(0)), Some(T0 + 3_600_000));
        assert_eq!(s.standing(at(3_569_999)), Standing::Fresh);
        assert_eq!(s.standing(at(3_570_000)), Standing::Due);
        assert_eq!(s.tick(at(3_570_000)), Tick::Refresh);
        // Not sent in its last second (expiry_margin): transit to the API.
        assert_eq!(s.standing(at(3_599_000)), Standing::Expired);
        assert_eq!(s.usable(at(3_598_999)).map(Secret::expose), Some("tok"));
        assert_eq!(
            s.usable(at(3_599_000)),
            None,
            "a token about to expire is never handed out"
        );
        assert_eq!(s.next_wake(at(1_000)), Some(3_569_000));
    }

    #[test]
    fn the_expiry_margin_is_a_tenth_of_the_lifetime_up_to_a_second() {
        assert_eq!(expiry_margin(3_000), 300);
        assert_eq!(expiry_margin(60_000), 1_000);
        assert_eq!(expiry_margin(0), 0);
        let s = signed_in(2);
        assert_eq!(s.standing(at(1_799)), Standing::Due);
        assert_eq!(s.standing(at(1_800)), Standing::Expired);
    }

    #[test]
    fn a_three_second_token_refreshes_half_way() {
        let s = signed_in(3);
        assert_eq!(s.standing(at(1_499)), Standing::Fresh);
        assert_eq!(s.standing(at(1_500)), Standing::Due);
        assert_eq!(s.next_wake(at(0)), Some(1_500));
    }

    #[test]
    fn a_thirty_day_token_schedules_one_clamped_wake_and_no_refresh() {
        let s = signed_in(30 * 86_400);
        let wake = s.next_wake(at(0)).unwrap();
        assert_eq!(wake, 30 * 86_400_000 - 30_000);
        assert!(
            wake > super::super::schedule::MAX_TIMER_MS,
            "the shell must clamp and re-arm"
        );
        assert_eq!(
            s.tick(at(super::super::schedule::MAX_TIMER_MS)),
            Tick::Idle,
            "the clamped timer firing early does nothing"
        );
        assert_eq!(s.tick(at(10_000)), Tick::Idle);
    }

    #[test]
    fn a_token_already_expired_on_arrival_is_an_invalid_response() {
        let mut s = Session::new(cfg());
        assert_eq!(
            s.accept(grant(0), at(0)).unwrap_err().code(),
            "invalid_response"
        );
        assert_eq!(s.state(), State::SignedOut);
        let exp_in_past = parse_token_response(
            &(String::from(r#"{"access_token":""#) + &jwt(r#"{"exp":1000}"#) + "\"}"),
        )
        .unwrap();
        assert!(s.accept(exp_in_past, at(0)).is_err());
    }

    #[test]
    fn a_wrong_client_clock_does_not_change_the_schedule_when_iat_is_present() {
        // Server says iat=1000, exp=1060; the client's clock is an hour off either way.
        let body =
            String::from(r#"{"access_token":""#) + &jwt(r#"{"iat":1000,"exp":1060}"#) + "\"}";
        for skew in [-3_600_000i64, 0, 3_600_000] {
            let mut s = Session::new(cfg());
            s.accept(parse_token_response(&body).unwrap(), at(skew))
                .unwrap();
            assert_eq!(s.standing(at(skew + 29_999)), Standing::Fresh);
            assert_eq!(s.standing(at(skew + 30_000)), Standing::Due);
            assert_eq!(s.expires_at(at(skew)), Some(T0 + skew + 60_000));
        }
    }

    #[test]
    fn a_clock_jumping_forward_an_hour_makes_the_token_due_once_not_forever() {
        let mut s = signed_in(60);
        let jumped = Stamp {
            wall: T0 + 3_600_000 + 5_000,
            mono: T0 + 5_000,
        };
        assert_eq!(s.standing(jumped), Standing::Expired);
        assert_eq!(s.tick(jumped), Tick::Refresh);
        s.try_begin_attempt(jumped).unwrap();
        s.accept(grant(60), jumped).unwrap();
        let later = Stamp {
            wall: jumped.wall + 10_000,
            mono: jumped.mono + 10_000,
        };
        assert_eq!(
            s.standing(later),
            Standing::Fresh,
            "the new token counts from its own arrival"
        );
    }

    #[test]
    fn a_clock_jumping_back_an_hour_still_ages_the_token_by_the_monotonic_clock() {
        let s = signed_in(60);
        let back = Stamp {
            wall: T0 - 3_600_000 + 31_000,
            mono: T0 + 31_000,
        };
        assert_eq!(s.standing(back), Standing::Due);
        let back = Stamp {
            wall: T0 - 3_600_000 + 61_000,
            mono: T0 + 61_000,
        };
        assert_eq!(s.standing(back), Standing::Expired);
    }

    #[test]
    fn a_laptop_waking_from_sleep_sees_the_token_expired() {
        let s = signed_in(300);
        let woke = Stamp {
            wall: T0 + 8 * 3_600_000,
            mono: T0 + 1_000,
        };
        assert_eq!(s.standing(woke), Standing::Expired);
        assert_eq!(s.usable(woke), None);
        assert_eq!(s.tick(woke), Tick::Refresh);
    }

    #[test]
    fn expires_at_is_stable_between_reads_and_follows_a_moved_clock() {
        let s = signed_in(60);
        let jitter = Stamp {
            wall: T0 + 10_001,
            mono: T0 + 10_000,
        };
        assert_eq!(s.expires_at(at(10_000)), Some(T0 + 60_000));
        assert_eq!(s.expires_at(jitter), Some(T0 + 60_000));
        assert_eq!(
            s.expires_at(at(90_000)),
            Some(T0 + 60_000),
            "stays in the past once expired"
        );
        // The page clock was set back an hour 10 s after arrival: 50 s are left.
        let back = Stamp {
            wall: T0 - 3_600_000 + 10_000,
            mono: T0 + 10_000,
        };
        assert_eq!(s.expires_at(back), Some(back.wall + 50_000));
    }

    #[test]
    fn tokens_without_a_known_lifetime_are_never_due() {
        let mut s = Session::new(cfg());
        s.accept(
            parse_token_response(r#"{"access_token":"opaque"}"#).unwrap(),
            at(0),
        )
        .unwrap();
        assert_eq!(s.standing(at(i64::MAX / 4)), Standing::Fresh);
        assert_eq!(s.next_wake(at(0)), None);
        assert_eq!(s.expires_at(at(0)), None);
    }

    #[test]
    fn attempts_are_at_least_one_second_apart() {
        let mut s = signed_in(3);
        s.try_begin_attempt(at(1_500)).unwrap();
        assert!(s.in_flight());
        assert_eq!(s.state(), State::Refreshing);
        s.accept(grant(3), at(1_600)).unwrap();
        assert_eq!(s.try_begin_attempt(at(2_000)), Err(500));
        assert_eq!(s.try_begin_attempt(at(2_500)), Ok(()));
    }

    #[test]
    fn network_failures_while_offline_are_not_counted_and_online_ends_the_wait() {
        // Expired (a laptop that slept), offline: ten failures, no give-up.
        let mut s = signed_in(300);
        let mut now = 8 * 3_600_000;
        for n in 0..10 {
            s.try_begin_attempt(at(now)).unwrap();
            match s.attempt_failed(Error::Network, at(now), 0.5, false) {
                Failure::Retry { in_ms } => {
                    assert_eq!(in_ms, 1_000, "attempt {n}: the first step's backoff");
                    now += in_ms;
                }
                other => panic!("attempt {n}: {other:?}"),
            }
        }
        assert!(s.is_signed_in(), "kept while the device is offline");
        // Another kind of failure while offline counts, as before.
        s.try_begin_attempt(at(now)).unwrap();
        assert!(matches!(
            s.attempt_failed(Error::Timeout, at(now), 0.5, false),
            Failure::Retry { in_ms: 1_000 }
        ));
        // `online`: the wait ends at once.
        assert_eq!(s.tick(at(now + 10)), Tick::Idle);
        s.reset_give_up();
        assert_eq!(s.tick(at(now + 10)), Tick::Refresh);
    }

    #[test]
    fn transient_failures_back_off_then_give_up_after_max_attempts() {
        let mut s = signed_in(3600);
        let mut now = 3_570_000;
        for n in 1..5 {
            s.try_begin_attempt(at(now)).unwrap();
            match s.attempt_failed(Error::Network, at(now), 0.5, true) {
                Failure::Retry { in_ms } => {
                    assert!(in_ms >= 1_000);
                    assert_eq!(s.state(), State::Refreshing);
                    assert_eq!(s.tick(at(now + in_ms - 1)), Tick::Idle);
                    assert_eq!(s.tick(at(now + in_ms)), Tick::Refresh);
                    assert_eq!(s.next_wake(at(now)), Some(in_ms));
                    assert_eq!(s.last_error(), Some(&Error::Network));
                    now += in_ms;
                }
                other => panic!("attempt {n}: {other:?}"),
            }
        }
        s.try_begin_attempt(at(now)).unwrap();
        assert_eq!(
            s.attempt_failed(Error::Timeout, at(now), 0.5, true),
            Failure::GaveUp
        );
        assert_eq!(s.state(), State::Active, "the still-valid token is kept");
        assert_eq!(
            s.tick(at(now + 1)),
            Tick::Idle,
            "no more automatic attempts"
        );
        assert_eq!(s.tick(at(3_600_000)), Tick::Expire);
        s.reset_give_up();
        assert_eq!(
            s.tick(at(now + 1)),
            Tick::Refresh,
            "coming back online starts a new cycle"
        );
    }

    #[test]
    fn giving_up_after_expiry_ends_the_session_as_expired() {
        let mut s = Session::new(Config {
            skew_ms: 30_000,
            dpop: true,
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
        });
        s.accept(grant(60), at(0)).unwrap();
        s.try_begin_attempt(at(61_000)).unwrap();
        assert_eq!(
            s.attempt_failed(Error::Network, at(61_000), 0.0, true),
            Failure::Expired {
                was_signed_in: true
            }
        );
        assert_eq!(s.state(), State::SignedOut);
    }

    #[test]
    fn retry_after_from_the_server_sets_the_next_attempt() {
        let mut s = signed_in(3600);
        s.try_begin_attempt(at(0)).unwrap();
        let f = s.attempt_failed(
            Error::ServerError {
                status: 429,
                retry_after_ms: Some(7_000),
            },
            at(0),
            0.0,
            true,
        );
        assert_eq!(f, Failure::Retry { in_ms: 7_000 });
    }

    #[test]
    fn a_rejected_refresh_ends_the_session() {
        let mut s = signed_in(60);
        s.try_begin_attempt(at(30_000)).unwrap();
        let f = s.attempt_failed(
            Error::RefreshRejected {
                status: 401,
                error: None,
            },
            at(30_000),
            0.0,
            true,
        );
        assert_eq!(
            f,
            Failure::Rejected {
                was_signed_in: true
            }
        );
        assert_eq!(s.state(), State::SignedOut);
        assert_eq!(s.tick(at(40_000)), Tick::Idle);
    }

    #[test]
    fn a_rejected_first_refresh_was_not_signed_in() {
        let mut s = Session::new(cfg());
        s.try_begin_attempt(at(0)).unwrap();
        assert_eq!(s.state(), State::Refreshing);
        let f = s.attempt_failed(
            Error::RefreshRejected {
                status: 401,
                error: None,
            },
            at(0),
            0.0,
            true,
        );
        assert_eq!(
            f,
            Failure::Rejected {
                was_signed_in: false
            }
        );
    }

    #[test]
    fn newer_tab_messages_win_and_older_ones_are_ignored() {
        let mut s = signed_in(60);
        let v = s.version();
        assert!(
            !s.adopt(grant(60), Some(60_000), 0, v, at(1)),
            "same version: ignored"
        );
        assert!(s.adopt(grant(60), Some(60_000), 10_000, v + 1, at(1)));
        assert_eq!(s.version(), v + 1);
        // Received 10 s before `at(1)`: due at 30 s of its life.
        assert_eq!(s.standing(at(20_000)), Standing::Fresh);
        assert_eq!(s.standing(at(20_001)), Standing::Due);
        assert!(
            !s.adopt(grant(60), Some(60_000), 0, v, at(2)),
            "older: ignored"
        );
        assert!(
            !s.adopt(grant(60), Some(60_000), 60_000, v + 5, at(2)),
            "expired in transit: ignored"
        );
        assert_eq!(s.remote_sign_out(v), None);
        assert_eq!(s.remote_sign_out(v + 2), Some(true));
        assert_eq!(s.state(), State::SignedOut);
    }

    #[test]
    fn versions_beyond_what_json_numbers_carry_exactly_are_ignored() {
        let mut s = signed_in(60);
        assert_eq!(s.remote_sign_out(u64::MAX), None);
        assert!(!s.adopt(grant(60), Some(60_000), 0, MAX_VERSION + 1, at(1)));
        assert!(s.adopt(grant(60), Some(60_000), 0, MAX_VERSION, at(1)));
        let v = s.version();
        s.sign_out(at(2));
        assert!(s.version() > v, "a local change still moves forward");
    }

    #[test]
    fn local_changes_always_get_a_newer_version() {
        let mut s = Session::new(cfg());
        s.accept(grant(60), at(0)).unwrap();
        let v1 = s.version();
        assert!(v1 >= T0 as u64);
        s.accept(grant(60), at(0)).unwrap();
        assert!(s.version() > v1, "same millisecond still moves forward");
        let v2 = s.version();
        s.sign_out(Stamp::at(0));
        assert!(
            s.version() > v2,
            "a clock set back cannot move the version back"
        );
    }

    proptest! {
        #[test]
        fn the_scheduler_never_produces_a_negative_wake(expires_in in 0u32..400_000_000, skew in 0i64..10_000_000, t in any::<i64>(), wall_off in -10_000_000_000i64..10_000_000_000) {
            let mut s = Session::new(Config { skew_ms: skew, retry: RetryPolicy::default(), dpop: true });
            let _ = s.accept(grant(expires_in), at(0));
            let now = Stamp { wall: t.saturating_add(wall_off), mono: t };
            if let Some(w) = s.next_wake(now) { prop_assert!(w >= 0); }
            let _ = s.tick(now);
            let _ = s.expires_at(now);
            if s.usable(now).is_some() {
                prop_assert!(s.standing(now) != Standing::Expired);
            }
        }

        #[test]
        fn a_due_token_is_still_usable_and_an_expired_one_never(expires_in in 1u32..100_000, skew in 0i64..100_000, age in 0i64..200_000_000) {
            let mut s = Session::new(Config { skew_ms: skew, retry: RetryPolicy::default(), dpop: true });
            s.accept(grant(expires_in), at(0)).unwrap();
            let now = at(age);
            let life = i64::from(expires_in) * 1000;
            let expired = age >= life - expiry_margin(life);
            prop_assert_eq!(s.usable(now).is_none(), expired);
        }
    }
}
