//! TUN offload handling: the `virtio_net_hdr` that precedes every packet on a TUN opened
//! with IFF_VNET_HDR, TCP segmentation of the super-packets the kernel hands us when
//! TSO is enabled, and completion of partial checksums (CSUM offload).
//!
//! With TUN_F_TSO4/6 the kernel writes TCP "super-packets" of up to 64 KB, with one
//! header and `gso_size` bytes per segment; we must cut them into wire-sized packets
//! exactly as the kernel would have (lengths, IPv4 id and checksum, TCP sequence
//! numbers, FIN/PSH only on the last segment, CWR only on the first, full TCP checksum).

use crate::core::packet::{checksum, fix_ipv4_header_checksum, pseudo_header_sum, PROTO_TCP};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const VNET_HDR_LEN: usize = 10;
pub const F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_ECN: u8 = 0x80;

/// `struct virtio_net_hdr` (little-endian, as TUN uses on little-endian hosts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b = b.get(..VNET_HDR_LEN)?;
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    pub fn write(&self, b: &mut [u8]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("packet shorter than its offload header claims")]
    Truncated,
    #[error("unsupported GSO type {0}")]
    UnsupportedGso(u8),
    #[error("segment buffer too small")]
    BufferTooSmall,
}

/// Completes a partial checksum (CHECKSUM_PARTIAL): the field at `start + offset` holds
/// the pseudo-header sum; the final value covers everything from `start` to the end.
pub fn complete_checksum(pkt: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let field = start.checked_add(offset).ok_or(OffloadError::Truncated)?;
    if field + 2 > pkt.len() {
        return Err(OffloadError::Truncated);
    }
    let c = checksum(0, &pkt[start..]);
    pkt[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

fn ip_addrs(pkt: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => Some((
            IpAddr::V4(Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15])),
            IpAddr::V4(Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19])),
        )),
        6 if pkt.len() >= 40 => {
            let s: [u8; 16] = pkt[8..24].try_into().ok()?;
            let d: [u8; 16] = pkt[24..40].try_into().ok()?;
            Some((IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d))))
        }
        _ => None,
    }
}

/// Hands every wire-sized packet contained in one TUN read to `f`: the packet itself
/// (its checksum completed if the kernel left it partial) or each TCP segment of a GSO
/// super-packet, built in `seg`. Returns how many packets were produced.
pub fn split_tun_read(
    hdr: &VnetHdr,
    pkt: &mut [u8],
    seg: &mut [u8],
    mut f: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let gso = hdr.gso_type & !GSO_ECN;
    if gso == GSO_NONE {
        if hdr.flags & F_NEEDS_CSUM != 0 {
            complete_checksum(
                pkt,
                usize::from(hdr.csum_start),
                usize::from(hdr.csum_offset),
            )?;
        }
        f(pkt);
        return Ok(1);
    }
    if gso != GSO_TCPV4 && gso != GSO_TCPV6 {
        return Err(OffloadError::UnsupportedGso(hdr.gso_type));
    }
    let l4 = usize::from(hdr.csum_start);
    let (src, dst) = ip_addrs(pkt).ok_or(OffloadError::Truncated)?;
    let v4 = matches!(src, IpAddr::V4(_));
    if l4 + 20 > pkt.len() || (v4 && l4 < 20) || (!v4 && l4 < 40) {
        return Err(OffloadError::Truncated);
    }
    let tcp_hlen = usize::from(pkt[l4 + 12] >> 4) * 4;
    let hlen = l4 + tcp_hlen;
    let mss = usize::from(hdr.gso_size);
    if tcp_hlen < 20 || hlen > pkt.len() || mss == 0 {
        return Err(OffloadError::Truncated);
    }
    let payload_len = pkt.len() - hlen;
    if payload_len == 0 || payload_len <= mss {
        // Not actually more than one segment: just finish the checksum.
        complete_tcp_checksum(pkt, l4, src, dst);
        f(pkt);
        return Ok(1);
    }
    if seg.len() < hlen + mss {
        return Err(OffloadError::BufferTooSmall);
    }
    let seq0 = u32::from_be_bytes([pkt[l4 + 4], pkt[l4 + 5], pkt[l4 + 6], pkt[l4 + 7]]);
    let id0 = u16::from_be_bytes([pkt[4], pkt[5]]);
    let flags0 = pkt[l4 + 13];
    let nseg = payload_len.div_ceil(mss);
    for i in 0..nseg {
        let start = hlen + i * mss;
        let end = (start + mss).min(pkt.len());
        let n = hlen + (end - start);
        seg[..hlen].copy_from_slice(&pkt[..hlen]);
        seg[hlen..n].copy_from_slice(&pkt[start..end]);
        if v4 {
            seg[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            seg[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            fix_ipv4_header_checksum(&mut seg[..l4]);
        } else {
            seg[4..6].copy_from_slice(&((n - 40) as u16).to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        seg[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i + 1 < nseg {
            flags &= !(0x01 | 0x08); // FIN, PSH only on the last segment
        }
        if i > 0 {
            flags &= !0x80; // CWR only on the first
        }
        seg[l4 + 13] = flags;
        complete_tcp_checksum(&mut seg[..n], l4, src, dst);
        f(&seg[..n]);
    }
    Ok(nseg)
}

/// Computes the full TCP checksum of `pkt` (TCP header at `l4`) from scratch.
pub fn complete_tcp_checksum(pkt: &mut [u8], l4: usize, src: IpAddr, dst: IpAddr) {
    if pkt.len() < l4 + 18 {
        return;
    }
    pkt[l4 + 16] = 0;
    pkt[l4 + 17] = 0;
    let sum = pseudo_header_sum(src, dst, PROTO_TCP, pkt.len() - l4);
    let c = checksum(sum, &pkt[l4..]);
    pkt[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::packet::checksum_add;

    /// An IPv4 or IPv6 TCP packet with `payload`, checksum left as the kernel does for
    /// CHECKSUM_PARTIAL (pseudo-header sum only).
    pub fn tcp_packet(v6: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let l4 = if v6 { 40 } else { 20 };
        let tcp_hlen = 32; // with 12 bytes of options (timestamps)
        let n = l4 + tcp_hlen + payload.len();
        let mut p = vec![0u8; n];
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((n - 40) as u16).to_be_bytes());
            p[6] = PROTO_TCP;
            p[7] = 64;
            let (s, d): (Ipv6Addr, Ipv6Addr) =
                ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
            p[8..24].copy_from_slice(&s.octets());
            p[24..40].copy_from_slice(&d.octets());
            (s.into(), d.into())
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            p[4..6].copy_from_slice(&0xfff0u16.to_be_bytes());
            p[6] = 0x40;
            p[8] = 64;
            p[9] = PROTO_TCP;
            p[12..16].copy_from_slice(&[100, 64, 0, 1]);
            p[16..20].copy_from_slice(&[100, 64, 0, 2]);
            fix_ipv4_header_checksum(&mut p[..20]);
            (
                Ipv4Addr::new(100, 64, 0, 1).into(),
                Ipv4Addr::new(100, 64, 0, 2).into(),
            )
        };
        p[l4..l4 + 2].copy_from_slice(&40000u16.to_be_bytes());
        p[l4 + 2..l4 + 4].copy_from_slice(&5201u16.to_be_bytes());
        p[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        p[l4 + 8..l4 + 12].copy_from_slice(&77u32.to_be_bytes());
        p[l4 + 12] = (tcp_hlen as u8 / 4) << 4;
        p[l4 + 13] = flags;
        p[l4 + 14..l4 + 16].copy_from_slice(&512u16.to_be_bytes());
        p[l4 + 20..l4 + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        p[l4 + 32..].copy_from_slice(payload);
        let partial =
            !crate::core::packet::checksum_fold(pseudo_header_sum(src, dst, PROTO_TCP, n - l4));
        p[l4 + 16..l4 + 18].copy_from_slice(&(!partial).to_be_bytes());
        p
    }

    pub fn tcp_checksum_ok(p: &[u8]) -> bool {
        let ip = crate::core::packet::parse_ip(p).unwrap();
        let sum = pseudo_header_sum(ip.src, ip.dst, PROTO_TCP, ip.total_len - ip.l4_offset);
        checksum(sum, &p[ip.l4_offset..ip.total_len]) == 0
    }

    #[test]
    fn vnet_header_round_trip() {
        let h = VnetHdr {
            flags: 1,
            gso_type: 4,
            hdr_len: 72,
            gso_size: 1380,
            csum_start: 40,
            csum_offset: 16,
        };
        let mut b = [0u8; 10];
        h.write(&mut b);
        assert_eq!(VnetHdr::parse(&b), Some(h));
        assert_eq!(VnetHdr::parse(&b[..9]), None);
    }

    #[test]
    fn gso_split_v4_and_v6() {
        for v6 in [false, true] {
            let payload: Vec<u8> = (0..5000u32).map(|i| (i * 13) as u8).collect();
            let mut sp = tcp_packet(v6, 1000, 0x18 | 0x01 | 0x80, &payload); // PSH|ACK|FIN|CWR
            let l4 = if v6 { 40 } else { 20 };
            let hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
                hdr_len: (l4 + 32) as u16,
                gso_size: 1300,
                csum_start: l4 as u16,
                csum_offset: 16,
            };
            let mut seg = vec![0u8; 2000];
            let mut out: Vec<Vec<u8>> = vec![];
            let n = split_tun_read(&hdr, &mut sp, &mut seg, |p| out.push(p.to_vec())).unwrap();
            assert_eq!(n, 4);
            let mut joined = vec![];
            for (i, p) in out.iter().enumerate() {
                let ip = crate::core::packet::parse_ip(p).expect("valid ip");
                assert_eq!(ip.total_len, p.len());
                assert!(tcp_checksum_ok(p), "segment {i} checksum");
                if !v6 {
                    assert_eq!(checksum(0, &p[..20]), 0, "ipv4 header checksum");
                    assert_eq!(
                        u16::from_be_bytes([p[4], p[5]]),
                        0xfff0u16.wrapping_add(i as u16)
                    );
                }
                let seq = u32::from_be_bytes(p[l4 + 4..l4 + 8].try_into().unwrap());
                assert_eq!(seq, 1000 + 1300 * i as u32);
                let flags = p[l4 + 13];
                assert_eq!(flags & 0x10, 0x10, "ACK everywhere");
                assert_eq!(flags & 0x09 != 0, i == 3, "FIN/PSH only last");
                assert_eq!(flags & 0x80 != 0, i == 0, "CWR only first");
                joined.extend_from_slice(&p[l4 + 32..]);
            }
            assert_eq!(joined, payload);
            assert_eq!(out[3].len(), l4 + 32 + 5000 - 3 * 1300);
        }
    }

    #[test]
    fn partial_checksum_is_completed_and_bad_headers_rejected() {
        let mut p = tcp_packet(false, 1, 0x10, b"small");
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..Default::default()
        };
        let mut seg = vec![0u8; 100];
        let mut got = vec![];
        split_tun_read(&hdr, &mut p, &mut seg, |x| got = x.to_vec()).unwrap();
        assert!(tcp_checksum_ok(&got));
        let bad = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 60000,
            csum_offset: 16,
            ..Default::default()
        };
        assert!(split_tun_read(&bad, &mut p, &mut seg, |_| {}).is_err());
        let gso = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 10,
            csum_start: 200,
            ..Default::default()
        };
        assert!(split_tun_read(&gso, &mut p, &mut seg, |_| {}).is_err());
        let udp = VnetHdr {
            gso_type: 5,
            gso_size: 10,
            ..Default::default()
        };
        assert_eq!(
            split_tun_read(&udp, &mut p, &mut seg, |_| {}),
            Err(OffloadError::UnsupportedGso(5))
        );
        let _ = checksum_add(0, &[]);
    }
}
