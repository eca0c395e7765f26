//! Refresh-token families behind one async trait, [`RefreshStore`]: [`MemoryStore`] for tests
//! and [`SqliteStore`] (the default) for a server that survives restarts. [`contract`] holds
//! the behaviour every implementation must show, as functions any implementation's tests call.
//!
//! Every operation that reads and then writes is atomic (one mutex / one transaction), so
//! two concurrent refreshes of the same token cannot both win.

pub mod contract;
mod memory;
mod sqlite;

use std::fmt;

pub use memory::MemoryStore;
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

/// The DPoP key a family is bound to (RFC 9449): its RFC 7638 thumbprint, and when a token
/// bound to it was last issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundKey {
    /// The family.
    pub family_id: String,
    /// The key's thumbprint (`cnf.jkt` of the family's access tokens).
    pub jkt: String,
    /// Epoch ms of the last token issued for this key.
    pub used_at_ms: i64,
}

/// At most this many proof ids are remembered at once by a store that keeps them in memory;
/// beyond it (every entry still inside its window) proofs are refused, never forgotten early.
pub const MAX_REMEMBERED_PROOFS: usize = 1_000_000;

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
    async fn rotate(
        &self,
        token: &TokenHash,
        next: &TokenHash,
        now_ms: i64,
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
    /// The DPoP key of the family `token` belongs to (live or retired token), if it is bound.
    async fn key_of(&self, token: &TokenHash) -> Result<Option<BoundKey>, StoreError>;
    /// Bind `family_id` to the key `jkt` (replacing any other) and record that a token for it
    /// was issued at `now_ms`.
    async fn bind_key(&self, family_id: &str, jkt: &str, now_ms: i64) -> Result<(), StoreError>;
    /// Remember a DPoP proof id (a hash of key and `jti`) until `expires_at_ms`. `true` the
    /// first time, `false` when it is already remembered (a replay). Entries past their
    /// expiry are forgotten; the cache is bounded, and a full cache fails closed (an error).
    async fn first_use_of_proof(
        &self,
        proof: &[u8; 32],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Counts for diagnostics.
    async fn stats(&self, now_ms: i64) -> Result<StoreStats, StoreError>;
}
