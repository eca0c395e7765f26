//! Refresh-token families behind one async trait, [`RefreshStore`]: [`MemoryStore`] for tests,
//! [`SqliteStore`] (the default) for one server that survives restarts, and [`PgStore`]
//! (`DATABASE_URL`) for several instances on one PostgreSQL. [`contract`] holds the behaviour
//! every implementation must show, as functions any implementation's tests call.
//!
//! Every operation that reads and then writes is atomic (one mutex / one transaction / one
//! row-locking SQL function), so two concurrent refreshes of the same token cannot both win,
//! whichever instances they reach.

pub mod contract;
mod memory;
mod postgres;
#[cfg(test)]
pub(crate) use postgres::tests as postgres_tests;
mod sqlite;

use std::fmt;

pub use memory::MemoryStore;
pub use postgres::{PgStore, MIGRATIONS};
pub use sqlite::{SqliteStore, DB_FILE};

use crate::tokens::TokenHash;

/// A token family: all refresh tokens descending from one login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// Random id (not secret, appears in logs and as the access token's `sid`).
    pub id: String,
    /// The user.
    pub sub: String,
    /// Absolute end of the family (epoch ms); rotation never extends it.
    pub expires_at_ms: i64,
}

/// Why a refresh token was refused without being reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Never issued (or already purged).
    Unknown,
    /// The family outlived its absolute lifetime.
    Expired,
    /// The family was revoked (logout, earlier reuse or the per-user cap).
    Revoked,
}

/// Outcome of presenting a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live: it is now retired and the new one is live in the same family.
    Rotated(Family),
    /// The lost-response rule: the token was retired less than the window ago and `next`,
    /// the successor it was rotated to, has never been used. Nothing changed; the caller
    /// hands out the same successor again.
    Repeated(Family),
    /// The token had already been used: the family has just been revoked.
    Reused {
        /// The revoked family's id.
        family_id: String,
    },
    /// Refused.
    Rejected(Rejection),
}

/// Counts for the test-mode counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Families neither revoked nor expired.
    pub live_families: u64,
    /// Live families that hold exactly one live token (should equal `live_families`).
    pub families_with_one_live_token: u64,
}

/// A storage failure; its text is logged, never sent to clients.
#[derive(Debug)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refresh store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// Where refresh-token families live. Implementations store token hashes only, and must not
/// block the async workers (a blocking driver runs its calls on a blocking thread).
#[async_trait::async_trait]
pub trait RefreshStore: Send + Sync + 'static {
    /// Start a family whose first live token is `token`. If `family.sub` then has more than
    /// `max_live` live families, the oldest are revoked; their ids are returned.
    async fn create_family(
        &self,
        family: &Family,
        token: &TokenHash,
        max_live: usize,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// Present `token`; if it is live, retire it and make `next` live in its family.
    ///
    /// If it was retired less than `window_ms` ago (0 = never) and `next` is a live token
    /// of its family, answer [`Rotation::Repeated`] and change nothing. The caller derives
    /// `next` from `token` (a keyed hash), so a live `next` is the very successor `token`
    /// was rotated to. Any other presentation of a retired token is reuse.
    async fn rotate(
        &self,
        token: &TokenHash,
        next: &TokenHash,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Rotation, StoreError>;
    /// Revoke the family `token` belongs to (live or retired). `Some(id)` if it was newly revoked.
    async fn revoke_family_of(
        &self,
        token: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError>;
    /// Ids of the families revoked at or after `since_ms` (to refuse their access tokens
    /// after a restart).
    async fn revoked_since(&self, since_ms: i64) -> Result<Vec<String>, StoreError>;
    /// Delete families that ended (expired, or revoked) before `before_ms`, with their
    /// tokens. Returns how many families were deleted.
    async fn purge(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Counts for diagnostics.
    async fn stats(&self, now_ms: i64) -> Result<StoreStats, StoreError>;
    /// The secret called `name`, the same for every server on this store: the first call
    /// stores `candidate`, later calls (from any instance) return what was stored.
    async fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// Whether failed logins are counted in the store (shared by every instance) instead
    /// of in each process ([`crate::limiter::LoginLimiter`]).
    fn shares_login_limits(&self) -> bool {
        false
    }
    /// With shared login limits: ms until a login for any of `keys` is allowed (0 = now).
    async fn login_locked(&self, keys: &[String], now_ms: i64) -> Result<i64, StoreError> {
        let _ = (keys, now_ms);
        Ok(0)
    }
    /// With shared login limits: count one failed login for each `(key, burst)` (one more
    /// allowed every `refill_ms`); the ms the first exhausted key is now locked for, or 0.
    async fn login_failed(
        &self,
        keys: &[(String, u32)],
        refill_ms: i64,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        let _ = (keys, refill_ms, now_ms);
        Ok(0)
    }
    /// Signing keys shared by every instance on this store, or `None` if this store keeps
    /// none (each process then has its own keys).
    async fn signing_keys(&self) -> Result<Option<Vec<StoredKey>>, StoreError> {
        Ok(None)
    }
    /// Add a shared signing key (ignored if its `kid` is already there). Keeps the newest
    /// `keep` keys by `not_before_ms`. Stores without shared keys refuse.
    async fn add_signing_key(&self, key: &StoredKey, keep: usize) -> Result<(), StoreError> {
        let _ = (key, keep);
        Err(StoreError("this store keeps no signing keys".into()))
    }
    /// Add `key` only if no signing key is stored yet (the first instance to start).
    async fn add_first_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let _ = key;
        Err(StoreError("this store keeps no signing keys".into()))
    }
}

/// A signing key kept in the store. The private key is in the database: whoever can read
/// the database can sign tokens (as whoever can read a key file can).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// PKCS#8 PEM of the private key.
    pub pem: String,
    /// Epoch ms from which instances sign with it (published before that).
    pub not_before_ms: i64,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("not_before_ms", &self.not_before_ms)
            .finish_non_exhaustive()
    }
}
