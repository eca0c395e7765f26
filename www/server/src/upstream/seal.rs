//! Encryption at rest for what the server keeps of the provider's grant (refresh token,
//! access token, ID token) and of a pending login (PKCE verifier, nonce): AES-256-GCM from
//! the `aes-gcm` crate, a fresh 96-bit nonce per message, and associated data that binds a
//! ciphertext to its row (a sealed grant of one family cannot be replayed into another).

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rand_core::{OsRng, RngCore as _};

const NONCE_LEN: usize = 12;

/// A 256-bit key. Its `Debug` shows nothing.
pub struct SealKey(Aes256Gcm);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// A ciphertext failed to open (wrong key, wrong row, or tampered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsealable;

impl SealKey {
    /// A key from 32 bytes written in base64 (standard or URL-safe, padding optional).
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .or_else(|_| STANDARD.decode(text))
            .map_err(|_| "the token key is not base64".to_string())?;
        if bytes.len() != 32 {
            return Err(format!(
                "the token key must be 32 bytes (256 bits), got {}",
                bytes.len()
            ));
        }
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "the token key must be 32 bytes".to_string())?;
        Ok(Self(Aes256Gcm::new(&Key::<Aes256Gcm>::from(bytes))))
    }

    /// A random key (its ciphertexts do not survive a restart).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Self(Aes256Gcm::new(&Key::<Aes256Gcm>::from(bytes)))
    }

    /// Encrypt `plain`, bound to `context`: `nonce || ciphertext+tag`.
    pub fn seal(&self, context: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        // Encryption with a 12-byte nonce cannot fail for messages of this size.
        let sealed = self
            .0
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: context,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypt what [`seal`](Self::seal) made with the same `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Unsealable> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(Unsealable);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Unsealable)?;
        self.0
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: body,
                    aad: context,
                },
            )
            .map_err(|_| Unsealable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_its_context() {
        let key = SealKey::generate();
        let sealed = key.seal(b"family-1", b"provider refresh token");
        assert!(!sealed.windows(b"provider".len()).any(|w| w == b"provider"));
        assert_eq!(
            key.open(b"family-1", &sealed).unwrap(),
            b"provider refresh token"
        );
        assert_eq!(key.open(b"family-2", &sealed), Err(Unsealable));
        assert_eq!(
            SealKey::generate().open(b"family-1", &sealed),
            Err(Unsealable)
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(key.open(b"family-1", &tampered), Err(Unsealable));
        assert_eq!(key.open(b"family-1", &sealed[..10]), Err(Unsealable));
    }

    #[test]
    fn two_seals_of_the_same_value_differ() {
        let key = SealKey::generate();
        assert_ne!(key.seal(b"c", b"same"), key.seal(b"c", b"same"));
    }

    #[test]
    fn keys_are_32_bytes_of_base64() {
        let k = STANDARD.encode([7u8; 32]);
        let sealed = SealKey::from_base64(&k).unwrap().seal(b"", b"x");
        let again = SealKey::from_base64(&URL_SAFE_NO_PAD.encode([7u8; 32])).unwrap();
        assert_eq!(again.open(b"", &sealed).unwrap(), b"x");
        assert!(SealKey::from_base64(&STANDARD.encode([7u8; 16]))
            .unwrap_err()
            .contains("32 bytes"));
        assert!(SealKey::from_base64("not base64!").is_err());
    }
}
