//! Command-line flags and `TW_*` environment variables (flags win).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Default issuer (`iss`) of access tokens.
pub const DEFAULT_ISSUER: &str = "tokenwarden-demo";
/// Default audience (`aud`) of access tokens.
pub const DEFAULT_AUDIENCE: &str = "tokenwarden-demo-api";

/// Usage text for `--help`.
pub const USAGE: &str = "\
tokenwarden-server: reference refresh-endpoint server for tokenwarden

USAGE: tokenwarden-server [FLAGS]

  --bind ADDR              listen address (default 127.0.0.1:8080)      env TW_BIND
  --port N                 override the port of --bind (0 = any free)  env TW_PORT
  --access-ttl SECS        access-token lifetime (default 60)           env TW_ACCESS_TTL
  --family-lifetime SECS   absolute refresh-family lifetime (default 28800)  env TW_FAMILY_LIFETIME
  --leeway SECS            exp/nbf clock-skew allowance (default 5)     env TW_LEEWAY
  --test-mode              enable /test/* routes                        env TW_TEST_MODE=1
  --memory-store           keep refresh tokens in memory, not SQLite    env TW_MEMORY_STORE=1
  --data-dir DIR           SQLite directory (default www/server/data)   env TW_DATA_DIR
  --www-dir DIR            static files served at / (default www)       env TW_WWW_DIR
  --pkg-dir DIR            wasm-pack output served at /pkg/ (default pkg)  env TW_PKG_DIR
  --signing-key-file PEM   P-256 private key (PKCS#8 or SEC1 PEM); default: generate at start
                                                                        env TW_SIGNING_KEY_FILE
  --tls                    serve HTTPS with a self-signed certificate for 127.0.0.1/localhost,
                           generated at start (Safari drops Secure cookies on http)  env TW_TLS=1
  --tls-cert PEM           serve HTTPS with this certificate chain (implies --tls)  env TW_TLS_CERT
  --tls-key PEM            the private key of --tls-cert                env TW_TLS_KEY
  -h, --help               this text

The first line on stdout is `listening on http://ADDR` (`https://` with TLS). Logs go to stderr (TW_LOG=debug|info|warn).
";

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub bind: SocketAddr,
    /// Access-token lifetime in seconds (may be fractional).
    pub access_ttl_s: f64,
    /// Absolute lifetime of a refresh-token family in seconds.
    pub family_lifetime_s: f64,
    /// Leeway for `exp`/`nbf` in seconds.
    pub leeway_s: i64,
    /// Whether `/test/*` exists.
    pub test_mode: bool,
    /// Use [`crate::store::MemoryStore`] instead of SQLite.
    pub memory_store: bool,
    /// Directory of the SQLite file.
    pub data_dir: PathBuf,
    /// Directory served at `/`.
    pub www_dir: PathBuf,
    /// Directory served at `/pkg/`.
    pub pkg_dir: PathBuf,
    /// PEM private key; `None` = generate one at start.
    pub signing_key_file: Option<PathBuf>,
    /// `iss` of issued tokens.
    pub issuer: String,
    /// `aud` of issued tokens.
    pub audience: String,
    /// HTTPS (`--tls`, `--tls-cert`, `--tls-key`); see [`crate::tls`].
    pub tls: crate::tls::TlsConfig,
}

/// The repo layout: `www/server` is this crate, `www/` its parent, `pkg/` at the root.
/// `up` is how many levels above the crate `rest` starts. When the binary runs where the
/// source tree is gone, paths fall back to `from_cwd` (relative to the working directory).
fn default_dir(up: usize, rest: &str, from_cwd: &str) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    match manifest.ancestors().nth(up) {
        Some(base) if manifest.is_dir() => base.join(rest),
        _ => PathBuf::from(from_cwd),
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            access_ttl_s: 60.0,
            family_lifetime_s: 8.0 * 3600.0,
            leeway_s: 5,
            test_mode: false,
            memory_store: false,
            data_dir: default_dir(0, "data", "www/server/data"),
            www_dir: default_dir(1, "", "www"),
            pkg_dir: default_dir(2, "pkg", "pkg"),
            signing_key_file: None,
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            tls: crate::tls::TlsConfig::default(),
        }
    }
}

/// Result of parsing the command line.
#[derive(Debug)]
pub enum Command {
    /// Start the server.
    Run(Box<Config>),
    /// Print [`USAGE`].
    Help,
}

fn positive_secs(name: &str, v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!(
            "{name} must be a positive number of seconds, got {v:?}"
        )),
    }
}

fn truthy(v: &str) -> bool {
    matches!(v, "1" | "true" | "yes" | "on")
}

impl Config {
    /// Parse `args` (without the program name), then fill the rest from `env`.
    pub fn parse<I, E>(args: I, env: E) -> Result<Command, String>
    where
        I: IntoIterator<Item = String>,
        E: Fn(&str) -> Option<String>,
    {
        // Environment first, flags override.
        let mut pairs: Vec<(String, Option<String>)> = Vec::new();
        for (var, flag) in [
            ("TW_BIND", "--bind"),
            ("TW_PORT", "--port"),
            ("TW_ACCESS_TTL", "--access-ttl"),
            ("TW_FAMILY_LIFETIME", "--family-lifetime"),
            ("TW_LEEWAY", "--leeway"),
            ("TW_DATA_DIR", "--data-dir"),
            ("TW_WWW_DIR", "--www-dir"),
            ("TW_PKG_DIR", "--pkg-dir"),
            ("TW_SIGNING_KEY_FILE", "--signing-key-file"),
            ("TW_TLS_CERT", "--tls-cert"),
            ("TW_TLS_KEY", "--tls-key"),
        ] {
            if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                pairs.push((flag.into(), Some(v)));
            }
        }
        for (var, flag) in [
            ("TW_TEST_MODE", "--test-mode"),
            ("TW_MEMORY_STORE", "--memory-store"),
            ("TW_TLS", "--tls"),
        ] {
            if env(var).is_some_and(|v| truthy(&v)) {
                pairs.push((flag.into(), None));
            }
        }
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg, None),
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(Command::Help),
                "--test-mode" | "--memory-store" | "--tls" => pairs.push((flag, None)),
                "--bind" | "--port" | "--access-ttl" | "--family-lifetime" | "--leeway"
                | "--data-dir" | "--www-dir" | "--pkg-dir" | "--signing-key-file"
                | "--tls-cert" | "--tls-key" => {
                    let value = match inline {
                        Some(v) => v,
                        None => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
                    };
                    pairs.push((flag, Some(value)));
                }
                other => return Err(format!("unknown argument {other:?} (try --help)")),
            }
        }

        let mut c = Config::default();
        let mut port = None;
        for (flag, value) in pairs {
            let v = value.unwrap_or_default();
            match flag.as_str() {
                "--bind" => {
                    c.bind = v
                        .parse()
                        .map_err(|_| format!("--bind: not an address: {v:?}"))?
                }
                "--port" => {
                    port = Some(
                        v.parse::<u16>()
                            .map_err(|_| format!("--port: not a port: {v:?}"))?,
                    )
                }
                "--access-ttl" => c.access_ttl_s = positive_secs("--access-ttl", &v)?,
                "--family-lifetime" => {
                    c.family_lifetime_s = positive_secs("--family-lifetime", &v)?
                }
                "--leeway" => {
                    c.leeway_s = v
                        .parse()
                        .map_err(|_| format!("--leeway: not whole seconds: {v:?}"))?
                }
                "--data-dir" => c.data_dir = v.into(),
                "--www-dir" => c.www_dir = v.into(),
                "--pkg-dir" => c.pkg_dir = v.into(),
                "--signing-key-file" => c.signing_key_file = Some(v.into()),
                "--test-mode" => c.test_mode = true,
                "--memory-store" => c.memory_store = true,
                "--tls" => c.tls.enabled = true,
                "--tls-cert" => c.tls.cert_file = Some(v.into()),
                "--tls-key" => c.tls.key_file = Some(v.into()),
                _ => {}
            }
        }
        if let Some(p) = port {
            c.bind.set_port(p);
        }
        c.tls = c.tls.checked()?;
        Ok(Command::Run(Box::new(c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match Config::parse(args.iter().map(|s| s.to_string()), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })? {
            Command::Run(c) => Ok(*c),
            Command::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults_bind_to_loopback_with_a_one_minute_token_and_an_eight_hour_family() {
        let c = parse(&[], &[]).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.access_ttl_s, 60.0);
        assert_eq!(c.family_lifetime_s, 28800.0);
        assert!(!c.test_mode && !c.memory_store);
        assert!(c.www_dir.join("server").is_dir());
    }

    #[test]
    fn flags_override_the_environment_and_port_zero_is_accepted() {
        let c = parse(
            &[
                "--port",
                "0",
                "--access-ttl=1.5",
                "--test-mode",
                "--memory-store",
            ],
            &[
                ("TW_ACCESS_TTL", "7"),
                ("TW_FAMILY_LIFETIME", "30"),
                ("TW_BIND", "127.0.0.1:9"),
            ],
        )
        .unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:0");
        assert_eq!(c.access_ttl_s, 1.5);
        assert_eq!(c.family_lifetime_s, 30.0);
        assert!(c.test_mode && c.memory_store);
    }

    #[test]
    fn bad_flags_are_refused_with_the_flag_name() {
        assert!(parse(&["--access-ttl", "-1"], &[])
            .unwrap_err()
            .contains("--access-ttl"));
        assert!(parse(&["--bogus"], &[]).unwrap_err().contains("--bogus"));
        assert!(parse(&["--bind"], &[]).unwrap_err().contains("--bind"));
        assert_eq!(parse(&["--help"], &[]).unwrap_err(), "help");
    }

    #[test]
    fn tls_is_off_by_default_and_switched_on_by_a_flag_a_variable_or_a_certificate() {
        assert!(!parse(&[], &[]).unwrap().tls.enabled);
        assert!(parse(&["--tls"], &[]).unwrap().tls.enabled);
        assert!(parse(&[], &[("TW_TLS", "1")]).unwrap().tls.enabled);
        let c = parse(&["--tls-cert", "c.pem", "--tls-key=k.pem"], &[]).unwrap();
        assert!(c.tls.enabled);
        assert_eq!(c.tls.key_file.as_deref(), Some(Path::new("k.pem")));
        assert!(parse(&["--tls-cert", "c.pem"], &[])
            .unwrap_err()
            .contains("--tls-key"));
    }
}
