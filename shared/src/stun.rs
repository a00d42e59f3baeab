//! STUN (RFC 8489) Binding messages: just what a NAT-traversal client and a public
//! responder need. Pure encode/decode; every length is checked before it is read, so a
//! malformed datagram is an error, never a panic.
//!
//! The STUN magic cookie also tells STUN apart from WireGuard on a shared UDP socket:
//! WireGuard messages start with a type byte 1..=4 followed by three zero bytes, STUN
//! messages start with two zero bits and carry the cookie at bytes 4..8.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_SOFTWARE: u16 = 0x8022;
const ATTR_FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554e;

pub type TransactionId = [u8; 12];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("too short for a STUN header")]
    Short,
    #[error("not a STUN message (cookie or leading bits)")]
    NotStun,
    #[error("length field disagrees with the datagram")]
    Length,
    #[error("attribute runs past the end of the message")]
    Attribute,
    #[error("unsupported message type {0:#06x}")]
    Type(u16),
    #[error("FINGERPRINT does not match")]
    Fingerprint,
    #[error("response carries no mapped address")]
    NoAddress,
}

/// True when `b` looks like a STUN message (cheap test for demultiplexing a socket).
pub fn is_stun(b: &[u8]) -> bool {
    b.len() >= HEADER_LEN
        && b[0] & 0xC0 == 0
        && u32::from_be_bytes([b[4], b[5], b[6], b[7]]) == MAGIC_COOKIE
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    BindingRequest {
        tid: TransactionId,
    },
    BindingSuccess {
        tid: TransactionId,
        mapped: SocketAddr,
    },
}

pub fn binding_request(tid: TransactionId) -> Vec<u8> {
    let mut m = header(BINDING_REQUEST, tid);
    append_fingerprint(&mut m);
    m
}

/// A Binding success response carrying XOR-MAPPED-ADDRESS (and MAPPED-ADDRESS, for old
/// RFC 3489 clients), SOFTWARE and FINGERPRINT.
pub fn binding_success(tid: TransactionId, mapped: SocketAddr, software: &str) -> Vec<u8> {
    let mut m = header(BINDING_SUCCESS, tid);
    let xor = xor_address(mapped, &tid);
    push_attr(&mut m, ATTR_XOR_MAPPED_ADDRESS, &encode_address(xor));
    push_attr(&mut m, ATTR_MAPPED_ADDRESS, &encode_address(mapped));
    push_attr(&mut m, ATTR_SOFTWARE, software.as_bytes());
    append_fingerprint(&mut m);
    m
}

pub fn decode(b: &[u8]) -> Result<Message, StunError> {
    if b.len() < HEADER_LEN {
        return Err(StunError::Short);
    }
    if !is_stun(b) {
        return Err(StunError::NotStun);
    }
    let ty = u16::from_be_bytes([b[0], b[1]]);
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    if len % 4 != 0 || HEADER_LEN + len != b.len() {
        return Err(StunError::Length);
    }
    let mut tid = [0u8; 12];
    tid.copy_from_slice(&b[8..20]);
    let mut xor_mapped = None;
    let mut mapped = None;
    let mut off = HEADER_LEN;
    while off < b.len() {
        if off + 4 > b.len() {
            return Err(StunError::Attribute);
        }
        let at = u16::from_be_bytes([b[off], b[off + 1]]);
        let alen = u16::from_be_bytes([b[off + 2], b[off + 3]]) as usize;
        let vstart = off + 4;
        let vend = vstart.checked_add(alen).ok_or(StunError::Attribute)?;
        if vend > b.len() {
            return Err(StunError::Attribute);
        }
        let v = &b[vstart..vend];
        match at {
            ATTR_XOR_MAPPED_ADDRESS => xor_mapped = decode_address(v).map(|a| xor_address(a, &tid)),
            ATTR_MAPPED_ADDRESS => mapped = decode_address(v),
            ATTR_FINGERPRINT => {
                if alen != 4 || vend != b.len() {
                    return Err(StunError::Fingerprint);
                }
                let want = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                // The CRC covers the message up to the attribute, with the length field
                // already counting it, which is how it arrived.
                if crc32(&b[..off]) ^ FINGERPRINT_XOR != want {
                    return Err(StunError::Fingerprint);
                }
            }
            _ => {}
        }
        off = vend + (4 - alen % 4) % 4;
    }
    match ty {
        BINDING_REQUEST => Ok(Message::BindingRequest { tid }),
        BINDING_SUCCESS => xor_mapped
            .or(mapped)
            .map(|mapped| Message::BindingSuccess { tid, mapped })
            .ok_or(StunError::NoAddress),
        other => Err(StunError::Type(other)),
    }
}

fn header(ty: u16, tid: TransactionId) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&ty.to_be_bytes());
    m.extend_from_slice(&0u16.to_be_bytes());
    m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m.extend_from_slice(&tid);
    m
}

fn set_len(m: &mut [u8]) {
    let len = (m.len() - HEADER_LEN) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
}

fn push_attr(m: &mut Vec<u8>, ty: u16, v: &[u8]) {
    m.extend_from_slice(&ty.to_be_bytes());
    m.extend_from_slice(&(v.len() as u16).to_be_bytes());
    m.extend_from_slice(v);
    m.resize(m.len() + (4 - v.len() % 4) % 4, 0);
    set_len(m);
}

fn append_fingerprint(m: &mut Vec<u8>) {
    // The length field must already include the 8-byte FINGERPRINT attribute.
    let len = (m.len() - HEADER_LEN + 8) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    let crc = crc32(m) ^ FINGERPRINT_XOR;
    m.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
    m.extend_from_slice(&4u16.to_be_bytes());
    m.extend_from_slice(&crc.to_be_bytes());
}

fn encode_address(a: SocketAddr) -> Vec<u8> {
    let mut v = vec![0u8];
    match a.ip() {
        IpAddr::V4(ip) => {
            v.push(1);
            v.extend_from_slice(&a.port().to_be_bytes());
            v.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            v.push(2);
            v.extend_from_slice(&a.port().to_be_bytes());
            v.extend_from_slice(&ip.octets());
        }
    }
    v
}

fn decode_address(v: &[u8]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]);
    match (v[1], v.len()) {
        (1, 8) => Some(SocketAddr::new(
            Ipv4Addr::new(v[4], v[5], v[6], v[7]).into(),
            port,
        )),
        (2, 20) => {
            let o: [u8; 16] = v[4..20].try_into().ok()?;
            Some(SocketAddr::new(Ipv6Addr::from(o).into(), port))
        }
        _ => None,
    }
}

/// XOR-MAPPED-ADDRESS obfuscation; its own inverse.
fn xor_address(a: SocketAddr, tid: &TransactionId) -> SocketAddr {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = a.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match a.ip() {
        IpAddr::V4(ip) => {
            let mut o = ip.octets();
            for (x, c) in o.iter_mut().zip(cookie) {
                *x ^= c;
            }
            SocketAddr::new(Ipv4Addr::from(o).into(), port)
        }
        IpAddr::V6(ip) => {
            let mut o = ip.octets();
            let key: Vec<u8> = cookie.iter().chain(tid.iter()).copied().collect();
            for (x, k) in o.iter_mut().zip(key) {
                *x ^= k;
            }
            SocketAddr::new(Ipv6Addr::from(o).into(), port)
        }
    }
}

/// CRC-32 (IEEE), bitwise: STUN messages are tiny, a table is not worth it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_reference() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn request_response_round_trip_v4_v6() {
        let tid = [7u8; 12];
        let req = binding_request(tid);
        assert!(is_stun(&req));
        assert_eq!(decode(&req).unwrap(), Message::BindingRequest { tid });
        for mapped in ["192.0.2.7:40000", "[2001:db8::1]:3478"] {
            let mapped: SocketAddr = mapped.parse().unwrap();
            let resp = binding_success(tid, mapped, "zmesh");
            assert_eq!(
                decode(&resp).unwrap(),
                Message::BindingSuccess { tid, mapped }
            );
        }
    }

    /// RFC 5769 section 2.2: sample IPv4 response (its MESSAGE-INTEGRITY is ignored here).
    #[test]
    fn rfc5769_sample_response() {
        let hex = "0101003c 2112a442 b7e7a701 bc34d686 fa87dfae 8022000b 74657374 20766563 \
                   746f7220 00200008 0001a147 e112a643 00080014 2b91f599 fd9e90c3 8c7489f9 \
                   2af9ba53 f06be7d7 80280004 c07d4c96";
        let b = hex::decode(hex.replace(char::is_whitespace, "")).unwrap();
        match decode(&b).unwrap() {
            Message::BindingSuccess { mapped, .. } => {
                assert_eq!(mapped, "192.0.2.1:32853".parse().unwrap())
            }
            m => panic!("unexpected {m:?}"),
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = binding_success([1; 12], "192.0.2.1:1".parse().unwrap(), "x");
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        let mut bad_fp = good.clone();
        let n = bad_fp.len();
        bad_fp[n - 1] ^= 1;
        assert_eq!(decode(&bad_fp), Err(StunError::Fingerprint));
        // deterministic pseudo-random garbage with a valid header
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut m = header(BINDING_SUCCESS, [0; 12]);
            for _ in 0..(x % 64) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                m.push(x as u8);
            }
            let extra = m.len() - HEADER_LEN;
            m.resize(HEADER_LEN + extra.div_ceil(4) * 4, 0);
            set_len(&mut m);
            let _ = decode(&m);
        }
        assert_eq!(decode(&[1, 0, 0, 0]), Err(StunError::Short));
        assert!(!is_stun(&[
            1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ]));
    }
}
