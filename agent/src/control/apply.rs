//! Applying a peer map to the data plane and the host: the inbound filter first (a
//! tightened policy is in force before any new peer is), then the peers with the routes
//! and exit node chosen in [`super::routes`] added to their allowed IPs, then the host:
//! kernel routes, exit-node policy routing, forwarding ([`crate::io::netcfg`]).
//! [`reselect`] runs every second to move a prefix off a router whose path died.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use zmesh_shared::peermap::PeerMap;
use zmesh_shared::DeviceId;

use super::map::peer_configs;
use super::routes::{select, RoutePrefs, Selection};
use super::Shared;
use crate::core::PathKind;
use crate::io::netcfg::{ExitCfg, NetCfg, Wanted};
use crate::io::DataPlane;

/// The routing side of [`Shared`]: preferences, the current choice, the underlay
/// addresses an exit node must not swallow, and the host configuration made so far.
pub struct RouteState {
    pub prefs: RoutePrefs,
    pub selection: Selection,
    pub keep: Vec<IpAddr>,
    pub net: Option<NetCfg>,
}

impl Default for RouteState {
    fn default() -> Self {
        RouteState::new(RoutePrefs::default())
    }
}

impl RouteState {
    pub fn new(prefs: RoutePrefs) -> Self {
        RouteState {
            prefs,
            selection: Selection::default(),
            keep: Vec::new(),
            net: None,
        }
    }
}

/// A router whose direct path has not answered for this long (it is probed every
/// 2 s) is passed over for another that answers; the data plane itself gives the
/// path up later (6.5 s).
const SILENT: Duration = Duration::from_millis(3_500);

/// Which peers' direct paths answer now.
async fn liveness(dp: &DataPlane) -> HashMap<DeviceId, bool> {
    let now = Instant::now();
    dp.peer_stats()
        .await
        .into_iter()
        .map(|s| {
            let answering = matches!(s.path, PathKind::Direct(_))
                && s.last_rx
                    .is_some_and(|t| now.saturating_duration_since(t) < SILENT);
            (s.device_id, answering)
        })
        .collect()
}

fn choose(shared: &Shared, map: &PeerMap, alive: &HashMap<DeviceId, bool>) -> Selection {
    let r = shared.routing.lock().unwrap_or_else(|e| e.into_inner());
    select(map, &r.prefs, &r.selection, &|d| {
        alive.get(d).copied().unwrap_or(false)
    })
}

async fn push_peers(dp: &DataPlane, map: &PeerMap, sel: &Selection) -> usize {
    let mut peers = peer_configs(map);
    for p in &mut peers {
        p.allowed_ips.extend(sel.allowed_for(&p.device_id));
    }
    let n = peers.len();
    if let Err(e) = dp.set_peers(peers).await {
        tracing::error!(error = %e, "data plane refused the peer set");
    }
    n
}

/// Makes the host match the selection and preferences (errors are logged: the tunnels
/// keep working without the extra routes).
fn sync_host(shared: &Shared, map: &PeerMap, sel: &Selection) {
    let mut r = shared.routing.lock().unwrap_or_else(|e| e.into_inner());
    let want = Wanted {
        routes: sel.prefixes(),
        exit: sel.exit.as_ref().map(|_| ExitCfg {
            allow_lan: r.prefs.exit_node_allow_lan,
            keep: r.keep.clone(),
            overlay: vec![map.me.network_v4.into(), map.me.network_v6.into()],
        }),
        router: r.prefs.is_router().then_some(r.prefs.snat),
    };
    r.selection = sel.clone();
    if let Some(net) = r.net.as_mut() {
        if let Err(e) = net.sync(&want) {
            tracing::error!(error = %format!("{e:#}"), "host routing not configured");
        }
    }
}

/// Pushes the map to the data plane and the host, and publishes it for status. A map
/// without a `filter` (older console) has an empty one: no new inbound flow is accepted.
pub async fn apply_map(dp: &DataPlane, shared: &Shared, map: &PeerMap) {
    if let Err(e) = dp.set_filter(map.filter.clone()).await {
        tracing::error!(error = %e, "data plane refused the inbound filter");
    }
    let alive = liveness(dp).await;
    let sel = choose(shared, map, &alive);
    let n = push_peers(dp, map, &sel).await;
    sync_host(shared, map, &sel);
    tracing::info!(
        version = map.version,
        peers = n,
        filter_rules = map.filter.len(),
        routes = sel.routes.len(),
        exit_node = sel.exit.as_ref().map(|(_, n)| n.as_str()),
        "peer map applied"
    );
    shared.set_map(map.clone());
}

/// Re-chooses route carriers by path liveness; applies and returns true on a change.
pub async fn reselect(dp: &DataPlane, shared: &Shared) -> bool {
    let Some(map) = shared.map() else {
        return false;
    };
    if map.peers.iter().all(|p| p.routes.is_empty()) {
        return false;
    }
    let alive = liveness(dp).await;
    let sel = choose(shared, &map, &alive);
    let current = shared
        .routing
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .selection
        .clone();
    if sel == current {
        return false;
    }
    for (prefix, via) in &sel.routes {
        if current.routes.get(prefix) != Some(via) {
            tracing::warn!(%prefix, %via, "subnet route moved to another router");
        }
    }
    push_peers(dp, &map, &sel).await;
    sync_host(shared, &map, &sel);
    true
}

/// No peers (the key expired): no routes into the tunnel and no exit node, so the
/// host's own traffic is not sent into a tunnel that leads nowhere. Forwarding for
/// others stays as it was (it carries nothing without peers).
pub fn clear_routes(shared: &Shared) {
    let mut r = shared.routing.lock().unwrap_or_else(|e| e.into_inner());
    let want = Wanted {
        router: r.prefs.is_router().then_some(r.prefs.snat),
        ..Wanted::default()
    };
    r.selection = Selection::default();
    if let Some(net) = r.net.as_mut() {
        if let Err(e) = net.sync(&want) {
            tracing::error!(error = %format!("{e:#}"), "host routing not reset");
        }
    }
}
