//! The agent's view of its peer map: verifies every signed map and delta against the
//! console key pinned at enrollment, chains deltas by version, and says when to ask
//! for a resync (version gap, or too many deltas piled up in the cache). Pure: the
//! control loop feeds it messages and persists what it returns.

use zmesh_shared::peermap::{CachedMap, MapError, PeerMap, SignedDelta, SignedPeerMap};
use zmesh_shared::wire::DeviceState;
use zmesh_shared::{DeviceId, SigningPublicKey};

use crate::io::PeerConfig;

/// More cached deltas than this, plus a random part of as many again (drawn per full
/// map), and the agent asks for a fresh full map. The random part matters: every agent
/// of a network gets the same changes, and a fixed threshold made them all ask for a
/// full map at the same change (1,000 full maps at once in the scale harness).
pub const MAX_CACHED_DELTAS: usize = 64;

/// This map's compaction threshold: [`MAX_CACHED_DELTAS`] plus a random part below it.
fn compact_threshold() -> usize {
    MAX_CACHED_DELTAS + (rand::random::<u32>() as usize % MAX_CACHED_DELTAS)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapRejected {
    #[error(transparent)]
    Map(#[from] MapError),
    #[error("map is for device {got}, this device is {want}")]
    WrongDevice { want: DeviceId, got: DeviceId },
    #[error("delta arrived before any full map")]
    NoBase,
}

impl From<zmesh_shared::signed::SignedError> for MapRejected {
    fn from(e: zmesh_shared::signed::SignedError) -> Self {
        MapRejected::Map(e.into())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum DeltaOutcome {
    /// Applied; `compact` asks the caller to request a resync to shrink the cache.
    Applied { compact: bool },
    /// Already have this version or newer; nothing to do.
    Stale,
    /// The delta does not chain onto our map: ask for the whole map.
    Gap,
}

pub struct MapState {
    key: SigningPublicKey,
    device_id: DeviceId,
    cache: Option<CachedMap>,
    map: Option<PeerMap>,
    /// Cached deltas past which a resync is asked for (once: the answer resets it).
    compact_at: usize,
}

impl MapState {
    pub fn new(key: SigningPublicKey, device_id: DeviceId) -> Self {
        MapState {
            key,
            device_id,
            cache: None,
            map: None,
            compact_at: compact_threshold(),
        }
    }

    /// Starts from a cache already verified by [`crate::statedir::StateDir::load_cache`].
    pub fn with_cache(mut self, cache: CachedMap, map: PeerMap) -> Self {
        if map.device_id == self.device_id {
            self.cache = Some(cache);
            self.map = Some(map);
        }
        self
    }

    pub fn map(&self) -> Option<&PeerMap> {
        self.map.as_ref()
    }

    pub fn cache(&self) -> Option<&CachedMap> {
        self.cache.as_ref()
    }

    pub fn version(&self) -> Option<u64> {
        self.map.as_ref().map(|m| m.version)
    }

    pub fn on_full(&mut self, signed: SignedPeerMap) -> Result<(), MapRejected> {
        let map = signed.verify(&self.key)?;
        if map.device_id != self.device_id {
            return Err(MapRejected::WrongDevice {
                want: self.device_id,
                got: map.device_id,
            });
        }
        self.cache = Some(CachedMap {
            map: signed,
            deltas: Vec::new(),
        });
        self.map = Some(map);
        self.compact_at = compact_threshold();
        Ok(())
    }

    pub fn on_delta(&mut self, signed: SignedDelta) -> Result<DeltaOutcome, MapRejected> {
        let delta = signed.verify(&self.key)?;
        if delta.device_id != self.device_id {
            return Err(MapRejected::WrongDevice {
                want: self.device_id,
                got: delta.device_id,
            });
        }
        let (Some(map), Some(cache)) = (self.map.as_mut(), self.cache.as_mut()) else {
            return Ok(DeltaOutcome::Gap);
        };
        if delta.version <= map.version {
            return Ok(DeltaOutcome::Stale);
        }
        // Apply to a copy so a failure leaves the current map untouched.
        let mut next = map.clone();
        match next.apply(&delta) {
            Ok(()) => {}
            Err(MapError::VersionGap { .. }) => return Ok(DeltaOutcome::Gap),
            Err(e) => return Err(e.into()),
        }
        *map = next;
        cache.deltas.push(signed);
        // asked once, when the cache crosses the threshold: deltas that arrive before
        // the full map do not ask again (a lost answer is made up by the full map every
        // reconnection brings)
        Ok(DeltaOutcome::Applied {
            compact: cache.deltas.len() == self.compact_at + 1,
        })
    }
}

/// What the data plane should be told for `map`: no peers unless the device is active.
pub fn peer_configs(map: &PeerMap) -> Vec<PeerConfig> {
    if map.me.state != DeviceState::Active {
        return Vec::new();
    }
    map.peers
        .iter()
        .filter(|p| p.device_id != map.device_id)
        .map(|p| PeerConfig {
            device_id: p.device_id,
            name: p.name.clone(),
            public_key: p.public_key,
            allowed_ips: p.allowed_ips.clone(),
            endpoints: p.endpoints.clone(),
            persistent_keepalive: p.persistent_keepalive,
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use zmesh_shared::peermap::{Peer, SelfInfo, Signed};
    use zmesh_shared::{SigningKey, WgPrivateKey};

    pub(crate) fn peer(n: u8) -> Peer {
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
            allowed_ips: vec![IpAddr::V4(v4).into(), IpAddr::V6(v6).into()],
            endpoints: vec![format!("192.0.2.{n}:51820").parse().unwrap()],
            agentless: false,
            persistent_keepalive: None,
        }
    }

    pub(crate) fn map(dev: DeviceId, version: u64, peers: Vec<Peer>) -> PeerMap {
        let mut m = PeerMap {
            network_id: "net_00000000000000000000000000000001".parse().unwrap(),
            device_id: dev,
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
    fn full_map_then_deltas_then_gap_and_compaction() {
        let sk = SigningKey::generate();
        let dev = DeviceId::new();
        let mut st = MapState::new(sk.public_key(), dev);
        let (a, b) = (peer(2), peer(3));
        let m1 = map(dev, 1, vec![a.clone()]);
        // a delta before any map cannot apply
        let m2 = map(dev, 2, vec![a.clone(), b.clone()]);
        let d12 = Signed::sign(&m1.diff(&m2).unwrap(), &sk);
        assert_eq!(st.on_delta(d12.clone()).unwrap(), DeltaOutcome::Gap);
        st.on_full(Signed::sign(&m1, &sk)).unwrap();
        assert_eq!(
            st.on_delta(d12.clone()).unwrap(),
            DeltaOutcome::Applied { compact: false }
        );
        assert_eq!(st.map().unwrap(), &m2);
        assert_eq!(st.on_delta(d12).unwrap(), DeltaOutcome::Stale);
        // a delta from 5 -> 6 does not chain onto 2
        let m5 = map(dev, 5, vec![a.clone()]);
        let m6 = map(dev, 6, vec![]);
        assert_eq!(
            st.on_delta(Signed::sign(&m5.diff(&m6).unwrap(), &sk))
                .unwrap(),
            DeltaOutcome::Gap
        );
        assert_eq!(st.map().unwrap(), &m2);
        // forged delta: rejected, map untouched
        let forged = Signed::sign(
            &m2.diff(&map(dev, 3, vec![])).unwrap(),
            &SigningKey::generate(),
        );
        assert!(matches!(st.on_delta(forged), Err(MapRejected::Map(_))));
        assert_eq!(st.map().unwrap(), &m2);
        // another device's map: rejected
        assert!(matches!(
            st.on_full(Signed::sign(&map(DeviceId::new(), 9, vec![]), &sk)),
            Err(MapRejected::WrongDevice { .. })
        ));
        // pile up deltas until compaction is requested
        let mut cur = m2.clone();
        let mut compact_at = vec![];
        for i in 0..200u64 {
            let mut next = cur.clone();
            next.version += 1;
            next.peers[0].endpoints = vec![format!("192.0.2.9:{}", 1000 + i).parse().unwrap()];
            let d = Signed::sign(&cur.diff(&next).unwrap(), &sk);
            if let DeltaOutcome::Applied { compact: true } = st.on_delta(d).unwrap() {
                compact_at.push(i);
            }
            cur = next;
        }
        // asked once, between 64 and 128 cached deltas (one, d12, was cached before the
        // loop), however many more come before the full map
        assert_eq!(compact_at.len(), 1, "{compact_at:?}");
        let n = MAX_CACHED_DELTAS as u64;
        assert!(
            (n - 1..2 * n - 1).contains(&compact_at[0]),
            "{compact_at:?}"
        );
        // the cache replays to the same map
        assert_eq!(
            &st.cache().unwrap().restore(&sk.public_key()).unwrap(),
            st.map().unwrap()
        );
        // a full map resets the cache
        st.on_full(Signed::sign(&cur, &sk)).unwrap();
        assert!(st.cache().unwrap().deltas.is_empty());
    }

    #[test]
    fn agents_compact_at_different_points() {
        let key = SigningKey::generate().public_key();
        let at: std::collections::BTreeSet<usize> = (0..64)
            .map(|_| MapState::new(key, DeviceId::new()).compact_at)
            .collect();
        assert!(at.len() > 16, "thresholds not spread: {at:?}");
        assert!(at
            .iter()
            .all(|t| (MAX_CACHED_DELTAS..2 * MAX_CACHED_DELTAS).contains(t)));
    }

    #[test]
    fn peer_configs_only_when_active() {
        let dev = DeviceId::new();
        let mut m = map(dev, 1, vec![peer(2), peer(3)]);
        let cfgs = peer_configs(&m);
        assert_eq!(cfgs.len(), 2);
        assert_eq!(cfgs[0].allowed_ips, m.peers[0].allowed_ips);
        m.me.state = DeviceState::Pending;
        assert!(peer_configs(&m).is_empty());
    }
}
