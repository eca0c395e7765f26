//! Sessions: login, refresh-token rotation with reuse detection, logout.
//! Plain functions over [`AppState`]; handlers stay thin.

use crate::error::AppError;
use crate::state::{bump, AppState};
use crate::store::{Family, Rejection, Rotation};
use crate::tokens::{self, hash_refresh_token, AccessClaims, DEMO_SCOPE};

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

/// Whether the access token is normal or (fault injection) already expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLifetime {
    /// `exp` = ceil(now + ttl), `expires_in` = ceil(ttl).
    Normal,
    /// `exp` = `iat` - 1, `expires_in` = 0.
    AlreadyExpired,
}

/// Sign an access token for `sub`. Returns the JWT and `expires_in`.
pub fn issue_access_token(
    state: &AppState,
    sub: &str,
    lifetime: AccessLifetime,
) -> Result<(String, u64), AppError> {
    let now_ms = state.now_ms();
    let iat = now_ms.div_euclid(1000);
    let ttl = state.tunables().access_ttl_s;
    let (exp, expires_in) = match lifetime {
        // exp is rounded up so the token never dies before the client expects it to.
        AccessLifetime::Normal => (
            ((now_ms as f64) / 1000.0 + ttl).ceil() as i64,
            ttl.ceil() as u64,
        ),
        AccessLifetime::AlreadyExpired => (iat - 1, 0),
    };
    let claims = AccessClaims {
        iss: state.settings.issuer.clone(),
        aud: state.settings.audience.clone(),
        sub: sub.to_string(),
        iat,
        exp,
        jti: tokens::random_id(16),
        scope: DEMO_SCOPE.to_string(),
    };
    let jwt = state.with_keys(|keys| keys.sign(&claims))?;
    Ok((jwt, expires_in))
}

fn remaining_s(expires_at_ms: i64, now_ms: i64) -> i64 {
    ((expires_at_ms - now_ms).max(0) + 999) / 1000
}

/// Start a new token family for `sub` (after a successful login).
pub fn start(state: &AppState, sub: &str) -> Result<Issued, AppError> {
    let now_ms = state.now_ms();
    let lifetime_ms = (state.tunables().family_lifetime_s * 1000.0).ceil() as i64;
    let family = Family {
        id: tokens::random_id(16),
        sub: sub.to_string(),
        expires_at_ms: now_ms + lifetime_ms,
    };
    let refresh_token = tokens::new_refresh_token();
    state
        .store
        .create_family(&family, &hash_refresh_token(&refresh_token), now_ms)?;
    let (access_token, expires_in) = issue_access_token(state, sub, AccessLifetime::Normal)?;
    tracing::info!(family = %family.id, "session started");
    Ok(Issued {
        access_token,
        expires_in,
        refresh_token,
        family_remaining_s: remaining_s(family.expires_at_ms, now_ms),
    })
}

/// Rotate `presented`: retire it and issue a new refresh token in the same family.
/// A retired token is reuse: the family is revoked and the caller gets `invalid_grant`.
pub fn rotate(
    state: &AppState,
    presented: &str,
    lifetime: AccessLifetime,
) -> Result<Issued, AppError> {
    let now_ms = state.now_ms();
    let next = tokens::new_refresh_token();
    match state.store.rotate(
        &hash_refresh_token(presented),
        &hash_refresh_token(&next),
        now_ms,
    )? {
        Rotation::Rotated(family) => {
            let (access_token, expires_in) = issue_access_token(state, &family.sub, lifetime)?;
            Ok(Issued {
                access_token,
                expires_in,
                refresh_token: next,
                family_remaining_s: remaining_s(family.expires_at_ms, now_ms),
            })
        }
        Rotation::Reused { family_id } => {
            bump(&state.counters.reuse_detected);
            bump(&state.counters.families_revoked);
            tracing::warn!(family = %family_id, "refresh token reuse detected; token family revoked");
            Err(AppError::InvalidGrant)
        }
        Rotation::Rejected(reason) => {
            let reason = match reason {
                Rejection::Unknown => "unknown",
                Rejection::Expired => "family expired",
                Rejection::Revoked => "family revoked",
            };
            tracing::info!(reason, "refresh token refused");
            Err(AppError::InvalidGrant)
        }
    }
}

/// Revoke the family of `presented` (logout). Unknown tokens are fine.
pub fn end(state: &AppState, presented: &str) -> Result<(), AppError> {
    if let Some(family_id) = state
        .store
        .revoke_family_of(&hash_refresh_token(presented), state.now_ms())?
    {
        bump(&state.counters.families_revoked);
        tracing::info!(family = %family_id, "session ended; token family revoked");
    }
    Ok(())
}
