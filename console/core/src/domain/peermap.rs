//! Builds each device's peer map from a network snapshot. Pure: no I/O, no clock
//! (the caller passes `now_ms`), so the HTTP layer can build thousands of maps from one
//! snapshot and tests can check the rules directly.
//!
//! A live device (Active, key not expired) sees exactly the live devices the compiled
//! access policy links it with (it may reach them or they may reach it), and its map
//! carries its inbound filter rules. Pending, revoked and expired devices get no map
//! and appear in nobody's map.

use ipnet::IpNet;
use zmesh_shared::peermap::{Peer, PeerMap, SelfInfo};
use zmesh_shared::policy::{Compiled, RouteGrant};
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

pub(crate) fn to_peer(d: &DeviceRow) -> Peer {
    Peer {
        exit_node: false,
        routes: Vec::new(),
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

/// `p` as seen by the device holding `grants` (its `DevicePolicy::routes`): the subnets
/// it may send through `p`, and whether `p` is an exit node it may choose. The shared
/// peer entries carry neither, since they depend on the receiving device; every map
/// and delta decorates its own copy.
pub(crate) fn with_routes(mut p: Peer, grants: &[RouteGrant]) -> Peer {
    if grants.is_empty() {
        return p;
    }
    let via = grants.iter().filter(|g| g.via == p.device_id);
    // grants are sorted by (via, prefix), so the routes come out sorted
    p.routes = via
        .clone()
        .filter(|g| !g.exit_node)
        .map(|g| g.prefix)
        .collect();
    p.exit_node = via.clone().any(|g| g.exit_node);
    p
}

/// The map of `device`: `None` when the device is not in the snapshot or not live.
/// Compiles the snapshot's policy: for one-off maps (exports, tests); streams use
/// [`PeerMapBuilder::with_compiled`] with the cached compilation.
pub fn build_peer_map(snap: &NetworkSnapshot, device: DeviceId, now_ms: i64) -> Option<PeerMap> {
    PeerMapBuilder::new(snap, now_ms).build(device)
}

/// Builds many maps from one snapshot: the live peers are converted and sorted once.
pub struct PeerMapBuilder<'a> {
    snap: &'a NetworkSnapshot,
    compiled: std::borrow::Cow<'a, Compiled>,
    now_ms: i64,
    /// Every live device as a peer, sorted by device id.
    peers: Vec<Peer>,
}

impl<'a> PeerMapBuilder<'a> {
    /// Compiles the snapshot's policy itself.
    pub fn new(snap: &'a NetworkSnapshot, now_ms: i64) -> Self {
        let compiled = super::policy::compile_snapshot(snap);
        Self::make(snap, std::borrow::Cow::Owned(compiled), now_ms)
    }

    /// Uses a policy already compiled for this snapshot.
    pub fn with_compiled(snap: &'a NetworkSnapshot, compiled: &'a Compiled, now_ms: i64) -> Self {
        Self::make(snap, std::borrow::Cow::Borrowed(compiled), now_ms)
    }

    fn make(
        snap: &'a NetworkSnapshot,
        compiled: std::borrow::Cow<'a, Compiled>,
        now_ms: i64,
    ) -> Self {
        let mut peers: Vec<Peer> = snap
            .devices
            .iter()
            .filter(|d| is_live(d, now_ms))
            .map(to_peer)
            .collect();
        peers.sort_by_key(|p| p.device_id);
        PeerMapBuilder {
            snap,
            compiled,
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
        // Not in the compiled policy (cannot happen for a live device): no peers, deny all.
        let (peers, filter) = match self.compiled.get(&me.id) {
            Some(dp) => {
                let peers: Vec<Peer> = if dp.peer_count() * 4 < self.peers.len() {
                    // few links: look each one up instead of scanning every live device
                    dp.peers()
                        .filter_map(|id| {
                            self.peers
                                .binary_search_by_key(&id, |p| p.device_id)
                                .ok()
                                .map(|i| with_routes(self.peers[i].clone(), &dp.routes))
                        })
                        .collect()
                } else {
                    self.peers
                        .iter()
                        .filter(|p| dp.has_peer(&p.device_id))
                        .map(|p| with_routes(p.clone(), &dp.routes))
                        .collect()
                };
                (peers, dp.filter.to_vec())
            }
            None => (vec![], vec![]),
        };
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
                approved_routes: self.snap.routes.get(&me.id).cloned().unwrap_or_default(),
            },
            peers,
            filter,
            policy_version: Some(self.snap.policy.version),
            dns: Some(super::dns::config(net)),
            network: Some(network_info(net)),
        };
        // already in order; normalize keeps the invariant explicit and is cheap on sorted input
        map.normalize();
        Some(map)
    }
}

/// What a device's map says about its network: its name and whether it is exclusive.
pub fn network_info(net: &crate::store::Network) -> zmesh_shared::peermap::NetworkInfo {
    zmesh_shared::peermap::NetworkInfo {
        name: net.name.clone(),
        exclusive: net.exclusive,
    }
}

/// The peers whose key or endpoints changed from `old` to `new`, sorted by device id,
/// when nothing else did: same policy, same approved routes, same network, the same devices with the same
/// names, owners, tags, addresses states and owners' IdP groups, each live at `new_ms` exactly when it was
/// live at `old_ms`. Then the compiled policy of `old` holds for `new` too, and every
/// device's new map is its old map with these peers replaced: a stream can send that
/// delta without rebuilding its map. `None` when anything else changed (rebuild).
///
/// This is the common change in a big network (an agent roams or rekeys), so it is
/// worth an O(devices) pass once per revision to spare every stream a rebuild.
pub fn quick_changes(
    old: &NetworkSnapshot,
    old_ms: i64,
    new: &NetworkSnapshot,
    new_ms: i64,
) -> Option<Vec<Peer>> {
    let (a, b) = (&old.network, &new.network);
    if a.id != b.id
        || a.name != b.name
        || a.exclusive != b.exclusive
        || a.prefix_v4 != b.prefix_v4
        || a.prefix_v6 != b.prefix_v6
        || old.policy.version != new.policy.version
        || old.policy.text != new.policy.text
        // IdP groups decide who `group:NAME` selects: a change recompiles
        || old.owner_groups != new.owner_groups
        // approved routes are compiled into grants and forwarding rules
        || old.routes != new.routes
        || old.devices.len() != new.devices.len()
    {
        return None;
    }
    let before: std::collections::HashMap<DeviceId, &DeviceRow> =
        old.devices.iter().map(|d| (d.id, d)).collect();
    let mut changed = vec![];
    for d in &new.devices {
        let o = before.get(&d.id)?;
        let same_shape = o.name == d.name
            && o.owner == d.owner
            && o.tags == d.tags
            && o.overlay_v4 == d.overlay_v4
            && o.overlay_v6 == d.overlay_v6
            && o.state == d.state
            && o.agentless == d.agentless
            && o.key_expires_at_ms == d.key_expires_at_ms
            && is_live(o, old_ms) == is_live(d, new_ms);
        if !same_shape {
            return None;
        }
        if is_live(d, new_ms) && (o.public_key != d.public_key || o.endpoints != d.endpoints) {
            changed.push(to_peer(d));
        }
    }
    changed.sort_by_key(|p| p.device_id);
    Some(changed)
}

/// The device's map: the peers and filter the compiled policy gives an active device,
/// an empty map for a pending one (so it learns its own state), `None` when it is
/// revoked or gone. Built from scratch: streams use [`super::view::NetworkView::map`]; this is the
/// independent reference the view's deltas are tested and benchmarked against.
pub fn map_for(
    snap: &NetworkSnapshot,
    compiled: &Compiled,
    device: DeviceId,
    now_ms: i64,
) -> Option<PeerMap> {
    if let Some(m) = PeerMapBuilder::with_compiled(snap, compiled, now_ms).build(device) {
        return Some(m);
    }
    let d = snap.devices.iter().find(|d| d.id == device)?;
    if d.state != DeviceState::Pending {
        return None;
    }
    Some(PeerMap {
        network_id: snap.network.id,
        device_id: d.id,
        version: snap.network.revision,
        issued_at_ms: now_ms,
        me: SelfInfo {
            name: d.name.clone(),
            state: d.state,
            overlay_v4: d.overlay_v4,
            overlay_v6: d.overlay_v6,
            network_v4: snap.network.prefix_v4,
            network_v6: snap.network.prefix_v6,
            approved_routes: snap.routes.get(&d.id).cloned().unwrap_or_default(),
        },
        peers: vec![],
        filter: vec![],
        policy_version: Some(snap.policy.version),
        dns: Some(super::dns::config(&snap.network)),
        network: Some(network_info(&snap.network)),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use zmesh_shared::{NetworkId, WgPrivateKey};

    use super::*;
    use crate::store::{Network, PolicyVersion};

    pub(crate) fn device(n: u8, state: DeviceState) -> DeviceRow {
        DeviceRow {
            id: DeviceId::new(),
            network_id: NetworkId::from_uuid(uuid::Uuid::nil()),
            name: format!("d{n}"),
            owner: "admin".into(),
            tags: vec![],
            public_key: WgPrivateKey::generate().public_key(),
            overlay_v4: Ipv4Addr::new(100, 64, 0, n),
            overlay_v6: format!("fd00:1:2::{n:x}").parse().unwrap(),
            state,
            agentless: false,
            hostname: None,
            os: None,
            endpoints: vec![format!("192.0.2.{n}:51820").parse().unwrap()],
            key_expires_at_ms: None,
            created_at_ms: 0,
            last_seen_ms: None,
            enroll_key_id: None,
            agent_version: None,
        }
    }

    pub(crate) fn snapshot(devices: Vec<DeviceRow>) -> NetworkSnapshot {
        NetworkSnapshot {
            network: Network {
                id: NetworkId::from_uuid(uuid::Uuid::nil()),
                name: "default".into(),
                prefix_v4: "100.64.0.0/10".parse().unwrap(),
                prefix_v6: "fd00:1:2::/48".parse().unwrap(),
                revision: 42,
                created_at_ms: 0,
                dns_suffix: None,
                dns_records: vec![],
                dns_split: vec![],
                exclusive: false,
            },
            devices,
            policy: PolicyVersion::builtin_default(0),
            owner_groups: Default::default(),
            routes: Default::default(),
        }
    }

    const NOW: i64 = 1_000_000;

    #[test]
    fn only_live_devices_get_maps_and_appear_in_them() {
        let a = device(1, DeviceState::Active);
        let b = device(2, DeviceState::Active);
        let pending = device(3, DeviceState::Pending);
        let revoked = device(4, DeviceState::Revoked);
        let mut expired = device(5, DeviceState::Active);
        expired.key_expires_at_ms = Some(NOW);
        let mut not_yet = device(6, DeviceState::Active);
        not_yet.key_expires_at_ms = Some(NOW + 1);
        let snap = snapshot(vec![
            a.clone(),
            b.clone(),
            pending.clone(),
            revoked.clone(),
            expired.clone(),
            not_yet.clone(),
        ]);

        for dead in [&pending, &revoked, &expired] {
            assert!(
                build_peer_map(&snap, dead.id, NOW).is_none(),
                "{}",
                dead.name
            );
        }
        assert!(build_peer_map(&snap, DeviceId::new(), NOW).is_none());

        let m = build_peer_map(&snap, a.id, NOW).unwrap();
        assert_eq!(m.version, 42);
        assert_eq!(m.device_id, a.id);
        assert_eq!(m.issued_at_ms, NOW);
        assert_eq!(m.me.name, "d1");
        assert_eq!(m.me.overlay_v4, a.overlay_v4);
        assert_eq!(m.me.network_v4, snap.network.prefix_v4);
        let ids: Vec<DeviceId> = m.peers.iter().map(|p| p.device_id).collect();
        let mut want = vec![b.id, not_yet.id];
        want.sort();
        assert_eq!(ids, want, "only live peers, sorted, never self");

        let pb = m.peer(&b.id).unwrap();
        assert_eq!(pb.public_key, b.public_key);
        assert_eq!(pb.endpoints, b.endpoints);
        assert_eq!(
            pb.allowed_ips,
            vec![
                "100.64.0.2/32".parse::<IpNet>().unwrap(),
                "fd00:1:2::2/128".parse::<IpNet>().unwrap()
            ]
        );
        assert_eq!(pb.persistent_keepalive, None);
        assert!(!pb.agentless);

        // the key expiring one millisecond later takes `not_yet` out of every map
        let later = build_peer_map(&snap, a.id, NOW + 1).unwrap();
        assert_eq!(later.peers.len(), 1);
        assert!(build_peer_map(&snap, not_yet.id, NOW + 1).is_none());
    }

    #[test]
    fn agentless_peers_get_keepalive_and_maps_are_sorted() {
        let mut devices: Vec<DeviceRow> =
            (1..=20).map(|n| device(n, DeviceState::Active)).collect();
        devices[7].agentless = true;
        let agentless = devices[7].id;
        let snap = snapshot(devices.clone());
        for d in &devices {
            let m = build_peer_map(&snap, d.id, NOW).unwrap();
            assert_eq!(m.peers.len(), 19);
            assert!(m.peers.windows(2).all(|w| w[0].device_id < w[1].device_id));
            assert!(m.peer(&d.id).is_none());
            if d.id != agentless {
                let p = m.peer(&agentless).unwrap();
                assert!(p.agentless);
                assert_eq!(p.persistent_keepalive, Some(AGENTLESS_KEEPALIVE_SECS));
                assert!(m
                    .peers
                    .iter()
                    .filter(|p| p.device_id != agentless)
                    .all(|p| p.persistent_keepalive.is_none()));
            }
        }
        // builder and one-off builder agree, and two builds are equal (deterministic)
        let b = PeerMapBuilder::new(&snap, NOW);
        assert_eq!(
            b.build(devices[3].id),
            build_peer_map(&snap, devices[3].id, NOW)
        );
    }

    #[test]
    fn changed_endpoint_shows_up_as_one_upsert() {
        let a = device(1, DeviceState::Active);
        let b = device(2, DeviceState::Active);
        let snap1 = snapshot(vec![a.clone(), b.clone()]);
        let mut b2 = b.clone();
        b2.endpoints = vec!["198.51.100.7:41641".parse().unwrap()];
        let mut snap2 = snapshot(vec![a.clone(), b2]);
        snap2.network.revision = 43;
        let m1 = build_peer_map(&snap1, a.id, NOW).unwrap();
        let m2 = build_peer_map(&snap2, a.id, NOW).unwrap();
        let d = m1.diff(&m2).unwrap();
        assert_eq!((d.base_version, d.version), (42, 43));
        assert_eq!(d.upsert.len(), 1);
        assert!(d.remove.is_empty());
        let ipv6: Ipv6Addr = "fd00:1:2::2".parse().unwrap();
        assert_eq!(d.upsert[0].overlay_v6, ipv6);
    }

    #[test]
    fn policy_decides_peers_and_filter() {
        let mut srv = device(1, DeviceState::Active);
        srv.tags = vec!["server".into()];
        let client = device(2, DeviceState::Active);
        let loner = device(3, DeviceState::Active);
        let mut snap = snapshot(vec![srv.clone(), client.clone(), loner.clone()]);
        // the default policy links everyone and accepts everything
        let m = build_peer_map(&snap, loner.id, NOW).unwrap();
        assert_eq!(m.peers.len(), 2);
        assert_eq!(m.filter.len(), 1);
        snap.policy.text = r#"{"version": 1, "tag_owners": {"tag:server": []},
            "rules": [{"src": ["d2"], "dst": ["tag:server:22"], "proto": "tcp"}]}"#
            .into();
        let ms = build_peer_map(&snap, srv.id, NOW).unwrap();
        let mc = build_peer_map(&snap, client.id, NOW).unwrap();
        let ml = build_peer_map(&snap, loner.id, NOW).unwrap();
        assert_eq!(
            ms.peers.iter().map(|p| p.device_id).collect::<Vec<_>>(),
            vec![client.id]
        );
        assert_eq!(
            mc.peers.iter().map(|p| p.device_id).collect::<Vec<_>>(),
            vec![srv.id]
        );
        assert!(
            ml.peers.is_empty(),
            "a device no rule links learns of nobody"
        );
        assert!(ms.peers.iter().all(|p| p.device_id != loner.id));
        // the server accepts tcp/22 from the client only; the client accepts nothing new
        assert_eq!(ms.filter.len(), 1);
        let f = &ms.filter[0];
        assert!(f.accepts(
            client.overlay_v4.into(),
            zmesh_shared::policy::Proto::Tcp,
            22
        ));
        assert!(!f.accepts(
            client.overlay_v4.into(),
            zmesh_shared::policy::Proto::Tcp,
            80
        ));
        assert!(!f.accepts(
            loner.overlay_v4.into(),
            zmesh_shared::policy::Proto::Tcp,
            22
        ));
        assert!(mc.filter.is_empty() && ml.filter.is_empty());
        // a stored text that does not parse fails closed
        snap.policy.text = "{".into();
        let m = build_peer_map(&snap, srv.id, NOW).unwrap();
        assert!(m.peers.is_empty() && m.filter.is_empty());
    }

    /// A policy in which tag:web may reach tag:db and nothing else is linked.
    pub(crate) const WEB_DB: &str = r#"{ "version": 1, "tag_owners": { "tag:web": [], "tag:db": [] },
        "rules": [ { "src": ["tag:web"], "dst": ["tag:db:5432"], "proto": "tcp" } ] }"#;

    pub(crate) fn tagged(n: u8, tag: &str) -> DeviceRow {
        let mut d = device(n, DeviceState::Active);
        d.tags = vec![tag.to_string()];
        d
    }

    #[test]
    fn quick_changes_only_for_keys_and_endpoints() {
        let devices: Vec<DeviceRow> = (1..=6).map(|n| device(n, DeviceState::Active)).collect();
        let old = snapshot(devices.clone());
        let with = |f: &dyn Fn(&mut Vec<DeviceRow>)| {
            let mut d = devices.clone();
            f(&mut d);
            let mut s = snapshot(d);
            s.network.revision += 1;
            s
        };
        // endpoints and keys: quick, and only the changed live peers
        let new = with(&|d| {
            d[1].endpoints = vec!["198.51.100.7:4000".parse().unwrap()];
            d[3].public_key = WgPrivateKey::generate().public_key();
        });
        let q = quick_changes(&old, NOW, &new, NOW).unwrap();
        let mut want = vec![new.devices[1].id, new.devices[3].id];
        want.sort();
        assert_eq!(q.iter().map(|p| p.device_id).collect::<Vec<_>>(), want);
        assert_eq!(quick_changes(&old, NOW, &old, NOW), Some(vec![]));
        // anything the policy or liveness depends on: rebuild
        let structural: Vec<(&str, NetworkSnapshot)> = vec![
            ("name", with(&|d| d[0].name = "other".into())),
            ("tags", with(&|d| d[0].tags = vec!["web".into()])),
            ("owner", with(&|d| d[0].owner = "bob".into())),
            ("state", with(&|d| d[0].state = DeviceState::Revoked)),
            ("expiry", with(&|d| d[0].key_expires_at_ms = Some(NOW + 10))),
            (
                "new device",
                with(&|d| d.push(device(9, DeviceState::Active))),
            ),
            (
                "gone device",
                with(&|d| {
                    d.pop();
                }),
            ),
            ("IdP groups", {
                let mut s = with(&|_| {});
                s.owner_groups
                    .insert("user:alice".into(), vec!["group:eng".into()]);
                s
            }),
            ("approved routes", {
                let mut s = with(&|_| {});
                s.routes
                    .insert(devices[0].id, vec!["10.1.0.0/24".parse().unwrap()]);
                s
            }),
            ("policy", {
                let mut s = snapshot(devices.clone());
                s.policy.version = 7;
                s.policy.text = WEB_DB.into();
                s
            }),
        ];
        for (what, new) in &structural {
            assert!(quick_changes(&old, NOW, new, NOW).is_none(), "{what}");
        }
        // a key that expires between the two views changes who is live
        let mut d = devices.clone();
        d[2].key_expires_at_ms = Some(NOW + 5);
        let (a, b) = (snapshot(d.clone()), snapshot(d));
        assert!(quick_changes(&a, NOW, &b, NOW + 1).is_some());
        assert!(quick_changes(&a, NOW, &b, NOW + 5).is_none());
        // a pending device's endpoints are nobody's business
        let mut d = devices.clone();
        d[4].state = DeviceState::Pending;
        let a = snapshot(d.clone());
        d[4].endpoints = vec![];
        assert_eq!(quick_changes(&a, NOW, &snapshot(d), NOW), Some(vec![]));
    }
}
