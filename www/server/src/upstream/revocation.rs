//! The revocation queue: a family's provider grant is revoked at the provider (RFC 7009) when
//! the family ends (logout, refresh-token reuse, the per-user cap) and when it expired, even
//! if the provider is down at that moment. The grant moves, sealed as it was stored, to the
//! store's queue ([`crate::store::UpstreamStore::queue_revocation`]); logout tries it at once,
//! and the maintenance task ([`crate::session::maintain`]) tries what is due again with
//! backoff ([`retry_in_ms`]; later if the provider asks so with `Retry-After`,
//! [`next_attempt_at`]) until the provider takes it, or gives up after [`MAX_ATTEMPTS`]
//! or [`GIVE_UP_AFTER_MS`] in the queue, whichever comes first, with a warning. Each
//! maintenance pass first moves to the queue, due at once, the grants still stored for
//! families whose end is recorded ([`super::Upstream::queue_ended_grants`], at most
//! [`SWEPT_PER_PASS`]): those a failed store call left behind. The age bound holds whatever
//! the queue's length: a pass stops at the first revocation the provider does not answer, so
//! with the provider down most rows are not tried at all, and they go by age. A claim in the
//! store (a lease; `FOR UPDATE SKIP LOCKED` on PostgreSQL) keeps two instances' maintenance
//! from trying the same revocation at once.
//!
//! The decisions (what an answer means, when to try again) are plain functions; the provider
//! call is passed in, so the queue is tested with a fake provider and the injected clock.

use std::future::Future;
use std::time::UNIX_EPOCH;

use super::{Grant, ProviderError};
use crate::store::{QueuedRevocation, StoreError, UpstreamStore};

/// Attempts before a revocation is given up: with [`retry_in_ms`], about 14 hours of trying,
/// so that a provider gone for good (or a revocation it always refuses) does not keep rows
/// in the queue forever.
pub const MAX_ATTEMPTS: u32 = 20;
/// How long a revocation stays queued at most (from when it was queued), tried or not: a
/// little more than [`MAX_ATTEMPTS`] take. Rows behind a provider that is down are not tried
/// (each pass stops at the first that gets no answer), so they are given up by age.
pub const GIVE_UP_AFTER_MS: i64 = 15 * 3_600_000;
/// The wait after the first failed attempt (doubled after each further one).
pub const FIRST_RETRY_MS: i64 = 60_000;
/// The longest wait between two attempts.
pub const LONGEST_RETRY_MS: i64 = 60 * 60_000;
/// Revocations tried in one maintenance pass at most.
pub const PER_PASS: usize = 100;
/// Grants of ended families moved to the queue in one maintenance pass at most
/// ([`super::Upstream::queue_ended_grants`]).
pub const SWEPT_PER_PASS: usize = 100;

/// After `attempts` failed attempts: how long until the next one (1 min, 2, 4, … 1 h), or
/// `None` to give up.
pub fn retry_in_ms(attempts: u32) -> Option<i64> {
    if attempts >= MAX_ATTEMPTS {
        return None;
    }
    let doublings = attempts.saturating_sub(1).min(6);
    Some((FIRST_RETRY_MS << doublings).min(LONGEST_RETRY_MS))
}

/// When the provider asked to be tried again (`Retry-After`, RFC 9110 §10.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `delay-seconds`.
    Seconds(u64),
    /// An `HTTP-date`, as epoch ms.
    At(i64),
}

impl RetryAfter {
    /// A `Retry-After` value: delay-seconds or an HTTP-date (any of its three forms);
    /// `None` for anything else.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            // More digits than a u64 holds is "very long" (capped by the caller anyway).
            return Some(Self::Seconds(value.parse().unwrap_or(u64::MAX)));
        }
        let at = httpdate::parse_http_date(value).ok()?;
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Some(Self::At(ms))
    }

    /// How long from `now_ms` it asks to wait (0 for a date that has passed).
    pub fn wait_ms(self, now_ms: i64) -> i64 {
        match self {
            Self::Seconds(s) => i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000),
            Self::At(at_ms) => at_ms.saturating_sub(now_ms).max(0),
        }
    }
}

// The cap on what `Retry-After` may ask stays below the age bound.
const _: () = assert!(LONGEST_RETRY_MS < GIVE_UP_AFTER_MS);

/// When to try again after attempt number `attempts` failed at `now_ms`, or `None` to give
/// up: after the backoff ([`retry_in_ms`]), or later if the provider asked so
/// (`retry_after`), but never more than [`LONGEST_RETRY_MS`] away, the backoff's own longest
/// wait: a provider asking for days is still tried within the hour, so a row is given up by
/// [`MAX_ATTEMPTS`] or [`GIVE_UP_AFTER_MS`] as before, never kept waiting past them.
pub fn next_attempt_at(attempts: u32, retry_after: Option<RetryAfter>, now_ms: i64) -> Option<i64> {
    let backoff = retry_in_ms(attempts)?;
    let asked = retry_after.map_or(0, |r| r.wait_ms(now_ms).min(LONGEST_RETRY_MS));
    Some(now_ms.saturating_add(backoff.max(asked)))
}

/// What the revocation endpoint's status alone says (RFC 7009 §2.2): 2xx revoked; 429 (the
/// provider rate-limits us, RFC 6585) and 5xx (RFC 7009 §2.2.1: 503, try later) no answer for
/// now ([`ProviderError::Unavailable`]: backed off, and the pass ends), with the answer's
/// `Retry-After` for a 429 or a 503 ([`ProviderError::RetryAfter`], [`next_attempt_at`]);
/// `None` for another 4xx, whose body says more ([`answer_of_refusal`]).
pub fn answer_of_status(
    status: reqwest::StatusCode,
    retry_after: Option<RetryAfter>,
) -> Option<Result<bool, ProviderError>> {
    use reqwest::StatusCode as S;
    if status.is_success() {
        Some(Ok(true))
    } else if status.is_server_error() || status == S::TOO_MANY_REQUESTS {
        // `Retry-After` means "come back then" on a 429 (RFC 6585 §4) and a 503 (RFC 9110
        // §15.6.4); on another 5xx it is not defined, and the backoff alone decides.
        let defined = matches!(status, S::TOO_MANY_REQUESTS | S::SERVICE_UNAVAILABLE);
        Some(Err(match retry_after.filter(|_| defined) {
            Some(asked) => ProviderError::RetryAfter(asked),
            None => ProviderError::Unavailable,
        }))
    } else {
        None
    }
}

/// A 4xx besides 429 with the body's `error`: `invalid_grant` (the token is dead already),
/// else refused.
pub fn answer_of_refusal(
    status: reqwest::StatusCode,
    error: Option<&str>,
) -> Result<bool, ProviderError> {
    if error == Some("invalid_grant") {
        return Err(ProviderError::InvalidGrant);
    }
    Err(ProviderError::Malformed(format!(
        "revocation answered {}",
        status.as_u16()
    )))
}

/// What one attempt's answer means for the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Revoked; or nothing to revoke (no refresh token, no revocation endpoint), or the
    /// provider says the token is no grant (`invalid_grant`: dead already).
    Done,
    /// No answer (unreachable, timed out, 5xx, 429): try again later (not before the
    /// provider's `Retry-After`, if it gave one), and the rest of the pass waits for the
    /// next one.
    Unavailable(Option<RetryAfter>),
    /// Refused otherwise (a 4xx besides 429 and `invalid_grant`): try again later.
    Refused,
}

/// The meaning of [`super::Upstream::revoke`]'s answer.
pub fn attempt_of(answer: &Result<bool, ProviderError>) -> Attempt {
    match answer {
        Ok(_) | Err(ProviderError::InvalidGrant) => Attempt::Done,
        Err(ProviderError::Unavailable) => Attempt::Unavailable(None),
        Err(ProviderError::RetryAfter(asked)) => Attempt::Unavailable(Some(*asked)),
        Err(_) => Attempt::Refused,
    }
}

/// Record attempt number `attempts` (1 = the first) of the queued revocation `queued` (its
/// own row: another grant of the family queued meanwhile is not touched): done → off the
/// queue; failed → due again at [`next_attempt_at`], or off the queue with a warning once it
/// gives up.
pub async fn settle(
    store: &dyn UpstreamStore,
    queued: &QueuedRevocation,
    attempts: u32,
    attempt: Attempt,
    now_ms: i64,
) -> Result<(), StoreError> {
    let family_id = queued.family_id.as_str();
    if attempt == Attempt::Done {
        return store.drop_revocation(queued.id).await;
    }
    let retry_after = match attempt {
        Attempt::Unavailable(asked) => asked,
        Attempt::Done | Attempt::Refused => None,
    };
    match next_attempt_at(attempts, retry_after, now_ms) {
        Some(next_at_ms) => {
            let retry_in_s = next_at_ms.saturating_sub(now_ms) / 1000;
            tracing::warn!(family = %family_id, attempts, retry_in_s, ?attempt,
                "provider revocation failed; it stays queued");
            store
                .retry_revocation(queued.id, attempts, next_at_ms)
                .await
        }
        None => {
            tracing::warn!(family = %family_id, attempts, ?attempt,
                "provider revocation given up: the provider's refresh token may still be live");
            store.drop_revocation(queued.id).await
        }
    }
}

/// What one maintenance pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Revoked (or found dead) at the provider: off the queue.
    pub done: u64,
    /// Failed: due again later (or given up).
    pub failed: u64,
    /// Could not be opened (sealed with another key, e.g. a random key of an earlier start):
    /// dropped.
    pub unreadable: u64,
    /// Queued longer than [`GIVE_UP_AFTER_MS`]: given up, tried or not.
    pub given_up: u64,
}

/// One pass over the queue, reading the clock with `now`: give up what was queued more than
/// [`GIVE_UP_AFTER_MS`] ago, then, up to [`PER_PASS`] times, claim the revocation due the
/// longest (for `lease_ms`, one provider call's timeout and a margin, so no other instance
/// tries it meanwhile), open its grant with `open`, revoke it with `revoke` and settle it at
/// the time the answer came. One at a time: a lease covers the one call it was taken for, and
/// what this pass has not reached yet is left to other instances. A provider that does not
/// answer ends the pass; what it did not reach waits for the next one (the age bound covers it).
pub async fn run_due<N, O, R, Fut>(
    store: &dyn UpstreamStore,
    now: N,
    open: O,
    revoke: R,
    lease_ms: i64,
) -> Result<Pass, StoreError>
where
    N: Fn() -> i64,
    O: Fn(&str, &[u8]) -> Option<Grant>,
    R: Fn(Grant) -> Fut,
    Fut: Future<Output = Result<bool, ProviderError>>,
{
    let given_up = store
        .give_up_revocations(now().saturating_sub(GIVE_UP_AFTER_MS))
        .await?;
    let mut pass = Pass {
        given_up,
        ..Pass::default()
    };
    if pass.given_up > 0 {
        tracing::warn!(
            given_up = pass.given_up,
            queued_for_h = GIVE_UP_AFTER_MS / 3_600_000,
            "provider revocations given up by age: those provider refresh tokens may still be live"
        );
    }
    for _ in 0..PER_PASS {
        let Some(queued) = store.claim_revocations(now(), lease_ms, 1).await?.pop() else {
            break;
        };
        let family_id = queued.family_id.as_str();
        let Some(grant) = open(family_id, &queued.sealed) else {
            tracing::warn!(family = %family_id,
                "a queued provider revocation cannot be opened (sealed with another key): dropped");
            store.drop_revocation(queued.id).await?;
            pass.unreadable += 1;
            continue;
        };
        let attempt = attempt_of(&revoke(grant).await);
        settle(store, &queued, queued.attempts + 1, attempt, now()).await?;
        match attempt {
            Attempt::Done => pass.done += 1,
            Attempt::Unavailable(_) => {
                pass.failed += 1;
                break;
            }
            Attempt::Refused => pass.failed += 1,
        }
    }
    Ok(pass)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::store::MemoryStore;
    use crate::upstream::seal::SealKey;

    fn grant(refresh_token: &str) -> Grant {
        Grant {
            sub: "u".into(),
            refresh_token: Some(refresh_token.into()),
            access_token: "at".into(),
            access_expires_at_ms: 0,
            access_lifetime_ms: 0,
            id_token: None,
            dpop_key: None,
            dpop_bound: false,
        }
    }

    /// A provider that is up or down, and remembers the refresh tokens it revoked and how
    /// often it was asked.
    #[derive(Default)]
    struct FakeProvider {
        down: AtomicBool,
        asked: Mutex<Vec<String>>,
        revoked: Mutex<Vec<String>>,
    }

    impl FakeProvider {
        async fn revoke(&self, g: Grant) -> Result<bool, ProviderError> {
            let rt = g.refresh_token.unwrap_or_default();
            self.asked.lock().unwrap().push(rt.clone());
            if self.down.load(Ordering::SeqCst) {
                return Err(ProviderError::Unavailable);
            }
            self.revoked.lock().unwrap().push(rt);
            Ok(true)
        }
        fn asked(&self) -> usize {
            self.asked.lock().unwrap().len()
        }
    }

    struct Fixture {
        store: MemoryStore,
        key: SealKey,
        provider: FakeProvider,
    }

    const LEASE_MS: i64 = 11_000;

    impl Fixture {
        fn new() -> Self {
            Self {
                store: MemoryStore::new(),
                key: SealKey::generate(),
                provider: FakeProvider::default(),
            }
        }
        async fn put_grant(&self, family_id: &str, rt: &str, expires_at_ms: i64) {
            let sealed = self.key.seal(
                family_id.as_bytes(),
                &serde_json::to_vec(&grant(rt)).unwrap(),
            );
            self.store
                .put_grant(family_id, &sealed, expires_at_ms)
                .await
                .unwrap();
        }
        async fn maintain(&self, now_ms: i64) -> Pass {
            let open = |family_id: &str, sealed: &[u8]| {
                let plain = self.key.open(family_id.as_bytes(), sealed).ok()?;
                serde_json::from_slice(&plain).ok()
            };
            run_due(
                &self.store,
                || now_ms,
                open,
                |g| self.provider.revoke(g),
                LEASE_MS,
            )
            .await
            .unwrap()
        }
    }

    #[test]
    fn retries_back_off_from_a_minute_to_an_hour_and_give_up_after_max_attempts() {
        let waits: Vec<_> = (1..=8).map(|n| retry_in_ms(n).unwrap() / 60_000).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(retry_in_ms(MAX_ATTEMPTS - 1), Some(LONGEST_RETRY_MS));
        assert_eq!(retry_in_ms(MAX_ATTEMPTS), None);
        let total_h: i64 = (1..MAX_ATTEMPTS)
            .map(|n| retry_in_ms(n).unwrap())
            .sum::<i64>()
            / 3_600_000;
        assert_eq!(total_h, 14, "about 14 hours of trying");
        assert!(
            retry_in_ms(1).unwrap() > LEASE_MS,
            "a retry never comes within a claim's lease"
        );
    }

    #[test]
    fn answers_that_end_a_revocation_and_answers_that_keep_it() {
        assert_eq!(attempt_of(&Ok(true)), Attempt::Done);
        assert_eq!(attempt_of(&Ok(false)), Attempt::Done, "nothing to revoke");
        assert_eq!(attempt_of(&Err(ProviderError::InvalidGrant)), Attempt::Done);
        assert_eq!(
            attempt_of(&Err(ProviderError::Unavailable)),
            Attempt::Unavailable(None)
        );
        assert_eq!(
            attempt_of(&Err(ProviderError::Malformed("401".into()))),
            Attempt::Refused
        );
    }

    #[test]
    fn a_rate_limit_or_a_server_error_from_the_revocation_endpoint_is_unavailable_not_refused() {
        use reqwest::StatusCode as S;
        let of = |status: S, error: Option<&str>| {
            attempt_of(
                &answer_of_status(status, None).unwrap_or_else(|| answer_of_refusal(status, error)),
            )
        };
        assert_eq!(of(S::OK, None), Attempt::Done);
        assert_eq!(of(S::TOO_MANY_REQUESTS, None), Attempt::Unavailable(None));
        assert_eq!(
            of(S::TOO_MANY_REQUESTS, Some("invalid_grant")),
            Attempt::Unavailable(None),
            "a 429's body is not read"
        );
        assert_eq!(of(S::SERVICE_UNAVAILABLE, None), Attempt::Unavailable(None));
        assert_eq!(
            of(S::INTERNAL_SERVER_ERROR, None),
            Attempt::Unavailable(None)
        );
        assert_eq!(of(S::BAD_REQUEST, Some("invalid_grant")), Attempt::Done);
        assert_eq!(
            of(S::BAD_REQUEST, Some("invalid_request")),
            Attempt::Refused
        );
        assert_eq!(
            of(S::UNAUTHORIZED, Some("invalid_client")),
            Attempt::Refused
        );
        assert_eq!(of(S::FORBIDDEN, None), Attempt::Refused);
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_an_http_date_and_nothing_else() {
        assert_eq!(RetryAfter::parse("120"), Some(RetryAfter::Seconds(120)));
        assert_eq!(RetryAfter::parse(" 0 "), Some(RetryAfter::Seconds(0)));
        assert_eq!(
            RetryAfter::parse("99999999999999999999999"),
            Some(RetryAfter::Seconds(u64::MAX))
        );
        // IMF-fixdate and the two obsolete forms a recipient accepts (RFC 9110 §5.6.7).
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                RetryAfter::parse(date),
                Some(RetryAfter::At(784_111_777_000)),
                "{date}"
            );
        }
        for garbage in ["", "soon", "-5", "1.5", "120s", "Sun, 06 Nov 1994", "0x10"] {
            assert_eq!(RetryAfter::parse(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn the_next_attempt_waits_for_retry_after_but_never_longer_than_the_longest_backoff() {
        let now = 1_000_000; // 1970-01-01 00:16:40 GMT
        let wait = |attempts, asked: &str| {
            next_attempt_at(attempts, RetryAfter::parse(asked), now).map(|at| at - now)
        };
        assert_eq!(wait(1, ""), Some(FIRST_RETRY_MS), "none: the backoff");
        assert_eq!(
            wait(1, "600"),
            Some(600_000),
            "later than the backoff: as asked"
        );
        assert_eq!(
            wait(1, "Thu, 01 Jan 1970 00:26:40 GMT"),
            Some(600_000),
            "a date ten minutes on"
        );
        assert_eq!(
            wait(1, "soon"),
            Some(FIRST_RETRY_MS),
            "garbage: the backoff"
        );
        assert_eq!(
            wait(3, "10"),
            Some(240_000),
            "sooner than the backoff: the backoff"
        );
        assert_eq!(
            wait(1, "Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(FIRST_RETRY_MS),
            "a date gone by: the backoff"
        );
        assert_eq!(wait(1, "86400"), Some(LONGEST_RETRY_MS), "a day: capped");
        assert_eq!(
            wait(1, "Fri, 01 Jan 2100 00:00:00 GMT"),
            Some(LONGEST_RETRY_MS)
        );
        assert_eq!(wait(MAX_ATTEMPTS, "600"), None, "given up whatever it asks");
    }

    #[test]
    fn retry_after_is_kept_from_a_429_or_a_503_only() {
        use reqwest::StatusCode as S;
        let asked = RetryAfter::parse("600");
        let of = |status| attempt_of(&answer_of_status(status, asked).unwrap());
        assert_eq!(of(S::TOO_MANY_REQUESTS), Attempt::Unavailable(asked));
        assert_eq!(of(S::SERVICE_UNAVAILABLE), Attempt::Unavailable(asked));
        assert_eq!(of(S::INTERNAL_SERVER_ERROR), Attempt::Unavailable(None));
        assert_eq!(of(S::OK), Attempt::Done);
        assert_eq!(answer_of_status(S::BAD_REQUEST, asked), None);
    }

    #[tokio::test]
    async fn a_revocation_that_failed_while_the_provider_was_down_is_retried_with_backoff_until_it_is_taken(
    ) {
        let f = Fixture::new();
        let now = 1_000_000;
        f.put_grant("fam", "rt-fam", now + 3_600_000).await;
        // Logout with the provider down: queued, tried once at once, failed.
        f.provider.down.store(true, Ordering::SeqCst);
        let queued = f
            .store
            .queue_revocation("fam", now + LEASE_MS)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            f.store.grant("fam").await.unwrap(),
            None,
            "the grant left the store"
        );
        let answer = f.provider.revoke(grant("rt-fam")).await;
        settle(&f.store, &queued, 1, attempt_of(&answer), now)
            .await
            .unwrap();
        assert_eq!(f.provider.asked(), 1);
        // Not due before a minute; then tried again, still down: two minutes more.
        assert_eq!(f.maintain(now + 59_999).await, Pass::default());
        assert_eq!(f.provider.asked(), 1);
        assert_eq!(f.maintain(now + 60_000).await.failed, 1);
        assert_eq!(f.provider.asked(), 2);
        assert_eq!(f.maintain(now + 60_000 + 119_999).await, Pass::default());
        // The provider is back: the next due pass revokes the family's refresh token.
        f.provider.down.store(false, Ordering::SeqCst);
        let pass = f.maintain(now + 180_000).await;
        assert_eq!(pass.done, 1);
        assert_eq!(*f.provider.revoked.lock().unwrap(), ["rt-fam"]);
        assert_eq!(
            f.maintain(now + 10 * 3_600_000).await,
            Pass::default(),
            "off the queue"
        );
        assert_eq!(f.provider.asked(), 3);
    }

    /// A pass claims one revocation at a time, so a row it has not reached yet is never
    /// leased by it while its provider calls take their time: another instance may take it,
    /// and no row is tried by both. A failed attempt is due again a minute after its answer
    /// came, not after the pass began.
    #[tokio::test]
    async fn a_pass_claims_one_revocation_at_a_time_and_settles_it_at_the_time_of_its_answer() {
        let f = Fixture::new();
        for i in 0..3 {
            f.put_grant(&format!("f{i}"), &format!("rt-f{i}"), 0).await;
        }
        f.store.purge_upstream(1).await.unwrap();
        let clock = AtomicI64::new(1);
        let tried = Mutex::new(Vec::new());
        let claimed_by_other = Mutex::new(Vec::new());
        let (clock_r, tried_r, other_r, store) = (&clock, &tried, &claimed_by_other, &f.store);
        let open = |family_id: &str, sealed: &[u8]| {
            let plain = f.key.open(family_id.as_bytes(), sealed).ok()?;
            serde_json::from_slice::<Grant>(&plain).ok()
        };
        // Each call takes 6 s and is refused; meanwhile another instance runs its pass.
        let revoke = move |g: Grant| async move {
            tried_r
                .lock()
                .unwrap()
                .push(g.refresh_token.unwrap_or_default());
            let after = clock_r.fetch_add(6_000, Ordering::SeqCst) + 6_000;
            for q in store.claim_revocations(after, LEASE_MS, 100).await.unwrap() {
                other_r.lock().unwrap().push(format!("rt-{}", q.family_id));
            }
            Err(ProviderError::Malformed("400".into()))
        };
        let pass = run_due(
            store,
            || clock.load(Ordering::SeqCst),
            open,
            revoke,
            LEASE_MS,
        )
        .await
        .unwrap();
        let (tried, other) = (
            tried.into_inner().unwrap(),
            claimed_by_other.into_inner().unwrap(),
        );
        assert!(
            tried.iter().all(|rt| !other.contains(rt)),
            "no row tried by this pass and claimed by another; tried {tried:?}, other {other:?}"
        );
        assert_eq!(
            tried.len() + other.len(),
            3,
            "each row taken by one instance"
        );
        assert_eq!(pass.failed, tried.len() as u64);
        // The first row tried failed at 6_001 (its answer), not at 1 (the pass's start): due
        // at 66_001. (The rows the other instance claimed are due again at 17_001.)
        let first = tried[0].trim_start_matches("rt-").to_string();
        let first = first.as_str();
        let due = |at: i64| async move {
            let q = store.claim_revocations(at, 1, 10).await.unwrap();
            q.iter().any(|q| q.family_id == first)
        };
        assert!(!due(60_001).await, "not a minute after the pass began");
        assert!(!due(66_000).await);
        assert!(due(66_001).await, "a minute after the answer came");
    }

    #[tokio::test]
    async fn an_expired_familys_grant_is_revoked_at_the_provider_before_it_is_purged() {
        let f = Fixture::new();
        f.put_grant("old", "rt-old", 5_000).await;
        f.put_grant("live", "rt-live", 50_000).await;
        f.store.purge_upstream(10_000).await.unwrap();
        assert_eq!(f.maintain(10_000).await.done, 1);
        assert_eq!(*f.provider.revoked.lock().unwrap(), ["rt-old"]);
        assert!(f.store.grant("live").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_provider_down_for_good_is_given_up_after_max_attempts_and_ends_each_pass() {
        let f = Fixture::new();
        f.provider.down.store(true, Ordering::SeqCst);
        f.put_grant("a", "rt-a", 0).await;
        f.put_grant("b", "rt-b", 0).await;
        f.store.purge_upstream(1).await.unwrap();
        let mut now = 1;
        let first = f.maintain(now).await;
        assert_eq!(
            first.failed, 1,
            "the first that gets no answer ends the pass"
        );
        assert_eq!(f.provider.asked(), 1);
        // The other one, not reached, waits for the next pass, uncounted.
        // Maintenance every minute: both reach MAX_ATTEMPTS before the age bound.
        while now < GIVE_UP_AFTER_MS - 60_000 {
            now += 60_000;
            f.maintain(now).await;
        }
        assert_eq!(
            f.provider.asked(),
            2 * MAX_ATTEMPTS as usize,
            "each tried MAX_ATTEMPTS times"
        );
        assert_eq!(
            f.maintain(now + LONGEST_RETRY_MS).await,
            Pass::default(),
            "given up"
        );
        assert!(f.provider.revoked.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_grant_sealed_with_another_key_is_dropped() {
        let f = Fixture::new();
        let other = SealKey::generate();
        let sealed = other.seal(b"x", &serde_json::to_vec(&grant("rt-x")).unwrap());
        f.store.put_grant("x", &sealed, 0).await.unwrap();
        f.store.purge_upstream(1).await.unwrap();
        assert_eq!(f.maintain(1).await.unreadable, 1);
        assert_eq!(f.provider.asked(), 0);
        assert_eq!(f.maintain(i64::MAX / 2).await, Pass::default());
    }

    /// With the provider's revocation endpoint not answering, a pass makes one attempt (the
    /// first Unavailable ends it), so 100 queued rows would need 2000 passes to reach
    /// MAX_ATTEMPTS each: they are given up by age instead, all of them within
    /// GIVE_UP_AFTER_MS (and one pass) of being queued.
    #[tokio::test]
    async fn a_queue_behind_a_provider_down_for_good_is_given_up_within_the_age_bound_whatever_its_length(
    ) {
        let f = Fixture::new();
        f.provider.down.store(true, Ordering::SeqCst);
        for i in 0..100 {
            f.put_grant(&format!("f{i}"), &format!("rt-{i}"), 0).await;
        }
        f.store.purge_upstream(1).await.unwrap();
        let mut now = 1;
        // Maintenance runs every minute, until the age bound and one more pass.
        let mut given_up = 0;
        while now <= 1 + GIVE_UP_AFTER_MS {
            now += 60_000;
            given_up += f.maintain(now).await.given_up;
        }
        let left = f
            .store
            .claim_revocations(i64::MAX / 2, 0, 1000)
            .await
            .unwrap()
            .len();
        assert_eq!(
            left,
            0,
            "after {} h of passes, {left} rows still queued; attempts made: {}",
            GIVE_UP_AFTER_MS / 3_600_000,
            f.provider.asked()
        );
        assert!(
            given_up > 0,
            "most rows were never tried often enough: given up by age"
        );
    }
}
