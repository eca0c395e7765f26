//! Families whose access tokens must be refused before they expire (hole: tokens outliving
//! logout). Every access token carries its family as `sid`; when a family is revoked its id
//! stays here until the last token it could have been issued has expired.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

/// Revoked family ids, each with the epoch ms after which it can be forgotten.
#[derive(Debug, Default)]
pub struct RevokedFamilies(RwLock<HashMap<String, i64>>);

impl RevokedFamilies {
    /// Refuse tokens of `family_id` until `until_ms`.
    pub fn revoke(&self, family_id: &str, until_ms: i64) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let until = map.entry(family_id.to_string()).or_insert(until_ms);
        *until = (*until).max(until_ms);
    }

    /// Whether tokens of `family_id` are refused at `now_ms`.
    pub fn is_revoked(&self, family_id: &str, now_ms: i64) -> bool {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.get(family_id).is_some_and(|until| *until > now_ms)
    }

    /// Forget families whose tokens have all expired.
    pub fn forget_expired(&self, now_ms: i64) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, until| *until > now_ms);
    }

    /// How many families are remembered.
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
