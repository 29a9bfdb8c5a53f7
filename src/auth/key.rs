//! API keys as the store keeps them: SHA-256 digests, compared in constant time.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 digest of an API key: all a [`KeyStore`](super::KeyStore) ever holds.
///
/// Equality is constant-time (`subtle`), so a lookup never tells an attacker how many bytes of a
/// digest matched. `Debug` shows nothing of the digest.
///
/// ```
/// use tower_maas::auth::KeyDigest;
///
/// let digest = KeyDigest::of("sk-demo");
/// let hex = digest.to_hex();
/// assert_eq!(hex.len(), 64);
/// assert_eq!(hex.parse::<KeyDigest>().unwrap(), digest);
/// assert_eq!(format!("{digest:?}"), "KeyDigest(..)");
/// ```
#[derive(Clone, Copy)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// The digest of a plaintext key.
    pub fn of(key: &str) -> Self {
        Self::of_bytes(key.as_bytes())
    }

    pub(crate) fn of_bytes(key: &[u8]) -> Self {
        Self(Sha256::digest(key).into())
    }

    /// The digest from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest as 64 lowercase hex digits, the form configuration files hold
    /// (`printf %s "$KEY" | sha256sum`).
    pub fn to_hex(&self) -> String {
        use fmt::Write as _;
        self.0.iter().fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
    }
}

impl PartialEq for KeyDigest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for KeyDigest {}

impl Hash for KeyDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The map's hasher is keyed per process and runs in time independent of the data.
        self.0.hash(state);
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest(..)")
    }
}

/// The error of parsing a [`KeyDigest`] from text that is not 64 hex digits.
///
/// ```
/// use tower_maas::auth::{InvalidKeyDigest, KeyDigest};
///
/// assert_eq!("not hex".parse::<KeyDigest>().err(), Some(InvalidKeyDigest));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidKeyDigest;

impl fmt::Display for InvalidKeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key digest is 64 hexadecimal digits (SHA-256)")
    }
}

impl std::error::Error for InvalidKeyDigest {}

impl FromStr for KeyDigest {
    type Err = InvalidKeyDigest;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return Err(InvalidKeyDigest);
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Ok(Self(out))
    }
}

fn nibble(c: u8) -> Result<u8, InvalidKeyDigest> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(InvalidKeyDigest),
    }
}

/// A key as a client presented it in `Authorization: Bearer <key>`.
///
/// Given to [`KeyStore::authenticate`](super::KeyStore::authenticate). Its `Debug` is redacted so
/// that a store implementation cannot log it by accident.
#[derive(Clone, Copy)]
pub struct PresentedKey<'a>(&'a [u8]);

impl<'a> PresentedKey<'a> {
    pub(crate) fn new(key: &'a [u8]) -> Self {
        Self(key)
    }

    /// The key's SHA-256 digest.
    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of_bytes(self.0)
    }

    /// The key's bytes (visible ASCII, RFC 6750 `b64token` characters). Do not log them.
    pub fn expose(&self) -> &'a [u8] {
        self.0
    }
}

impl fmt::Debug for PresentedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresentedKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_sha256_of_the_key() {
        // sha256("abc")
        assert_eq!(
            KeyDigest::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn digest_parsing_rejects_wrong_text() {
        assert!("".parse::<KeyDigest>().is_err());
        assert!("zz".repeat(32).parse::<KeyDigest>().is_err());
        assert!("ab".repeat(33).parse::<KeyDigest>().is_err());
        assert_eq!(
            "AB".repeat(32).parse::<KeyDigest>().unwrap(),
            "ab".repeat(32).parse::<KeyDigest>().unwrap()
        );
    }
}
