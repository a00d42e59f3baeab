//! `zmesh ping`: one echo request over the overlay, in the profile named or the one
//! whose peer map has the peer.

use std::net::IpAddr;
use std::time::Duration;

use super::{profiles, status, Daemon, Running};
use crate::ipc::{PeerPath, PingResult};

impl Daemon {
    /// Pings `peer` (a name or an overlay address) in the profile named, or else in
    /// the one running profile whose map has that peer.
    pub(super) async fn ping(
        &self,
        profile: Option<&str>,
        peer: &str,
        timeout_ms: u64,
    ) -> anyhow::Result<PingResult> {
        let want = profile.map(|p| profiles::resolve(Some(p))).transpose()?;
        let (dp, map, relay) = {
            let g = self.profiles.lock().await;
            let running: Vec<(&String, &Running)> = g
                .iter()
                .filter_map(|(n, s)| s.running.as_ref().map(|r| (n, r)))
                .filter(|(n, _)| want.as_ref().is_none_or(|w| w == *n))
                .collect();
            let pick = match (&want, running.as_slice()) {
                (Some(w), []) => {
                    anyhow::bail!("profile {w}: tunnels are down: run `zmesh up --profile {w}`")
                }
                (None, []) => anyhow::bail!("tunnels are down: run `zmesh up`"),
                (_, [one]) => one.1,
                (Some(_), [first, ..]) => first.1,
                (None, many) => {
                    let has: Vec<&(&String, &Running)> = many
                        .iter()
                        .filter(|(_, r)| {
                            r.shared
                                .map()
                                .is_some_and(|m| find_peer(&m, peer).is_some())
                        })
                        .collect();
                    match has.as_slice() {
                        [one] => one.1,
                        [] => {
                            many.iter()
                                .find(|(n, _)| n.as_str() == profiles::DEFAULT)
                                .unwrap_or(&many[0])
                                .1
                        }
                        several => anyhow::bail!(
                            "{peer:?} is a peer in several profiles ({}): pass --profile NAME",
                            several
                                .iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }
                }
            };
            (pick.dp.clone(), pick.shared.map(), pick.shared.relay())
        };
        let found = map.as_ref().and_then(|m| find_peer(m, peer));
        let (ip, name, dev) = match (found, peer.parse::<IpAddr>()) {
            (Some(p), Ok(ip)) => (ip, p.name.clone(), Some(p.device_id)),
            (Some(p), Err(_)) => (IpAddr::V4(p.overlay_v4), p.name.clone(), Some(p.device_id)),
            (None, Ok(ip)) => (ip, ip.to_string(), None),
            (None, Err(_)) => anyhow::bail!("no peer named {peer:?} in the peer map"),
        };
        let timeout = Duration::from_millis(timeout_ms.clamp(100, 60_000));
        let rtt = dp.ping(ip, timeout).await?;
        let stats = dp.peer_stats().await;
        let st = stats.iter().find(|s| Some(s.device_id) == dev);
        Ok(PingResult {
            peer: name,
            ip,
            rtt_us: rtt.as_micros() as u64,
            path: st.map_or(PeerPath::Unknown, |s| PeerPath::from(s.path)),
            endpoint: st.and_then(|s| s.endpoint),
            via: st.and_then(|s| match s.path {
                crate::core::PathKind::Relay => Some(relay.unwrap_or_else(|| "relay".into())),
                _ => s.endpoint.map(|e| e.to_string()),
            }),
            path_rtt_ms: st.and_then(|s| s.rtt).map(|d| d.as_secs_f64() * 1000.0),
            path_since: st.and_then(|s| s.path_changed).map(status::rfc3339_ms),
        })
    }
}

/// The peer of `map` named `peer` (case-insensitive) or owning that overlay address.
fn find_peer<'a>(
    map: &'a zmesh_shared::peermap::PeerMap,
    peer: &str,
) -> Option<&'a zmesh_shared::peermap::Peer> {
    map.peers.iter().find(|p| {
        p.name.eq_ignore_ascii_case(peer)
            || peer
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip == IpAddr::V4(p.overlay_v4) || ip == IpAddr::V6(p.overlay_v6))
    })
}
