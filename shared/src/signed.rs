//! `Signed<T>`: a value together with the exact JSON text that was signed and an
//! Ed25519 signature over it. Peer maps, deltas and relay tokens travel in it; it sits
//! below all of them so none of those modules needs another.

use std::marker::PhantomData;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::keys::{KeyError, SigningKey, SigningPublicKey};

/// Why a signed envelope was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignedError {
    #[error(transparent)]
    Signature(#[from] KeyError),
    #[error("signed payload is not a valid message: {0}")]
    Payload(String),
}

/// A value together with the exact JSON text that was signed and the signature.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T> {
    pub payload: String,
    pub signature: String,
    #[serde(skip)]
    _t: PhantomData<T>,
}

impl<T> std::fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signed({} bytes)", self.payload.len())
    }
}

impl<T: Serialize + DeserializeOwned> Signed<T> {
    pub fn sign(value: &T, key: &SigningKey) -> Self {
        let payload = serde_json::to_string(value).expect("wire types always serialize");
        let signature = B64.encode(key.sign(payload.as_bytes()));
        Signed {
            payload,
            signature,
            _t: PhantomData,
        }
    }

    /// Checks the signature, then parses the payload.
    pub fn verify(&self, key: &SigningPublicKey) -> Result<T, SignedError> {
        let sig = B64
            .decode(&self.signature)
            .map_err(|_| SignedError::Signature(KeyError::BadSignature))?;
        key.verify(self.payload.as_bytes(), &sig)?;
        serde_json::from_str(&self.payload).map_err(|e| SignedError::Payload(e.to_string()))
    }
}
