//! Flow accounting with a virtual clock: summaries of flows this device opened and of
//! flows peers opened through a rule, periodic and final records, and the bounds that
//! keep peers from pushing our own flows out of the table.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use zmesh_shared::policy::{FilterRule, PortRange, Proto};

use super::packet::build::*;
use super::packet::{ACK, FIN, ICMP4, SYN, TCP, UDP};
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
            src: vec!["100.64.0.2/32".parse().unwrap()],
            proto: Proto::Tcp,
            ports: vec![PortRange::one(22)],
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
            proto: Proto::Udp,
            ports: vec![PortRange::one(53)],
            rule: 5,
        },
    ]
}

fn secs(t: Instant, s: u64) -> Instant {
    t + Duration::from_secs(s)
}

fn drain(f: &mut Filter, now: Instant) -> Vec<FlowSummary> {
    let mut v = vec![];
    while let Some(s) = f.poll_flow_summary(now) {
        v.push(s);
        assert!(v.len() < 100_000, "summary queue must be bounded");
    }
    v
}

const TCP_LEN: u64 = 40;

#[test]
fn a_flow_we_open_is_summarized_when_it_closes() {
    let mut f = Filter::new(vec![]);
    let t = Instant::now();
    let out = |flags| ip(a(ME), a(PEER), TCP, &tcp(50000, 443, flags));
    let inp = |flags| ip(a(PEER), a(ME), TCP, &tcp(443, 50000, flags));
    f.outbound(&out(SYN), t);
    assert_eq!(f.inbound(&inp(SYN | ACK), t), Verdict::Reply);
    f.outbound(&out(ACK), t);
    for i in 0..5 {
        f.outbound(&out(ACK), secs(t, 1 + i));
        assert_eq!(f.inbound(&inp(ACK), secs(t, 1 + i)), Verdict::Reply);
    }
    // nothing is due while the flow is open and younger than the report interval
    assert!(drain(&mut f, secs(t, 6)).is_empty());
    f.outbound(&out(FIN | ACK), secs(t, 7));
    assert_eq!(f.inbound(&inp(FIN | ACK), secs(t, 7)), Verdict::Reply);
    f.outbound(&out(ACK), secs(t, 7));
    let s = drain(&mut f, secs(t, 17));
    assert_eq!(s.len(), 1, "{s:?}");
    let s = &s[0];
    assert_eq!(s.origin, Origin::Local);
    assert!(s.ended);
    assert_eq!(s.endpoints(), (a(ME), 50000, a(PEER), 443));
    assert_eq!((s.tx_packets, s.rx_packets), (9, 7));
    assert_eq!((s.tx_bytes, s.rx_bytes), (9 * TCP_LEN, 7 * TCP_LEN));
    assert_eq!(s.first_seen, t);
    assert_eq!(s.last_seen, secs(t, 7));
    // reported once: the closed flow stays tracked for stragglers but has nothing new
    assert!(drain(&mut f, secs(t, 200)).is_empty());
}

#[test]
fn a_flow_a_peer_opens_is_reported_periodically_with_its_rule() {
    let mut f = Filter::new(rules());
    let t = Instant::now();
    let inp = |flags| ip(a(PEER), a(ME), TCP, &tcp(40000, 22, flags));
    let out = |flags| ip(a(ME), a(PEER), TCP, &tcp(22, 40000, flags));
    assert_eq!(f.inbound(&inp(SYN), t), Verdict::Rule(0));
    f.outbound(&out(SYN | ACK), t);
    // 100 s of traffic, one exchange a second
    let mut got = vec![];
    for i in 1..=100 {
        assert_eq!(f.inbound(&inp(ACK), secs(t, i)), Verdict::Rule(0));
        f.outbound(&out(ACK), secs(t, i));
        got.extend(drain(&mut f, secs(t, i)));
    }
    assert!(
        (2..=4).contains(&got.len()),
        "one summary per ~30 s of activity: {got:?}"
    );
    for (i, s) in got.iter().enumerate() {
        assert_eq!(s.origin, Origin::Peer(0));
        assert!(!s.ended);
        assert_eq!(s.endpoints(), (a(PEER), 40000, a(ME), 22));
        assert!(s.last_seen.duration_since(s.first_seen) <= Duration::from_secs(40));
        if i > 0 {
            assert!(
                s.first_seen > got[i - 1].last_seen,
                "intervals do not overlap"
            );
        }
    }
    // the rest comes when the flow expires (idle established TCP: 2 h)
    got.extend(drain(&mut f, secs(t, 100 + 7300)));
    let last = got.last().unwrap();
    assert!(last.ended);
    let rx: u64 = got.iter().map(|s| s.rx_packets).sum();
    let tx: u64 = got.iter().map(|s| s.tx_packets).sum();
    assert_eq!((rx, tx), (101, 101), "every packet counted exactly once");
    assert_eq!(
        got.iter().map(|s| s.rx_bytes + s.tx_bytes).sum::<u64>(),
        202 * TCP_LEN
    );
    assert_eq!(f.tracked_flows(), 0);
}

#[test]
fn accounting_a_peer_flow_opens_no_hole() {
    let mut f = Filter::new(rules());
    let t = Instant::now();
    let inp = ip(a(OTHER), a(ME), UDP, &udp(5353, 53));
    assert_eq!(f.inbound(&inp, t), Verdict::Rule(5));
    // our answer is accounted on the peer's flow, not turned into a flow of ours
    f.outbound(&ip(a(ME), a(OTHER), UDP, &udp(53, 5353)), t);
    f.outbound(&ip(a(ME), a(PEER), TCP, &tcp(22, 40000, ACK)), t);
    f.set_rules(vec![]);
    assert_eq!(f.inbound(&inp, t), Verdict::Drop(DropReason::NoRule));
    assert_eq!(
        f.inbound(&ip(a(PEER), a(ME), TCP, &tcp(40000, 22, ACK)), t),
        Verdict::Drop(DropReason::NoRule)
    );
    let s = drain(&mut f, secs(t, 200));
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].origin, Origin::Peer(5));
    assert_eq!((s[0].rx_packets, s[0].tx_packets), (1, 1));
    assert!(s[0].ended);
}

#[test]
fn pings_both_ways_name_the_pinger() {
    let mut f = Filter::new(rules());
    let t = Instant::now();
    // the peer pings us (id 7), we ping the peer with the same id
    assert_eq!(
        f.inbound(&ip(a(PEER), a(ME), ICMP4, &icmp(8, 7)), t),
        Verdict::Rule(3)
    );
    f.outbound(&ip(a(ME), a(PEER), ICMP4, &icmp(0, 7)), t);
    f.outbound(&ip(a(ME), a(PEER), ICMP4, &icmp(8, 7)), t);
    assert_eq!(
        f.inbound(&ip(a(PEER), a(ME), ICMP4, &icmp(0, 7)), t),
        Verdict::Reply
    );
    let mut s = drain(&mut f, secs(t, 60));
    s.sort_by_key(|s| s.origin != Origin::Local);
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[0].origin, Origin::Local);
    assert_eq!(s[0].endpoints(), (a(ME), 7, a(PEER), 0));
    assert_eq!(s[1].origin, Origin::Peer(3));
    assert_eq!(s[1].endpoints(), (a(PEER), 7, a(ME), 0));
    for x in &s {
        assert_eq!((x.rx_packets, x.tx_packets), (1, 1));
        assert_eq!(x.rx_bytes, 28);
    }
}

#[test]
fn peers_cannot_push_our_flows_out_and_summaries_are_bounded() {
    let cfg = FilterConfig {
        max_flows: 64,
        max_flow_summaries: 100,
        ..FilterConfig::default()
    };
    let mut f = Filter::with_config(rules(), cfg);
    let t = Instant::now();
    for p in 0..10u16 {
        f.outbound(&ip(a(ME), a(PEER), UDP, &udp(10000 + p, 53)), t);
    }
    for p in 0..1000u16 {
        let now = t + Duration::from_millis(p as u64);
        let v = f.inbound(&ip(a(OTHER), a(ME), UDP, &udp(20000 + p, 53)), now);
        assert_eq!(v, Verdict::Rule(5));
        assert!(f.tracked_flows() <= 64);
    }
    for p in 0..10u16 {
        assert_eq!(
            f.inbound(&ip(a(PEER), a(ME), UDP, &udp(53, 10000 + p)), secs(t, 2)),
            Verdict::Reply,
            "our flow {p} survived"
        );
    }
    let c = f.counters();
    assert!(c.flows_evicted > 0);
    assert!(c.flow_summaries_dropped > 0, "{c:?}");
    let s = drain(&mut f, secs(t, 2));
    assert_eq!(s.len(), 100);
    assert!(s.iter().all(|s| s.ended && s.origin == Origin::Peer(5)));
}
