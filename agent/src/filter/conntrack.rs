//! Connection tracking for flows this device opened: outbound TCP/UDP 5-tuples and
//! ICMP echo ids, with idle timeouts and a bounded table. Sans-IO: time comes in as
//! `now`, so tests drive it with a virtual clock.

use std::collections::HashMap;
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
    pub rport: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Opening,
    Established,
    Closing,
    Reset,
    Datagram,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: State,
    expires: Instant,
}

pub struct ConnTrack {
    map: HashMap<FlowKey, Entry>,
    max: usize,
    t: Timeouts,
    next_sweep: Option<Instant>,
    pub evicted: u64,
}

const SWEEP_EVERY: Duration = Duration::from_secs(10);

fn icmp_proto(p: &Pkt) -> bool {
    p.proto == ICMP4 || p.proto == ICMP6
}

impl ConnTrack {
    pub fn new(max: usize, t: Timeouts) -> Self {
        ConnTrack {
            map: HashMap::new(),
            max: max.max(16),
            t,
            next_sweep: None,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn timeout(&self, s: State) -> Duration {
        match s {
            State::Opening => self.t.tcp_opening,
            State::Established => self.t.tcp_established,
            State::Closing => self.t.tcp_closing,
            State::Reset => self.t.tcp_reset,
            State::Datagram => self.t.udp,
        }
    }

    fn maybe_sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|t| now >= t) {
            self.map.retain(|_, e| e.expires > now);
            self.next_sweep = Some(now + SWEEP_EVERY);
        }
    }

    /// Makes room for one entry: expired ones first, then the eighth closest to expiry
    /// (a batch, so a full table of live flows does not cost a scan per packet).
    fn make_room(&mut self, now: Instant) {
        if self.map.len() < self.max {
            return;
        }
        self.map.retain(|_, e| e.expires > now);
        if self.map.len() < self.max {
            return;
        }
        let mut exp: Vec<Instant> = self.map.values().map(|e| e.expires).collect();
        let k = (self.max / 8).max(1).min(exp.len() - 1);
        let (_, cut, _) = exp.select_nth_unstable(k);
        let cut = *cut;
        let before = self.map.len();
        self.map.retain(|_, e| e.expires > cut);
        self.evicted += (before - self.map.len()) as u64;
    }

    /// Records a packet leaving this device through the TUN.
    pub fn outbound(&mut self, p: &Pkt, now: Instant) {
        self.maybe_sweep(now);
        let (lport, rport) = match (p.proto, p.icmp) {
            (TCP | UDP, _) => (p.sport, p.dport),
            (ICMP4 | ICMP6, Some(Icmp::EchoRequest { id })) => (id, 0),
            _ => return,
        };
        let key = FlowKey {
            proto: p.proto,
            local: p.src,
            remote: p.dst,
            lport,
            rport,
        };
        let (state, expires) = if p.proto == TCP {
            let existing = self.map.get(&key).map(|e| e.state);
            let st = match existing {
                _ if p.tcp_flags & RST != 0 => State::Reset,
                _ if p.tcp_flags & FIN != 0 => State::Closing,
                Some(s) => s,
                // Only a connection attempt opens state: an outbound packet of a flow the
                // peer opened must not punch a hole that outlives the rule allowing it.
                None if p.tcp_flags & SYN != 0 && p.tcp_flags & ACK == 0 => State::Opening,
                None => return,
            };
            (st, now + self.timeout(st))
        } else if icmp_proto(p) {
            (State::Datagram, now + self.t.icmp)
        } else {
            (State::Datagram, now + self.t.udp)
        };
        if !self.map.contains_key(&key) {
            self.make_room(now);
        }
        self.map.insert(key, Entry { state, expires });
    }

    /// Whether an inbound packet answers a live flow this device opened; refreshes it.
    pub fn inbound_reply(&mut self, p: &Pkt, now: Instant) -> bool {
        self.maybe_sweep(now);
        let (lport, rport) = match (p.proto, p.icmp) {
            (TCP | UDP, _) => (p.dport, p.sport),
            (ICMP4 | ICMP6, Some(Icmp::EchoReply { id })) => (id, 0),
            _ => return false,
        };
        let key = FlowKey {
            proto: p.proto,
            local: p.dst,
            remote: p.src,
            lport,
            rport,
        };
        let t = self.t.clone();
        let Some(e) = self.map.get_mut(&key) else {
            return false;
        };
        if e.expires <= now {
            self.map.remove(&key);
            return false;
        }
        if p.proto == TCP {
            e.state = match e.state {
                _ if p.tcp_flags & RST != 0 => State::Reset,
                _ if p.tcp_flags & FIN != 0 => State::Closing,
                State::Opening => State::Established,
                s => s,
            };
        }
        e.expires = now
            + match (p.proto, e.state) {
                (ICMP4 | ICMP6, _) => t.icmp,
                (_, State::Established) => t.tcp_established,
                (_, State::Opening) => t.tcp_opening,
                (_, State::Closing) => t.tcp_closing,
                (_, State::Reset) => t.tcp_reset,
                (_, State::Datagram) => t.udp,
            };
        true
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
}
