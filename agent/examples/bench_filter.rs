//! Benchmark (not a test): the inbound filter's cost per packet, for a packet accepted
//! by a rule, a denied packet and a reply to a flow this device opened; and beside it
//! the cross-network check an agent in several networks (profiles) makes on every
//! decrypted packet before the filter, with one profile and with three.
//!
//! `cargo run --release -p zmesh-agent --example bench_filter`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use zmesh_agent::core::CrossNet;
use zmesh_agent::filter::{Filter, Verdict};
use zmesh_shared::policy::{FilterRule, PortRange, Proto};

const ITERS: u32 = 2_000_000;

fn tcp_v4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut b = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
    b.extend_from_slice(&src.octets());
    b.extend_from_slice(&dst.octets());
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    b.extend_from_slice(&t);
    b
}

fn bench(name: &str, f: &mut Filter, pkt: &[u8], want: fn(Verdict) -> bool) {
    let start = Instant::now();
    let mut now = start;
    for i in 0..ITERS {
        if i % 1024 == 0 {
            now += Duration::from_micros(10);
        }
        let v = f.inbound(black_box(pkt), now);
        assert!(want(v), "{name}: unexpected verdict {v:?}");
    }
    let ns = start.elapsed().as_nanos() as f64 / ITERS as f64;
    println!("{name:<28} {ns:>7.1} ns/packet");
}

fn main() {
    let me = Ipv4Addr::new(100, 64, 0, 1);
    // 50 rules; the matching one is last and lists 2,000 scattered sources.
    let mut rules: Vec<FilterRule> = (0..49)
        .map(|r| FilterRule {
            src: vec![IpAddr::V4(Ipv4Addr::new(100, 65, r as u8, 7)).into()],
            dst: Vec::new(),
            proto: Proto::Tcp,
            ports: vec![PortRange::one(1000 + r as u16)],
            rule: r,
        })
        .collect();
    let srcs = (0..2000u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x6440_0000 + 2 + i * 3)).into())
        .collect();
    rules.push(FilterRule {
        src: srcs,
        dst: Vec::new(),
        proto: Proto::Tcp,
        ports: vec![PortRange::one(22), PortRange::one(443)],
        rule: 49,
    });
    let mut f = Filter::new(rules);
    let peer = Ipv4Addr::from(0x6440_0000 + 2 + 1000 * 3);
    println!(
        "{} iterations each, 50 rules, 2,000 sources in the accepting rule",
        ITERS
    );

    let accepted = tcp_v4(peer, me, 40000, 443, 0x10);
    bench("accepted by rule (TCP 443)", &mut f, &accepted, |v| {
        v == Verdict::Rule(49)
    });

    let denied = tcp_v4(peer, me, 40000, 80, 0x02);
    bench("denied (TCP 80)", &mut f, &denied, |v| !v.accepted());
    while f.poll_denied().is_some() {}

    let t = Instant::now();
    f.outbound(&tcp_v4(me, peer, 50000, 8443, 0x02), t);
    let reply = tcp_v4(peer, me, 8443, 50000, 0x10);
    bench("reply to own flow", &mut f, &reply, |v| v == Verdict::Reply);

    let t = Instant::now();
    for i in 0..ITERS {
        f.outbound(
            black_box(&tcp_v4(me, peer, 50000, 8443, 0x10)),
            t + Duration::from_nanos(i as u64),
        );
    }
    // includes building the packet; an upper bound for outbound tracking
    println!(
        "{:<28} {:>7.1} ns/packet",
        "outbound (incl. packet build)",
        t.elapsed().as_nanos() as f64 / ITERS as f64
    );
    let c = f.counters();
    println!("counters: {c:?}");

    // The cross-network check, as `Node` makes it: skipped on an empty set (one
    // profile); otherwise the longest foreign prefix against the longest own one.
    let n = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
    let one = CrossNet::default();
    let three = CrossNet {
        // two other profiles: their overlays, a subnet route, and an exit node
        foreign_dst: [
            "10.77.0.0/16",
            "fd77::/48",
            "10.99.0.0/16",
            "fd99::/48",
            "10.1.0.0/16",
        ]
        .iter()
        .map(|s| n(s))
        .chain([n("0.0.0.0/0"), n("::/0")])
        .collect(),
        foreign_src: ["10.77.0.0/16", "fd77::/48", "10.99.0.0/16", "fd99::/48"]
            .iter()
            .map(|s| n(s))
            .collect(),
        local: vec![n("100.64.0.0/10"), n("fd00::/48"), n("192.168.1.0/24")],
    };
    let dsts: Vec<IpAddr> = (0..64u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x6440_0001 + i)))
        .collect();
    for (name, c) in [
        ("cross-network, one profile", &one),
        ("cross-network, 3 profiles", &three),
    ] {
        let start = Instant::now();
        let mut blocked = 0u32;
        for i in 0..ITERS {
            let dst = black_box(dsts[i as usize % dsts.len()]);
            if !c.is_empty() && c.blocks_dst(dst) {
                blocked += 1;
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / ITERS as f64;
        assert_eq!(blocked, 0, "own addresses are never foreign");
        println!("{name:<28} {ns:>7.1} ns/packet");
    }
}
