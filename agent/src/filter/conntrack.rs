//! Connection tracking and flow accounting. Flows this device opened (outbound TCP/UDP
//! 5-tuples and ICMP echo ids) let the peer's replies through the inbound filter; flows
//! a peer opened that a rule accepted are tracked too, but only for accounting: they
//! never let a packet through by themselves, so a removed rule cuts them. Each entry
//! counts packets and bytes both ways; summaries leave through a bounded queue when a
//! flow ends (expiry, eviction, FIN/RST) and every `report_every` of activity.
//! Sans-IO: time comes in as `now`, so tests drive it with a virtual clock.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::packet::{Icmp, Pkt, ACK, FIN, ICMP4, ICMP6, RST, SYN, TCP, UDP};

#[derive(Debug, Clone)]
pub struct Timeouts {
    /// TCP after the remote answered, idle.
    pub tcp_established: Duration,
    /// TCP before any answer (SYN sent).
    pub tcp_opening: Duration,
    /// TCP after a FIN was seen either way.
    pub tcp_closing: Duration,
    /// TCP after a RST.
    pub tcp_reset: Duration,
    pub udp: Duration,
    pub icmp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: Duration::from_secs(2 * 3600),
            tcp_opening: Duration::from_secs(60),
            tcp_closing: Duration::from_secs(60),
            tcp_reset: Duration::from_secs(10),
            udp: Duration::from_secs(120),
            icmp: Duration::from_secs(30),
        }
    }
}

/// A flow as seen from this device: local is the device's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub proto: u8,
    pub local: IpAddr,
    pub remote: IpAddr,
    /// Local port, or the ICMP echo id.
    pub lport: u16,
    /// Remote port; for ICMP echo 0 when this device pings, [`ECHO_BY_PEER`] when the
    /// peer does (echo ids of the two directions are separate spaces).
    pub rport: u16,
}

/// `rport` of an ICMP echo flow the peer opened.
pub const ECHO_BY_PEER: u16 = 1;

/// Who opened a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// This device: the peer's replies pass the filter.
    Local,
    /// The peer, accepted by the policy rule with this index.
    Peer(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Opening,
    Established,
    Closing,
    Reset,
    Datagram,
}

/// Traffic on a flow since its last summary.
#[derive(Debug, Clone, Copy, Default)]
struct Acct {
    /// First packet not yet reported; `None` when there is nothing to report.
    since: Option<Instant>,
    last: Option<Instant>,
    tx_packets: u64,
    tx_bytes: u64,
    rx_packets: u64,
    rx_bytes: u64,
}

impl Acct {
    fn count(&mut self, rx: bool, len: usize, now: Instant) {
        self.since.get_or_insert(now);
        self.last = Some(now);
        let (p, b) = if rx {
            (&mut self.rx_packets, &mut self.rx_bytes)
        } else {
            (&mut self.tx_packets, &mut self.tx_bytes)
        };
        *p += 1;
        *b += len as u64;
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: State,
    expires: Instant,
    origin: Origin,
    acct: Acct,
}

/// Traffic of one flow over one interval, from this device's side. A flow yields one
/// summary per reporting interval it was active in; the last has `ended` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSummary {
    pub key: FlowKey,
    pub origin: Origin,
    /// First and last packet of the interval.
    pub first_seen: Instant,
    pub last_seen: Instant,
    /// Sent by this device (IP packet lengths).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Received by this device.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// The flow closed, expired or was evicted.
    pub ended: bool,
}

impl FlowSummary {
    /// (opener address, opener port, responder address, responder port); for ICMP echo
    /// the port of the opener is the echo id and the responder's is 0.
    pub fn endpoints(&self) -> (IpAddr, u16, IpAddr, u16) {
        let k = &self.key;
        let icmp = k.proto == ICMP4 || k.proto == ICMP6;
        match self.origin {
            Origin::Local => (k.local, k.lport, k.remote, k.rport),
            Origin::Peer(_) if icmp => (k.remote, k.lport, k.local, 0),
            Origin::Peer(_) => (k.remote, k.rport, k.local, k.lport),
        }
    }
}

/// Result of looking up an inbound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Answers a live flow this device opened.
    Reply,
    /// Accepted by this rule (and accounted on a peer-opened flow).
    Rule(u32),
    /// Trackable, but neither a reply nor accepted by a rule.
    NoMatch,
    /// Not a trackable packet (ICMP error, other protocols): the caller decides.
    Untracked,
}

pub struct ConnTrack {
    map: HashMap<FlowKey, Entry>,
    max: usize,
    t: Timeouts,
    next_sweep: Option<Instant>,
    report_every: Duration,
    out: VecDeque<FlowSummary>,
    max_out: usize,
    pub evicted: u64,
    /// Summaries lost because the queue was full.
    pub summaries_dropped: u64,
}

const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// A closing TCP flow is summarized once it has been quiet this long, so the FIN
/// exchange lands in one summary.
const CLOSE_QUIET: Duration = Duration::from_secs(1);

fn icmp_proto(proto: u8) -> bool {
    proto == ICMP4 || proto == ICMP6
}

fn ttl(t: &Timeouts, proto: u8, s: State) -> Duration {
    if icmp_proto(proto) {
        return t.icmp;
    }
    match s {
        State::Opening => t.tcp_opening,
        State::Established => t.tcp_established,
        State::Closing => t.tcp_closing,
        State::Reset => t.tcp_reset,
        State::Datagram => t.udp,
    }
}

/// Queues the summary of `e`'s unreported traffic, if any, and clears it.
fn emit(
    out: &mut VecDeque<FlowSummary>,
    max_out: usize,
    dropped: &mut u64,
    key: &FlowKey,
    e: &mut Entry,
    ended: bool,
) {
    let a = std::mem::take(&mut e.acct);
    let (Some(first_seen), Some(last_seen)) = (a.since, a.last) else {
        return;
    };
    if out.len() >= max_out {
        *dropped += 1;
        return;
    }
    out.push_back(FlowSummary {
        key: *key,
        origin: e.origin,
        first_seen,
        last_seen,
        tx_packets: a.tx_packets,
        tx_bytes: a.tx_bytes,
        rx_packets: a.rx_packets,
        rx_bytes: a.rx_bytes,
        ended,
    });
}

impl ConnTrack {
    pub fn new(max: usize, t: Timeouts) -> Self {
        Self::with_reporting(max, t, Duration::from_secs(30), 4096)
    }

    /// `report_every`: longest interval one summary of an active flow covers;
    /// `max_out`: most summaries waiting to be polled.
    pub fn with_reporting(max: usize, t: Timeouts, report_every: Duration, max_out: usize) -> Self {
        ConnTrack {
            map: HashMap::new(),
            max: max.max(16),
            t,
            next_sweep: None,
            report_every,
            out: VecDeque::new(),
            max_out,
            evicted: 0,
            summaries_dropped: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every `SWEEP_EVERY`: drops expired flows and queues the summaries that are due
    /// (ended flows, quiet closing ones, intervals older than `report_every`). The hot
    /// path only bumps counters; all reporting work happens here.
    fn maybe_sweep(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|t| now < t) {
            return;
        }
        self.next_sweep = Some(now + SWEEP_EVERY);
        let every = self.report_every;
        let ConnTrack {
            map,
            out,
            max_out,
            summaries_dropped,
            ..
        } = self;
        map.retain(|k, e| {
            if e.expires <= now {
                emit(out, *max_out, summaries_dropped, k, e, true);
                return false;
            }
            let due = match (e.acct.since, e.acct.last) {
                (Some(since), Some(last)) => {
                    let closing = matches!(e.state, State::Closing | State::Reset);
                    now.duration_since(since) >= every
                        || (closing && now.duration_since(last) >= CLOSE_QUIET)
                }
                _ => false,
            };
            if due {
                let ended = matches!(e.state, State::Closing | State::Reset);
                emit(out, *max_out, summaries_dropped, k, e, ended);
            }
            true
        });
    }

    /// Removes flows for which `gone` holds, queueing their final summaries.
    fn remove_where(&mut self, gone: impl Fn(&Entry) -> bool) -> usize {
        let before = self.map.len();
        let ConnTrack {
            map,
            out,
            max_out,
            summaries_dropped,
            ..
        } = self;
        map.retain(|k, e| {
            if gone(e) {
                emit(out, *max_out, summaries_dropped, k, e, true);
                false
            } else {
                true
            }
        });
        before - self.map.len()
    }

    /// Makes room for one entry: expired ones first, then the eighth closest to expiry
    /// (a batch, so a full table of live flows does not cost a scan per packet). Flows
    /// peers opened go first: they only feed accounting, while evicting one this device
    /// opened would cut it; and peers must not be able to push ours out.
    fn make_room(&mut self, now: Instant) {
        if self.map.len() < self.max {
            return;
        }
        self.remove_where(|e| e.expires <= now);
        if self.map.len() < self.max {
            return;
        }
        let k = (self.max / 8).max(1);
        let mut peer: Vec<Instant> = self
            .map
            .values()
            .filter(|e| e.origin != Origin::Local)
            .map(|e| e.expires)
            .collect();
        let n = if !peer.is_empty() {
            let k = k.min(peer.len() - 1);
            let cut = *peer.select_nth_unstable(k).1;
            self.remove_where(|e| e.origin != Origin::Local && e.expires <= cut)
        } else {
            let mut exp: Vec<Instant> = self.map.values().map(|e| e.expires).collect();
            let k = k.min(exp.len() - 1);
            let cut = *exp.select_nth_unstable(k).1;
            self.remove_where(|e| e.expires <= cut)
        };
        self.evicted += n as u64;
    }

    /// Records a packet of `len` bytes leaving this device through the TUN.
    pub fn outbound(&mut self, p: &Pkt, len: usize, now: Instant) {
        self.maybe_sweep(now);
        let (lport, rport, opens) = match (p.proto, p.icmp) {
            (TCP | UDP, _) => (p.sport, p.dport, true),
            (ICMP4 | ICMP6, Some(Icmp::EchoRequest { id })) => (id, 0, true),
            (ICMP4 | ICMP6, Some(Icmp::EchoReply { id })) => (id, ECHO_BY_PEER, false),
            _ => return,
        };
        let key = FlowKey {
            proto: p.proto,
            local: p.src,
            remote: p.dst,
            lport,
            rport,
        };
        if let Some(e) = self.map.get_mut(&key) {
            if p.proto == TCP {
                e.state = match e.state {
                    _ if p.tcp_flags & RST != 0 => State::Reset,
                    _ if p.tcp_flags & FIN != 0 => State::Closing,
                    s => s,
                };
            }
            e.acct.count(false, len, now);
            e.expires = now + ttl(&self.t, p.proto, e.state);
            return;
        }
        if !opens {
            return;
        }
        let state = if p.proto == TCP {
            match () {
                _ if p.tcp_flags & RST != 0 => State::Reset,
                _ if p.tcp_flags & FIN != 0 => State::Closing,
                // Only a connection attempt opens state: an outbound packet of a flow the
                // peer opened must not punch a hole that outlives the rule allowing it.
                _ if p.tcp_flags & SYN != 0 && p.tcp_flags & ACK == 0 => State::Opening,
                _ => return,
            }
        } else {
            State::Datagram
        };
        self.make_room(now);
        let mut acct = Acct::default();
        acct.count(false, len, now);
        let expires = now + ttl(&self.t, p.proto, state);
        self.map.insert(
            key,
            Entry {
                state,
                expires,
                origin: Origin::Local,
                acct,
            },
        );
    }

    /// Judges an inbound packet of `len` bytes against the table: a reply to a live
    /// flow this device opened passes; otherwise `rule` (the policy) decides, and an
    /// accepted packet is accounted on the flow the peer opened.
    pub fn inbound(
        &mut self,
        p: &Pkt,
        len: usize,
        now: Instant,
        rule: impl FnOnce(&Pkt) -> Option<u32>,
    ) -> Inbound {
        self.maybe_sweep(now);
        let (lport, rport) = match (p.proto, p.icmp) {
            (TCP | UDP, _) => (p.dport, p.sport),
            (ICMP4 | ICMP6, Some(Icmp::EchoReply { id })) => (id, 0),
            (ICMP4 | ICMP6, Some(Icmp::EchoRequest { id })) => (id, ECHO_BY_PEER),
            _ => return Inbound::Untracked,
        };
        let key = FlowKey {
            proto: p.proto,
            local: p.dst,
            remote: p.src,
            lport,
            rport,
        };
        let tcp_next = |s: State| match s {
            _ if p.tcp_flags & RST != 0 => State::Reset,
            _ if p.tcp_flags & FIN != 0 => State::Closing,
            State::Opening if p.tcp_flags & ACK != 0 => State::Established,
            s => s,
        };
        // One hash lookup for packets of known flows: this is the hot path.
        let mut expired_local = false;
        match self.map.get_mut(&key) {
            Some(e) if e.origin == Origin::Local && e.expires > now => {
                if p.proto == TCP {
                    // Any answer from the peer establishes a flow we opened.
                    e.state = match e.state {
                        State::Opening => tcp_next(State::Established),
                        s => tcp_next(s),
                    };
                }
                e.acct.count(true, len, now);
                e.expires = now + ttl(&self.t, p.proto, e.state);
                return Inbound::Reply;
            }
            Some(e) if e.origin != Origin::Local => {
                // The policy decides every packet of a peer's flow; the entry only counts.
                let Some(r) = rule(p) else {
                    return Inbound::NoMatch;
                };
                e.origin = Origin::Peer(r);
                if p.proto == TCP {
                    e.state = tcp_next(e.state);
                }
                e.acct.count(true, len, now);
                e.expires = now + ttl(&self.t, p.proto, e.state);
                return Inbound::Rule(r);
            }
            Some(_) => expired_local = true,
            None => {}
        }
        if expired_local {
            self.remove_where_key(&key);
        }
        let Some(r) = rule(p) else {
            return Inbound::NoMatch;
        };
        let state = match p.proto {
            TCP if p.tcp_flags & SYN != 0 && p.tcp_flags & ACK == 0 => State::Opening,
            TCP => tcp_next(State::Established),
            _ => State::Datagram,
        };
        self.make_room(now);
        let mut acct = Acct::default();
        acct.count(true, len, now);
        let expires = now + ttl(&self.t, p.proto, state);
        self.map.insert(
            key,
            Entry {
                state,
                expires,
                origin: Origin::Peer(r),
                acct,
            },
        );
        Inbound::Rule(r)
    }

    fn remove_where_key(&mut self, key: &FlowKey) {
        if let Some(mut e) = self.map.remove(key) {
            emit(
                &mut self.out,
                self.max_out,
                &mut self.summaries_dropped,
                key,
                &mut e,
                true,
            );
        }
    }

    /// Whether an ICMP error quoting `quoted` (a packet this device sent) belongs to a
    /// live flow. Does not refresh it.
    pub fn related(&self, quoted: &Pkt, now: Instant) -> bool {
        let (lport, rport) = match (quoted.proto, quoted.icmp) {
            (TCP | UDP, _) => (quoted.sport, quoted.dport),
            (ICMP4 | ICMP6, Some(Icmp::EchoRequest { id })) => (id, 0),
            _ => return false,
        };
        let key = FlowKey {
            proto: quoted.proto,
            local: quoted.src,
            remote: quoted.dst,
            lport,
            rport,
        };
        self.map.get(&key).is_some_and(|e| e.expires > now)
    }

    /// The next due flow summary; runs the periodic sweep first if it is due, so a
    /// caller polling on a timer gets summaries even when no packets flow.
    pub fn poll_summary(&mut self, now: Instant) -> Option<FlowSummary> {
        if self.out.is_empty() {
            self.maybe_sweep(now);
        }
        self.out.pop_front()
    }
}
