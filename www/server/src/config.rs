//! Command-line flags and `TW_*` environment variables (clap derive; a flag wins over its
//! variable). Paths default to places relative to the working directory, never to the
//! directory the binary was built in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Parser, ValueEnum};

/// Default issuer (`iss`) of access tokens.
pub const DEFAULT_ISSUER: &str = "tokenwarden-demo";
/// Default audience (`aud`) of access tokens.
pub const DEFAULT_AUDIENCE: &str = "tokenwarden-demo-api";

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// Reference refresh-endpoint server for tokenwarden.
///
/// The first line on stdout is `listening on http://ADDR` (`https://` with --tls). Logs go to
/// stderr; their level is
/// an EnvFilter directive in TW_LOG (e.g. `info`, `debug`, `tokenwarden_server=debug,warn`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tokenwarden-server",
    version,
    about,
    long_about = None,
    // A flag given twice: the later one wins (test harnesses append to a base command line).
    args_override_self = true,
    after_help = "The first line on stdout is `listening on http://ADDR` (`https://ADDR` with \
--tls). Logs go to stderr; \
TW_LOG is an EnvFilter directive list (default info; e.g. debug, warn, tokenwarden_server=debug). \
Paths are relative to the working directory: run it from the repository root."
)]
pub struct Config {
    /// Listen address.
    #[arg(long, env = "TW_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Override the port of --bind (0 = any free port).
    #[arg(long, env = "TW_PORT")]
    pub port: Option<u16>,
    /// Access-token lifetime in seconds (may be fractional).
    #[arg(long = "access-ttl", env = "TW_ACCESS_TTL", default_value_t = 60.0, value_parser = positive_secs)]
    pub access_ttl_s: f64,
    /// Absolute lifetime of a refresh-token family in seconds.
    #[arg(long = "family-lifetime", env = "TW_FAMILY_LIFETIME", default_value_t = 28800.0, value_parser = positive_secs)]
    pub family_lifetime_s: f64,
    /// Clock-skew allowance for exp/nbf in whole seconds.
    #[arg(long = "leeway", env = "TW_LEEWAY", default_value_t = 5)]
    pub leeway_s: i64,
    /// Live token families one user may have; a new login beyond it revokes the oldest.
    #[arg(long, env = "TW_MAX_FAMILIES_PER_USER", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_families_per_user: u32,
    /// Failed logins one account may have in a burst before 429 (refills 1 per
    /// --login-refill seconds).
    #[arg(long, env = "TW_LOGIN_ACCOUNT_BURST", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_account_burst: u32,
    /// Failed logins one client address may have in a burst before 429.
    #[arg(long, env = "TW_LOGIN_ADDRESS_BURST", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_address_burst: u32,
    /// Seconds after which one more failed login is allowed (account and address alike).
    #[arg(long = "login-refill", env = "TW_LOGIN_REFILL", default_value_t = 6.0, value_parser = positive_secs)]
    pub login_refill_s: f64,
    /// Upstream mode: sign-ins one client address may start in a burst before 429 (then one per second; 0 = no limit, e.g. behind a proxy that limits)
    #[arg(long, env = "TW_SIGN_IN_START_BURST", default_value_t = 60)]
    pub sign_in_start_burst: u32,
    /// Origins (scheme://host[:port]) besides the server's own that may call login,
    /// refresh and logout; repeat the flag or separate with commas.
    #[arg(
        long = "allowed-origin",
        env = "TW_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Seconds a client may take to send a request's headers, from their first byte.
    #[arg(long = "header-timeout", env = "TW_HEADER_TIMEOUT", default_value_t = 10.0, value_parser = positive_secs)]
    pub header_timeout_s: f64,
    /// Seconds a request may take from its headers to the end of the response's headers
    /// (test-mode `hang` faults are cut off by it too).
    #[arg(long = "request-timeout", env = "TW_REQUEST_TIMEOUT", default_value_t = 30.0, value_parser = positive_secs)]
    pub request_timeout_s: f64,
    /// Seconds a connection may sit idle: between requests, or before its first byte.
    #[arg(long = "idle-timeout", env = "TW_IDLE_TIMEOUT", default_value_t = 60.0, value_parser = positive_secs)]
    pub idle_timeout_s: f64,
    /// Open connections at most; more wait in the kernel's accept queue.
    #[arg(long, env = "TW_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Enable the /test/* routes (never in production).
    #[arg(long, env = "TW_TEST_MODE", value_parser = BoolishValueParser::new())]
    pub test_mode: bool,
    /// Keep refresh tokens in memory instead of SQLite.
    #[arg(long, env = "TW_MEMORY_STORE", value_parser = BoolishValueParser::new())]
    pub memory_store: bool,
    /// PostgreSQL URL (postgres://user:pass@host:port/db): refresh tokens, the successor
    /// secret and the signing keys live there, shared by every instance on it. Wins over
    /// --memory-store and --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Connections in the PostgreSQL pool of this instance.
    #[arg(long, env = "TW_DB_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_pool_size: u32,
    /// Seconds during which the previous refresh token, presented again while its
    /// successor was never used, gets that same successor back (a lost response); 0 = off.
    #[arg(long = "lost-response-window", env = "TW_LOST_RESPONSE_WINDOW", default_value_t = 10.0, value_parser = non_negative_secs)]
    pub lost_response_window_s: f64,
    /// With shared keys (PostgreSQL): seconds between reloads of the signing keys. A
    /// rotation publishes the new key two reloads before any instance signs with it.
    #[arg(long = "key-reload", env = "TW_KEY_RELOAD", default_value_t = 10.0, value_parser = positive_secs)]
    pub key_reload_s: f64,
    /// With PostgreSQL: seconds between reads of the families revoked by other instances
    /// (their access tokens are refused here from then on).
    #[arg(long = "revocation-sync", env = "TW_REVOCATION_SYNC", default_value_t = 1.0, value_parser = positive_secs)]
    pub revocation_sync_s: f64,
    /// Directory of the SQLite file.
    #[arg(long, env = "TW_DATA_DIR", default_value = "www/server/data")]
    pub data_dir: PathBuf,
    /// Static files served at /.
    #[arg(long, env = "TW_WWW_DIR", default_value = "www/demo")]
    pub www_dir: PathBuf,
    /// The built npm package, served at /pkg/.
    #[arg(long, env = "TW_PKG_DIR", default_value = "pkg")]
    pub pkg_dir: PathBuf,
    /// P-256 private key (PKCS#8 or SEC1 PEM); default: a key generated at start.
    #[arg(long, env = "TW_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// Require DPoP (RFC 9449) proofs on refresh and /api/me (login may still come without).
    #[arg(long, env = "TW_DPOP_REQUIRED", value_parser = BoolishValueParser::new())]
    pub dpop_required: bool,
    /// Require a server nonce in DPoP proofs (`DPoP-Nonce`, `use_dpop_nonce`).
    #[arg(long, env = "TW_DPOP_NONCE", value_parser = BoolishValueParser::new())]
    pub dpop_nonce: bool,
    /// Seconds each DPoP nonce is handed out (it stays valid as long again; every instance on the store has the same).
    #[arg(long = "dpop-nonce-lifetime", env = "TW_DPOP_NONCE_LIFETIME", default_value_t = 300.0, value_parser = positive_secs)]
    pub dpop_nonce_lifetime_s: f64,
    /// How old a DPoP proof may be (seconds, by its iat); its jti is remembered as long.
    #[arg(long = "dpop-max-age", env = "TW_DPOP_MAX_AGE", default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..=3600))]
    pub dpop_max_age_s: i64,
    /// Serve HTTPS (HTTP/1.1 over TLS) with a self-signed certificate for 127.0.0.1,
    /// localhost and ::1 generated at start; Safari drops Secure cookies on plain http.
    #[arg(long, env = "TW_TLS", value_parser = BoolishValueParser::new())]
    pub tls: bool,
    /// Serve HTTPS with this PEM certificate chain instead (implies --tls; needs --tls-key).
    #[arg(long, env = "TW_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "TW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, env = "TW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// `iss` of issued tokens.
    #[arg(skip = DEFAULT_ISSUER.to_string())]
    pub issuer: String,
    /// `aud` of issued tokens.
    #[arg(skip = DEFAULT_AUDIENCE.to_string())]
    pub audience: String,
    /// Upstream mode: `--oidc-*` / `TW_OIDC_*` (off unless `--oidc-issuer` is set).
    #[command(flatten)]
    pub oidc: crate::upstream::config::UpstreamArgs,
}

fn non_negative_secs(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(n),
        _ => Err(format!(
            "must be 0 or a positive number of seconds, got {v:?}"
        )),
    }
}

fn positive_secs(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!("must be a positive number of seconds, got {v:?}")),
    }
}

impl Default for Config {
    /// The defaults of every flag, without reading the environment.
    fn default() -> Self {
        let mut cmd = <Self as clap::CommandFactory>::command();
        // Strip the env bindings so a TW_* variable of the caller cannot leak into tests.
        let args: Vec<clap::Arg> = cmd.get_arguments().cloned().collect();
        for arg in args {
            let id = arg.get_id().clone();
            cmd = cmd.mut_arg(id, |a| a.env(None));
        }
        let matches = cmd
            .try_get_matches_from(["tokenwarden-server"])
            .unwrap_or_else(|e| panic!("defaults must parse: {e}"));
        <Self as clap::FromArgMatches>::from_arg_matches(&matches)
            .unwrap_or_else(|e| panic!("defaults must parse: {e}"))
    }
}

impl Config {
    /// The address to bind: --bind with --port applied.
    pub fn listen_addr(&self) -> SocketAddr {
        let mut addr = self.bind;
        if let Some(port) = self.port {
            addr.set_port(port);
        }
        addr
    }

    /// Whether and how to serve HTTPS: `--tls`, or a certificate and key by path.
    pub fn tls(&self) -> crate::tls::TlsConfig {
        crate::tls::TlsConfig {
            enabled: self.tls || self.tls_cert.is_some(),
            cert_file: self.tls_cert.clone(),
            key_file: self.tls_key.clone(),
        }
    }

    /// How long one store call may take: a third of the request timeout, so that a call cut
    /// off ends (rolled back) before the request does; 1–10 s. With the lost-response window
    /// on, also at most the window less the 503's `Retry-After` and a second (7 s with the
    /// defaults; never under 1 s): a rotation that committed but whose answer never came back
    /// is answered 503 at this deadline, and the client's retry with the old cookie must
    /// still fall within the window to get the same successor. With 10 s, the retry came at
    /// 12 s and was reuse: the user was signed out (operations audit, a black-holed answer).
    pub fn store_call_timeout(&self) -> Duration {
        let mut secs = (self.request_timeout_s / 3.0).clamp(1.0, 10.0);
        if self.lost_response_window_s > 0.0 {
            let retry_after = crate::error::STORE_RETRY_AFTER_S as f64;
            secs = secs
                .min(self.lost_response_window_s - retry_after - 1.0)
                .max(1.0);
        }
        Duration::from_secs_f64(secs)
    }

    /// Connection limits for [`crate::serve`].
    pub fn limits(&self) -> crate::serve::Limits {
        crate::serve::Limits {
            header_read: Duration::from_secs_f64(self.header_timeout_s),
            request: Duration::from_secs_f64(self.request_timeout_s),
            idle: Duration::from_secs_f64(self.idle_timeout_s),
            max_connections: self.max_connections as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("tokenwarden-server").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_bind_to_loopback_with_a_one_minute_token_and_an_eight_hour_family() {
        let c = Config::default();
        assert_eq!(c.listen_addr().to_string(), "127.0.0.1:8080");
        assert_eq!(c.access_ttl_s, 60.0);
        assert_eq!(c.family_lifetime_s, 28800.0);
        assert!(!c.test_mode && !c.memory_store);
        assert_eq!(c.max_families_per_user, 100);
    }

    #[test]
    fn a_store_call_ends_early_enough_for_a_retry_within_the_lost_response_window() {
        let secs = |args: &[&str]| parse(args).unwrap().store_call_timeout().as_secs_f64();
        assert_eq!(secs(&[]), 7.0, "window 10 s - Retry-After 2 s - 1 s");
        assert_eq!(
            secs(&["--lost-response-window", "0"]),
            10.0,
            "off: a third of 30 s"
        );
        assert_eq!(secs(&["--lost-response-window", "60"]), 10.0);
        assert_eq!(
            secs(&["--request-timeout", "6"]),
            2.0,
            "a third of the request"
        );
        assert_eq!(
            secs(&["--lost-response-window", "3"]),
            1.0,
            "never under 1 s"
        );
    }

    #[test]
    fn default_paths_are_relative_to_the_working_directory_not_the_build_directory() {
        let c = Config::default();
        for p in [&c.www_dir, &c.pkg_dir, &c.data_dir] {
            assert!(p.is_relative(), "{}", p.display());
        }
        assert!(!c
            .data_dir
            .to_string_lossy()
            .contains(env!("CARGO_MANIFEST_DIR")));
    }

    #[test]
    fn flags_are_parsed_and_port_zero_is_accepted() {
        let c = parse(&[
            "--port",
            "0",
            "--access-ttl=1.5",
            "--test-mode",
            "--memory-store",
            "--allowed-origin",
            "https://a.example,https://b.example",
        ])
        .unwrap();
        assert_eq!(c.listen_addr().to_string(), "127.0.0.1:0");
        assert_eq!(c.access_ttl_s, 1.5);
        assert!(c.test_mode && c.memory_store);
        assert_eq!(c.allowed_origins.len(), 2);
    }

    #[test]
    fn tls_is_off_by_default_and_switched_on_by_a_flag_or_a_certificate() {
        assert!(!Config::default().tls().enabled);
        assert_eq!(Config::default().tls().scheme(), "http");
        assert!(parse(&["--tls"]).unwrap().tls().enabled);
        let c = parse(&["--tls-cert", "c.pem", "--tls-key=k.pem"]).unwrap();
        assert!(c.tls().enabled);
        assert_eq!(c.tls().scheme(), "https");
        assert_eq!(
            c.tls().key_file.as_deref(),
            Some(std::path::Path::new("k.pem"))
        );
        for (args, missing) in [
            (&["--tls-cert", "c.pem"][..], "--tls-key"),
            (&["--tls-key", "k.pem"][..], "--tls-cert"),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(missing), "{e}");
        }
    }

    #[test]
    fn bad_flags_are_refused_with_the_flag_name() {
        for (args, flag) in [
            (&["--access-ttl", "0"][..], "--access-ttl"),
            (&["--bogus"][..], "--bogus"),
            (&["--bind"][..], "--bind"),
            (
                &["--max-families-per-user", "0"][..],
                "--max-families-per-user",
            ),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
        assert_eq!(
            parse(&["--help"]).unwrap_err().kind(),
            clap::error::ErrorKind::DisplayHelp
        );
    }
}
