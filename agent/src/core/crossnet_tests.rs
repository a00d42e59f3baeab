//! The cross-network checks on real packets through two nodes: `a` is a peer in
//! network A that sends everything (0.0.0.0/0) to `m`, a device in networks A and B
//! (an exit node in A); `m` must neither deliver A's packet into B's range nor send
//! into A a packet whose source is in B's overlay.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use ipnet::IpNet;
use rand::rngs::StdRng;
use rand::SeedableRng;
use zmesh_shared::{DeviceId, WgPrivateKey};

use super::{packet, CrossNet, Node, PeerConfig};

fn n(s: &str) -> IpNet {
    s.parse().unwrap()
}

struct Two {
    a: Node,
    m: Node,
    a_addr: SocketAddr,
    m_addr: SocketAddr,
}

const A4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const M4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

fn two() -> Two {
    let (ka, km) = (WgPrivateKey::generate(), WgPrivateKey::generate());
    let (a6, m6) = (
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
    );
    let a_addr: SocketAddr = "192.0.2.1:1000".parse().unwrap();
    let m_addr: SocketAddr = "192.0.2.2:2000".parse().unwrap();
    let cfg = |k: &WgPrivateKey, allowed: Vec<IpNet>, ep| PeerConfig {
        device_id: DeviceId::new(),
        name: "p".into(),
        public_key: k.public_key(),
        allowed_ips: allowed,
        endpoints: vec![ep],
        persistent_keepalive: None,
    };
    let now = Instant::now();
    let mut a = Node::new(ka.clone(), A4, a6, StdRng::seed_from_u64(1));
    let mut m = Node::new(km.clone(), M4, m6, StdRng::seed_from_u64(2));
    // a uses m as its exit node; m knows a by its address only
    a.set_peers(vec![cfg(&km, vec![n("0.0.0.0/0"), n("::/0")], m_addr)], now);
    m.set_peers(
        vec![cfg(&ka, vec![n("100.64.0.1/32"), n("fd00::1/128")], a_addr)],
        now,
    );
    let all = vec![zmesh_shared::policy::FilterRule {
        dst: Vec::new(),
        src: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
        proto: zmesh_shared::policy::Proto::Any,
        ports: vec![zmesh_shared::policy::PortRange::ALL],
        rule: 0,
    }];
    // m is an exit node: it also accepts what it forwards anywhere
    let mut all = all;
    all.push(zmesh_shared::policy::FilterRule {
        dst: vec![n("0.0.0.0/0"), n("::/0")],
        ..all[0].clone()
    });
    a.set_filter(all.clone());
    m.set_filter(all);
    Two {
        a,
        m,
        a_addr,
        m_addr,
    }
}

/// Sends `pkt` from a's TUN to m; what m hands its TUN (None: dropped).
fn a_to_m(t: &mut Two, pkt: &[u8]) -> Option<Vec<u8>> {
    let now = Instant::now();
    let mut out = vec![0u8; 2048];
    let mut tun = vec![0u8; 2048];
    let (_, len) = t.a.handle_tun_packet(pkt, &mut out, now)?;
    let mut to_m = vec![out[..len].to_vec()];
    let mut delivered = None;
    // handshake rounds until the data packet arrives
    for _ in 0..6 {
        let mut to_a = vec![];
        for d in to_m.drain(..) {
            if let Some(l) = t.m.handle_datagram(t.a_addr, &d, &mut tun, now) {
                delivered = Some(tun[..l].to_vec());
            }
            while let Some(x) = t.m.poll_transmit() {
                to_a.push(x.payload);
            }
        }
        for d in to_a {
            t.a.handle_datagram(t.m_addr, &d, &mut tun, now);
            while let Some(x) = t.a.poll_transmit() {
                to_m.push(x.payload);
            }
        }
    }
    delivered
}

fn echo(src: IpAddr, dst: IpAddr, seq: u16) -> Vec<u8> {
    let mut b = [0u8; 128];
    let len = packet::build_echo_request(src, dst, 7, seq, b"cross", &mut b).unwrap();
    b[..len].to_vec()
}

fn lab() -> CrossNet {
    CrossNet {
        foreign_dst: vec![n("10.77.0.0/16"), n("fd77::/48")],
        foreign_src: vec![n("10.77.0.0/16"), n("fd77::/48")],
        local: vec![
            n("100.64.0.0/10"),
            n("fd00::/48"),
            n("0.0.0.0/0"),
            n("::/0"),
        ],
    }
}

#[test]
fn ingress_drops_packets_for_another_network() {
    let mut t = two();
    let b1 = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 3));
    // without the other profile's prefixes the exit node would deliver it
    let p = echo(IpAddr::V4(A4), b1, 1);
    assert_eq!(a_to_m(&mut t, &p).as_deref(), Some(&p[..]));
    t.m.set_crossnet(lab());
    let p = echo(IpAddr::V4(A4), b1, 2);
    assert_eq!(a_to_m(&mut t, &p), None);
    assert_eq!(t.m.counters().drop_cross_network, 1);
    assert_eq!(t.m.counters().drop_policy, 0, "dropped before the filter");
    // the exit node still forwards to the internet and answers for itself
    let p = echo(IpAddr::V4(A4), "198.51.100.7".parse().unwrap(), 3);
    assert!(a_to_m(&mut t, &p).is_some());
    let p = echo(IpAddr::V4(A4), IpAddr::V4(M4), 4);
    assert!(a_to_m(&mut t, &p).is_some());
    assert_eq!(t.m.counters().drop_cross_network, 1);
    // the other profile using an exit node: everything not local is foreign
    let mut c = lab();
    c.foreign_dst.push(n("0.0.0.0/0"));
    c.local.retain(|l| l.prefix_len() > 0);
    t.m.set_crossnet(c);
    let p = echo(IpAddr::V4(A4), "198.51.100.7".parse().unwrap(), 5);
    assert_eq!(a_to_m(&mut t, &p), None);
    assert_eq!(t.m.counters().drop_cross_network, 2);
    let p = echo(IpAddr::V4(A4), IpAddr::V4(M4), 6);
    assert!(a_to_m(&mut t, &p).is_some(), "own address is local");
}

#[test]
fn egress_drops_packets_from_another_network() {
    let mut t = two();
    let now = Instant::now();
    let mut out = vec![0u8; 2048];
    t.m.set_crossnet(lab());
    // forwarded by the kernel from the lab tunnel into this one
    let p = echo("10.77.0.3".parse().unwrap(), IpAddr::V4(A4), 1);
    assert_eq!(t.m.handle_tun_packet(&p, &mut out, now), None);
    let p6 = echo("fd77::3".parse().unwrap(), "fd00::1".parse().unwrap(), 2);
    assert_eq!(t.m.handle_tun_packet(&p6, &mut out, now), None);
    assert_eq!(t.m.counters().drop_cross_network, 2);
    // m's own packets pass (a handshake initiation goes out)
    let p = echo(IpAddr::V4(M4), IpAddr::V4(A4), 3);
    assert!(t.m.handle_tun_packet(&p, &mut out, now).is_some());
    // garbage from the TUN with a non-empty set: dropped, counted, no panic
    for junk in [&[][..], &[0x45][..], &[0x60, 0, 0][..]] {
        assert_eq!(t.m.handle_tun_packet(junk, &mut out, now), None);
    }
    assert_eq!(t.m.counters().drop_cross_network, 2);
}
