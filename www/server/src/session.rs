//! Sessions: login, refresh-token rotation with reuse detection, logout. Plain async
//! functions over [`AppState`]; handlers stay thin. Every revocation (logout, reuse, the
//! per-user cap) also refuses the family's access tokens until they expire.

use crate::error::AppError;
use crate::metrics::bump;
use crate::state::AppState;
use crate::store::{Family, Rejection, Rotation};
use crate::tokens::{self, hash_refresh_token, AccessLifetime, Grant};

/// What a successful login or refresh hands out.
pub struct Issued {
    /// The JWT.
    pub access_token: String,
    /// Its lifetime in whole seconds.
    pub expires_in: u64,
    /// The new opaque refresh token (goes only into the cookie).
    pub refresh_token: String,
    /// Seconds until the family ends (cookie `Max-Age`).
    pub family_remaining_s: i64,
}

// Redacting Debug: no token ever reaches a log line.
impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("expires_in", &self.expires_in)
            .field("family_remaining_s", &self.family_remaining_s)
            .finish_non_exhaustive()
    }
}

fn access_token(
    state: &AppState,
    family: &Family,
    lifetime: AccessLifetime,
    now_ms: i64,
) -> Result<(String, u64), AppError> {
    let grant = Grant {
        issuer: &state.settings.issuer,
        audience: &state.settings.audience,
        sub: &family.sub,
        sid: &family.id,
        ttl_s: state.tunables().access_ttl_s,
        lifetime,
    };
    Ok(state.with_keys(|keys| tokens::mint(keys, grant, now_ms))?)
}

fn remaining_s(expires_at_ms: i64, now_ms: i64) -> i64 {
    ((expires_at_ms - now_ms).max(0) + 999) / 1000
}

fn revoked(state: &AppState, family_id: &str, why: &'static str) {
    state.refuse_tokens_of(family_id);
    bump(&state.metrics.counters.families_revoked);
    tracing::info!(family = %family_id, why, "token family revoked");
}

/// Start a new token family for `sub` (after a successful login). If `sub` now has more
/// live families than allowed, the oldest are revoked.
pub async fn start(state: &AppState, sub: &str) -> Result<Issued, AppError> {
    let now_ms = state.now_ms();
    let lifetime_ms = (state.tunables().family_lifetime_s * 1000.0).ceil() as i64;
    let family = Family {
        id: tokens::random_id(16),
        sub: sub.to_string(),
        expires_at_ms: now_ms + lifetime_ms,
    };
    let refresh_token = tokens::new_refresh_token();
    let capped = state
        .store
        .create_family(
            &family,
            &hash_refresh_token(&refresh_token),
            state.settings.max_families_per_user,
            now_ms,
        )
        .await?;
    for id in &capped {
        revoked(state, id, "per-user family cap");
    }
    let (access_token, expires_in) = access_token(state, &family, AccessLifetime::Normal, now_ms)?;
    tracing::info!(family = %family.id, "session started");
    Ok(Issued {
        access_token,
        expires_in,
        refresh_token,
        family_remaining_s: remaining_s(family.expires_at_ms, now_ms),
    })
}

/// Why a presented refresh token did not rotate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRotated {
    /// Unknown, expired or revoked: nothing happened.
    Refused(Rejection),
    /// A retired token: its family has just been revoked.
    Reused,
}

/// Rotate `presented`: retire it and issue a new refresh token in the same family.
/// A retired token is reuse: the family is revoked.
pub async fn rotate(
    state: &AppState,
    presented: &str,
    lifetime: AccessLifetime,
) -> Result<Result<Issued, NotRotated>, AppError> {
    let now_ms = state.now_ms();
    // The successor is derived from the presented token, so a replay of it (a lost
    // response) can be answered with the same successor while only hashes are stored.
    let next = tokens::successor(crate::shared::successor_key(state).await?, presented);
    let rotation = state
        .store
        .rotate(
            &hash_refresh_token(presented),
            &hash_refresh_token(&next),
            now_ms,
            state.settings.lost_response_window_ms,
        )
        .await?;
    let repeated = matches!(rotation, Rotation::Repeated(_));
    match rotation {
        Rotation::Rotated(family) | Rotation::Repeated(family) => {
            if repeated {
                bump(&state.metrics.counters.lost_responses_repeated);
                tracing::info!(family = %family.id, "lost response: the same successor again");
            }
            let (access_token, expires_in) = access_token(state, &family, lifetime, now_ms)?;
            Ok(Ok(Issued {
                access_token,
                expires_in,
                refresh_token: next,
                family_remaining_s: remaining_s(family.expires_at_ms, now_ms),
            }))
        }
        Rotation::Reused { family_id } => {
            bump(&state.metrics.counters.reuse_detected);
            tracing::warn!(family = %family_id, "refresh token reuse detected");
            revoked(state, &family_id, "refresh token reuse");
            Ok(Err(NotRotated::Reused))
        }
        Rotation::Rejected(reason) => {
            let why = match reason {
                Rejection::Unknown => "unknown",
                Rejection::Expired => "family expired",
                Rejection::Revoked => "family revoked",
            };
            tracing::info!(reason = why, "refresh token refused");
            Ok(Err(NotRotated::Refused(reason)))
        }
    }
}

/// Revoke the family of `presented` (logout). Unknown tokens are fine.
pub async fn end(state: &AppState, presented: &str) -> Result<(), AppError> {
    if let Some(family_id) = state
        .store
        .revoke_family_of(&hash_refresh_token(presented), state.now_ms())
        .await?
    {
        revoked(state, &family_id, "logout");
    }
    Ok(())
}

/// At start: refuse the access tokens of families revoked recently enough that some of
/// their tokens may still be unexpired (a restart must not bring them back).
pub async fn restore_revocations(state: &AppState) -> Result<usize, AppError> {
    let since = state.now_ms() - state.max_token_life_ms();
    let ids = state.store.revoked_since(since).await?;
    for id in &ids {
        state.refuse_tokens_of(id);
    }
    Ok(ids.len())
}

/// Housekeeping, run now and then: purge families that ended more than `grace_ms` ago,
/// forget revocations whose tokens have expired and idle limiter keys.
pub async fn maintain(state: &AppState, grace_ms: i64) -> Result<u64, AppError> {
    let now_ms = state.now_ms();
    let purged = state
        .store
        .purge(now_ms - grace_ms.max(state.max_token_life_ms()))
        .await?;
    state.revoked.forget_expired(now_ms);
    state.login_limiter.forget_idle();
    if purged > 0 {
        tracing::info!(purged, "ended token families purged");
    }
    Ok(purged)
}
