//! Bearer secrets (enrollment keys, device credentials, admin tokens).
//!
//! A `Secret` never prints itself: `Debug` and `Display` are redacted, and only
//! `expose()` hands out the text. What stores keep is `hash()`, a SHA-256 hex digest:
//! the secrets are 256-bit random values, so a plain hash is enough (no password
//! stretching needed) and lookups by hash stay indexable.

use std::fmt;

use base64::Engine;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A fresh secret: `prefix` + 32 random bytes in URL-safe base64 (no padding).
    pub fn generate(prefix: &str) -> Self {
        let mut b = [0u8; 32];
        OsRng.fill_bytes(&mut b);
        let s = format!(
            "{prefix}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
        );
        b.zeroize();
        Secret(s)
    }
    pub fn from_string(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The digest stores keep instead of the secret.
    pub fn hash(&self) -> String {
        hash_secret(&self.0)
    }
}

pub fn hash_secret(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn redacted_and_hashed() {
        let s = Secret::generate("zmt_");
        assert!(s.expose().starts_with("zmt_"));
        assert!(!format!("{s:?}").contains(&s.expose()[4..]));
        assert!(!format!("{s}").contains(&s.expose()[4..]));
        assert_eq!(s.hash().len(), 64);
        assert_ne!(s.hash(), Secret::generate("zmt_").hash());
    }
}
