//! [`Tracked`]: the server's store, wrapped so that `/readyz` knows whether its writes go
//! through ([`StoreHealth`]). A store can answer `SELECT 1` while every write fails (a full
//! disk under SQLite), and a pool can hand out connections that never answer: readiness
//! that only pinged said ready while every refresh and login got 503.
//!
//! Cheap: one atomic store per write call, no query of its own. `/readyz` reads the flag and,
//! only while it is set, tries one write itself ([`crate::routes::ops::readyz`]), so that
//! readiness comes back without traffic (a balancer sends none to an instance it took out).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{
    BoundKey, Family, RefreshStore, Rotation, Standing, StoreError, StoreStats, StoredKey,
};
use crate::tokens::TokenHash;

/// Whether the store's writes go through: set when a call that may write fails (or is cut
/// off before it answers: the request timed out, or its client went away), cleared when a
/// call writes. Calls that only read, or that wrote nothing (a refused token, a replayed
/// proof, an empty purge), leave it as it is: a full disk still answers those.
#[derive(Debug, Default)]
pub struct StoreHealth {
    writes_failing: AtomicBool,
}

impl StoreHealth {
    /// The most recent write failed (or was cut off) and none has gone through since.
    pub fn writes_failing(&self) -> bool {
        self.writes_failing.load(Ordering::Relaxed)
    }

    fn failed(&self) {
        if !self.writes_failing.swap(true, Ordering::Relaxed) {
            tracing::warn!("a store write failed: not ready until one goes through");
        }
    }

    fn wrote(&self) {
        if self.writes_failing.swap(false, Ordering::Relaxed) {
            tracing::info!("store writes go through again");
        }
    }
}

/// A write in flight: failed if dropped before [`Self::settle`] (cut off).
struct Pending<'a>(Option<&'a StoreHealth>);

impl Pending<'_> {
    fn settle<T>(mut self, result: &Result<T, StoreError>, wrote: impl FnOnce(&T) -> bool) {
        if let Some(health) = self.0.take() {
            match result {
                Ok(v) if wrote(v) => health.wrote(),
                Ok(_) => {}
                Err(_) => health.failed(),
            }
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(health) = self.0 {
            health.failed();
        }
    }
}

/// `inner`, with the outcome of every call that may write noted in a [`StoreHealth`]. Every
/// method forwards to `inner` (those with a default body too: a method added to
/// [`RefreshStore`] must be forwarded here).
pub struct Tracked {
    inner: Arc<dyn RefreshStore>,
    health: Arc<StoreHealth>,
}

impl Tracked {
    /// `inner`, noting its writes in `health`.
    pub fn new(inner: Arc<dyn RefreshStore>, health: Arc<StoreHealth>) -> Self {
        Self { inner, health }
    }

    async fn write<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
        wrote: impl FnOnce(&T) -> bool,
    ) -> Result<T, StoreError> {
        let pending = Pending(Some(&self.health));
        let result = call.await;
        pending.settle(&result, wrote);
        result
    }
}

#[async_trait::async_trait]
impl RefreshStore for Tracked {
    async fn create_family(
        &self,
        family: &Family,
        token: &TokenHash,
        max_live: usize,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.write(
            self.inner.create_family(family, token, max_live, now_ms),
            |_| true,
        )
        .await
    }
    async fn rotate(
        &self,
        token: &TokenHash,
        next: &TokenHash,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Rotation, StoreError> {
        self.write(self.inner.rotate(token, next, now_ms, window_ms), |r| {
            matches!(r, Rotation::Rotated(_) | Rotation::Reused { .. })
        })
        .await
    }
    async fn standing(
        &self,
        token: &TokenHash,
        next: &TokenHash,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Standing, StoreError> {
        self.inner.standing(token, next, now_ms, window_ms).await
    }
    async fn revoke_family_of(
        &self,
        token: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        self.write(self.inner.revoke_family_of(token, now_ms), Option::is_some)
            .await
    }
    async fn revoked_since(&self, since_ms: i64) -> Result<Vec<String>, StoreError> {
        self.inner.revoked_since(since_ms).await
    }
    async fn purge(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.write(self.inner.purge(before_ms), |n| *n > 0).await
    }
    async fn key_of(&self, token: &TokenHash) -> Result<Option<BoundKey>, StoreError> {
        self.inner.key_of(token).await
    }
    async fn bind_key(&self, family_id: &str, jkt: &str, now_ms: i64) -> Result<(), StoreError> {
        self.write(self.inner.bind_key(family_id, jkt, now_ms), |_| true)
            .await
    }
    async fn first_use_of_proof(
        &self,
        proof: &[u8; 32],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.write(
            self.inner.first_use_of_proof(proof, expires_at_ms, now_ms),
            |first| *first,
        )
        .await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn stats(&self, now_ms: i64) -> Result<StoreStats, StoreError> {
        self.inner.stats(now_ms).await
    }
    async fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        // Writes once ever; a failure counts, an answer (mostly a read) does not.
        self.write(self.inner.shared_secret(name, candidate), |_| false)
            .await
    }
    fn shares_login_limits(&self) -> bool {
        self.inner.shares_login_limits()
    }
    async fn login_locked(&self, keys: &[String], now_ms: i64) -> Result<i64, StoreError> {
        self.inner.login_locked(keys, now_ms).await
    }
    async fn login_failed(
        &self,
        keys: &[(String, u32)],
        refill_ms: i64,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        let shared = self.inner.shares_login_limits();
        self.write(self.inner.login_failed(keys, refill_ms, now_ms), |_| shared)
            .await
    }
    async fn signing_keys(&self) -> Result<Option<Vec<StoredKey>>, StoreError> {
        self.inner.signing_keys().await
    }
    async fn add_signing_key(&self, key: &StoredKey, keep: usize) -> Result<(), StoreError> {
        self.write(self.inner.add_signing_key(key, keep), |_| true)
            .await
    }
    async fn add_first_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        // Mostly a no-op (a key is there already): a failure counts, an answer does not.
        self.write(self.inner.add_first_signing_key(key), |_| false)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Failing, Flaky, MemoryStore};

    fn family(id: &str) -> Family {
        Family {
            id: id.into(),
            sub: "u".into(),
            expires_at_ms: 10_000,
        }
    }

    #[tokio::test]
    async fn a_failed_write_sets_the_flag_a_read_leaves_it_and_a_write_clears_it() {
        let flaky = Arc::new(Flaky::new(Arc::new(MemoryStore::new())));
        let health = Arc::new(StoreHealth::default());
        let store = Tracked::new(flaky.clone(), health.clone());
        store
            .create_family(&family("a"), &[1; 32], 10, 0)
            .await
            .unwrap();
        assert!(!health.writes_failing());

        flaky.fail(Failing::Writes);
        assert!(store.rotate(&[1; 32], &[2; 32], 1, 0).await.is_err());
        assert!(health.writes_failing());
        store.ping().await.unwrap();
        store.key_of(&[1; 32]).await.unwrap();
        assert!(health.writes_failing(), "reads answer on a full disk");

        flaky.fail(Failing::No);
        // Answered without writing: a refused token, a replayed proof, an empty purge.
        store.rotate(&[9; 32], &[8; 32], 1, 0).await.unwrap();
        store.purge(0).await.unwrap();
        assert!(health.writes_failing(), "nothing was written");
        store.rotate(&[1; 32], &[2; 32], 1, 0).await.unwrap();
        assert!(!health.writes_failing(), "a rotation went through");
    }

    /// A write cut off before it answers (its request timed out) counts as failed.
    #[tokio::test]
    async fn a_write_cut_off_before_it_answers_counts_as_failed() {
        let flaky = Arc::new(Flaky::new(Arc::new(MemoryStore::new())));
        let health = Arc::new(StoreHealth::default());
        let store = Tracked::new(flaky.clone(), health.clone());
        flaky.fail(Failing::Hang);
        let fam = family("a");
        let call = store.create_family(&fam, &[1; 32], 10, 0);
        let cut_off = tokio::time::timeout(std::time::Duration::from_millis(20), call).await;
        assert!(cut_off.is_err());
        assert!(health.writes_failing());
    }
}
