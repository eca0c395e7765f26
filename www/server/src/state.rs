//! Shared server state: keys, store, clock, tunable lifetimes and test-mode bookkeeping.

use std::collections::VecDeque;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::Serialize;

use crate::clock::Clock;
use crate::config::Config;
use crate::keys::KeySet;
use crate::store::{RefreshStore, StoreStats};
use crate::testing::Fault;
use crate::tokens::Validation;

/// How many requests `GET /test/log` remembers.
pub const REQUEST_LOG_CAPACITY: usize = 2000;

/// Lifetimes that test mode may change at run time.
#[derive(Debug, Clone, Copy)]
pub struct Tunables {
    /// Access-token lifetime (seconds, may be fractional).
    pub access_ttl_s: f64,
    /// Absolute family lifetime for new logins (seconds).
    pub family_lifetime_s: f64,
    /// `exp`/`nbf` leeway (seconds).
    pub leeway_s: i64,
}

/// Fixed settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `/test/*` exists.
    pub test_mode: bool,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// Served at `/`.
    pub www_dir: PathBuf,
    /// Served at `/pkg/`.
    pub pkg_dir: PathBuf,
}

macro_rules! counters {
    ($($field:ident => $json:literal),* $(,)?) => {
        /// Event counters (always kept; exposed by `GET /test/counters`).
        #[derive(Debug, Default)]
        pub struct Counters { $(#[doc = $json] pub $field: AtomicU64,)* }

        /// A JSON snapshot of [`Counters`] plus store statistics.
        #[derive(Debug, Clone, Serialize)]
        pub struct CountersSnapshot {
            $(#[doc = $json] #[serde(rename = $json)] pub $field: u64,)*
            /// Families neither revoked nor expired.
            #[serde(rename = "liveFamilies")]
            pub live_families: u64,
            /// Live families with exactly one live refresh token.
            #[serde(rename = "familiesWithOneLiveToken")]
            pub families_with_one_live_token: u64,
        }

        impl Counters {
            /// Read all counters.
            pub fn snapshot(&self, stats: StoreStats) -> CountersSnapshot {
                CountersSnapshot {
                    $($field: self.$field.load(Ordering::Relaxed),)*
                    live_families: stats.live_families,
                    families_with_one_live_token: stats.families_with_one_live_token,
                }
            }

            /// Zero all counters.
            pub fn reset(&self) {
                $(self.$field.store(0, Ordering::Relaxed);)*
            }
        }
    };
}

counters! {
    refreshes_served => "refreshesServed",
    refresh_requests => "refreshRequests",
    refresh_rejected => "refreshRejected",
    reuse_detected => "reuseDetected",
    families_revoked => "familiesRevoked",
    logins_served => "loginsServed",
    logouts => "logouts",
    api_calls => "apiCalls",
    api_ok => "apiOk",
    api_unauthorized => "apiUnauthorized",
    api_expired_tokens => "apiExpiredTokens",
    api_no_token => "apiNoToken",
    csrf_missing => "csrfMissing",
}

/// Add one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// How the `Authorization` header of a logged request looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BearerKind {
    /// No Bearer token.
    None,
    /// A token that `/api/me` would accept.
    Valid,
    /// Correctly signed but expired.
    Expired,
    /// Anything else.
    Invalid,
}

/// One entry of `GET /test/log`. Never holds a token or cookie value.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    /// Epoch ms when the request arrived.
    pub t: i64,
    /// HTTP method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// Authorization header classification.
    pub bearer: BearerKind,
    /// `X-Requested-With` present.
    pub csrf: bool,
    /// Refresh cookie present.
    pub cookie: bool,
}

/// The state behind [`AppState`].
pub struct Inner {
    /// Fixed settings.
    pub settings: Settings,
    /// Run-time lifetimes.
    pub tunables: RwLock<Tunables>,
    /// Signing and verification keys.
    pub keys: RwLock<KeySet>,
    /// Refresh-token families.
    pub store: Box<dyn RefreshStore>,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// Event counters.
    pub counters: Counters,
    /// Test mode: faults for the next refreshes (FIFO).
    pub faults: Mutex<VecDeque<Fault>>,
    /// Test mode: recent requests.
    pub request_log: Mutex<VecDeque<LogEntry>>,
    /// Upstream mode (issue #11): set once at start when an issuer is configured.
    pub upstream: std::sync::OnceLock<Arc<crate::upstream::Upstream>>,
}

/// Cheaply clonable handle on the server state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Assemble the state from a configuration and its parts.
    pub fn new(
        config: &Config,
        keys: KeySet,
        store: Box<dyn RefreshStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self(Arc::new(Inner {
            settings: Settings {
                test_mode: config.test_mode,
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                www_dir: config.www_dir.clone(),
                pkg_dir: config.pkg_dir.clone(),
            },
            tunables: RwLock::new(Tunables {
                access_ttl_s: config.access_ttl_s,
                family_lifetime_s: config.family_lifetime_s,
                leeway_s: config.leeway_s,
            }),
            keys: RwLock::new(keys),
            store,
            clock,
            counters: Counters::default(),
            faults: Mutex::new(VecDeque::new()),
            request_log: Mutex::new(VecDeque::new()),
            upstream: std::sync::OnceLock::new(),
        }))
    }

    /// Current epoch ms.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Current lifetimes.
    pub fn tunables(&self) -> Tunables {
        *self.tunables.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Change lifetimes.
    pub fn update_tunables(&self, f: impl FnOnce(&mut Tunables)) {
        f(&mut self
            .tunables
            .write()
            .unwrap_or_else(PoisonError::into_inner));
    }

    /// Run `f` with the key set.
    pub fn with_keys<R>(&self, f: impl FnOnce(&KeySet) -> R) -> R {
        f(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// New signing key; old keys keep verifying.
    pub fn rotate_signing_key(&self) {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        keys.rotate();
        tracing::info!(kid = %keys.current_kid(), "signing key rotated");
    }

    /// The rules `/api/me` applies.
    pub fn validation(&self) -> Validation {
        Validation {
            issuer: self.settings.issuer.clone(),
            audience: self.settings.audience.clone(),
            leeway_s: self.tunables().leeway_s,
        }
    }

    /// Take the next queued fault, if any.
    pub fn pop_fault(&self) -> Option<Fault> {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    /// Remember a request for `GET /test/log`.
    pub fn record_request(&self, entry: LogEntry) {
        let mut log = self
            .request_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if log.len() == REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(entry);
    }
}
