//! Robustness of the core against hostile input: random, truncated, mutated, replayed
//! and oversize datagrams and TUN packets are dropped and counted, never a panic.
//! Fixed-seed generator and bounded counts keep the test deterministic and quick.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use ipnet::IpNet;
use rand::rngs::StdRng;
use rand::SeedableRng;
use zmesh_shared::{DeviceId, WgPrivateKey};

use super::{packet, Node, PeerConfig};

/// xorshift64*: tiny, deterministic, good enough to make bytes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

struct Pair {
    a: Node,
    b: Node,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    /// Valid datagrams a sent to b, to mutate and replay.
    captured: Vec<Vec<u8>>,
}

fn pair() -> Pair {
    let (ka, kb) = (WgPrivateKey::generate(), WgPrivateKey::generate());
    let (a4, b4) = (Ipv4Addr::new(100, 64, 0, 1), Ipv4Addr::new(100, 64, 0, 2));
    let (a6, b6) = (
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
    );
    let a_addr: SocketAddr = "192.0.2.1:1000".parse().unwrap();
    let b_addr: SocketAddr = "192.0.2.2:2000".parse().unwrap();
    let cfg = |k: &WgPrivateKey, v4: Ipv4Addr, v6: Ipv6Addr, ep| PeerConfig {
        device_id: DeviceId::new(),
        name: "p".into(),
        public_key: k.public_key(),
        allowed_ips: vec![IpNet::from(IpAddr::V4(v4)), IpNet::from(IpAddr::V6(v6))],
        endpoints: vec![ep],
        persistent_keepalive: None,
    };
    let now = Instant::now();
    let mut a = Node::new(ka.clone(), a4, a6, StdRng::seed_from_u64(1));
    let mut b = Node::new(kb.clone(), b4, b6, StdRng::seed_from_u64(2));
    a.set_peers(vec![cfg(&kb, b4, b6, b_addr)], now);
    b.set_peers(vec![cfg(&ka, a4, a6, a_addr)], now);
    // These tests are about the tunnel: accept every inbound packet.
    let all = vec![zmesh_shared::policy::FilterRule {
        dst: Vec::new(),
        src: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
        proto: zmesh_shared::policy::Proto::Any,
        ports: vec![zmesh_shared::policy::PortRange::ALL],
        rule: 0,
    }];
    a.set_filter(all.clone());
    b.set_filter(all);
    let mut p = Pair {
        a,
        b,
        a_addr,
        b_addr,
        captured: vec![],
    };
    // handshake + a few data packets, capturing what a sends
    let mut ping = [0u8; 64];
    let n =
        packet::build_echo_request(IpAddr::V4(a4), IpAddr::V4(b4), 1, 1, b"x", &mut ping).unwrap();
    let mut out = vec![0u8; 2048];
    let mut tun = vec![0u8; 2048];
    let (_, len) = p.a.handle_tun_packet(&ping[..n], &mut out, now).unwrap();
    let mut to_b = vec![out[..len].to_vec()];
    for _ in 0..10 {
        let mut to_a = vec![];
        for d in to_b.drain(..) {
            p.captured.push(d.clone());
            p.b.handle_datagram(p.a_addr, &d, &mut tun, now);
            while let Some(t) = p.b.poll_transmit() {
                to_a.push(t.payload);
            }
        }
        for d in to_a {
            p.a.handle_datagram(p.b_addr, &d, &mut tun, now);
            while let Some(t) = p.a.poll_transmit() {
                to_b.push(t.payload);
            }
        }
    }
    for s in 0..5u16 {
        let n = packet::build_echo_request(IpAddr::V4(a4), IpAddr::V4(b4), 2, s, b"y", &mut ping)
            .unwrap();
        let (_, len) = p.a.handle_tun_packet(&ping[..n], &mut out, now).unwrap();
        p.captured.push(out[..len].to_vec());
        assert!(p
            .b
            .handle_datagram(p.a_addr, &out[..len], &mut tun, now)
            .is_some());
    }
    assert_eq!(p.b.counters().handshakes, 1);
    p
}

#[test]
fn random_and_mutated_datagrams_are_each_dropped_once() {
    let mut p = pair();
    let mut rng = Rng(0x5eed_2024_d47a_91a3);
    let mut out = vec![0u8; 70_000];
    let now = Instant::now();
    let delivered = p.b.counters().rx_packets;
    for i in 0..3000 {
        let d = match i % 4 {
            // pure noise, with a plausible message type half of the time
            0 => {
                let len = rng.below(1600);
                let mut d = rng.bytes(len);
                if !d.is_empty() && rng.below(2) == 0 {
                    d[0] = 1 + rng.below(4) as u8;
                    let end = d.len().min(4);
                    d[1..end].fill(0);
                }
                d
            }
            // noise of exactly the handshake/cookie/data sizes the parser accepts
            1 => {
                let sizes = [148usize, 92, 64, 32, 48, 100];
                let len = sizes[rng.below(sizes.len())];
                let mut d = rng.bytes(len);
                d[0] = 1 + rng.below(4) as u8;
                d[1..4].fill(0);
                d
            }
            // a captured valid message with one to three bytes flipped (or a replay)
            2 => {
                let mut d = p.captured[rng.below(p.captured.len())].clone();
                for _ in 0..rng.below(4) {
                    let k = rng.below(d.len());
                    let bit = rng.below(8);
                    d[k] ^= 1 << bit;
                }
                d
            }
            // a captured message truncated anywhere
            _ => {
                let d = &p.captured[rng.below(p.captured.len())];
                let cut = rng.below(d.len());
                d[..cut].to_vec()
            }
        };
        let before = p.b.counters().total_drops();
        let r = p.b.handle_datagram(p.a_addr, &d, &mut out, now);
        assert_eq!(r, None, "input {i} must not reach the TUN");
        assert_eq!(
            p.b.counters().total_drops(),
            before + 1,
            "input {i} counted exactly once"
        );
        while p.b.poll_transmit().is_some() {}
    }
    assert_eq!(p.b.counters().rx_packets, delivered);
    let c = p.b.counters();
    assert!(
        c.drop_garbage > 0 && c.drop_replay > 0 && c.drop_unknown_index > 0,
        "{c:?}"
    );
    // oversize: larger than the output buffer, and larger than any IP packet
    let mut small = vec![0u8; 256];
    p.b.handle_datagram(p.a_addr, &p.captured[0].clone(), &mut small[..100], now);
    p.b.handle_datagram(p.a_addr, &vec![4u8; 70_000], &mut out, now);
    assert_eq!(p.b.counters().drop_oversize, 2);
    // the session still works after all that
    let mut ping = [0u8; 64];
    let a4 = p.a.overlay_addrs().0;
    let n = packet::build_echo_request(
        IpAddr::V4(a4),
        IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2)),
        3,
        3,
        b"z",
        &mut ping,
    )
    .unwrap();
    let (_, len) = p.a.handle_tun_packet(&ping[..n], &mut small, now).unwrap();
    let d = small[..len].to_vec();
    assert!(p.b.handle_datagram(p.a_addr, &d, &mut out, now).is_some());
}

#[test]
fn random_tun_packets_never_panic() {
    let mut p = pair();
    let mut rng = Rng(42);
    let mut out = vec![0u8; 2048];
    let now = Instant::now();
    for _ in 0..3000 {
        let len = rng.below(1500);
        let mut pkt = rng.bytes(len);
        if !pkt.is_empty() && rng.below(2) == 0 {
            pkt[0] = (pkt[0] & 0x0f) | if rng.below(2) == 0 { 0x40 } else { 0x60 };
        }
        let _ = p.a.handle_tun_packet(&pkt, &mut out, now);
        let _ = packet::parse_ip(&pkt);
        let _ = packet::parse_echo_reply(&pkt);
        let _ = packet::echo_request_to_reply(&mut pkt);
    }
    // oversize for the buffer, and beyond any IP packet
    let mut big = vec![0u8; 2100];
    big[0] = 0x45;
    big[16..20].copy_from_slice(&[100, 64, 0, 2]);
    assert_eq!(p.a.handle_tun_packet(&big, &mut out, now), None);
    let mut huge = vec![0u8; 70_000];
    huge[0] = 0x45;
    let mut huge_out = vec![0u8; 70_100];
    assert_eq!(p.a.handle_tun_packet(&huge, &mut huge_out, now), None);
    assert_eq!(p.a.counters().drop_oversize, 2);
}
