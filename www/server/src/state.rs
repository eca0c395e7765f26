//! Shared server state: keys, store, clock, lifetimes, metrics, the login limiter and the
//! revoked families. Test mode keeps its own state in [`crate::testing`].

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use crate::clock::Clock;
use crate::config::Config;
use crate::keys::KeySet;
use crate::limiter::{LoginLimiter, LoginLimits};
use crate::metrics::Metrics;
use crate::revoked::{NotedEnds, RevokedFamilies};
use crate::store::{RefreshStore, StoreHealth, Tracked};
use crate::tokens::Validation;
use crate::upstream::Upstream;

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
    /// Live families per user.
    pub max_families_per_user: usize,
    /// Origins besides the request's own host that may call the cookie endpoints.
    pub allowed_origins: Vec<String>,
    /// The lost-response window in ms (0 = off).
    pub lost_response_window_ms: i64,
    /// With shared keys: how often they are reloaded.
    pub key_reload: Duration,
    /// DPoP rules.
    pub dpop: DpopSettings,
    /// How long one store call may take ([`Config::store_call_timeout`]); `/readyz` waits
    /// no longer for the store.
    pub store_call_timeout: Duration,
}

/// How the server treats DPoP proofs.
#[derive(Debug, Clone, Copy)]
pub struct DpopSettings {
    /// Every refresh and every /api/me call needs a proof.
    pub required: bool,
    /// Proofs must carry the current (or previous) server nonce.
    pub nonce: bool,
    /// Nonce lifetime, ms.
    pub nonce_lifetime_ms: i64,
    /// Oldest accepted `iat`, seconds before now.
    pub max_age_s: i64,
}

/// What the server's DPoP nonces are derived from ([`crate::tokens::dpop_nonce`]): the
/// nonce of window `w` (`now / --dpop-nonce-lifetime`) is handed out during it and accepted
/// during `w - 1 ..= w + 1`, so a nonce lives one to two lifetimes. Instances that share
/// `key` through the store ([`crate::shared::init_nonce_key`]) agree on every nonce, so a
/// round-robin proxy can send the next request to another instance; the window one ahead
/// covers an instance whose clock is a little ahead. A nonce drawn per instance made each
/// instance refuse the others' with `use_dpop_nonce`.
#[derive(Debug, Clone)]
struct Nonces {
    key: [u8; 32],
    /// Changed (per instance) only by test mode's "change the nonce now".
    salt: u64,
}

/// The state behind [`AppState`].
pub struct Inner {
    /// Fixed settings.
    pub settings: Settings,
    tunables: RwLock<Tunables>,
    /// The longest access-token lifetime + leeway ever configured, in ms.
    max_token_life_ms: AtomicI64,
    /// Signing and verification keys.
    pub keys: RwLock<KeySet>,
    /// Refresh-token families ([`Tracked`]: every write's outcome noted in `store_health`).
    pub store: Arc<dyn RefreshStore>,
    /// Whether the store's writes go through (for `/readyz`).
    pub store_health: Arc<StoreHealth>,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// Counters and histograms.
    pub metrics: Metrics,
    /// Failed-login throttling.
    pub login_limiter: LoginLimiter,
    /// Families whose access tokens are refused.
    pub revoked: RevokedFamilies,
    /// Logouts the store failed to record, ended later by maintenance.
    pub noted_ends: NotedEnds,
    /// HMAC key deriving a refresh token's successor from it (shared through the store).
    pub successor_key: tokio::sync::OnceCell<[u8; 32]>,
    /// Whether the signing keys come from the store (shared by every instance).
    pub shared_keys: std::sync::atomic::AtomicBool,
    /// Upstream mode: the OpenID Provider client, set once at start when an issuer is
    /// configured ([`crate::upstream::start`]); unset in the built-in mode.
    pub upstream: OnceLock<Arc<Upstream>>,
    nonces: RwLock<Nonces>,
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

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
    key
}

fn token_life_ms(t: &Tunables) -> i64 {
    ((t.access_ttl_s + t.leeway_s.max(0) as f64) * 1000.0).ceil() as i64 + 1000
}

impl AppState {
    /// Assemble the state from a configuration and its parts.
    pub fn new(
        config: &Config,
        keys: KeySet,
        store: Arc<dyn RefreshStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let tunables = Tunables {
            access_ttl_s: config.access_ttl_s,
            family_lifetime_s: config.family_lifetime_s,
            leeway_s: config.leeway_s,
        };
        let store_health = Arc::new(StoreHealth::default());
        Self(Arc::new(Inner {
            settings: Settings {
                test_mode: config.test_mode,
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                www_dir: config.www_dir.clone(),
                pkg_dir: config.pkg_dir.clone(),
                max_families_per_user: config.max_families_per_user as usize,
                allowed_origins: config
                    .allowed_origins
                    .iter()
                    .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                    .collect(),
                lost_response_window_ms: (config.lost_response_window_s * 1000.0).round() as i64,
                key_reload: Duration::from_secs_f64(config.key_reload_s),
                dpop: DpopSettings {
                    required: config.dpop_required,
                    nonce: config.dpop_nonce,
                    nonce_lifetime_ms: (config.dpop_nonce_lifetime_s * 1000.0).ceil() as i64,
                    max_age_s: config.dpop_max_age_s,
                },
                store_call_timeout: config.store_call_timeout(),
            },
            max_token_life_ms: AtomicI64::new(token_life_ms(&tunables)),
            tunables: RwLock::new(tunables),
            keys: RwLock::new(keys),
            store: Arc::new(Tracked::new(store, store_health.clone())),
            store_health,
            clock: clock.clone(),
            metrics: Metrics::default(),
            login_limiter: LoginLimiter::new(LoginLimits {
                account_burst: config.login_account_burst,
                address_burst: config.login_address_burst,
                sign_in_start_burst: config.sign_in_start_burst,
                refill: Duration::from_secs_f64(config.login_refill_s),
            }),
            revoked: RevokedFamilies::default(),
            noted_ends: NotedEnds::default(),
            successor_key: tokio::sync::OnceCell::new(),
            shared_keys: std::sync::atomic::AtomicBool::new(false),
            upstream: OnceLock::new(),
            nonces: RwLock::new(Nonces {
                // This instance's own until the shared one is loaded.
                key: random_key(),
                salt: 0,
            }),
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
        let mut t = self
            .tunables
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut t);
        self.max_token_life_ms
            .fetch_max(token_life_ms(&t), Ordering::Relaxed);
    }

    /// Upstream mode: an access token living `lifetime_ms` (the provider's) was handed out;
    /// [`AppState::max_token_life_ms`] covers it from now on (it only ever grows).
    pub fn note_token_life(&self, lifetime_ms: i64) {
        let leeway_ms = self.tunables().leeway_s.max(0).saturating_mul(1000);
        let life = lifetime_ms.saturating_add(leeway_ms).saturating_add(1000);
        self.max_token_life_ms.fetch_max(life, Ordering::Relaxed);
    }

    /// How long after now an access token issued up to now can still be accepted (ms).
    pub fn max_token_life_ms(&self) -> i64 {
        self.max_token_life_ms.load(Ordering::Relaxed)
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

    /// Refuse the access tokens of `family_id` from now until they have all expired.
    pub fn refuse_tokens_of(&self, family_id: &str) {
        self.revoked
            .revoke(family_id, self.now_ms() + self.max_token_life_ms());
    }

    /// The DPoP nonces of the windows `offsets` away from now's, when nonces are on.
    fn dpop_nonces_at<const N: usize>(&self, offsets: [i64; N]) -> Option<[String; N]> {
        if !self.settings.dpop.nonce {
            return None;
        }
        let n = self.nonces.read().unwrap_or_else(PoisonError::into_inner);
        let w = self
            .now_ms()
            .div_euclid(self.settings.dpop.nonce_lifetime_ms.max(1));
        Some(offsets.map(|o| crate::tokens::dpop_nonce(&n.key, n.salt, w + o)))
    }

    /// The DPoP nonces accepted now (the one to hand out first), when nonces are on.
    pub fn dpop_nonces(&self) -> Option<Vec<String>> {
        self.dpop_nonces_at([0, -1, 1]).map(Vec::from)
    }

    /// The nonce to hand out in `DPoP-Nonce`, when nonces are on (the first of
    /// [`AppState::dpop_nonces`], alone: it goes on every answer).
    pub fn dpop_nonce(&self) -> Option<String> {
        self.dpop_nonces_at([0]).map(|[n]| n)
    }

    /// Derive the DPoP nonces from `key` (the one every instance shares).
    pub fn set_dpop_nonce_key(&self, key: [u8; 32]) {
        self.nonces
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .key = key;
    }

    /// Replace the DPoP nonce at once, forgetting the old ones (test mode: a nonce changed
    /// mid-session). On this instance only.
    pub fn change_dpop_nonce(&self) {
        let mut n = self.nonces.write().unwrap_or_else(PoisonError::into_inner);
        n.salt = rand_core::RngCore::next_u64(&mut rand_core::OsRng).max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_sharing_the_nonce_key_agree_across_a_window_edge_and_a_little_clock_skew() {
        let config = crate::Config {
            dpop_nonce: true,
            ..crate::Config::default()
        };
        // 300 s windows; a's clock is 2 s behind b's, at the edge of a window.
        let edge = 1_800_000_000_000 + 300_000;
        let state = |at: i64| {
            let s = AppState::new(
                &config,
                KeySet::generate(),
                Arc::new(crate::store::MemoryStore::new()),
                Arc::new(crate::clock::ManualClock::new(at)),
            );
            s.set_dpop_nonce_key([7; 32]);
            s
        };
        let (a, b) = (state(edge - 1_000), state(edge + 1_000));
        let (na, nb) = (a.dpop_nonce().unwrap(), b.dpop_nonce().unwrap());
        assert_ne!(na, nb, "a is still in the window before");
        assert!(a.dpop_nonces().unwrap().contains(&nb), "b's is a's next");
        assert!(
            b.dpop_nonces().unwrap().contains(&na),
            "a's is b's previous"
        );
        // A test-mode change forgets every nonce of that instance.
        b.change_dpop_nonce();
        assert!(!b
            .dpop_nonces()
            .unwrap()
            .iter()
            .any(|n| *n == na || *n == nb));
        // Nonces off: none.
        let off = AppState::new(
            &crate::Config::default(),
            KeySet::generate(),
            Arc::new(crate::store::MemoryStore::new()),
            Arc::new(crate::clock::ManualClock::new(edge)),
        );
        assert_eq!(off.dpop_nonces(), None);
    }

    #[test]
    fn a_longer_provider_token_lifetime_extends_the_token_life_and_a_shorter_one_does_not() {
        let state = AppState::new(
            &crate::Config::default(),
            KeySet::generate(),
            Arc::new(crate::store::MemoryStore::new()),
            Arc::new(crate::clock::ManualClock::new(1_800_000_000_000)),
        );
        // 60 s access tokens + 5 s leeway + 1 s.
        assert_eq!(state.max_token_life_ms(), 66_000);
        state.note_token_life(300_000);
        assert_eq!(state.max_token_life_ms(), 306_000);
        state.note_token_life(8_000);
        assert_eq!(state.max_token_life_ms(), 306_000, "it only grows");
    }
}
