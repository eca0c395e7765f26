//! HTTPS for local use (`--tls`).
//!
//! The refresh cookie is `Secure`. Chromium and Firefox keep a `Secure` cookie on
//! `http://127.0.0.1`, but WebKit (Safari) drops it on plain http, even on loopback: a
//! Safari page loses its session at the first refresh. So the server can serve HTTPS:
//!
//! - `--tls` alone: a self-signed certificate for `127.0.0.1`, `localhost` and `::1`,
//!   generated at start and held in memory only (its SHA-256 fingerprint is logged). Browsers
//!   warn about it; the browser tests accept it (`acceptInsecureCerts`).
//! - `--tls-cert PEM --tls-key PEM`: a certificate chain and private key from files, for
//!   example made by `mkcert 127.0.0.1 localhost` so that the browser trusts it.
//!
//! The cookie stays `Secure` either way.
//!
//! HTTPS here speaks HTTP/1.1 only (ALPN `http/1.1`), like the plain-http mode. Over HTTP/2,
//! WebKitGTK does not reset the stream of a request whose page aborted it or was closed, so
//! the server would finish a refresh nobody waits for: the tab that took over the refresh
//! has rotated the same token meanwhile, and the late one is reuse that revokes the family.
//! Over HTTP/1.1 every engine closes the connection and the server drops the request.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use sha2::{Digest as _, Sha256};

use crate::StartupError;

/// Host names the generated certificate is valid for.
pub const LOCAL_NAMES: [&str; 3] = ["127.0.0.1", "localhost", "::1"];

/// The only protocol offered in the TLS handshake (see the module docs for why not `h2`).
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// How long a graceful shutdown waits for open connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Whether and how to serve HTTPS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// Serve HTTPS instead of HTTP.
    pub enabled: bool,
    /// PEM certificate chain; `None` = generate a self-signed certificate at start.
    pub cert_file: Option<PathBuf>,
    /// PEM private key matching `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// `enabled` follows the paths: giving a certificate turns HTTPS on. A certificate
    /// without its key (or the reverse) is refused.
    pub fn checked(mut self) -> Result<Self, String> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), Some(_)) => self.enabled = true,
            (None, None) => {}
            (Some(_), None) => return Err("--tls-cert needs --tls-key".into()),
            (None, Some(_)) => return Err("--tls-key needs --tls-cert".into()),
        }
        Ok(self)
    }

    /// `"https"` or `"http"`, for the first stdout line.
    pub fn scheme(&self) -> &'static str {
        if self.enabled {
            "https"
        } else {
            "http"
        }
    }
}

/// A self-signed certificate and its private key, both PEM.
pub struct SelfSigned {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
    /// SHA-256 of the DER certificate, colon-separated upper-case hex (as browsers show it).
    pub fingerprint: String,
}

impl std::fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSigned")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Generate a self-signed certificate for [`LOCAL_NAMES`] (a fresh P-256 key).
pub fn self_signed() -> Result<SelfSigned, StartupError> {
    let names: Vec<String> = LOCAL_NAMES.iter().map(|n| n.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| StartupError(format!("cannot generate a TLS certificate: {e}")))?;
    let fingerprint = Sha256::digest(certified.cert.der())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(SelfSigned {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
        fingerprint,
    })
}

/// The rustls configuration for `tls`: the files when given, else a generated certificate;
/// HTTP/1.1 only.
pub async fn rustls_config(tls: &TlsConfig) -> Result<RustlsConfig, StartupError> {
    let config = certified_config(tls).await?;
    let mut inner = (*config.get_inner()).clone();
    inner.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    config.reload_from_config(std::sync::Arc::new(inner));
    Ok(config)
}

async fn certified_config(tls: &TlsConfig) -> Result<RustlsConfig, StartupError> {
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => RustlsConfig::from_pem_file(cert, key).await.map_err(|e| {
            StartupError(format!(
                "cannot use TLS certificate {} / key {}: {e}",
                cert.display(),
                key.display()
            ))
        }),
        _ => {
            let generated = self_signed()?;
            tracing::info!(
                names = ?LOCAL_NAMES,
                sha256 = %generated.fingerprint,
                "serving HTTPS with a self-signed certificate generated at start"
            );
            RustlsConfig::from_pem(
                generated.cert_pem.into_bytes(),
                generated.key_pem.into_bytes(),
            )
            .await
            .map_err(|e| StartupError(format!("cannot use the generated certificate: {e}")))
        }
    }
}

/// Serve `app` over HTTPS on `listener` until `shutdown` resolves (then drain for a while).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: RustlsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.into_std()?;
    let handle = axum_server::Handle::new();
    let on_signal = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        on_signal.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    axum_server::from_tcp_rustls(listener, tls)?
        .http1_only()
        .handle(handle)
        .serve(app.into_make_service())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_needs_its_key_and_turns_https_on() {
        let both = TlsConfig {
            enabled: false,
            cert_file: Some("c.pem".into()),
            key_file: Some("k.pem".into()),
        };
        assert!(both.checked().unwrap().enabled);
        let cert_only = TlsConfig {
            cert_file: Some("c.pem".into()),
            ..TlsConfig::default()
        };
        assert!(cert_only.checked().unwrap_err().contains("--tls-key"));
        let key_only = TlsConfig {
            key_file: Some("k.pem".into()),
            ..TlsConfig::default()
        };
        assert!(key_only.checked().unwrap_err().contains("--tls-cert"));
        assert_eq!(TlsConfig::default().checked().unwrap().scheme(), "http");
    }

    #[test]
    fn the_generated_certificate_is_pem_with_a_sha256_fingerprint_and_redacts_its_key() {
        let s = self_signed().unwrap();
        assert!(s.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(s.key_pem.contains("PRIVATE KEY"));
        assert_eq!(s.fingerprint.split(':').count(), 32);
        assert!(!format!("{s:?}").contains("PRIVATE"));
    }

    #[tokio::test]
    async fn rustls_accepts_the_generated_certificate_and_offers_only_http1() {
        let tls = TlsConfig {
            enabled: true,
            ..TlsConfig::default()
        };
        let config = rustls_config(&tls).await.unwrap();
        let alpn = &config.get_inner().alpn_protocols;
        assert_eq!(alpn, &vec![b"http/1.1".to_vec()]);
    }
}
