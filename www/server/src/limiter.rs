//! Login throttling: failed logins are counted per account and per client address with
//! `governor` (GCRA). When either runs out, that account or address is locked until the
//! next attempt is allowed, and every login for it (right password or not) gets 429 with
//! `Retry-After` without the password being checked. Successful logins cost nothing, so
//! many legitimate logins from one address (a NAT, the load test) are never throttled.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// How many bytes of a username are used as a key.
const MAX_ACCOUNT_KEY: usize = 64;

/// What a limit is counted for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

type Keyed = RateLimiter<Key, DefaultKeyedStateStore<Key>, DefaultClock>;

/// The limiter's parameters.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Failed logins an account may have in a burst.
    pub account_burst: u32,
    /// Failed logins a client address may have in a burst.
    pub address_burst: u32,
    /// Upstream sign-ins a client address may start in a burst (0: no limit).
    pub sign_in_start_burst: u32,
    /// One more failure is allowed after this long.
    pub refill: Duration,
}

/// One more sign-in start is allowed after this long (upstream mode, `GET /auth/login`;
/// the burst is `--sign-in-start-burst`).
pub const SIGN_IN_START_REFILL: Duration = Duration::from_secs(1);

/// Failed-login counting and lockout, per account and per client address.
#[derive(Debug)]
pub struct LoginLimiter {
    limits: LoginLimits,
    accounts: Keyed,
    addresses: Keyed,
    /// Upstream sign-in starts per address: each one stores a pending login for 10 minutes.
    starts: Keyed,
    clock: DefaultClock,
    locked: Mutex<HashMap<Key, Instant>>,
}

fn account_key(username: &str) -> Key {
    let mut end = username.len().min(MAX_ACCOUNT_KEY);
    while !username.is_char_boundary(end) {
        end -= 1;
    }
    Key::Account(username[..end].to_lowercase())
}

/// IPv6 clients usually own a whole /64; count them as one address.
fn address_key(addr: IpAddr) -> Key {
    match addr {
        IpAddr::V4(_) => Key::Address(addr),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Key::Address(IpAddr::V4(v4)),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                Key::Address(IpAddr::V6(segments.into()))
            }
        },
    }
}

fn quota(burst: u32, refill: Duration) -> Quota {
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(refill)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl LoginLimiter {
    /// A limiter with `limits`.
    pub fn new(limits: LoginLimits) -> Self {
        let clock = DefaultClock::default();
        Self {
            limits,
            accounts: RateLimiter::new(
                quota(limits.account_burst, limits.refill),
                DefaultKeyedStateStore::default(),
                clock.clone(),
            ),
            addresses: RateLimiter::new(
                quota(limits.address_burst, limits.refill),
                DefaultKeyedStateStore::default(),
                clock.clone(),
            ),
            starts: RateLimiter::new(
                quota(limits.sign_in_start_burst, SIGN_IN_START_REFILL),
                DefaultKeyedStateStore::default(),
                clock.clone(),
            ),
            clock,
            locked: Mutex::new(HashMap::new()),
        }
    }

    /// The limiter's parameters.
    pub fn limits(&self) -> LoginLimits {
        self.limits
    }

    /// The keys a login is counted under, as text, each with its burst (for limits kept
    /// in a shared store): `account:NAME` (lowercased, at most 64 bytes) and
    /// `address:IP` (IPv6 by /64).
    pub fn shared_keys(&self, username: &str, addr: Option<IpAddr>) -> Vec<(String, u32)> {
        Self::keys(username, addr)
            .map(|k| match k {
                Key::Account(name) => (format!("account:{name}"), self.limits.account_burst),
                Key::Address(ip) => (format!("address:{ip}"), self.limits.address_burst),
            })
            .collect()
    }

    fn keys(username: &str, addr: Option<IpAddr>) -> impl Iterator<Item = Key> {
        std::iter::once(account_key(username)).chain(addr.map(address_key))
    }

    /// Before the password is checked: `Err(wait)` while the account or the address is locked.
    pub fn check(&self, username: &str, addr: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let locked = self.locked.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = Self::keys(username, addr)
            .filter_map(|k| {
                locked
                    .get(&k)
                    .map(|until| until.saturating_duration_since(now))
            })
            .max()
            .filter(|w| !w.is_zero());
        match wait {
            Some(w) => Err(w),
            None => Ok(()),
        }
    }

    /// After wrong credentials: count the failure. `Err(wait)` if this failure used up a
    /// budget (the account or address is now locked for `wait`).
    pub fn failed(&self, username: &str, addr: Option<IpAddr>) -> Result<(), Duration> {
        let mut wait = Duration::ZERO;
        let mut lock = Vec::new();
        for key in Self::keys(username, addr) {
            let limiter = match key {
                Key::Account(_) => &self.accounts,
                Key::Address(_) => &self.addresses,
            };
            if let Err(not_until) = limiter.check_key(&key) {
                let w = not_until.wait_time_from(self.clock.now());
                wait = wait.max(w);
                lock.push((key, w));
            }
        }
        if lock.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut locked = self.locked.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, w) in lock {
            locked.insert(key, now + w);
        }
        Err(wait)
    }

    /// An upstream sign-in start from `addr`: `Err(wait)` when the address has started its
    /// burst (each start stores a pending login for 10 minutes, so an unlimited client could
    /// fill the store). Per instance: a person never gets near it.
    pub fn sign_in_started(&self, addr: Option<IpAddr>) -> Result<(), Duration> {
        let Some(addr) = addr.filter(|_| self.limits.sign_in_start_burst > 0) else {
            return Ok(());
        };
        self.starts
            .check_key(&address_key(addr))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forget keys that have fully recovered (call now and then).
    pub fn forget_idle(&self) {
        self.accounts.retain_recent();
        self.addresses.retain_recent();
        self.starts.retain_recent();
        let now = Instant::now();
        self.locked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn sign_in_starts_are_limited_per_address_not_per_server() {
        let limits = LoginLimits {
            account_burst: 10,
            address_burst: 30,
            sign_in_start_burst: 60,
            refill: Duration::from_secs(6),
        };
        let l = LoginLimiter::new(limits);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        for _ in 0..60 {
            assert!(l.sign_in_started(a).is_ok());
        }
        let wait = l.sign_in_started(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= SIGN_IN_START_REFILL,
            "{wait:?}"
        );
        assert!(l.sign_in_started(Some(IpAddr::from([10, 0, 0, 2]))).is_ok());
        assert!(
            l.sign_in_started(None).is_ok(),
            "no address: not limited here"
        );
        assert!(
            l.check("anyone", a).is_ok(),
            "password logins are not touched"
        );
        let off = LoginLimiter::new(LoginLimits {
            sign_in_start_burst: 0,
            ..limits
        });
        for _ in 0..1000 {
            assert!(off.sign_in_started(a).is_ok(), "0: no limit");
        }
    }

    use super::*;

    fn limiter(account_burst: u32, address_burst: u32) -> LoginLimiter {
        LoginLimiter::new(LoginLimits {
            account_burst,
            address_burst,
            sign_in_start_burst: 60,
            refill: Duration::from_secs(60),
        })
    }

    #[test]
    fn an_account_is_locked_after_its_burst_of_failures_whatever_the_address() {
        let l = limiter(3, 100);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(l.check("Demo", Some(a)).is_ok());
            assert!(l.failed("Demo", Some(a)).is_ok());
        }
        let wait = l.failed("demo", Some(b)).unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
        assert!(
            l.check("DEMO", Some(b)).is_err(),
            "case does not escape the lock"
        );
        assert!(l.check("other", Some(b)).is_ok());
    }

    #[test]
    fn an_address_is_locked_after_its_burst_of_failures_whatever_the_account() {
        let l = limiter(100, 3);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        for i in 0..3 {
            assert!(l.failed(&format!("user{i}"), Some(a)).is_ok());
        }
        let neighbour: IpAddr = "2001:db8::ffff".parse().unwrap();
        assert!(l.failed("user9", Some(neighbour)).is_err(), "same /64");
        assert!(l.check("fresh", Some(a)).is_err());
        assert!(l.check("fresh", Some([10, 0, 0, 1].into())).is_ok());
    }

    #[test]
    fn forgetting_idle_keys_keeps_the_live_locks() {
        let l = limiter(1, 100);
        l.failed("x", None).unwrap();
        assert!(l.failed("x", None).is_err());
        l.forget_idle();
        assert!(l.check("x", None).is_err());
    }
}
