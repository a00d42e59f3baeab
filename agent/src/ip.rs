//! The one IP packet parser of the data plane, used by the core (routing, ping replies),
//! the inbound filter and the I/O layer's TCP coalescer, so an inbound packet is parsed
//! once and the result handed along. Bounds-checked throughout: never panics on any
//! input, and anything it cannot vouch for is `None`.
//!
//! Two levels: [`parse_ip`] checks the IP header (version, header and total length
//! against the buffer) and reads addresses and the protocol field; [`parse_transport`]
//! then walks IPv6 extension headers and reads ports or the ICMP type, TCP flags and
//! the fragment position into a [`Pkt`]. [`parse`] does both, and with `quoted` reads
//! the truncated copy of a packet inside an ICMP error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const IPV4_HEADER_MIN: usize = 20;
pub const IPV6_HEADER_LEN: usize = 40;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// Extension headers followed before giving up (a longer chain is treated as malformed).
const MAX_EXT_HEADERS: usize = 8;

/// The IP header of a packet: what routing needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpInfo {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The protocol field (IPv6: the first next-header; see [`Pkt::proto`] for the
    /// transport protocol behind extension headers).
    pub proto: u8,
    /// Length of the IP header (IPv4 with options; IPv6 without extension headers).
    pub l4_offset: usize,
    /// Total length claimed by the IP header, checked to fit in the buffer.
    pub total_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    /// Not fragmented.
    Whole,
    /// First fragment (offset 0, more fragments follow): the L4 header is present.
    First(u32),
    /// A later fragment: no L4 header.
    Later(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmp {
    EchoRequest {
        id: u16,
    },
    EchoReply {
        id: u16,
    },
    /// Destination unreachable, time exceeded, packet too big, parameter problem; the
    /// offset is where the quoted original packet starts.
    Error {
        quoted_at: usize,
    },
    Other,
}

/// A parsed packet: addresses, transport protocol, ports or ICMP type, TCP flags and
/// fragment position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pkt {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Transport protocol, behind any IPv6 extension headers.
    pub proto: u8,
    /// Offset of the transport header (after IPv4 options and IPv6 extension headers).
    pub l4: usize,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp: Option<Icmp>,
    pub frag: Frag,
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// Parses an IPv4 or IPv6 header. `None` if the buffer is not a consistent IP packet.
#[inline(always)]
pub fn parse_ip(pkt: &[u8]) -> Option<IpInfo> {
    header(pkt, false)
}

/// The header; `quoted` does not hold the length fields against the buffer (the copy
/// of a packet inside an ICMP error may be cut short) and takes the buffer's end.
#[inline(always)]
fn header(pkt: &[u8], quoted: bool) -> Option<IpInfo> {
    match pkt.first()? >> 4 {
        4 => {
            if pkt.len() < IPV4_HEADER_MIN {
                return None;
            }
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            if ihl < IPV4_HEADER_MIN || pkt.len() < ihl {
                return None;
            }
            if !quoted && (total < ihl || total > pkt.len()) {
                return None;
            }
            Some(IpInfo {
                src: IpAddr::V4(Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15])),
                dst: IpAddr::V4(Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19])),
                proto: pkt[9],
                l4_offset: ihl,
                total_len: if quoted { pkt.len() } else { total },
            })
        }
        6 => {
            if pkt.len() < IPV6_HEADER_LEN {
                return None;
            }
            let total = IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            if !quoted && total > pkt.len() {
                return None;
            }
            let src: [u8; 16] = pkt[8..24].try_into().ok()?;
            let dst: [u8; 16] = pkt[24..40].try_into().ok()?;
            Some(IpInfo {
                src: IpAddr::V6(Ipv6Addr::from(src)),
                dst: IpAddr::V6(Ipv6Addr::from(dst)),
                proto: pkt[6],
                l4_offset: IPV6_HEADER_LEN,
                total_len: if quoted { pkt.len() } else { total },
            })
        }
        _ => None,
    }
}

/// Destination address only: the cheap lookup of the outbound hot path.
#[inline(always)]
pub fn dst_addr(pkt: &[u8]) -> Option<IpAddr> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= IPV4_HEADER_MIN => Some(IpAddr::V4(Ipv4Addr::new(
            pkt[16], pkt[17], pkt[18], pkt[19],
        ))),
        6 if pkt.len() >= IPV6_HEADER_LEN => {
            let d: [u8; 16] = pkt[24..40].try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(d)))
        }
        _ => None,
    }
}

/// Parses a packet. `quoted` is for the copy inside an ICMP error: it may be truncated
/// after 8 bytes of transport header, so length fields are not checked against it.
#[inline(always)]
pub fn parse(b: &[u8], quoted: bool) -> Option<Pkt> {
    let ip = header(b, quoted)?;
    transport(b, &ip, quoted)
}

/// The rest of a packet whose header [`parse_ip`] returned: `parse_ip` then this is
/// `parse(b, false)`, without reading the header twice.
#[inline(always)]
pub fn parse_transport(b: &[u8], ip: &IpInfo) -> Option<Pkt> {
    transport(b, ip, false)
}

#[inline(always)]
fn transport(b: &[u8], ip: &IpInfo, quoted: bool) -> Option<Pkt> {
    let end = ip.total_len;
    let (proto, l4, frag) = match ip.src {
        IpAddr::V4(_) => {
            let id = u32::from(u16_at(b, 4)?);
            let ff = u16_at(b, 6)?;
            let frag = match (ff & 0x2000 != 0, ff & 0x1fff) {
                (false, 0) => Frag::Whole,
                (true, 0) => Frag::First(id),
                _ => Frag::Later(id),
            };
            (ip.proto, ip.l4_offset, frag)
        }
        IpAddr::V6(_) => {
            let (mut nh, mut at, mut frag) = (ip.proto, IPV6_HEADER_LEN, Frag::Whole);
            for i in 0..=MAX_EXT_HEADERS {
                if i == MAX_EXT_HEADERS {
                    return None;
                }
                match nh {
                    // hop-by-hop, routing, destination options
                    0 | 43 | 60 => {
                        let len = (usize::from(*b.get(at + 1)?) + 1) * 8;
                        nh = *b.get(at)?;
                        at += len;
                    }
                    44 => {
                        let ff = u16_at(b, at + 2)?;
                        let id = u32::from_be_bytes(b.get(at + 4..at + 8)?.try_into().ok()?);
                        frag = match (ff & 1 != 0, ff >> 3) {
                            (false, 0) => Frag::Whole,
                            (true, 0) => Frag::First(id),
                            _ => Frag::Later(id),
                        };
                        nh = *b.get(at)?;
                        at += 8;
                    }
                    // authentication header
                    51 => {
                        let len = (usize::from(*b.get(at + 1)?) + 2) * 4;
                        nh = *b.get(at)?;
                        at += len;
                    }
                    _ => break,
                }
                if at > end {
                    return None;
                }
            }
            (nh, at, frag)
        }
    };
    let mut p = Pkt {
        src: ip.src,
        dst: ip.dst,
        proto,
        l4,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp: None,
        frag,
    };
    if matches!(frag, Frag::Later(_)) {
        return Some(p);
    }
    let t = b.get(l4..end)?;
    match proto {
        PROTO_TCP => {
            let need = if quoted { 8 } else { 20 };
            if t.len() < need {
                return None;
            }
            if !quoted && (usize::from(t[12] >> 4) < 5 || usize::from(t[12] >> 4) * 4 > t.len()) {
                return None;
            }
            p.sport = u16_at(t, 0)?;
            p.dport = u16_at(t, 2)?;
            p.tcp_flags = t.get(13).copied().unwrap_or(0);
        }
        PROTO_UDP => {
            if t.len() < 8 {
                return None;
            }
            p.sport = u16_at(t, 0)?;
            p.dport = u16_at(t, 2)?;
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            if t.len() < 8 {
                return None;
            }
            let id = u16_at(t, 4)?;
            let v6 = proto == PROTO_ICMPV6;
            p.icmp = Some(match (v6, t[0]) {
                (false, 8) | (true, 128) => Icmp::EchoRequest { id },
                (false, 0) | (true, 129) => Icmp::EchoReply { id },
                (false, 3 | 11 | 12) | (true, 1..=4) => Icmp::Error {
                    quoted_at: end - t.len() + 8,
                },
                _ => Icmp::Other,
            });
        }
        _ => {}
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The core's two steps (header, then the rest) give what the filter's one-step
    /// `parse` gives, and the outbound `dst_addr` agrees, on random input.
    #[test]
    fn two_step_parse_equals_one_step() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for i in 0..50_000 {
            let len = (x % 96) as usize;
            let mut v: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if let Some(f) = v.first_mut() {
                *f = if i % 2 == 0 { 0x45 } else { 0x60 };
            }
            if v.len() >= 4 && i % 3 == 0 {
                let n = v.len() as u16; // a consistent length field now and then
                if v[0] == 0x45 {
                    v[2..4].copy_from_slice(&n.to_be_bytes());
                } else {
                    v[4..6].copy_from_slice(&n.saturating_sub(40).to_be_bytes());
                }
            }
            let two = parse_ip(&v).and_then(|ip| parse_transport(&v, &ip));
            assert_eq!(two, parse(&v, false), "{v:02x?}");
            if let Some(p) = two {
                assert_eq!(dst_addr(&v), Some(p.dst));
            }
        }
    }
}
