//! The one error type of the crate. The browser shell converts it to a JS
//! `TokenClientError` in exactly one place (`browser::js_error`).
//!
//! Messages are built without `core::fmt` (size) and never contain a token:
//! the only caller-controlled text that can appear is an option *name* and a
//! sanitised OAuth `error` code.

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::borrow::Cow;

/// Everything that can go wrong, one variant per `TokenClientError.code`.
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// Bad options: the message names the option.
    InvalidOptions(Cow<'static, str>),
    /// Not in a browser window (server rendering, a worker without the APIs).
    UnsupportedEnvironment,
    /// No HTTP response at all.
    Network,
    /// The refresh or logout call took longer than `requestTimeoutMs`.
    Timeout,
    /// HTTP 429 or 5xx; `retry_after_ms` from the `Retry-After` header.
    ServerError {
        /// HTTP status.
        status: u16,
        /// Delay the server asked for, if any.
        retry_after_ms: Option<i64>,
    },
    /// HTTP 400/401/403 from the refresh endpoint: the session is over.
    RefreshRejected {
        /// HTTP status.
        status: u16,
        /// The OAuth `error` field, when the body had a well-formed one.
        error: Option<String>,
    },
    /// A 2xx whose body is not a usable token response.
    InvalidResponse(&'static str),
    /// There is no session.
    SignedOut,
    /// `dispose()` was called.
    Disposed,
}

impl Error {
    /// The stable `code` JS sees.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidOptions(_) => "invalid_options",
            Error::UnsupportedEnvironment => "unsupported_environment",
            Error::Network => "network",
            Error::Timeout => "timeout",
            Error::ServerError { .. } => "server_error",
            Error::RefreshRejected { .. } => "refresh_rejected",
            Error::InvalidResponse(_) => "invalid_response",
            Error::SignedOut => "signed_out",
            Error::Disposed => "disposed",
        }
    }

    /// Whether a refresh that failed this way is retried with backoff.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Network | Error::Timeout | Error::ServerError { .. } | Error::InvalidResponse(_)
        )
    }

    /// HTTP status for `server_error` and `refresh_rejected`.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::ServerError { status, .. } | Error::RefreshRejected { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// A human-readable message. Never contains a token.
    pub fn message(&self) -> String {
        let mut m = String::new();
        match self {
            Error::InvalidOptions(why) => m.push_str(why),
            Error::UnsupportedEnvironment => {
                m.push_str("tokenwarden needs a browser window with fetch, and WebCrypto for dpop (a secure context: https or localhost)")
            }
            Error::Network => m.push_str("the request got no HTTP response (network error)"),
            Error::Timeout => m.push_str("the request timed out"),
            Error::ServerError { status, .. } => {
                m.push_str("the server answered HTTP ");
                push_u64(&mut m, u64::from(*status));
            }
            Error::RefreshRejected { status, error } => {
                m.push_str("the refresh endpoint rejected the session (HTTP ");
                push_u64(&mut m, u64::from(*status));
                if let Some(e) = error {
                    m.push_str(", ");
                    m.push_str(e);
                }
                m.push(')');
            }
            Error::InvalidResponse(why) => {
                m.push_str("invalid token response: ");
                m.push_str(why);
            }
            Error::SignedOut => m.push_str("signed out"),
            Error::Disposed => m.push_str("the client was disposed"),
        }
        m
    }
}

/// Appends the decimal digits of `n` without `core::fmt`.
pub fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(b as char);
    }
}

/// Keeps an OAuth `error` code only if it has the shape of one: lower-case
/// ASCII letters and `_`, at most 64 bytes, as every code RFC 6749, 7009,
/// 8628, 9449 and the IANA registry define is. Anything else (HTML, control
/// characters, a token echoed back) is dropped: the code goes into the
/// error's message and `error`, and RFC 6749's wider charset let a short
/// token through (base64url fits it).
pub fn sanitize_oauth_error(raw: &str) -> Option<String> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if ok {
        Some(String::from(raw))
    } else {
        None
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_exactly_network_timeout_server_and_invalid_response() {
        assert!(Error::Network.is_transient());
        assert!(Error::Timeout.is_transient());
        assert!(Error::ServerError {
            status: 503,
            retry_after_ms: None
        }
        .is_transient());
        assert!(Error::InvalidResponse("x").is_transient());
        assert!(!Error::RefreshRejected {
            status: 401,
            error: None
        }
        .is_transient());
        assert!(!Error::SignedOut.is_transient());
        assert!(!Error::Disposed.is_transient());
        assert!(!Error::InvalidOptions("x".into()).is_transient());
    }

    #[test]
    fn messages_carry_status_and_oauth_code() {
        let e = Error::RefreshRejected {
            status: 401,
            error: Some("invalid_grant".into()),
        };
        assert_eq!(e.code(), "refresh_rejected");
        assert_eq!(e.status(), Some(401));
        assert_eq!(
            e.message(),
            "the refresh endpoint rejected the session (HTTP 401, invalid_grant)"
        );
        let s = Error::ServerError {
            status: 503,
            retry_after_ms: Some(2000),
        };
        assert_eq!(s.message(), "the server answered HTTP 503");
    }

    #[test]
    fn push_u64_writes_decimal_digits() {
        for n in [0u64, 7, 10, 429, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn oauth_error_codes_not_shaped_like_one_are_dropped() {
        assert_eq!(
            sanitize_oauth_error("invalid_grant").as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(sanitize_oauth_error(""), None);
        assert_eq!(sanitize_oauth_error("a\"b"), None);
        assert_eq!(sanitize_oauth_error("line\nbreak"), None);
        assert_eq!(sanitize_oauth_error(&"x".repeat(65)), None);
        assert_eq!(sanitize_oauth_error("é"), None);
        // A token echoed back as the code: base64url, 43 characters (the
        // reference server's refresh token), or a short one.
        assert_eq!(
            sanitize_oauth_error("qZ3vT0b-8xYw_Lk2mN5pR7sU9aC1dE4fG6hJ0kM2nP4"),
            None
        );
        assert_eq!(sanitize_oauth_error("tok-1"), None);
        assert_eq!(sanitize_oauth_error("Bearer abc"), None);
        for code in [
            "invalid_request",
            "invalid_grant",
            "invalid_dpop_proof",
            "use_dpop_nonce",
            "temporarily_unavailable",
            "insufficient_user_authentication",
            "csrf",
        ] {
            assert_eq!(sanitize_oauth_error(code).as_deref(), Some(code));
        }
    }
}
