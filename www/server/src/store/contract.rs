//! The behaviour every [`RefreshStore`] must show. Each function takes a fresh, empty store;
//! [`run_all`] runs them all. An implementation's tests call `run_all(|| make_store())`, so
//! a new store (PostgreSQL, …) is held to the same contract as the memory and SQLite ones.
//! The functions panic (assert) on a breach, as tests do.
//!
//! [`upstream_run_all`] does the same for [`UpstreamStore`], on two handles `a` and `b` on the
//! same data (the same object twice for a store in memory; two connections to one database
//! otherwise), so that what one handle writes the other must see.

use std::future::Future;

use super::{Family, RefreshStore, Rejection, Rotation, Standing, StoreStats, UpstreamStore};
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
    run_all_async(|| std::future::ready(make())).await;
}

/// [`run_all`] for stores made asynchronously (connecting to a database).
pub async fn run_all_async<S, F, Fut>(mut make: F)
where
    S: RefreshStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    rotation_retires_the_token_and_reuse_revokes_the_family(&make().await).await;
    an_expired_family_refuses_rotation_and_logout_revokes_once(&make().await).await;
    a_user_beyond_the_cap_loses_the_oldest_families_first(&make().await).await;
    purge_deletes_ended_families_and_keeps_live_ones(&make().await).await;
    a_store_that_answers_is_ready(&make().await).await;
    a_lost_response_gets_the_same_successor_until_it_is_used(&make().await).await;
    a_lost_response_is_reuse_after_the_window(&make().await).await;
    a_clock_stepped_back_does_not_stretch_the_window(&make().await).await;
    a_login_stays_live_when_the_clock_stepped_back(&make().await).await;
    a_lost_response_is_reuse_when_the_window_is_off(&make().await).await;
    the_shared_secret_is_the_first_one_stored(&make().await).await;
    concurrent_presentations_rotate_once(&make().await).await;
    a_family_remembers_its_dpop_key_for_every_token(&make().await).await;
    a_proof_id_is_accepted_once_until_it_expires(&make().await).await;
    standing_tells_what_rotate_would_do_and_changes_nothing(&make().await).await;
}

/// `standing` answers what `rotate` would (live, lost response, reuse, refused) and changes
/// nothing: the token it calls live still rotates, the parent it calls retired revokes
/// nothing until presented.
pub async fn standing_tells_what_rotate_would_do_and_changes_nothing(store: &dyn RefreshStore) {
    let w = 10_000;
    let fam = family("st", "demo", 100_000);
    ok(store.create_family(&fam, &h("a"), 10, 0)).await;
    let at = |token: &'static str, next: &'static str, now: i64, window: i64| async move {
        ok(store.standing(&h(token), &h(next), now, window)).await
    };
    assert_eq!(at("a", "b", 1_000, w).await, Standing::Live);
    assert_eq!(
        at("nope", "b", 1_000, w).await,
        Standing::Rejected(Rejection::Unknown)
    );
    assert_eq!(
        ok(store.rotate(&h("a"), &h("b"), 1_000, w)).await,
        Rotation::Rotated(fam.clone()),
        "standing changed nothing"
    );
    assert_eq!(at("a", "b", 10_999, w).await, Standing::Repeatable);
    assert_eq!(
        at("a", "b", 11_000, w).await,
        Standing::Retired,
        "window over"
    );
    assert_eq!(
        at("a", "b", 2_000, 0).await,
        Standing::Retired,
        "window off"
    );
    assert_eq!(
        at("a", "x", 2_000, w).await,
        Standing::Retired,
        "not its successor"
    );
    assert_eq!(at("b", "c", 2_000, w).await, Standing::Live);
    assert_eq!(
        ok(store.rotate(&h("b"), &h("c"), 2_000, w)).await,
        Rotation::Rotated(fam.clone()),
        "the retired parent's standing revoked nothing"
    );
    assert_eq!(
        at("a", "b", 3_000, w).await,
        Standing::Retired,
        "successor used"
    );
    assert_eq!(
        at("c", "d", 100_000, w).await,
        Standing::Rejected(Rejection::Expired)
    );
    assert_eq!(
        ok(store.revoke_family_of(&h("c"), 4_000)).await,
        Some("st".into())
    );
    for token in ["a", "b", "c"] {
        assert_eq!(
            at(token, "z", 5_000, w).await,
            Standing::Rejected(Rejection::Revoked),
            "{token}"
        );
    }
}

/// `bind_key` binds the family; `key_of` finds it from any of its tokens, retired or live.
pub async fn a_family_remembers_its_dpop_key_for_every_token(store: &dyn RefreshStore) {
    let fam = family("f1", "demo", 10_000);
    ok(store.create_family(&fam, &h("a"), 10, 0)).await;
    assert_eq!(ok(store.key_of(&h("a"))).await, None);
    ok(store.bind_key("f1", "k1", 5)).await;
    ok(store.rotate(&h("a"), &h("b"), 6, 0)).await;
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
        ok(store.rotate(&h("a"), &h("b"), 1, 0)).await,
        Rotation::Rotated(fam.clone())
    );
    assert_eq!(
        ok(store.rotate(&h("zz"), &h("c"), 1, 0)).await,
        Rotation::Rejected(Rejection::Unknown)
    );
    assert_eq!(ok(store.stats(1)).await.families_with_one_live_token, 1);
    assert_eq!(
        ok(store.rotate(&h("a"), &h("c"), 2, 0)).await,
        Rotation::Reused {
            family_id: "f1".into()
        }
    );
    assert_eq!(
        ok(store.rotate(&h("b"), &h("d"), 3, 0)).await,
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
        ok(store.rotate(&h("x"), &h("y"), 10_000, 0)).await,
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
        ok(store.rotate(&h("t1"), &h("t1b"), 4, 0)).await,
        Rotation::Rejected(Rejection::Revoked)
    );
    for token in ["t2", "t3", "o"] {
        assert!(
            matches!(
                ok(store.rotate(&h(token), &h(&format!("{token}+")), 4, 0)).await,
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
            ok(store.rotate(&h(token), &h(&format!("{token}+")), 2_000, 0)).await,
            Rotation::Rejected(Rejection::Unknown),
            "{token}"
        );
    }
    assert!(matches!(
        ok(store.rotate(&h("l1"), &h("l2"), 2_000, 0)).await,
        Rotation::Rotated(_)
    ));
    assert_eq!(ok(store.purge(2_000)).await, 0);
}

/// `ping` succeeds on a working store.
pub async fn a_store_that_answers_is_ready(store: &dyn RefreshStore) {
    ok(store.ping()).await;
}

/// The window is less than its length either way ([`super::within_window`]): presented an
/// hour "before" it was retired (the server's clock stepped back), the parent is reuse, not
/// a lost response (any negative difference used to be inside); presented a few ms before
/// (a concurrent request stamped earlier), it is the lost response.
pub async fn a_clock_stepped_back_does_not_stretch_the_window(store: &dyn RefreshStore) {
    let fam = family("back", "demo", 10_000_000);
    ok(store.create_family(&fam, &h("bp"), 10, 3_600_000)).await;
    assert!(matches!(
        ok(store.rotate(&h("bp"), &h("bs"), 3_700_000, 10_000)).await,
        Rotation::Rotated(_)
    ));
    assert_eq!(
        ok(store.standing(&h("bp"), &h("bs"), 112_000, 10_000)).await,
        Standing::Retired
    );
    assert_eq!(
        ok(store.rotate(&h("bp"), &h("bs"), 112_000, 10_000)).await,
        Rotation::Reused {
            family_id: "back".into()
        }
    );
    // Two presentations at once, the later-stamped one committed first: the other's
    // stamp is a little before the retirement, and it is the lost response, not reuse.
    let fam2 = family("both", "demo", 10_000_000);
    ok(store.create_family(&fam2, &h("cp"), 10, 0)).await;
    assert!(matches!(
        ok(store.rotate(&h("cp"), &h("cs"), 5_000, 10_000)).await,
        Rotation::Rotated(_)
    ));
    assert_eq!(
        ok(store.rotate(&h("cp"), &h("cs"), 4_990, 10_000)).await,
        Rotation::Repeated(fam2)
    );
}

/// The per-user cap keeps the families made last, whatever the clock said when they were
/// made: a login after the server's clock stepped back an hour is kept, the oldest goes.
/// Before (SQLite), it was ordered by the creation time and revoked itself.
pub async fn a_login_stays_live_when_the_clock_stepped_back(store: &dyn RefreshStore) {
    for (i, at) in [(1, 7_200_000), (2, 7_201_000)] {
        let f = family(&format!("cb{i}"), "capped", 100_000_000);
        ok(store.create_family(&f, &h(&format!("cb{i}")), 2, at)).await;
    }
    let late = family("cb3", "capped", 100_000_000);
    let capped = ok(store.create_family(&late, &h("cb3"), 2, 3_600_000)).await;
    assert_eq!(capped, ["cb1"]);
    assert!(matches!(
        ok(store.rotate(&h("cb3"), &h("cb4"), 3_601_000, 0)).await,
        Rotation::Rotated(_)
    ));
}

/// The lost-response rule: within the window, the parent of a never-used successor gets
/// [`Rotation::Repeated`] (again and again) and nothing changes; once the successor was
/// used, the parent is reuse and the family is revoked.
pub async fn a_lost_response_gets_the_same_successor_until_it_is_used(store: &dyn RefreshStore) {
    let fam = family("lr", "demo", 100_000);
    ok(store.create_family(&fam, &h("p"), 10, 0)).await;
    let window = 10_000;
    assert_eq!(
        ok(store.rotate(&h("p"), &h("s"), 1_000, window)).await,
        Rotation::Rotated(fam.clone())
    );
    for now in [1_000, 5_000, 10_999] {
        assert_eq!(
            ok(store.rotate(&h("p"), &h("s"), now, window)).await,
            Rotation::Repeated(fam.clone()),
            "at {now}"
        );
    }
    assert_eq!(
        ok(store.stats(11_000)).await.families_with_one_live_token,
        1
    );
    // Another successor than the one it was rotated to is not the lost response.
    let other = family("lr2", "demo", 100_000);
    ok(store.create_family(&other, &h("q"), 10, 0)).await;
    assert_eq!(
        ok(store.rotate(&h("p"), &h("q"), 2_000, window)).await,
        Rotation::Reused {
            family_id: "lr".into()
        },
        "a live token of another family is not the successor"
    );
    // Same again in a fresh family, now using the successor before the replay.
    let fam3 = family("lr3", "demo", 100_000);
    ok(store.create_family(&fam3, &h("p3"), 10, 0)).await;
    assert!(matches!(
        ok(store.rotate(&h("p3"), &h("s3"), 1_000, window)).await,
        Rotation::Rotated(_)
    ));
    assert!(matches!(
        ok(store.rotate(&h("s3"), &h("n3"), 1_500, window)).await,
        Rotation::Rotated(_)
    ));
    assert_eq!(
        ok(store.rotate(&h("p3"), &h("s3"), 2_000, window)).await,
        Rotation::Reused {
            family_id: "lr3".into()
        },
        "the successor was used: its parent is reuse"
    );
    assert_eq!(
        ok(store.rotate(&h("n3"), &h("x3"), 2_001, window)).await,
        Rotation::Rejected(Rejection::Revoked)
    );
}

/// At or after the window's end the parent is reuse, even with its successor unused.
pub async fn a_lost_response_is_reuse_after_the_window(store: &dyn RefreshStore) {
    let fam = family("lw", "demo", 100_000);
    ok(store.create_family(&fam, &h("p"), 10, 0)).await;
    assert!(matches!(
        ok(store.rotate(&h("p"), &h("s"), 1_000, 10_000)).await,
        Rotation::Rotated(_)
    ));
    assert_eq!(
        ok(store.rotate(&h("p"), &h("s"), 11_000, 10_000)).await,
        Rotation::Reused {
            family_id: "lw".into()
        }
    );
    assert_eq!(
        ok(store.rotate(&h("s"), &h("t"), 11_001, 10_000)).await,
        Rotation::Rejected(Rejection::Revoked)
    );
}

/// A window of 0 turns the rule off: any replay is reuse.
pub async fn a_lost_response_is_reuse_when_the_window_is_off(store: &dyn RefreshStore) {
    let fam = family("lo", "demo", 100_000);
    ok(store.create_family(&fam, &h("p"), 10, 0)).await;
    assert!(matches!(
        ok(store.rotate(&h("p"), &h("s"), 1_000, 0)).await,
        Rotation::Rotated(_)
    ));
    assert_eq!(
        ok(store.rotate(&h("p"), &h("s"), 1_000, 0)).await,
        Rotation::Reused {
            family_id: "lo".into()
        }
    );
}

/// The first secret stored under a name wins; other names are independent.
pub async fn the_shared_secret_is_the_first_one_stored(store: &dyn RefreshStore) {
    assert_eq!(ok(store.shared_secret("a", b"one")).await, b"one".to_vec());
    assert_eq!(ok(store.shared_secret("a", b"two")).await, b"one".to_vec());
    assert_eq!(ok(store.shared_secret("b", b"two")).await, b"two".to_vec());
}

/// Four presentations of one token at once: exactly one rotates; with the window on the
/// others get the same successor, with it off (and other successors) they are reuse.
pub async fn concurrent_presentations_rotate_once(store: &dyn RefreshStore) {
    ok(store.create_family(&family("cc", "demo", 100_000), &h("c0"), 10, 0)).await;
    let (c0, c1) = (h("c0"), h("c1"));
    let r = || store.rotate(&c0, &c1, 1, 10_000);
    let (a, b, c, d) = tokio::join!(r(), r(), r(), r());
    let outcomes = [a, b, c, d].map(|o| o.expect("store call failed"));
    let rotated = outcomes
        .iter()
        .filter(|o| matches!(o, Rotation::Rotated(_)))
        .count();
    let repeated = outcomes
        .iter()
        .filter(|o| matches!(o, Rotation::Repeated(_)))
        .count();
    assert_eq!((rotated, repeated), (1, 3), "{outcomes:?}");
    assert_eq!(ok(store.stats(2)).await.families_with_one_live_token, 1);

    ok(store.create_family(&family("cd", "demo", 100_000), &h("d0"), 10, 0)).await;
    let (d0, d1, d2) = (h("d0"), h("d1"), h("d2"));
    let (a, b) = tokio::join!(store.rotate(&d0, &d1, 1, 0), store.rotate(&d0, &d2, 1, 0));
    let outcomes = [a, b].map(|o| o.expect("store call failed"));
    assert!(
        outcomes.iter().any(|o| matches!(o, Rotation::Rotated(_)))
            && outcomes
                .iter()
                .any(|o| matches!(o, Rotation::Reused { .. })),
        "{outcomes:?}"
    );
}

/// Run every [`UpstreamStore`] check on `a` and `b`, two handles on the same (empty) data
/// (each a [`RefreshStore`] too: the families of both sides live in one database).
pub async fn upstream_run_all<S: RefreshStore + UpstreamStore>(sa: &S, sb: &S) {
    let (a, b): (&dyn UpstreamStore, &dyn UpstreamStore) = (sa, sb);
    a_pending_login_is_single_use_and_never_outlives_its_expiry(a, b).await;
    grants_are_replaced_and_leases_are_held_by_one_holder_at_a_time(a, b).await;
    purge_drops_ended_upstream_rows_and_keeps_the_others(a, b).await;
    access_tokens_of_an_ended_family_are_known_whenever_they_were_noted(a, b).await;
    a_queued_revocation_is_claimed_by_one_handle_at_a_time_until_dropped(a, b).await;
    purge_queues_the_revocation_of_an_expired_grant(a, b).await;
    revocations_queued_before_a_cut_off_are_given_up_tried_or_not(a, b).await;
    a_familys_end_is_known_to_every_handle_without_any_noted_token(a, b).await;
    two_handles_claiming_at_the_same_moment_take_each_revocation_once(a, b).await;
    a_sweep_queues_the_grants_left_stored_for_ended_families_and_no_other(a, b).await;
    sweeps_and_ends_racing_queue_each_grant_once(a, b).await;
    a_family_revoked_on_the_refresh_side_has_ended_without_a_recorded_end(sa, a, b).await;
    sessions_are_found_by_sid_by_sub_or_by_both_until_purged(a, b).await;
}

/// Back-channel logout: a family noted with its provider session is found by that session's
/// `sid` (and `sub`, when both are given), or with every family of its subject by `sub`
/// alone; nothing by neither, nor by a `sid` of another subject. Noting again replaces;
/// purge drops a session once its family ended before the cut-off.
pub async fn sessions_are_found_by_sid_by_sub_or_by_both_until_purged(
    a: &dyn UpstreamStore,
    b: &dyn UpstreamStore,
) {
    ok(a.note_session("ses-1", "kim", Some("sid-a"), 50_000)).await;
    ok(a.note_session("ses-2", "kim", Some("sid-b"), 50_000)).await;
    ok(b.note_session("ses-3", "kim", None, 90_000)).await;
    ok(b.note_session("ses-4", "lee", Some("sid-c"), 90_000)).await;
    let of = |sub: Option<&'static str>, sid: Option<&'static str>| async move {
        ok(b.sessions_of(sub, sid)).await
    };
    assert_eq!(of(None, Some("sid-a")).await, ["ses-1"]);
    assert_eq!(of(Some("kim"), Some("sid-b")).await, ["ses-2"]);
    assert!(
        of(Some("lee"), Some("sid-a")).await.is_empty(),
        "a sid of another subject"
    );
    assert_eq!(of(Some("kim"), None).await, ["ses-1", "ses-2", "ses-3"]);
    assert_eq!(of(Some("lee"), None).await, ["ses-4"]);
    assert!(of(None, None).await.is_empty(), "neither");
    assert!(of(Some("nobody"), None).await.is_empty());
    ok(a.note_session("ses-1", "kim", Some("sid-z"), 50_000)).await;
    assert!(
        of(None, Some("sid-a")).await.is_empty(),
        "noted again: replaced"
    );
    assert_eq!(of(None, Some("sid-z")).await, ["ses-1"]);
    ok(a.purge_upstream(60_000)).await;
    assert_eq!(
        of(Some("kim"), None).await,
        ["ses-3"],
        "the sessions of families that ended before the cut-off went"
    );
    ok(a.purge_upstream(100_000)).await;
    assert!(of(Some("kim"), None).await.is_empty());
    assert!(of(None, Some("sid-c")).await.is_empty());
}

/// A family revoked on the refresh side (logout, reuse, the per-user cap) has ended on the
/// upstream side too, whether or not its end was recorded (`end_access_tokens`, which comes
/// after the revocation and can fail on its own): its noted access tokens count as ended,
/// `family_ended` says so, and the sweep queues its grant. A live family is untouched.
pub async fn a_family_revoked_on_the_refresh_side_has_ended_without_a_recorded_end(
    refresh: &dyn RefreshStore,
    a: &dyn UpstreamStore,
    b: &dyn UpstreamStore,
) {
    store_family(refresh, "rev-ended", "rev-t", 100_000).await;
    store_family(refresh, "rev-live", "rev-live-t", 100_000).await;
    for f in ["rev-ended", "rev-live"] {
        ok(a.note_access_token(f, &h(&format!("{f}-at")), 90_000)).await;
        ok(a.put_grant(f, format!("{f}-sealed").as_bytes(), 90_000)).await;
    }
    assert!(!ok(b.family_ended("rev-ended")).await, "live before");
    assert!(!ok(b.access_token_ended(&h("rev-ended-at"))).await);
    assert_eq!(ok(b.queue_ended_grants(20_000, 100)).await, 0);
    assert_eq!(
        ok(refresh.revoke_family_of(&h("rev-t"), 5_000)).await,
        Some("rev-ended".into())
    );
    for s in [a, b] {
        assert!(ok(s.family_ended("rev-ended")).await, "revoked: ended");
        assert!(
            ok(s.access_token_ended(&h("rev-ended-at"))).await,
            "its access token refused"
        );
        assert!(!ok(s.family_ended("rev-live")).await, "the other family");
        assert!(!ok(s.access_token_ended(&h("rev-live-at"))).await);
    }
    assert_eq!(ok(b.queue_ended_grants(20_000, 100)).await, 1, "one moved");
    assert_eq!(ok(a.grant("rev-ended")).await, None, "queued");
    assert_eq!(
        ok(a.grant("rev-live")).await.as_deref(),
        Some(&b"rev-live-sealed"[..]),
        "a live family keeps its grant"
    );
    let queued = ok(a.claim_revocations(20_000, 5_000, 10)).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].family_id, "rev-ended");
    assert_eq!(queued[0].sealed, b"rev-ended-sealed");
    ok(a.drop_revocation(queued[0].id)).await;
    ok(a.delete_grant("rev-live")).await;
}

/// A pending login is taken once, by either handle, and never after it expired.
pub async fn a_pending_login_is_single_use_and_never_outlives_its_expiry(
    a: &dyn UpstreamStore,
    b: &dyn UpstreamStore,
) {
    ok(a.put_pending(&h("s1"), b"p1", 1_000)).await;
    ok(a.put_pending(&h("s2"), b"p2", 1_000)).await;
    assert_eq!(
        ok(b.take_pending(&h("s1"), 10)).await.as_deref(),
        Some(&b"p1"[..])
    );
    assert_eq!(ok(a.take_pending(&h("s1"), 10)).await, None, "replayed");
    assert_eq!(ok(a.take_pending(&h("s2"), 1_000)).await, None, "expired");
    assert_eq!(
        ok(b.take_pending(&h("s2"), 10)).await,
        None,
        "an expired one is gone"
    );
    assert_eq!(ok(a.take_pending(&h("nope"), 10)).await, None);
}

/// A grant is replaced by the newer one; a lease has one holder at a time across handles, is
/// renewed by its holder, taken over once it ran out, released only by its holder, and is
/// per family; deleting a grant drops its lease.
pub async fn grants_are_replaced_and_leases_are_held_by_one_holder_at_a_time(
    a: &dyn UpstreamStore,
    b: &dyn UpstreamStore,
) {
    ok(a.put_grant("f", b"g1", 10_000)).await;
    ok(a.put_grant("f", b"g2", 10_000)).await;
    assert_eq!(ok(b.grant("f")).await.as_deref(), Some(&b"g2"[..]));
    assert_eq!(ok(b.grant("other")).await, None);
    assert!(ok(a.try_lease("f", "x", 0, 100)).await);
    assert!(!ok(b.try_lease("f", "y", 50, 100)).await);
    assert!(
        ok(a.try_lease("f", "x", 60, 100)).await,
        "the holder may renew"
    );
    assert!(!ok(b.try_lease("f", "y", 159, 100)).await);
    assert!(
        ok(b.try_lease("f", "y", 160, 100)).await,
        "a lease that ran out is taken over"
    );
    ok(a.release_lease("f", "x")).await;
    assert!(
        !ok(a.try_lease("f", "x", 170, 100)).await,
        "only the holder releases"
    );
    ok(b.release_lease("f", "y")).await;
    assert!(ok(a.try_lease("f", "x", 170, 100)).await);
    assert!(
        ok(a.try_lease("g", "y", 170, 100)).await,
        "leases are per family"
    );
    ok(a.delete_grant("f")).await;
    assert_eq!(ok(b.grant("f")).await, None);
    assert!(
        ok(b.try_lease("f", "z", 171, 100)).await,
        "the lease went with the grant"
    );
}

/// Purge deletes pending logins, grants (by their family's end; queued for revocation) and
/// leases that ended before the cut-off, and nothing else.
pub async fn purge_drops_ended_upstream_rows_and_keeps_the_others(
    a: &dyn UpstreamStore,
    b: &dyn UpstreamStore,
) {
    ok(a.put_pending(&h("old"), b"p", 1_000)).await;
    ok(a.put_pending(&h("new"), b"p", 9_000)).await;
    ok(a.put_grant("ended", b"g", 1_000)).await;
    ok(a.put_grant("live", b"g", 9_000)).await;
    assert!(ok(a.try_lease("ended", "x", 0, 500)).await);
    assert!(ok(a.try_lease("live", "x", 0, 9_000)).await);
    assert!(ok(b.purge_upstream(2_000)).await >= 3);
    assert_eq!(ok(a.grant("ended")).await, None);
    assert_eq!(ok(a.grant("live")).await.as_deref(), Some(&b"g"[..]));
    assert_eq!(
        ok(a.take_pending(&h("new"), 2_000)).await.as_deref(),
        Some(&b"p"[..])
    );
    assert!(
        !ok(a.try_lease("live", "y", 2_000, 100)).await,
        "a live lease stays"
    );
    assert_eq!(ok(b.purge_upstream(2_000)).await, 0);
    let queued = ok(a.claim_revocations(2_000, 100, 10)).await;
    let ids: Vec<&str> = queued.iter().map(|q| q.family_id.as_str()).collect();
    assert_eq!(ids, ["ended"], "the ended grant waits for its revocation");
    ok(a.drop_revocation(queued[0].id)).await;
    ok(a.delete_grant("live")).await;
}

/// Every access token noted for a family (the current one and older ones) counts as ended
/// once the family ended, by either handle, and so does one noted after the end (a renewal in
/// flight); tokens of other families, and unknown ones, do not. Noting or ending again
/// changes nothing. Purge drops a token's row once it expired before the cut-off, and an end
/// once it is older than the cut-off and no token of its family is left.
pub async fn access_tokens_of_an_ended_family_are_known_whenever_they_were_noted(
    a: &dyn UpstreamStore,
    b: &dyn UpstreamStore,
) {
    ok(a.note_access_token("fam-a", &h("a-old"), 5_000)).await;
    ok(a.note_access_token("fam-a", &h("a-new"), 9_000)).await;
    ok(b.note_access_token("fam-b", &h("b-1"), 9_000)).await;
    assert!(
        !ok(b.access_token_ended(&h("a-new"))).await,
        "a live family"
    );
    ok(b.end_access_tokens("fam-a", 200)).await;
    ok(a.end_access_tokens("fam-a", 300)).await;
    for t in ["a-old", "a-new"] {
        assert!(ok(a.access_token_ended(&h(t))).await, "{t}");
        assert!(
            ok(b.access_token_ended(&h(t))).await,
            "{t}, the other handle"
        );
    }
    assert!(!ok(a.access_token_ended(&h("b-1"))).await, "another family");
    assert!(!ok(a.access_token_ended(&h("never noted"))).await);
    ok(b.note_access_token("fam-a", &h("a-late"), 9_000)).await;
    assert!(
        ok(a.access_token_ended(&h("a-late"))).await,
        "noted after the end"
    );
    ok(a.note_access_token("fam-b", &h("a-new"), 9_000)).await;
    assert!(
        ok(a.access_token_ended(&h("a-new"))).await,
        "noting again does not move a token to another family"
    );
    ok(b.purge_upstream(6_000)).await;
    assert!(
        !ok(a.access_token_ended(&h("a-old"))).await,
        "expired, purged"
    );
    assert!(
        ok(a.access_token_ended(&h("a-new"))).await,
        "an unexpired one stays"
    );
    ok(b.purge_upstream(10_000)).await;
    assert!(!ok(a.access_token_ended(&h("a-new"))).await, "purged");
    ok(a.note_access_token("fam-a", &h("a-after-purge"), 20_000)).await;
    assert!(
        !ok(b.access_token_ended(&h("a-after-purge"))).await,
        "the end went once its family's tokens had"
    );
    ok(a.end_access_tokens("fam-b", 10_000)).await;
    ok(b.purge_upstream(10_000)).await;
    ok(a.note_access_token("fam-b", &h("b-2"), 20_000)).await;
    assert!(
        ok(a.access_token_ended(&h("b-2"))).await,
        "an end not older than the cut-off stays"
    );
}

/// Queueing a revocation moves the family's sealed grant (its lease stays); a family
/// without a grant queues nothing. A due revocation is claimed by one handle: the other
/// sees it again only when the claim's lease ran out, or at the time a retry set; a family's
/// grant queued again (renewed while the family ended) is a row of its own, from the start,
/// which settling the older row's attempt (retry or drop) does not touch; a dropped one is gone.
pub async fn a_queued_revocation_is_claimed_by_one_handle_at_a_time_until_dropped(
    a: &dyn UpstreamStore,
    b: &dyn UpstreamStore,
) {
    ok(a.put_grant("rev-1", b"sealed-1", 50_000)).await;
    assert!(ok(a.try_lease("rev-1", "x", 0, 100_000)).await);
    let first = ok(b.queue_revocation("rev-1", 1_000)).await;
    assert_eq!(
        first.as_ref().map(|q| q.sealed.as_slice()),
        Some(&b"sealed-1"[..]),
        "the grant it moved"
    );
    let first_id = first.map(|q| q.id).unwrap_or_default();
    assert_eq!(ok(a.grant("rev-1")).await, None, "the grant moved");
    assert!(
        !ok(b.try_lease("rev-1", "y", 1, 100)).await,
        "its lease stays with its holder (a renewal in flight)"
    );
    ok(a.release_lease("rev-1", "x")).await;
    assert_eq!(ok(a.queue_revocation("no grant", 1_000)).await, None);
    assert!(
        ok(a.claim_revocations(999, 5_000, 10)).await.is_empty(),
        "not due yet"
    );
    let claimed = ok(a.claim_revocations(1_000, 5_000, 10)).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, first_id);
    assert_eq!(claimed[0].family_id, "rev-1");
    assert_eq!(claimed[0].sealed, b"sealed-1");
    assert_eq!(claimed[0].attempts, 0);
    assert!(
        ok(b.claim_revocations(1_000, 5_000, 10)).await.is_empty(),
        "claimed by the other handle"
    );
    assert!(ok(b.claim_revocations(5_999, 5_000, 10)).await.is_empty());
    let again = ok(b.claim_revocations(6_000, 5_000, 10)).await;
    assert_eq!(
        again.len(),
        1,
        "the claim's lease ran out (its holder died)"
    );
    ok(b.retry_revocation(first_id, 1, 20_000)).await;
    assert!(ok(a.claim_revocations(19_999, 5_000, 10)).await.is_empty());
    let retried = ok(a.claim_revocations(20_000, 5_000, 10)).await;
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].attempts, 1);
    // Queued again (a grant renewed while the family ended): a row of its own, from the
    // start; the older row's attempt, settled afterwards, leaves it queued.
    ok(a.put_grant("rev-1", b"sealed-2", 50_000)).await;
    let second = ok(a.queue_revocation("rev-1", 21_000)).await;
    let second_id = second.map(|q| q.id).unwrap_or_default();
    assert_ne!(second_id, first_id, "a row of its own");
    ok(b.drop_revocation(first_id)).await;
    let newer = ok(b.claim_revocations(i64::MAX / 2, 5_000, 10)).await;
    assert_eq!(newer.len(), 1, "the older row's drop left the newer one");
    assert_eq!(newer[0].id, second_id);
    assert_eq!(newer[0].sealed, b"sealed-2");
    assert_eq!(newer[0].attempts, 0);
    ok(a.drop_revocation(second_id)).await;
    assert!(ok(b.claim_revocations(i64::MAX / 2, 5_000, 10))
        .await
        .is_empty());
    // At most `limit`, the longest due first.
    for (i, due) in [(1, 300), (2, 100), (3, 200)] {
        ok(a.put_grant(&format!("rev-l{i}"), b"s", 50_000)).await;
        assert!(ok(a.queue_revocation(&format!("rev-l{i}"), due))
            .await
            .is_some());
    }
    let two = ok(b.claim_revocations(1_000, 5_000, 2)).await;
    let ids: Vec<&str> = two.iter().map(|q| q.family_id.as_str()).collect();
    assert_eq!(ids, ["rev-l2", "rev-l3"]);
    let last = ok(b.claim_revocations(1_000, 5_000, 2)).await;
    for q in two.iter().chain(&last) {
        ok(a.drop_revocation(q.id)).await;
    }
}

/// Purge does not just delete the grant of a family that ended before the cut-off: it queues
/// its revocation (due at once); a live family's grant stays.
pub async fn purge_queues_the_revocation_of_an_expired_grant(
    a: &dyn UpstreamStore,
    b: &dyn UpstreamStore,
) {
    ok(a.put_grant("exp-old", b"sealed-old", 30_000)).await;
    ok(a.put_grant("exp-live", b"sealed-live", 90_000)).await;
    ok(b.purge_upstream(40_000)).await;
    assert_eq!(ok(a.grant("exp-old")).await, None);
    assert!(ok(a.grant("exp-live")).await.is_some());
    let due = ok(a.claim_revocations(40_000, 5_000, 10)).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].family_id, "exp-old");
    assert_eq!(due[0].sealed, b"sealed-old");
    ok(b.drop_revocation(due[0].id)).await;
    ok(a.delete_grant("exp-live")).await;
}

/// Giving up by age takes every revocation queued before the cut-off off the queue, whether
/// it was tried (and is due later) or never claimed; younger ones stay.
pub async fn revocations_queued_before_a_cut_off_are_given_up_tried_or_not(
    a: &dyn UpstreamStore,
    b: &dyn UpstreamStore,
) {
    for (id, due) in [
        ("age-tried", 1_000),
        ("age-untried", 2_000),
        ("age-young", 3_000),
    ] {
        ok(a.put_grant(id, b"s", 50_000)).await;
        assert!(ok(a.queue_revocation(id, due)).await.is_some());
    }
    let tried = ok(b.claim_revocations(1_000, 5_000, 1)).await;
    assert_eq!(tried.len(), 1);
    ok(b.retry_revocation(tried[0].id, 1, 90_000)).await;
    assert_eq!(ok(b.give_up_revocations(3_000)).await, 2);
    let left = ok(a.claim_revocations(i64::MAX / 2, 5_000, 10)).await;
    let ids: Vec<&str> = left.iter().map(|q| q.family_id.as_str()).collect();
    assert_eq!(ids, ["age-young"]);
    ok(a.drop_revocation(left[0].id)).await;
}

/// A family's end, recorded by one handle, is known to the other at once, for a family that
/// never had an access token noted (a provider with opaque tokens); other families are not
/// ended; ending again changes nothing; the end is forgotten only once purged (older than the
/// cut-off, no token of its family left).
pub async fn a_familys_end_is_known_to_every_handle_without_any_noted_token(
    a: &dyn UpstreamStore,
    b: &dyn UpstreamStore,
) {
    assert!(!ok(a.family_ended("fam-opaque")).await, "not ended yet");
    ok(b.end_access_tokens("fam-opaque", 50_000)).await;
    assert!(ok(a.family_ended("fam-opaque")).await, "the other handle");
    assert!(ok(b.family_ended("fam-opaque")).await);
    assert!(
        !ok(a.family_ended("fam-opaque-other")).await,
        "another family"
    );
    ok(a.end_access_tokens("fam-opaque", 60_000)).await;
    ok(b.purge_upstream(50_000)).await;
    assert!(
        ok(a.family_ended("fam-opaque")).await,
        "ending again does not move the end; not older than the cut-off, it stays"
    );
    ok(b.purge_upstream(50_001)).await;
    assert!(!ok(a.family_ended("fam-opaque")).await, "purged");
}

/// Two handles (two instances' maintenance) claim the queue at the same moment, again and
/// again, until it is empty: every queued revocation is claimed exactly once. The claims'
/// lease outlasts the test, so a row claimed twice was taken by both while the other's
/// lease held, and a row never claimed was lost.
pub async fn two_handles_claiming_at_the_same_moment_take_each_revocation_once(
    a: &dyn UpstreamStore,
    b: &dyn UpstreamStore,
) {
    use std::collections::BTreeSet;
    const ROWS: usize = 50;
    const LEASE_MS: i64 = 1_000_000;
    let mut queued = BTreeSet::new();
    for i in 0..ROWS {
        let family_id = format!("race-{i}");
        ok(a.put_grant(&family_id, b"s", 50_000)).await;
        let row = ok(a.queue_revocation(&family_id, 1_000)).await;
        queued.insert(row.map(|q| q.id).expect("a grant to queue"));
    }
    let mut claimed = Vec::new();
    // Small batches: many rounds, each a race; one handle may come back empty while the
    // other's claim has the last rows.
    for round in 0.. {
        assert!(round <= ROWS, "the queue never emptied: {claimed:?}");
        let (x, y) = tokio::join!(
            a.claim_revocations(2_000, LEASE_MS, 2),
            b.claim_revocations(2_000, LEASE_MS, 2)
        );
        let (x, y) = (x.expect("claim by a"), y.expect("claim by b"));
        if x.is_empty() && y.is_empty() {
            break;
        }
        claimed.extend(x.iter().chain(&y).map(|q| q.id));
    }
    let once: BTreeSet<i64> = claimed.iter().copied().collect();
    assert_eq!(
        once.len(),
        claimed.len(),
        "a row claimed by both handles: {claimed:?}"
    );
    assert_eq!(once, queued, "every queued row claimed, none lost");
    for id in queued {
        ok(a.drop_revocation(id)).await;
    }
}

/// The sweep ([`UpstreamStore::queue_ended_grants`]) moves the grant still stored for a
/// family whose end is recorded (a failed store call left it there) to the revocation queue,
/// as `queue_revocation` moves it: sealed as stored, a row of its own, due (and queued) at
/// the time given, its lease left with its holder. A live family's grant stays; an ended
/// family without a grant queues nothing; a second sweep moves nothing; at most `limit` a
/// sweep.
pub async fn a_sweep_queues_the_grants_left_stored_for_ended_families_and_no_other(
    a: &dyn UpstreamStore,
    b: &dyn UpstreamStore,
) {
    ok(a.put_grant("sweep-ended", b"sealed-ended", 90_000)).await;
    ok(a.put_grant("sweep-live", b"sealed-live", 90_000)).await;
    assert!(ok(a.try_lease("sweep-ended", "x", 0, 100_000)).await);
    ok(b.end_access_tokens("sweep-ended", 10_000)).await;
    ok(b.end_access_tokens("sweep-no-grant", 10_000)).await;
    assert_eq!(ok(b.queue_ended_grants(20_000, 100)).await, 1, "one moved");
    assert_eq!(
        ok(a.grant("sweep-ended")).await,
        None,
        "the ended family's grant moved"
    );
    assert_eq!(
        ok(a.grant("sweep-live")).await.as_deref(),
        Some(&b"sealed-live"[..]),
        "a live family keeps its grant"
    );
    assert!(
        !ok(b.try_lease("sweep-ended", "y", 1, 100)).await,
        "its lease stays with its holder"
    );
    assert_eq!(
        ok(a.queue_ended_grants(20_000, 100)).await,
        0,
        "nothing left"
    );
    assert_eq!(
        ok(b.queue_ended_grants(30_000, 100)).await,
        0,
        "nothing left"
    );
    assert!(
        ok(a.claim_revocations(19_999, 5_000, 10)).await.is_empty(),
        "not due before the time given"
    );
    let queued = ok(a.claim_revocations(20_000, 5_000, 10)).await;
    assert_eq!(queued.len(), 1, "one row: {queued:?}");
    assert_eq!(queued[0].family_id, "sweep-ended");
    assert_eq!(queued[0].sealed, b"sealed-ended", "the grant as stored");
    assert_eq!(queued[0].attempts, 0);
    assert_eq!(
        ok(b.give_up_revocations(20_000)).await,
        0,
        "queued at the time given, not earlier"
    );
    assert_eq!(
        ok(b.give_up_revocations(20_001)).await,
        1,
        "and then given up"
    );
    ok(a.release_lease("sweep-ended", "x")).await;
    // At most `limit` a sweep; the rest the next one.
    for i in 0..3 {
        let family_id = format!("sweep-limit-{i}");
        ok(a.put_grant(&family_id, b"s", 90_000)).await;
        ok(a.end_access_tokens(&family_id, 10_000)).await;
    }
    assert_eq!(ok(b.queue_ended_grants(20_000, 2)).await, 2);
    assert_eq!(ok(a.queue_ended_grants(20_000, 2)).await, 1);
    assert_eq!(ok(b.queue_ended_grants(20_000, 2)).await, 0);
    let queued = ok(a.claim_revocations(20_000, 5_000, 10)).await;
    let mut ids: Vec<&str> = queued.iter().map(|q| q.family_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["sweep-limit-0", "sweep-limit-1", "sweep-limit-2"]);
    for q in &queued {
        ok(a.drop_revocation(q.id)).await;
    }
    assert_eq!(
        ok(a.grant("sweep-live")).await.as_deref(),
        Some(&b"sealed-live"[..]),
        "still"
    );
    ok(a.delete_grant("sweep-live")).await;
}

/// Two handles (two instances' maintenance) sweep at the same moment, again and again, while
/// ends queue the same grants one by one (`queue_revocation`): every grant of an ended family
/// is queued exactly once, as one row, none lost and none twice.
pub async fn sweeps_and_ends_racing_queue_each_grant_once(
    a: &dyn UpstreamStore,
    b: &dyn UpstreamStore,
) {
    use std::collections::BTreeMap;
    const GRANTS: usize = 30;
    let family = |i: usize| format!("sweep-race-{i}");
    for i in 0..GRANTS {
        ok(a.put_grant(&family(i), format!("sealed-{i}").as_bytes(), 90_000)).await;
        ok(a.end_access_tokens(&family(i), 10_000)).await;
    }
    for round in 0.. {
        assert!(round <= GRANTS, "the sweeps never ended");
        let end = family(round % GRANTS);
        let (x, y, z) = tokio::join!(
            a.queue_ended_grants(20_000, 2),
            b.queue_ended_grants(20_000, 2),
            a.queue_revocation(&end, 20_000)
        );
        let (x, y) = (x.expect("sweep by a"), y.expect("sweep by b"));
        z.expect("queue_revocation");
        if x == 0 && y == 0 {
            break;
        }
    }
    let queued = ok(b.claim_revocations(20_000, 5_000, 1_000)).await;
    let mut rows: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for q in &queued {
        rows.entry(q.family_id.clone())
            .or_default()
            .push(q.sealed.clone());
    }
    assert_eq!(rows.len(), GRANTS, "every grant queued: {queued:?}");
    for i in 0..GRANTS {
        assert_eq!(
            rows.get(&family(i)),
            Some(&vec![format!("sealed-{i}").into_bytes()]),
            "{}: one row, its grant",
            family(i)
        );
    }
    for q in &queued {
        ok(a.drop_revocation(q.id)).await;
    }
}
