//! Traffic never crosses networks: when one agent runs several profiles (one data
//! plane per network, see `daemon::profiles`), the daemon hands each data plane the
//! prefixes that belong to the *other* networks, and the core drops
//!
//! - inbound (after decryption, before the policy filter) a packet whose destination
//!   lies in another network: its overlay ranges or a route another profile installed
//!   (its subnet routes, or the default route when it uses an exit node), unless a
//!   longer prefix of this network's own (its overlay ranges, the routes it offers or
//!   uses) covers the destination;
//! - outbound (read from this profile's TUN) a packet whose source lies in another
//!   network's overlay ranges: the kernel forwarded it here from the other tunnel.
//!
//! With one profile the set is empty and each check is one branch.

use std::net::IpAddr;

use ipnet::IpNet;

/// The prefixes of the other networks, as one data plane sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrossNet {
    /// Destinations that belong to another network (overlay ranges and installed routes).
    pub foreign_dst: Vec<IpNet>,
    /// Sources that belong to another network (its overlay ranges).
    pub foreign_src: Vec<IpNet>,
    /// This network's own prefixes: a longer match here beats a foreign one (e.g. a
    /// subnet this device routes for its network while another profile uses an exit node).
    pub local: Vec<IpNet>,
}

/// Longest prefix length in `nets` that contains `ip`.
fn longest(nets: &[IpNet], ip: IpAddr) -> Option<u8> {
    nets.iter()
        .filter(|n| n.contains(&ip))
        .map(|n| n.prefix_len())
        .max()
}

impl CrossNet {
    pub fn is_empty(&self) -> bool {
        self.foreign_dst.is_empty() && self.foreign_src.is_empty()
    }

    /// A decrypted inbound packet to `dst` must not be delivered (it would leave into
    /// another network). A tie between a foreign and a local prefix counts as foreign.
    pub fn blocks_dst(&self, dst: IpAddr) -> bool {
        match longest(&self.foreign_dst, dst) {
            None => false,
            Some(f) => longest(&self.local, dst).is_none_or(|l| f >= l),
        }
    }

    /// A packet read from the TUN with source `src` came from another network.
    pub fn blocks_src(&self, src: IpAddr) -> bool {
        self.foreign_src.iter().any(|n| n.contains(&src))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_blocks_nothing() {
        let c = CrossNet::default();
        assert!(c.is_empty());
        assert!(!c.blocks_dst(ip("10.77.0.1")));
        assert!(!c.blocks_src(ip("10.77.0.1")));
    }

    #[test]
    fn longest_prefix_decides() {
        let c = CrossNet {
            // the other profile: its overlay and an exit node's default routes
            foreign_dst: vec![n("10.77.0.0/16"), n("fd77::/48"), n("0.0.0.0/0"), n("::/0")],
            foreign_src: vec![n("10.77.0.0/16"), n("fd77::/48")],
            // this profile: its overlay and a subnet it routes
            local: vec![n("100.64.0.0/10"), n("fd00::/48"), n("192.168.1.0/24")],
        };
        assert!(c.blocks_dst(ip("10.77.0.5")));
        assert!(c.blocks_dst(ip("fd77::5")));
        assert!(c.blocks_dst(ip("8.8.8.8")), "the other profile's exit node");
        assert!(!c.blocks_dst(ip("100.64.0.9")), "own overlay");
        assert!(
            !c.blocks_dst(ip("192.168.1.7")),
            "own subnet route is longer"
        );
        assert!(!c.blocks_dst(ip("fd00::2")));
        assert!(c.blocks_src(ip("10.77.3.3")));
        assert!(!c.blocks_src(ip("100.64.0.2")));
        // a tie goes to the foreign side
        let tie = CrossNet {
            foreign_dst: vec![n("10.1.0.0/24")],
            foreign_src: vec![],
            local: vec![n("10.1.0.0/24")],
        };
        assert!(tie.blocks_dst(ip("10.1.0.1")));
    }
}
