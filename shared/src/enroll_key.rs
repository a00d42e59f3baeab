//! The enrollment key a user pastes into `zmesh up --enroll-key KEY`.
//!
//! Text form: `zmek1.<secret>[.<sha256 of the console certificate, hex>]`. Carrying the
//! pin inside the key means `zmesh up --console URL --enroll-key KEY` needs nothing
//! else to reach a console with a self-signed certificate safely; a key without a pin
//! is for consoles whose certificate chains to a CA file the agent is given.

use std::fmt;
use std::str::FromStr;

use crate::keys::CertFingerprint;
use crate::secret::Secret;

pub const PREFIX: &str = "zmek1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnrollKeyError {
    #[error("enrollment key must start with `{PREFIX}.`")]
    Prefix,
    #[error("enrollment key has an empty or malformed secret")]
    Secret,
    #[error("enrollment key carries a malformed certificate fingerprint")]
    Fingerprint,
}

/// A parsed enrollment key. `Debug` shows only the pin, never the secret.
#[derive(Clone)]
pub struct EnrollKey {
    pub secret: Secret,
    pub pin: Option<CertFingerprint>,
}

impl EnrollKey {
    /// The text a user copies. Contains the secret: print it only where asked.
    pub fn to_text(&self) -> String {
        match &self.pin {
            Some(p) => format!("{PREFIX}.{}.{p}", self.secret.expose()),
            None => format!("{PREFIX}.{}", self.secret.expose()),
        }
    }
    /// Generates the secret part of a new key.
    pub fn new_secret() -> Secret {
        Secret::generate("")
    }
}

impl fmt::Debug for EnrollKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollKey")
            .field("secret", &self.secret)
            .field("pin", &self.pin)
            .finish()
    }
}

impl FromStr for EnrollKey {
    type Err = EnrollKeyError;
    fn from_str(s: &str) -> Result<Self, EnrollKeyError> {
        let mut parts = s.trim().split('.');
        if parts.next() != Some(PREFIX) {
            return Err(EnrollKeyError::Prefix);
        }
        let secret = parts.next().ok_or(EnrollKeyError::Secret)?;
        if secret.len() < 16
            || !secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(EnrollKeyError::Secret);
        }
        let pin = match parts.next() {
            Some(p) => Some(p.parse().map_err(|_| EnrollKeyError::Fingerprint)?),
            None => None,
        };
        if parts.next().is_some() {
            return Err(EnrollKeyError::Fingerprint);
        }
        Ok(EnrollKey {
            secret: Secret::from_string(secret.to_string()),
            pin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_pin() {
        let pin = CertFingerprint::of_der(b"x");
        let k = EnrollKey {
            secret: EnrollKey::new_secret(),
            pin: Some(pin),
        };
        let parsed: EnrollKey = k.to_text().parse().unwrap();
        assert_eq!(parsed.secret, k.secret);
        assert_eq!(parsed.pin, Some(pin));
        let k2 = EnrollKey {
            secret: EnrollKey::new_secret(),
            pin: None,
        };
        assert_eq!(k2.to_text().parse::<EnrollKey>().unwrap().pin, None);
        assert!(!format!("{k:?}").contains(k.secret.expose()));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            "nope".parse::<EnrollKey>().unwrap_err(),
            EnrollKeyError::Prefix
        );
        assert_eq!(
            "zmek1.short".parse::<EnrollKey>().unwrap_err(),
            EnrollKeyError::Secret
        );
        assert_eq!(
            "zmek1.aaaaaaaaaaaaaaaaaaaa.zz"
                .parse::<EnrollKey>()
                .unwrap_err(),
            EnrollKeyError::Fingerprint
        );
    }
}
