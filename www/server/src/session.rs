//! Sessions: login, refresh-token rotation with reuse detection, logout. Plain async
//! functions over [`AppState`]; handlers stay thin. Every revocation (logout, reuse, the
//! per-user cap) also refuses the family's access tokens until they expire.

use crate::error::AppError;
use crate::metrics::bump;
use crate::state::AppState;
use crate::store::{BoundKey, Family, Rejection, Rotation, Standing};
use crate::tokens::{self, hash_refresh_token, AccessLifetime, Grant, TokenHash};

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
    /// Whether the access token is bound to a DPoP key (`token_type` `DPoP`).
    pub bound: bool,
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
    jkt: Option<&str>,
    now_ms: i64,
) -> Result<(String, u64), AppError> {
    let grant = Grant {
        jkt,
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

/// A family just opened by [`open_family`].
pub struct Opened {
    /// The family.
    pub family: Family,
    /// Its first refresh token (goes only into the cookie).
    pub refresh_token: String,
    /// Families of the same user revoked by the per-user cap (already refused).
    pub capped: Vec<String>,
}

/// Open a new token family for `sub`. If `sub` now has more live families than allowed,
/// the oldest are revoked (their ids are in [`Opened::capped`]).
pub async fn open_family(state: &AppState, sub: &str, now_ms: i64) -> Result<Opened, AppError> {
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
    Ok(Opened {
        family,
        refresh_token,
        capped,
    })
}

/// Seconds until a family ending at `expires_at_ms` ends (cookie `Max-Age`).
pub fn family_remaining_s(expires_at_ms: i64, now_ms: i64) -> i64 {
    remaining_s(expires_at_ms, now_ms)
}

/// Start a new token family for `sub` (after a successful login). If `sub` now has more
/// live families than allowed, the oldest are revoked. With `jkt` (the login carried a
/// valid DPoP proof) the family is bound to that key from the start.
pub async fn start(state: &AppState, sub: &str, jkt: Option<&str>) -> Result<Issued, AppError> {
    let now_ms = state.now_ms();
    let Opened {
        family,
        refresh_token,
        ..
    } = open_family(state, sub, now_ms).await?;
    if let Some(jkt) = jkt {
        state.store.bind_key(&family.id, jkt, now_ms).await?;
    }
    let (access_token, expires_in) =
        access_token(state, &family, AccessLifetime::Normal, jkt, now_ms)?;
    tracing::info!(family = %family.id, bound = jkt.is_some(), "session started");
    Ok(Issued {
        access_token,
        expires_in,
        refresh_token,
        family_remaining_s: remaining_s(family.expires_at_ms, now_ms),
        bound: jkt.is_some(),
    })
}

/// Why a presented refresh token did not rotate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRotated {
    /// Unknown, expired or revoked: nothing happened.
    Refused(Rejection),
    /// A retired token: its family has just been revoked.
    Reused {
        /// The revoked family.
        family_id: String,
    },
    /// The token would have been accepted (it is live, or a lost response's parent inside
    /// the window), but the request's DPoP proof may not have it: none for a bound family
    /// (or under `--dpop-required`), an invalid one, or one from another key while a token
    /// of the bound key may still be live. Nothing happened (the token stays as it was).
    ProofRefused,
}

/// A rotated family and the new refresh token that is now live in it.
pub struct Rotated {
    /// The family (unchanged end).
    pub family: Family,
    /// The new refresh token (goes only into the cookie).
    pub refresh_token: String,
}

/// Whether a refresh with the proof key `jkt` (or none) may rotate a family bound to
/// `bound`. The rule: a bound family needs a proof; a proof from a different key is
/// accepted (and the family rebinds to it) only once every access token bound to the old
/// key has expired — the tabs that held the old key are gone (a new browser session makes a
/// new key), while any live tab keeps refreshing well before that.
pub fn key_allowed(
    state: &AppState,
    bound: Option<&BoundKey>,
    jkt: Option<&str>,
    now_ms: i64,
) -> bool {
    match (bound, jkt) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(b), Some(k)) => b.jkt == k || now_ms > b.used_at_ms + state.max_token_life_ms(),
    }
}

/// The hashes of `presented` and of its successor, and the successor itself. The successor
/// is derived from the presented token, so a replay of it (a lost response) can be answered
/// with the same successor while only hashes are stored.
async fn successor_of(
    state: &AppState,
    presented: &str,
) -> Result<(TokenHash, TokenHash, String), AppError> {
    let next = tokens::successor(crate::shared::successor_key(state).await?, presented);
    Ok((
        hash_refresh_token(presented),
        hash_refresh_token(&next),
        next,
    ))
}

fn reuse_detected(state: &AppState, family_id: &str) {
    bump(&state.metrics.counters.reuse_detected);
    tracing::warn!(family = %family_id, "refresh token reuse detected");
    revoked(state, family_id, "refresh token reuse");
}

fn refused(reason: Rejection) -> NotRotated {
    let why = match reason {
        Rejection::Unknown => "unknown",
        Rejection::Expired => "family expired",
        Rejection::Revoked => "family revoked",
    };
    tracing::info!(reason = why, "refresh token refused");
    NotRotated::Refused(reason)
}

/// Rotate `presented` without minting an access token: retire it and make a new refresh
/// token live in the same family. A retired token is reuse: the family is revoked. `jkt`
/// is the key of the request's valid DPoP proof: the family is bound to it from now on
/// ([`key_allowed`] says when a bound family accepts it; a proof it refuses is settled by
/// [`hold`]). Used by [`rotate`] and by upstream mode (whose access tokens are the
/// provider's).
pub async fn rotate_family(
    state: &AppState,
    presented: &str,
    now_ms: i64,
    jkt: Option<&str>,
) -> Result<Result<Rotated, NotRotated>, AppError> {
    let (presented_hash, next_hash, next) = successor_of(state, presented).await?;
    let bound = state.store.key_of(&presented_hash).await?;
    if !key_allowed(state, bound.as_ref(), jkt, now_ms) {
        let outcome = settle(state, &presented_hash, &next_hash, now_ms).await?;
        if outcome == NotRotated::ProofRefused {
            bump(&state.metrics.counters.dpop_refused);
            tracing::info!(
                family = bound.as_ref().map_or("", |b| b.family_id.as_str()),
                with_proof = jkt.is_some(),
                "refresh refused: not the key the family is bound to"
            );
        }
        return Ok(Err(outcome));
    }
    let rotation = state
        .store
        .rotate(
            &presented_hash,
            &next_hash,
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
            if let Some(jkt) = jkt {
                state.store.bind_key(&family.id, jkt, now_ms).await?;
            }
            Ok(Ok(Rotated {
                family,
                refresh_token: next,
            }))
        }
        Rotation::Reused { family_id } => {
            reuse_detected(state, &family_id);
            Ok(Err(NotRotated::Reused { family_id }))
        }
        Rotation::Rejected(reason) => Ok(Err(refused(reason))),
    }
}

/// Settle a presented token that this request may not rotate, because its DPoP proof is
/// missing, invalid or by a key the family may not take. SERVER.md's rules hold whatever
/// the proof: an unknown, expired or revoked token is [`NotRotated::Refused`], and a retired
/// one (outside the lost-response rule) is reuse — its family is revoked, logged and
/// counted. Only a token that would otherwise be accepted (the live one, or a lost
/// response's parent: handing out its successor again needs the family's key too) is
/// [`NotRotated::ProofRefused`], and stays as it was.
///
/// Why a read ([`crate::store::RefreshStore::standing`]) and not the atomic `rotate` with
/// the key check inside: that would put the key rule into every store (a new PL/pgSQL step
/// for PostgreSQL), while this path never rotates anything. The read is acted on only for
/// reuse, and "retired, and not a lost response" never reverts (a retired token never
/// becomes live again, the window only closes, a used successor stays used), so revoking on
/// it races no other request; the revocation is the store's atomic `revoke_family_of`,
/// which revokes (and counts) a family once. Every other answer changes nothing, so a read
/// overtaken by a concurrent refresh answers as if this request had come just before it.
pub async fn hold(state: &AppState, presented: &str, now_ms: i64) -> Result<NotRotated, AppError> {
    let (presented_hash, next_hash, _) = successor_of(state, presented).await?;
    settle(state, &presented_hash, &next_hash, now_ms).await
}

async fn settle(
    state: &AppState,
    presented: &TokenHash,
    next: &TokenHash,
    now_ms: i64,
) -> Result<NotRotated, AppError> {
    let window_ms = state.settings.lost_response_window_ms;
    let standing = state
        .store
        .standing(presented, next, now_ms, window_ms)
        .await?;
    Ok(match standing {
        Standing::Live | Standing::Repeatable => NotRotated::ProofRefused,
        Standing::Retired => match state.store.revoke_family_of(presented, now_ms).await? {
            Some(family_id) => {
                reuse_detected(state, &family_id);
                NotRotated::Reused { family_id }
            }
            // Revoked meanwhile (another reuse, a logout): refused as revoked.
            None => refused(Rejection::Revoked),
        },
        Standing::Rejected(reason) => refused(reason),
    })
}

/// Rotate `presented`: retire it and issue a new refresh token in the same family, and an
/// access token (bound to `jkt` when the request carried a valid DPoP proof).
/// A retired token is reuse: the family is revoked.
pub async fn rotate(
    state: &AppState,
    presented: &str,
    lifetime: AccessLifetime,
    jkt: Option<&str>,
) -> Result<Result<Issued, NotRotated>, AppError> {
    let now_ms = state.now_ms();
    Ok(match rotate_family(state, presented, now_ms, jkt).await? {
        Ok(Rotated {
            family,
            refresh_token,
        }) => {
            let (access_token, expires_in) = access_token(state, &family, lifetime, jkt, now_ms)?;
            Ok(Issued {
                access_token,
                expires_in,
                refresh_token,
                family_remaining_s: remaining_s(family.expires_at_ms, now_ms),
                bound: jkt.is_some(),
            })
        }
        Err(e) => Err(e),
    })
}

/// Revoke the family `token` belongs to (live or retired), giving `why` in the log line. The
/// id of the family if it was newly revoked.
pub async fn end_family_of(
    state: &AppState,
    token: &str,
    why: &'static str,
) -> Result<Option<String>, AppError> {
    end_family_by_hash(state, &hash_refresh_token(token), why).await
}

async fn end_family_by_hash(
    state: &AppState,
    token: &TokenHash,
    why: &'static str,
) -> Result<Option<String>, AppError> {
    let id = state.store.revoke_family_of(token, state.now_ms()).await?;
    if let Some(id) = &id {
        revoked(state, id, why);
    }
    Ok(id)
}

/// Revoke the family of `presented` (logout). Unknown tokens are fine. The id of the
/// family if it was newly revoked.
pub async fn end(state: &AppState, presented: &str) -> Result<Option<String>, AppError> {
    end_family_of(state, presented, "logout").await
}

/// A logout could not end the family of `presented` (the store failed): note it, so that
/// maintenance ends it once the store answers again ([`end_noted`]). The browser's cookie is
/// cleared all the same; this covers a copy of the cookie kept elsewhere, and a browser that
/// never got the answer.
pub fn note_failed_end(state: &AppState, presented: &str) {
    let room = state.noted_ends.note(hash_refresh_token(presented));
    tracing::warn!(
        noted = state.noted_ends.len(),
        forgot_oldest = !room,
        "logout: the store could not end the family; the cookie is cleared, and maintenance \
        ends the family once the store answers"
    );
}

/// Maintenance: end the families of the logouts noted while the store failed
/// ([`note_failed_end`]); in upstream mode their provider grants too. Stops at the first
/// store failure, keeping that one and the rest for the next pass. How many were ended.
pub async fn end_noted(state: &AppState) -> Result<usize, AppError> {
    let noted = state.noted_ends.take();
    let mut ended = 0;
    for (i, token) in noted.iter().enumerate() {
        let id =
            match end_family_by_hash(state, token, "logout (noted while the store failed)").await {
                Ok(id) => id,
                Err(e) => {
                    state.noted_ends.put_back(noted[i..].to_vec());
                    return Err(e);
                }
            };
        let Some(id) = id else { continue };
        ended += 1;
        if let Some(up) = state.upstream.get() {
            if let Err(e) = crate::routes::upstream::end_grant(up, &id, state.now_ms()).await {
                tracing::warn!(family = %id, error = ?e,
                    "the grant of a family ended after a failed logout could not be queued for revocation");
            }
        }
    }
    Ok(ended)
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

/// Housekeeping, run now and then: end the families of logouts noted while the store failed
/// ([`end_noted`]), purge families that ended more than `grace_ms` ago, forget revocations
/// whose tokens have expired and idle limiter keys.
pub async fn maintain(state: &AppState, grace_ms: i64) -> Result<u64, AppError> {
    let now_ms = state.now_ms();
    let ended = end_noted(state).await?;
    if ended > 0 {
        tracing::info!(
            families = ended,
            "families of logouts noted while the store failed ended"
        );
    }
    let purged = state
        .store
        .purge(now_ms - grace_ms.max(state.max_token_life_ms()))
        .await?;
    if let Some(up) = state.upstream.get() {
        // Grants a failed store call left stored after their family ended: queued, due now
        // (tried below).
        up.queue_ended_grants(now_ms).await?;
        // Pending logins, grants of expired families (queued for revocation at the provider),
        // leases that ran out, access tokens past their expiry.
        up.store.purge_upstream(now_ms - grace_ms).await?;
        let pass = up.retry_revocations(|| state.now_ms()).await?;
        if pass != Default::default() {
            tracing::info!(
                done = pass.done,
                failed = pass.failed,
                unreadable = pass.unreadable,
                given_up = pass.given_up,
                "queued provider revocations tried"
            );
        }
    }
    state.revoked.forget_expired(now_ms);
    state.login_limiter.forget_idle();
    if purged > 0 {
        tracing::info!(purged, "ended token families purged");
    }
    Ok(purged)
}
