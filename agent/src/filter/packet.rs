//! The filter's view of packets: the data plane's one parser ([`crate::ip`]) under the
//! names the filter uses, and packet builders for the filter's tests.

pub use crate::ip::{parse, Frag, Icmp, Pkt, ACK, FIN, RST, SYN};
pub use crate::ip::{
    PROTO_ICMP as ICMP4, PROTO_ICMPV6 as ICMP6, PROTO_TCP as TCP, PROTO_UDP as UDP,
};
#[cfg(test)]
use std::net::IpAddr;

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
