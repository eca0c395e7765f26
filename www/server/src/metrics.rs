//! Event counters and the request-latency histogram, kept in a prometheus-client
//! [`Registry`]: `GET /metrics` encodes it in the Prometheus text format, and test mode's
//! `GET /test/counters` reads the same counters as JSON.

use std::sync::atomic::Ordering;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::store::StoreStats;

macro_rules! counters {
    ($($field:ident => $json:literal, $help:literal;)*) => {
        /// Event counters (always kept).
        #[derive(Debug, Default)]
        pub struct Counters { $(#[doc = $help] pub $field: Counter,)* }

        /// A JSON snapshot of [`Counters`] plus store statistics (`GET /test/counters`).
        #[derive(Debug, Clone, Serialize)]
        pub struct CountersSnapshot {
            $(#[doc = $help] #[serde(rename = $json)] pub $field: u64,)*
            /// Families neither revoked nor expired.
            #[serde(rename = "liveFamilies")]
            pub live_families: u64,
            /// Live families with exactly one live refresh token.
            #[serde(rename = "familiesWithOneLiveToken")]
            pub families_with_one_live_token: u64,
        }

        impl Counters {
            fn register(&self, registry: &mut Registry) {
                $(registry.register(stringify!($field), $help, self.$field.clone());)*
            }

            /// Read all counters.
            pub fn snapshot(&self, stats: StoreStats) -> CountersSnapshot {
                CountersSnapshot {
                    $($field: self.$field.get(),)*
                    live_families: stats.live_families,
                    families_with_one_live_token: stats.families_with_one_live_token,
                }
            }

            /// Zero all counters (test mode).
            pub fn reset(&self) {
                $(self.$field.inner().store(0, Ordering::Relaxed);)*
            }
        }
    };
}

counters! {
    refreshes_served => "refreshesServed", "Refreshes answered with a new token (rotations).";
    refresh_requests => "refreshRequests", "POST /auth/refresh requests.";
    refresh_rejected => "refreshRejected", "Refreshes refused with 401 or 403.";
    reuse_detected => "reuseDetected", "Retired refresh tokens presented again.";
    lost_responses_repeated => "lostResponsesRepeated", "Previous refresh tokens answered with their unused successor again (lost-response window).";
    families_revoked => "familiesRevoked", "Token families revoked (logout, reuse, per-user cap).";
    logins_served => "loginsServed", "Successful logins.";
    logins_refused => "loginsRefused", "Logins refused for wrong credentials.";
    rate_limited => "rateLimited", "Requests answered 429 by the login limiter.";
    logouts => "logouts", "POST /auth/logout answered 204.";
    api_calls => "apiCalls", "GET /api/me requests.";
    api_ok => "apiOk", "GET /api/me answered 200.";
    api_unauthorized => "apiUnauthorized", "GET /api/me answered 401.";
    api_expired_tokens => "apiExpiredTokens", "Access tokens refused as expired.";
    api_revoked_tokens => "apiRevokedTokens", "Access tokens refused because their family is revoked.";
    api_no_token => "apiNoToken", "GET /api/me without a Bearer token.";
    csrf_missing => "csrfMissing", "Cookie endpoints called without the CSRF header.";
    origin_refused => "originRefused", "Cookie endpoints called from a foreign Origin or Sec-Fetch-Site.";
}

/// Counters, histogram and the registry that exports them.
#[derive(Debug)]
pub struct Metrics {
    /// Event counters.
    pub counters: Counters,
    /// Seconds from a request's arrival to its response's headers.
    pub request_seconds: Histogram,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let counters = Counters::default();
        // 0.25 ms … ~8 s.
        let request_seconds = Histogram::new(exponential_buckets(0.00025, 2.0, 16));
        let mut registry = Registry::with_prefix("tokenwarden");
        counters.register(&mut registry);
        registry.register(
            "http_request_duration_seconds",
            "Seconds from a request's arrival to its response's headers.",
            request_seconds.clone(),
        );
        Self {
            counters,
            request_seconds,
            registry,
        }
    }
}

impl Metrics {
    /// Everything in the Prometheus text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Add one to a counter.
pub fn bump(counter: &Counter) {
    counter.inc();
}
