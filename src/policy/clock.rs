//! Time as the core sees it: a pair of readings taken together.
//!
//! `wall` is `Date.now()`: it keeps counting while a laptop sleeps, but the
//! user (or NTP) can move it. `mono` is `performance.now()` (plus the time
//! origin): it never goes backwards, but on some platforms it stops during
//! sleep. Elapsed time is the larger of the two differences, so a token
//! ages through sleep *and* through a clock set backwards; a clock set
//! forwards only makes a token look older, which costs one early refresh,
//! never an expired token sent.

#[allow(unused_imports)]
use crate::prelude::*;
/// One reading of both clocks, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Wall-clock epoch milliseconds (`Date.now()`).
    pub wall: i64,
    /// Monotonic milliseconds (`performance.timeOrigin + performance.now()`).
    pub mono: i64,
}

impl Stamp {
    /// A stamp where both clocks read `ms` (tests, and single-clock hosts).
    pub const fn at(ms: i64) -> Self {
        Stamp { wall: ms, mono: ms }
    }

    /// Milliseconds elapsed since `earlier`, never negative.
    pub fn since(self, earlier: Stamp) -> i64 {
        let wall = self.wall.saturating_sub(earlier.wall);
        let mono = self.mono.saturating_sub(earlier.mono);
        wall.max(mono).max(0)
    }

    /// The stamp `ms` milliseconds before this one (on both clocks).
    pub fn minus(self, ms: i64) -> Stamp {
        Stamp {
            wall: self.wall.saturating_sub(ms),
            mono: self.mono.saturating_sub(ms),
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sleep_counts_even_when_the_monotonic_clock_stopped() {
        let t0 = Stamp {
            wall: 1_000_000,
            mono: 500,
        };
        // Eight hours of sleep: wall advanced, monotonic did not.
        let woke = Stamp {
            wall: 1_000_000 + 8 * 3_600_000,
            mono: 600,
        };
        assert_eq!(woke.since(t0), 8 * 3_600_000);
    }

    #[test]
    fn a_clock_set_back_an_hour_does_not_make_a_token_younger() {
        let t0 = Stamp {
            wall: 10_000_000,
            mono: 500,
        };
        let later = Stamp {
            wall: 10_000_000 - 3_600_000 + 5_000,
            mono: 5_500,
        };
        assert_eq!(later.since(t0), 5_000);
    }

    proptest! {
        #[test]
        fn elapsed_is_never_negative(a in any::<i64>(), b in any::<i64>(), c in any::<i64>(), d in any::<i64>()) {
            let e = Stamp { wall: a, mono: b }.since(Stamp { wall: c, mono: d });
            prop_assert!(e >= 0);
        }
    }
}
