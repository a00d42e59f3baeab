//! The relay protocol: how an agent proves to a relay who it is, and the frames that
//! carry already-encrypted WireGuard datagrams over a TLS/TCP connection.
//!
//! Authentication has two parts. The console signs a short-lived [`RelayClaims`] token
//! (network, device, WireGuard public key, expiry) with its peer-map signing key, so a
//! relay running on another host needs only the console's public key. A token alone could
//! be replayed, so the relay also sends a challenge (a fresh x25519 key and nonce) and the
//! agent answers with a hash over the x25519 shared secret of that key and its WireGuard
//! key: only the holder of the private key the token names can answer.
//!
//! Frame: `type (1) | length (4, big endian) | body`. Decoding is incremental and checks
//! every length first; a malformed frame is an error, never a panic.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{DeviceId, NetworkId};
use crate::keys::{SigningPublicKey, WgPublicKey};
use crate::signed::Signed;

/// `purpose` of a relay token, so no other signed document can pass as one.
pub const TOKEN_PURPOSE: &str = "zmesh-relay-v1";
/// Largest frame body (a 64 KiB datagram plus the peer key).
pub const MAX_BODY: usize = 65535 + 64;
const HDR: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayClaims {
    pub purpose: String,
    pub network_id: NetworkId,
    pub device_id: DeviceId,
    pub public_key: WgPublicKey,
    pub expires_at_ms: u64,
}

pub type RelayToken = Signed<RelayClaims>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("relay token signature or payload is invalid")]
    BadToken,
    #[error("relay token has expired")]
    Expired,
    #[error("frame type {0} is unknown")]
    Type(u8),
    #[error("frame length {0} is out of range")]
    Length(usize),
    #[error("frame body does not match its type")]
    Body,
}

/// Checks a token's signature, purpose and expiry.
pub fn verify_token(
    token: &RelayToken,
    console_key: &SigningPublicKey,
    now_ms: u64,
) -> Result<RelayClaims, RelayError> {
    let c = token
        .verify(console_key)
        .map_err(|_| RelayError::BadToken)?;
    if c.purpose != TOKEN_PURPOSE {
        return Err(RelayError::BadToken);
    }
    if now_ms >= c.expires_at_ms {
        return Err(RelayError::Expired);
    }
    Ok(c)
}

/// The answer to a relay's challenge: binds the DH secret to both keys and the nonce.
pub fn auth_proof(
    shared_secret: &[u8; 32],
    nonce: &[u8; 32],
    relay_key: &[u8; 32],
    device_key: &[u8; 32],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"zmesh relay auth v1");
    h.update(shared_secret);
    h.update(nonce);
    h.update(relay_key);
    h.update(device_key);
    h.finalize().into()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client -> relay: the token as JSON.
    Hello {
        token: Vec<u8>,
    },
    /// Relay -> client: a fresh x25519 public key and nonce.
    Challenge {
        key: [u8; 32],
        nonce: [u8; 32],
    },
    /// Client -> relay.
    Auth {
        proof: [u8; 32],
    },
    /// Relay -> client: authenticated, forwarding may start.
    Ready,
    /// Client -> relay: forward `data` to device `dst` (WireGuard public key).
    Send {
        dst: [u8; 32],
        data: Vec<u8>,
    },
    /// Relay -> client: `data` from device `src`.
    Recv {
        src: [u8; 32],
        data: Vec<u8>,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// Relay -> client before closing: why.
    Error {
        message: String,
    },
}

impl Frame {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HDR]);
        let ty = match self {
            Frame::Hello { token } => {
                out.extend_from_slice(token);
                1
            }
            Frame::Challenge { key, nonce } => {
                out.extend_from_slice(key);
                out.extend_from_slice(nonce);
                2
            }
            Frame::Auth { proof } => {
                out.extend_from_slice(proof);
                3
            }
            Frame::Ready => 4,
            Frame::Send { dst, data } => {
                out.extend_from_slice(dst);
                out.extend_from_slice(data);
                5
            }
            Frame::Recv { src, data } => {
                out.extend_from_slice(src);
                out.extend_from_slice(data);
                6
            }
            Frame::Ping { nonce } => {
                out.extend_from_slice(&nonce.to_be_bytes());
                7
            }
            Frame::Pong { nonce } => {
                out.extend_from_slice(&nonce.to_be_bytes());
                8
            }
            Frame::Error { message } => {
                out.extend_from_slice(&message.as_bytes()[..message.len().min(512)]);
                9
            }
        };
        let len = (out.len() - start - HDR) as u32;
        out[start] = ty;
        out[start + 1..start + HDR].copy_from_slice(&len.to_be_bytes());
    }

    /// Decodes one frame from the front of `buf`: `Ok(None)` = need more bytes,
    /// `Ok(Some((frame, used)))` = a frame and how many bytes it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, RelayError> {
        if buf.len() < HDR {
            return Ok(None);
        }
        let ty = buf[0];
        if !(1..=9).contains(&ty) {
            return Err(RelayError::Type(ty));
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_BODY {
            return Err(RelayError::Length(len));
        }
        let Some(b) = buf.get(HDR..HDR + len) else {
            return Ok(None);
        };
        let k32 = |s: &[u8]| -> Result<[u8; 32], RelayError> {
            s.try_into().map_err(|_| RelayError::Body)
        };
        let n64 = |s: &[u8]| -> Result<u64, RelayError> {
            Ok(u64::from_be_bytes(
                s.try_into().map_err(|_| RelayError::Body)?,
            ))
        };
        let f = match ty {
            1 => Frame::Hello { token: b.to_vec() },
            2 if len == 64 => Frame::Challenge {
                key: k32(&b[..32])?,
                nonce: k32(&b[32..])?,
            },
            3 => Frame::Auth { proof: k32(b)? },
            4 if len == 0 => Frame::Ready,
            5 if len >= 32 => Frame::Send {
                dst: k32(&b[..32])?,
                data: b[32..].to_vec(),
            },
            6 if len >= 32 => Frame::Recv {
                src: k32(&b[..32])?,
                data: b[32..].to_vec(),
            },
            7 => Frame::Ping { nonce: n64(b)? },
            8 => Frame::Pong { nonce: n64(b)? },
            9 => Frame::Error {
                message: String::from_utf8_lossy(b).into_owned(),
            },
            _ => return Err(RelayError::Body),
        };
        Ok(Some((f, HDR + len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{SigningKey, WgPrivateKey};

    #[test]
    fn frames_round_trip_and_stream_in_pieces() {
        let frames = vec![
            Frame::Hello {
                token: b"{}".to_vec(),
            },
            Frame::Challenge {
                key: [1; 32],
                nonce: [2; 32],
            },
            Frame::Auth { proof: [3; 32] },
            Frame::Ready,
            Frame::Send {
                dst: [4; 32],
                data: vec![9; 1500],
            },
            Frame::Recv {
                src: [5; 32],
                data: vec![],
            },
            Frame::Ping { nonce: 7 },
            Frame::Pong { nonce: 8 },
            Frame::Error {
                message: "nope".into(),
            },
        ];
        let mut buf = vec![];
        for f in &frames {
            f.encode(&mut buf);
        }
        // byte by byte: only complete frames come out
        let mut got = vec![];
        let mut pending: Vec<u8> = vec![];
        for b in &buf {
            pending.push(*b);
            while let Some((f, used)) = Frame::decode(&pending).unwrap() {
                got.push(f);
                pending.drain(..used);
            }
        }
        assert_eq!(got, frames);
        assert!(pending.is_empty());
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        assert_eq!(Frame::decode(&[0, 0, 0, 0, 0]), Err(RelayError::Type(0)));
        assert_eq!(
            Frame::decode(&[5, 0xff, 0xff, 0xff, 0xff]),
            Err(RelayError::Length(0xffff_ffff))
        );
        assert_eq!(Frame::decode(&[5, 0, 0, 0, 1, 0]), Err(RelayError::Body));
        assert_eq!(Frame::decode(&[7, 0, 0, 0, 1, 0]), Err(RelayError::Body));
        // bounded fuzz, fixed seed: random type/length/body
        let mut x = 0x853c_49e6_748f_ea9bu64;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = (x % 80) as usize;
            let mut b: Vec<u8> = (0..n)
                .map(|i| (x.rotate_left(i as u32 * 7) >> 3) as u8)
                .collect();
            if b.len() >= 5 && x & 1 == 0 {
                b[0] = 1 + (x >> 8) as u8 % 9;
                b[1..5].copy_from_slice(&((n as u32).saturating_sub(5)).to_be_bytes());
            }
            if let Ok(Some((_, used))) = Frame::decode(&b) {
                assert!(used <= b.len());
            }
        }
    }

    #[test]
    fn tokens_verify_only_with_the_console_key_and_before_expiry() {
        let console = SigningKey::generate();
        let other = SigningKey::generate();
        let claims = RelayClaims {
            purpose: TOKEN_PURPOSE.into(),
            network_id: NetworkId::new(),
            device_id: DeviceId::new(),
            public_key: WgPrivateKey::generate().public_key(),
            expires_at_ms: 1000,
        };
        let t = RelayToken::sign(&claims, &console);
        assert_eq!(
            verify_token(&t, &console.public_key(), 999),
            Ok(claims.clone())
        );
        assert_eq!(
            verify_token(&t, &console.public_key(), 1000),
            Err(RelayError::Expired)
        );
        assert_eq!(
            verify_token(&t, &other.public_key(), 0),
            Err(RelayError::BadToken)
        );
        let mut wrong = claims;
        wrong.purpose = "peer-map".into();
        let t = RelayToken::sign(&wrong, &console);
        assert_eq!(
            verify_token(&t, &console.public_key(), 0),
            Err(RelayError::BadToken)
        );
    }
}
