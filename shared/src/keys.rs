//! Key newtypes. Public keys print as standard base64 (the format `wg` uses);
//! private keys never print: their `Debug` is redacted and they have no `Display`.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand_core::OsRng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("invalid {0}: expected 32 bytes in base64")]
    Format(&'static str),
    #[error("invalid certificate fingerprint: expected 64 hex digits (SHA-256)")]
    Fingerprint,
    #[error("signature does not verify")]
    BadSignature,
}

fn decode32(s: &str, what: &'static str) -> Result<[u8; 32], KeyError> {
    let v = B64.decode(s.trim()).map_err(|_| KeyError::Format(what))?;
    v.try_into().map_err(|_| KeyError::Format(what))
}

/// A WireGuard (x25519) public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WgPublicKey(pub [u8; 32]);

impl WgPublicKey {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    pub fn to_x25519(&self) -> x25519_dalek::PublicKey {
        x25519_dalek::PublicKey::from(self.0)
    }
    /// Short form for logs and tables: first 8 base64 characters.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_string()
    }
}
impl fmt::Display for WgPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&B64.encode(self.0))
    }
}
impl fmt::Debug for WgPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgPublicKey({self})")
    }
}
impl FromStr for WgPublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s, "WireGuard public key").map(WgPublicKey)
    }
}

/// A WireGuard (x25519) private key. It is made on the device and never leaves it.
#[derive(Clone)]
pub struct WgPrivateKey([u8; 32]);

impl WgPrivateKey {
    pub fn generate() -> Self {
        let s = x25519_dalek::StaticSecret::random_from_rng(OsRng);
        WgPrivateKey(s.to_bytes())
    }
    pub fn from_bytes(b: [u8; 32]) -> Self {
        WgPrivateKey(b)
    }
    /// Parses the base64 text form (as `wg genkey` writes it).
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode32(s, "WireGuard private key").map(WgPrivateKey)
    }
    /// The base64 text form, for the key file only.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
    pub fn public_key(&self) -> WgPublicKey {
        WgPublicKey(x25519_dalek::PublicKey::from(&self.to_x25519()).to_bytes())
    }
    pub fn to_x25519(&self) -> x25519_dalek::StaticSecret {
        x25519_dalek::StaticSecret::from(self.0)
    }
}
impl Drop for WgPrivateKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}
impl fmt::Debug for WgPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WgPrivateKey(<redacted>)")
    }
}

/// The console's Ed25519 signing key: signs peer maps (and, later, audit checkpoints).
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    pub fn generate() -> Self {
        SigningKey(ed25519_dalek::SigningKey::generate(&mut OsRng))
    }
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode32(s, "signing key").map(|b| SigningKey(ed25519_dalek::SigningKey::from_bytes(&b)))
    }
    pub fn to_base64(&self) -> String {
        B64.encode(self.0.to_bytes())
    }
    pub fn public_key(&self) -> SigningPublicKey {
        SigningPublicKey(self.0.verifying_key().to_bytes())
    }
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.0.sign(msg).to_bytes()
    }
}
impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(<redacted>, public={})", self.public_key())
    }
}

/// The public half of the console's signing key, which agents pin at enrollment.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SigningPublicKey(pub [u8; 32]);

impl SigningPublicKey {
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), KeyError> {
        let vk =
            ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::BadSignature)?;
        let sig: [u8; 64] = sig.try_into().map_err(|_| KeyError::BadSignature)?;
        vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig))
            .map_err(|_| KeyError::BadSignature)
    }
}
impl fmt::Display for SigningPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&B64.encode(self.0))
    }
}
impl fmt::Debug for SigningPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningPublicKey({self})")
    }
}
impl FromStr for SigningPublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s, "signing public key").map(SigningPublicKey)
    }
}

/// SHA-256 of a TLS certificate (DER), the pin an agent checks the console against.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint(pub [u8; 32]);

impl CertFingerprint {
    pub fn of_der(der: &[u8]) -> Self {
        CertFingerprint(Sha256::digest(der).into())
    }
    /// Colon-separated upper-case hex, as browsers and `openssl x509 -fingerprint` show it.
    pub fn to_colon_hex(&self) -> String {
        self.0
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}
impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({self})")
    }
}
impl FromStr for CertFingerprint {
    type Err = KeyError;
    /// Accepts plain hex or colon-separated hex, any case.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let clean: String = s.chars().filter(|c| *c != ':').collect();
        let v = hex::decode(clean).map_err(|_| KeyError::Fingerprint)?;
        v.try_into()
            .map(CertFingerprint)
            .map_err(|_| KeyError::Fingerprint)
    }
}

macro_rules! serde_via_str {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
serde_via_str!(WgPublicKey, SigningPublicKey, CertFingerprint);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_key_never_prints() {
        let k = WgPrivateKey::generate();
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&k.to_base64()));
        assert!(dbg.contains("redacted"));
        let sk = SigningKey::generate();
        assert!(!format!("{sk:?}").contains(&sk.to_base64()));
    }

    #[test]
    fn public_key_round_trip_and_errors() {
        let k = WgPrivateKey::generate();
        let p = k.public_key();
        assert_eq!(p.to_string().parse::<WgPublicKey>().unwrap(), p);
        assert!("abc".parse::<WgPublicKey>().is_err());
        assert!(B64.encode([0u8; 31]).parse::<WgPublicKey>().is_err());
        let k2 = WgPrivateKey::from_base64(&k.to_base64()).unwrap();
        assert_eq!(k2.public_key(), p);
    }

    #[test]
    fn signatures() {
        let sk = SigningKey::generate();
        let sig = sk.sign(b"hello");
        sk.public_key().verify(b"hello", &sig).unwrap();
        assert!(sk.public_key().verify(b"hellO", &sig).is_err());
        assert!(sk.public_key().verify(b"hello", &sig[..10]).is_err());
    }

    #[test]
    fn fingerprint_forms() {
        let f = CertFingerprint::of_der(b"cert");
        assert_eq!(f.to_string().parse::<CertFingerprint>().unwrap(), f);
        assert_eq!(f.to_colon_hex().parse::<CertFingerprint>().unwrap(), f);
        assert!("12:34".parse::<CertFingerprint>().is_err());
    }
}
