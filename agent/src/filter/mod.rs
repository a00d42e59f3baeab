//! The inbound packet filter: the receiver-side half of "default deny". Every
//! decrypted packet a peer sends is checked before it is written to the TUN: it passes
//! if a compiled [`FilterRule`] accepts it, or if it answers a flow this device opened
//! itself (see [`conntrack`]). Everything else is dropped, counted by reason, and
//! reported as rate-limited [`DeniedFlow`] records for audit. Accepted flows (ours and
//! the ones peers open through a rule) are accounted in the conntrack table and leave as
//! [`FlowSummary`] records through [`Filter::poll_flow_summary`].
//!
//! Sans-IO: the caller passes packets and `now`; nothing here reads a clock or a socket.
//!
//! Fragments: a non-first fragment carries no ports, so it cannot be judged by itself.
//! It is accepted only if the first fragment of the same datagram (source, destination,
//! protocol, fragment id) was accepted within the last 30 s; otherwise it is dropped
//! (a first fragment arriving after its followers thus loses the datagram).

pub mod conntrack;
pub mod packet;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use zmesh_shared::policy::{is_all_ports, FilterRule, PortRange, Proto};

use conntrack::{ConnTrack, Inbound, Timeouts};
pub use conntrack::{FlowKey, FlowSummary, Origin};
use packet::{Frag, Icmp, Pkt, ICMP4, ICMP6, TCP, UDP};

#[derive(Debug, Clone)]
pub struct FilterConfig {
    /// Most tracked outbound flows; beyond it the flows closest to expiry are evicted.
    pub max_flows: usize,
    pub timeouts: Timeouts,
    /// Most `DeniedFlow` records per source address per second.
    pub denied_per_source_per_sec: u32,
    /// Most records waiting in [`Filter::poll_denied`]'s queue.
    pub max_denied_queue: usize,
    /// Most first fragments remembered.
    pub max_fragments: usize,
    /// Longest interval one summary of an active accepted flow covers.
    pub flow_report_every: Duration,
    /// Most flow summaries waiting in [`Filter::poll_flow_summary`]'s queue.
    pub max_flow_summaries: usize,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            max_flows: 65_536,
            timeouts: Timeouts::default(),
            denied_per_source_per_sec: 5,
            max_denied_queue: 1024,
            max_fragments: 4096,
            flow_report_every: Duration::from_secs(30),
            max_flow_summaries: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted by the policy rule with this index.
    Rule(u32),
    /// Answers a flow this device opened (or is an ICMP error about one).
    Reply,
    /// A later fragment of an accepted datagram.
    Fragment,
    Drop(DropReason),
}

impl Verdict {
    pub fn accepted(&self) -> bool {
        !matches!(self, Verdict::Drop(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not a well-formed IPv4/IPv6 packet.
    Malformed,
    /// No rule accepts it and it answers nothing.
    NoRule,
    /// A later fragment whose first fragment was not accepted.
    Fragment,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub accepted_rule: u64,
    pub accepted_reply: u64,
    pub accepted_fragment: u64,
    pub dropped_malformed: u64,
    pub dropped_no_rule: u64,
    pub dropped_fragment: u64,
    /// Denied flows not reported because of the rate limit or a full queue.
    pub denied_suppressed: u64,
    /// Tracked flows evicted because the table was full.
    pub flows_evicted: u64,
    /// Flow summaries lost because their queue was full.
    #[serde(default)]
    pub flow_summaries_dropped: u64,
}

/// A denied inbound packet, for the audit log. Ports are 0 when the protocol has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedFlow {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6, ...).
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub reason: DropReason,
    pub at: Instant,
}

/// Sorted, disjoint IPv4 and IPv6 address ranges.
type Ranges = (Vec<(u32, u32)>, Vec<(u128, u128)>);

/// A filter rule with its sources as sorted, disjoint address ranges for binary search.
struct Compiled {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    /// `None`: packets to this device itself. `Some`: forwarded packets (subnet router,
    /// exit node) to these destination ranges.
    dst: Option<Ranges>,
    proto: Proto,
    ports: Vec<PortRange>,
    all_ports: bool,
    rule: u32,
}

fn ranges<T: Ord + Copy>(mut v: Vec<(T, T)>) -> Vec<(T, T)> {
    v.sort();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(l) if a <= l.1 => l.1 = l.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn in_ranges<T: Ord + Copy>(r: &[(T, T)], x: T) -> bool {
    let i = r.partition_point(|(a, _)| *a <= x);
    i > 0 && x <= r[i - 1].1
}

impl Compiled {
    fn new(f: &FilterRule) -> Self {
        let (v4, v6) = net_ranges(&f.src);
        Compiled {
            v4,
            v6,
            dst: (!f.dst.is_empty()).then(|| net_ranges(&f.dst)),
            proto: f.proto,
            all_ports: is_all_ports(&f.ports),
            ports: f.ports.clone(),
            rule: f.rule,
        }
    }

    /// `own`: whether the packet is addressed to this device (else it would be
    /// forwarded, which only rules with a destination allow).
    fn accepts(&self, p: &Pkt, own: bool) -> bool {
        let dst_ok = match (&self.dst, own) {
            (None, own) => own,
            (Some(_), true) => false,
            (Some((v4, v6)), false) => in_net(v4, v6, p.dst),
        };
        if !dst_ok {
            return false;
        }
        let port_ok = || self.ports.iter().any(|r| r.contains(p.dport));
        let proto_ok = match (self.proto, p.proto) {
            (Proto::Any, TCP | UDP) => port_ok(),
            (Proto::Any, _) => self.all_ports,
            (Proto::Tcp, TCP) | (Proto::Udp, UDP) => port_ok(),
            (Proto::Icmp, ICMP4 | ICMP6) => true,
            _ => false,
        };
        proto_ok && in_net(&self.v4, &self.v6, p.src)
    }
}

fn net_ranges(nets: &[ipnet::IpNet]) -> Ranges {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for n in nets {
        match n {
            ipnet::IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
            ipnet::IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
        }
    }
    (ranges(v4), ranges(v6))
}

fn in_net(v4: &[(u32, u32)], v6: &[(u128, u128)], a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => in_ranges(v4, u32::from(a)),
        IpAddr::V6(a) => in_ranges(v6, u128::from(a)),
    }
}

const FRAGMENT_TTL: Duration = Duration::from_secs(30);

pub struct Filter {
    rules: Vec<Compiled>,
    /// This device's addresses: rules without a destination accept packets to these
    /// only, so a host that forwards (a router, a container host) never forwards what
    /// a rule meant for the device itself. `None` (tests of the rules alone): every
    /// destination counts as the device's own.
    own: Option<Vec<IpAddr>>,
    ct: ConnTrack,
    cfg: FilterConfig,
    counters: Counters,
    frags: HashMap<(IpAddr, IpAddr, u8, u32), Instant>,
    denied: VecDeque<DeniedFlow>,
    /// Per source: start of its current one-second window and records emitted in it.
    limiter: HashMap<IpAddr, (Instant, u32)>,
}

impl Filter {
    pub fn new(rules: Vec<FilterRule>) -> Self {
        Self::with_config(rules, FilterConfig::default())
    }

    pub fn with_config(rules: Vec<FilterRule>, cfg: FilterConfig) -> Self {
        Filter {
            rules: rules.iter().map(Compiled::new).collect(),
            own: None,
            ct: ConnTrack::with_reporting(
                cfg.max_flows,
                cfg.timeouts.clone(),
                cfg.flow_report_every,
                cfg.max_flow_summaries,
            ),
            cfg,
            counters: Counters::default(),
            frags: HashMap::new(),
            denied: VecDeque::new(),
            limiter: HashMap::new(),
        }
    }

    /// Replaces the rules; tracked outbound flows are kept, so a policy change does not
    /// cut connections this device opened.
    pub fn set_rules(&mut self, rules: Vec<FilterRule>) {
        self.rules = rules.iter().map(Compiled::new).collect();
    }

    /// Sets this device's own addresses (see the `own` field).
    pub fn set_own_addrs(&mut self, own: Vec<IpAddr>) {
        self.own = Some(own);
    }

    /// Records a packet read from the TUN that is about to be sent to a peer.
    pub fn outbound(&mut self, pkt: &[u8], now: Instant) {
        if let Some(p) = packet::parse(pkt, false) {
            if !matches!(p.frag, Frag::Later(_)) {
                self.ct.outbound(&p, pkt.len(), now);
            }
        }
    }

    /// Judges a decrypted packet from a peer.
    pub fn inbound(&mut self, pkt: &[u8], now: Instant) -> Verdict {
        self.inbound_parsed(pkt, packet::parse(pkt, false).as_ref(), now)
    }

    /// [`inbound`](Self::inbound) for a packet already parsed by
    /// [`crate::ip::parse`] (`None`: it did not parse, and is dropped as malformed).
    pub fn inbound_parsed(&mut self, pkt: &[u8], parsed: Option<&Pkt>, now: Instant) -> Verdict {
        let v = self.judge(pkt, parsed, now);
        let c = &mut self.counters;
        match v {
            Verdict::Rule(_) => c.accepted_rule += 1,
            Verdict::Reply => c.accepted_reply += 1,
            Verdict::Fragment => c.accepted_fragment += 1,
            Verdict::Drop(DropReason::Malformed) => c.dropped_malformed += 1,
            Verdict::Drop(DropReason::NoRule) => c.dropped_no_rule += 1,
            Verdict::Drop(DropReason::Fragment) => c.dropped_fragment += 1,
        }
        v
    }

    fn judge(&mut self, pkt: &[u8], parsed: Option<&Pkt>, now: Instant) -> Verdict {
        let Some(p) = parsed else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if let Frag::Later(id) = p.frag {
            let key = (p.src, p.dst, p.proto, id);
            return match self.frags.get(&key) {
                Some(t) if *t > now => Verdict::Fragment,
                _ => {
                    self.deny(p, DropReason::Fragment, now);
                    Verdict::Drop(DropReason::Fragment)
                }
            };
        }
        // Later fragments are not accounted: they carry no ports to find their flow by.
        let rules = &self.rules;
        let own = self.own.as_ref().is_none_or(|o| o.contains(&p.dst));
        let find = |p: &Pkt| rules.iter().find(|r| r.accepts(p, own)).map(|r| r.rule);
        let v = match self.ct.inbound(p, pkt.len(), now, find) {
            Inbound::Reply => Some(Verdict::Reply),
            Inbound::Rule(r) => Some(Verdict::Rule(r)),
            Inbound::NoMatch => None,
            Inbound::Untracked if self.related_error(pkt, p, now) => Some(Verdict::Reply),
            Inbound::Untracked => find(p).map(Verdict::Rule),
        };
        let Some(v) = v else {
            self.deny(p, DropReason::NoRule, now);
            return Verdict::Drop(DropReason::NoRule);
        };
        if let Frag::First(id) = p.frag {
            if self.frags.len() >= self.cfg.max_fragments {
                self.frags.retain(|_, t| *t > now);
            }
            if self.frags.len() < self.cfg.max_fragments {
                self.frags
                    .insert((p.src, p.dst, p.proto, id), now + FRAGMENT_TTL);
            }
        }
        v
    }

    /// An ICMP error about a packet this device sent on a tracked flow (so path MTU
    /// discovery and "port unreachable" work for flows it opened).
    fn related_error(&self, pkt: &[u8], p: &Pkt, now: Instant) -> bool {
        let Some(Icmp::Error { quoted_at }) = p.icmp else {
            return false;
        };
        let Some(q) = pkt.get(quoted_at..).and_then(|b| packet::parse(b, true)) else {
            return false;
        };
        // The quoted packet went from us to the peer that reports on it, or beyond it.
        q.src == p.dst && self.ct.related(&q, now)
    }

    fn deny(&mut self, p: &Pkt, reason: DropReason, now: Instant) {
        tracing::trace!(src = %p.src, dst = %p.dst, proto = p.proto, dport = p.dport, ?reason, "inbound packet denied");
        let limit = self.cfg.denied_per_source_per_sec;
        if self.limiter.len() >= 4 * self.cfg.max_denied_queue && !self.limiter.contains_key(&p.src)
        {
            self.limiter
                .retain(|_, (t, _)| now.duration_since(*t) < Duration::from_secs(1));
        }
        let room = self.limiter.len() < 4 * self.cfg.max_denied_queue;
        let allowed = match self.limiter.get_mut(&p.src) {
            Some((start, n)) if now.duration_since(*start) < Duration::from_secs(1) => {
                *n += 1;
                *n <= limit
            }
            Some(slot) => {
                *slot = (now, 1);
                limit > 0
            }
            None if room => {
                self.limiter.insert(p.src, (now, 1));
                limit > 0
            }
            None => false,
        };
        if !allowed || self.denied.len() >= self.cfg.max_denied_queue {
            self.counters.denied_suppressed += 1;
            return;
        }
        self.denied.push_back(DeniedFlow {
            src: p.src,
            dst: p.dst,
            proto: p.proto,
            src_port: p.sport,
            dst_port: p.dport,
            reason,
            at: now,
        });
    }

    pub fn counters(&self) -> Counters {
        Counters {
            flows_evicted: self.ct.evicted,
            flow_summaries_dropped: self.ct.summaries_dropped,
            ..self.counters.clone()
        }
    }

    pub fn poll_denied(&mut self) -> Option<DeniedFlow> {
        self.denied.pop_front()
    }

    /// The next summary of accepted traffic: one per flow when it ends (expiry, eviction,
    /// FIN/RST) and one per `flow_report_every` of activity. Due summaries are found by
    /// a sweep every 10 s (driven by packets or by this call), never per packet.
    pub fn poll_flow_summary(&mut self, now: Instant) -> Option<FlowSummary> {
        self.ct.poll_summary(now)
    }

    /// Number of tracked flows (opened by this device or by peers through a rule).
    pub fn tracked_flows(&self) -> usize {
        self.ct.len()
    }
}

#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod tests;
