//! `createTokenClient(options)`: defaults and validation.
//!
//! The shell hands the options over as JSON text (`JSON.stringify` of the
//! object, after refusing functions and symbols), so the same parser runs
//! natively in tests and fuzzing. Every error names the option.

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::borrow::Cow;

use super::json::{self, Value};
use super::origin;
use super::schedule::RetryPolicy;
use super::session::Config;
use crate::error::Error;

/// Validated options with defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Absolute refresh URL.
    pub refresh_url: String,
    /// Absolute logout URL, if any.
    pub logout_url: Option<String>,
    /// Absolute URL of the backend's sign-in start (`login()` navigates there), if any.
    pub login_url: Option<String>,
    /// Normalised origins that get the Bearer header.
    pub allowed_origins: Vec<String>,
    /// Extra headers on refresh and logout calls.
    pub refresh_headers: Vec<(String, String)>,
    /// Coordinate across tabs.
    pub cross_tab: bool,
    /// BroadcastChannel and lock name.
    pub channel_name: String,
    /// Timeout of one refresh or logout call.
    pub request_timeout_ms: i64,
    /// Scheduling configuration.
    pub session: Config,
    /// Bind tokens to a DPoP key (RFC 9449).
    pub dpop: bool,
}

impl Options {
    /// Whether a request to absolute `url` may carry the Bearer header.
    pub fn allows(&self, url: &str) -> bool {
        origin::of_url(url).is_some_and(|o| self.allowed_origins.iter().any(|a| a == o))
    }
}

const KNOWN: [&str; 11] = [
    "dpop",
    "refreshUrl",
    "logoutUrl",
    "loginUrl",
    "refreshSkewSeconds",
    "allowedOrigins",
    "refreshHeaders",
    "crossTab",
    "channelName",
    "requestTimeoutMs",
    "retry",
];

fn bad(option: &str, why: &str) -> Error {
    let mut m = String::with_capacity(option.len() + why.len() + 1);
    m.push_str(option);
    m.push(' ');
    m.push_str(why);
    Error::InvalidOptions(Cow::Owned(m))
}

fn number(v: &Value, name: &str, min: f64, max: f64, integer: bool) -> Result<f64, Error> {
    match v {
        Value::Num(n) if *n >= min && *n <= max && (!integer || json::is_whole(*n)) => Ok(*n),
        Value::Num(_) => Err(bad(
            name,
            if integer {
                "must be a whole number in range"
            } else {
                "is out of range"
            },
        )),
        _ => Err(bad(name, "must be a number")),
    }
}

fn url(v: &Value, name: &str, resolve: &dyn Fn(&str) -> Option<String>) -> Result<String, Error> {
    let raw = v
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad(name, "must be a non-empty string"))?;
    let abs = resolve(raw).ok_or_else(|| bad(name, "is not a valid URL"))?;
    let o = origin::of_url(&abs).ok_or_else(|| bad(name, "must be an http(s) URL"))?;
    if o.contains('@') {
        // `fetch` refuses such a URL; the origin rule's message would speak of a path.
        return Err(bad(name, "must not carry credentials (user:password@)"));
    }
    origin::normalize(o).map_err(|why| bad(name, why))?;
    Ok(abs)
}

fn header_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header_value_ok(v: &str) -> bool {
    v.len() <= 4096
        && v.bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

/// Parses `JSON.stringify(options)`. `page_origin` is `location.origin`
/// (the default allow-list); `resolve` turns a URL relative to the page
/// into an absolute one (`new URL(u, location.href)`).
pub fn parse(
    text: &str,
    page_origin: Option<&str>,
    resolve: &dyn Fn(&str) -> Option<String>,
) -> Result<Options, Error> {
    parse_with(text, page_origin, resolve, &|_| None)
}

/// [`parse`], with `canon` turning an `allowedOrigins` entry into the origin
/// the browser's `URL` makes of it (`https://127.1` → `https://127.0.0.1`,
/// `:0443` dropped, IDN hosts in punycode); `None` when it is not an origin.
/// The https/loopback rule is applied to what `canon` returns.
pub fn parse_with(
    text: &str,
    page_origin: Option<&str>,
    resolve: &dyn Fn(&str) -> Option<String>,
    canon: &dyn Fn(&str) -> Option<String>,
) -> Result<Options, Error> {
    let v = json::parse(text).map_err(|_| bad("options", "must be a plain object"))?;
    let Value::Obj(members) = &v else {
        return Err(bad("options", "must be a plain object"));
    };
    if let Some((k, _)) = members.iter().find(|(k, _)| !KNOWN.contains(&k.as_str())) {
        return Err(bad(k, "is not a known option"));
    }
    let get = |k: &str| v.get(k).filter(|x| !matches!(x, Value::Null));

    let refresh_url = url(
        get("refreshUrl").ok_or_else(|| bad("refreshUrl", "is required"))?,
        "refreshUrl",
        resolve,
    )?;
    let logout_url = get("logoutUrl")
        .map(|u| url(u, "logoutUrl", resolve))
        .transpose()?;
    let login_url = get("loginUrl")
        .map(|u| url(u, "loginUrl", resolve))
        .transpose()?;

    let skew_ms = match get("refreshSkewSeconds") {
        Some(n) => (number(n, "refreshSkewSeconds", 0.0, 31_536_000.0, false)? * 1000.0) as i64,
        None => 30_000,
    };

    let allowed_origins = match get("allowedOrigins") {
        Some(Value::Arr(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let s = item
                    .as_str()
                    .ok_or_else(|| bad("allowedOrigins", "must be an array of strings"))?;
                let canonical = canon(s);
                let o = origin::normalize(canonical.as_deref().unwrap_or(s)).map_err(|why| {
                    let mut m = String::from("allowedOrigins entry ");
                    json::push_string(&mut m, s);
                    m.push(' ');
                    m.push_str(why);
                    Error::InvalidOptions(Cow::Owned(m))
                })?;
                out.push(o);
            }
            out
        }
        Some(_) => return Err(bad("allowedOrigins", "must be an array of strings")),
        None => {
            let page = page_origin
                .ok_or_else(|| bad("allowedOrigins", "has no default outside a page"))?;
            vec![origin::normalize(page)
                .map_err(|why| bad("allowedOrigins (default: the page origin)", why))?]
        }
    };

    let refresh_headers = match get("refreshHeaders") {
        Some(Value::Obj(hs)) => {
            let mut out = Vec::with_capacity(hs.len());
            for (name, value) in hs {
                let value = value
                    .as_str()
                    .ok_or_else(|| bad("refreshHeaders", "values must be strings"))?;
                if !header_name_ok(name) || !header_value_ok(value) {
                    return Err(bad("refreshHeaders", "has an invalid header name or value"));
                }
                out.push((name.clone(), String::from(value)));
            }
            out
        }
        Some(_) => return Err(bad("refreshHeaders", "must be an object of strings")),
        None => vec![(
            String::from("X-Requested-With"),
            String::from("tokenwarden"),
        )],
    };

    let dpop = match get("dpop") {
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("dpop", "must be a boolean")),
        None => false,
    };

    let cross_tab = match get("crossTab") {
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("crossTab", "must be a boolean")),
        None => true,
    };

    let channel_name = match get("channelName") {
        Some(Value::Str(s)) if !s.is_empty() && s.len() <= 256 => s.clone(),
        Some(_) => {
            return Err(bad(
                "channelName",
                "must be a non-empty string (at most 256 characters)",
            ))
        }
        None => String::from("tokenwarden"),
    };

    let request_timeout_ms = match get("requestTimeoutMs") {
        Some(n) => number(n, "requestTimeoutMs", 1.0, 2_147_483_647.0, false)? as i64,
        None => 10_000,
    };

    let retry = match get("retry") {
        Some(r @ Value::Obj(members)) => {
            if let Some((k, _)) = members
                .iter()
                .find(|(k, _)| !matches!(k.as_str(), "maxAttempts" | "baseDelayMs" | "maxDelayMs"))
            {
                let mut name = String::from("retry.");
                name.push_str(k);
                return Err(bad(&name, "is not a known option"));
            }
            let d = RetryPolicy::default();
            let field = |k: &str,
                         name: &str,
                         min: f64,
                         integer: bool,
                         default: f64|
             -> Result<f64, Error> {
                match r.get(k).filter(|x| !matches!(x, Value::Null)) {
                    Some(n) => number(n, name, min, 2_147_483_647.0, integer),
                    None => Ok(default),
                }
            };
            let max_attempts = field(
                "maxAttempts",
                "retry.maxAttempts",
                1.0,
                true,
                f64::from(d.max_attempts),
            )?;
            let base = field(
                "baseDelayMs",
                "retry.baseDelayMs",
                0.0,
                false,
                d.base_delay_ms as f64,
            )?;
            let max = field(
                "maxDelayMs",
                "retry.maxDelayMs",
                0.0,
                false,
                d.max_delay_ms as f64,
            )?;
            if max < base {
                return Err(bad(
                    "retry.maxDelayMs",
                    "must not be less than retry.baseDelayMs",
                ));
            }
            RetryPolicy {
                max_attempts: max_attempts as u32,
                base_delay_ms: base as i64,
                max_delay_ms: max as i64,
            }
        }
        Some(_) => {
            return Err(bad(
                "retry",
                "must be an object { maxAttempts, baseDelayMs, maxDelayMs }",
            ))
        }
        None => RetryPolicy::default(),
    };

    Ok(Options {
        refresh_url,
        logout_url,
        login_url,
        allowed_origins,
        refresh_headers,
        cross_tab,
        channel_name,
        request_timeout_ms,
        session: Config {
            skew_ms,
            retry,
            dpop,
        },
        dpop,
    })
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// Resolves like `new URL(u, "https://app.example.com/page")` for the
    /// shapes the tests use.
    fn resolve(u: &str) -> Option<String> {
        if u.contains("://") {
            Some(u.to_string())
        } else if u.starts_with('/') {
            Some(String::from("https://app.example.com") + u)
        } else if u.contains(' ') {
            None
        } else {
            Some(String::from("https://app.example.com/") + u)
        }
    }

    fn opts(text: &str) -> Result<Options, Error> {
        parse(text, Some("https://app.example.com"), &resolve)
    }

    fn message(text: &str) -> String {
        match opts(text) {
            Err(e @ Error::InvalidOptions(_)) => e.message(),
            other => panic!("{text}: expected invalid_options, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let o = opts(r#"{"refreshUrl":"/auth/refresh"}"#).unwrap();
        assert_eq!(o.refresh_url, "https://app.example.com/auth/refresh");
        assert_eq!(o.logout_url, None);
        assert_eq!(o.login_url, None);
        assert_eq!(o.allowed_origins, ["https://app.example.com"]);
        assert_eq!(
            o.refresh_headers,
            [("X-Requested-With".to_string(), "tokenwarden".to_string())]
        );
        assert!(o.cross_tab);
        assert_eq!(o.channel_name, "tokenwarden");
        assert_eq!(o.request_timeout_ms, 10_000);
        assert_eq!(o.session.skew_ms, 30_000);
        assert_eq!(
            o.session.retry,
            RetryPolicy {
                max_attempts: 5,
                base_delay_ms: 1_000,
                max_delay_ms: 30_000
            }
        );
    }

    #[test]
    fn every_option_can_be_set() {
        let o = opts(
            r#"{"refreshUrl":"https://auth.example.com/r","logoutUrl":"/auth/logout","loginUrl":"/auth/login","refreshSkewSeconds":5.5,
                "allowedOrigins":["https://API.example.com:443","http://localhost:3000"],
                "refreshHeaders":{"X-CSRF":"1"},"crossTab":false,"channelName":"app",
                "requestTimeoutMs":2500,"retry":{"maxAttempts":2,"baseDelayMs":10,"maxDelayMs":100}}"#,
        )
        .unwrap();
        assert_eq!(
            o.login_url.as_deref(),
            Some("https://app.example.com/auth/login")
        );
        assert_eq!(
            o.logout_url.as_deref(),
            Some("https://app.example.com/auth/logout")
        );
        assert_eq!(o.session.skew_ms, 5_500);
        assert_eq!(
            o.allowed_origins,
            ["https://api.example.com", "http://localhost:3000"]
        );
        assert!(o.allows("https://api.example.com/v1/x"));
        assert!(
            !o.allows("https://app.example.com/x"),
            "an explicit list replaces the default"
        );
        assert!(
            !o.allows("http://api.example.com/x"),
            "another scheme is another origin"
        );
        assert!(
            !o.allows("https://api.example.com:8443/x"),
            "another port is another origin"
        );
        assert!(!o.allows("https://api.example.com.evil.com/x"));
        assert_eq!(o.session.retry.max_attempts, 2);
        assert!(!o.cross_tab);
    }

    #[test]
    fn null_means_default() {
        let o =
            opts(r#"{"refreshUrl":"/r","logoutUrl":null,"retry":{"maxAttempts":null}}"#).unwrap();
        assert_eq!(o.logout_url, None);
        assert_eq!(o.session.retry.max_attempts, 5);
    }

    #[test]
    fn bad_options_name_the_option() {
        let cases = [
            ("{}", "refreshUrl"),
            ("[]", "options"),
            ("null", "options"),
            (r#"{"refreshUrl":""}"#, "refreshUrl"),
            (r#"{"refreshUrl":5}"#, "refreshUrl"),
            (r#"{"refreshUrl":"not a url"}"#, "refreshUrl"),
            (
                r#"{"refreshUrl":"https://user:pw@auth.example.com/r"}"#,
                "refreshUrl must not carry credentials",
            ),
            (
                r#"{"refreshUrl":"http://auth.example.com/r"}"#,
                "refreshUrl",
            ),
            (
                r#"{"refreshUrl":"/r","logoutUrl":"javascript://x"}"#,
                "logoutUrl",
            ),
            (r#"{"refreshUrl":"/r","refreshUrI":"/typo"}"#, "refreshUrI"),
            (
                r#"{"refreshUrl":"/r","refreshSkewSeconds":-1}"#,
                "refreshSkewSeconds",
            ),
            (
                r#"{"refreshUrl":"/r","refreshSkewSeconds":"30"}"#,
                "refreshSkewSeconds",
            ),
            (
                r#"{"refreshUrl":"/r","allowedOrigins":"https://a.com"}"#,
                "allowedOrigins",
            ),
            (
                r#"{"refreshUrl":"/r","allowedOrigins":["http://api.example.com"]}"#,
                "allowedOrigins",
            ),
            (
                r#"{"refreshUrl":"/r","allowedOrigins":["https://a.com/path"]}"#,
                "allowedOrigins",
            ),
            (
                r#"{"refreshUrl":"/r","allowedOrigins":[1]}"#,
                "allowedOrigins",
            ),
            (
                r#"{"refreshUrl":"/r","refreshHeaders":{"X-A":1}}"#,
                "refreshHeaders",
            ),
            (
                r#"{"refreshUrl":"/r","refreshHeaders":{"Bad Name":"v"}}"#,
                "refreshHeaders",
            ),
            (
                r#"{"refreshUrl":"/r","refreshHeaders":{"X-A":"a\nb"}}"#,
                "refreshHeaders",
            ),
            (
                r#"{"refreshUrl":"/r","refreshHeaders":[]}"#,
                "refreshHeaders",
            ),
            (r#"{"refreshUrl":"/r","crossTab":"yes"}"#, "crossTab"),
            (r#"{"refreshUrl":"/r","channelName":""}"#, "channelName"),
            (
                r#"{"refreshUrl":"/r","requestTimeoutMs":0}"#,
                "requestTimeoutMs",
            ),
            (
                r#"{"refreshUrl":"/r","requestTimeoutMs":-5}"#,
                "requestTimeoutMs",
            ),
            (
                r#"{"refreshUrl":"/r","requestTimeoutMs":1e12}"#,
                "requestTimeoutMs",
            ),
            (r#"{"refreshUrl":"/r","retry":5}"#, "retry"),
            (
                r#"{"refreshUrl":"/r","retry":{"maxAttempts":0}}"#,
                "retry.maxAttempts",
            ),
            (
                r#"{"refreshUrl":"/r","retry":{"maxAttempts":1.5}}"#,
                "retry.maxAttempts",
            ),
            (
                r#"{"refreshUrl":"/r","retry":{"baseDelayMs":-1}}"#,
                "retry.baseDelayMs",
            ),
            (
                r#"{"refreshUrl":"/r","retry":{"baseDelayMs":100,"maxDelayMs":10}}"#,
                "retry.maxDelayMs",
            ),
            (
                r#"{"refreshUrl":"/r","retry":{"jitter":true}}"#,
                "retry.jitter",
            ),
        ];
        for (text, option) in cases {
            let m = message(text);
            assert!(
                m.starts_with(option),
                "{text}: message {m:?} should name {option}"
            );
        }
    }

    #[test]
    fn a_plain_http_page_outside_loopback_has_no_default_allow_list() {
        let e = parse(
            r#"{"refreshUrl":"https://a.com/r"}"#,
            Some("http://intranet"),
            &resolve,
        )
        .unwrap_err();
        assert!(e.message().starts_with("allowedOrigins"));
    }

    #[test]
    fn loopback_http_pages_work_out_of_the_box() {
        let local = |u: &str| Some(String::from("http://127.0.0.1:8080") + u);
        let o = parse(
            r#"{"refreshUrl":"/auth/refresh"}"#,
            Some("http://127.0.0.1:8080"),
            &local,
        )
        .unwrap();
        assert!(o.allows("http://127.0.0.1:8080/api/me"));
        assert!(!o.allows("http://localhost:8080/api/me"));
    }
}
