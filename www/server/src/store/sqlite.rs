//! [`SqliteStore`]: refresh-token families in one SQLite file under the data directory.
//! Survives restarts. rusqlite blocks, so every call runs on tokio's blocking pool
//! (`spawn_blocking`), never on an async worker.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension as _, TransactionBehavior};

use super::{
    standing_of, BoundKey, Family, QueuedRevocation, RefreshStore, Rejection, Rotation, Standing,
    StoreError, StoreStats, UpstreamStore,
};
use crate::tokens::TokenHash;

/// File name inside the data directory.
pub const DB_FILE: &str = "tokenwarden.sqlite3";

// WAL with synchronous=NORMAL: a committed rotation survives a crash of the
// process; only an OS crash can lose the last few, which then fail closed
// (401, sign in again) rather than open. Measured by make load.
const SCHEMA: &str = "
PRAGMA foreign_keys = ON;
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS families (
    id TEXT PRIMARY KEY,
    sub TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    hash BLOB PRIMARY KEY,
    family_id TEXT NOT NULL REFERENCES families(id) ON DELETE CASCADE,
    issued_at_ms INTEGER NOT NULL,
    retired_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS refresh_tokens_by_family ON refresh_tokens(family_id);
CREATE INDEX IF NOT EXISTS families_by_expiry ON families(expires_at_ms);
CREATE INDEX IF NOT EXISTS families_by_revocation ON families(revoked_at_ms);
CREATE INDEX IF NOT EXISTS families_by_sub ON families(sub, created_at_ms);
CREATE TABLE IF NOT EXISTS server_secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
-- Upstream mode (an OpenID Provider): pending logins, sealed provider grants, leases.
CREATE TABLE IF NOT EXISTS upstream_pending (
    key BLOB PRIMARY KEY,
    sealed BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS upstream_grants (
    family_id TEXT PRIMARY KEY,
    sealed BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS upstream_leases (
    family_id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms INTEGER NOT NULL
);
-- Upstream mode: SHA-256 of every provider access token handed out, and the families that
-- ended; /api/me refuses a JWT of an ended family until it expires.
CREATE TABLE IF NOT EXISTS upstream_access_tokens (
    hash BLOB PRIMARY KEY,
    family_id TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS upstream_access_tokens_by_family ON upstream_access_tokens(family_id);
CREATE INDEX IF NOT EXISTS upstream_access_tokens_by_expiry ON upstream_access_tokens(expires_at_ms);
-- Upstream mode: the provider session (the ID token's sub and sid) each family was signed
-- in through, for OpenID Connect Back-Channel Logout; kept until the family's end.
CREATE TABLE IF NOT EXISTS upstream_sessions (
    family_id TEXT PRIMARY KEY,
    sub TEXT NOT NULL,
    sid TEXT,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS upstream_sessions_by_sub ON upstream_sessions(sub);
CREATE INDEX IF NOT EXISTS upstream_sessions_by_sid ON upstream_sessions(sid);
CREATE INDEX IF NOT EXISTS upstream_sessions_by_expiry ON upstream_sessions(expires_at_ms);
CREATE TABLE IF NOT EXISTS upstream_ended (
    family_id TEXT PRIMARY KEY,
    ended_at_ms INTEGER NOT NULL
);
-- Upstream mode: provider grants to revoke (RFC 7009), retried by maintenance until the
-- provider accepts; the grant stays sealed as it was stored. One row per grant queued (a
-- family may have several): an attempt is settled on its own row only.
CREATE TABLE IF NOT EXISTS upstream_revocations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    family_id TEXT NOT NULL,
    sealed BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    next_at_ms INTEGER NOT NULL,
    queued_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS upstream_revocations_by_due ON upstream_revocations(next_at_ms);
CREATE INDEX IF NOT EXISTS upstream_revocations_by_age ON upstream_revocations(queued_at_ms);
CREATE TABLE IF NOT EXISTS dpop_keys (
    family_id TEXT PRIMARY KEY REFERENCES families(id) ON DELETE CASCADE,
    jkt TEXT NOT NULL,
    used_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dpop_proofs (
    id BLOB PRIMARY KEY,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dpop_proofs_by_expiry ON dpop_proofs(expires_at_ms);
";

/// Refresh-token families in SQLite. One connection behind a mutex; every rotation is one
/// `BEGIN IMMEDIATE` transaction, run on the blocking pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    call_timeout: Duration,
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError(e.to_string())
}

/// How long one store call may take by default ([`SqliteStore::open_with`]).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Owner-only (0600) for the database and its `-wal` / `-shm` files: they hold the refresh
/// tokens' hashes and the successor secret, from which anyone holding an old cookie could
/// compute the live one. Files left group- or world-readable by an earlier version are
/// tightened, and said so.
#[cfg(unix)]
fn owner_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(()); // not there (yet)
    };
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError(format!("cannot make {} owner-only: {e}", path.display())))?;
        tracing::warn!(path = %path.display(), "database file was readable by others: now 0600");
    }
    Ok(())
}

#[cfg(not(unix))]
fn owner_only(_: &Path) -> Result<(), StoreError> {
    Ok(())
}

impl SqliteStore {
    /// Open (creating the directory and schema if needed) `dir/tokenwarden.sqlite3`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, DEFAULT_CALL_TIMEOUT)
    }

    /// [`SqliteStore::open`], each store call bounded by `call_timeout` (waiting for the
    /// connection, then for SQLite's lock): a call cut off changes nothing, so a refresh
    /// answered 503 has not rotated and its retry works. The server gives it a third of
    /// `--request-timeout`. A directory it creates is owner-only (0700), the database files
    /// 0600; a database it cannot write is an error at start, not a server that answers 503
    /// to every login while `/readyz` says ready.
    pub fn open_with(dir: &Path, call_timeout: Duration) -> Result<Self, StoreError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .map_err(|e| StoreError(format!("cannot create data dir {}: {e}", dir.display())))?;
        let path = dir.join(DB_FILE);
        let mut file = std::fs::OpenOptions::new();
        file.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
        file.open(&path)
            .map_err(|e| StoreError(format!("cannot open {} for writing: {e}", path.display())))?;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            owner_only(Path::new(&p))?;
        }
        let conn = Connection::open(&path).map_err(err)?;
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(err)? {
            return Err(StoreError(format!(
                "{} can only be read: the refresh store must be writable",
                path.display()
            )));
        }
        conn.busy_timeout(call_timeout).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
            call_timeout,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` with the connection on the blocking pool.
    async fn with_conn<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        let conn = self.conn.clone();
        let (start, limit) = (std::time::Instant::now(), self.call_timeout);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // What is left of the call's time, for SQLite's own lock wait; none left: not
            // begun (a call that waited its time out behind others changes nothing).
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(StoreError("the store was busy for too long".into()));
            }
            conn.busy_timeout(left).map_err(err)?;
            f(&mut conn).map_err(err)
        })
        .await
        .map_err(|e| StoreError(format!("sqlite task: {e}")))?
    }
}

#[async_trait::async_trait]
impl RefreshStore for SqliteStore {
    async fn create_family(
        &self,
        family: &Family,
        token: &TokenHash,
        max_live: usize,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let family = family.clone();
        let token = *token;
        let keep = i64::try_from(max_live).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO families (id, sub, created_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![family.id, family.sub, now_ms, family.expires_at_ms],
            )?;
            tx.execute(
                "INSERT INTO refresh_tokens (hash, family_id, issued_at_ms) VALUES (?1, ?2, ?3)",
                params![&token[..], family.id, now_ms],
            )?;
            let over: Vec<String> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id FROM families
                     WHERE sub = ?1 AND revoked_at_ms IS NULL AND expires_at_ms > ?2
                     ORDER BY rowid DESC LIMIT -1 OFFSET ?3",
                )?;
                let rows = stmt.query_map(params![family.sub, now_ms, keep], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for id in &over {
                tx.execute(
                    "UPDATE families SET revoked_at_ms = ?1 WHERE id = ?2",
                    params![now_ms, id],
                )?;
            }
            tx.commit()?;
            Ok(over)
        })
        .await
    }

    async fn rotate(
        &self,
        token: &TokenHash,
        next: &TokenHash,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Rotation, StoreError> {
        let (token, next) = (*token, *next);
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row = tx
                .prepare_cached(
                    "SELECT t.family_id, t.retired_at_ms, f.sub, f.expires_at_ms, f.revoked_at_ms IS NOT NULL
                     FROM refresh_tokens t JOIN families f ON f.id = t.family_id WHERE t.hash = ?1",
                )?
                .query_row(params![&token[..]], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, bool>(4)?,
                    ))
                })
                .optional()?;
            let Some((family_id, retired_at_ms, sub, expires_at_ms, revoked)) = row else {
                return Ok(Rotation::Rejected(Rejection::Unknown));
            };
            let outcome = if revoked {
                Rotation::Rejected(Rejection::Revoked)
            } else if expires_at_ms <= now_ms {
                Rotation::Rejected(Rejection::Expired)
            } else if let Some(retired_at_ms) = retired_at_ms {
                let successor_live = window_ms > 0
                    && super::within_window(now_ms - retired_at_ms, window_ms)
                    && tx
                        .prepare_cached(
                            "SELECT 1 FROM refresh_tokens
                             WHERE hash = ?1 AND family_id = ?2 AND retired_at_ms IS NULL",
                        )?
                        .exists(params![&next[..], family_id])?;
                if successor_live {
                    Rotation::Repeated(Family {
                        id: family_id,
                        sub,
                        expires_at_ms,
                    })
                } else {
                    tx.execute(
                        "UPDATE families SET revoked_at_ms = ?1 WHERE id = ?2",
                        params![now_ms, family_id],
                    )?;
                    Rotation::Reused { family_id }
                }
            } else {
                tx.prepare_cached("UPDATE refresh_tokens SET retired_at_ms = ?1 WHERE hash = ?2")?
                    .execute(params![now_ms, &token[..]])?;
                tx.prepare_cached(
                    "INSERT INTO refresh_tokens (hash, family_id, issued_at_ms) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![&next[..], family_id, now_ms])?;
                Rotation::Rotated(Family {
                    id: family_id,
                    sub,
                    expires_at_ms,
                })
            };
            tx.commit()?;
            Ok(outcome)
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
        let (token, next) = (*token, *next);
        self.with_conn(move |conn| {
            // One statement: one consistent snapshot.
            let row = conn
                .prepare_cached(
                    "SELECT f.revoked_at_ms IS NOT NULL, f.expires_at_ms, t.retired_at_ms,
                        EXISTS (SELECT 1 FROM refresh_tokens n WHERE n.hash = ?2
                                AND n.family_id = t.family_id AND n.retired_at_ms IS NULL)
                     FROM refresh_tokens t JOIN families f ON f.id = t.family_id WHERE t.hash = ?1",
                )?
                .query_row(params![&token[..], &next[..]], |r| {
                    Ok(standing_of(
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        now_ms,
                        window_ms,
                    ))
                })
                .optional()?;
            Ok(row.unwrap_or(Standing::Rejected(Rejection::Unknown)))
        })
        .await
    }

    async fn revoke_family_of(
        &self,
        token: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let token = *token;
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let family_id: Option<String> = tx
                .query_row(
                    "SELECT f.id FROM refresh_tokens t JOIN families f ON f.id = t.family_id
                     WHERE t.hash = ?1 AND f.revoked_at_ms IS NULL",
                    params![&token[..]],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = &family_id {
                tx.execute(
                    "UPDATE families SET revoked_at_ms = ?1 WHERE id = ?2",
                    params![now_ms, id],
                )?;
            }
            tx.commit()?;
            Ok(family_id)
        })
        .await
    }

    async fn revoked_since(&self, since_ms: i64) -> Result<Vec<String>, StoreError> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare("SELECT id FROM families WHERE revoked_at_ms >= ?1")?;
            let rows = stmt.query_map(params![since_ms], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn purge(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.with_conn(move |conn| {
            let n = conn.execute(
                "DELETE FROM families WHERE expires_at_ms < ?1 OR revoked_at_ms < ?1",
                params![before_ms],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn key_of(&self, token: &TokenHash) -> Result<Option<BoundKey>, StoreError> {
        let token = *token;
        self.with_conn(move |conn| {
            conn.prepare_cached(
                "SELECT k.family_id, k.jkt, k.used_at_ms FROM refresh_tokens t
                 JOIN dpop_keys k ON k.family_id = t.family_id WHERE t.hash = ?1",
            )?
            .query_row(params![&token[..]], |r| {
                Ok(BoundKey {
                    family_id: r.get(0)?,
                    jkt: r.get(1)?,
                    used_at_ms: r.get(2)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn bind_key(&self, family_id: &str, jkt: &str, now_ms: i64) -> Result<(), StoreError> {
        let (family_id, jkt) = (family_id.to_string(), jkt.to_string());
        self.with_conn(move |conn| {
            conn.prepare_cached(
                "INSERT INTO dpop_keys (family_id, jkt, used_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(family_id) DO UPDATE SET jkt = excluded.jkt, used_at_ms = excluded.used_at_ms",
            )?
            .execute(params![family_id, jkt, now_ms])?;
            Ok(())
        })
        .await
    }

    async fn first_use_of_proof(
        &self,
        proof: &[u8; 32],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let proof = *proof;
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached("DELETE FROM dpop_proofs WHERE expires_at_ms <= ?1")?
                .execute(params![now_ms])?;
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO dpop_proofs (id, expires_at_ms) VALUES (?1, ?2) ON CONFLICT(id) DO NOTHING",
                )?
                .execute(params![&proof[..], expires_at_ms])?;
            tx.commit()?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with_conn(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    async fn stats(&self, now_ms: i64) -> Result<StoreStats, StoreError> {
        self.with_conn(move |conn| {
            let live_families: i64 = conn.query_row(
                "SELECT COUNT(*) FROM families WHERE revoked_at_ms IS NULL AND expires_at_ms > ?1",
                params![now_ms],
                |r| r.get(0),
            )?;
            let one_live: i64 = conn.query_row(
                "SELECT COUNT(*) FROM (
                    SELECT f.id FROM families f
                    JOIN refresh_tokens t ON t.family_id = f.id AND t.retired_at_ms IS NULL
                    WHERE f.revoked_at_ms IS NULL AND f.expires_at_ms > ?1
                    GROUP BY f.id HAVING COUNT(*) = 1)",
                params![now_ms],
                |r| r.get(0),
            )?;
            Ok(StoreStats {
                live_families: u64::try_from(live_families).unwrap_or(0),
                families_with_one_live_token: u64::try_from(one_live).unwrap_or(0),
            })
        })
        .await
    }

    async fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (name, candidate) = (name.to_string(), candidate.to_vec());
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO server_secrets (name, value) VALUES (?1, ?2)",
                params![name, candidate],
            )?;
            conn.query_row(
                "SELECT value FROM server_secrets WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
        })
        .await
    }
}

#[async_trait::async_trait]
impl UpstreamStore for SqliteStore {
    async fn put_pending(
        &self,
        key: &TokenHash,
        sealed: &[u8],
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let (key, sealed) = (*key, sealed.to_vec());
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO upstream_pending (key, sealed, expires_at_ms) VALUES (?1, ?2, ?3)",
                params![&key[..], sealed, expires_at_ms],
            )
            .map(|_| ())
        })
        .await
    }

    async fn take_pending(
        &self,
        key: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let key = *key;
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row: Option<(Vec<u8>, i64)> = tx
                .query_row(
                    "SELECT sealed, expires_at_ms FROM upstream_pending WHERE key = ?1",
                    params![&key[..]],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            tx.execute(
                "DELETE FROM upstream_pending WHERE key = ?1",
                params![&key[..]],
            )?;
            tx.commit()?;
            Ok(row.filter(|(_, exp)| *exp > now_ms).map(|(v, _)| v))
        })
        .await
    }

    async fn put_grant(
        &self,
        family_id: &str,
        sealed: &[u8],
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let (family_id, sealed) = (family_id.to_string(), sealed.to_vec());
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO upstream_grants (family_id, sealed, expires_at_ms) VALUES (?1, ?2, ?3)",
                params![family_id, sealed, expires_at_ms],
            )
            .map(|_| ())
        })
        .await
    }

    async fn grant(&self, family_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let family_id = family_id.to_string();
        self.with_conn(move |conn| {
            conn.query_row(
                "SELECT sealed FROM upstream_grants WHERE family_id = ?1",
                params![family_id],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    async fn delete_grant(&self, family_id: &str) -> Result<(), StoreError> {
        let family_id = family_id.to_string();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM upstream_grants WHERE family_id = ?1",
                params![family_id],
            )?;
            tx.execute(
                "DELETE FROM upstream_leases WHERE family_id = ?1",
                params![family_id],
            )?;
            tx.commit()
        })
        .await
    }

    async fn try_lease(
        &self,
        family_id: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let (family_id, holder) = (family_id.to_string(), holder.to_string());
        self.with_conn(move |conn| {
            // One statement: insert, or take over a lease of our own or one that ran out.
            let changed = conn.execute(
                "INSERT INTO upstream_leases (family_id, holder, until_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (family_id) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
                 WHERE upstream_leases.holder = excluded.holder OR upstream_leases.until_ms <= ?4",
                params![family_id, holder, now_ms.saturating_add(ttl_ms), now_ms],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn release_lease(&self, family_id: &str, holder: &str) -> Result<(), StoreError> {
        let (family_id, holder) = (family_id.to_string(), holder.to_string());
        self.with_conn(move |conn| {
            conn.execute(
                "DELETE FROM upstream_leases WHERE family_id = ?1 AND holder = ?2",
                params![family_id, holder],
            )
            .map(|_| ())
        })
        .await
    }

    async fn note_access_token(
        &self,
        family_id: &str,
        hash: &TokenHash,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let (family_id, hash) = (family_id.to_string(), *hash);
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO upstream_access_tokens (hash, family_id, expires_at_ms) VALUES (?1, ?2, ?3)",
                params![&hash[..], family_id, expires_at_ms],
            )
            .map(|_| ())
        })
        .await
    }

    async fn end_access_tokens(&self, family_id: &str, now_ms: i64) -> Result<(), StoreError> {
        let family_id = family_id.to_string();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO upstream_ended (family_id, ended_at_ms) VALUES (?1, ?2)",
                params![family_id, now_ms],
            )
            .map(|_| ())
        })
        .await
    }

    async fn access_token_ended(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let hash = *hash;
        self.with_conn(move |conn| {
            conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM upstream_access_tokens t WHERE t.hash = ?1
                     AND (EXISTS (SELECT 1 FROM upstream_ended e WHERE e.family_id = t.family_id)
                          OR EXISTS (SELECT 1 FROM families f
                                     WHERE f.id = t.family_id AND f.revoked_at_ms IS NOT NULL)))",
                params![&hash[..]],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn family_ended(&self, family_id: &str) -> Result<bool, StoreError> {
        let family_id = family_id.to_string();
        self.with_conn(move |conn| {
            conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM upstream_ended WHERE family_id = ?1)
                     OR EXISTS (SELECT 1 FROM families WHERE id = ?1 AND revoked_at_ms IS NOT NULL)",
                params![family_id],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn queue_revocation(
        &self,
        family_id: &str,
        next_at_ms: i64,
    ) -> Result<Option<QueuedRevocation>, StoreError> {
        let family_id = family_id.to_string();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let sealed: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT sealed FROM upstream_grants WHERE family_id = ?1",
                    params![family_id],
                    |r| r.get(0),
                )
                .optional()?;
            let mut queued = None;
            if let Some(sealed) = sealed {
                tx.execute(
                    "INSERT INTO upstream_revocations (family_id, sealed, attempts, next_at_ms, queued_at_ms)
                     VALUES (?1, ?2, 0, ?3, ?3)",
                    params![family_id, sealed, next_at_ms],
                )?;
                queued = Some(QueuedRevocation {
                    id: tx.last_insert_rowid(),
                    family_id: family_id.clone(),
                    sealed,
                    attempts: 0,
                });
            }
            tx.execute(
                "DELETE FROM upstream_grants WHERE family_id = ?1",
                params![family_id],
            )?;
            tx.commit()?;
            Ok(queued)
        })
        .await
    }

    async fn queue_ended_grants(&self, next_at_ms: i64, limit: usize) -> Result<u64, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            // One write transaction, as queue_revocation: no other handle moves or replaces
            // these grants between the read and the move.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let ended = {
                let mut stmt = tx.prepare(
                    "SELECT g.family_id FROM upstream_grants g
                     WHERE EXISTS (SELECT 1 FROM upstream_ended e WHERE e.family_id = g.family_id)
                        OR EXISTS (SELECT 1 FROM families f
                                   WHERE f.id = g.family_id AND f.revoked_at_ms IS NOT NULL)
                     ORDER BY g.family_id LIMIT ?1",
                )?;
                let rows = stmt.query_map(params![limit], |r| r.get::<_, String>(0))?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            for family_id in &ended {
                tx.execute(
                    "INSERT INTO upstream_revocations (family_id, sealed, attempts, next_at_ms, queued_at_ms)
                     SELECT family_id, sealed, 0, ?2, ?2 FROM upstream_grants WHERE family_id = ?1",
                    params![family_id, next_at_ms],
                )?;
                tx.execute(
                    "DELETE FROM upstream_grants WHERE family_id = ?1",
                    params![family_id],
                )?;
            }
            tx.commit()?;
            Ok(ended.len() as u64)
        })
        .await
    }

    async fn claim_revocations(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<QueuedRevocation>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let due = {
                let mut stmt = tx.prepare(
                    "SELECT id, family_id, sealed, attempts FROM upstream_revocations
                     WHERE next_at_ms <= ?1 ORDER BY next_at_ms, id LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![now_ms, limit], |r| {
                    Ok(QueuedRevocation {
                        id: r.get(0)?,
                        family_id: r.get(1)?,
                        sealed: r.get(2)?,
                        attempts: r.get(3)?,
                    })
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            for q in &due {
                tx.execute(
                    "UPDATE upstream_revocations SET next_at_ms = ?2 WHERE id = ?1",
                    params![q.id, now_ms.saturating_add(lease_ms)],
                )?;
            }
            tx.commit()?;
            Ok(due)
        })
        .await
    }

    async fn retry_revocation(
        &self,
        id: i64,
        attempts: u32,
        next_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE upstream_revocations SET attempts = ?2, next_at_ms = ?3 WHERE id = ?1",
                params![id, attempts, next_at_ms],
            )
            .map(|_| ())
        })
        .await
    }

    async fn give_up_revocations(&self, queued_before_ms: i64) -> Result<u64, StoreError> {
        self.with_conn(move |conn| {
            conn.execute(
                "DELETE FROM upstream_revocations WHERE queued_at_ms < ?1",
                params![queued_before_ms],
            )
            .map(|n| n as u64)
        })
        .await
    }

    async fn drop_revocation(&self, id: i64) -> Result<(), StoreError> {
        self.with_conn(move |conn| {
            conn.execute(
                "DELETE FROM upstream_revocations WHERE id = ?1",
                params![id],
            )
            .map(|_| ())
        })
        .await
    }

    async fn note_session(
        &self,
        family_id: &str,
        sub: &str,
        sid: Option<&str>,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let (family_id, sub, sid) = (
            family_id.to_string(),
            sub.to_string(),
            sid.map(str::to_string),
        );
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO upstream_sessions (family_id, sub, sid, expires_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![family_id, sub, sid, expires_at_ms],
            )
            .map(|_| ())
        })
        .await
    }

    async fn sessions_of(
        &self,
        sub: Option<&str>,
        sid: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        if sub.is_none() && sid.is_none() {
            return Ok(Vec::new());
        }
        let (sub, sid) = (sub.map(str::to_string), sid.map(str::to_string));
        let limit = i64::try_from(super::MAX_SESSIONS_OF).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT family_id FROM upstream_sessions
                 WHERE (?1 IS NULL OR sub = ?1) AND (?2 IS NULL OR sid = ?2)
                 ORDER BY family_id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![sub, sid, limit], |r| r.get::<_, String>(0))?;
            rows.collect()
        })
        .await
    }

    async fn purge_upstream(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            // Expired grants are revoked at the provider before they go.
            tx.execute(
                "INSERT INTO upstream_revocations (family_id, sealed, attempts, next_at_ms, queued_at_ms)
                 SELECT family_id, sealed, 0, ?1, ?1 FROM upstream_grants WHERE expires_at_ms < ?1",
                params![before_ms],
            )?;
            let mut n = tx.execute(
                "DELETE FROM upstream_access_tokens WHERE expires_at_ms < ?1",
                params![before_ms],
            )?;
            n += tx.execute(
                "DELETE FROM upstream_ended WHERE ended_at_ms < ?1 AND NOT EXISTS (
                     SELECT 1 FROM upstream_access_tokens t WHERE t.family_id = upstream_ended.family_id)",
                params![before_ms],
            )?;
            n += tx.execute(
                "DELETE FROM upstream_pending WHERE expires_at_ms < ?1",
                params![before_ms],
            )?;
            n += tx.execute(
                "DELETE FROM upstream_grants WHERE expires_at_ms < ?1",
                params![before_ms],
            )?;
            n += tx.execute(
                "DELETE FROM upstream_leases WHERE until_ms < ?1",
                params![before_ms],
            )?;
            n += tx.execute(
                "DELETE FROM upstream_sessions WHERE expires_at_ms < ?1",
                params![before_ms],
            )?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::hash_refresh_token as h;

    #[tokio::test]
    async fn the_sqlite_store_keeps_the_store_contract() {
        let dirs = Mutex::new(Vec::new());
        super::super::contract::run_all(|| {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(dir.path()).unwrap();
            dirs.lock().unwrap().push(dir);
            store
        })
        .await;
    }

    #[tokio::test]
    async fn two_sqlite_handles_on_one_file_keep_the_upstream_contract_together() {
        let dir = tempfile::tempdir().unwrap();
        let a = SqliteStore::open(dir.path()).unwrap();
        let b = SqliteStore::open(dir.path()).unwrap();
        super::super::contract::upstream_run_all(&a, &b).await;
    }

    #[tokio::test]
    async fn sqlite_families_survive_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        let fam = Family {
            id: "f".into(),
            sub: "demo".into(),
            expires_at_ms: 50_000,
        };
        {
            let store = SqliteStore::open(&data).unwrap();
            store.create_family(&fam, &h("t1"), 10, 0).await.unwrap();
            assert_eq!(
                store.rotate(&h("t1"), &h("t2"), 1, 0).await.unwrap(),
                Rotation::Rotated(fam.clone())
            );
        }
        let reopened = SqliteStore::open(&data).unwrap();
        assert!(reopened.path().exists());
        assert_eq!(
            reopened.rotate(&h("t2"), &h("t3"), 2, 0).await.unwrap(),
            Rotation::Rotated(fam.clone())
        );
        assert_eq!(
            reopened.rotate(&h("t1"), &h("t4"), 3, 0).await.unwrap(),
            Rotation::Reused {
                family_id: "f".into()
            }
        );
        assert_eq!(
            reopened.revoked_since(3).await.unwrap(),
            vec!["f".to_string()]
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_data_dir_and_the_database_are_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("new/data");
        let store = SqliteStore::open(&data).unwrap();
        store
            .create_family(
                &Family {
                    id: "p".into(),
                    sub: "s".into(),
                    expires_at_ms: 9,
                },
                &h("p1"),
                1,
                0,
            )
            .await
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(store.path()), 0o600);
        let wal = data.join(format!("{DB_FILE}-wal"));
        assert!(!wal.exists() || mode(&wal) == 0o600, "{:o}", mode(&wal));
        drop(store);
        // A database an earlier version left world-readable is tightened at start.
        std::fs::set_permissions(data.join(DB_FILE), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let reopened = SqliteStore::open(&data).unwrap();
        assert_eq!(mode(reopened.path()), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn a_database_that_can_only_be_read_is_an_error_at_start() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let db = dir.path().join(DB_FILE);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o400)).unwrap();
        // (As root the file stays writable: nothing to check then.)
        if std::fs::OpenOptions::new().append(true).open(&db).is_ok() {
            return;
        }
        let e = SqliteStore::open(dir.path()).unwrap_err();
        assert!(e.0.contains("for writing"), "{e:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rotation_stuck_behind_the_lock_ends_within_its_time_and_changes_nothing() {
        // Another process holds SQLite's write lock longer than a store call may take: the
        // rotation fails in about its call time and is not committed later, so the retry
        // with the same cookie rotates. Before, it waited and committed after its request
        // had been answered 503, and the retry was reuse.
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with(dir.path(), Duration::from_millis(300)).unwrap();
        let fam = Family {
            id: "l".into(),
            sub: "s".into(),
            expires_at_ms: 100_000,
        };
        store.create_family(&fam, &h("l1"), 10, 0).await.unwrap();
        let other = Connection::open(store.path()).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = std::time::Instant::now();
        assert!(store
            .rotate(&h("l1"), &h("l2"), 1_000, 10_000)
            .await
            .is_err());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(
            store
                .rotate(&h("l1"), &h("l2"), 61_000, 10_000)
                .await
                .unwrap(),
            Rotation::Rotated(fam)
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sqlite_calls_leave_the_async_worker_free() {
        // On a single-threaded runtime a blocking call would hold the only worker; a
        // timer task must still tick while the store is locked by another thread.
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let conn = store.conn.clone();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let _guard = conn.lock().unwrap();
            locked_tx.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
        });
        locked_rx.recv().unwrap();
        let ticker = tokio::spawn(async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            std::time::Instant::now()
        });
        store.ping().await.unwrap();
        let pinged = std::time::Instant::now();
        let ticked = ticker.await.unwrap();
        assert!(
            ticked < pinged,
            "the timer could not run while SQLite was busy"
        );
        holder.join().unwrap();
    }
}
