//! One peer's state (its `Tunn`, current endpoint, config) and the routing table that
//! maps destination addresses to peers by longest-prefix match over allowed IPs.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use boringtun::noise::Tunn;
use ipnet::IpNet;

use super::path::PathState;
use super::probe::ProbeKey;
use super::PeerConfig;

pub(crate) struct Peer {
    /// Our receiver index prefix (upper 24 bits of every index this `Tunn` hands out).
    pub index: u32,
    pub config: PeerConfig,
    pub tunn: Tunn,
    pub endpoint: Option<SocketAddr>,
    /// The endpoint was confirmed by an authenticated packet (or learned by roaming);
    /// until then handshake retries rotate through the configured endpoints.
    pub confirmed: bool,
    cursor: usize,
    /// Direct-path probing and choice (see `path`).
    pub path: PathState,
    /// `None` when the peer's key is unusable for probes (low-order point).
    pub probe_key: Option<ProbeKey>,
    /// We sent a handshake initiation that has not been answered yet.
    pub awaiting_handshake: bool,
    /// When the endpoint in use last changed (direct address, relay), for status.
    pub path_changed: Option<Instant>,
}

impl Peer {
    pub fn new(index: u32, config: PeerConfig, tunn: Tunn) -> Self {
        let endpoint = config.endpoints.first().copied();
        Peer {
            index,
            config,
            tunn,
            endpoint,
            confirmed: false,
            cursor: 0,
            path: PathState::new(u64::from(index) << 40),
            probe_key: None,
            awaiting_handshake: false,
            path_changed: None,
        }
    }

    pub fn allows(&self, src: IpAddr) -> bool {
        self.config.allowed_ips.iter().any(|n| n.contains(&src))
    }

    /// Replaces the config of a peer whose key did not change; the session survives.
    pub fn update_config(&mut self, config: PeerConfig) {
        if config.endpoints != self.config.endpoints && !self.confirmed {
            self.endpoint = config.endpoints.first().copied();
            self.cursor = 0;
        }
        if self.endpoint.is_none() {
            self.endpoint = config.endpoints.first().copied();
        }
        self.config = config;
    }

    /// An authenticated packet arrived from `from`: that is where the peer is now.
    /// Returns true if the endpoint changed.
    pub fn roam(&mut self, from: SocketAddr) -> bool {
        self.confirmed = true;
        if self.endpoint != Some(from) {
            self.endpoint = Some(from);
            return true;
        }
        false
    }

    /// A handshake retry is due and nothing ever answered: try the next configured endpoint.
    pub fn rotate_endpoint(&mut self) {
        let n = self.config.endpoints.len();
        if self.confirmed || n < 2 {
            return;
        }
        self.cursor = (self.cursor + 1) % n;
        self.endpoint = Some(self.config.endpoints[self.cursor]);
    }
}

/// Longest-prefix-match table from allowed IPs to peer indexes.
#[derive(Default)]
pub(crate) struct RouteTable {
    /// Sorted by prefix length, longest first, so the first match is the best one.
    entries: Vec<(IpNet, u32)>,
}

impl RouteTable {
    pub fn rebuild<'a>(&mut self, peers: impl Iterator<Item = &'a Peer>) {
        self.entries.clear();
        for p in peers {
            for net in &p.config.allowed_ips {
                self.entries.push((net.trunc(), p.index));
            }
        }
        // Stable sort: for equal prefixes the peer listed first in the config wins.
        self.entries
            .sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
    }

    pub fn lookup(&self, dst: IpAddr) -> Option<u32> {
        self.entries
            .iter()
            .find(|(n, _)| n.contains(&dst))
            .map(|(_, i)| *i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(Vec<(&'static str, u32)>);

    #[test]
    fn longest_prefix_wins() {
        let f = Fake(vec![
            ("10.0.0.0/8", 1),
            ("10.1.0.0/16", 2),
            ("10.1.2.3/32", 3),
            ("::/0", 4),
        ]);
        let mut t = RouteTable::default();
        for (n, i) in &f.0 {
            t.entries.push((n.parse::<IpNet>().unwrap(), *i));
        }
        t.entries
            .sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        assert_eq!(t.lookup("10.1.2.3".parse().unwrap()), Some(3));
        assert_eq!(t.lookup("10.1.9.9".parse().unwrap()), Some(2));
        assert_eq!(t.lookup("10.200.0.1".parse().unwrap()), Some(1));
        assert_eq!(t.lookup("11.0.0.1".parse().unwrap()), None);
        assert_eq!(t.lookup("fd00::1".parse().unwrap()), Some(4));
    }
}
