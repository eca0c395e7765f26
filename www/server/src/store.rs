//! Refresh-token families behind a small trait: [`MemoryStore`] for tests, and
//! [`crate::sqlite::SqliteStore`] (the default) for a server that survives restarts.
//!
//! Every operation that reads and then writes is atomic (one mutex / one transaction), so
//! two concurrent refreshes of the same token cannot both win.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use crate::tokens::TokenHash;

/// A token family: all refresh tokens descending from one login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// Random id (not secret, appears in logs).
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
    /// The family was revoked (logout or earlier reuse).
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

/// A storage failure; its text is logged, never sent to clients.
#[derive(Debug)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refresh store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// Where refresh-token families live. Implementations store token hashes only.
pub trait RefreshStore: Send + Sync + 'static {
    /// Start a family whose first live token is `token`.
    fn create_family(
        &self,
        family: &Family,
        token: &TokenHash,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Present `token`; if it is live, retire it and make `next` live in its family.
    fn rotate(
        &self,
        token: &TokenHash,
        next: &TokenHash,
        now_ms: i64,
    ) -> Result<Rotation, StoreError>;
    /// Revoke the family `token` belongs to (live or retired). `Some(id)` if it was newly revoked.
    fn revoke_family_of(
        &self,
        token: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError>;
    /// Counts for diagnostics.
    fn stats(&self, now_ms: i64) -> Result<StoreStats, StoreError>;
}

#[derive(Debug)]
struct FamilyRow {
    sub: String,
    expires_at_ms: i64,
    revoked: bool,
}

#[derive(Debug)]
struct TokenRow {
    family_id: String,
    live: bool,
}

#[derive(Debug, Default)]
struct Tables {
    families: HashMap<String, FamilyRow>,
    tokens: HashMap<TokenHash, TokenRow>,
}

/// An in-memory store (lost on restart).
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<Tables>);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Tables>, StoreError> {
        self.0
            .lock()
            .map_err(|_| StoreError("memory store mutex poisoned".into()))
    }
}

impl RefreshStore for MemoryStore {
    fn create_family(
        &self,
        family: &Family,
        token: &TokenHash,
        _now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut t = self.lock()?;
        t.families.insert(
            family.id.clone(),
            FamilyRow {
                sub: family.sub.clone(),
                expires_at_ms: family.expires_at_ms,
                revoked: false,
            },
        );
        t.tokens.insert(
            *token,
            TokenRow {
                family_id: family.id.clone(),
                live: true,
            },
        );
        Ok(())
    }

    fn rotate(
        &self,
        token: &TokenHash,
        next: &TokenHash,
        now_ms: i64,
    ) -> Result<Rotation, StoreError> {
        let mut guard = self.lock()?;
        let t = &mut *guard;
        let Some(row) = t.tokens.get(token) else {
            return Ok(Rotation::Rejected(Rejection::Unknown));
        };
        let family_id = row.family_id.clone();
        let live = row.live;
        let Some(fam) = t.families.get_mut(&family_id) else {
            return Ok(Rotation::Rejected(Rejection::Unknown));
        };
        if fam.revoked {
            return Ok(Rotation::Rejected(Rejection::Revoked));
        }
        if fam.expires_at_ms <= now_ms {
            return Ok(Rotation::Rejected(Rejection::Expired));
        }
        if !live {
            fam.revoked = true;
            return Ok(Rotation::Reused { family_id });
        }
        let family = Family {
            id: family_id.clone(),
            sub: fam.sub.clone(),
            expires_at_ms: fam.expires_at_ms,
        };
        if let Some(row) = t.tokens.get_mut(token) {
            row.live = false;
        }
        t.tokens.insert(
            *next,
            TokenRow {
                family_id,
                live: true,
            },
        );
        Ok(Rotation::Rotated(family))
    }

    fn revoke_family_of(
        &self,
        token: &TokenHash,
        _now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let mut guard = self.lock()?;
        let t = &mut *guard;
        let Some(row) = t.tokens.get(token) else {
            return Ok(None);
        };
        match t.families.get_mut(&row.family_id) {
            Some(fam) if !fam.revoked => {
                fam.revoked = true;
                Ok(Some(row.family_id.clone()))
            }
            _ => Ok(None),
        }
    }

    fn stats(&self, now_ms: i64) -> Result<StoreStats, StoreError> {
        let t = self.lock()?;
        let mut live_tokens: HashMap<&str, u64> = HashMap::new();
        for row in t.tokens.values().filter(|r| r.live) {
            *live_tokens.entry(row.family_id.as_str()).or_default() += 1;
        }
        let mut stats = StoreStats::default();
        for (id, fam) in &t.families {
            if !fam.revoked && fam.expires_at_ms > now_ms {
                stats.live_families += 1;
                if live_tokens.get(id.as_str()) == Some(&1) {
                    stats.families_with_one_live_token += 1;
                }
            }
        }
        Ok(stats)
    }
}

/// Behaviour every store must show; run against each implementation.
#[cfg(test)]
pub(crate) fn check_store_contract(store: &dyn RefreshStore) {
    use crate::tokens::hash_refresh_token as h;
    let fam = Family {
        id: "f1".into(),
        sub: "demo".into(),
        expires_at_ms: 10_000,
    };
    store.create_family(&fam, &h("a"), 0).unwrap();
    assert_eq!(
        store.stats(0).unwrap(),
        StoreStats {
            live_families: 1,
            families_with_one_live_token: 1
        }
    );
    assert_eq!(
        store.rotate(&h("a"), &h("b"), 1).unwrap(),
        Rotation::Rotated(fam.clone())
    );
    assert_eq!(
        store.rotate(&h("zz"), &h("c"), 1).unwrap(),
        Rotation::Rejected(Rejection::Unknown)
    );
    assert_eq!(store.stats(1).unwrap().families_with_one_live_token, 1);
    assert_eq!(
        store.rotate(&h("a"), &h("c"), 2).unwrap(),
        Rotation::Reused {
            family_id: "f1".into()
        }
    );
    assert_eq!(
        store.rotate(&h("b"), &h("d"), 3).unwrap(),
        Rotation::Rejected(Rejection::Revoked)
    );
    assert_eq!(store.stats(3).unwrap().live_families, 0);

    let fam2 = Family {
        id: "f2".into(),
        sub: "demo".into(),
        expires_at_ms: 10_000,
    };
    store.create_family(&fam2, &h("x"), 0).unwrap();
    assert_eq!(
        store.rotate(&h("x"), &h("y"), 10_000).unwrap(),
        Rotation::Rejected(Rejection::Expired)
    );
    assert_eq!(
        store.revoke_family_of(&h("x"), 5).unwrap(),
        Some("f2".into())
    );
    assert_eq!(store.revoke_family_of(&h("x"), 5).unwrap(), None);
    assert_eq!(store.revoke_family_of(&h("nope"), 5).unwrap(), None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_store_rotates_detects_reuse_and_expires_families() {
        check_store_contract(&MemoryStore::new());
    }
}
