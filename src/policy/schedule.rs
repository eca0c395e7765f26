//! When to refresh, how long to wait, and how to back off.

#[allow(unused_imports)]
use crate::prelude::*;
/// Largest delay `setTimeout` honours (2^31 − 1 ms ≈ 24.8 days); longer
/// delays fire at once in browsers, which is the keycloak-js #107 loop.
pub const MAX_TIMER_MS: i64 = 2_147_483_647;

/// A refresh is never attempted more often than this in a steady loop.
pub const MIN_ATTEMPT_GAP_MS: i64 = 1_000;

/// Longest `Retry-After` honoured (one hour); longer requests are capped.
pub const MAX_RETRY_AFTER_MS: i64 = 3_600_000;

/// Milliseconds after arrival at which a token of `lifetime` is due:
/// `skew` before expiry, or half-way for tokens shorter than `2 × skew`.
pub fn refresh_after(lifetime: i64, skew: i64) -> i64 {
    let lifetime = lifetime.max(0);
    let skew = skew.max(0);
    if lifetime < skew.saturating_mul(2) {
        lifetime / 2
    } else {
        lifetime - skew
    }
}

/// A delay for `setTimeout`: never negative, never past `MAX_TIMER_MS`
/// (the caller re-arms and re-checks the clock when it fires).
pub fn timer_delay(ms: i64) -> u32 {
    ms.clamp(0, MAX_TIMER_MS) as u32
}

/// `retry` option: exponential backoff with full jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in one refresh cycle, the first included.
    pub max_attempts: u32,
    /// Backoff base.
    pub base_delay_ms: i64,
    /// Backoff ceiling.
    pub max_delay_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay_ms: 1_000,
            max_delay_ms: 30_000,
        }
    }
}

/// Delay before the next attempt after `failures` consecutive failures
/// (≥ 1). `random` is uniform in [0, 1); `retry_after` is what the server
/// asked for. Full jitter over `min(max, base · 2^(failures−1))`, then at
/// least the server's `Retry-After` and at least `MIN_ATTEMPT_GAP_MS`.
pub fn backoff_ms(
    policy: RetryPolicy,
    failures: u32,
    random: f64,
    retry_after: Option<i64>,
) -> i64 {
    let shift = failures.saturating_sub(1).min(40);
    let ceiling = policy
        .base_delay_ms
        .max(0)
        .saturating_mul(1i64 << shift)
        .min(policy.max_delay_ms.max(0));
    let r = if random.is_finite() {
        random.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let jittered = (ceiling as f64 * r) as i64;
    let server = retry_after.unwrap_or(0).clamp(0, MAX_RETRY_AFTER_MS);
    jittered.max(server).clamp(MIN_ATTEMPT_GAP_MS, MAX_TIMER_MS)
}

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delta-seconds or an
/// HTTP-date in any of its three forms (§5.6.7: IMF-fixdate, the obsolete
/// RFC 850 form and asctime). Anything else: `None`.
///
/// An HTTP-date is the server's clock, so it is read against the response's
/// own `Date` header (`date`, RFC 9110 §6.6.1) when that parses: a page whose
/// clock is hours off still waits what the server asked. Without one it is
/// read against `now_wall` (epoch ms).
pub fn parse_retry_after(value: &str, now_wall: i64, date: Option<&str>) -> Option<i64> {
    let v = value.trim_ascii();
    if !v.is_empty() && v.len() <= 12 && v.bytes().all(|b| b.is_ascii_digit()) {
        let secs = v.bytes().fold(0i64, |a, b| a * 10 + i64::from(b - b'0'));
        return Some(secs.saturating_mul(1000).min(MAX_RETRY_AFTER_MS));
    }
    let at = http_date(v, now_wall)?;
    let base = date
        .and_then(|d| http_date(d.trim_ascii(), now_wall))
        .unwrap_or(now_wall);
    Some(at.saturating_sub(base).clamp(0, MAX_RETRY_AFTER_MS))
}

/// An HTTP-date in any of its three forms → epoch ms.
pub fn http_date(v: &str, now_wall: i64) -> Option<i64> {
    parse_imf_fixdate(v)
        .or_else(|| parse_rfc850(v, now_wall))
        .or_else(|| parse_asctime(v))
}

const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];
const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const LONG_DAYS: [&[u8]; 7] = [
    b"Monday",
    b"Tuesday",
    b"Wednesday",
    b"Thursday",
    b"Friday",
    b"Saturday",
    b"Sunday",
];

/// Decimal digits (all of `s`, at least one) as a number.
fn digits(s: &[u8]) -> Option<i64> {
    if !s.is_empty() && s.iter().all(u8::is_ascii_digit) {
        Some(s.iter().fold(0i64, |a, &d| a * 10 + i64::from(d - b'0')))
    } else {
        None
    }
}

fn month(s: &[u8]) -> Option<i64> {
    Some(MONTHS.iter().position(|m| *m == s)? as i64 + 1)
}

/// `hh:mm:ss`.
fn time_of_day(t: &[u8]) -> Option<(i64, i64, i64)> {
    if t.len() != 8 || t[2] != b':' || t[5] != b':' {
        return None;
    }
    Some((digits(&t[0..2])?, digits(&t[3..5])?, digits(&t[6..8])?))
}

/// Epoch ms of a UTC date and time, after checking the fields' ranges.
fn epoch_ms(year: i64, month: i64, day: i64, (h, mi, s): (i64, i64, i64)) -> Option<i64> {
    if !(1..=31).contains(&day) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400) + h * 3_600 + mi * 60 + s) * 1_000)
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → epoch ms.
fn parse_imf_fixdate(v: &str) -> Option<i64> {
    let b = v.as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    if b[7] != b' ' || b[11] != b' ' || b[16] != b' ' || !DAYS.contains(&&b[0..3]) {
        return None;
    }
    epoch_ms(
        digits(&b[12..16])?,
        month(&b[8..11])?,
        digits(&b[5..7])?,
        time_of_day(&b[17..25])?,
    )
}

/// `Sunday, 06-Nov-94 08:49:37 GMT` (obsolete RFC 850 form) → epoch ms. A
/// two-digit year more than 50 years ahead of `now_wall` is in the past
/// century (RFC 9110 §5.6.7).
fn parse_rfc850(v: &str, now_wall: i64) -> Option<i64> {
    let (day_name, rest) = super::split_str(v, ", ")?;
    if !LONG_DAYS.contains(&day_name.as_bytes()) {
        return None;
    }
    let b = rest.as_bytes();
    if b.len() != 22 || b[2] != b'-' || b[6] != b'-' || b[9] != b' ' || &b[18..] != b" GMT" {
        return None;
    }
    let yy = digits(&b[7..9])?;
    let now_year = 1970 + now_wall.div_euclid(31_556_952_000);
    let mut year = now_year - now_year.rem_euclid(100) + yy;
    if year > now_year + 50 {
        year -= 100;
    }
    epoch_ms(
        year,
        month(&b[3..6])?,
        digits(&b[0..2])?,
        time_of_day(&b[10..18])?,
    )
}

/// `Sun Nov  6 08:49:37 1994` (ANSI C asctime) → epoch ms.
fn parse_asctime(v: &str) -> Option<i64> {
    let b = v.as_bytes();
    if b.len() != 24 || b[3] != b' ' || b[7] != b' ' || b[10] != b' ' || b[19] != b' ' {
        return None;
    }
    if !DAYS.contains(&&b[0..3]) {
        return None;
    }
    let day = match b[8] {
        b' ' => digits(&b[9..10])?,
        _ => digits(&b[8..10])?,
    };
    epoch_ms(
        digits(&b[20..24])?,
        month(&b[4..7])?,
        day,
        time_of_day(&b[11..19])?,
    )
}

/// HTTP dates as a server writes them (the native tests' formatter), for the tests below.
#[cfg(all(test, not(target_arch = "wasm32")))]
#[path = "../../tests/support/http_date.rs"]
mod written;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refreshes_skew_before_expiry_for_ordinary_tokens() {
        assert_eq!(refresh_after(3_600_000, 30_000), 3_570_000);
        assert_eq!(
            refresh_after(60_000, 30_000),
            30_000,
            "exactly 2×skew: skew rule"
        );
    }

    #[test]
    fn refreshes_half_way_for_tokens_shorter_than_twice_the_skew() {
        assert_eq!(refresh_after(59_999, 30_000), 29_999);
        assert_eq!(refresh_after(3_000, 30_000), 1_500);
        assert_eq!(refresh_after(0, 30_000), 0);
    }

    #[test]
    fn zero_skew_refreshes_at_expiry() {
        assert_eq!(refresh_after(10_000, 0), 10_000);
    }

    #[test]
    fn timer_delays_are_clamped_for_long_lived_tokens() {
        let thirty_days = 30 * 86_400_000i64;
        assert_eq!(timer_delay(thirty_days), 2_147_483_647);
        assert_eq!(timer_delay(-5), 0);
        assert_eq!(timer_delay(1234), 1234);
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_ceiling() {
        let p = RetryPolicy::default();
        // random just below 1 shows the ceiling of each step.
        let r = 0.999_999;
        assert_eq!(backoff_ms(p, 1, r, None), 1_000 - 1 + 1, "floor keeps 1 s");
        assert!((1_999..=2_000).contains(&backoff_ms(p, 2, r, None)));
        assert!((3_999..=4_000).contains(&backoff_ms(p, 3, r, None)));
        assert!((29_999..=30_000).contains(&backoff_ms(p, 10, r, None)));
        assert!((29_999..=30_000).contains(&backoff_ms(p, u32::MAX, r, None)));
    }

    #[test]
    fn backoff_never_goes_below_one_second_even_with_zero_jitter() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay_ms: 0,
            max_delay_ms: 0,
        };
        assert_eq!(backoff_ms(p, 3, 0.0, None), MIN_ATTEMPT_GAP_MS);
        assert_eq!(
            backoff_ms(RetryPolicy::default(), 1, 0.0, None),
            MIN_ATTEMPT_GAP_MS
        );
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let p = RetryPolicy::default();
        assert_eq!(backoff_ms(p, 1, 0.0, Some(7_000)), 7_000);
        assert_eq!(backoff_ms(p, 1, 0.0, Some(i64::MAX)), MAX_RETRY_AFTER_MS);
        assert_eq!(backoff_ms(p, 1, f64::NAN, Some(-5)), MIN_ATTEMPT_GAP_MS);
    }

    #[test]
    fn retry_after_reads_all_three_http_date_forms() {
        // RFC 9110 §5.6.7's three spellings of the same instant.
        let at = 784_111_777_000;
        let now = at - 5_000;
        for v in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_retry_after(v, now, None), Some(5_000), "{v}");
        }
        // A two-digit year is read within 50 years of now.
        let in_2026 = 1_780_000_000_000;
        assert_eq!(
            parse_retry_after("Friday, 01-Jan-27 00:00:00 GMT", in_2026, None),
            Some(MAX_RETRY_AFTER_MS),
            "27 is 2027, in the future: capped"
        );
        for bad in [
            "Sun Nov 6 08:49:37 1994",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun, 06-Nov-94 08:49:37 GMT",
            "Xyz Nov  6 08:49:37 1994",
            "Sun Nov  6 08:49:37 19x4",
        ] {
            assert_eq!(parse_retry_after(bad, now, None), None, "{bad}");
        }
    }

    #[test]
    fn an_http_date_is_read_against_the_responses_date_header() {
        // The server asks for 5 s; the page's clock is 2 h slow, or 2 h fast.
        let server_now = "Sun, 06 Nov 1994 08:49:32 GMT";
        let retry = "Sun, 06 Nov 1994 08:49:37 GMT";
        let true_now = 784_111_772_000;
        for page in [true_now - 7_200_000, true_now, true_now + 7_200_000] {
            assert_eq!(
                parse_retry_after(retry, page, Some(server_now)),
                Some(5_000),
                "page clock {page}"
            );
        }
        // Without a usable Date header, the page's clock is all there is.
        let slow = true_now - 7_200_000;
        assert_eq!(
            parse_retry_after(retry, slow, Some("yesterday")),
            Some(MAX_RETRY_AFTER_MS)
        );
        assert_eq!(
            parse_retry_after(retry, slow, None),
            Some(MAX_RETRY_AFTER_MS)
        );
        // Delta-seconds do not depend on any clock.
        assert_eq!(parse_retry_after("5", slow, Some(server_now)), Some(5_000));
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("3", 0, None), Some(3_000));
        assert_eq!(parse_retry_after(" 120 ", 0, None), Some(120_000));
        assert_eq!(parse_retry_after("\t7\t", 0, None), Some(7_000));
        assert_eq!(parse_retry_after("\u{a0}7", 0, None), None);
        assert_eq!(
            parse_retry_after("99999999999", 0, None),
            Some(MAX_RETRY_AFTER_MS)
        );
        let now = 784_111_777_000 - 5_000; // RFC 9110's example date minus 5 s
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now, None),
            Some(5_000)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now + 60_000, None),
            Some(0)
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "soon",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
        ] {
            assert_eq!(parse_retry_after(bad, now, None), None, "{bad}");
        }
    }

    /// An IMF-fixdate of epoch seconds, written independently of the parser (the native
    /// tests' fake servers use the same formatter).
    fn imf_fixdate(secs: i64) -> String {
        super::written::http_date(secs * 1000)
    }

    #[test]
    fn the_test_formatter_agrees_with_rfc_9110s_example() {
        assert_eq!(imf_fixdate(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    proptest! {
        #[test]
        fn refresh_point_is_within_the_lifetime(lifetime in any::<i64>(), skew in any::<i64>()) {
            let r = refresh_after(lifetime, skew);
            prop_assert!(r >= 0);
            prop_assert!(r <= lifetime.max(0));
        }

        #[test]
        fn backoff_is_bounded(base in any::<i64>(), max in any::<i64>(), n in any::<u32>(), r in any::<f64>(), ra in proptest::option::of(any::<i64>())) {
            let p = RetryPolicy { max_attempts: 5, base_delay_ms: base, max_delay_ms: max };
            let d = backoff_ms(p, n, r, ra);
            prop_assert!(d >= MIN_ATTEMPT_GAP_MS);
            prop_assert!(d <= MAX_TIMER_MS);
        }

        #[test]
        fn timer_delay_is_always_a_valid_set_timeout_delay(ms in any::<i64>()) {
            prop_assert!(i64::from(timer_delay(ms)) <= MAX_TIMER_MS);
        }

        #[test]
        fn retry_after_never_panics(s in ".{0,40}", now in any::<i64>()) {
            // Any text: almost never digits or a date, so only that it answers.
            let _ = parse_retry_after(&s, now, None);
        }

        #[test]
        fn retry_after_seconds_are_read_and_bounded(s in "[0-9]{1,12}", now in any::<i64>()) {
            let d = parse_retry_after(&s, now, None);
            prop_assert!(d.is_some(), "{} was not read", s);
            prop_assert!(d.is_some_and(|d| (0..=MAX_RETRY_AFTER_MS).contains(&d)));
        }

        #[test]
        fn imf_fixdates_are_read_exactly_and_bounded_whatever_the_clocks(
            secs in -2_208_988_800i64..253_402_300_800,
            server in -2_208_988_800i64..253_402_300_800,
            now in any::<i64>(),
        ) {
            let text = imf_fixdate(secs);
            prop_assert_eq!(http_date(&text, now), Some(secs * 1000), "{}", text);
            let date = imf_fixdate(server);
            let d = parse_retry_after(&text, now, Some(&date));
            let expected = (secs - server).saturating_mul(1000).clamp(0, MAX_RETRY_AFTER_MS);
            prop_assert_eq!(d, Some(expected), "{} against {}", text, date);
        }
    }
}
