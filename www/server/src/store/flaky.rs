//! [`Flaky`]: a [`RefreshStore`] that fails on demand, for tests of how the server behaves
//! while its store fails — the database down ([`Failing::All`]), a full disk, where reads
//! still work and every write fails ([`Failing::Writes`]), or a host that never answers
//! ([`Failing::Hang`]). The server itself never uses it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use super::{
    BoundKey, Family, RefreshStore, Rotation, Standing, StoreError, StoreStats, StoredKey,
};
use crate::tokens::TokenHash;

/// Which calls of a [`Flaky`] store fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Failing {
    /// None: every call goes to the inner store.
    No = 0,
    /// The calls that may write (a full disk): reads still answer.
    Writes = 1,
    /// Every call (the database down).
    All = 2,
    /// Every call waits, never answering (a black-holed database host).
    Hang = 3,
}

/// A store wrapper whose calls fail while told to ([`Flaky::fail`]); otherwise the inner
/// store answers. A failed call does not reach the inner store.
pub struct Flaky {
    inner: Arc<dyn RefreshStore>,
    failing: AtomicU8,
}

impl Flaky {
    /// Around `inner`, not failing.
    pub fn new(inner: Arc<dyn RefreshStore>) -> Self {
        Self {
            inner,
            failing: AtomicU8::new(Failing::No as u8),
        }
    }

    /// Fail these calls from now on.
    pub fn fail(&self, failing: Failing) {
        self.failing.store(failing as u8, Ordering::SeqCst);
    }

    async fn check(&self, write: bool) -> Result<(), StoreError> {
        match self.failing.load(Ordering::SeqCst) {
            f if f == Failing::Hang as u8 => std::future::pending().await,
            f if f == Failing::All as u8 => Err(StoreError("injected: the store is down".into())),
            f if f == Failing::Writes as u8 && write => {
                Err(StoreError("injected: database or disk is full".into()))
            }
            _ => Ok(()),
        }
    }

    async fn read(&self) -> Result<(), StoreError> {
        self.check(false).await
    }

    async fn write(&self) -> Result<(), StoreError> {
        self.check(true).await
    }
}

#[async_trait::async_trait]
impl RefreshStore for Flaky {
    async fn create_family(
        &self,
        family: &Family,
        token: &TokenHash,
        max_live: usize,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.write().await?;
        self.inner
            .create_family(family, token, max_live, now_ms)
            .await
    }
    async fn rotate(
        &self,
        token: &TokenHash,
        next: &TokenHash,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Rotation, StoreError> {
        self.write().await?;
        self.inner.rotate(token, next, now_ms, window_ms).await
    }
    async fn standing(
        &self,
        token: &TokenHash,
        next: &TokenHash,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Standing, StoreError> {
        self.read().await?;
        self.inner.standing(token, next, now_ms, window_ms).await
    }
    async fn revoke_family_of(
        &self,
        token: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        self.write().await?;
        self.inner.revoke_family_of(token, now_ms).await
    }
    async fn revoked_since(&self, since_ms: i64) -> Result<Vec<String>, StoreError> {
        self.read().await?;
        self.inner.revoked_since(since_ms).await
    }
    async fn purge(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.write().await?;
        self.inner.purge(before_ms).await
    }
    async fn key_of(&self, token: &TokenHash) -> Result<Option<BoundKey>, StoreError> {
        self.read().await?;
        self.inner.key_of(token).await
    }
    async fn bind_key(&self, family_id: &str, jkt: &str, now_ms: i64) -> Result<(), StoreError> {
        self.write().await?;
        self.inner.bind_key(family_id, jkt, now_ms).await
    }
    async fn first_use_of_proof(
        &self,
        proof: &[u8; 32],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.write().await?;
        self.inner
            .first_use_of_proof(proof, expires_at_ms, now_ms)
            .await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.read().await?;
        self.inner.ping().await
    }
    async fn stats(&self, now_ms: i64) -> Result<StoreStats, StoreError> {
        self.read().await?;
        self.inner.stats(now_ms).await
    }
    async fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        // A write only the first time; a read of the stored secret afterwards.
        self.read().await?;
        self.inner.shared_secret(name, candidate).await
    }
    fn shares_login_limits(&self) -> bool {
        self.inner.shares_login_limits()
    }
    async fn login_locked(&self, keys: &[String], now_ms: i64) -> Result<i64, StoreError> {
        self.read().await?;
        self.inner.login_locked(keys, now_ms).await
    }
    async fn login_failed(
        &self,
        keys: &[(String, u32)],
        refill_ms: i64,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        self.write().await?;
        self.inner.login_failed(keys, refill_ms, now_ms).await
    }
    async fn signing_keys(&self) -> Result<Option<Vec<StoredKey>>, StoreError> {
        self.read().await?;
        self.inner.signing_keys().await
    }
    async fn add_signing_key(&self, key: &StoredKey, keep: usize) -> Result<(), StoreError> {
        self.write().await?;
        self.inner.add_signing_key(key, keep).await
    }
    async fn add_first_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.write().await?;
        self.inner.add_first_signing_key(key).await
    }
}
