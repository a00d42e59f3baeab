//! The per-device peer map and its signed deltas.
//!
//! The console sends each agent the full map on connect and a [`PeerDelta`] on every
//! change. Both travel inside a [`Signed`] envelope: the exact JSON text that was
//! signed plus an Ed25519 signature over it, so no canonical re-encoding is needed to
//! verify, and an agent can cache what it received and trust it again after a restart
//! while the console is down.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::ids::DeviceState;
use crate::ids::{DeviceId, NetworkId};
use crate::keys::{KeyError, SigningPublicKey, WgPublicKey};
use crate::policy::FilterRule;
pub use crate::signed::{Signed, SignedError};
use crate::time::UnixMillis;

/// What a device learns about itself from its map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfInfo {
    pub name: String,
    pub state: DeviceState,
    pub overlay_v4: Ipv4Addr,
    pub overlay_v6: Ipv6Addr,
    pub network_v4: Ipv4Net,
    pub network_v6: Ipv6Net,
    /// This device's advertised routes that are approved (subnets, exit-node defaults),
    /// so `zmesh status` can tell approved from waiting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved_routes: Vec<IpNet>,
}

/// One peer the device may talk to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub device_id: DeviceId,
    pub name: String,
    pub public_key: WgPublicKey,
    pub overlay_v4: Ipv4Addr,
    pub overlay_v6: Ipv6Addr,
    /// Source addresses accepted from this peer (cryptokey routing).
    pub allowed_ips: Vec<IpNet>,
    /// UDP endpoints the peer reported, best first.
    pub endpoints: Vec<SocketAddr>,
    /// Runs stock WireGuard, not the zmesh agent (no control stream, no probes).
    #[serde(default)]
    pub agentless: bool,
    #[serde(default)]
    pub persistent_keepalive: Option<u16>,
    /// Subnet prefixes this device may send through the peer (an approved subnet
    /// router the policy lets it use). Not in `allowed_ips`: several routers may offer
    /// one prefix and the agent routes it through one of them (failover).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<IpNet>,
    /// The peer is an exit node this device may use (`0.0.0.0/0`, `::/0`), when the
    /// device chooses it (`zmesh up --exit-node NAME`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exit_node: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerMap {
    pub network_id: NetworkId,
    pub device_id: DeviceId,
    /// Network revision this map reflects; deltas chain from it.
    pub version: u64,
    pub issued_at_ms: UnixMillis,
    pub me: SelfInfo,
    /// Sorted by device id, so two maps of the same content are equal.
    pub peers: Vec<Peer>,
    /// Inbound filter of this device, compiled from the access policy. Missing (a
    /// console without policies) and empty mean the same: no new inbound flow is
    /// accepted, only replies to flows the device opened itself.
    #[serde(default)]
    pub filter: Vec<FilterRule>,
    /// Version of the access policy the filter was compiled from; agents put it in
    /// their flow reports so a record names the rule *and* the policy that held it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<u64>,
    /// The network's names (DNS suffix). Missing: a console without DNS; the agent
    /// then answers no names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,
    /// The network's name and its membership rule. Missing: a console from before
    /// several networks, which means a network that is not exclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkInfo>,
}

/// What a device needs to know about the network it is in, beyond its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// The network's name on its console (`default` for the first one).
    pub name: String,
    /// Set by the network's admin: a device in this network must not be in any other
    /// network at the same time. The agent refuses (or holds down) its other profiles
    /// while this one is up, and says why in `zmesh status`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclusive: bool,
}

/// The names of a network: every device answers as `NAME.SUFFIX` (A and AAAA with
/// its overlay addresses) at the agent's resolver, [`resolver_v4`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Lower-case domain without a trailing dot, e.g. `default.zmesh.internal`.
    pub suffix: String,
    /// Extra names under the suffix, set by admins (device names win over them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<DnsRecord>,
    /// Split DNS: domains answered by resolvers reachable through the mesh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<SplitDns>,
}

/// One extra name: `NAME.SUFFIX` answers `ip` (A for IPv4, AAAA for IPv6).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DnsRecord {
    /// Relative to the suffix, lower case: `wiki` is `wiki.SUFFIX`.
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub ip: std::net::IpAddr,
}

/// Names under `domain` are forwarded to `resolvers` (tried in order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SplitDns {
    /// Lower case, no trailing dot, e.g. `corp.example`.
    pub domain: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub resolvers: Vec<std::net::IpAddr>,
}

/// The address every agent's resolver listens on: the first address of the overlay
/// IPv4 range (its network address, e.g. 100.64.0.0), which is never given to a
/// device, added to the TUN interface as a local /32.
pub fn resolver_v4(network_v4: Ipv4Net) -> Ipv4Addr {
    network_v4.network()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerDelta {
    pub network_id: NetworkId,
    pub device_id: DeviceId,
    pub base_version: u64,
    pub version: u64,
    pub issued_at_ms: UnixMillis,
    /// Present when the device's own record changed.
    #[serde(default)]
    pub me: Option<SelfInfo>,
    /// Peers added, or changed (key, endpoints, addresses, name).
    #[serde(default)]
    pub upsert: Vec<Peer>,
    #[serde(default)]
    pub remove: Vec<DeviceId>,
    /// The whole new inbound filter; present only when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Vec<FilterRule>>,
    /// The new policy version; present only when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<u64>,
    /// The network's new names; present only when they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Box<DnsConfig>>,
    /// The network's new name or membership rule; present only when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkInfo>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    #[error("delta is for {got}, this map is {want}")]
    WrongTarget { want: DeviceId, got: DeviceId },
    #[error("delta starts at version {base}, map is at {have}")]
    VersionGap { have: u64, base: u64 },
    #[error(transparent)]
    Signed(#[from] SignedError),
}

impl From<KeyError> for MapError {
    fn from(e: KeyError) -> Self {
        MapError::Signed(SignedError::Signature(e))
    }
}

impl PeerMap {
    pub fn peer(&self, id: &DeviceId) -> Option<&Peer> {
        self.peers.iter().find(|p| &p.device_id == id)
    }

    /// The delta that turns `self` into `new`, or `None` when nothing changed but the
    /// version (then the agent need not be told at all).
    pub fn diff(&self, new: &PeerMap) -> Option<PeerDelta> {
        let old: BTreeMap<_, _> = self.peers.iter().map(|p| (p.device_id, p)).collect();
        let newm: BTreeMap<_, _> = new.peers.iter().map(|p| (p.device_id, p)).collect();
        let upsert: Vec<Peer> = new
            .peers
            .iter()
            .filter(|p| old.get(&p.device_id) != Some(p))
            .cloned()
            .collect();
        let remove: Vec<DeviceId> = old
            .keys()
            .filter(|id| !newm.contains_key(id))
            .copied()
            .collect();
        let me = (self.me != new.me).then(|| new.me.clone());
        let filter = (self.filter != new.filter).then(|| new.filter.clone());
        let policy_version = new
            .policy_version
            .filter(|_| self.policy_version != new.policy_version);
        let dns = new
            .dns
            .clone()
            .filter(|_| self.dns != new.dns)
            .map(Box::new);
        let network = new.network.clone().filter(|_| self.network != new.network);
        if upsert.is_empty()
            && remove.is_empty()
            && me.is_none()
            && filter.is_none()
            && policy_version.is_none()
            && dns.is_none()
            && network.is_none()
        {
            return None;
        }
        Some(PeerDelta {
            network_id: new.network_id,
            device_id: new.device_id,
            base_version: self.version,
            version: new.version,
            issued_at_ms: new.issued_at_ms,
            me,
            upsert,
            remove,
            filter,
            policy_version,
            dns,
            network,
        })
    }

    pub fn apply(&mut self, d: &PeerDelta) -> Result<(), MapError> {
        if d.device_id != self.device_id {
            return Err(MapError::WrongTarget {
                want: self.device_id,
                got: d.device_id,
            });
        }
        if d.base_version != self.version {
            return Err(MapError::VersionGap {
                have: self.version,
                base: d.base_version,
            });
        }
        let mut peers: BTreeMap<DeviceId, Peer> = std::mem::take(&mut self.peers)
            .into_iter()
            .map(|p| (p.device_id, p))
            .collect();
        for id in &d.remove {
            peers.remove(id);
        }
        for p in &d.upsert {
            peers.insert(p.device_id, p.clone());
        }
        self.peers = peers.into_values().collect();
        if let Some(me) = &d.me {
            self.me = me.clone();
        }
        if let Some(f) = &d.filter {
            self.filter = f.clone();
        }
        if d.policy_version.is_some() {
            self.policy_version = d.policy_version;
        }
        if let Some(dns) = &d.dns {
            self.dns = Some((**dns).clone());
        }
        if let Some(n) = &d.network {
            self.network = Some(n.clone());
        }
        self.version = d.version;
        self.issued_at_ms = d.issued_at_ms;
        Ok(())
    }

    /// Sorts peers into their canonical order.
    pub fn normalize(&mut self) {
        self.peers.sort_by_key(|p| p.device_id);
    }
}

pub type SignedPeerMap = Signed<PeerMap>;
pub type SignedDelta = Signed<PeerDelta>;

/// What an agent keeps on disk: the last full map and the deltas received since,
/// all still signed, so a restart while the console is down can trust them again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedMap {
    pub map: SignedPeerMap,
    #[serde(default)]
    pub deltas: Vec<SignedDelta>,
}

impl CachedMap {
    /// Verifies every piece and replays the deltas.
    pub fn restore(&self, key: &SigningPublicKey) -> Result<PeerMap, MapError> {
        let mut map = self.map.verify(key)?;
        for d in &self.deltas {
            map.apply(&d.verify(key)?)?;
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{SigningKey, WgPrivateKey};

    fn peer(n: u8) -> Peer {
        let v4 = Ipv4Addr::new(100, 64, 0, n);
        let v6: Ipv6Addr = format!("fd00::{n}").parse().unwrap();
        Peer {
            routes: Vec::new(),
            exit_node: false,
            device_id: DeviceId::new(),
            name: format!("p{n}"),
            public_key: WgPrivateKey::generate().public_key(),
            overlay_v4: v4,
            overlay_v6: v6,
            allowed_ips: vec![
                IpNet::from(std::net::IpAddr::V4(v4)),
                IpNet::from(std::net::IpAddr::V6(v6)),
            ],
            endpoints: vec![],
            agentless: false,
            persistent_keepalive: None,
        }
    }

    fn map(peers: Vec<Peer>, version: u64) -> PeerMap {
        let mut m = PeerMap {
            network_id: NetworkId::new(),
            device_id: DeviceId::from_uuid(uuid::Uuid::nil()),
            version,
            issued_at_ms: 0,
            me: SelfInfo {
                approved_routes: Vec::new(),
                name: "me".into(),
                state: DeviceState::Active,
                overlay_v4: Ipv4Addr::new(100, 64, 0, 1),
                overlay_v6: "fd00::1".parse().unwrap(),
                network_v4: "100.64.0.0/10".parse().unwrap(),
                network_v6: "fd00::/48".parse().unwrap(),
            },
            peers,
            filter: vec![],
            policy_version: None,
            dns: None,
            network: None,
        };
        m.normalize();
        m
    }

    #[test]
    fn diff_then_apply_reaches_the_new_map() {
        let (a, b, c) = (peer(2), peer(3), peer(4));
        let old = map(vec![a.clone(), b.clone()], 1);
        let mut b2 = b.clone();
        b2.endpoints.push("192.0.2.1:51820".parse().unwrap());
        let mut new = map(vec![b2.clone(), c.clone()], 5);
        new.network_id = old.network_id;
        let d = old.diff(&new).unwrap();
        assert_eq!(d.remove, vec![a.device_id]);
        assert_eq!(d.upsert.len(), 2);
        let mut applied = old.clone();
        applied.apply(&d).unwrap();
        assert_eq!(applied, new);
        // a gap is refused and leaves the map alone
        let mut stale = old.clone();
        stale.version = 0;
        assert!(matches!(stale.apply(&d), Err(MapError::VersionGap { .. })));
        assert_eq!(stale.peers, old.peers);
        assert!(old.diff(&old).is_none());
    }

    #[test]
    fn signed_envelope_detects_tampering() {
        let sk = SigningKey::generate();
        let m = map(vec![peer(2)], 1);
        let s = Signed::sign(&m, &sk);
        assert_eq!(s.verify(&sk.public_key()).unwrap(), m);
        let mut t = s.clone();
        t.payload = t.payload.replace("p2", "p9");
        assert!(t.verify(&sk.public_key()).is_err());
        assert!(s.verify(&SigningKey::generate().public_key()).is_err());
    }

    #[test]
    fn cache_restores_map_and_deltas() {
        let sk = SigningKey::generate();
        let m1 = map(vec![peer(2)], 1);
        let mut m2 = m1.clone();
        m2.version = 2;
        m2.peers.push(peer(3));
        m2.normalize();
        let d = m1.diff(&m2).unwrap();
        let cache = CachedMap {
            map: Signed::sign(&m1, &sk),
            deltas: vec![Signed::sign(&d, &sk)],
        };
        let text = serde_json::to_string(&cache).unwrap();
        let back: CachedMap = serde_json::from_str(&text).unwrap();
        assert_eq!(back.restore(&sk.public_key()).unwrap(), m2);
    }

    #[test]
    fn filter_changes_travel_in_deltas_only_when_changed() {
        use crate::policy::{PortRange, Proto};
        let rule = FilterRule {
            dst: Vec::new(),
            src: vec!["100.64.0.2/32".parse().unwrap()],
            proto: Proto::Tcp,
            ports: vec![PortRange::one(22)],
            rule: 0,
        };
        let old = map(vec![peer(2)], 1);
        let mut new = old.clone();
        new.version = 2;
        new.filter = vec![rule.clone()];
        let d = old.diff(&new).unwrap();
        assert!(d.upsert.is_empty() && d.remove.is_empty() && d.me.is_none());
        assert_eq!(d.filter.as_deref(), Some(&[rule][..]));
        let mut applied = old.clone();
        applied.apply(&d).unwrap();
        assert_eq!(applied, new);
        // a peer-only change carries no filter, and applying it keeps the filter
        let mut newer = new.clone();
        newer.version = 3;
        newer.peers.push(peer(3));
        newer.normalize();
        let d2 = new.diff(&newer).unwrap();
        assert!(d2.filter.is_none());
        assert!(!serde_json::to_string(&d2).unwrap().contains("filter"));
        applied.apply(&d2).unwrap();
        assert_eq!(applied, newer);
        // a map from a console without policies parses, with an empty (deny) filter
        let mut v = serde_json::to_value(&old).unwrap();
        v.as_object_mut().unwrap().remove("filter");
        let back: PeerMap = serde_json::from_value(v).unwrap();
        assert!(back.filter.is_empty());
    }

    #[test]
    fn network_rule_travels_in_deltas_only_when_changed() {
        let old = map(vec![peer(2)], 1);
        let mut new = old.clone();
        new.version = 2;
        new.network = Some(NetworkInfo {
            name: "client-a".into(),
            exclusive: true,
        });
        let d = old.diff(&new).expect("an exclusivity change is a delta");
        assert_eq!(d.network, new.network);
        let mut applied = old.clone();
        applied.apply(&d).unwrap();
        assert_eq!(applied, new);
        let mut newer = new.clone();
        newer.version = 3;
        newer.peers.push(peer(3));
        newer.normalize();
        let d2 = new.diff(&newer).unwrap();
        assert!(d2.network.is_none());
        assert!(!serde_json::to_string(&d2).unwrap().contains("network\""));
        // a map from an older console (no `network`) parses as not exclusive
        let v = serde_json::to_value(&old).unwrap();
        assert!(v.get("network").is_none());
        let back: PeerMap = serde_json::from_value(v).unwrap();
        assert!(back.network.is_none());
    }

    #[test]
    fn dns_changes_travel_in_deltas_only_when_changed() {
        let old = map(vec![peer(2)], 1);
        let mut new = old.clone();
        new.version = 2;
        new.dns = Some(DnsConfig {
            suffix: "corp.example".into(),
            records: vec![],
            split: vec![],
        });
        let d = old.diff(&new).unwrap();
        assert_eq!(d.dns.as_deref(), new.dns.as_ref());
        let mut applied = old.clone();
        applied.apply(&d).unwrap();
        assert_eq!(applied, new);
        let mut newer = new.clone();
        newer.version = 3;
        newer.peers.push(peer(3));
        newer.normalize();
        let d2 = new.diff(&newer).unwrap();
        assert!(d2.dns.is_none());
        applied.apply(&d2).unwrap();
        assert_eq!(applied.dns, new.dns);
        assert_eq!(
            resolver_v4("100.64.0.0/10".parse().unwrap()),
            Ipv4Addr::new(100, 64, 0, 0)
        );
    }
}
