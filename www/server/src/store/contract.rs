//! The behaviour every [`RefreshStore`] must show. Each function takes a fresh, empty store;
//! [`run_all`] runs them all. An implementation's tests call `run_all(|| make_store())`, so
//! a new store (PostgreSQL, …) is held to the same contract as the memory and SQLite ones.
//! The functions panic (assert) on a breach, as tests do.

use std::future::Future;

use super::{Family, RefreshStore, Rejection, Rotation, StoreStats};
use crate::tokens::hash_refresh_token as h;

fn family(id: &str, sub: &str, expires_at_ms: i64) -> Family {
    Family {
        id: id.into(),
        sub: sub.into(),
        expires_at_ms,
    }
}

/// Run every contract check, each on a store made by `make`.
pub async fn run_all<S: RefreshStore, F: FnMut() -> S>(mut make: F) {
    rotation_retires_the_token_and_reuse_revokes_the_family(&make()).await;
    an_expired_family_refuses_rotation_and_logout_revokes_once(&make()).await;
    a_user_beyond_the_cap_loses_the_oldest_families_first(&make()).await;
    purge_deletes_ended_families_and_keeps_live_ones(&make()).await;
    a_store_that_answers_is_ready(&make()).await;
    a_family_remembers_its_dpop_key_for_every_token(&make()).await;
    a_proof_id_is_accepted_once_until_it_expires(&make()).await;
}

/// `bind_key` binds the family; `key_of` finds it from any of its tokens, retired or live.
pub async fn a_family_remembers_its_dpop_key_for_every_token(store: &dyn RefreshStore) {
    let fam = family("f1", "demo", 10_000);
    ok(store.create_family(&fam, &h("a"), 10, 0)).await;
    assert_eq!(ok(store.key_of(&h("a"))).await, None);
    ok(store.bind_key("f1", "k1", 5)).await;
    ok(store.rotate(&h("a"), &h("b"), 6)).await;
    ok(store.bind_key("f1", "k2", 7)).await;
    for t in ["a", "b"] {
        assert_eq!(
            ok(store.key_of(&h(t))).await,
            Some(super::BoundKey {
                family_id: "f1".into(),
                jkt: "k2".into(),
                used_at_ms: 7
            })
        );
    }
    assert_eq!(ok(store.key_of(&h("unknown"))).await, None);
}

/// A proof id is new once; a replay inside its window is not; after expiry it is forgotten.
pub async fn a_proof_id_is_accepted_once_until_it_expires(store: &dyn RefreshStore) {
    let (p, q) = ([1u8; 32], [2u8; 32]);
    assert!(ok(store.first_use_of_proof(&p, 100, 0)).await);
    assert!(!ok(store.first_use_of_proof(&p, 100, 50)).await);
    assert!(ok(store.first_use_of_proof(&q, 100, 50)).await);
    assert!(ok(store.first_use_of_proof(&p, 300, 100)).await);
    assert!(!ok(store.first_use_of_proof(&p, 300, 299)).await);
}

async fn ok<T, E: std::fmt::Debug>(f: impl Future<Output = Result<T, E>>) -> T {
    f.await.expect("store call failed")
}

/// Rotate, replay (reuse → revoked), and the newest token dies with its family.
pub async fn rotation_retires_the_token_and_reuse_revokes_the_family(store: &dyn RefreshStore) {
    let fam = family("f1", "demo", 10_000);
    assert!(ok(store.create_family(&fam, &h("a"), 10, 0))
        .await
        .is_empty());
    assert_eq!(
        ok(store.stats(0)).await,
        StoreStats {
            live_families: 1,
            families_with_one_live_token: 1
        }
    );
    assert_eq!(
        ok(store.rotate(&h("a"), &h("b"), 1)).await,
        Rotation::Rotated(fam.clone())
    );
    assert_eq!(
        ok(store.rotate(&h("zz"), &h("c"), 1)).await,
        Rotation::Rejected(Rejection::Unknown)
    );
    assert_eq!(ok(store.stats(1)).await.families_with_one_live_token, 1);
    assert_eq!(
        ok(store.rotate(&h("a"), &h("c"), 2)).await,
        Rotation::Reused {
            family_id: "f1".into()
        }
    );
    assert_eq!(
        ok(store.rotate(&h("b"), &h("d"), 3)).await,
        Rotation::Rejected(Rejection::Revoked)
    );
    assert_eq!(ok(store.stats(3)).await.live_families, 0);
    assert_eq!(ok(store.revoked_since(2)).await, vec!["f1".to_string()]);
    assert!(ok(store.revoked_since(3)).await.is_empty());
}

/// A family past its end refuses rotation; logout revokes a family once.
pub async fn an_expired_family_refuses_rotation_and_logout_revokes_once(store: &dyn RefreshStore) {
    store_family(store, "f2", "x", 10_000).await;
    assert_eq!(
        ok(store.rotate(&h("x"), &h("y"), 10_000)).await,
        Rotation::Rejected(Rejection::Expired)
    );
    assert_eq!(
        ok(store.revoke_family_of(&h("x"), 5)).await,
        Some("f2".into())
    );
    assert_eq!(ok(store.revoke_family_of(&h("x"), 5)).await, None);
    assert_eq!(ok(store.revoke_family_of(&h("nope"), 5)).await, None);
}

async fn store_family(store: &dyn RefreshStore, id: &str, token: &str, expires_at_ms: i64) {
    ok(store.create_family(&family(id, "demo", expires_at_ms), &h(token), 10, 0)).await;
}

/// With a cap of 2, the third login of a user revokes the first; other users are untouched.
pub async fn a_user_beyond_the_cap_loses_the_oldest_families_first(store: &dyn RefreshStore) {
    let cap = 2;
    let other = family("other", "someone-else", 10_000);
    assert!(ok(store.create_family(&other, &h("o"), cap, 0))
        .await
        .is_empty());
    for (i, (id, token)) in [("c1", "t1"), ("c2", "t2")].into_iter().enumerate() {
        let now = i as i64 + 1;
        let revoked =
            ok(store.create_family(&family(id, "demo", 10_000), &h(token), cap, now)).await;
        assert!(revoked.is_empty(), "{id}: {revoked:?}");
    }
    let revoked = ok(store.create_family(&family("c3", "demo", 10_000), &h("t3"), cap, 3)).await;
    assert_eq!(revoked, vec!["c1".to_string()]);
    assert_eq!(
        ok(store.rotate(&h("t1"), &h("t1b"), 4)).await,
        Rotation::Rejected(Rejection::Revoked)
    );
    for token in ["t2", "t3", "o"] {
        assert!(
            matches!(
                ok(store.rotate(&h(token), &h(&format!("{token}+")), 4)).await,
                Rotation::Rotated(_)
            ),
            "{token}"
        );
    }
    // A family that ended by itself does not count against the cap.
    ok(store.revoke_family_of(&h("t2+"), 5)).await;
    let revoked = ok(store.create_family(&family("c4", "demo", 10_000), &h("t4"), cap, 6)).await;
    assert!(revoked.is_empty(), "{revoked:?}");
    assert_eq!(ok(store.stats(6)).await.live_families, 3);
}

/// Families that ended before the cut-off go (their tokens become unknown); live ones stay.
pub async fn purge_deletes_ended_families_and_keeps_live_ones(store: &dyn RefreshStore) {
    store_family(store, "old", "o1", 1_000).await;
    store_family(store, "revoked", "r1", 50_000).await;
    store_family(store, "live", "l1", 50_000).await;
    ok(store.revoke_family_of(&h("r1"), 1_500)).await;
    assert_eq!(ok(store.purge(500)).await, 0);
    assert_eq!(ok(store.purge(2_000)).await, 2);
    for token in ["o1", "r1"] {
        assert_eq!(
            ok(store.rotate(&h(token), &h(&format!("{token}+")), 2_000)).await,
            Rotation::Rejected(Rejection::Unknown),
            "{token}"
        );
    }
    assert!(matches!(
        ok(store.rotate(&h("l1"), &h("l2"), 2_000)).await,
        Rotation::Rotated(_)
    ));
    assert_eq!(ok(store.purge(2_000)).await, 0);
}

/// `ping` succeeds on a working store.
pub async fn a_store_that_answers_is_ready(store: &dyn RefreshStore) {
    ok(store.ping()).await;
}
