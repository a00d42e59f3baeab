//! Fuzz target: the agent's inbound packet filter with connection tracking
//! (`zmesh_agent::filter`), driven directly (the `datagram` target reaches it only through
//! a WireGuard tunnel, a thousand times slower).
//!
//! The input is a script: packets this device sends (tracked as its own flows), packets
//! a peer sends (judged), replies made from an earlier outbound packet by swapping its
//! addresses and ports, clock steps and queue drains, against small table limits so
//! eviction and rate limiting are reached. Never a panic; the flow table stays within
//! its limit; a packet accepted by a rule is one that rule, as the policy compiler
//! wrote it, accepts (the filter's own rule matcher is checked against the shared one).

#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use zmesh_agent::filter::packet::{self, ICMP4, ICMP6, TCP, UDP};
use zmesh_agent::filter::{Filter, FilterConfig, Verdict};
use zmesh_shared::policy::{FilterRule, PortRange, Proto};

const MAX_OPS: usize = 64;
/// The smallest flow table conntrack allows (it raises smaller limits to 16).
const MAX_FLOWS: usize = 16;
const MAX_PKT: usize = 1500;

fn rules() -> &'static [FilterRule] {
    static R: OnceLock<Vec<FilterRule>> = OnceLock::new();
    R.get_or_init(|| {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        vec![
            FilterRule { dst: Vec::new(),
                src: vec![net("100.64.0.0/30"), net("fd00::/126")],
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
            FilterRule { dst: Vec::new(),
                src: vec![net("100.64.0.9/32")],
                proto: Proto::Udp,
                ports: vec![PortRange::one(53)],
                rule: 1,
            },
            FilterRule { dst: Vec::new(),
                src: vec![net("0.0.0.0/0"), net("::/0")],
                proto: Proto::Icmp,
                ports: vec![PortRange::ALL],
                rule: 2,
            },
            FilterRule { dst: Vec::new(),
                src: vec![net("100.64.1.0/24")],
                proto: Proto::Any,
                ports: vec![PortRange::ALL],
                rule: 7,
            },
        ]
    })
}

/// Reads the script; past the end every read is zero.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn bytes(&mut self) -> &[u8] {
        let n = (u16::from_be_bytes([self.u8(), self.u8()]) as usize)
            .min(MAX_PKT)
            .min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
}

/// The reply a peer would send to `pkt`: addresses and ports swapped.
fn reply_to(pkt: &[u8]) -> Option<Vec<u8>> {
    let p = packet::parse(pkt, false)?;
    let mut r = pkt.to_vec();
    let l4 = match (p.src, p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            r[12..16].copy_from_slice(&d.octets());
            r[16..20].copy_from_slice(&s.octets());
            usize::from(r[0] & 0x0f) * 4
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            r[8..24].copy_from_slice(&d.octets());
            r[24..40].copy_from_slice(&s.octets());
            40
        }
        _ => return None,
    };
    if matches!(p.proto, TCP | UDP) && r.len() >= l4 + 4 {
        r[l4..l4 + 2].copy_from_slice(&p.dport.to_be_bytes());
        r[l4 + 2..l4 + 4].copy_from_slice(&p.sport.to_be_bytes());
    }
    if matches!(p.proto, ICMP4 | ICMP6) && r.len() > l4 {
        // Echo request -> echo reply.
        r[l4] = match r[l4] {
            8 => 0,
            128 => 129,
            t => t,
        };
    }
    Some(r)
}

fuzz_target!(|data: &[u8]| {
    let cfg = FilterConfig {
        max_flows: MAX_FLOWS,
        denied_per_source_per_sec: 2,
        max_denied_queue: 4,
        max_fragments: 4,
        flow_report_every: Duration::from_secs(5),
        max_flow_summaries: 4,
        ..FilterConfig::default()
    };
    let mut f = Filter::with_config(rules().to_vec(), cfg);
    let mut now = Instant::now();
    let mut sent: Vec<Vec<u8>> = vec![];
    let mut s = Script(data);
    for _ in 0..MAX_OPS {
        if s.0.is_empty() {
            break;
        }
        match s.u8() % 5 {
            0 => {
                let pkt = s.bytes().to_vec();
                f.outbound(&pkt, now);
                if sent.len() < 16 {
                    sent.push(pkt);
                }
            }
            1 => {
                let pkt = s.bytes().to_vec();
                judge(&mut f, &pkt, now);
            }
            2 => {
                if sent.is_empty() {
                    continue;
                }
                let i = s.u8() as usize % sent.len();
                if let Some(mut r) = reply_to(&sent[i]) {
                    // Optionally one byte changed: near-miss replies.
                    let (at, x) = (s.u8() as usize, s.u8());
                    if x != 0 && !r.is_empty() {
                        let n = r.len();
                        r[at % n] ^= x;
                    }
                    judge(&mut f, &r, now);
                }
            }
            3 => now += Duration::from_millis(u64::from(s.u8()) * 250),
            _ => {
                while f.poll_denied().is_some() {}
                while f.poll_flow_summary(now).is_some() {}
            }
        }
        assert!(f.tracked_flows() <= MAX_FLOWS, "flow table over its limit");
    }
    let _ = f.counters();
});

fn judge(f: &mut Filter, pkt: &[u8], now: Instant) {
    let v = f.inbound(pkt, now);
    let Verdict::Rule(r) = v else {
        return;
    };
    let p = packet::parse(pkt, false).expect("accepted a packet that does not parse");
    let (proto, port) = match p.proto {
        TCP => (Proto::Tcp, p.dport),
        UDP => (Proto::Udp, p.dport),
        ICMP4 | ICMP6 => (Proto::Icmp, 0),
        _ => (Proto::Any, 0),
    };
    let rule = rules()
        .iter()
        .find(|x| x.rule == r)
        .expect("verdict names no rule");
    assert!(
        rule.accepts(p.src, proto, port),
        "rule {r} accepted {:?} {proto:?}/{port}, the policy's rule does not",
        p.src
    );
}
