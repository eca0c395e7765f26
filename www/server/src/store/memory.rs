//! [`MemoryStore`]: refresh-token families in a `HashMap` behind one mutex (lost on restart).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use super::{Family, RefreshStore, Rejection, Rotation, StoreError, StoreStats};
use crate::tokens::TokenHash;

#[derive(Debug)]
struct FamilyRow {
    sub: String,
    expires_at_ms: i64,
    revoked_at_ms: Option<i64>,
    tokens: Vec<TokenHash>,
}

impl FamilyRow {
    fn live(&self, now_ms: i64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms > now_ms
    }
}

#[derive(Debug)]
struct TokenRow {
    family_id: String,
    live: bool,
    retired_at_ms: i64,
}

#[derive(Debug, Default)]
struct Tables {
    families: HashMap<String, FamilyRow>,
    tokens: HashMap<TokenHash, TokenRow>,
    /// Family ids of each user, oldest first (may hold ids of ended or purged families).
    by_sub: HashMap<String, VecDeque<String>>,
    secrets: HashMap<String, Vec<u8>>,
}

/// An in-memory store (lost on restart).
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<Tables>);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Tables>, StoreError> {
        self.0
            .lock()
            .map_err(|_| StoreError("memory store mutex poisoned".into()))
    }
}

#[async_trait::async_trait]
impl RefreshStore for MemoryStore {
    async fn create_family(
        &self,
        family: &Family,
        token: &TokenHash,
        max_live: usize,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut guard = self.lock()?;
        let t = &mut *guard;
        t.families.insert(
            family.id.clone(),
            FamilyRow {
                sub: family.sub.clone(),
                expires_at_ms: family.expires_at_ms,
                revoked_at_ms: None,
                tokens: vec![*token],
            },
        );
        t.tokens.insert(
            *token,
            TokenRow {
                family_id: family.id.clone(),
                live: true,
                retired_at_ms: 0,
            },
        );
        let ids = t.by_sub.entry(family.sub.clone()).or_default();
        ids.push_back(family.id.clone());
        let families = &mut t.families;
        ids.retain(|id| families.get(id).is_some_and(|f| f.live(now_ms)));
        let mut revoked = Vec::new();
        while ids.len() > max_live {
            let Some(id) = ids.pop_front() else { break };
            if let Some(f) = families.get_mut(&id) {
                f.revoked_at_ms = Some(now_ms);
            }
            revoked.push(id);
        }
        Ok(revoked)
    }

    async fn rotate(
        &self,
        token: &TokenHash,
        next: &TokenHash,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Rotation, StoreError> {
        let mut guard = self.lock()?;
        let t = &mut *guard;
        let successor_live = t
            .tokens
            .get(next)
            .filter(|n| n.live)
            .map(|n| n.family_id.clone());
        let Some(row) = t.tokens.get_mut(token) else {
            return Ok(Rotation::Rejected(Rejection::Unknown));
        };
        let Some(fam) = t.families.get_mut(&row.family_id) else {
            return Ok(Rotation::Rejected(Rejection::Unknown));
        };
        if fam.revoked_at_ms.is_some() {
            return Ok(Rotation::Rejected(Rejection::Revoked));
        }
        if fam.expires_at_ms <= now_ms {
            return Ok(Rotation::Rejected(Rejection::Expired));
        }
        let family_id = row.family_id.clone();
        let family = Family {
            id: family_id.clone(),
            sub: fam.sub.clone(),
            expires_at_ms: fam.expires_at_ms,
        };
        if !row.live {
            let in_window = window_ms > 0 && now_ms - row.retired_at_ms < window_ms;
            if in_window && successor_live.as_deref() == Some(family_id.as_str()) {
                return Ok(Rotation::Repeated(family));
            }
            fam.revoked_at_ms = Some(now_ms);
            return Ok(Rotation::Reused { family_id });
        }
        row.live = false;
        row.retired_at_ms = now_ms;
        fam.tokens.push(*next);
        t.tokens.insert(
            *next,
            TokenRow {
                family_id,
                live: true,
                retired_at_ms: 0,
            },
        );
        Ok(Rotation::Rotated(family))
    }

    async fn revoke_family_of(
        &self,
        token: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let mut guard = self.lock()?;
        let t = &mut *guard;
        let Some(row) = t.tokens.get(token) else {
            return Ok(None);
        };
        match t.families.get_mut(&row.family_id) {
            Some(fam) if fam.revoked_at_ms.is_none() => {
                fam.revoked_at_ms = Some(now_ms);
                Ok(Some(row.family_id.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn revoked_since(&self, since_ms: i64) -> Result<Vec<String>, StoreError> {
        let t = self.lock()?;
        Ok(t.families
            .iter()
            .filter(|(_, f)| f.revoked_at_ms.is_some_and(|r| r >= since_ms))
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn purge(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut guard = self.lock()?;
        let t = &mut *guard;
        let ended: Vec<String> = t
            .families
            .iter()
            .filter(|(_, f)| {
                f.expires_at_ms < before_ms || f.revoked_at_ms.is_some_and(|r| r < before_ms)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ended {
            if let Some(f) = t.families.remove(id) {
                for hash in &f.tokens {
                    t.tokens.remove(hash);
                }
            }
        }
        let families = &t.families;
        t.by_sub.retain(|_, ids| {
            ids.retain(|id| families.contains_key(id));
            !ids.is_empty()
        });
        Ok(ended.len() as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.lock().map(|_| ())
    }

    async fn stats(&self, now_ms: i64) -> Result<StoreStats, StoreError> {
        let t = self.lock()?;
        let mut stats = StoreStats::default();
        for fam in t.families.values().filter(|f| f.live(now_ms)) {
            stats.live_families += 1;
            let live_tokens = fam
                .tokens
                .iter()
                .filter(|h| t.tokens.get(*h).is_some_and(|r| r.live))
                .count();
            if live_tokens == 1 {
                stats.families_with_one_live_token += 1;
            }
        }
        Ok(stats)
    }

    async fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut t = self.lock()?;
        Ok(t.secrets
            .entry(name.to_string())
            .or_insert_with(|| candidate.to_vec())
            .clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_keeps_the_store_contract() {
        super::super::contract::run_all(MemoryStore::new).await;
    }
}
