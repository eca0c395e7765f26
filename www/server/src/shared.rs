//! What several instances on one store share, beyond the refresh-token families:
//!
//! - the **successor key**, an HMAC key from which a refresh token's successor is derived
//!   ([`crate::tokens::successor`]), stored once in the store by the first instance;
//! - the **signing keys** (PostgreSQL only): every instance signs with the newest key whose
//!   `not_before` has passed and publishes all of them. A rotation stores a new key with
//!   `not_before` two reload intervals ahead, so every instance publishes and verifies it
//!   before any instance signs with it; the old key keeps verifying until it is one of more
//!   than [`KEEP_KEYS`] keys;
//! - the **revoked families** (PostgreSQL): read every `--revocation-sync` seconds, so a
//!   family revoked on one instance has its access tokens refused on all.

use std::sync::PoisonError;
use std::time::Duration;

use p256::ecdsa::SigningKey;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};
use rand_core::{OsRng, RngCore as _};

use crate::error::AppError;
use crate::keys::KeySet;
use crate::state::AppState;
use crate::store::{StoreError, StoredKey};

/// Name of the successor key in the store.
pub const SUCCESSOR_SECRET: &str = "refresh-successor-v1";

/// Name of the DPoP nonce key in the store.
pub const NONCE_SECRET: &str = "dpop-nonce-v1";

/// Shared signing keys kept in the store (the newest by `not_before`).
pub const KEEP_KEYS: usize = crate::keys::MAX_PREVIOUS_KEYS + 2;

/// The successor key, read from (or first stored into) the store once per process.
pub async fn successor_key(state: &AppState) -> Result<&[u8; 32], AppError> {
    let key = state
        .successor_key
        .get_or_try_init(|| async {
            let mut candidate = [0u8; 32];
            OsRng.fill_bytes(&mut candidate);
            let stored = state
                .store
                .shared_secret(SUCCESSOR_SECRET, &candidate)
                .await?;
            <[u8; 32]>::try_from(stored.as_slice())
                .map_err(|_| StoreError("the stored successor key is not 32 bytes".into()))
        })
        .await?;
    Ok(key)
}

/// With `--dpop-nonce`: derive the DPoP nonces from the key in the store (the first
/// instance stores it), so that every instance on the store hands out and accepts the same
/// nonces ([`AppState::dpop_nonces`]). With SQLite the nonce also outlives a restart.
pub async fn init_nonce_key(state: &AppState) -> Result<(), AppError> {
    if !state.settings.dpop.nonce {
        return Ok(());
    }
    let mut candidate = [0u8; 32];
    OsRng.fill_bytes(&mut candidate);
    let stored = state.store.shared_secret(NONCE_SECRET, &candidate).await?;
    let key = <[u8; 32]>::try_from(stored.as_slice())
        .map_err(|_| StoreError("the stored DPoP nonce key is not 32 bytes".into()))?;
    state.set_dpop_nonce_key(key);
    Ok(())
}

fn stored_key(key: &SigningKey, not_before_ms: i64) -> Result<StoredKey, StoreError> {
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| StoreError(format!("cannot encode a signing key: {e}")))?;
    Ok(StoredKey {
        kid: KeySet::kid_of_key(key),
        pem: pem.to_string(),
        not_before_ms,
    })
}

/// The key set an instance uses at `now_ms`: it signs with the newest key whose
/// `not_before` has passed (the oldest if none has) and verifies all of them.
pub fn key_set(stored: &[StoredKey], now_ms: i64) -> Result<KeySet, StoreError> {
    let mut keys: Vec<(i64, SigningKey)> = stored
        .iter()
        .map(|k| {
            SigningKey::from_pkcs8_pem(&k.pem)
                .map(|key| (k.not_before_ms, key))
                .map_err(|e| StoreError(format!("signing key {}: {e}", k.kid)))
        })
        .collect::<Result<_, _>>()?;
    // Newest first; ties by kid, so every instance picks the same one.
    keys.sort_by(|(a, ka), (b, kb)| {
        b.cmp(a)
            .then_with(|| KeySet::kid_of_key(ka).cmp(&KeySet::kid_of_key(kb)))
    });
    let current = keys
        .iter()
        .position(|(nb, _)| *nb <= now_ms)
        .unwrap_or(keys.len().saturating_sub(1));
    if keys.is_empty() {
        return Err(StoreError("no signing key in the store".into()));
    }
    let (_, signing) = keys.remove(current);
    Ok(KeySet::from_parts(
        signing,
        keys.into_iter().map(|(_, k)| k),
    ))
}

/// If the store keeps signing keys: store one if there is none yet (the first instance),
/// load them, and remember that keys are shared. `Ok(false)` if the store keeps none.
pub async fn init_keys(state: &AppState) -> Result<bool, AppError> {
    let Some(stored) = state.store.signing_keys().await? else {
        return Ok(false);
    };
    if stored.is_empty() {
        // Usable at once: nobody signs with anything else yet.
        let first = state
            .with_keys(|k| k.current_pem())
            .map_err(|e| StoreError(e.to_string()))?;
        let key = SigningKey::from_pkcs8_pem(&first)
            .map_err(|e| StoreError(format!("cannot reload the signing key: {e}")))?;
        state
            .store
            .add_first_signing_key(&stored_key(&key, 0)?)
            .await?;
    }
    state
        .shared_keys
        .store(true, std::sync::atomic::Ordering::Relaxed);
    reload_keys(state).await?;
    Ok(true)
}

/// Read the shared keys again and switch to the set for now.
pub async fn reload_keys(state: &AppState) -> Result<(), AppError> {
    let Some(stored) = state.store.signing_keys().await? else {
        return Ok(());
    };
    let set = key_set(&stored, state.now_ms())?;
    let mut keys = state.keys.write().unwrap_or_else(PoisonError::into_inner);
    if keys.current_kid() != set.current_kid() {
        tracing::info!(kid = %set.current_kid(), "signing with a shared key");
    }
    *keys = set;
    Ok(())
}

/// Rotate the shared signing key: store a new key that every instance publishes from its
/// next reload and signs with from two reloads later. Returns the new `kid`.
pub async fn rotate_shared_key(state: &AppState) -> Result<String, AppError> {
    let key = SigningKey::random(&mut OsRng);
    let ahead = state.settings.key_reload.as_millis() as i64 * 2;
    let stored = stored_key(&key, state.now_ms() + ahead)?;
    state.store.add_signing_key(&stored, KEEP_KEYS).await?;
    reload_keys(state).await?;
    tracing::info!(kid = %stored.kid, ahead_ms = ahead, "shared signing key rotation stored");
    Ok(stored.kid)
}

/// Before a password is checked: `Err(wait)` while the account or address is locked, by
/// this process's limiter or, with PostgreSQL, by failures counted on any instance.
pub async fn login_check(
    state: &AppState,
    username: &str,
    addr: Option<std::net::IpAddr>,
) -> Result<Result<(), Duration>, AppError> {
    if !state.store.shares_login_limits() {
        return Ok(state.login_limiter.check(username, addr));
    }
    let keys: Vec<String> = state
        .login_limiter
        .shared_keys(username, addr)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let wait = state.store.login_locked(&keys, state.now_ms()).await?;
    Ok(wait_result(wait))
}

/// After wrong credentials: count the failure (in the store with PostgreSQL). `Err(wait)`
/// if it used up a budget.
pub async fn login_failed(
    state: &AppState,
    username: &str,
    addr: Option<std::net::IpAddr>,
) -> Result<Result<(), Duration>, AppError> {
    if !state.store.shares_login_limits() {
        return Ok(state.login_limiter.failed(username, addr));
    }
    let limiter = &state.login_limiter;
    let refill_ms = (limiter.limits().refill.as_millis() as i64).max(1);
    let wait = state
        .store
        .login_failed(
            &limiter.shared_keys(username, addr),
            refill_ms,
            state.now_ms(),
        )
        .await?;
    Ok(wait_result(wait))
}

fn wait_result(wait_ms: i64) -> Result<(), Duration> {
    if wait_ms > 0 {
        Err(Duration::from_millis(wait_ms as u64))
    } else {
        Ok(())
    }
}

/// With shared keys: reload them every `--key-reload`; read the revoked families every
/// `revocation_every`. Runs until the process ends.
pub fn spawn_sync(state: AppState, revocation_every: Duration) {
    let keys_state = state.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(keys_state.settings.key_reload);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = reload_keys(&keys_state).await {
                tracing::error!(error = ?e, "signing key reload failed");
            }
        }
    });
    tokio::spawn(async move {
        let mut every = tokio::time::interval(revocation_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = crate::session::restore_revocations(&state).await {
                tracing::error!(error = ?e, "revocation sync failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::postgres_tests::{database_url, fresh_pair};

    #[tokio::test]
    async fn pg_two_instances_share_keys_and_a_key_rotation_logs_nobody_out() {
        let Some(url) = database_url("the shared signing keys") else {
            return;
        };
        let (one, two) = fresh_pair(&url).await;
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let config = crate::Config {
            key_reload_s: 1.0,
            ..crate::Config::default()
        };
        let a = AppState::new(&config, KeySet::generate(), Arc::new(one), clock.clone());
        let b = AppState::new(&config, KeySet::generate(), Arc::new(two), clock.clone());
        assert!(init_keys(&a).await.unwrap());
        assert!(init_keys(&b).await.unwrap());
        let kid = |s: &AppState| s.with_keys(|k| k.current_kid().to_string());
        assert_eq!(kid(&a), kid(&b), "the first instance's key is everyone's");
        let old = a
            .with_keys(|k| k.sign(&serde_json::json!({"sub": "x"})))
            .unwrap();
        assert!(b.with_keys(|k| k.verify(&old)).is_ok());

        let new_kid = rotate_shared_key(&a).await.unwrap();
        reload_keys(&b).await.unwrap();
        for s in [&a, &b] {
            assert_ne!(kid(s), new_kid, "not signing with it before its not_before");
            let jwks = s.with_keys(|k| k.jwks());
            assert!(
                jwks["keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kid"] == new_kid),
                "published ahead"
            );
        }
        clock.advance_ms(2_000);
        reload_keys(&a).await.unwrap();
        reload_keys(&b).await.unwrap();
        assert_eq!(kid(&a), new_kid);
        assert_eq!(kid(&b), new_kid);
        let new = b
            .with_keys(|k| k.sign(&serde_json::json!({"sub": "x"})))
            .unwrap();
        for s in [&a, &b] {
            assert!(
                s.with_keys(|k| k.verify(&old)).is_ok(),
                "old key still verifies"
            );
            assert!(s.with_keys(|k| k.verify(&new)).is_ok());
        }
        // Failed logins on both instances count against one budget.
        let limited = AppState::new(
            &crate::Config {
                login_account_burst: 2,
                ..crate::Config::default()
            },
            KeySet::generate(),
            a.store.clone(),
            clock.clone(),
        );
        let limited_b = AppState::new(
            &crate::Config {
                login_account_burst: 2,
                ..crate::Config::default()
            },
            KeySet::generate(),
            b.store.clone(),
            clock.clone(),
        );
        let ip = Some(std::net::IpAddr::from([10, 1, 2, 3]));
        assert!(login_failed(&limited, "Eve", ip).await.unwrap().is_ok());
        assert!(login_failed(&limited_b, "eve", ip).await.unwrap().is_ok());
        assert!(login_check(&limited, "eve", ip).await.unwrap().is_ok());
        let wait = login_failed(&limited, "EVE", ip)
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            wait > Duration::from_secs(5) && wait <= Duration::from_secs(6),
            "{wait:?}"
        );
        assert!(login_check(&limited_b, "eve", None).await.unwrap().is_err());
        assert!(login_check(&limited_b, "someone", None)
            .await
            .unwrap()
            .is_ok());
        clock.advance_ms(6_000);
        assert!(login_check(&limited_b, "eve", None).await.unwrap().is_ok());

        // The successor key is one for both instances too.
        assert_eq!(
            successor_key(&a).await.unwrap(),
            successor_key(&b).await.unwrap()
        );

        // And so are the DPoP nonces.
        let nonces = crate::Config {
            dpop_nonce: true,
            ..crate::Config::default()
        };
        let (na, nb) = (
            AppState::new(&nonces, KeySet::generate(), a.store.clone(), clock.clone()),
            AppState::new(&nonces, KeySet::generate(), b.store.clone(), clock.clone()),
        );
        assert_ne!(na.dpop_nonce(), nb.dpop_nonce(), "each its own before");
        init_nonce_key(&na).await.unwrap();
        init_nonce_key(&nb).await.unwrap();
        assert!(na.dpop_nonce().is_some());
        assert_eq!(na.dpop_nonces(), nb.dpop_nonces());
    }

    #[test]
    fn the_newest_key_past_its_not_before_signs_and_every_key_verifies() {
        let a = SigningKey::random(&mut OsRng);
        let b = SigningKey::random(&mut OsRng);
        let stored = vec![stored_key(&a, 0).unwrap(), stored_key(&b, 1_000).unwrap()];
        let before = key_set(&stored, 999).unwrap();
        assert_eq!(before.current_kid(), KeySet::kid_of_key(&a));
        assert_eq!(
            before.verification_keys().count(),
            2,
            "b is published ahead"
        );
        let token = before.sign(&serde_json::json!({"sub": "x"})).unwrap();
        let after = key_set(&stored, 1_000).unwrap();
        assert_eq!(after.current_kid(), KeySet::kid_of_key(&b));
        assert!(after.verify(&token).is_ok(), "a still verifies");
        assert!(key_set(&[], 0).is_err());
    }
}
