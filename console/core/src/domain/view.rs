//! A network at one revision as the agent streams see it (snapshot, compiled policy,
//! every live device as a shared peer entry), and the delta one device needs between
//! two such views, computed without keeping any device's map.
//!
//! Why: a stream used to keep the last map it sent and rebuild the whole map on every
//! change. In a 10,000-device full mesh that is ~25 GB of maps and ~50 s of CPU per
//! change. Here a stream keeps only an `Arc` of the view its agent is at; the peer
//! entries are built once per revision and shared; devices whose policy links the same
//! set (one `Arc` in the compiled policy) share one peer diff, computed once; and a
//! change of keys or endpoints only (the common one) is a lookup per changed peer.
//!
//! Maps are built at the view's clock (`built_at_ms`), so a view's maps are a pure
//! function of the view, which is what lets a stream reconstruct nothing and still send
//! exact deltas. Key expiry moves the revision (see `crate::expiry`), so that clock is
//! never more than about a second behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zmesh_shared::peermap::{Peer, PeerDelta, PeerMap, SelfInfo};
use zmesh_shared::policy::{Compiled, DevicePolicy};
use zmesh_shared::wire::DeviceState;
use zmesh_shared::DeviceId;

use super::peermap::{is_live, to_peer, with_routes};
use crate::store::{DeviceRow, NetworkSnapshot};

/// Class diffs kept per view before the cache is cleared (bounds its memory when a
/// policy gives many devices their own class).
const MAX_CACHED_DIFFS: usize = 1024;

#[derive(Debug)]
pub struct NetworkView {
    pub snapshot: Arc<NetworkSnapshot>,
    pub compiled: Arc<Compiled>,
    /// The clock liveness (key expiry) is judged at for every map of this view.
    pub built_at_ms: i64,
    /// Set when this view differs from the one before it only in peers' keys and
    /// endpoints (see [`crate::peermap::quick_changes`]).
    pub quick: Option<QuickDelta>,
    /// Every live device as a peer. An entry equal to the previous view's keeps its
    /// `Arc`, so an unchanged pointer means an unchanged peer.
    peers: HashMap<DeviceId, Arc<Peer>>,
    /// Position of each device in `snapshot.devices`.
    rows: HashMap<DeviceId, usize>,
    /// Peer diffs from older views, per (old revision, old class, new class).
    diffs: Mutex<HashMap<(u64, usize, usize), Arc<ClassDiff>>>,
}

/// The peers changed since revision `from_revision`, nothing else having changed.
#[derive(Debug)]
pub struct QuickDelta {
    pub from_revision: u64,
    /// Sorted by device id.
    pub peers: Vec<Peer>,
}

/// How the peers linked by one class changed (the class members themselves included;
/// each device drops itself).
#[derive(Debug)]
struct ClassDiff {
    upsert: Vec<Arc<Peer>>,
    remove: Vec<DeviceId>,
    /// Pins the two allocations whose addresses key the cache.
    _keep: (Arc<[DeviceId]>, Arc<[DeviceId]>),
}

/// What a stream sends to move its agent from one view to another.
#[derive(Debug)]
pub enum Step {
    /// Nothing this device can see changed.
    Same,
    Delta(Box<PeerDelta>),
    /// The device has no map any more (revoked, deleted, key expired): the reason.
    Gone(&'static str),
}

impl NetworkView {
    /// Builds the view, reusing `prev`'s peer entries where they did not change.
    pub fn new(
        snapshot: Arc<NetworkSnapshot>,
        compiled: Arc<Compiled>,
        built_at_ms: i64,
        quick: Option<QuickDelta>,
        prev: Option<&NetworkView>,
    ) -> Self {
        let mut peers = HashMap::with_capacity(snapshot.devices.len());
        let mut rows = HashMap::with_capacity(snapshot.devices.len());
        for (i, d) in snapshot.devices.iter().enumerate() {
            rows.insert(d.id, i);
            if !is_live(d, built_at_ms) {
                continue;
            }
            let p = to_peer(d);
            let entry = match prev.and_then(|v| v.peers.get(&d.id)) {
                Some(old) if **old == p => old.clone(),
                _ => Arc::new(p),
            };
            peers.insert(d.id, entry);
        }
        NetworkView {
            snapshot,
            compiled,
            built_at_ms,
            quick,
            peers,
            rows,
            diffs: Mutex::new(HashMap::new()),
        }
    }

    pub fn revision(&self) -> u64 {
        self.snapshot.network.revision
    }

    fn row(&self, id: DeviceId) -> Option<&DeviceRow> {
        self.rows.get(&id).map(|&i| &self.snapshot.devices[i])
    }

    /// The device's policy entry when it is live in this view.
    fn live(&self, id: DeviceId) -> Option<(&DeviceRow, Option<&DevicePolicy>)> {
        let row = self.row(id)?;
        is_live(row, self.built_at_ms).then(|| (row, self.compiled.get(&id)))
    }

    pub fn state_of(&self, id: DeviceId) -> Option<DeviceState> {
        self.row(id).map(|d| d.state)
    }

    fn self_info(&self, d: &DeviceRow) -> SelfInfo {
        SelfInfo {
            name: d.name.clone(),
            state: d.state,
            overlay_v4: d.overlay_v4,
            overlay_v6: d.overlay_v6,
            network_v4: self.snapshot.network.prefix_v4,
            network_v6: self.snapshot.network.prefix_v6,
            approved_routes: self.snapshot.routes.get(&d.id).cloned().unwrap_or_default(),
        }
    }

    /// The device's map: its peers and filter when live, an empty map when pending (so
    /// it learns its state), `None` when revoked, expired or gone.
    pub fn map(&self, id: DeviceId) -> Option<PeerMap> {
        let row = self.row(id)?;
        let (peers, filter) = if is_live(row, self.built_at_ms) {
            match self.compiled.get(&id) {
                // dp.peers() is sorted, so the map is in canonical order
                Some(dp) => (
                    dp.peers()
                        .filter_map(|p| {
                            self.peers
                                .get(&p)
                                .map(|e| with_routes((**e).clone(), &dp.routes))
                        })
                        .collect(),
                    dp.filter.to_vec(),
                ),
                None => (vec![], vec![]),
            }
        } else if row.state == DeviceState::Pending {
            (vec![], vec![])
        } else {
            return None;
        };
        Some(PeerMap {
            network_id: self.snapshot.network.id,
            device_id: id,
            version: self.revision(),
            issued_at_ms: self.built_at_ms,
            me: self.self_info(row),
            peers,
            filter,
            policy_version: Some(self.snapshot.policy.version),
            dns: Some(super::dns::config(&self.snapshot.network)),
            network: Some(super::peermap::network_info(&self.snapshot.network)),
        })
    }

    /// Why a device gets no map: its key expired (an admin can extend it; the agent
    /// then enrolls again) or it was revoked or deleted.
    pub fn gone_reason(&self, id: DeviceId) -> &'static str {
        match self.row(id) {
            Some(d)
                if d.state == DeviceState::Active
                    && d.key_expires_at_ms.is_some_and(|t| t <= self.built_at_ms) =>
            {
                "key expired"
            }
            _ => "revoked",
        }
    }

    /// What moves device `id` from its map in `old` (which its agent has, at version
    /// `base_version`) to its map in this view.
    pub fn step(&self, old: &NetworkView, id: DeviceId, base_version: u64) -> Step {
        if self.row(id).is_none() {
            return Step::Gone(self.gone_reason(id));
        }
        // Live in both views, with a policy entry in both (a live device always has one).
        let (Some((row_o, Some(dp_o))), Some((row_n, Some(dp_n)))) = (old.live(id), self.live(id))
        else {
            return self.whole(old, id, base_version);
        };
        let me_n = self.self_info(row_n);
        let me = (old.self_info(row_o) != me_n).then_some(me_n);
        let filter = (!Arc::ptr_eq(&dp_o.filter, &dp_n.filter) && dp_o.filter != dp_n.filter)
            .then(|| dp_n.filter.to_vec());
        let (upsert, remove): (Vec<Peer>, Vec<DeviceId>) = match &self.quick {
            Some(q)
                if q.from_revision == old.revision()
                    && Arc::ptr_eq(&old.compiled, &self.compiled) =>
            {
                let up = q.peers.iter().filter(|p| dp_n.has_peer(&p.device_id));
                (up.cloned().collect(), vec![])
            }
            _ => {
                let cd = self.class_diff(old, dp_o.linked(), dp_n.linked());
                (
                    cd.upsert
                        .iter()
                        .filter(|p| p.device_id != id)
                        .map(|p| (**p).clone())
                        .collect(),
                    cd.remove.iter().copied().filter(|d| *d != id).collect(),
                )
            }
        };
        let upsert = self.route_upserts(dp_o, dp_n, upsert, &remove);
        let (pv_o, pv_n) = (old.snapshot.policy.version, self.snapshot.policy.version);
        let policy_version = (pv_o != pv_n).then_some(pv_n);
        let dns_n = super::dns::config(&self.snapshot.network);
        let dns = (super::dns::config(&old.snapshot.network) != dns_n).then(|| Box::new(dns_n));
        let info_n = super::peermap::network_info(&self.snapshot.network);
        let network =
            (super::peermap::network_info(&old.snapshot.network) != info_n).then_some(info_n);
        if me.is_none()
            && filter.is_none()
            && policy_version.is_none()
            && dns.is_none()
            && network.is_none()
            && upsert.is_empty()
            && remove.is_empty()
        {
            return Step::Same;
        }
        Step::Delta(Box::new(PeerDelta {
            network_id: self.snapshot.network.id,
            device_id: id,
            base_version,
            version: self.revision(),
            issued_at_ms: self.built_at_ms,
            me,
            upsert,
            remove,
            filter,
            policy_version,
            dns,
            network,
        }))
    }

    /// Whether device `id`'s map differs between `old` and this view: what [`Self::step`]
    /// answers `Delta` for, without building the delta (the acknowledgement tracker asks
    /// it for every device of the network). `None` when the device has no map here.
    pub fn changes_for(&self, old: &NetworkView, id: DeviceId) -> Option<bool> {
        self.row(id)?;
        let (Some((row_o, Some(dp_o))), Some((row_n, Some(dp_n)))) = (old.live(id), self.live(id))
        else {
            // pending, approved, revoked, expired: small maps, compared whole
            let new = self.map(id)?;
            return Some(old.map(id).is_none_or(|o| o.diff(&new).is_some()));
        };
        if old.self_info(row_o) != self.self_info(row_n)
            || (!Arc::ptr_eq(&dp_o.filter, &dp_n.filter) && dp_o.filter != dp_n.filter)
            || old.snapshot.policy.version != self.snapshot.policy.version
            || super::dns::config(&old.snapshot.network)
                != super::dns::config(&self.snapshot.network)
            || super::peermap::network_info(&old.snapshot.network)
                != super::peermap::network_info(&self.snapshot.network)
        {
            return Some(true);
        }
        let peers = match &self.quick {
            Some(q)
                if q.from_revision == old.revision()
                    && Arc::ptr_eq(&old.compiled, &self.compiled) =>
            {
                q.peers.iter().any(|p| dp_n.has_peer(&p.device_id))
            }
            _ => {
                let cd = self.class_diff(old, dp_o.linked(), dp_n.linked());
                cd.upsert.iter().any(|p| p.device_id != id) || cd.remove.iter().any(|d| *d != id)
            }
        };
        Some(peers || !self.route_upserts(dp_o, dp_n, vec![], &[]).is_empty())
    }

    /// Decorates the peers of a delta with the device's route grants, and adds the
    /// peers whose grants alone changed (a route approved or withdrawn changes no
    /// shared peer entry, so the class diff cannot see it).
    fn route_upserts(
        &self,
        dp_o: &DevicePolicy,
        dp_n: &DevicePolicy,
        upsert: Vec<Peer>,
        remove: &[DeviceId],
    ) -> Vec<Peer> {
        let mut upsert: Vec<Peer> = upsert
            .into_iter()
            .map(|p| with_routes(p, &dp_n.routes))
            .collect();
        if Arc::ptr_eq(&dp_o.routes, &dp_n.routes) || dp_o.routes == dp_n.routes {
            return upsert;
        }
        let mut vias: Vec<DeviceId> = dp_o
            .routes
            .iter()
            .chain(dp_n.routes.iter())
            .map(|g| g.via)
            .collect();
        vias.sort();
        vias.dedup();
        let before = upsert.len();
        for via in vias {
            if remove.contains(&via)
                || upsert[..before].iter().any(|p| p.device_id == via)
                || !dp_n.has_peer(&via)
            {
                continue;
            }
            let Some(entry) = self.peers.get(&via) else {
                continue;
            };
            let n = with_routes((**entry).clone(), &dp_n.routes);
            let o = with_routes((**entry).clone(), &dp_o.routes);
            if n.routes != o.routes || n.exit_node != o.exit_node {
                upsert.push(n);
            }
        }
        if upsert.len() > before {
            upsert.sort_by_key(|p| p.device_id);
        }
        upsert
    }

    /// Pending, approved, revoked, expired: small maps or none, so both are built and
    /// diffed whole.
    fn whole(&self, old: &NetworkView, id: DeviceId, base_version: u64) -> Step {
        let Some(new) = self.map(id) else {
            return Step::Gone(self.gone_reason(id));
        };
        match old.map(id) {
            Some(o) => self.finish(o.diff(&new), base_version),
            // the agent had no map from `old`: a delta from nothing
            None => self.finish(
                Some(PeerDelta {
                    network_id: new.network_id,
                    device_id: id,
                    base_version,
                    version: new.version,
                    issued_at_ms: new.issued_at_ms,
                    me: Some(new.me),
                    upsert: new.peers,
                    remove: vec![],
                    filter: Some(new.filter),
                    policy_version: new.policy_version,
                    dns: new.dns.map(Box::new),
                    network: new.network,
                }),
                base_version,
            ),
        }
    }

    fn finish(&self, d: Option<PeerDelta>, base_version: u64) -> Step {
        match d {
            Some(mut d) => {
                d.base_version = base_version;
                Step::Delta(Box::new(d))
            }
            None => Step::Same,
        }
    }

    /// The peer diff of one class pair, shared by every device in it (cached when the
    /// class has other members who will ask for it too).
    fn class_diff(
        &self,
        old: &NetworkView,
        l_o: &Arc<[DeviceId]>,
        l_n: &Arc<[DeviceId]>,
    ) -> Arc<ClassDiff> {
        let key = (
            old.revision(),
            Arc::as_ptr(l_o) as *const DeviceId as usize,
            Arc::as_ptr(l_n) as *const DeviceId as usize,
        );
        let shared = Arc::strong_count(l_n) > 2;
        if shared {
            let cache = self.diffs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(d) = cache.get(&key) {
                return d.clone();
            }
        }
        let d = Arc::new(self.walk(old, l_o, l_n));
        if shared {
            let mut cache = self.diffs.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= MAX_CACHED_DIFFS {
                cache.clear();
            }
            cache.insert(key, d.clone());
        }
        d
    }

    /// Merges the two sorted linked lists: what left, what came, what changed.
    fn walk(&self, old: &NetworkView, l_o: &Arc<[DeviceId]>, l_n: &Arc<[DeviceId]>) -> ClassDiff {
        let (mut upsert, mut remove) = (vec![], vec![]);
        let (mut i, mut j) = (0, 0);
        while i < l_o.len() || j < l_n.len() {
            let id = match (l_o.get(i), l_n.get(j)) {
                (Some(a), Some(b)) => *a.min(b),
                (Some(a), None) => *a,
                (None, Some(b)) => *b,
                (None, None) => break,
            };
            let p_o = (l_o.get(i) == Some(&id))
                .then(|| old.peers.get(&id))
                .flatten();
            let p_n = (l_n.get(j) == Some(&id))
                .then(|| self.peers.get(&id))
                .flatten();
            if l_o.get(i) == Some(&id) {
                i += 1;
            }
            if l_n.get(j) == Some(&id) {
                j += 1;
            }
            match (p_o, p_n) {
                (Some(_), None) => remove.push(id),
                (None, Some(n)) => upsert.push(n.clone()),
                (Some(o), Some(n)) if !Arc::ptr_eq(o, n) && o != n => upsert.push(n.clone()),
                _ => {}
            }
        }
        ClassDiff {
            upsert,
            remove,
            _keep: (l_o.clone(), l_n.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use zmesh_shared::WgPrivateKey;

    use super::*;
    use crate::domain::peermap::map_for;
    use crate::domain::peermap::quick_changes;
    use crate::domain::peermap::tests::{snapshot, tagged, WEB_DB};

    const T0: i64 = 1_000_000;

    /// tag:web may use routes inside 10.0.0.0/8 and exit nodes; tag:db reaches every
    /// device (`*`), which opens no route.
    const ROUTES: &str = r#"{ "version": 1, "tag_owners": { "tag:web": [], "tag:db": [] },
        "rules": [ { "src": ["tag:web"], "dst": ["10.0.0.0/8:80"], "proto": "tcp" },
                   { "src": ["tag:web"], "dst": ["autogroup:internet:*"] },
                   { "src": ["tag:db"], "dst": ["*:*"] } ] }"#;

    /// Builds the next view the way the snapshot cache does.
    fn next_view(prev: Option<&NetworkView>, snap: NetworkSnapshot, at: i64) -> NetworkView {
        let snap = Arc::new(snap);
        let quick = prev.and_then(|p| {
            let peers = quick_changes(&p.snapshot, p.built_at_ms, &snap, at)?;
            Some((
                p.compiled.clone(),
                QuickDelta {
                    from_revision: p.revision(),
                    peers,
                },
            ))
        });
        let (compiled, quick) = match quick {
            Some((c, q)) => (c, Some(q)),
            None => (
                Arc::new(crate::domain::policy::compile_snapshot(&snap)),
                None,
            ),
        };
        NetworkView::new(snap, compiled, at, quick, prev)
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// Every kind of change, at random, under a policy that links only some devices and
    /// under allow-all: each agent's map, moved by the steps its stream would send
    /// (applied as the agent applies them), equals the map rebuilt from scratch by the
    /// independent reference (`map_for`), and a device that must go is told so.
    #[test]
    fn steps_reach_the_rebuilt_maps() {
        // views with the quick path, deltas with upserts, removals, filters, self info,
        // peers with routes
        let mut seen = [0usize; 6];
        for seed in [1u64, 7, 5, 1234] {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
            let tags = ["web", "db", "other"];
            let mut devices: Vec<DeviceRow> = (1..=10u8)
                .map(|n| tagged(n, tags[n as usize % 3]))
                .collect();
            devices[9].state = DeviceState::Pending;
            let mut snap = snapshot(devices);
            snap.policy.text = WEB_DB.into();
            snap.policy.version = 1;
            let mut at = T0;
            let mut view = next_view(None, snap.clone(), at);
            // agent id -> (its map, the view its stream sent it)
            let mut agents: Vec<(DeviceId, PeerMap, Arc<NetworkView>)> = vec![];
            let first = Arc::new(view);
            for d in &first.snapshot.devices {
                agents.push((d.id, first.map(d.id).unwrap(), first.clone()));
            }
            view = next_view(Some(&first), snap.clone(), at);
            let mut cur = Arc::new(view);
            let mut next_n = 11u8;
            for round in 0..60 {
                let mut s = cur.snapshot.as_ref().clone();
                s.network.revision += 1;
                at += 1 + rng.next(3) as i64;
                let n = s.devices.len();
                let i = rng.next(n);
                let what = rng.next(12);
                match what {
                    0..=2 => {
                        s.devices[i].endpoints =
                            vec![format!("203.0.113.{}:{}", round, 1000 + i).parse().unwrap()]
                    }
                    3 => s.devices[i].public_key = WgPrivateKey::generate().public_key(),
                    4 => s.devices[i].tags = vec![tags[rng.next(3)].to_string()],
                    5 => s.devices[i].name = format!("renamed{round}"),
                    6 => {
                        s.devices[i].state = match s.devices[i].state {
                            DeviceState::Pending => DeviceState::Active,
                            _ if n > 8 => DeviceState::Revoked,
                            st => st,
                        }
                    }
                    7 => {
                        let mut d = tagged(next_n, tags[rng.next(3)]);
                        next_n += 1;
                        if rng.next(2) == 0 {
                            d.state = DeviceState::Pending;
                        }
                        s.devices.push(d);
                    }
                    8 if n > 8 => {
                        s.devices.remove(i);
                    }
                    8 => {}
                    9 => {
                        s.policy.version += 1;
                        s.policy.text = if s.policy.text == WEB_DB {
                            crate::domain::policy::DEFAULT_POLICY.into()
                        } else if s.policy.text == ROUTES {
                            WEB_DB.into()
                        } else {
                            ROUTES.into()
                        };
                    }
                    // a route approved or withdrawn: only grants and filters move
                    11 => {
                        let id = s.devices[i].id;
                        let offer: Vec<ipnet::IpNet> = match rng.next(3) {
                            0 => vec![format!("10.{i}.0.0/24").parse().unwrap()],
                            1 => vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
                            _ => vec![],
                        };
                        if offer.is_empty() {
                            s.routes.remove(&id);
                        } else {
                            s.routes.insert(id, offer);
                        }
                    }
                    _ => {
                        s.devices[i].key_expires_at_ms = match rng.next(3) {
                            0 => None,
                            _ => Some(at + rng.next(6) as i64),
                        }
                    }
                }
                let new = Arc::new(next_view(Some(&cur), s, at));
                seen[0] += usize::from(new.quick.is_some());
                // the tracker's cheap predicate agrees with the step a stream sends
                for d in new
                    .snapshot
                    .devices
                    .iter()
                    .chain(cur.snapshot.devices.iter())
                {
                    let step = new.step(&cur, d.id, 0);
                    let want = match step {
                        Step::Gone(_) => None,
                        Step::Same => Some(false),
                        Step::Delta(_) => Some(true),
                    };
                    assert_eq!(
                        new.changes_for(&cur, d.id),
                        want,
                        "round {round} what {what}"
                    );
                }
                let reference = crate::domain::policy::compile_snapshot(&new.snapshot);
                let mut still = vec![];
                for (id, mut map, sent) in agents.drain(..) {
                    let want = map_for(&new.snapshot, &reference, id, new.built_at_ms);
                    match new.step(&sent, id, map.version) {
                        Step::Gone(why) => {
                            assert!(
                                want.is_none(),
                                "seed {seed} round {round}: {id} told to go ({why})"
                            );
                            continue;
                        }
                        Step::Same => {}
                        Step::Delta(d) => {
                            seen[1] += usize::from(!d.upsert.is_empty());
                            seen[2] += usize::from(!d.remove.is_empty());
                            seen[3] += usize::from(d.filter.is_some());
                            seen[4] += usize::from(d.me.is_some());
                            seen[5] += usize::from(
                                d.upsert.iter().any(|p| !p.routes.is_empty() || p.exit_node),
                            );
                            map.apply(&d)
                                .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"))
                        }
                    }
                    let want =
                        want.unwrap_or_else(|| panic!("seed {seed} round {round}: {id} kept"));
                    assert_eq!(
                        map.peers, want.peers,
                        "seed {seed} round {round} change {what}"
                    );
                    assert_eq!(
                        map.filter, want.filter,
                        "seed {seed} round {round} change {what}"
                    );
                    assert_eq!(map.me, want.me, "seed {seed} round {round} change {what}");
                    assert_eq!(map.network, want.network, "seed {seed} round {round}");
                    still.push((id, map, new.clone()));
                }
                // devices that appeared connect now and get their full map
                for d in &new.snapshot.devices {
                    if !still.iter().any(|(id, ..)| *id == d.id) {
                        if let Some(m) = new.map(d.id) {
                            still.push((d.id, m, new.clone()));
                        }
                    }
                }
                agents = still;
                cur = new;
            }
            assert!(
                agents.len() >= 4,
                "seed {seed}: too few devices left to mean much"
            );
        }
        assert!(
            seen.iter().all(|n| *n > 0),
            "not every kind of step was exercised: {seen:?}"
        );
    }

    /// Making the network exclusive reaches every device as a delta carrying only the
    /// network's new info (name and rule); full maps carry it always; an unchanged
    /// network is not repeated in deltas.
    #[test]
    fn exclusive_change_is_a_delta_with_the_network() {
        let devices: Vec<DeviceRow> = (1..=4u8).map(|n| tagged(n, "web")).collect();
        let snap = snapshot(devices);
        let first = Arc::new(next_view(None, snap.clone(), T0));
        let d0 = snap.devices[0].id;
        let m = first.map(d0).unwrap();
        let info = m.network.clone().expect("full maps name the network");
        assert_eq!(info.name, "default");
        assert!(!info.exclusive);

        // an endpoint change only: the delta does not repeat the network
        let mut s = snap.clone();
        s.network.revision += 1;
        s.devices[1].endpoints = vec!["203.0.113.9:41641".parse().unwrap()];
        let second = Arc::new(next_view(Some(&first), s.clone(), T0 + 1));
        match second.step(&first, d0, m.version) {
            Step::Delta(d) => assert!(d.network.is_none(), "{d:?}"),
            other => panic!("expected a delta, got {other:?}"),
        }

        let mut s2 = s.clone();
        s2.network.revision += 1;
        s2.network.exclusive = true;
        let third = Arc::new(next_view(Some(&second), s2, T0 + 2));
        assert!(
            third.quick.is_none(),
            "a rule change is not a key/endpoint change"
        );
        for d in &snap.devices {
            assert_eq!(third.changes_for(&second, d.id), Some(true));
            match third.step(&second, d.id, second.revision()) {
                Step::Delta(delta) => {
                    let n = delta.network.as_ref().expect("network in the delta");
                    assert!(n.exclusive);
                    assert_eq!(n.name, "default");
                    assert!(delta.upsert.is_empty() && delta.remove.is_empty());
                }
                other => panic!("expected a delta, got {other:?}"),
            }
        }
        let mut applied = second.map(d0).unwrap();
        if let Step::Delta(d) = third.step(&second, d0, applied.version) {
            applied.apply(&d).unwrap();
        }
        assert_eq!(applied.network, third.map(d0).unwrap().network);
    }
}
