//! Client keys as tenants: the managed key model (name, prefix, hash, limits), how a key is made and recognised, and the
//! patch the CLI and the admin API apply.
//!
//! A key is shown once, at creation. The store keeps only its SHA-256 (keys carry 238 random bits, so a fast hash is
//! right: no one can search that space) and a short prefix for recognition. Static `client_keys` from the config keep
//! working as the bootstrap option; they are tenants without limits, named `config`.
//!
//! Runtime state (the lookup table, counters, admission) lives in `crate::tenants`; limit arithmetic in [`limits`].

pub mod limits;
pub mod memo;

use chrono::{DateTime, Utc};
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};

use crate::patch::Patch;

pub use limits::KeyLimits;

pub type KeyId = i64;

/// How every managed key starts; what follows is random.
pub const KEY_PREFIX: &str = "sk-gw-";
/// Random characters after [`KEY_PREFIX`] (base62: 40 × 5.95 = 238 bits).
const RANDOM_CHARS: usize = 40;
/// Characters of the key kept visible (the prefix and 6 random ones).
const VISIBLE: usize = KEY_PREFIX.len() + 6;

/// A managed key as stored: never the key itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientKey {
    pub id: KeyId,
    pub name: String,
    /// The first characters of the key, for recognition (`sk-gw-AbC123`).
    pub prefix: String,
    /// Hex SHA-256 of the key.
    #[serde(skip)]
    pub hash: String,
    pub note: Option<String>,
    pub enabled: bool,
    pub limits: KeyLimits,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ClientKey {
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// A key to create. [`NewKey::generate`] makes the secret; only its hash and prefix reach the store.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub prefix: String,
    pub hash: String,
    pub note: Option<String>,
    pub limits: KeyLimits,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The secret of a new key, shown once. `Debug` redacts it.
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl NewKey {
    /// A fresh random key and what the store keeps of it.
    pub fn generate(
        name: String,
        note: Option<String>,
        limits: KeyLimits,
        expires_at: Option<DateTime<Utc>>,
    ) -> (NewKey, Secret) {
        let secret = format!(
            "{KEY_PREFIX}{}",
            Alphanumeric.sample_string(&mut rand::rng(), RANDOM_CHARS)
        );
        let key = NewKey {
            name,
            prefix: secret[..VISIBLE].to_string(),
            hash: hash(&secret),
            note,
            limits,
            expires_at,
        };
        (key, Secret(secret))
    }
}

/// Hex SHA-256 of a presented key: what the store and the lookup table are keyed by.
pub fn hash(key: &str) -> String {
    KeyHash::of(key).as_str().to_owned()
}

/// The hex SHA-256 of a key, kept on the stack: every request's key is hashed to look it up. The digest is
/// aws-lc's (hardware SHA where the CPU has it, vector code otherwise).
#[derive(Clone, Copy)]
pub struct KeyHash([u8; 64]);

impl KeyHash {
    pub fn of(key: &str) -> KeyHash {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
        let mut out = [0u8; 64];
        for (pair, b) in out.chunks_exact_mut(2).zip(digest.as_ref()) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        KeyHash(out)
    }

    /// Lowercase hex (ASCII, so always text).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// A change to a key: `None` (or `Patch::Keep`: the field absent) keeps a field; `null` clears an optional one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    pub name: Option<String>,
    #[serde(default)]
    pub note: Patch<String>,
    pub enabled: Option<bool>,
    #[serde(default)]
    pub expires_at: Patch<DateTime<Utc>>,
    #[serde(default)]
    pub limits: limits::LimitsPatch,
}

impl KeyPatch {
    /// Applies the patch to `key` (validating names and limits).
    pub fn apply(self, key: &mut ClientKey) -> Result<(), String> {
        if let Some(name) = self.name {
            key.name = valid_name(&name)?;
        }
        self.note.apply(&mut key.note);
        if let Some(enabled) = self.enabled {
            key.enabled = enabled;
        }
        self.expires_at.apply(&mut key.expires_at);
        self.limits.apply(&mut key.limits)
    }
}

/// A key name: 1–64 characters of letters, digits, `-`, `_`, `.`; not all digits (that would read as an id).
pub fn valid_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.is_empty() || name.len() > 64 || !ok_chars {
        return Err(format!(
            "key name {name:?}: use 1-64 letters, digits, '-', '_' or '.'"
        ));
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "key name {name:?}: must not be all digits (it would read as an id)"
        ));
    }
    Ok(name.to_string())
}

/// `Option<Option<T>>` from JSON: absent = keep, `null` = clear, a value = set.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_lowercase_hex_sha256_as_stored() {
        // FIPS 180-2 test vector: stored hashes must keep matching.
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Two blocks, and the hash a lookup uses is the stored one.
        let two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(
            KeyHash::of(two).as_str(),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(KeyHash::of(two).as_str(), hash(two));
    }

    #[test]
    fn generated_keys_are_long_random_and_stored_only_as_hash_and_prefix() {
        let (a, secret_a) = NewKey::generate("a".into(), None, KeyLimits::default(), None);
        let (b, secret_b) = NewKey::generate("b".into(), None, KeyLimits::default(), None);
        assert_ne!(secret_a.0, secret_b.0);
        assert_eq!(secret_a.0.len(), KEY_PREFIX.len() + RANDOM_CHARS);
        assert!(secret_a.0.starts_with(&a.prefix));
        assert_eq!(a.hash, hash(&secret_a.0));
        assert_ne!(a.hash, b.hash);
        assert!(!a.hash.contains(&secret_a.0[VISIBLE..]));
        assert_eq!(format!("{secret_a:?}"), "Secret(***)");
    }

    #[test]
    fn names_that_would_read_as_ids_or_carry_odd_characters_are_refused() {
        assert!(valid_name("team-a").is_ok());
        assert!(valid_name("123").is_err());
        assert!(valid_name("a b").is_err());
        assert!(valid_name("").is_err());
    }

    #[test]
    fn a_patch_keeps_absent_fields_and_clears_null_ones() {
        let now = crate::clock::system_now();
        let mut key = ClientKey {
            id: 1,
            name: "a".into(),
            prefix: "sk-gw-abcdef".into(),
            hash: String::new(),
            note: Some("n".into()),
            enabled: true,
            limits: KeyLimits::default(),
            expires_at: Some(now),
            created_at: now,
            updated_at: now,
            last_used_at: None,
        };
        let p: KeyPatch = serde_json::from_str(r#"{"expires_at":null,"enabled":false}"#).unwrap();
        p.apply(&mut key).unwrap();
        assert_eq!(key.note.as_deref(), Some("n"));
        assert_eq!(key.expires_at, None);
        assert!(!key.enabled);
    }
}
