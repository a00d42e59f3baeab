//! IP packet building for the data plane: ICMP/ICMPv6 echo build and recognition for the
//! built-in ping, and the Internet checksum helpers the I/O layer reuses to segment and
//! coalesce TCP. Header parsing is [`crate::ip`]'s, re-exported here. Everything takes
//! untrusted bytes and returns `None` on anything malformed; nothing panics.

use std::net::IpAddr;

pub use crate::ip::{
    dst_addr, parse_ip, IpInfo, IPV4_HEADER_MIN, IPV6_HEADER_LEN, PROTO_ICMP, PROTO_ICMPV6,
    PROTO_TCP, PROTO_UDP,
};

/// Ones'-complement sum of `data` added to `initial` (not folded, not inverted).
pub fn checksum_add(initial: u64, data: &[u8]) -> u64 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        // Summing big-endian 64-bit words with end-around carry equals summing the 16-bit
        // words once folded (RFC 1071 section 2), at a quarter of the additions.
        let v = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        sum = add_carry(sum, v);
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        sum = add_carry(sum, u64::from(u16::from_be_bytes([rest[i], rest[i + 1]])));
        i += 2;
    }
    if i < rest.len() {
        sum = add_carry(sum, u64::from(rest[i]) << 8);
    }
    sum
}

/// 64-bit ones'-complement addition (end-around carry), so sums never overflow.
#[inline(always)]
fn add_carry(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    s + u64::from(carry)
}

/// Folds a running sum to 16 bits (not inverted).
pub fn checksum_fold(sum: u64) -> u16 {
    let mut sum = (sum & 0xffff_ffff) + (sum >> 32);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The final Internet checksum of `data` with a running `initial` sum.
pub fn checksum(initial: u64, data: &[u8]) -> u16 {
    !checksum_fold(checksum_add(initial, data))
}

/// Pseudo-header sum for TCP/UDP/ICMPv6 checksums.
pub fn pseudo_header_sum(src: IpAddr, dst: IpAddr, proto: u8, l4_len: usize) -> u64 {
    let mut sum = 0u64;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = checksum_add(sum, &s.octets());
            sum = checksum_add(sum, &d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            sum = checksum_add(sum, &s.octets());
            sum = checksum_add(sum, &d.octets());
        }
        _ => {}
    }
    add_carry(
        sum,
        u64::from(proto) + (l4_len as u64 & 0xffff) + ((l4_len as u64) >> 16),
    )
}

/// Recomputes the IPv4 header checksum in place (`hdr` is exactly the header).
pub fn fix_ipv4_header_checksum(hdr: &mut [u8]) {
    if hdr.len() < IPV4_HEADER_MIN {
        return;
    }
    hdr[10] = 0;
    hdr[11] = 0;
    let c = checksum(0, hdr);
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Builds an ICMP (v4) or ICMPv6 echo request into `out`; returns its length.
/// `None` if the address families differ or `out` is too small.
pub fn build_echo_request(
    src: IpAddr,
    dst: IpAddr,
    id: u16,
    seq: u16,
    payload: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    let icmp_len = 8 + payload.len();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = IPV4_HEADER_MIN + icmp_len;
            if out.len() < total || total > usize::from(u16::MAX) {
                return None;
            }
            let h = &mut out[..IPV4_HEADER_MIN];
            h.fill(0);
            h[0] = 0x45;
            h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            h[6] = 0x40; // don't fragment
            h[8] = 64;
            h[9] = PROTO_ICMP;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            fix_ipv4_header_checksum(h);
            let icmp = &mut out[IPV4_HEADER_MIN..total];
            icmp[0] = 8;
            icmp[1] = 0;
            icmp[2..4].fill(0);
            icmp[4..6].copy_from_slice(&id.to_be_bytes());
            icmp[6..8].copy_from_slice(&seq.to_be_bytes());
            icmp[8..].copy_from_slice(payload);
            let c = checksum(0, icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            Some(total)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let total = IPV6_HEADER_LEN + icmp_len;
            if out.len() < total || icmp_len > usize::from(u16::MAX) {
                return None;
            }
            let h = &mut out[..IPV6_HEADER_LEN];
            h.fill(0);
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
            h[6] = PROTO_ICMPV6;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            let icmp = &mut out[IPV6_HEADER_LEN..total];
            icmp[0] = 128;
            icmp[1] = 0;
            icmp[2..4].fill(0);
            icmp[4..6].copy_from_slice(&id.to_be_bytes());
            icmp[6..8].copy_from_slice(&seq.to_be_bytes());
            icmp[8..].copy_from_slice(payload);
            let c = checksum(pseudo_header_sum(src, dst, PROTO_ICMPV6, icmp_len), icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            Some(total)
        }
        _ => None,
    }
}

/// An ICMP echo reply, as recognised by [`parse_echo_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoReply {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub id: u16,
    pub seq: u16,
}

/// Recognises an ICMP echo reply (v4 type 0, v6 type 129). Checksums are not verified:
/// the packet already passed the tunnel's AEAD, which is a far stronger check.
pub fn parse_echo_reply(pkt: &[u8]) -> Option<EchoReply> {
    echo_reply(pkt, &parse_ip(pkt)?)
}

/// [`parse_echo_reply`] for a packet whose header is already parsed.
pub fn echo_reply(pkt: &[u8], ip: &IpInfo) -> Option<EchoReply> {
    let icmp = pkt.get(ip.l4_offset..ip.total_len)?;
    if icmp.len() < 8 {
        return None;
    }
    let is_reply = match ip.proto {
        PROTO_ICMP => icmp[0] == 0 && icmp[1] == 0,
        PROTO_ICMPV6 => icmp[0] == 129 && icmp[1] == 0,
        _ => false,
    };
    if !is_reply {
        return None;
    }
    Some(EchoReply {
        src: ip.src,
        dst: ip.dst,
        id: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
    })
}

/// Turns an echo request into the matching reply in place (swap addresses, change the
/// type, fix checksums). Used by tests standing in for a remote kernel.
pub fn echo_request_to_reply(pkt: &mut [u8]) -> bool {
    let Some(ip) = parse_ip(pkt) else {
        return false;
    };
    let (l4, end) = (ip.l4_offset, ip.total_len);
    if end < l4 + 8 {
        return false;
    }
    match ip.proto {
        PROTO_ICMP if pkt[l4] == 8 => {
            let (s, d) = (pkt[12..16].to_vec(), pkt[16..20].to_vec());
            pkt[12..16].copy_from_slice(&d);
            pkt[16..20].copy_from_slice(&s);
            fix_ipv4_header_checksum(&mut pkt[..l4]);
            pkt[l4] = 0;
            pkt[l4 + 2..l4 + 4].fill(0);
            let c = checksum(0, &pkt[l4..end]);
            pkt[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
            true
        }
        PROTO_ICMPV6 if pkt[l4] == 128 => {
            let (s, d) = (pkt[8..24].to_vec(), pkt[24..40].to_vec());
            pkt[8..24].copy_from_slice(&d);
            pkt[24..40].copy_from_slice(&s);
            pkt[l4] = 129;
            pkt[l4 + 2..l4 + 4].fill(0);
            let sum = pseudo_header_sum(ip.dst, ip.src, PROTO_ICMPV6, end - l4);
            let c = checksum(sum, &pkt[l4..end]);
            pkt[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_known_vector() {
        // RFC 1071 example words 0x0001 0xf203 0xf4f5 0xf6f7 -> sum 0xddf2, checksum 0x220d
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum_fold(checksum_add(0, &data)), 0xddf2);
        assert_eq!(checksum(0, &data), 0x220d);
        // odd length and split sums agree with the one-shot sum
        let long: Vec<u8> = (0..1001u32).map(|i| (i * 7 + 3) as u8).collect();
        let split = checksum_add(checksum_add(0, &long[..640]), &long[640..]);
        assert_eq!(checksum_fold(split), checksum_fold(checksum_add(0, &long)));
    }

    #[test]
    fn echo_v4_and_v6_round_trip() {
        let mut buf = [0u8; 128];
        let (a, b) = (IpAddr::from([100, 64, 0, 1]), IpAddr::from([100, 64, 0, 2]));
        let n = build_echo_request(a, b, 7, 9, b"zmesh", &mut buf).unwrap();
        let ip = parse_ip(&buf[..n]).unwrap();
        assert_eq!(
            (ip.src, ip.dst, ip.proto, ip.total_len),
            (a, b, PROTO_ICMP, n)
        );
        assert_eq!(checksum(0, &buf[..20]), 0, "ipv4 header checksum verifies");
        assert_eq!(
            parse_echo_reply(&buf[..n]),
            None,
            "a request is not a reply"
        );
        assert!(echo_request_to_reply(&mut buf[..n]));
        let r = parse_echo_reply(&buf[..n]).unwrap();
        assert_eq!((r.src, r.dst, r.id, r.seq), (b, a, 7, 9));
        assert_eq!(checksum(0, &buf[20..n]), 0, "icmp checksum verifies");

        let (a6, b6): (IpAddr, IpAddr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let n = build_echo_request(a6, b6, 1, 2, b"x", &mut buf).unwrap();
        let sum = pseudo_header_sum(a6, b6, PROTO_ICMPV6, n - 40);
        assert_eq!(checksum(sum, &buf[40..n]), 0, "icmpv6 checksum verifies");
        assert!(echo_request_to_reply(&mut buf[..n]));
        let r = parse_echo_reply(&buf[..n]).unwrap();
        assert_eq!((r.src, r.dst, r.id, r.seq), (b6, a6, 1, 2));
        assert!(build_echo_request(a, b6, 1, 1, b"", &mut buf).is_none());
        assert!(build_echo_request(a, b, 1, 1, &[0; 200], &mut buf).is_none());
    }

    #[test]
    fn malformed_headers_are_rejected() {
        assert_eq!(parse_ip(&[]), None);
        assert_eq!(parse_ip(&[0x45; 19]), None);
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[3] = 200; // claims 200 bytes, has 20
        assert_eq!(parse_ip(&v4), None);
        v4[3] = 20;
        v4[0] = 0x44; // ihl 16 < 20
        assert_eq!(parse_ip(&v4), None);
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[5] = 1; // payload 1, none present
        assert_eq!(parse_ip(&v6), None);
        assert_eq!(dst_addr(&[0x70; 64]), None);
        assert_eq!(parse_echo_reply(&[0x45, 0, 0, 20]), None);
    }
}
