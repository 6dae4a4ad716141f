//! Encryption of secret values at rest (spec §15.2): AES-256-GCM under the server's master
//! key, a fresh random 96-bit nonce per value, the secret's id as associated data (so a sealed
//! value cannot be moved to another row). Stored form: `nonce (12 bytes) || ciphertext+tag`.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const NONCE_LEN: usize = 12;

/// Why a master key or a sealed value was refused. Never carries key or value bytes.
#[derive(Debug, thiserror::Error)]
pub enum SecretBoxError {
    #[error(
        "the master key must be 32 bytes written as base64 (44 characters) or hex (64 characters)"
    )]
    BadKey,
    #[error("a stored secret could not be decrypted (wrong master key, or a corrupt value)")]
    Open,
    #[error("a secret could not be encrypted")]
    Seal,
}

/// The master key and the cipher built from it. `Debug` shows nothing of the key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// A box keyed by these 32 bytes.
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
        }
    }

    /// Parses a master key written as base64 (standard alphabet, 32 bytes → 44 characters) or
    /// as 64 hex digits; surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Self, SecretBoxError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| SecretBoxError::BadKey)?
        } else {
            STANDARD.decode(text).map_err(|_| SecretBoxError::BadKey)?
        };
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretBoxError::BadKey)?;
        Ok(Self::new(&key))
    }

    /// A new random master key, base64-encoded (the form of the generated key file).
    pub fn generate_key_text() -> String {
        STANDARD.encode(Aes256Gcm::generate_key(&mut OsRng))
    }

    /// Encrypts `value` for the secret `secret_id`.
    pub fn seal(&self, secret_id: &str, value: &[u8]) -> Result<Vec<u8>, SecretBoxError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value,
                    aad: secret_id.as_bytes(),
                },
            )
            .map_err(|_| SecretBoxError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts what [`Self::seal`] produced for `secret_id`.
    pub fn open(&self, secret_id: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretBoxError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretBoxError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: secret_id.as_bytes(),
                },
            )
            .map_err(|_| SecretBoxError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let b = SecretBox::parse(&SecretBox::generate_key_text()).unwrap();
        let sealed = b.seal("sec_a", b"hunter2-value").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"hunter"));
        assert_eq!(b.open("sec_a", &sealed).unwrap(), b"hunter2-value");
        assert!(b.open("sec_b", &sealed).is_err());
        let other = SecretBox::parse(&"ab".repeat(32)).unwrap();
        assert!(other.open("sec_a", &sealed).is_err());
        assert!(SecretBox::parse("short").is_err());
    }
}
