//! [`MemoryStore`]: refresh-token families in a `HashMap` behind one mutex (lost on restart).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use super::{
    standing_of, BoundKey, Family, QueuedRevocation, RefreshStore, Rejection, Rotation, Standing,
    StoreError, StoreStats, UpstreamStore, MAX_REMEMBERED_PROOFS,
};
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
    /// Upstream mode: pending logins (sealed, expiry).
    pending: HashMap<TokenHash, (Vec<u8>, i64)>,
    /// Upstream mode: sealed grants (sealed, the family's end).
    grants: HashMap<String, (Vec<u8>, i64)>,
    /// Upstream mode: leases (holder, until).
    leases: HashMap<String, (String, i64)>,
    /// Upstream mode: hashes of the access tokens handed out (family, expiry).
    access_tokens: HashMap<TokenHash, (String, i64)>,
    /// Upstream mode: the provider session of each family (sub, sid, the family's end).
    sessions: HashMap<String, (String, Option<String>, i64)>,
    /// Upstream mode: families whose access tokens are refused (when each ended).
    ended: HashMap<String, i64>,
    /// Upstream mode: grants to revoke at the provider, by row id.
    revocations: HashMap<i64, QueuedRow>,
    /// The id of the last revocation queued.
    last_revocation_id: i64,
    /// DPoP key of each bound family: (thumbprint, last use).
    keys: HashMap<String, (String, i64)>,
    /// Remembered DPoP proof ids and when each may be forgotten.
    proofs: HashMap<[u8; 32], i64>,
}

/// A queued revocation: the family, its sealed grant, attempts, next due, when queued.
type QueuedRow = (String, Vec<u8>, u32, i64, i64);

impl Tables {
    /// Upstream mode: the family's end is recorded, or the family is revoked
    /// ([`RefreshStore`]'s side; see [`UpstreamStore::family_ended`]).
    fn has_ended(&self, family_id: &str) -> bool {
        self.ended.contains_key(family_id)
            || self
                .families
                .get(family_id)
                .is_some_and(|f| f.revoked_at_ms.is_some())
    }

    fn queue(&mut self, family_id: String, sealed: Vec<u8>, next_at_ms: i64) -> QueuedRevocation {
        self.last_revocation_id += 1;
        let id = self.last_revocation_id;
        self.revocations.insert(
            id,
            (family_id.clone(), sealed.clone(), 0, next_at_ms, next_at_ms),
        );
        QueuedRevocation {
            id,
            family_id,
            sealed,
            attempts: 0,
        }
    }
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
            let in_window = super::within_window(now_ms - row.retired_at_ms, window_ms);
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

    async fn standing(
        &self,
        token: &TokenHash,
        next: &TokenHash,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Standing, StoreError> {
        let t = self.lock()?;
        let Some(row) = t.tokens.get(token) else {
            return Ok(Standing::Rejected(Rejection::Unknown));
        };
        let Some(fam) = t.families.get(&row.family_id) else {
            return Ok(Standing::Rejected(Rejection::Unknown));
        };
        let successor_live = t
            .tokens
            .get(next)
            .is_some_and(|n| n.live && n.family_id == row.family_id);
        Ok(standing_of(
            fam.revoked_at_ms.is_some(),
            fam.expires_at_ms,
            (!row.live).then_some(row.retired_at_ms),
            successor_live,
            now_ms,
            window_ms,
        ))
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
            t.keys.remove(id);
            if let Some(f) = t.families.remove(id) {
                for hash in &f.tokens {
                    t.tokens.remove(hash);
                }
            }
        }
        t.proofs.retain(|_, until| *until > before_ms);
        let families = &t.families;
        t.by_sub.retain(|_, ids| {
            ids.retain(|id| families.contains_key(id));
            !ids.is_empty()
        });
        Ok(ended.len() as u64)
    }

    async fn key_of(&self, token: &TokenHash) -> Result<Option<BoundKey>, StoreError> {
        let t = self.lock()?;
        let Some(row) = t.tokens.get(token) else {
            return Ok(None);
        };
        Ok(t.keys.get(&row.family_id).map(|(jkt, used)| BoundKey {
            family_id: row.family_id.clone(),
            jkt: jkt.clone(),
            used_at_ms: *used,
        }))
    }

    async fn bind_key(&self, family_id: &str, jkt: &str, now_ms: i64) -> Result<(), StoreError> {
        let mut t = self.lock()?;
        t.keys
            .insert(family_id.to_string(), (jkt.to_string(), now_ms));
        Ok(())
    }

    async fn first_use_of_proof(
        &self,
        proof: &[u8; 32],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut t = self.lock()?;
        if let Some(until) = t.proofs.get(proof) {
            if *until > now_ms {
                return Ok(false);
            }
        }
        if t.proofs.len() >= MAX_REMEMBERED_PROOFS {
            t.proofs.retain(|_, until| *until > now_ms);
            if t.proofs.len() >= MAX_REMEMBERED_PROOFS {
                return Err(StoreError("DPoP replay cache full".into()));
            }
        }
        t.proofs.insert(*proof, expires_at_ms);
        Ok(true)
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

#[async_trait::async_trait]
impl UpstreamStore for MemoryStore {
    async fn put_pending(
        &self,
        key: &TokenHash,
        sealed: &[u8],
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.lock()?
            .pending
            .insert(*key, (sealed.to_vec(), expires_at_ms));
        Ok(())
    }

    async fn take_pending(
        &self,
        key: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .lock()?
            .pending
            .remove(key)
            .filter(|(_, exp)| *exp > now_ms)
            .map(|(v, _)| v))
    }

    async fn put_grant(
        &self,
        family_id: &str,
        sealed: &[u8],
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.lock()?
            .grants
            .insert(family_id.to_string(), (sealed.to_vec(), expires_at_ms));
        Ok(())
    }

    async fn grant(&self, family_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock()?.grants.get(family_id).map(|(v, _)| v.clone()))
    }

    async fn delete_grant(&self, family_id: &str) -> Result<(), StoreError> {
        let mut t = self.lock()?;
        t.grants.remove(family_id);
        t.leases.remove(family_id);
        Ok(())
    }

    async fn try_lease(
        &self,
        family_id: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut t = self.lock()?;
        match t.leases.get(family_id) {
            Some((h, until)) if h != holder && *until > now_ms => Ok(false),
            _ => {
                t.leases.insert(
                    family_id.to_string(),
                    (holder.to_string(), now_ms.saturating_add(ttl_ms)),
                );
                Ok(true)
            }
        }
    }

    async fn release_lease(&self, family_id: &str, holder: &str) -> Result<(), StoreError> {
        let mut t = self.lock()?;
        if t.leases.get(family_id).is_some_and(|(h, _)| h == holder) {
            t.leases.remove(family_id);
        }
        Ok(())
    }

    async fn note_access_token(
        &self,
        family_id: &str,
        hash: &TokenHash,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.lock()?
            .access_tokens
            .entry(*hash)
            .or_insert_with(|| (family_id.to_string(), expires_at_ms));
        Ok(())
    }

    async fn end_access_tokens(&self, family_id: &str, now_ms: i64) -> Result<(), StoreError> {
        self.lock()?
            .ended
            .entry(family_id.to_string())
            .or_insert(now_ms);
        Ok(())
    }

    async fn access_token_ended(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let t = self.lock()?;
        Ok(t.access_tokens
            .get(hash)
            .is_some_and(|(family, _)| t.has_ended(family)))
    }

    async fn family_ended(&self, family_id: &str) -> Result<bool, StoreError> {
        Ok(self.lock()?.has_ended(family_id))
    }

    async fn queue_revocation(
        &self,
        family_id: &str,
        next_at_ms: i64,
    ) -> Result<Option<QueuedRevocation>, StoreError> {
        let mut t = self.lock()?;
        let Some((sealed, _)) = t.grants.remove(family_id) else {
            return Ok(None);
        };
        Ok(Some(t.queue(family_id.to_string(), sealed, next_at_ms)))
    }

    async fn queue_ended_grants(&self, next_at_ms: i64, limit: usize) -> Result<u64, StoreError> {
        let mut t = self.lock()?;
        let mut ended: Vec<String> = t
            .grants
            .keys()
            .filter(|family_id| t.has_ended(family_id))
            .cloned()
            .collect();
        ended.sort_unstable();
        ended.truncate(limit);
        for family_id in &ended {
            if let Some((sealed, _)) = t.grants.remove(family_id) {
                t.queue(family_id.clone(), sealed, next_at_ms);
            }
        }
        Ok(ended.len() as u64)
    }

    async fn claim_revocations(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<QueuedRevocation>, StoreError> {
        let mut t = self.lock()?;
        let mut due: Vec<(i64, i64)> = t
            .revocations
            .iter()
            .filter(|(_, (_, _, _, next, _))| *next <= now_ms)
            .map(|(id, (_, _, _, next, _))| (*next, *id))
            .collect();
        due.sort();
        due.truncate(limit);
        let mut claimed = Vec::with_capacity(due.len());
        for (_, id) in due {
            if let Some((family_id, sealed, attempts, next, _)) = t.revocations.get_mut(&id) {
                *next = now_ms.saturating_add(lease_ms);
                claimed.push(QueuedRevocation {
                    id,
                    family_id: family_id.clone(),
                    sealed: sealed.clone(),
                    attempts: *attempts,
                });
            }
        }
        Ok(claimed)
    }

    async fn retry_revocation(
        &self,
        id: i64,
        attempts: u32,
        next_at_ms: i64,
    ) -> Result<(), StoreError> {
        if let Some(row) = self.lock()?.revocations.get_mut(&id) {
            row.2 = attempts;
            row.3 = next_at_ms;
        }
        Ok(())
    }

    async fn drop_revocation(&self, id: i64) -> Result<(), StoreError> {
        self.lock()?.revocations.remove(&id);
        Ok(())
    }

    async fn give_up_revocations(&self, queued_before_ms: i64) -> Result<u64, StoreError> {
        let mut t = self.lock()?;
        let before = t.revocations.len();
        t.revocations
            .retain(|_, (_, _, _, _, queued_at)| *queued_at >= queued_before_ms);
        Ok((before - t.revocations.len()) as u64)
    }

    async fn note_session(
        &self,
        family_id: &str,
        sub: &str,
        sid: Option<&str>,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.lock()?.sessions.insert(
            family_id.to_string(),
            (sub.to_string(), sid.map(str::to_string), expires_at_ms),
        );
        Ok(())
    }

    async fn sessions_of(
        &self,
        sub: Option<&str>,
        sid: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        if sub.is_none() && sid.is_none() {
            return Ok(Vec::new());
        }
        let t = self.lock()?;
        let mut ids: Vec<String> = t
            .sessions
            .iter()
            .filter(|(_, (s, i, _))| {
                sub.is_none_or(|sub| sub == s) && sid.is_none_or(|sid| i.as_deref() == Some(sid))
            })
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort_unstable();
        ids.truncate(super::MAX_SESSIONS_OF);
        Ok(ids)
    }

    async fn purge_upstream(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut t = self.lock()?;
        let count = |t: &Tables| {
            t.pending.len()
                + t.grants.len()
                + t.leases.len()
                + t.access_tokens.len()
                + t.ended.len()
                + t.sessions.len()
        };
        let before = count(&t);
        let expired: Vec<String> = t
            .grants
            .iter()
            .filter(|(_, (_, exp))| *exp < before_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some((sealed, _)) = t.grants.remove(&id) {
                t.queue(id, sealed, before_ms);
            }
        }
        t.pending.retain(|_, (_, exp)| *exp >= before_ms);
        t.leases.retain(|_, (_, until)| *until >= before_ms);
        t.sessions.retain(|_, (_, _, until)| *until >= before_ms);
        t.access_tokens.retain(|_, (_, exp)| *exp >= before_ms);
        let noted: std::collections::HashSet<String> =
            t.access_tokens.values().map(|(f, _)| f.clone()).collect();
        t.ended
            .retain(|family, at| *at >= before_ms || noted.contains(family));
        Ok((before - count(&t)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_keeps_the_store_contract() {
        super::super::contract::run_all(MemoryStore::new).await;
    }

    #[tokio::test]
    async fn the_memory_store_keeps_the_upstream_contract() {
        let store = MemoryStore::new();
        super::super::contract::upstream_run_all(&store, &store).await;
    }
}
