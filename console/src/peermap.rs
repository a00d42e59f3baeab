//! Builds each device's peer map from a network snapshot. Pure: no I/O, no clock
//! (the caller passes `now_ms`), so the HTTP layer can build thousands of maps from one
//! snapshot and tests can check the rules directly.
//!
//! Until access policies land, the rule is allow-all inside a network: every Active
//! device whose key has not expired sees every other such device. Pending, revoked and
//! expired devices get no map and appear in nobody's map.

use ipnet::IpNet;
use zmesh_shared::peermap::{Peer, PeerMap, SelfInfo};
use zmesh_shared::wire::DeviceState;
use zmesh_shared::DeviceId;

use crate::store::{DeviceRow, NetworkSnapshot};

/// Keepalive for peers without an agent: stock WireGuard behind NAT needs it to keep
/// the mapping open, since it has no control stream to learn our endpoints from.
pub const AGENTLESS_KEEPALIVE_SECS: u16 = 25;

/// Whether the device takes part in the mesh at `now_ms`.
pub fn is_live(d: &DeviceRow, now_ms: i64) -> bool {
    d.state == DeviceState::Active && d.key_expires_at_ms.is_none_or(|t| t > now_ms)
}

fn to_peer(d: &DeviceRow) -> Peer {
    Peer {
        device_id: d.id,
        name: d.name.clone(),
        public_key: d.public_key,
        overlay_v4: d.overlay_v4,
        overlay_v6: d.overlay_v6,
        allowed_ips: vec![
            IpNet::from(std::net::IpAddr::V4(d.overlay_v4)),
            IpNet::from(std::net::IpAddr::V6(d.overlay_v6)),
        ],
        endpoints: d.endpoints.clone(),
        agentless: d.agentless,
        persistent_keepalive: d.agentless.then_some(AGENTLESS_KEEPALIVE_SECS),
    }
}

/// The map of `device`: `None` when the device is not in the snapshot or not live.
pub fn build_peer_map(snap: &NetworkSnapshot, device: DeviceId, now_ms: i64) -> Option<PeerMap> {
    PeerMapBuilder::new(snap, now_ms).build(device)
}

/// Builds many maps from one snapshot: the live peers are converted and sorted once.
pub struct PeerMapBuilder<'a> {
    snap: &'a NetworkSnapshot,
    now_ms: i64,
    /// Every live device as a peer, sorted by device id.
    peers: Vec<Peer>,
}

impl<'a> PeerMapBuilder<'a> {
    pub fn new(snap: &'a NetworkSnapshot, now_ms: i64) -> Self {
        let mut peers: Vec<Peer> = snap
            .devices
            .iter()
            .filter(|d| is_live(d, now_ms))
            .map(to_peer)
            .collect();
        peers.sort_by_key(|p| p.device_id);
        PeerMapBuilder {
            snap,
            now_ms,
            peers,
        }
    }

    pub fn build(&self, device: DeviceId) -> Option<PeerMap> {
        let me = self.snap.devices.iter().find(|d| d.id == device)?;
        self.build_for(me)
    }

    /// Like [`build`](Self::build) for a row already at hand (no search by id).
    pub fn build_for(&self, me: &DeviceRow) -> Option<PeerMap> {
        if !is_live(me, self.now_ms) {
            return None;
        }
        let net = &self.snap.network;
        let peers: Vec<Peer> = self
            .peers
            .iter()
            .filter(|p| p.device_id != me.id)
            .cloned()
            .collect();
        let mut map = PeerMap {
            network_id: net.id,
            device_id: me.id,
            version: net.revision,
            issued_at_ms: self.now_ms,
            me: SelfInfo {
                name: me.name.clone(),
                state: me.state,
                overlay_v4: me.overlay_v4,
                overlay_v6: me.overlay_v6,
                network_v4: net.prefix_v4,
                network_v6: net.prefix_v6,
            },
            peers,
        };
        // already in order; normalize keeps the invariant explicit and is cheap on sorted input
        map.normalize();
        Some(map)
    }
}
