//! Subnet routes and exit nodes on the agent, the pure part: what the device offers
//! (`--advertise-routes`, `--advertise-exit-node`) and uses (`--exit-node`), kept in
//! its enrollment so they survive restarts; and which peer carries each prefix.
//!
//! The console sends, per peer, the prefixes this device may send through it
//! (`Peer::routes`) and whether it may use it as an exit node (`Peer::exit_node`).
//! Several routers may offer one prefix: exactly one of them gets it in its allowed
//! IPs (cryptokey routing needs one owner), chosen here: the current one while its
//! direct path answers, else the first (by device id) whose path answers, else the
//! current or the first. Re-evaluated every second, so a dead router is replaced as
//! soon as the data plane declares its path dead (a few seconds).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use zmesh_shared::peermap::PeerMap;
use zmesh_shared::DeviceId;

pub use crate::prefs::{default_routes, RoutePrefs};

/// Which peer carries each prefix, and the exit node in use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Prefix → the peer it goes through.
    pub routes: BTreeMap<IpNet, DeviceId>,
    /// The exit node in use: its id and name.
    pub exit: Option<(DeviceId, String)>,
}

impl Selection {
    /// Every prefix routed into the tunnel (default routes not included).
    pub fn prefixes(&self) -> BTreeSet<IpNet> {
        self.routes.keys().copied().collect()
    }

    /// The extra allowed IPs of peer `id` under this selection.
    pub fn allowed_for(&self, id: &DeviceId) -> Vec<IpNet> {
        let mut v: Vec<IpNet> = (self.routes.iter())
            .filter(|(_, d)| *d == id)
            .map(|(n, _)| *n)
            .collect();
        if self.exit.as_ref().is_some_and(|(d, _)| d == id) {
            v.extend(default_routes());
        }
        v
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExitError {
    #[error(
        "exit node {0:?} is not offered to this device: it is unknown, not approved as an \
         exit node, or the policy does not let this device use it (autogroup:internet)"
    )]
    NotOffered(String),
}

/// The exit node named `name` among the peers that offer this device one.
pub fn find_exit(map: &PeerMap, name: &str) -> Result<(DeviceId, String), ExitError> {
    map.peers
        .iter()
        .find(|p| p.exit_node && p.name.eq_ignore_ascii_case(name))
        .map(|p| (p.device_id, p.name.clone()))
        .ok_or_else(|| ExitError::NotOffered(name.to_string()))
}

/// Chooses the carrier of every offered prefix and the exit node (see the module
/// header). `alive`: whether a peer's direct path currently answers.
pub fn select(
    map: &PeerMap,
    prefs: &RoutePrefs,
    current: &Selection,
    alive: &dyn Fn(&DeviceId) -> bool,
) -> Selection {
    let mut offers: BTreeMap<IpNet, Vec<DeviceId>> = BTreeMap::new();
    for p in &map.peers {
        for r in &p.routes {
            offers.entry(*r).or_default().push(p.device_id);
        }
    }
    let mut out = Selection::default();
    for (prefix, mut cands) in offers {
        cands.sort();
        let cur = current.routes.get(&prefix).filter(|c| cands.contains(c));
        let pick = match cur {
            Some(c) if alive(c) => *c,
            _ => match cands.iter().find(|c| alive(c)) {
                Some(c) => *c,
                None => cur.copied().unwrap_or(cands[0]),
            },
        };
        out.routes.insert(prefix, pick);
    }
    out.exit = prefs
        .exit_node
        .as_deref()
        .and_then(|n| find_exit(map, n).ok());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::map::tests::{map, peer};
    use crate::prefs::RouteFlags;

    #[test]
    fn one_carrier_per_prefix_with_failover_and_stickiness() {
        let n: IpNet = "10.1.0.0/24".parse().unwrap();
        let (mut a, mut b) = (peer(2), peer(3));
        a.routes = vec![n];
        b.routes = vec![n];
        let (ia, ib) = (a.device_id.min(b.device_id), a.device_id.max(b.device_id));
        let m = map(DeviceId::new(), 1, vec![a, b]);
        let prefs = RoutePrefs::default();
        let all = |_: &DeviceId| true;
        let s0 = select(&m, &prefs, &Selection::default(), &all);
        assert_eq!(s0.routes[&n], ia, "the first by id");
        assert_eq!(s0.allowed_for(&ia), vec![n]);
        assert!(s0.allowed_for(&ib).is_empty(), "one owner per prefix");
        // the first dies: the other takes over
        let s1 = select(&m, &prefs, &s0, &|d: &DeviceId| *d == ib);
        assert_eq!(s1.routes[&n], ib);
        // it comes back: the current carrier stays (no flapping)
        let s2 = select(&m, &prefs, &s1, &all);
        assert_eq!(s2.routes[&n], ib);
        // nobody answers: keep what we have
        let s3 = select(&m, &prefs, &s2, &|_: &DeviceId| false);
        assert_eq!(s3.routes[&n], ib);
    }

    #[test]
    fn exit_node_only_when_offered_and_chosen() {
        let mut e = peer(4);
        e.exit_node = true;
        let name = e.name.clone();
        let id = e.device_id;
        let m = map(DeviceId::new(), 1, vec![e, peer(5)]);
        let mut prefs = RoutePrefs::default();
        let all = |_: &DeviceId| true;
        assert_eq!(select(&m, &prefs, &Selection::default(), &all).exit, None);
        prefs = prefs.merged(&RouteFlags {
            exit_node: Some(name.to_uppercase()),
            ..Default::default()
        });
        let s = select(&m, &prefs, &Selection::default(), &all);
        assert_eq!(s.exit, Some((id, name.clone())));
        assert_eq!(s.allowed_for(&id), default_routes().to_vec());
        assert!(matches!(find_exit(&m, "p5"), Err(ExitError::NotOffered(_))));
        // `--exit-node=` stops using it
        let off = prefs.merged(&RouteFlags {
            exit_node: Some(String::new()),
            ..Default::default()
        });
        assert_eq!(off.exit_node, None);
    }
}
