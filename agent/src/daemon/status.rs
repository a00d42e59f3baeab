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
    /// `zmesh status [--profile NAME]`: the profile named, or the default profile's
    /// status with every profile's in `profiles` (when there are others).
    pub(super) async fn status_reply(&self, profile: Option<&str>) -> anyhow::Result<Status> {
        if let Some(n) = profile {
            let p = self.prof_arg(Some(n))?;
            if p.name != super::profiles::DEFAULT && p.state.load_enrollment()?.is_none() {
                return Err(super::UpError::NoProfile(p.name).into());
            }
            return Ok(self.status(&p).await);
        }
        let mut top = self.status(&self.prof(super::profiles::DEFAULT)).await;
        let others = super::profiles::others(&self.state);
        let mut all = Vec::new();
        for n in others {
            let p = self.prof(&n);
            if matches!(p.state.load_enrollment(), Ok(Some(_))) {
                all.push(self.status(&p).await);
            }
        }
        if !all.is_empty() {
            if top.me.is_some() {
                all.insert(0, top.clone());
            }
            top.profiles = all;
        }
        Ok(top)
    }

    pub(super) async fn status(&self, p: &super::Prof) -> Status {
        let enr = p.state.load_enrollment().ok().flatten();
        let public_key = p
            .state
            .load_private_key()
            .ok()
            .flatten()
            .map(|k| k.public_key().to_string())
            .unwrap_or_default();
        let (dp, shared, blocked) = {
            let g = self.profiles.lock().await;
            let slot = g.get(&p.name);
            let blocked = slot.and_then(|s| s.blocked.clone());
            match slot.and_then(|s| s.running.as_ref()) {
                Some(r) => (Some(r.dp.clone()), Some(r.shared.clone()), blocked),
                None => (None, None, blocked),
            }
        };
        let Some(enr) = enr else {
            return Status {
                profile: p.name.clone(),
                me: None,
                peers: vec![],
                routes: Default::default(),
                dns: None,
                network: None,
                blocked: None,
                dropped_cross_network: 0,
                profiles: vec![],
            };
        };
        let state = if enr.revoked {
            "revoked"
        } else if enr.expired {
            "expired"
        } else if dp.is_some() {
            "up"
        } else {
            match &blocked {
                Some(b) if b.held => "held",
                Some(_) if enr.down => "refused",
                _ => "down",
            }
        };
        let blocked = blocked
            .filter(|_| dp.is_none() && matches!(state, "held" | "refused"))
            .map(|b| crate::ipc::BlockedStatus {
                held: b.held,
                reason: b.reason,
            });
        let map = shared.as_ref().and_then(|s| s.map()).or_else(|| {
            // not running: what the cache says of the network
            p.state
                .load_cache(&enr.signing_key)
                .ok()
                .flatten()
                .map(|(_, m)| m)
                .filter(|_| blocked.is_some())
        });
        let network =
            map.as_ref()
                .and_then(|m| m.network.clone())
                .map(|n| crate::ipc::NetworkStatus {
                    name: n.name,
                    exclusive: n.exclusive,
                });
        let map = if shared.is_some() { map } else { None };
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
        let (stats, dropped_cross_network) = match &dp {
            Some(d) => (d.peer_stats().await, d.counters().await.drop_cross_network),
            None => (Vec::new(), 0),
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
            profile: p.name.clone(),
            me: Some(me),
            peers,
            routes,
            dns,
            network,
            blocked,
            dropped_cross_network,
            profiles: vec![],
        }
    }
}
