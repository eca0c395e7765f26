//! SQLite-backed [`RefreshStore`]: one file under the data directory, survives restarts.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension as _, TransactionBehavior};

use crate::store::{Family, RefreshStore, Rejection, Rotation, StoreError, StoreStats};
use crate::tokens::TokenHash;

/// File name inside the data directory.
pub const DB_FILE: &str = "tokenwarden.sqlite3";

/// Families that ended more than this long ago are deleted (with their token hashes).
const PURGE_AFTER_MS: i64 = 24 * 60 * 60 * 1000;

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
";

/// Refresh-token families in SQLite. One connection behind a mutex; every rotation is one
/// `BEGIN IMMEDIATE` transaction.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
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
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn
            .lock()
            .map_err(|_| StoreError("sqlite mutex poisoned".into()))
    }
}

impl RefreshStore for SqliteStore {
    fn create_family(
        &self,
        family: &Family,
        token: &TokenHash,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute(
            "DELETE FROM families WHERE expires_at_ms < ?1",
            params![now_ms - PURGE_AFTER_MS],
        )
        .map_err(err)?;
        tx.execute(
            "INSERT INTO families (id, sub, created_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![family.id, family.sub, now_ms, family.expires_at_ms],
        )
        .map_err(err)?;
        tx.execute(
            "INSERT INTO refresh_tokens (hash, family_id, issued_at_ms) VALUES (?1, ?2, ?3)",
            params![&token[..], family.id, now_ms],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    fn rotate(
        &self,
        token: &TokenHash,
        next: &TokenHash,
        now_ms: i64,
    ) -> Result<Rotation, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let row = tx
            .query_row(
                "SELECT t.family_id, t.retired_at_ms IS NULL, f.sub, f.expires_at_ms, f.revoked_at_ms IS NOT NULL
                 FROM refresh_tokens t JOIN families f ON f.id = t.family_id WHERE t.hash = ?1",
                params![&token[..]],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, bool>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, bool>(4)?,
                    ))
                },
            )
            .optional()
            .map_err(err)?;
        let Some((family_id, live, sub, expires_at_ms, revoked)) = row else {
            return Ok(Rotation::Rejected(Rejection::Unknown));
        };
        let outcome = if revoked {
            Rotation::Rejected(Rejection::Revoked)
        } else if expires_at_ms <= now_ms {
            Rotation::Rejected(Rejection::Expired)
        } else if !live {
            tx.execute(
                "UPDATE families SET revoked_at_ms = ?1 WHERE id = ?2",
                params![now_ms, family_id],
            )
            .map_err(err)?;
            Rotation::Reused { family_id }
        } else {
            tx.execute(
                "UPDATE refresh_tokens SET retired_at_ms = ?1 WHERE hash = ?2",
                params![now_ms, &token[..]],
            )
            .map_err(err)?;
            tx.execute(
                "INSERT INTO refresh_tokens (hash, family_id, issued_at_ms) VALUES (?1, ?2, ?3)",
                params![&next[..], family_id, now_ms],
            )
            .map_err(err)?;
            Rotation::Rotated(Family {
                id: family_id,
                sub,
                expires_at_ms,
            })
        };
        tx.commit().map_err(err)?;
        Ok(outcome)
    }

    fn revoke_family_of(
        &self,
        token: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let family_id: Option<String> = tx
            .query_row(
                "SELECT f.id FROM refresh_tokens t JOIN families f ON f.id = t.family_id
                 WHERE t.hash = ?1 AND f.revoked_at_ms IS NULL",
                params![&token[..]],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        if let Some(id) = &family_id {
            tx.execute(
                "UPDATE families SET revoked_at_ms = ?1 WHERE id = ?2",
                params![now_ms, id],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(family_id)
    }

    fn stats(&self, now_ms: i64) -> Result<StoreStats, StoreError> {
        let conn = self.lock()?;
        let live_families: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM families WHERE revoked_at_ms IS NULL AND expires_at_ms > ?1",
                params![now_ms],
                |r| r.get(0),
            )
            .map_err(err)?;
        let one_live: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM (
                    SELECT f.id FROM families f
                    JOIN refresh_tokens t ON t.family_id = f.id AND t.retired_at_ms IS NULL
                    WHERE f.revoked_at_ms IS NULL AND f.expires_at_ms > ?1
                    GROUP BY f.id HAVING COUNT(*) = 1)",
                params![now_ms],
                |r| r.get(0),
            )
            .map_err(err)?;
        Ok(StoreStats {
            live_families: u64::try_from(live_families).unwrap_or(0),
            families_with_one_live_token: u64::try_from(one_live).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::hash_refresh_token as h;

    #[test]
    fn the_sqlite_store_keeps_the_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        crate::store::check_store_contract(&SqliteStore::open(dir.path()).unwrap());
    }

    #[test]
    fn sqlite_families_survive_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        let fam = Family {
            id: "f".into(),
            sub: "demo".into(),
            expires_at_ms: 50_000,
        };
        {
            let store = SqliteStore::open(&data).unwrap();
            store.create_family(&fam, &h("t1"), 0).unwrap();
            assert_eq!(
                store.rotate(&h("t1"), &h("t2"), 1).unwrap(),
                Rotation::Rotated(fam.clone())
            );
        }
        let reopened = SqliteStore::open(&data).unwrap();
        assert!(reopened.path().exists());
        assert_eq!(
            reopened.rotate(&h("t2"), &h("t3"), 2).unwrap(),
            Rotation::Rotated(fam.clone())
        );
        assert_eq!(
            reopened.rotate(&h("t1"), &h("t4"), 3).unwrap(),
            Rotation::Reused {
                family_id: "f".into()
            }
        );
    }
}
