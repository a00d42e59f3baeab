//! Learning our own public addresses: a sans-IO STUN client that queries several STUN
//! servers from the WireGuard socket (so the mapping it learns is the one peers must
//! use), compares the answers to tell endpoint-independent from endpoint-dependent NAT
//! mapping, and refreshes them often enough to keep the mapping open.
//!
//! Also the addressing of the relay: packets for a peer that go through the relay are
//! sent to a virtual address derived from the peer's public key, in the discard-only
//! prefix 100::/64 (RFC 6666), which no real network routes; the I/O layer hands such
//! datagrams to its relay connection instead of the UDP socket.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use zmesh_shared::stun;

/// How often the mapped addresses are refreshed (well below common 30 s UDP timeouts).
const REFRESH: Duration = Duration::from_secs(20);
/// Retransmit spacing for unanswered requests.
const RETRY: Duration = Duration::from_millis(500);
const MAX_TRIES: u32 = 4;
const MAX_SERVERS: usize = 8;

/// Whether our NAT keeps one public mapping for all destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatMapping {
    /// Not enough answers yet (fewer than two servers answered).
    Unknown,
    /// Every server saw the same address: peers can reach us at it.
    EndpointIndependent,
    /// Servers saw different addresses: a new mapping per destination (symmetric NAT).
    EndpointDependent,
}

impl NatMapping {
    pub fn as_str(&self) -> &'static str {
        match self {
            NatMapping::Unknown => "unknown",
            NatMapping::EndpointIndependent => "endpoint-independent",
            NatMapping::EndpointDependent => "endpoint-dependent",
        }
    }
}

#[derive(Debug, Default)]
pub struct StunState {
    servers: Vec<SocketAddr>,
    /// Fixed hash keys: retries go out in this map's order, which must replay.
    pending: super::node::FixedMap<stun::TransactionId, (SocketAddr, u32, Instant)>,
    mapped: HashMap<SocketAddr, SocketAddr>,
    next_round: Option<Instant>,
    tid_counter: u64,
    tid_seed: u32,
}

impl StunState {
    pub fn new(tid_seed: u32) -> Self {
        StunState {
            tid_seed,
            ..Default::default()
        }
    }

    pub fn set_servers(&mut self, servers: Vec<SocketAddr>, now: Instant) {
        let mut s = servers;
        s.dedup();
        s.truncate(MAX_SERVERS);
        if s != self.servers {
            self.mapped.retain(|k, _| s.contains(k));
            self.pending.clear();
            self.servers = s;
            self.next_round = Some(now);
        }
    }

    /// The network changed: what the servers told us may describe a network we left.
    /// Forgets the mapped addresses and pending requests and asks every server now.
    pub fn restart(&mut self, now: Instant) {
        self.mapped.clear();
        self.pending.clear();
        if !self.servers.is_empty() {
            self.next_round = Some(now);
        }
    }

    pub fn is_server(&self, a: SocketAddr) -> bool {
        self.servers.contains(&a)
    }

    fn tid(&mut self) -> stun::TransactionId {
        self.tid_counter += 1;
        let mut t = [0u8; 12];
        t[..4].copy_from_slice(&self.tid_seed.to_be_bytes());
        t[4..].copy_from_slice(&self.tid_counter.to_be_bytes());
        t
    }

    /// Requests due now: (server, datagram).
    pub fn poll(&mut self, now: Instant, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        let mut retry = vec![];
        self.pending.retain(|_, (srv, tries, sent)| {
            if now.saturating_duration_since(*sent) < RETRY * *tries {
                return true;
            }
            if *tries < MAX_TRIES {
                retry.push((*srv, *tries + 1));
            }
            false
        });
        for (srv, tries) in retry {
            let tid = self.tid();
            self.pending.insert(tid, (srv, tries, now));
            out.push((srv, stun::binding_request(tid)));
        }
        if self.next_round.is_some_and(|t| now >= t) {
            self.next_round = Some(now + REFRESH);
            for srv in self.servers.clone() {
                if self.pending.values().any(|(s, _, _)| *s == srv) {
                    continue;
                }
                let tid = self.tid();
                self.pending.insert(tid, (srv, 1, now));
                out.push((srv, stun::binding_request(tid)));
            }
        }
    }

    /// A datagram from one of our servers. Returns true if our mapped addresses changed.
    pub fn on_response(&mut self, from: SocketAddr, data: &[u8]) -> bool {
        let Ok(stun::Message::BindingSuccess { tid, mapped }) = stun::decode(data) else {
            return false;
        };
        if self
            .pending
            .get(&tid)
            .is_none_or(|(srv, _, _)| *srv != from)
        {
            return false;
        }
        self.pending.remove(&tid);
        self.mapped.insert(from, mapped) != Some(mapped)
    }

    /// Our distinct server-reflexive addresses, in server order.
    pub fn reflexive(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = vec![];
        for s in &self.servers {
            if let Some(m) = self.mapped.get(s) {
                if !v.contains(m) {
                    v.push(*m);
                }
            }
        }
        v
    }

    pub fn mapping(&self) -> NatMapping {
        let answers: Vec<&SocketAddr> = self.mapped.values().collect();
        if answers.len() < 2 {
            return NatMapping::Unknown;
        }
        if answers.iter().all(|a| *a == answers[0]) {
            NatMapping::EndpointIndependent
        } else {
            NatMapping::EndpointDependent
        }
    }
}

/// The virtual endpoint that stands for "peer `key`, through the relay".
pub fn relay_endpoint(key: &[u8; 32]) -> SocketAddr {
    let mut o = [0u8; 16];
    o[0] = 1; // 0100::/64
    o[8..].copy_from_slice(&key[..8]);
    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), 1)
}

pub fn is_relay_endpoint(a: SocketAddr) -> bool {
    match a.ip() {
        IpAddr::V6(v) => v.segments()[..4] == [0x0100, 0, 0, 0] && a.port() == 1,
        IpAddr::V4(_) => false,
    }
}

/// The first 8 bytes of the peer key a relay endpoint stands for.
pub fn relay_key_prefix(a: SocketAddr) -> Option<[u8; 8]> {
    if !is_relay_endpoint(a) {
        return None;
    }
    match a.ip() {
        IpAddr::V6(v) => v.octets()[8..].try_into().ok(),
        IpAddr::V4(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_behaviour_from_two_servers() {
        let t0 = Instant::now();
        let s1: SocketAddr = "192.0.2.10:3478".parse().unwrap();
        let s2: SocketAddr = "192.0.2.11:3478".parse().unwrap();
        let mut st = StunState::new(7);
        st.set_servers(vec![s1, s2], t0);
        let mut out = vec![];
        st.poll(t0, &mut out);
        assert_eq!(out.len(), 2);
        let answer = |req: &[u8], m: &str| {
            let stun::Message::BindingRequest { tid } = stun::decode(req).unwrap() else {
                panic!()
            };
            stun::binding_success(tid, m.parse().unwrap(), "t")
        };
        // an answer from the wrong server is ignored
        assert!(!st.on_response(s2, &answer(&out[0].1, "198.51.100.1:5000")));
        assert!(st.on_response(s1, &answer(&out[0].1, "198.51.100.1:5000")));
        assert_eq!(st.mapping(), NatMapping::Unknown);
        assert!(st.on_response(s2, &answer(&out[1].1, "198.51.100.1:6000")));
        assert_eq!(st.mapping(), NatMapping::EndpointDependent);
        assert_eq!(st.reflexive().len(), 2);
        // unanswered requests are retried, boundedly
        let mut out = vec![];
        for i in 1..200 {
            st.poll(t0 + Duration::from_millis(100 * i), &mut out);
        }
        assert!(
            out.len() <= 2 * (MAX_TRIES as usize) * 2 + 4,
            "{}",
            out.len()
        );
        assert!(!st.on_response(s1, b"garbage"));
    }

    #[test]
    fn relay_endpoints_round_trip() {
        let k = [0xab; 32];
        let e = relay_endpoint(&k);
        assert!(is_relay_endpoint(e));
        assert_eq!(relay_key_prefix(e), Some([0xab; 8]));
        assert!(!is_relay_endpoint("192.0.2.1:1".parse().unwrap()));
        assert!(!is_relay_endpoint("[2001:db8::1]:1".parse().unwrap()));
    }
}
