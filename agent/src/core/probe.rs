//! Path probes: small authenticated datagrams two agents exchange on the WireGuard UDP
//! socket to find which direct paths work and how fast they are.
//!
//! Layout (all lengths fixed, 91 bytes in total):
//!
//! ```text
//! 0      1         2      3   4               36           48                 75    91
//! | 0x5A | version | kind | 0 | sender x25519 | nonce (12) | sealed body (22) | tag |
//! ```
//!
//! The first byte tells probes apart from WireGuard (whose type byte is 1..=4, followed by
//! three zero bytes) and from STUN (whose first two bits are zero; 0x5A starts with 01).
//! The body (transaction id, and in a pong the address the ping came from) is sealed with
//! ChaCha20-Poly1305 under a key derived from the two devices' static x25519 keys
//! (X25519 + HKDF-SHA256), with the header as associated data, so only the two peers can
//! make or read a probe between them and a probe cannot be replayed as coming from the
//! other side.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

pub const MAGIC: u8 = 0x5A;
pub const VERSION: u8 = 1;
/// Magic, version, kind, zero, sender key, nonce: authenticated, not encrypted.
pub const HEADER_LEN: usize = 48;
/// Transaction id, address family (0 none, 4, 6), address (v4 mapped into v6), port.
pub const BODY_LEN: usize = 8 + 1 + 16 + 2;
const TAG_LEN: usize = 16;
/// Size of every probe datagram.
pub const PROBE_LEN: usize = HEADER_LEN + BODY_LEN + TAG_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("not a probe (length, magic or version)")]
    NotProbe,
    #[error("unknown probe kind {0}")]
    Kind(u8),
    #[error("probe does not authenticate")]
    Auth,
    #[error("the peer's key is a low-order point")]
    WeakKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ping = 1,
    Pong = 2,
}

/// A decrypted probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub kind: Kind,
    /// Chosen by the pinger; the pong echoes it.
    pub tx: u64,
    /// In a pong: where the ping came from (the pinger's address as the ponger sees it).
    pub observed: Option<SocketAddr>,
}

/// The symmetric key two devices share for probes.
#[derive(Clone)]
pub struct ProbeKey(ChaCha20Poly1305);

impl std::fmt::Debug for ProbeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProbeKey(..)")
    }
}

impl ProbeKey {
    /// Both sides derive the same key: the salt orders the two public keys.
    pub fn derive(ours: &StaticSecret, theirs: &PublicKey) -> Result<Self, ProbeError> {
        let shared = ours.diffie_hellman(theirs);
        if !shared.was_contributory() {
            return Err(ProbeError::WeakKey);
        }
        let mine = PublicKey::from(ours);
        let (lo, hi) = if mine.as_bytes() < theirs.as_bytes() {
            (mine.as_bytes(), theirs.as_bytes())
        } else {
            (theirs.as_bytes(), mine.as_bytes())
        };
        let mut info = [0u8; 64];
        info[..32].copy_from_slice(lo);
        info[32..].copy_from_slice(hi);
        let hk = Hkdf::<Sha256>::new(Some(b"zmesh path probe v1"), shared.as_bytes());
        let mut key = [0u8; 32];
        hk.expand(&info, &mut key)
            .map_err(|_| ProbeError::WeakKey)?;
        Ok(ProbeKey(ChaCha20Poly1305::new(Key::from_slice(&key))))
    }
}

/// Cheap demultiplexing test: could `b` be a probe?
pub fn is_probe(b: &[u8]) -> bool {
    b.len() == PROBE_LEN && b[0] == MAGIC && b[1] == VERSION && b[3] == 0
}

/// The sender's public key, read before decryption to find the right key.
pub fn sender(b: &[u8]) -> Result<[u8; 32], ProbeError> {
    if !is_probe(b) {
        return Err(ProbeError::NotProbe);
    }
    let mut k = [0u8; 32];
    k.copy_from_slice(&b[4..36]);
    Ok(k)
}

pub fn seal(key: &ProbeKey, sender: &[u8; 32], p: &Probe, nonce: [u8; 12]) -> Vec<u8> {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&[MAGIC, VERSION, p.kind as u8, 0]);
    header[4..36].copy_from_slice(sender);
    header[36..].copy_from_slice(&nonce);
    let mut body = [0u8; BODY_LEN];
    body[..8].copy_from_slice(&p.tx.to_be_bytes());
    if let Some(a) = p.observed {
        let v6 = match a.ip() {
            IpAddr::V4(v) => {
                body[8] = 4;
                v.to_ipv6_mapped()
            }
            IpAddr::V6(v) => {
                body[8] = 6;
                v
            }
        };
        body[9..25].copy_from_slice(&v6.octets());
        body[25..27].copy_from_slice(&a.port().to_be_bytes());
    }
    seal_raw(key, &header, body)
}

/// Seals `body` behind `header` as given (the nonce is `header[36..]`). [`seal`] builds
/// both from a [`Probe`]; the fuzz targets use this to make authentic probes whose
/// header or body `seal` never writes, to reach the parsing in [`open`].
#[doc(hidden)]
pub fn seal_raw(key: &ProbeKey, header: &[u8; HEADER_LEN], mut body: [u8; BODY_LEN]) -> Vec<u8> {
    let tag = key
        .0
        .encrypt_in_place_detached(Nonce::from_slice(&header[36..]), header, &mut body)
        .unwrap_or_default();
    let mut m = Vec::with_capacity(PROBE_LEN);
    m.extend_from_slice(header);
    m.extend_from_slice(&body);
    m.extend_from_slice(&tag);
    m
}

pub fn open(key: &ProbeKey, b: &[u8]) -> Result<Probe, ProbeError> {
    if !is_probe(b) {
        return Err(ProbeError::NotProbe);
    }
    let kind = match b[2] {
        1 => Kind::Ping,
        2 => Kind::Pong,
        k => return Err(ProbeError::Kind(k)),
    };
    let (head, rest) = b.split_at(HEADER_LEN);
    let (sealed, tag) = rest.split_at(BODY_LEN);
    let mut body = [0u8; BODY_LEN];
    body.copy_from_slice(sealed);
    key.0
        .decrypt_in_place_detached(
            Nonce::from_slice(&head[36..48]),
            head,
            &mut body,
            Tag::from_slice(tag),
        )
        .map_err(|_| ProbeError::Auth)?;
    let tx = u64::from_be_bytes(body[..8].try_into().map_err(|_| ProbeError::NotProbe)?);
    let mut o = [0u8; 16];
    o.copy_from_slice(&body[9..25]);
    let v6 = Ipv6Addr::from(o);
    let port = u16::from_be_bytes([body[25], body[26]]);
    let observed = match (body[8], v6.to_ipv4_mapped()) {
        (4, Some(v4)) => Some(SocketAddr::new(IpAddr::V4(v4), port)),
        (6, _) => Some(SocketAddr::new(IpAddr::V6(v6), port)),
        _ => None,
    };
    Ok(Probe { kind, tx, observed })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (StaticSecret, StaticSecret) {
        (
            StaticSecret::random_from_rng(rand::rngs::OsRng),
            StaticSecret::random_from_rng(rand::rngs::OsRng),
        )
    }

    #[test]
    fn both_sides_derive_one_key_and_round_trip() {
        let (a, b) = pair();
        let (pa, pb) = (PublicKey::from(&a), PublicKey::from(&b));
        let ka = ProbeKey::derive(&a, &pb).unwrap();
        let kb = ProbeKey::derive(&b, &pa).unwrap();
        for observed in [
            None,
            Some("198.51.100.7:40000".parse().unwrap()),
            Some("[2001:db8::9]:1".parse().unwrap()),
        ] {
            let p = Probe {
                kind: Kind::Pong,
                tx: 0xdead_beef_0102_0304,
                observed,
            };
            let m = seal(&ka, pa.as_bytes(), &p, [7; 12]);
            assert_eq!(m.len(), PROBE_LEN);
            assert!(is_probe(&m));
            assert!(!zmesh_shared::stun::is_stun(&m));
            assert!(!(1..=4).contains(&m[0]));
            assert_eq!(sender(&m).unwrap(), *pa.as_bytes());
            assert_eq!(open(&kb, &m).unwrap(), p);
        }
    }

    #[test]
    fn forged_tampered_and_garbage_probes_are_rejected() {
        let (a, b) = pair();
        let (_, c) = pair();
        let (pa, pb) = (PublicKey::from(&a), PublicKey::from(&b));
        let ka = ProbeKey::derive(&a, &pb).unwrap();
        let kb = ProbeKey::derive(&b, &pa).unwrap();
        let kc = ProbeKey::derive(&c, &pb).unwrap();
        let p = Probe {
            kind: Kind::Ping,
            tx: 1,
            observed: None,
        };
        let m = seal(&ka, pa.as_bytes(), &p, [1; 12]);
        // a third device cannot make or read probes between a and b
        assert_eq!(open(&kc, &m), Err(ProbeError::Auth));
        // every single-bit flip (header included) fails authentication or parsing
        for i in 0..m.len() {
            let mut t = m.clone();
            t[i] ^= 0x10;
            assert!(open(&kb, &t).is_err(), "flip at {i} accepted");
        }
        for cut in 0..m.len() {
            assert!(open(&kb, &m[..cut]).is_err());
            assert!(sender(&m[..cut]).is_err());
        }
        // a low-order public key gives no key
        assert_eq!(
            ProbeKey::derive(&a, &PublicKey::from([0u8; 32])).err(),
            Some(ProbeError::WeakKey)
        );
        // bounded fuzz with a fixed seed: random bytes behind a valid-looking header
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut g = m.clone();
            for byte in g.iter_mut().skip(2) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = x as u8;
            }
            g[3] = 0;
            assert!(open(&kb, &g).is_err());
        }
    }
}
