//! Refresh tokens at rest: sealed with XChaCha20-Poly1305 under a key derived (HKDF-SHA256,
//! info `zmesh refresh-token v1`) from the OIDC client secret, which every replica has
//! and the database never holds. A random 24-byte nonce per token; the user's id is the
//! associated data, so a token copied to another user's row does not open. Stored as
//! `v1:` + base64(nonce || ciphertext). A token that no longer opens (the secret was
//! rotated) is simply absent: the user signs in again.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zmesh_shared::Secret;

const PREFIX: &str = "v1:";
const INFO: &[u8] = b"zmesh refresh-token v1";
const NONCE_LEN: usize = 24;

/// Seals and opens refresh tokens. `Debug` shows nothing of the key.
#[derive(Clone)]
pub struct TokenSealer {
    aead: XChaCha20Poly1305,
}

impl std::fmt::Debug for TokenSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSealer([redacted])")
    }
}

impl TokenSealer {
    pub fn from_client_secret(secret: &Secret) -> Self {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, secret.expose().as_bytes());
        let mut key = [0u8; 32];
        hk.expand(INFO, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let aead = XChaCha20Poly1305::new(&key.into());
        key.iter_mut().for_each(|b| *b = 0);
        TokenSealer { aead }
    }

    /// `v1:` + base64(nonce || ciphertext) of `token`, bound to `user_id`.
    pub fn seal(&self, user_id: &str, token: &Secret) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: token.expose().as_bytes(),
                    aad: user_id.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of a short message cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(out)
        )
    }

    /// The token sealed for `user_id`, or `None` if it does not open (another key or
    /// user, damaged, unknown version).
    pub fn open(&self, user_id: &str, sealed: &str) -> Option<Secret> {
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(sealed.strip_prefix(PREFIX)?)
            .ok()?;
        if raw.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let pt = self
            .aead
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: user_id.as_bytes(),
                },
            )
            .ok()?;
        String::from_utf8(pt).ok().map(Secret::from_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Secret {
        Secret::from_string(x.into())
    }

    #[test]
    fn round_trip_and_refusals() {
        let k = TokenSealer::from_client_secret(&s("client-secret-1"));
        let tok = "rt-Zq8aS0meOpaqueRefreshToken";
        let sealed = k.seal("usr_a", &s(tok));
        assert!(sealed.starts_with("v1:"), "{sealed}");
        assert!(!sealed.contains(tok) && !sealed.contains("Opaque"));
        assert_eq!(k.open("usr_a", &sealed).unwrap().expose(), tok);
        // a fresh nonce each time
        assert_ne!(k.seal("usr_a", &s(tok)), sealed);
        // another user, another key, damage, other versions: nothing
        assert!(k.open("usr_b", &sealed).is_none());
        let other = TokenSealer::from_client_secret(&s("client-secret-2"));
        assert!(other.open("usr_a", &sealed).is_none());
        let mut bad = sealed.clone().into_bytes();
        let i = bad.len() - 3;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        assert!(k
            .open("usr_a", std::str::from_utf8(&bad).unwrap())
            .is_none());
        for junk in ["", "v1:", "v2:AAAA", "v1:!!!", &sealed[3..]] {
            assert!(k.open("usr_a", junk).is_none(), "{junk:?}");
        }
        assert!(!format!("{k:?}").contains("secret"));
        assert_eq!(format!("{k:?}"), "TokenSealer([redacted])");
    }
}
