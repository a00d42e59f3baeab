//! Minimal, bounds-checked parsing of IPv4/IPv6 packets for the filter: addresses,
//! protocol, ports or ICMP echo id, TCP flags and fragment position. Never panics on
//! any input; anything it cannot vouch for is `None` (and the filter drops it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP4: u8 = 1;
pub const ICMP6: u8 = 58;

/// Extension headers followed before giving up (a longer chain is treated as malformed).
const MAX_EXT_HEADERS: usize = 8;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pkt {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp: Option<Icmp>,
    pub frag: Frag,
}

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// Parses a packet. `quoted` is for the copy inside an ICMP error: it may be truncated
/// after 8 bytes of transport header, so length fields are not checked against it.
pub fn parse(b: &[u8], quoted: bool) -> Option<Pkt> {
    let (src, dst, proto, l4, end, frag) = match b.first()? >> 4 {
        4 => {
            let ihl = usize::from(b[0] & 0x0f) * 4;
            let total = usize::from(u16_at(b, 2)?);
            if ihl < 20 || b.len() < ihl || (!quoted && (total < ihl || total > b.len())) {
                return None;
            }
            let end = if quoted { b.len() } else { total };
            let id = u32::from(u16_at(b, 4)?);
            let ff = u16_at(b, 6)?;
            let (more, off) = (ff & 0x2000 != 0, ff & 0x1fff);
            let frag = match (more, off) {
                (false, 0) => Frag::Whole,
                (true, 0) => Frag::First(id),
                _ => Frag::Later(id),
            };
            let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
            let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
            (IpAddr::V4(src), IpAddr::V4(dst), b[9], ihl, end, frag)
        }
        6 => {
            if b.len() < 40 {
                return None;
            }
            let plen = usize::from(u16_at(b, 4)?);
            if !quoted && 40 + plen > b.len() {
                return None;
            }
            let end = if quoted { b.len() } else { 40 + plen };
            let src: [u8; 16] = b[8..24].try_into().ok()?;
            let dst: [u8; 16] = b[24..40].try_into().ok()?;
            let (mut nh, mut at, mut frag) = (b[6], 40usize, Frag::Whole);
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
            (
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                nh,
                at,
                end,
                frag,
            )
        }
        _ => return None,
    };
    let mut p = Pkt {
        src,
        dst,
        proto,
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
        TCP => {
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
        UDP => {
            if t.len() < 8 {
                return None;
            }
            p.sport = u16_at(t, 0)?;
            p.dport = u16_at(t, 2)?;
        }
        ICMP4 | ICMP6 => {
            if t.len() < 8 {
                return None;
            }
            let id = u16_at(t, 4)?;
            let v6 = proto == ICMP6;
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
pub mod build {
    //! Packet builders for tests and benchmarks.

    use std::net::IpAddr;

    /// An IPv4 or IPv6 packet with the given transport header and payload.
    pub fn ip(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut b = vec![0x45, 0, 0, 0, 0, 7, 0, 0, 64, proto, 0, 0];
                b.extend_from_slice(&s.octets());
                b.extend_from_slice(&d.octets());
                b.extend_from_slice(l4);
                let n = b.len() as u16;
                b[2..4].copy_from_slice(&n.to_be_bytes());
                b
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut b = vec![0x60, 0, 0, 0];
                b.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                b.extend_from_slice(&[proto, 64]);
                b.extend_from_slice(&s.octets());
                b.extend_from_slice(&d.octets());
                b.extend_from_slice(l4);
                b
            }
            _ => panic!("mixed address families"),
        }
    }

    pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t
    }

    pub fn udp(sport: u16, dport: u16) -> Vec<u8> {
        let mut t = vec![0u8; 12];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..6].copy_from_slice(&12u16.to_be_bytes());
        t
    }

    pub fn icmp(ty: u8, id: u16) -> Vec<u8> {
        let mut t = vec![ty, 0, 0, 0, 0, 0, 0, 1];
        t[4..6].copy_from_slice(&id.to_be_bytes());
        t
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    #[test]
    fn parses_v4_v6_and_fragments() {
        let a: IpAddr = "100.64.0.1".parse().unwrap();
        let b: IpAddr = "100.64.0.2".parse().unwrap();
        let p = parse(&ip(a, b, TCP, &tcp(1234, 22, SYN)), false).unwrap();
        assert_eq!(
            (p.src, p.dst, p.proto, p.sport, p.dport, p.tcp_flags),
            (a, b, TCP, 1234, 22, SYN)
        );
        let mut f = ip(a, b, UDP, &udp(5, 53));
        f[6] = 0x00;
        f[7] = 0x10; // offset 16 * 8 bytes, no MF
        assert_eq!(parse(&f, false).unwrap().frag, Frag::Later(7));
        f[6] = 0x20;
        f[7] = 0;
        assert_eq!(parse(&f, false).unwrap().frag, Frag::First(7));

        let a6: IpAddr = "fd00::1".parse().unwrap();
        let b6: IpAddr = "fd00::2".parse().unwrap();
        // hop-by-hop then UDP
        let mut l4 = vec![UDP, 0, 0, 0, 0, 0, 0, 0];
        l4.extend(udp(9, 53));
        let mut pk = ip(a6, b6, 0, &l4);
        let p = parse(&pk, false).unwrap();
        assert_eq!((p.proto, p.dport), (UDP, 53));
        // truncate: extension header claims more than the packet holds
        pk[41] = 200;
        assert!(parse(&pk, false).is_none());
        assert!(matches!(
            parse(&ip(a6, b6, ICMP6, &icmp(128, 77)), false)
                .unwrap()
                .icmp,
            Some(Icmp::EchoRequest { id: 77 })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let a: IpAddr = "100.64.0.1".parse().unwrap();
        let good = ip(a, a, TCP, &tcp(1, 2, ACK));
        for n in 0..good.len() {
            let _ = parse(&good[..n], false);
            let _ = parse(&good[..n], true);
        }
        // a deterministic pseudo-random soup
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..20_000 {
            let len = (x % 120) as usize;
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let mut v = v;
            if let Some(f) = v.first_mut() {
                *f = if x & 1 == 0 { 0x45 } else { 0x60 };
            }
            let _ = parse(&v, false);
            let _ = parse(&v, true);
        }
    }
}
