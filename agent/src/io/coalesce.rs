//! Writes decrypted packets to the TUN, coalescing consecutive TCP segments of one flow
//! into a single GSO super-packet (the receive-side twin of TSO, like the kernel's GRO):
//! one `write` and one trip through the stack for up to 64 KB instead of one per segment.
//!
//! A segment joins the pending super-packet only if it continues it exactly: same
//! addresses, ports, TCP header length, options, ACK and window, sequence number equal to
//! the expected one, only ACK/PSH set, and a payload no larger than the first segment's
//! (a shorter one, or PSH, ends the super-packet). Anything else is written on its own
//! with a zeroed `virtio_net_hdr`: checksums are complete, the sender's kernel or our
//! segmentation finished them. A coalesced packet goes out with NEEDS_CSUM and the
//! pseudo-header sum in the TCP checksum field, as the kernel expects for GSO input.

use super::offload::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, VNET_HDR_LEN};
use super::tun::Tun;
use crate::core::packet::{checksum_fold, fix_ipv4_header_checksum, pseudo_header_sum};
use crate::ip::{
    Frag, Pkt, ACK as TCP_ACK, IPV4_HEADER_MIN, IPV6_HEADER_LEN, PROTO_TCP, PSH as TCP_PSH,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const BUF: usize = VNET_HDR_LEN + 65536 + 256;
/// Largest coalesced IP packet (the IPv4 total length is 16 bits).
const MAX_SUPER: usize = 65535;
const MAX_SEGS: usize = 64;

/// What a TCP segment must match to extend the pending super-packet.
#[derive(Clone, Copy)]
struct Flow {
    v6: bool,
    /// IP header length (transport offset) and IP + TCP header length.
    l4: usize,
    hlen: usize,
    mss: usize,
    next_seq: u32,
    segs: usize,
}

pub(crate) struct Coalescer {
    vnet: bool,
    /// Header room + the pending (possibly coalesced) packet.
    pending: Vec<u8>,
    pending_len: usize,
    flow: Option<Flow>,
    /// Where the next packet is decrypted.
    scratch: Vec<u8>,
}

/// The TCP segment view used for matching, from the packet and its parse (done by the
/// core, see [`crate::ip`]); `None` for anything not coalescable.
fn tcp_candidate(p: &[u8], ip: &Pkt) -> Option<(bool, usize, usize, u32, u8)> {
    let v6 = ip.src.is_ipv6();
    let l4 = if v6 { IPV6_HEADER_LEN } else { IPV4_HEADER_MIN };
    // TCP right behind the IP header (no IPv4 options, no IPv6 extension headers), not
    // fragmented, with a full TCP header.
    if ip.proto != PROTO_TCP || ip.l4 != l4 || ip.frag != Frag::Whole || p.len() < l4 + 20 {
        return None;
    }
    let tcp_hlen = usize::from(p[l4 + 12] >> 4) * 4;
    let hlen = l4 + tcp_hlen;
    let flags = p[l4 + 13];
    if tcp_hlen < 20 || hlen >= p.len() || flags & !(TCP_ACK | TCP_PSH) != 0 || flags & TCP_ACK == 0
    {
        return None;
    }
    let seq = u32::from_be_bytes([p[l4 + 4], p[l4 + 5], p[l4 + 6], p[l4 + 7]]);
    Some((v6, l4, hlen, seq, flags))
}

impl Coalescer {
    pub fn new(vnet: bool) -> Self {
        Coalescer {
            vnet,
            pending: vec![0u8; BUF],
            pending_len: 0,
            flow: None,
            scratch: vec![0u8; BUF],
        }
    }

    /// Where to decrypt the next packet.
    pub fn slot(&mut self) -> &mut [u8] {
        &mut self.scratch[VNET_HDR_LEN..]
    }

    /// The packet in `slot()[..len]` is ready; `ip` is its parse.
    pub fn commit(&mut self, len: usize, ip: &Pkt, tun: &Tun) {
        self.push_parsed(len, Some(ip), &mut |b| write(tun, b));
    }

    /// Writes anything held back.
    pub fn flush(&mut self, tun: &Tun) {
        self.flush_with(&mut |b| write(tun, b));
    }

    #[cfg(test)]
    fn push(&mut self, len: usize, out: &mut dyn FnMut(&[u8])) {
        let ip = crate::ip::parse(&self.scratch[VNET_HDR_LEN..VNET_HDR_LEN + len], false);
        self.push_parsed(len, ip.as_ref(), out);
    }

    fn push_parsed(&mut self, len: usize, ip: Option<&Pkt>, out: &mut dyn FnMut(&[u8])) {
        let pkt = &self.scratch[VNET_HDR_LEN..VNET_HDR_LEN + len];
        let cand = match ip {
            Some(ip) if self.vnet => tcp_candidate(pkt, ip),
            _ => None,
        };
        let Some((v6, l4, hlen, seq, flags)) = cand else {
            self.flush_with(out);
            self.write_single(len, out);
            return;
        };
        let plen = len - hlen;
        if let Some(f) = self.flow {
            let cur = &self.pending[VNET_HDR_LEN..VNET_HDR_LEN + self.pending_len];
            let same = f.v6 == v6
                && f.hlen == hlen
                && seq == f.next_seq
                && plen <= f.mss
                && f.segs < MAX_SEGS
                && self.pending_len + plen <= MAX_SUPER
                && same_headers(cur, pkt, v6, l4, hlen);
            if same {
                let at = VNET_HDR_LEN + self.pending_len;
                self.pending[at..at + plen].copy_from_slice(&pkt[hlen..]);
                self.pending_len += plen;
                self.pending[VNET_HDR_LEN + l4 + 13] |= flags & TCP_PSH;
                let f = self.flow.as_mut().expect("flow present");
                f.next_seq = seq.wrapping_add(plen as u32);
                f.segs += 1;
                if plen < f.mss || flags & TCP_PSH != 0 {
                    self.flush_with(out);
                }
                return;
            }
        }
        self.flush_with(out);
        if flags & TCP_PSH != 0 {
            self.write_single(len, out);
            return;
        }
        let r = VNET_HDR_LEN..VNET_HDR_LEN + len;
        self.pending[r.clone()].copy_from_slice(&self.scratch[r]);
        self.pending_len = len;
        self.flow = Some(Flow {
            v6,
            l4,
            hlen,
            mss: plen,
            next_seq: seq.wrapping_add(plen as u32),
            segs: 1,
        });
    }

    fn write_single(&mut self, len: usize, out: &mut dyn FnMut(&[u8])) {
        if self.vnet {
            self.scratch[..VNET_HDR_LEN].fill(0);
            out(&self.scratch[..VNET_HDR_LEN + len]);
        } else {
            out(&self.scratch[VNET_HDR_LEN..VNET_HDR_LEN + len]);
        }
    }

    fn flush_with(&mut self, out: &mut dyn FnMut(&[u8])) {
        let Some(f) = self.flow.take() else { return };
        let n = self.pending_len;
        let b = &mut self.pending[..VNET_HDR_LEN + n];
        if f.segs == 1 {
            b[..VNET_HDR_LEN].fill(0);
            out(b);
            return;
        }
        let p = &mut b[VNET_HDR_LEN..];
        let (src, dst): (IpAddr, IpAddr) = if f.v6 {
            p[4..6].copy_from_slice(&((n - 40) as u16).to_be_bytes());
            let s: [u8; 16] = p[8..24].try_into().expect("40-byte header");
            let d: [u8; 16] = p[24..40].try_into().expect("40-byte header");
            (Ipv6Addr::from(s).into(), Ipv6Addr::from(d).into())
        } else {
            p[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            fix_ipv4_header_checksum(&mut p[..f.l4]);
            (
                Ipv4Addr::new(p[12], p[13], p[14], p[15]).into(),
                Ipv4Addr::new(p[16], p[17], p[18], p[19]).into(),
            )
        };
        // CHECKSUM_PARTIAL: the field holds the (uninverted) pseudo-header sum.
        let partial = checksum_fold(pseudo_header_sum(src, dst, PROTO_TCP, n - f.l4));
        p[f.l4 + 16..f.l4 + 18].copy_from_slice(&partial.to_be_bytes());
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if f.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: f.hlen as u16,
            gso_size: f.mss as u16,
            csum_start: f.l4 as u16,
            csum_offset: 16,
        }
        .write(&mut b[..VNET_HDR_LEN]);
        out(b);
    }
}

/// Same flow and same per-segment header fields (ignoring lengths, IPv4 id/checksum,
/// sequence number, TCP checksum and the PSH flag).
fn same_headers(a: &[u8], b: &[u8], v6: bool, l4: usize, hlen: usize) -> bool {
    let ip_same = if v6 {
        a[..4] == b[..4] && a[6..40] == b[6..40]
    } else {
        a[..2] == b[..2] && a[6..10] == b[6..10] && a[12..20] == b[12..20]
    };
    ip_same
        && a[l4..l4 + 4] == b[l4..l4 + 4] // ports
        && a[l4 + 8..l4 + 13] == b[l4 + 8..l4 + 13] // ack, data offset
        && (a[l4 + 13] | TCP_PSH) == (b[l4 + 13] | TCP_PSH)
        && a[l4 + 14..l4 + 16] == b[l4 + 14..l4 + 16] // window
        && a[l4 + 18..hlen] == b[l4 + 18..hlen] // urgent pointer, options
}

fn write(tun: &Tun, b: &[u8]) {
    if let Err(e) = tun.write(b) {
        tracing::trace!(error = %e, "TUN write failed");
    }
}

#[cfg(test)]
mod tests {
    use super::super::offload::split_tun_read;
    use super::super::offload::tests::{tcp_checksum_ok, tcp_packet};
    use super::*;

    /// Cuts a super-packet the way the kernel's TSO would and feeds the segments through
    /// the coalescer: what comes out must be one GSO packet that splits back to the same
    /// segments.
    fn round_trip(v6: bool) {
        let payload: Vec<u8> = (0..6000u32).map(|i| (i * 7) as u8).collect();
        let mut sp = tcp_packet(v6, 5000, TCP_ACK | TCP_PSH, &payload);
        let l4 = if v6 { 40 } else { 20 };
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: (l4 + 32) as u16,
            gso_size: 1368,
            csum_start: l4 as u16,
            csum_offset: 16,
        };
        let mut seg = vec![0u8; 2000];
        let mut segs = vec![];
        split_tun_read(&hdr, &mut sp, &mut seg, |p| segs.push(p.to_vec())).unwrap();
        assert_eq!(segs.len(), 5);
        let mut c = Coalescer::new(true);
        let mut written: Vec<Vec<u8>> = vec![];
        for s in &segs {
            c.slot()[..s.len()].copy_from_slice(s);
            c.push(s.len(), &mut |b| written.push(b.to_vec()));
        }
        c.flush_with(&mut |b| written.push(b.to_vec()));
        assert_eq!(
            written.len(),
            1,
            "five segments, one write (the last carries PSH)"
        );
        let h = VnetHdr::parse(&written[0]).unwrap();
        assert_eq!(
            (h.gso_size, h.csum_start, h.hdr_len),
            (1368, l4 as u16, (l4 + 32) as u16)
        );
        let mut sup = written[0][VNET_HDR_LEN..].to_vec();
        let mut again = vec![];
        split_tun_read(&h, &mut sup, &mut seg, |p| again.push(p.to_vec())).unwrap();
        assert_eq!(
            again, segs,
            "coalesced packet re-splits to the identical segments"
        );
        assert!(again.iter().all(|p| tcp_checksum_ok(p)));
    }

    #[test]
    fn coalesces_a_tso_burst_v4_and_v6() {
        round_trip(false);
        round_trip(true);
    }

    #[test]
    fn out_of_order_and_other_packets_pass_alone() {
        let a = tcp_packet(false, 100, TCP_ACK, &[1u8; 1000]);
        let gap = tcp_packet(false, 5000, TCP_ACK, &[2u8; 1000]); // sequence gap
        let syn = tcp_packet(false, 9000, 0x02, &[]);
        let udp = {
            let mut p = a.clone();
            p[9] = 17;
            p
        };
        let mut c = Coalescer::new(true);
        let mut written: Vec<Vec<u8>> = vec![];
        for p in [&a, &gap, &syn, &udp] {
            c.slot()[..p.len()].copy_from_slice(p);
            c.push(p.len(), &mut |b| written.push(b.to_vec()));
        }
        c.flush_with(&mut |b| written.push(b.to_vec()));
        let bodies: Vec<&[u8]> = written.iter().map(|w| &w[VNET_HDR_LEN..]).collect();
        assert_eq!(bodies, vec![&a[..], &gap[..], &syn[..], &udp[..]]);
        assert!(written
            .iter()
            .all(|w| w[..VNET_HDR_LEN] == [0u8; VNET_HDR_LEN]));
        // without a vnet header nothing is coalesced and no header is written
        let mut c = Coalescer::new(false);
        let mut w2: Vec<Vec<u8>> = vec![];
        c.slot()[..a.len()].copy_from_slice(&a);
        c.push(a.len(), &mut |b| w2.push(b.to_vec()));
        assert_eq!(w2, vec![a.clone()]);
    }
}
