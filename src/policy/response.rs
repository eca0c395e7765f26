//! What an HTTP answer from the refresh or logout endpoint means: status
//! classification and `Retry-After`. The shell only reports status, body
//! and the header; every decision about them is here.

use super::json;
use super::schedule::parse_retry_after;
use super::token::{oauth_error, parse_token_response, Grant};
use crate::error::Error;
#[allow(unused_imports)]
use crate::prelude::*;

/// An HTTP answer as the shell saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body as text.
    pub body: String,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The `DPoP-Nonce` header, if any.
    pub dpop_nonce: Option<String>,
    /// The `Date` header, if any: the server's clock, which an HTTP-date
    /// `Retry-After` is read against.
    pub date: Option<String>,
}

/// The refresh endpoint's answer: a 2xx carries a token response,
/// 400/401/403 end the session, anything else is a transient server error.
pub fn refresh_outcome(reply: &Reply, now_wall: i64) -> Result<Grant, Error> {
    match reply.status {
        200..=299 => parse_token_response(&reply.body),
        400 | 401 | 403 => Err(rejected(reply)),
        status => Err(Error::ServerError {
            status,
            retry_after_ms: reply
                .retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, now_wall, reply.date.as_deref())),
        }),
    }
}

/// The logout endpoint's answer: 2xx and 3xx mean the server was told.
///
/// `Ok(Some(url))`: a 200 whose JSON names `end_session_url` (upstream mode): where the app
/// may send the browser for the provider's RP-initiated logout.
pub fn logout_outcome(reply: &Reply) -> Result<Option<String>, Error> {
    match reply.status {
        200 => Ok(json::parse(&reply.body).ok().and_then(|v| {
            v.get("end_session_url")
                .and_then(json::Value::as_str)
                .map(String::from)
        })),
        201..=399 => Ok(None),
        400 | 401 | 403 => Err(rejected(reply)),
        status => Err(Error::ServerError {
            status,
            retry_after_ms: None,
        }),
    }
}

fn rejected(reply: &Reply) -> Error {
    Error::RefreshRejected {
        status: reply.status,
        error: oauth_error(&reply.body),
    }
}

/// Whether an app request that carried our token is replayed once after
/// `status`: only a 401 from an allowed origin (a redirect elsewhere dropped
/// the header on the way), only when the request can be sent again.
pub fn replay_after(status: u16, final_origin_allowed: bool, replayable: bool) -> bool {
    status == 401 && final_origin_allowed && replayable
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str, retry_after: Option<&str>) -> Reply {
        Reply {
            status,
            body: body.into(),
            retry_after: retry_after.map(Into::into),
            dpop_nonce: None,
            date: None,
        }
    }

    #[test]
    fn a_2xx_with_a_token_response_is_a_grant() {
        let r = reply(200, r#"{"access_token":"abc","expires_in":60}"#, None);
        assert!(refresh_outcome(&r, 0).is_ok());
    }

    #[test]
    fn statuses_400_401_403_reject_with_the_oauth_error() {
        for status in [400, 401, 403] {
            let r = reply(status, r#"{"error":"invalid_grant"}"#, None);
            assert_eq!(
                refresh_outcome(&r, 0).unwrap_err(),
                Error::RefreshRejected {
                    status,
                    error: Some("invalid_grant".into())
                }
            );
            assert!(logout_outcome(&r).is_err());
        }
    }

    #[test]
    fn other_statuses_are_server_errors_honouring_retry_after() {
        let r = reply(503, "", Some("7"));
        assert_eq!(
            refresh_outcome(&r, 0).unwrap_err(),
            Error::ServerError {
                status: 503,
                retry_after_ms: Some(7_000)
            }
        );
        let r = reply(429, "", Some("Sun, 06 Nov 1994 08:49:37 GMT"));
        let at = 784_111_777_000;
        assert_eq!(
            refresh_outcome(&r, at - 2_000).unwrap_err(),
            Error::ServerError {
                status: 429,
                retry_after_ms: Some(2_000)
            }
        );
    }

    #[test]
    fn logout_accepts_2xx_and_3xx_and_reports_5xx() {
        assert!(logout_outcome(&reply(204, "", None)).is_ok());
        assert_eq!(
            logout_outcome(&reply(
                200,
                r#"{"end_session_url":"https://op/end?x=1"}"#,
                None
            )),
            Ok(Some("https://op/end?x=1".into())),
            "upstream mode names the provider's end-session URL"
        );
        assert_eq!(logout_outcome(&reply(200, "<html>", None)), Ok(None));
        assert!(logout_outcome(&reply(302, "", None)).is_ok());
        assert_eq!(
            logout_outcome(&reply(500, "", None)),
            Err(Error::ServerError {
                status: 500,
                retry_after_ms: None
            })
        );
    }

    #[test]
    fn only_a_replayable_401_from_an_allowed_origin_is_replayed() {
        assert!(replay_after(401, true, true));
        assert!(!replay_after(401, false, true));
        assert!(!replay_after(401, true, false));
        assert!(!replay_after(403, true, true));
        assert!(!replay_after(200, true, true));
    }
}
