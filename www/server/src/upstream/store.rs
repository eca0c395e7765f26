//! What upstream mode keeps besides the refresh-token families of [`crate::store`]: pending
//! logins (single use, short-lived), the sealed provider grant of each family, and a lease per
//! family so that concurrent refreshes make one provider call.
//!
//! The lease lives in the store, not in a process mutex: two server instances on one database
//! see each other's lease. A PostgreSQL store implements [`UpstreamStore::try_lease`] the same
//! way (`INSERT … ON CONFLICT (family_id) DO UPDATE … WHERE until_ms < now`, or a
//! `SELECT … FOR UPDATE SKIP LOCKED` row lock held for the provider call).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension as _, TransactionBehavior};

use crate::store::StoreError;
use crate::tokens::TokenHash;

/// Storage for upstream mode. Values are sealed by the caller ([`super::seal`]): the store
/// never sees a token in clear.
pub trait UpstreamStore: Send + Sync + 'static {
    /// Remember a pending login under the hash of its `state`.
    fn put_pending(
        &self,
        key: &TokenHash,
        sealed: &[u8],
        expires_at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Take (and delete) the pending login for `key`; `None` if unknown, used or expired.
    fn take_pending(&self, key: &TokenHash, now_ms: i64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Store (or replace) the sealed grant of a family.
    fn put_grant(&self, family_id: &str, sealed: &[u8]) -> Result<(), StoreError>;
    /// The sealed grant of a family.
    fn grant(&self, family_id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Forget the grant (and lease) of a family.
    fn delete_grant(&self, family_id: &str) -> Result<(), StoreError>;
    /// Take the family's lease for `holder` until `now_ms + ttl_ms` unless someone else holds a
    /// lease that has not run out. `true` when `holder` now holds it.
    fn try_lease(
        &self,
        family_id: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Give the lease back (only if `holder` still holds it).
    fn release_lease(&self, family_id: &str, holder: &str) -> Result<(), StoreError>;
}

#[derive(Debug, Default)]
struct Tables {
    pending: HashMap<TokenHash, (Vec<u8>, i64)>,
    grants: HashMap<String, Vec<u8>>,
    leases: HashMap<String, (String, i64)>,
}

/// In memory (lost on restart; one process).
#[derive(Debug, Default)]
pub struct MemoryUpstreamStore(Mutex<Tables>);

impl MemoryUpstreamStore {
    fn lock(&self) -> Result<MutexGuard<'_, Tables>, StoreError> {
        self.0
            .lock()
            .map_err(|_| StoreError("upstream store mutex poisoned".into()))
    }
}

impl UpstreamStore for MemoryUpstreamStore {
    fn put_pending(
        &self,
        key: &TokenHash,
        sealed: &[u8],
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut t = self.lock()?;
        t.pending
            .retain(|_, (_, exp)| *exp > expires_at_ms - 3_600_000);
        t.pending.insert(*key, (sealed.to_vec(), expires_at_ms));
        Ok(())
    }

    fn take_pending(&self, key: &TokenHash, now_ms: i64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .lock()?
            .pending
            .remove(key)
            .filter(|(_, exp)| *exp > now_ms)
            .map(|(v, _)| v))
    }

    fn put_grant(&self, family_id: &str, sealed: &[u8]) -> Result<(), StoreError> {
        self.lock()?
            .grants
            .insert(family_id.to_string(), sealed.to_vec());
        Ok(())
    }

    fn grant(&self, family_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock()?.grants.get(family_id).cloned())
    }

    fn delete_grant(&self, family_id: &str) -> Result<(), StoreError> {
        let mut t = self.lock()?;
        t.grants.remove(family_id);
        t.leases.remove(family_id);
        Ok(())
    }

    fn try_lease(
        &self,
        family_id: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut t = self.lock()?;
        match t.leases.get(family_id) {
            Some((h, until)) if h != holder && *until > now_ms => Ok(false),
            _ => {
                t.leases
                    .insert(family_id.to_string(), (holder.to_string(), now_ms + ttl_ms));
                Ok(true)
            }
        }
    }

    fn release_lease(&self, family_id: &str, holder: &str) -> Result<(), StoreError> {
        let mut t = self.lock()?;
        if t.leases.get(family_id).is_some_and(|(h, _)| h == holder) {
            t.leases.remove(family_id);
        }
        Ok(())
    }
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS upstream_pending (
    key BLOB PRIMARY KEY,
    sealed BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS upstream_grants (
    family_id TEXT PRIMARY KEY,
    sealed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS upstream_leases (
    family_id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms INTEGER NOT NULL
);
";

/// In the same SQLite file as the families (own connection, own tables). Every
/// read-then-write is one `BEGIN IMMEDIATE` transaction, so processes sharing the file
/// agree on who holds a lease.
#[derive(Debug)]
pub struct SqliteUpstreamStore(Mutex<Connection>);

fn err(e: rusqlite::Error) -> StoreError {
    StoreError(e.to_string())
}

impl SqliteUpstreamStore {
    /// Open `dir/tokenwarden.sqlite3` and create the upstream tables if needed.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create data dir {}: {e}", dir.display())))?;
        let conn = Connection::open(dir.join(crate::sqlite::DB_FILE)).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self(Mutex::new(conn)))
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.0
            .lock()
            .map_err(|_| StoreError("sqlite mutex poisoned".into()))
    }
}

impl UpstreamStore for SqliteUpstreamStore {
    fn put_pending(
        &self,
        key: &TokenHash,
        sealed: &[u8],
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.execute(
            "DELETE FROM upstream_pending WHERE expires_at_ms < ?1",
            params![expires_at_ms - 3_600_000],
        )
        .map_err(err)?;
        conn.execute(
            "INSERT OR REPLACE INTO upstream_pending (key, sealed, expires_at_ms) VALUES (?1, ?2, ?3)",
            params![&key[..], sealed, expires_at_ms],
        )
        .map_err(err)?;
        Ok(())
    }

    fn take_pending(&self, key: &TokenHash, now_ms: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let row: Option<(Vec<u8>, i64)> = tx
            .query_row(
                "SELECT sealed, expires_at_ms FROM upstream_pending WHERE key = ?1",
                params![&key[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(err)?;
        tx.execute(
            "DELETE FROM upstream_pending WHERE key = ?1",
            params![&key[..]],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(row.filter(|(_, exp)| *exp > now_ms).map(|(v, _)| v))
    }

    fn put_grant(&self, family_id: &str, sealed: &[u8]) -> Result<(), StoreError> {
        self.lock()?
            .execute(
                "INSERT OR REPLACE INTO upstream_grants (family_id, sealed) VALUES (?1, ?2)",
                params![family_id, sealed],
            )
            .map_err(err)?;
        Ok(())
    }

    fn grant(&self, family_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.lock()?
            .query_row(
                "SELECT sealed FROM upstream_grants WHERE family_id = ?1",
                params![family_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)
    }

    fn delete_grant(&self, family_id: &str) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.execute(
            "DELETE FROM upstream_grants WHERE family_id = ?1",
            params![family_id],
        )
        .map_err(err)?;
        conn.execute(
            "DELETE FROM upstream_leases WHERE family_id = ?1",
            params![family_id],
        )
        .map_err(err)?;
        Ok(())
    }

    fn try_lease(
        &self,
        family_id: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let conn = self.lock()?;
        // One statement: insert, or take over a lease of our own or one that ran out.
        let changed = conn
            .execute(
                "INSERT INTO upstream_leases (family_id, holder, until_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (family_id) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
                 WHERE upstream_leases.holder = excluded.holder OR upstream_leases.until_ms <= ?4",
                params![family_id, holder, now_ms + ttl_ms, now_ms],
            )
            .map_err(err)?;
        Ok(changed == 1)
    }

    fn release_lease(&self, family_id: &str, holder: &str) -> Result<(), StoreError> {
        self.lock()?
            .execute(
                "DELETE FROM upstream_leases WHERE family_id = ?1 AND holder = ?2",
                params![family_id, holder],
            )
            .map_err(err)?;
        Ok(())
    }
}

/// Behaviour every upstream store must show.
#[cfg(test)]
pub(crate) fn check_upstream_store_contract(a: &dyn UpstreamStore, b: &dyn UpstreamStore) {
    use crate::tokens::hash_refresh_token as h;
    // Pending logins: single use, and never after they expire.
    a.put_pending(&h("s1"), b"p1", 1_000).unwrap();
    a.put_pending(&h("s2"), b"p2", 1_000).unwrap();
    assert_eq!(
        b.take_pending(&h("s1"), 10).unwrap().as_deref(),
        Some(&b"p1"[..])
    );
    assert_eq!(a.take_pending(&h("s1"), 10).unwrap(), None);
    assert_eq!(a.take_pending(&h("s2"), 1_000).unwrap(), None);
    assert_eq!(a.take_pending(&h("nope"), 10).unwrap(), None);
    // Grants.
    a.put_grant("f", b"g1").unwrap();
    a.put_grant("f", b"g2").unwrap();
    assert_eq!(b.grant("f").unwrap().as_deref(), Some(&b"g2"[..]));
    // Leases: one holder at a time, across handles on the same data; taken over once run out.
    assert!(a.try_lease("f", "x", 0, 100).unwrap());
    assert!(!b.try_lease("f", "y", 50, 100).unwrap());
    assert!(
        a.try_lease("f", "x", 60, 100).unwrap(),
        "the holder may renew"
    );
    assert!(!b.try_lease("f", "y", 159, 100).unwrap());
    assert!(
        b.try_lease("f", "y", 160, 100).unwrap(),
        "a lease that ran out is taken over"
    );
    a.release_lease("f", "x").unwrap();
    assert!(
        !a.try_lease("f", "x", 170, 100).unwrap(),
        "only the holder releases"
    );
    b.release_lease("f", "y").unwrap();
    assert!(a.try_lease("f", "x", 170, 100).unwrap());
    assert!(
        a.try_lease("g", "y", 170, 100).unwrap(),
        "leases are per family"
    );
    a.delete_grant("f").unwrap();
    assert_eq!(b.grant("f").unwrap(), None);
    assert!(b.try_lease("f", "z", 171, 100).unwrap());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_upstream_store_keeps_the_contract() {
        let store = MemoryUpstreamStore::default();
        check_upstream_store_contract(&store, &store);
    }

    #[test]
    fn two_sqlite_handles_on_one_file_share_pending_logins_grants_and_leases() {
        let dir = tempfile::tempdir().unwrap();
        let a = SqliteUpstreamStore::open(dir.path()).unwrap();
        let b = SqliteUpstreamStore::open(dir.path()).unwrap();
        check_upstream_store_contract(&a, &b);
    }
}
