//! Refresh-token families behind one async trait, [`RefreshStore`]: [`MemoryStore`] for tests,
//! [`SqliteStore`] (the default) for one server that survives restarts, and [`PgStore`]
//! (`DATABASE_URL`) for several instances on one PostgreSQL. [`contract`] holds the behaviour
//! every implementation must show, as functions any implementation's tests call.
//!
//! Upstream mode ([`crate::upstream`]) keeps a little more, behind a second trait,
//! [`UpstreamStore`], implemented by the same stores: pending logins, the sealed provider
//! grant of each family and a per-family lease.
//!
//! Every operation that reads and then writes is atomic (one mutex / one transaction / one
//! row-locking SQL function), so two concurrent refreshes of the same token cannot both win,
//! whichever instances they reach.

pub mod contract;
mod flaky;
mod memory;
mod postgres;
#[cfg(test)]
pub(crate) use postgres::tests as postgres_tests;
mod sqlite;
mod tracked;

use std::fmt;

pub use flaky::{Failing, Flaky};
pub use memory::MemoryStore;
pub use postgres::{PgStore, MIGRATIONS};
pub use sqlite::{SqliteStore, DB_FILE};
pub use tracked::{StoreHealth, Tracked};

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
    /// The lost-response rule: the token was retired less than the window ago and `next`,
    /// the successor it was rotated to, has never been used. Nothing changed; the caller
    /// hands out the same successor again.
    Repeated(Family),
    /// The token had already been used: the family has just been revoked.
    Reused {
        /// The revoked family's id.
        family_id: String,
    },
    /// Refused.
    Rejected(Rejection),
}

/// What presenting a refresh token would do now ([`RefreshStore::standing`]): the outcomes
/// of [`RefreshStore::rotate`], read without changing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Live: presenting it would rotate it.
    Live,
    /// Retired less than the window ago with its successor unused: presenting it would hand
    /// out the same successor again (the lost-response rule).
    Repeatable,
    /// Retired otherwise: presenting it is reuse.
    Retired,
    /// Refused: presenting it changes nothing.
    Rejected(Rejection),
}

/// The [`Standing`] of a known token, decided in the order [`RefreshStore::rotate`] decides:
/// an ended family first, then a live token, then the lost-response rule. Shared by the
/// stores so that `standing` cannot drift from `rotate`.
fn standing_of(
    family_revoked: bool,
    expires_at_ms: i64,
    retired_at_ms: Option<i64>,
    successor_live: bool,
    now_ms: i64,
    window_ms: i64,
) -> Standing {
    if family_revoked {
        return Standing::Rejected(Rejection::Revoked);
    }
    if expires_at_ms <= now_ms {
        return Standing::Rejected(Rejection::Expired);
    }
    match retired_at_ms {
        None => Standing::Live,
        Some(at) if within_window(now_ms - at, window_ms) && successor_live => Standing::Repeatable,
        Some(_) => Standing::Retired,
    }
}

/// Whether a token retired `since_retired` ms ago is inside the lost-response window. Less
/// than the window either way: a request stamped before another committed the rotation (two
/// presentations at once; each is stamped when it arrives) sees a small negative difference
/// and is inside, while a server clock stepped back (a large negative one) no longer stretches
/// the window without bound (every negative difference used to count).
pub fn within_window(since_retired: i64, window_ms: i64) -> bool {
    since_retired > -window_ms && since_retired < window_ms
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

/// Where the PostgreSQL URL `url` points, for error messages: `PostgreSQL at HOST:PORT,
/// database DB, user USER` (as far as the URL names them). Never the password. `None` when
/// `url` does not parse (that error says so itself).
pub fn pg_target(url: &str) -> Option<String> {
    use tokio_postgres::config::Host;
    let config: tokio_postgres::Config = url.parse().ok()?;
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect();
    let mut out = format!("PostgreSQL at {}", hosts.join(", "));
    if hosts.is_empty() {
        out.push_str("the default host");
    }
    if let Some(db) = config.get_dbname() {
        out.push_str(&format!(", database {db}"));
    }
    if let Some(user) = config.get_user() {
        out.push_str(&format!(", user {user}"));
    }
    Some(out)
}

/// `e`, from connecting to the PostgreSQL URL `url`, with where that points ([`pg_target`]).
pub fn with_pg_target(e: &StoreError, url: &str) -> String {
    match pg_target(url) {
        Some(target) => format!("{e} ({target})"),
        None => e.to_string(),
    }
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
    ///
    /// If it was retired less than `window_ms` ago (0 = never) and `next` is a live token
    /// of its family, answer [`Rotation::Repeated`] and change nothing. The caller derives
    /// `next` from `token` (a keyed hash), so a live `next` is the very successor `token`
    /// was rotated to. Any other presentation of a retired token is reuse.
    async fn rotate(
        &self,
        token: &TokenHash,
        next: &TokenHash,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Rotation, StoreError>;
    /// What presenting `token` (with `next`, as for [`RefreshStore::rotate`]) would do at
    /// `now_ms`, in one consistent read that changes nothing. For a request that may not
    /// rotate (see [`crate::session::hold`] for why acting on this read is safe).
    async fn standing(
        &self,
        token: &TokenHash,
        next: &TokenHash,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Standing, StoreError>;
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
    /// The secret called `name`, the same for every server on this store: the first call
    /// stores `candidate`, later calls (from any instance) return what was stored.
    async fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// Whether failed logins are counted in the store (shared by every instance) instead
    /// of in each process ([`crate::limiter::LoginLimiter`]).
    fn shares_login_limits(&self) -> bool {
        false
    }
    /// With shared login limits: ms until a login for any of `keys` is allowed (0 = now).
    async fn login_locked(&self, keys: &[String], now_ms: i64) -> Result<i64, StoreError> {
        let _ = (keys, now_ms);
        Ok(0)
    }
    /// With shared login limits: count one failed login for each `(key, burst)` (one more
    /// allowed every `refill_ms`); the ms the first exhausted key is now locked for, or 0.
    async fn login_failed(
        &self,
        keys: &[(String, u32)],
        refill_ms: i64,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        let _ = (keys, refill_ms, now_ms);
        Ok(0)
    }
    /// Signing keys shared by every instance on this store, or `None` if this store keeps
    /// none (each process then has its own keys).
    async fn signing_keys(&self) -> Result<Option<Vec<StoredKey>>, StoreError> {
        Ok(None)
    }
    /// Add a shared signing key (ignored if its `kid` is already there). Keeps the newest
    /// `keep` keys by `not_before_ms`. Stores without shared keys refuse.
    async fn add_signing_key(&self, key: &StoredKey, keep: usize) -> Result<(), StoreError> {
        let _ = (key, keep);
        Err(StoreError("this store keeps no signing keys".into()))
    }
    /// Add `key` only if no signing key is stored yet (the first instance to start).
    async fn add_first_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let _ = key;
        Err(StoreError("this store keeps no signing keys".into()))
    }
}

/// A signing key kept in the store. The private key is in the database: whoever can read
/// the database can sign tokens (as whoever can read a key file can).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// PKCS#8 PEM of the private key.
    pub pem: String,
    /// Epoch ms from which instances sign with it (published before that).
    pub not_before_ms: i64,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("not_before_ms", &self.not_before_ms)
            .finish_non_exhaustive()
    }
}

/// At most this many families answer one [`UpstreamStore::sessions_of`] (a subject's families
/// are capped far lower by `--max-families-per-user`).
pub const MAX_SESSIONS_OF: usize = 1000;

/// What upstream mode keeps besides the families: pending logins (single use,
/// short-lived), the sealed provider grant of each family, and a lease per family so that
/// concurrent refreshes of one family make one provider call. Values are sealed by the
/// caller ([`crate::upstream::seal`]): the store never sees a provider token in clear.
///
/// The lease lives in the store, not in a process mutex, so that servers sharing a database
/// see each other's lease. A PostgreSQL store can implement [`UpstreamStore::try_lease`] with
/// the same single statement as SQLite (`INSERT … ON CONFLICT (family_id) DO UPDATE … WHERE
/// holder = excluded.holder OR until_ms <= now`) and every other method as one plain query.
#[async_trait::async_trait]
pub trait UpstreamStore: Send + Sync + 'static {
    /// Remember a pending login (sealed) under the hash of its `state`.
    async fn put_pending(
        &self,
        key: &TokenHash,
        sealed: &[u8],
        expires_at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Take (and delete) the pending login for `key`; `None` if unknown, used or expired.
    async fn take_pending(
        &self,
        key: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// Store (or replace) the sealed grant of a family that ends at `expires_at_ms`.
    async fn put_grant(
        &self,
        family_id: &str,
        sealed: &[u8],
        expires_at_ms: i64,
    ) -> Result<(), StoreError>;
    /// The sealed grant of a family.
    async fn grant(&self, family_id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Forget the grant (and lease) of a family.
    async fn delete_grant(&self, family_id: &str) -> Result<(), StoreError>;
    /// Take the family's lease for `holder` until `now_ms + ttl_ms`, unless another holder's
    /// lease has not run out. `true` when `holder` now holds it.
    async fn try_lease(
        &self,
        family_id: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Give the lease back (only if `holder` still holds it).
    async fn release_lease(&self, family_id: &str, holder: &str) -> Result<(), StoreError>;
    /// Remember that the provider access token whose SHA-256 is `hash` (never the token) was
    /// handed out for `family_id`; it expires at `expires_at_ms`. Noting it again changes
    /// nothing.
    async fn note_access_token(
        &self,
        family_id: &str,
        hash: &TokenHash,
        expires_at_ms: i64,
    ) -> Result<(), StoreError>;
    /// The family ended at `now_ms` (logout, reuse, the per-user cap, the provider refusing
    /// the grant): every access token noted for it, before or after this call, now counts as
    /// ended. Ending it again changes nothing.
    async fn end_access_tokens(&self, family_id: &str, now_ms: i64) -> Result<(), StoreError>;
    /// Whether `hash` is the hash of an access token noted for a family that ended: its end
    /// recorded ([`Self::end_access_tokens`]), or the family revoked on the refresh side
    /// ([`RefreshStore::revoke_family_of`], reuse, the per-user cap: every revocation is an
    /// end, so an end whose recording failed after the revocation still counts). An
    /// unknown hash (a token not handed out through this server, or purged) is not. The
    /// token's own `exp` is checked by whoever asks, not here.
    async fn access_token_ended(&self, hash: &TokenHash) -> Result<bool, StoreError>;
    /// Whether the family's end was recorded ([`Self::end_access_tokens`]) or the family is
    /// revoked on the refresh side (as in [`Self::access_token_ended`]), by any handle on
    /// the same data; asked by a renewal after it stored the provider's new grant (the end may
    /// have come while the provider answered). Answered from the ends alone, so it holds for
    /// families whose provider tokens are opaque (never noted) too. An end purged
    /// ([`Self::purge_upstream`]) is forgotten.
    async fn family_ended(&self, family_id: &str) -> Result<bool, StoreError>;
    /// Move the family's sealed grant, as stored, to the revocation queue, first due at
    /// `next_at_ms`, as a row of its own: a revocation already queued
    /// for the family (an older grant of it) stays as it is. The row queued, `None` when there
    /// was no grant. The family's lease stays with its holder (released by it, or run out): a
    /// renewal still in flight keeps it, so that no other request renews the family meanwhile.
    async fn queue_revocation(
        &self,
        family_id: &str,
        next_at_ms: i64,
    ) -> Result<Option<QueuedRevocation>, StoreError>;
    /// Move to the revocation queue every grant still stored for a family that ended (as
    /// [`Self::family_ended`] says), at most `limit` of them, in one atomic
    /// operation: each as [`Self::queue_revocation`] moves it (sealed as stored, a row of its
    /// own, first due at `next_at_ms`, its lease left with its holder). A grant is moved once:
    /// this and every other move take it out of `upstream_grants` as they queue it. A family
    /// that has not ended keeps its grant. For maintenance: a grant left stored after its
    /// family ended because a store call failed (the end's recording or queueing after the
    /// revocation, or a racing renewal's `family_ended` check). Returns how many moved.
    async fn queue_ended_grants(&self, next_at_ms: i64, limit: usize) -> Result<u64, StoreError>;
    /// Claim up to `limit` queued revocations due at `now_ms` (oldest due first): each is not
    /// due again before `now_ms + lease_ms`, so that another instance's maintenance does not
    /// try it meanwhile.
    async fn claim_revocations(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<QueuedRevocation>, StoreError>;
    /// After a failed attempt on the queued revocation `id`: `attempts` so far, due again at
    /// `next_at_ms`.
    async fn retry_revocation(
        &self,
        id: i64,
        attempts: u32,
        next_at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Take the queued revocation `id` off the queue (done, or given up); other revocations
    /// of its family stay.
    async fn drop_revocation(&self, id: i64) -> Result<(), StoreError>;
    /// Give up every revocation queued (first due, [`Self::queue_revocation`] /
    /// [`Self::purge_upstream`]) before `queued_before_ms`, tried or not, whatever its next
    /// due time: off the queue. Returns how many went.
    async fn give_up_revocations(&self, queued_before_ms: i64) -> Result<u64, StoreError>;
    /// Back-channel logout: remember the provider session `family_id` was signed in through
    /// (its ID token's `sub` and `sid`) until `expires_at_ms` (the family's end). Noting the
    /// family again replaces what was noted.
    async fn note_session(
        &self,
        family_id: &str,
        sub: &str,
        sid: Option<&str>,
        expires_at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Back-channel logout: the families noted ([`Self::note_session`]) for the provider
    /// session a Logout Token names (OpenID Connect Back-Channel Logout 1.0 §2.7): with `sid`,
    /// those of that session (of that `sub` too when given); with `sub` alone, every one of
    /// that subject; with neither, none. At most [`MAX_SESSIONS_OF`], in family-id order.
    async fn sessions_of(
        &self,
        sub: Option<&str>,
        sid: Option<&str>,
    ) -> Result<Vec<String>, StoreError>;
    /// Delete pending logins, grants, leases and noted sessions that ended before `before_ms`, noted access
    /// tokens that expired before it, and ends older than it with no noted token left. A
    /// grant is not deleted but moved to the revocation queue (due at once): an expired
    /// family's provider refresh token is revoked too. Returns how many rows went.
    async fn purge_upstream(&self, before_ms: i64) -> Result<u64, StoreError>;
}

/// A provider grant waiting to be revoked at the provider ([`UpstreamStore::claim_revocations`]).
#[derive(Clone, PartialEq, Eq)]
pub struct QueuedRevocation {
    /// The queued row: one per grant queued (a family may have several, e.g. its grant and
    /// the one a racing renewal stored), so that settling one attempt touches only its own.
    pub id: i64,
    /// The family it was the grant of (the associated data of its seal).
    pub family_id: String,
    /// The grant, sealed as it was stored.
    pub sealed: Vec<u8>,
    /// Failed attempts so far.
    pub attempts: u32,
}

impl fmt::Debug for QueuedRevocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuedRevocation")
            .field("id", &self.id)
            .field("family_id", &self.family_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod target_tests {
    use super::*;

    #[test]
    fn the_target_of_a_url_names_host_port_database_and_user_never_the_password() {
        assert_eq!(
            pg_target("postgres://tw:s3cret-pw@db.internal:6432/tokens").as_deref(),
            Some("PostgreSQL at db.internal:6432, database tokens, user tw")
        );
        assert_eq!(
            pg_target("postgresql://tw:s3cret-pw@[::1]/tokens?sslmode=disable").as_deref(),
            Some("PostgreSQL at [::1]:5432, database tokens, user tw")
        );
        assert_eq!(
            pg_target("host=a,b port=5433 dbname=x user=u password=s3cret-pw").as_deref(),
            Some("PostgreSQL at a:5433, b:5433, database x, user u")
        );
        assert_eq!(pg_target("not a url at all"), None);
        let e = StoreError("postgres: error connecting to server: Connection refused".into());
        let text = with_pg_target(&e, "postgres://tw:s3cret-pw@127.0.0.1:9/tokens");
        assert!(
            text.ends_with("(PostgreSQL at 127.0.0.1:9, database tokens, user tw)"),
            "{text}"
        );
        assert!(!text.contains("s3cret-pw"));
    }
}
