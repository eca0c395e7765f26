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

/// At most this many logouts are noted in [`NotedEnds`]; beyond, the oldest is forgotten.
pub const MAX_NOTED_ENDS: usize = 10_000;

/// Logouts whose family the store could not end (it failed): the hash of each refresh token
/// presented, kept until maintenance ends its family ([`crate::session::end_noted`]). In
/// memory only: an instance that restarts, or one never asked again, forgets them (the
/// family then stays live until it expires or its user signs in again — its cookie was
/// cleared in the browser all the same).
#[derive(Debug, Default)]
pub struct NotedEnds(std::sync::Mutex<std::collections::VecDeque<crate::tokens::TokenHash>>);

impl NotedEnds {
    /// Note `token` (its hash); `false` when the oldest noted had to be forgotten for it.
    pub fn note(&self, token: crate::tokens::TokenHash) -> bool {
        let mut noted = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if noted.contains(&token) {
            return true;
        }
        let room = noted.len() < MAX_NOTED_ENDS;
        if !room {
            noted.pop_front();
        }
        noted.push_back(token);
        room
    }

    /// Take every one noted, oldest first.
    pub fn take(&self) -> Vec<crate::tokens::TokenHash> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect()
    }

    /// Put back `tokens` (taken and not ended), before any noted since.
    pub fn put_back(&self, tokens: Vec<crate::tokens::TokenHash>) {
        let mut noted = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for token in tokens.into_iter().rev() {
            if !noted.contains(&token) {
                noted.push_front(token);
            }
        }
        while noted.len() > MAX_NOTED_ENDS {
            noted.pop_front();
        }
    }

    /// How many are noted.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
