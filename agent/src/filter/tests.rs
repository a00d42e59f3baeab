//! Filter behaviour with a virtual clock: rule accepts, port/proto denials, replies to
//! flows opened locally, expiry, fragments, audit rate limits and malformed input.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::packet::build::*;
use super::packet::{ACK, FIN, ICMP4, ICMP6, RST, SYN, TCP, UDP};
use super::*;

fn a(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const ME: &str = "100.64.0.1";
const PEER: &str = "100.64.0.2";
const OTHER: &str = "100.64.0.3";

fn rules() -> Vec<FilterRule> {
    vec![
        FilterRule {
            dst: Vec::new(),
            src: vec![
                "100.64.0.2/32".parse().unwrap(),
                "fd00::2/128".parse().unwrap(),
            ],
            proto: Proto::Tcp,
            ports: vec![
                PortRange::one(22),
                PortRange {
                    first: 8000,
                    last: 8099,
                },
            ],
            rule: 0,
        },
        FilterRule {
            dst: Vec::new(),
            src: vec!["100.64.0.0/24".parse().unwrap()],
            proto: Proto::Icmp,
            ports: vec![PortRange::ALL],
            rule: 3,
        },
        FilterRule {
            dst: Vec::new(),
            src: vec!["100.64.0.3/32".parse().unwrap()],
            proto: Proto::Any,
            ports: vec![PortRange::one(53)],
            rule: 5,
        },
    ]
}

fn tcp_in(src: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    ip(a(src), a(ME), TCP, &tcp(sport, dport, flags))
}

#[test]
fn rules_accept_and_deny_by_port_and_proto() {
    let mut f = Filter::new(rules());
    let t = Instant::now();
    assert_eq!(
        f.inbound(&tcp_in(PEER, 40000, 22, SYN), t),
        Verdict::Rule(0)
    );
    assert_eq!(
        f.inbound(&tcp_in(PEER, 40000, 8050, SYN), t),
        Verdict::Rule(0)
    );
    assert_eq!(
        f.inbound(&tcp_in(PEER, 40000, 80, SYN), t),
        Verdict::Drop(DropReason::NoRule)
    );
    assert_eq!(
        f.inbound(&ip(a(PEER), a(ME), UDP, &udp(1, 22)), t),
        Verdict::Drop(DropReason::NoRule),
        "udp is not tcp"
    );
    assert_eq!(
        f.inbound(&tcp_in(OTHER, 40000, 22, SYN), t),
        Verdict::Drop(DropReason::NoRule),
        "wrong source"
    );
    assert_eq!(
        f.inbound(&ip(a(OTHER), a(ME), ICMP4, &icmp(8, 1)), t),
        Verdict::Rule(3)
    );
    // proto any with ports: tcp and udp 53 pass, icmp does not come from rule 5 ...
    assert_eq!(
        f.inbound(&ip(a(OTHER), a(ME), UDP, &udp(9, 53)), t),
        Verdict::Rule(5)
    );
    assert_eq!(f.inbound(&tcp_in(OTHER, 9, 53, SYN), t), Verdict::Rule(5));
    // ... nor do other protocols (GRE)
    assert_eq!(
        f.inbound(&ip(a(OTHER), a(ME), 47, &[0; 8]), t),
        Verdict::Drop(DropReason::NoRule)
    );
    // IPv6
    let v6 = ip(a("fd00::2"), a("fd00::1"), TCP, &tcp(5, 22, SYN));
    assert_eq!(f.inbound(&v6, t), Verdict::Rule(0));
    let v6bad = ip(a("fd00::9"), a("fd00::1"), TCP, &tcp(5, 22, SYN));
    assert_eq!(f.inbound(&v6bad, t), Verdict::Drop(DropReason::NoRule));
    assert_eq!(
        f.inbound(&ip(a("fd00::2"), a("fd00::1"), ICMP6, &icmp(128, 1)), t),
        Verdict::Drop(DropReason::NoRule)
    );
    let c = f.counters();
    assert_eq!((c.accepted_rule, c.dropped_no_rule), (6, 6));
}

#[test]
fn replies_to_own_flows_pass_and_unsolicited_do_not() {
    let mut f = Filter::new(vec![]);
    let t = Instant::now();
    // unsolicited
    assert_eq!(
        f.inbound(&tcp_in(PEER, 443, 50000, SYN | ACK), t),
        Verdict::Drop(DropReason::NoRule)
    );
    f.outbound(&ip(a(ME), a(PEER), TCP, &tcp(50000, 443, SYN)), t);
    assert_eq!(
        f.inbound(&tcp_in(PEER, 443, 50000, SYN | ACK), t),
        Verdict::Reply
    );
    // same remote, other port: not a reply
    assert_eq!(
        f.inbound(&tcp_in(PEER, 443, 50001, ACK), t),
        Verdict::Drop(DropReason::NoRule)
    );
    // another peer cannot ride on the flow
    assert_eq!(
        f.inbound(&tcp_in(OTHER, 443, 50000, ACK), t),
        Verdict::Drop(DropReason::NoRule)
    );
    // udp and icmp echo
    f.outbound(&ip(a(ME), a(PEER), UDP, &udp(5353, 53)), t);
    assert_eq!(
        f.inbound(&ip(a(PEER), a(ME), UDP, &udp(53, 5353)), t),
        Verdict::Reply
    );
    f.outbound(&ip(a(ME), a(PEER), ICMP4, &icmp(8, 42)), t);
    assert_eq!(
        f.inbound(&ip(a(PEER), a(ME), ICMP4, &icmp(0, 42)), t),
        Verdict::Reply
    );
    assert_eq!(
        f.inbound(&ip(a(PEER), a(ME), ICMP4, &icmp(0, 43)), t),
        Verdict::Drop(DropReason::NoRule)
    );
    // an echo *request* from the peer is not a reply to ours
    assert_eq!(
        f.inbound(&ip(a(PEER), a(ME), ICMP4, &icmp(8, 42)), t),
        Verdict::Drop(DropReason::NoRule)
    );
    f.outbound(&ip(a("fd00::1"), a("fd00::2"), ICMP6, &icmp(128, 9)), t);
    assert_eq!(
        f.inbound(&ip(a("fd00::2"), a("fd00::1"), ICMP6, &icmp(129, 9)), t),
        Verdict::Reply
    );
    // an outbound ACK of a flow the peer opened does not open state
    f.outbound(&ip(a(ME), a(PEER), TCP, &tcp(22, 40000, ACK)), t);
    assert_eq!(
        f.inbound(&tcp_in(PEER, 40000, 22, ACK), t),
        Verdict::Drop(DropReason::NoRule)
    );
}

#[test]
fn icmp_errors_about_own_flows_pass() {
    let mut f = Filter::new(vec![]);
    let t = Instant::now();
    let sent = ip(a(ME), a(PEER), UDP, &udp(5000, 9999));
    let mut err = icmp(3, 0);
    err[4..8].copy_from_slice(&[0, 0, 5, 0x78]);
    err.extend_from_slice(&sent[..28]);
    let pkt = ip(a(PEER), a(ME), ICMP4, &err);
    assert_eq!(
        f.inbound(&pkt, t),
        Verdict::Drop(DropReason::NoRule),
        "no flow yet"
    );
    f.outbound(&sent, t);
    assert_eq!(f.inbound(&pkt, t), Verdict::Reply);
}

#[test]
fn flows_expire_on_a_virtual_clock() {
    let mut f = Filter::new(vec![]);
    let t0 = Instant::now();
    let reply_udp = ip(a(PEER), a(ME), UDP, &udp(53, 5353));
    f.outbound(&ip(a(ME), a(PEER), UDP, &udp(5353, 53)), t0);
    assert_eq!(
        f.inbound(&reply_udp, t0 + Duration::from_secs(119)),
        Verdict::Reply
    );
    // the reply refreshed the flow
    assert_eq!(
        f.inbound(&reply_udp, t0 + Duration::from_secs(200)),
        Verdict::Reply
    );
    assert_eq!(
        f.inbound(&reply_udp, t0 + Duration::from_secs(321)),
        Verdict::Drop(DropReason::NoRule)
    );

    f.outbound(&ip(a(ME), a(PEER), ICMP4, &icmp(8, 1)), t0);
    assert_eq!(
        f.inbound(
            &ip(a(PEER), a(ME), ICMP4, &icmp(0, 1)),
            t0 + Duration::from_secs(31)
        ),
        Verdict::Drop(DropReason::NoRule)
    );

    // TCP: established lasts hours, after FIN a minute, after RST seconds
    let open = |f: &mut Filter, port: u16, t| {
        f.outbound(&ip(a(ME), a(PEER), TCP, &tcp(port, 443, SYN)), t);
        assert_eq!(
            f.inbound(&tcp_in(PEER, 443, port, SYN | ACK), t),
            Verdict::Reply
        );
    };
    open(&mut f, 1000, t0);
    assert_eq!(
        f.inbound(
            &tcp_in(PEER, 443, 1000, ACK),
            t0 + Duration::from_secs(7000)
        ),
        Verdict::Reply
    );
    assert_eq!(
        f.inbound(
            &tcp_in(PEER, 443, 1000, ACK),
            t0 + Duration::from_secs(7000 + 7201)
        ),
        Verdict::Drop(DropReason::NoRule)
    );
    open(&mut f, 1001, t0);
    f.outbound(&ip(a(ME), a(PEER), TCP, &tcp(1001, 443, FIN | ACK)), t0);
    assert_eq!(
        f.inbound(&tcp_in(PEER, 443, 1001, ACK), t0 + Duration::from_secs(30)),
        Verdict::Reply
    );
    assert_eq!(
        f.inbound(&tcp_in(PEER, 443, 1001, ACK), t0 + Duration::from_secs(100)),
        Verdict::Drop(DropReason::NoRule)
    );
    open(&mut f, 1002, t0);
    assert_eq!(f.inbound(&tcp_in(PEER, 443, 1002, RST), t0), Verdict::Reply);
    assert_eq!(
        f.inbound(&tcp_in(PEER, 443, 1002, ACK), t0 + Duration::from_secs(11)),
        Verdict::Drop(DropReason::NoRule)
    );
}

#[test]
fn set_rules_keeps_conntrack() {
    let mut f = Filter::new(rules());
    let t = Instant::now();
    f.outbound(&ip(a(ME), a(PEER), TCP, &tcp(50000, 443, SYN)), t);
    f.set_rules(vec![]);
    assert_eq!(
        f.inbound(&tcp_in(PEER, 443, 50000, SYN | ACK), t),
        Verdict::Reply
    );
    assert_eq!(
        f.inbound(&tcp_in(PEER, 40000, 22, SYN), t),
        Verdict::Drop(DropReason::NoRule),
        "rule removed"
    );
}

#[test]
fn table_is_bounded() {
    let cfg = FilterConfig {
        max_flows: 64,
        ..FilterConfig::default()
    };
    let mut f = Filter::with_config(vec![], cfg);
    let t = Instant::now();
    for p in 0..1000u16 {
        f.outbound(
            &ip(a(ME), a(PEER), UDP, &udp(10000 + p, 53)),
            t + Duration::from_millis(p as u64),
        );
        assert!(f.tracked_flows() <= 64);
    }
    // the newest flow survives, the oldest was evicted
    assert_eq!(
        f.inbound(
            &ip(a(PEER), a(ME), UDP, &udp(53, 10999)),
            t + Duration::from_secs(1)
        ),
        Verdict::Reply
    );
    assert_eq!(
        f.inbound(
            &ip(a(PEER), a(ME), UDP, &udp(53, 10000)),
            t + Duration::from_secs(1)
        ),
        Verdict::Drop(DropReason::NoRule)
    );
    assert!(f.counters().flows_evicted > 0);
}

#[test]
fn fragments_follow_their_first() {
    let mut f = Filter::new(rules());
    let t = Instant::now();
    let frag = |src: &str, id: u8, first: bool| {
        let mut p = ip(a(src), a(ME), TCP, &tcp(40000, 22, SYN));
        p[5] = id;
        if first {
            p[6] = 0x20;
        } else {
            p[6] = 0x00;
            p[7] = 0x08;
        }
        p
    };
    assert_eq!(
        f.inbound(&frag(PEER, 1, false), t),
        Verdict::Drop(DropReason::Fragment),
        "no first seen"
    );
    assert_eq!(f.inbound(&frag(PEER, 2, true), t), Verdict::Rule(0));
    assert_eq!(f.inbound(&frag(PEER, 2, false), t), Verdict::Fragment);
    assert_eq!(
        f.inbound(&frag(PEER, 2, false), t + Duration::from_secs(31)),
        Verdict::Drop(DropReason::Fragment)
    );
    assert_eq!(
        f.inbound(&frag(OTHER, 3, true), t),
        Verdict::Drop(DropReason::NoRule)
    );
    assert_eq!(
        f.inbound(&frag(OTHER, 3, false), t),
        Verdict::Drop(DropReason::Fragment)
    );
}

#[test]
fn denied_flows_are_rate_limited_per_source() {
    let mut f = Filter::new(vec![]);
    let t = Instant::now();
    for i in 0..100u16 {
        f.inbound(&tcp_in(PEER, 1000 + i, 80, SYN), t);
        f.inbound(&tcp_in(OTHER, 1000 + i, 81, SYN), t);
    }
    let mut got = Vec::new();
    while let Some(d) = f.poll_denied() {
        got.push(d);
    }
    assert_eq!(got.len(), 10, "5 per source per second");
    assert_eq!(
        got[0],
        DeniedFlow {
            src: a(PEER),
            dst: a(ME),
            proto: TCP,
            src_port: 1000,
            dst_port: 80,
            reason: DropReason::NoRule,
            at: t
        }
    );
    assert_eq!(f.counters().denied_suppressed, 190);
    assert_eq!(f.counters().dropped_no_rule, 200);
    f.inbound(&tcp_in(PEER, 1, 80, SYN), t + Duration::from_millis(1001));
    assert!(f.poll_denied().is_some(), "a new second, a new budget");
}

#[test]
fn malformed_packets_are_dropped() {
    let mut f = Filter::new(rules());
    let t = Instant::now();
    let good = tcp_in(PEER, 40000, 22, SYN);
    for n in 0..good.len() {
        assert_eq!(
            f.inbound(&good[..n], t),
            Verdict::Drop(DropReason::Malformed),
            "truncated to {n}"
        );
        f.outbound(&good[..n], t);
    }
    let mut bad_len = good.clone();
    bad_len[2] = 0xff;
    assert_eq!(f.inbound(&bad_len, t), Verdict::Drop(DropReason::Malformed));
    let mut bad_ihl = good.clone();
    bad_ihl[0] = 0x44;
    assert_eq!(f.inbound(&bad_ihl, t), Verdict::Drop(DropReason::Malformed));
    assert_eq!(
        f.inbound(&[0x70, 0, 0, 0], t),
        Verdict::Drop(DropReason::Malformed)
    );
    assert_eq!(f.counters().dropped_malformed, good.len() as u64 + 3);
}

/// A subnet router: rules meant for the device itself never let a packet through to
/// another address, and forwarding rules only to their destination prefixes.
#[test]
fn forwarding_needs_a_rule_with_that_destination() {
    let mut r = rules();
    r.push(FilterRule {
        dst: vec!["10.1.0.0/24".parse().unwrap()],
        src: vec!["100.64.0.2/32".parse().unwrap()],
        proto: Proto::Tcp,
        ports: vec![PortRange::one(80)],
        rule: 7,
    });
    let mut f = Filter::new(r);
    f.set_own_addrs(vec![a(ME), a("fd00::1")]);
    let t = Instant::now();
    let to = |dst: &str, dport| ip(a(PEER), a(dst), TCP, &tcp(40000, dport, SYN));
    assert_eq!(f.inbound(&to(ME, 22), t), Verdict::Rule(0));
    assert_eq!(f.inbound(&to("10.1.0.5", 80), t), Verdict::Rule(7));
    assert_eq!(
        f.inbound(&to("10.1.0.5", 22), t),
        Verdict::Drop(DropReason::NoRule),
        "rule 0 allows port 22 to the router itself, not beyond it"
    );
    assert_eq!(
        f.inbound(&to("10.2.0.5", 80), t),
        Verdict::Drop(DropReason::NoRule),
        "outside the forwarding rule's prefix"
    );
    assert_eq!(
        f.inbound(&to(ME, 80), t),
        Verdict::Drop(DropReason::NoRule),
        "a forwarding rule does not open the router itself"
    );
}
