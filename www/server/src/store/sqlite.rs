//! [`SqliteStore`]: refresh-token families in one SQLite file under the data directory.
//! Survives restarts. rusqlite blocks, so every call runs on tokio's blocking pool
//! (`spawn_blocking`), never on an async worker.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension as _, TransactionBehavior};

use super::{Family, RefreshStore, Rejection, Rotation, StoreError, StoreStats};
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
";

/// Refresh-token families in SQLite. One connection behind a mutex; every rotation is one
/// `BEGIN IMMEDIATE` transaction, run on the blocking pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError(e.to_string())
}

impl SqliteStore {
    /// Open (creating the directory and schema if needed) `dir/tokenwarden.sqlite3`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create data dir {}: {e}", dir.display())))?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
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
        tokio::task::spawn_blocking(move || {
            let mut conn = conn
                .lock()
                .map_err(|_| StoreError("sqlite mutex poisoned".into()))?;
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
                     ORDER BY created_at_ms DESC, rowid DESC LIMIT -1 OFFSET ?3",
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
                    && now_ms - retired_at_ms < window_ms
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
