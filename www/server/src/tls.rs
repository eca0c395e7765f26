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
//! This module only builds the [`TlsAcceptor`]; the handshake and everything after it run in
//! [`crate::serve`]'s loop, so the header-read, request and idle timeouts and the connection
//! cap hold for HTTPS as for HTTP (the handshake itself must finish within the header-read
//! timeout).
//!
//! HTTPS here speaks HTTP/1.1 only (ALPN `http/1.1`), like the plain-http mode. Over HTTP/2,
//! WebKitGTK does not reset the stream of a request whose page aborted it or was closed, so
//! the server would finish a refresh nobody waits for: the tab that took over the refresh
//! has rotated the same token meanwhile, and the late one is reuse that revokes the family.
//! Over HTTP/1.1 every engine closes the connection and the server drops the request.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};
pub use tokio_rustls::TlsAcceptor;

use crate::StartupError;

/// Host names the generated certificate is valid for.
pub const LOCAL_NAMES: [&str; 3] = ["127.0.0.1", "localhost", "::1"];

/// The only protocol offered in the TLS handshake (see the module docs for why not `h2`).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

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

/// The rustls server configuration for `tls`: the files when given, else a generated
/// certificate; HTTP/1.1 only; TLS 1.2 and 1.3 with rustls' safe defaults (ring).
pub fn server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, StartupError> {
    let (certs, key) = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => read_pair(cert, key)?,
        _ => {
            let generated = self_signed()?;
            tracing::info!(
                names = ?LOCAL_NAMES,
                sha256 = %generated.fingerprint,
                "serving HTTPS with a self-signed certificate generated at start"
            );
            parse_pair(&generated.cert_pem, &generated.key_pem)
                .map_err(|e| StartupError(format!("cannot use the generated certificate: {e}")))?
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartupError(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartupError(format!("TLS certificate refused: {e}")))?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// The acceptor [`crate::serve::serve_tls`] hands every accepted connection to.
pub fn acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, StartupError> {
    server_config(tls).map(TlsAcceptor::from)
}

type Pair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn read_pair(cert: &Path, key: &Path) -> Result<Pair, StartupError> {
    let refused = |e: String| {
        StartupError(format!(
            "cannot use TLS certificate {} / key {}: {e}",
            cert.display(),
            key.display()
        ))
    };
    let cert_pem = std::fs::read_to_string(cert).map_err(|e| refused(e.to_string()))?;
    let key_pem = std::fs::read_to_string(key).map_err(|e| refused(e.to_string()))?;
    parse_pair(&cert_pem, &key_pem).map_err(refused)
}

/// The certificate chain and private key in two PEM texts. Errors never quote the key.
fn parse_pair(cert_pem: &str, key_pem: &str) -> Result<Pair, String> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block in the certificate file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| "no usable PRIVATE KEY block in the key file".to_string())?;
    Ok((certs, key))
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

    #[test]
    fn rustls_accepts_the_generated_certificate_and_offers_only_http1() {
        let tls = TlsConfig {
            enabled: true,
            ..TlsConfig::default()
        };
        let config = server_config(&tls).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn certificate_files_are_read_and_a_mismatched_or_missing_key_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = self_signed().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, &s.cert_pem).unwrap();
        std::fs::write(&key, &s.key_pem).unwrap();
        let files = TlsConfig {
            enabled: true,
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
        };
        assert!(server_config(&files).is_ok());

        // A key of another certificate: rustls refuses the pair.
        let other = self_signed().unwrap();
        std::fs::write(&key, &other.key_pem).unwrap();
        let e = server_config(&files).unwrap_err().0;
        assert!(!e.contains("PRIVATE KEY-----"), "{e}");

        // A key file holding a certificate only.
        std::fs::write(&key, &s.cert_pem).unwrap();
        let e = server_config(&files).unwrap_err().0;
        assert!(e.contains("PRIVATE KEY"), "{e}");
        assert!(e.contains("key.pem"), "{e}");
    }
}
