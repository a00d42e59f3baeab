//! Sans-IO WireGuard mesh core: one boringtun `Tunn` per peer, cryptokey routing
//! (longest-prefix match on allowed IPs outbound, source check inbound), endpoint
//! choice and roaming, the inbound policy filter, timers, the built-in ping and drop
//! counters.
//!
//! Nothing here touches sockets, the TUN device, an async runtime or the system clock:
//! time comes in as `now: Instant` (boringtun's `Tunn` reads its own clock internally,
//! which is accepted), and randomness from the seeded generator given to [`Node::new`]
//! (boringtun's handshakes draw their own; see there). The I/O thread in [`crate::io`]
//! (a `poll(2)` loop) and the simulation tests drive it.

mod counters;
pub mod crossnet;
pub mod nat;
mod node;
pub mod packet;
pub mod path;
mod peer;
pub mod probe;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use zmesh_shared::{DeviceId, WgPublicKey};

pub use counters::Counters;
pub use crossnet::CrossNet;
pub use nat::{is_relay_endpoint, relay_endpoint, relay_key_prefix, NatMapping};
pub use node::{Node, MIN_OUT_BUF, OVERHEAD};
pub use path::PathKind;
/// The generator [`Node::new`] draws all its randomness from, with its seeding trait
/// (so callers such as the fuzz targets need no direct `rand` dependency).
pub use rand::{rngs::StdRng, SeedableRng};

/// The desired configuration of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub device_id: DeviceId,
    pub name: String,
    pub public_key: WgPublicKey,
    /// Source addresses accepted from this peer, and destinations routed to it.
    pub allowed_ips: Vec<IpNet>,
    /// UDP endpoints to try, best first (the first is used until one answers).
    pub endpoints: Vec<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
}

/// A datagram the core wants sent (handshakes, keepalives, cookie replies, packets that
/// waited for a handshake). The hot path returns its datagram directly instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// Something the owner of the node may want to know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    HandshakeCompleted {
        device_id: DeviceId,
        public_key: WgPublicKey,
        endpoint: SocketAddr,
    },
    PingReply {
        device_id: DeviceId,
        from: IpAddr,
        id: u16,
        seq: u16,
        rtt: Duration,
    },
    EndpointChanged {
        device_id: DeviceId,
        endpoint: SocketAddr,
    },
    /// The path to a peer changed (direct address, relay, or none confirmed).
    PathChanged {
        device_id: DeviceId,
        path: PathKind,
        rtt: Option<Duration>,
    },
    /// Our STUN-mapped addresses or mapping behaviour changed: time to tell the console.
    ReflexiveChanged {
        addrs: Vec<SocketAddr>,
        mapping: NatMapping,
    },
}

/// A snapshot of one peer for status displays.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStats {
    pub device_id: DeviceId,
    pub name: String,
    pub public_key: WgPublicKey,
    pub endpoint: Option<SocketAddr>,
    /// Time since the current session was established, if there is one.
    pub last_handshake_age: Option<Duration>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub path: PathKind,
    /// Smoothed probe RTT of the direct path in use.
    pub rtt: Option<Duration>,
    /// When the direct path in use last answered (keepalive probes every 2 s).
    pub last_rx: Option<std::time::Instant>,
    /// When the endpoint in use last changed (to another direct address, to or from
    /// the relay).
    pub path_changed: Option<std::time::Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("no peer's allowed IPs cover {0}")]
    NoRoute(IpAddr),
    #[error("peer {0} has no endpoint")]
    NoEndpoint(DeviceId),
    #[error("cannot build an echo request to {0}")]
    BadPingTarget(IpAddr),
}

#[cfg(test)]
mod crossnet_tests;
#[cfg(test)]
mod robustness_tests;
