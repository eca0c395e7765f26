//! Upstream-mode configuration: `--oidc-*` flags or `TW_OIDC_*` variables (flags win).
//! The client secret and the token key come from the environment or a file, never a flag
//! (a flag shows in `ps`), and neither is ever logged: their `Debug` is redacted.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

/// Usage lines appended to the server's `--help`.
pub const USAGE: &str = "
Upstream mode (sign-in through an OpenID Provider; all of it off unless --oidc-issuer is set):
  --oidc-issuer URL            issuer; metadata from URL/.well-known/openid-configuration  env TW_OIDC_ISSUER
  --oidc-client-id ID          client id registered at the provider   env TW_OIDC_CLIENT_ID
  --oidc-client-secret-file F  file holding the client secret         env TW_OIDC_CLIENT_SECRET[_FILE]
  --oidc-redirect-uri URL      this server's /auth/callback as registered  env TW_OIDC_REDIRECT_URI
  --oidc-scopes LIST           space-separated, openid implied (default: none more)  env TW_OIDC_SCOPES
  --oidc-allowed-return LIST   comma-separated URL prefixes a login may return to (the first is
                               the default)                           env TW_OIDC_ALLOWED_RETURN
  --oidc-post-logout-uri URL   post_logout_redirect_uri for RP-initiated logout  env TW_OIDC_POST_LOGOUT_URI
  --oidc-timeout-ms N          timeout of every provider call (default 5000)  env TW_OIDC_TIMEOUT_MS
  --oidc-token-key-file F      32-byte key (base64) sealing provider tokens at rest
                               env TW_OIDC_TOKEN_KEY[_FILE]; default: random per start
";

/// The `--oidc-*` flags that take a value.
pub const FLAGS: &[&str] = &[
    "--oidc-issuer",
    "--oidc-client-id",
    "--oidc-client-secret-file",
    "--oidc-redirect-uri",
    "--oidc-scopes",
    "--oidc-allowed-return",
    "--oidc-post-logout-uri",
    "--oidc-timeout-ms",
    "--oidc-token-key-file",
];

/// A secret string whose `Debug` shows nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Everything upstream mode needs.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Issuer URL.
    pub issuer: String,
    /// Client id.
    pub client_id: String,
    /// Client secret (confidential client).
    pub client_secret: Secret,
    /// Our callback as registered at the provider.
    pub redirect_uri: Url,
    /// Scopes besides `openid`.
    pub scopes: Vec<String>,
    /// URL prefixes a login may return to; the first is the default.
    pub allowed_return: Vec<Url>,
    /// `post_logout_redirect_uri`.
    pub post_logout_uri: Option<Url>,
    /// Timeout of each provider call.
    pub timeout: Duration,
    /// Base64 key for sealing tokens; `None` = random per start.
    pub token_key: Option<Secret>,
}

fn read_secret_file(path: &str, what: &str) -> Result<Secret, String> {
    std::fs::read_to_string(PathBuf::from(path))
        .map(|s| Secret(s.trim().to_string()))
        .map_err(|e| format!("cannot read the {what} file {path}: {e}"))
}

fn absolute_url(v: &str, name: &str) -> Result<Url, String> {
    let url = Url::parse(v.trim()).map_err(|_| format!("{name}: not an absolute URL: {v:?}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(format!("{name}: not an http(s) URL: {v:?}"));
    }
    Ok(url)
}

impl UpstreamConfig {
    /// Build from the `--oidc-*` flag values given (`flags`, later wins) and the environment.
    /// `Ok(None)` when no issuer is configured (built-in mode).
    pub fn from_flags_and_env(
        flags: &[(String, String)],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, String> {
        let get = |flag: &str, var: &str| -> Option<String> {
            flags
                .iter()
                .rev()
                .find(|(f, _)| f == flag)
                .map(|(_, v)| v.clone())
                .or_else(|| env(var))
                .filter(|v| !v.trim().is_empty())
        };
        let Some(issuer) = get("--oidc-issuer", "TW_OIDC_ISSUER") else {
            return Ok(None);
        };
        absolute_url(&issuer, "--oidc-issuer")?;
        let need = |flag: &str, var: &str| {
            get(flag, var).ok_or_else(|| format!("upstream mode needs {flag} (or {var})"))
        };
        let client_id = need("--oidc-client-id", "TW_OIDC_CLIENT_ID")?;
        let client_secret = match get("--oidc-client-secret-file", "TW_OIDC_CLIENT_SECRET_FILE") {
            Some(path) => read_secret_file(&path, "client secret")?,
            None => Secret(
                env("TW_OIDC_CLIENT_SECRET")
                    .filter(|s| !s.is_empty())
                    .ok_or(
                        "upstream mode needs TW_OIDC_CLIENT_SECRET or --oidc-client-secret-file",
                    )?,
            ),
        };
        let redirect_uri = absolute_url(
            &need("--oidc-redirect-uri", "TW_OIDC_REDIRECT_URI")?,
            "--oidc-redirect-uri",
        )?;
        let scopes = get("--oidc-scopes", "TW_OIDC_SCOPES")
            .unwrap_or_default()
            .split_whitespace()
            .filter(|s| *s != "openid")
            .map(str::to_string)
            .collect();
        let allowed_return = need("--oidc-allowed-return", "TW_OIDC_ALLOWED_RETURN")?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| absolute_url(s, "--oidc-allowed-return"))
            .collect::<Result<Vec<_>, _>>()?;
        if allowed_return.is_empty() {
            return Err("--oidc-allowed-return lists no URL".into());
        }
        let post_logout_uri = get("--oidc-post-logout-uri", "TW_OIDC_POST_LOGOUT_URI")
            .map(|v| absolute_url(&v, "--oidc-post-logout-uri"))
            .transpose()?;
        let timeout = match get("--oidc-timeout-ms", "TW_OIDC_TIMEOUT_MS") {
            None => Duration::from_secs(5),
            Some(v) => match v.parse::<u64>() {
                Ok(ms) if (1..=120_000).contains(&ms) => Duration::from_millis(ms),
                _ => return Err(format!("--oidc-timeout-ms: 1..120000, got {v:?}")),
            },
        };
        let token_key = match get("--oidc-token-key-file", "TW_OIDC_TOKEN_KEY_FILE") {
            Some(path) => Some(read_secret_file(&path, "token key")?),
            None => env("TW_OIDC_TOKEN_KEY")
                .filter(|s| !s.is_empty())
                .map(Secret),
        };
        Ok(Some(Self {
            issuer,
            client_id,
            client_secret,
            redirect_uri,
            scopes,
            allowed_return,
            post_logout_uri,
            timeout,
            token_key,
        }))
    }

    /// The URL a login returns to: `return_to` (absolute, or a path on the first allowed
    /// URL's origin) when it starts with one of the allowed prefixes, else `None`. No
    /// `returnTo` means the first allowed URL.
    pub fn return_url(&self, return_to: Option<&str>) -> Option<Url> {
        let default = self.allowed_return.first()?;
        let Some(raw) = return_to.filter(|r| !r.is_empty()) else {
            return Some(default.clone());
        };
        // "//host" and "/\host" are other origins for a browser: never relative paths here.
        let url = if raw.starts_with('/') && !raw.starts_with("//") && !raw.starts_with("/\\") {
            default.join(raw).ok()?
        } else {
            Url::parse(raw).ok()?
        };
        if url.username() != "" || url.password().is_some() || url.fragment().is_some() {
            return None;
        }
        let allowed = self.allowed_return.iter().any(|prefix| {
            prefix.origin() == url.origin()
                && (url.path() == prefix.path()
                    || url
                        .path()
                        .starts_with(&format!("{}/", prefix.path().trim_end_matches('/'))))
        });
        allowed.then_some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    const BASE: &[(&str, &str)] = &[
        ("TW_OIDC_ISSUER", "https://id.example.com/realms/app"),
        ("TW_OIDC_CLIENT_ID", "app"),
        ("TW_OIDC_CLIENT_SECRET", "s3cret"),
        (
            "TW_OIDC_REDIRECT_URI",
            "https://app.example.com/auth/callback",
        ),
        (
            "TW_OIDC_ALLOWED_RETURN",
            "https://app.example.com/, https://app.example.com/admin",
        ),
        ("TW_OIDC_SCOPES", "openid offline_access profile"),
    ];

    #[test]
    fn without_an_issuer_the_server_stays_in_built_in_mode() {
        assert!(UpstreamConfig::from_flags_and_env(&[], &env_of(&[]))
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_environment_configures_upstream_mode_and_flags_win() {
        let flags = vec![("--oidc-client-id".to_string(), "other".to_string())];
        let c = UpstreamConfig::from_flags_and_env(&flags, &env_of(BASE))
            .unwrap()
            .unwrap();
        assert_eq!(c.client_id, "other");
        assert_eq!(c.scopes, ["offline_access", "profile"]);
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.allowed_return.len(), 2);
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn a_missing_client_id_or_secret_is_named() {
        let e = UpstreamConfig::from_flags_and_env(
            &[],
            &env_of(&[("TW_OIDC_ISSUER", "https://id.example.com")]),
        )
        .unwrap_err();
        assert!(e.contains("--oidc-client-id"), "{e}");
    }

    #[test]
    fn only_allow_listed_return_urls_are_accepted() {
        let c = UpstreamConfig::from_flags_and_env(&[], &env_of(BASE))
            .unwrap()
            .unwrap();
        let ok = |r: Option<&str>| c.return_url(r).map(|u| u.to_string());
        assert_eq!(ok(None).as_deref(), Some("https://app.example.com/"));
        assert_eq!(
            ok(Some("/inbox?x=1")).as_deref(),
            Some("https://app.example.com/inbox?x=1")
        );
        assert_eq!(
            ok(Some("https://app.example.com/admin/users")).as_deref(),
            Some("https://app.example.com/admin/users")
        );
        for bad in [
            "https://evil.example.com/",
            "//evil.example.com/",
            "/\\evil.example.com/",
            "http://app.example.com/",
            "https://app.example.com.evil.com/",
            "https://user@app.example.com/",
            "javascript:alert(1)",
            "https://app.example.com/#frag",
        ] {
            assert_eq!(ok(Some(bad)), None, "{bad}");
        }
        let narrow = UpstreamConfig {
            allowed_return: vec![Url::parse("https://app.example.com/app").unwrap()],
            ..c
        };
        assert!(narrow
            .return_url(Some("https://app.example.com/app/x"))
            .is_some());
        assert!(narrow
            .return_url(Some("https://app.example.com/apple"))
            .is_none());
    }
}
