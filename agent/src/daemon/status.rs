//! `zmesh status`: joins the enrollment, the current peer map and the data plane's
//! per-peer counters into the shape `status --json` prints, with each device's name
//! under the network's DNS suffix and the resolver's address.

use std::net::IpAddr;
use std::time::SystemTime;

use zmesh_shared::peermap::resolver_v4;

use crate::ipc::{DnsStatus, PeerPath, PeerStatus, RouteStatus, SelfStatus, Status};

use super::Daemon;

pub(super) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Path changes come in bursts a second apart at most; seconds would hide the order.
pub(super) fn rfc3339_ms(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Daemon {
    pub(super) async fn status(&self) -> Status {
        let enr = self.state.load_enrollment().ok().flatten();
        let public_key = self
            .state
            .load_private_key()
            .ok()
            .flatten()
            .map(|k| k.public_key().to_string())
            .unwrap_or_default();
        let (dp, shared) = {
            let g = self.running.lock().await;
            match g.as_ref() {
                Some(r) => (Some(r.dp.clone()), Some(r.shared.clone())),
                None => (None, None),
            }
        };
        let Some(enr) = enr else {
            return Status {
                me: None,
                peers: vec![],
                routes: Default::default(),
                dns: None,
            };
        };
        let state = if enr.revoked {
            "revoked"
        } else if enr.expired {
            "expired"
        } else if dp.is_some() {
            "up"
        } else {
            "down"
        };
        let map = shared.as_ref().and_then(|s| s.map());
        let sel = shared
            .as_ref()
            .map(|s| s.route_selection())
            .unwrap_or_default();
        let prefs = &enr.routes;
        let routes = RouteStatus {
            advertised: prefs.advertised().0,
            approved: map
                .as_ref()
                .map(|m| m.me.approved_routes.clone())
                .unwrap_or_default(),
            exit_node_offered: prefs.advertise_exit_node,
            exit_node: prefs.exit_node.clone(),
            exit_node_active: sel.exit.is_some(),
            exit_node_allow_lan: prefs.exit_node_allow_lan,
            snat: prefs.snat,
        };
        let names = map
            .as_ref()
            .map(crate::dns::Names::from_map)
            .unwrap_or_default();
        let dns = names.suffix().map(|suffix| {
            Box::new(DnsStatus {
                resolver: IpAddr::V4(resolver_v4(enr.network_v4)),
                suffix: suffix.to_string(),
            })
        });
        let relay = shared.as_ref().and_then(|s| s.relay());
        let name = map
            .as_ref()
            .map(|m| m.me.name.clone())
            .unwrap_or_else(|| enr.name.clone());
        let me = SelfStatus {
            dns_name: names.fqdn(&name),
            name,
            overlay_ips: vec![IpAddr::V4(enr.overlay_v4), IpAddr::V6(enr.overlay_v6)],
            public_key,
            device_id: enr.device_id.to_string(),
            console: enr.console.clone(),
            connected: shared.as_ref().is_some_and(|s| s.connected()),
            state: state.to_string(),
            listen_port: dp.as_ref().map(|d| d.local_addr().port()),
            key_expires_at: shared
                .as_ref()
                .and_then(|s| s.key_expiry().flatten())
                .map(|ms| {
                    rfc3339(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
                    )
                }),
        };
        let stats = match &dp {
            Some(d) => d.peer_stats().await,
            None => Vec::new(),
        };
        let peers = map
            .map(|m| {
                m.peers
                    .iter()
                    .map(|p| {
                        let s = stats.iter().find(|s| s.device_id == p.device_id);
                        let endpoint = s
                            .and_then(|s| s.endpoint)
                            .or_else(|| p.endpoints.first().copied());
                        let path = s.map_or(PeerPath::Unknown, |s| PeerPath::from(s.path));
                        let via = if path == PeerPath::Relay {
                            Some(relay.clone().unwrap_or_else(|| "relay".into()))
                        } else {
                            endpoint.map(|e| e.to_string())
                        };
                        PeerStatus {
                            dns_name: names.fqdn(&p.name),
                            name: p.name.clone(),
                            overlay_ips: vec![IpAddr::V4(p.overlay_v4), IpAddr::V6(p.overlay_v6)],
                            public_key: p.public_key.to_string(),
                            endpoint,
                            path,
                            via,
                            rtt_ms: s.and_then(|s| s.rtt).map(|d| d.as_secs_f64() * 1000.0),
                            path_since: s.and_then(|s| s.path_changed).map(rfc3339_ms),
                            last_handshake: s.and_then(|s| s.last_handshake).map(rfc3339),
                            rx_bytes: s.map_or(0, |s| s.rx_bytes),
                            tx_bytes: s.map_or(0, |s| s.tx_bytes),
                            routes: p.routes.clone(),
                            primary_routes: (sel.routes.iter())
                                .filter(|(_, d)| **d == p.device_id)
                                .map(|(n, _)| *n)
                                .collect(),
                            exit_node: p.exit_node,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Status {
            me: Some(me),
            peers,
            routes,
            dns,
        }
    }
}
