//! Upstream-mode configuration: the `--oidc-*` flags or `TW_OIDC_*` variables of
//! [`UpstreamArgs`] (clap, flattened into [`crate::Config`]; a flag wins over its variable),
//! checked and completed by [`UpstreamArgs::resolve`] into an [`UpstreamConfig`].
//! The client secret and the token key come from the environment or a file, never a flag
//! (a flag shows in `ps`), and neither is ever logged: their `Debug` is redacted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

/// Upstream mode's flags (all of it off unless `--oidc-issuer` is set). The secret and the
/// token key are not flags: `TW_OIDC_CLIENT_SECRET` / `TW_OIDC_TOKEN_KEY` in the environment,
/// or a file named here.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Upstream mode (sign-in through an OpenID Provider)")]
pub struct UpstreamArgs {
    /// Issuer URL of the OpenID Provider (metadata from ISSUER/.well-known/openid-configuration);
    /// setting it switches the server to upstream mode.
    #[arg(long = "oidc-issuer", env = "TW_OIDC_ISSUER", value_name = "URL")]
    pub issuer: Option<String>,
    /// Client id registered at the provider.
    #[arg(long = "oidc-client-id", env = "TW_OIDC_CLIENT_ID", value_name = "ID")]
    pub client_id: Option<String>,
    /// File holding the client secret (else TW_OIDC_CLIENT_SECRET; never a flag).
    #[arg(
        long = "oidc-client-secret-file",
        env = "TW_OIDC_CLIENT_SECRET_FILE",
        value_name = "FILE"
    )]
    pub client_secret_file: Option<PathBuf>,
    /// This server's /auth/callback, as registered at the provider.
    #[arg(
        long = "oidc-redirect-uri",
        env = "TW_OIDC_REDIRECT_URI",
        value_name = "URL"
    )]
    pub redirect_uri: Option<String>,
    /// Space-separated scopes besides `openid` (e.g. "offline_access profile").
    #[arg(long = "oidc-scopes", env = "TW_OIDC_SCOPES", value_name = "LIST")]
    pub scopes: Option<String>,
    /// URL prefixes a login may return to, comma-separated or repeated; the first is the
    /// default `returnTo`.
    #[arg(
        long = "oidc-allowed-return",
        env = "TW_OIDC_ALLOWED_RETURN",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub allowed_return: Vec<String>,
    /// post_logout_redirect_uri for RP-initiated logout.
    #[arg(
        long = "oidc-post-logout-uri",
        env = "TW_OIDC_POST_LOGOUT_URI",
        value_name = "URL"
    )]
    pub post_logout_uri: Option<String>,
    /// The audience the provider's JWT access tokens must name in `aud` (the API identifier
    /// of Auth0, an RFC 8707 resource); default: the client id.
    #[arg(long = "oidc-audience", env = "TW_OIDC_AUDIENCE", value_name = "AUD")]
    pub audience: Option<String>,
    /// Timeout of every call to the provider, in ms.
    #[arg(
        long = "oidc-timeout-ms",
        env = "TW_OIDC_TIMEOUT_MS",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(1..=120_000)
    )]
    pub timeout_ms: u64,
    /// File holding the 32-byte key (base64) that seals provider tokens at rest (else
    /// TW_OIDC_TOKEN_KEY; default: a random key per start).
    #[arg(
        long = "oidc-token-key-file",
        env = "TW_OIDC_TOKEN_KEY_FILE",
        value_name = "FILE"
    )]
    pub token_key_file: Option<PathBuf>,
}

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
    /// The `aud` expected in the provider's JWT access tokens.
    pub audience: String,
    /// Timeout of each provider call.
    pub timeout: Duration,
    /// Base64 key for sealing tokens; `None` = random per start.
    pub token_key: Option<Secret>,
}

fn read_secret_file(path: &Path, what: &str) -> Result<Secret, String> {
    std::fs::read_to_string(path)
        .map(|s| Secret(s.trim().to_string()))
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))
}

fn absolute_url(v: &str, name: &str) -> Result<Url, String> {
    let url = Url::parse(v.trim()).map_err(|_| format!("{name}: not an absolute URL: {v:?}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(format!("{name}: not an http(s) URL: {v:?}"));
    }
    Ok(url)
}

impl UpstreamArgs {
    /// Check the flags and read the secrets (`env` is the environment). `Ok(None)` when no
    /// issuer is configured (built-in mode).
    pub fn resolve(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<UpstreamConfig>, String> {
        let given = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
        let Some(issuer) = given(&self.issuer) else {
            return Ok(None);
        };
        absolute_url(&issuer, "--oidc-issuer")?;
        let need = |v: &Option<String>, flag: &str, var: &str| {
            given(v).ok_or_else(|| format!("upstream mode needs {flag} (or {var})"))
        };
        let client_id = need(&self.client_id, "--oidc-client-id", "TW_OIDC_CLIENT_ID")?;
        let client_secret = match &self.client_secret_file {
            Some(path) => read_secret_file(path, "client secret")?,
            None => Secret(
                env("TW_OIDC_CLIENT_SECRET")
                    .filter(|s| !s.is_empty())
                    .ok_or(
                        "upstream mode needs TW_OIDC_CLIENT_SECRET or --oidc-client-secret-file",
                    )?,
            ),
        };
        let redirect_uri = absolute_url(
            &need(
                &self.redirect_uri,
                "--oidc-redirect-uri",
                "TW_OIDC_REDIRECT_URI",
            )?,
            "--oidc-redirect-uri",
        )?;
        let scopes = self
            .scopes
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .filter(|s| *s != "openid")
            .map(str::to_string)
            .collect();
        let allowed_return = self
            .allowed_return
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| absolute_url(s, "--oidc-allowed-return"))
            .collect::<Result<Vec<_>, _>>()?;
        if allowed_return.is_empty() {
            return Err(
                "upstream mode needs --oidc-allowed-return (or TW_OIDC_ALLOWED_RETURN)".into(),
            );
        }
        let post_logout_uri = given(&self.post_logout_uri)
            .map(|v| absolute_url(&v, "--oidc-post-logout-uri"))
            .transpose()?;
        let token_key = match &self.token_key_file {
            Some(path) => Some(read_secret_file(path, "token key")?),
            None => env("TW_OIDC_TOKEN_KEY")
                .filter(|s| !s.is_empty())
                .map(Secret),
        };
        let audience = given(&self.audience).unwrap_or_else(|| client_id.clone());
        Ok(Some(UpstreamConfig {
            issuer,
            audience,
            client_id,
            client_secret,
            redirect_uri,
            scopes,
            allowed_return,
            post_logout_uri,
            timeout: Duration::from_millis(self.timeout_ms),
            token_key,
        }))
    }
}

impl UpstreamConfig {
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
    use clap::Parser as _;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    const BASE: &[&str] = &[
        "--oidc-issuer",
        "https://id.example.com/realms/app",
        "--oidc-client-id",
        "app",
        "--oidc-redirect-uri",
        "https://app.example.com/auth/callback",
        "--oidc-allowed-return",
        "https://app.example.com/, https://app.example.com/admin",
        "--oidc-scopes",
        "openid offline_access profile",
    ];
    const SECRET: &[(&str, &str)] = &[("TW_OIDC_CLIENT_SECRET", "s3cret")];

    fn args(extra: &[&str]) -> UpstreamArgs {
        let argv = std::iter::once("tokenwarden-server")
            .chain(BASE.iter().copied())
            .chain(extra.iter().copied());
        crate::Config::try_parse_from(argv).unwrap().oidc
    }

    fn resolved(extra: &[&str]) -> UpstreamConfig {
        args(extra).resolve(&env_of(SECRET)).unwrap().unwrap()
    }

    #[test]
    fn without_an_issuer_the_server_stays_in_built_in_mode() {
        let none = crate::Config::default().oidc;
        assert!(none.resolve(&env_of(SECRET)).unwrap().is_none());
    }

    #[test]
    fn the_flags_configure_upstream_mode_and_the_secret_never_shows() {
        let c = resolved(&["--oidc-client-id", "other", "--oidc-timeout-ms", "1500"]);
        assert_eq!(c.client_id, "other", "a later flag wins");
        assert_eq!(c.scopes, ["offline_access", "profile"]);
        assert_eq!(c.timeout, Duration::from_millis(1500));
        assert_eq!(c.allowed_return.len(), 2);
        assert_eq!(c.client_secret.0, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(resolved(&[]).timeout, Duration::from_secs(5));
        assert_eq!(
            resolved(&[]).audience,
            "app",
            "the audience defaults to the client id"
        );
        let api = resolved(&["--oidc-audience", "https://api.example.com"]);
        assert_eq!(api.audience, "https://api.example.com");
    }

    #[test]
    fn the_secret_is_read_from_a_file_and_there_is_no_secret_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-file\n").unwrap();
        let c = args(&["--oidc-client-secret-file", file.to_str().unwrap()])
            .resolve(&env_of(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(c.client_secret.0, "from-file");
        let argv = ["tokenwarden-server", "--oidc-client-secret", "x"];
        assert!(crate::Config::try_parse_from(argv).is_err());
    }

    #[test]
    fn a_missing_client_id_secret_or_bad_value_is_named() {
        let only_issuer = crate::Config::try_parse_from([
            "tokenwarden-server",
            "--oidc-issuer",
            "https://id.example.com",
        ])
        .unwrap()
        .oidc;
        let e = only_issuer.resolve(&env_of(SECRET)).unwrap_err();
        assert!(e.contains("--oidc-client-id"), "{e}");
        let e = args(&[]).resolve(&env_of(&[])).unwrap_err();
        assert!(e.contains("TW_OIDC_CLIENT_SECRET"), "{e}");
        let e = args(&["--oidc-redirect-uri", "/auth/callback"])
            .resolve(&env_of(SECRET))
            .unwrap_err();
        assert!(e.contains("--oidc-redirect-uri"), "{e}");
        let argv = ["tokenwarden-server", "--oidc-timeout-ms", "0"];
        let e = crate::Config::try_parse_from(argv).unwrap_err().to_string();
        assert!(e.contains("--oidc-timeout-ms"), "{e}");
    }

    #[test]
    fn only_allow_listed_return_urls_are_accepted() {
        let c = resolved(&[]);
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
