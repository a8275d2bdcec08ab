//! Credentials encrypted at rest (optional): AES-256-GCM from aws-lc-rs, one key for the whole store.
//!
//! With a key, every credential column (`secret`, `refresh_token`) is written as
//! `enc:v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`, the column's name being the associated data (a value cannot be
//! moved to the other column). The key id is the first 8 hex digits of the key's SHA-256, so a wrong key is named as
//! such. Plain values are still read (a store being encrypted by `store encrypt`), and written encrypted from then on.
//!
//! The key comes from `CLAUDE_GATEWAY_STORE_KEY` or from the file `store_key_file` names: 32 bytes as 64 hex digits or
//! base64 — never from the config file itself. Without a key an encrypted value is an error that says so, as is a
//! value sealed with another key.

use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::Engine;
use sha2::Digest;

use super::StoreError;

/// The environment variable holding the store key.
pub const KEY_ENV: &str = "CLAUDE_GATEWAY_STORE_KEY";

const PREFIX: &str = "enc:v1:";

/// The store's credential cipher: none (plain text) or one key.
#[derive(Clone, Default)]
pub struct Encryption {
    /// Seals what is written (and opens what it sealed).
    key: Option<Key>,
    /// Further keys values may be opened with (the old key while `store rotate-key` moves a store to a new one).
    previous: Vec<Key>,
}

#[derive(Clone)]
struct Key {
    id: String,
    bytes: [u8; 32],
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(k) => write!(f, "Encryption(key {})", k.id),
            None => f.write_str("Encryption(none)"),
        }
    }
}

/// A key that could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the store key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the store key from {origin} is not 32 bytes as 64 hex digits or base64")]
    Malformed { origin: String },
}

impl Encryption {
    /// No encryption: credentials are written as plain text.
    pub fn none() -> Encryption {
        Encryption::default()
    }

    /// The key from `CLAUDE_GATEWAY_STORE_KEY` if set, else from `key_file` if given, else none.
    pub fn from_env_or_file(key_file: Option<&Path>) -> Result<Encryption, KeyError> {
        if let Ok(text) = std::env::var(KEY_ENV) {
            return Encryption::from_text(&text, KEY_ENV);
        }
        match key_file {
            Some(path) => Encryption::from_file(path),
            None => Ok(Encryption::none()),
        }
    }

    /// The key in a file (64 hex digits or base64 of 32 bytes; surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Encryption, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Encryption::from_text(&text, &path.display().to_string())
    }

    /// The key in `text` (64 hex digits or base64 of 32 bytes); `origin` names where it came from in errors.
    pub fn from_text(text: &str, origin: &str) -> Result<Encryption, KeyError> {
        let text = text.trim();
        let decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
                .collect::<Option<Vec<u8>>>()
        } else {
            base64::engine::general_purpose::STANDARD.decode(text).ok()
        };
        let bytes: [u8; 32] =
            decoded
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| KeyError::Malformed {
                    origin: origin.to_string(),
                })?;
        let digest = sha2::Sha256::digest(bytes);
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Encryption {
            key: Some(Key { id, bytes }),
            previous: Vec::new(),
        })
    }

    /// This encryption, also able to open values sealed with `other`'s key.
    pub fn reading(mut self, other: &Encryption) -> Encryption {
        self.previous.extend(other.key.iter().cloned());
        self
    }

    pub fn is_enabled(&self) -> bool {
        self.key.is_some()
    }

    /// The key's id (8 hex digits), if there is a key.
    pub fn key_id(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.id.as_str())
    }

    /// The stored form of `value` in `column`.
    pub fn seal(&self, column: &str, value: &str) -> Result<String, StoreError> {
        let Some(key) = &self.key else {
            return Ok(value.to_string());
        };
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| StoreError::Unavailable("no randomness for a nonce".into()))?;
        let mut sealed = value.as_bytes().to_vec();
        key.cipher()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(column.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| StoreError::Unavailable("could not encrypt a credential".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!(
            "{PREFIX}{}:{}",
            key.id,
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// `seal` for an optional column.
    pub fn seal_opt(
        &self,
        column: &str,
        value: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        value.map(|v| self.seal(column, v)).transpose()
    }

    /// The value of `column` as stored: plain text as it is, sealed text decrypted with the key.
    pub fn open(&self, column: &str, stored: String) -> Result<String, StoreError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored);
        };
        let Some((id, data)) = rest.split_once(':') else {
            return Err(StoreError::Corrupt(format!(
                "an encrypted {column} is malformed"
            )));
        };
        let Some(key) = &self.key else {
            return Err(StoreError::Key(format!(
                "the store's credentials are encrypted (key {id}) and no key is configured: set {KEY_ENV} or \
                 store_key_file"
            )));
        };
        let Some(key) = std::iter::once(key)
            .chain(&self.previous)
            .find(|k| k.id == id)
        else {
            return Err(StoreError::Key(format!(
                "the store's credentials are encrypted with key {id}, not with the configured key {}",
                key.id
            )));
        };
        let wrong = || {
            StoreError::Key(format!(
                "a {column} does not decrypt with key {id}: wrong key or damaged data"
            ))
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| wrong())?;
        if bytes.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut sealed = sealed.to_vec();
        let plain = key
            .cipher()?
            .open_in_place(nonce, Aad::from(column.as_bytes()), &mut sealed)
            .map_err(|_| wrong())?;
        String::from_utf8(plain.to_vec()).map_err(|_| wrong())
    }

    /// `open` for an optional column.
    pub fn open_opt(
        &self,
        column: &str,
        stored: Option<String>,
    ) -> Result<Option<String>, StoreError> {
        stored.map(|v| self.open(column, v)).transpose()
    }
}

impl Key {
    fn cipher(&self) -> Result<LessSafeKey, StoreError> {
        UnboundKey::new(&AES_256_GCM, &self.bytes)
            .map(LessSafeKey::new)
            .map_err(|_| StoreError::Unavailable("the store key was refused by the cipher".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn key(text: &str) -> Encryption {
        Encryption::from_text(text, "test").unwrap()
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_only_and_in_its_column_only() {
        let k = key(HEX);
        let sealed = k.seal("secret", "sk-ant-api03-abc").unwrap();
        assert!(sealed.starts_with("enc:v1:"), "{sealed}");
        assert!(!sealed.contains("sk-ant"), "{sealed}");
        assert_eq!(
            k.open("secret", sealed.clone()).unwrap(),
            "sk-ant-api03-abc"
        );
        assert_ne!(
            k.seal("secret", "sk-ant-api03-abc").unwrap(),
            sealed,
            "fresh nonce each time"
        );
        assert!(matches!(
            k.open("refresh_token", sealed.clone()),
            Err(StoreError::Key(_))
        ));
        let other = key(&"ab".repeat(32));
        let err = other
            .open("secret", sealed.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not with the configured key"), "{err}");
        let err = Encryption::none()
            .open("secret", sealed)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no key is configured") && err.contains(KEY_ENV),
            "{err}"
        );
    }

    #[test]
    fn plain_values_are_read_as_they_are_and_written_plain_without_a_key() {
        assert_eq!(key(HEX).open("secret", "plain".into()).unwrap(), "plain");
        assert_eq!(Encryption::none().seal("secret", "plain").unwrap(), "plain");
    }

    #[test]
    fn keys_are_32_bytes_as_hex_or_base64() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(Encryption::from_text(&format!("  {b64}\n"), "t").is_ok());
        assert_eq!(key(HEX).key_id(), key(&format!("{HEX}\n")).key_id());
        for bad in [
            "",
            "short",
            &"zz".repeat(32),
            &base64::engine::general_purpose::STANDARD.encode([7u8; 16]),
        ] {
            assert!(Encryption::from_text(bad, "t").is_err(), "{bad:?}");
        }
    }
}
