//! The agent's Prometheus metrics, built at scrape time from what the daemon already
//! keeps: the data plane's counters (`core::Counters`, asked of the packet thread
//! once per scrape, so the packet path only adds to plain integers it owns), the
//! per-peer paths, and the control stream's shared state. `zmesh metrics` (over the
//! control socket) and `daemon --metrics-listen` (see [`super::metrics_http`]) print the
//! same text. The reference is docs/admin-guide.md ("Metrics").

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::core::{Counters, PathKind};

use super::Daemon;

/// What one scrape reads.
#[derive(Debug, Default, Clone)]
pub(super) struct Snapshot {
    /// The data plane runs (the device is up).
    pub tunnels_up: bool,
    pub control_connected: bool,
    /// Version of the map in force and seconds since a map or delta was applied.
    pub map: Option<(u64, Option<f64>)>,
    /// Peers by path: direct, relay, unknown (no confirmed path yet).
    pub peers: [u64; 3],
    pub counters: Counters,
    /// Per running profile: packets dropped because they would cross into another
    /// profile's network.
    pub cross_network: Vec<(String, u64)>,
}

impl Daemon {
    pub(super) async fn metrics_snapshot(&self) -> Snapshot {
        let (dp, shared, all) = {
            let g = self.profiles.lock().await;
            let all: Vec<(String, crate::io::DataPlane)> = g
                .iter()
                .filter_map(|(n, s)| s.running.as_ref().map(|r| (n.clone(), r.dp.clone())))
                .collect();
            match g
                .get(super::profiles::DEFAULT)
                .and_then(|s| s.running.as_ref())
            {
                Some(r) => (Some(r.dp.clone()), Some(r.shared.clone()), all),
                None => (None, None, all),
            }
        };
        let mut s = Snapshot {
            tunnels_up: dp.is_some(),
            control_connected: shared.as_ref().is_some_and(|s| s.connected()),
            ..Default::default()
        };
        if let Some(sh) = &shared {
            let now = zmesh_shared::time::now_ms();
            s.map = sh.map().map(|m| {
                let age = sh
                    .map_applied_ms()
                    .map(|t| now.saturating_sub(t).max(0) as f64 / 1000.0);
                (m.version, age)
            });
        }
        if let Some(dp) = &dp {
            s.counters = dp.counters().await;
            for p in dp.peer_stats().await {
                let i = match p.path {
                    PathKind::Direct(_) => 0,
                    PathKind::Relay => 1,
                    PathKind::Unknown => 2,
                };
                s.peers[i] += 1;
            }
        }
        for (name, dp) in all {
            let n = dp.counters().await.drop_cross_network;
            s.cross_network.push((name, n));
        }
        s
    }

    /// The metrics text (OpenMetrics when `openmetrics`, else Prometheus text 0.0.4) and
    /// its content type.
    pub(super) async fn metrics_text(&self, openmetrics: bool) -> (String, &'static str) {
        let snap = self.metrics_snapshot().await;
        let mut r = Registry::default();
        r.register_collector(Box::new(snap));
        r.register_collector(Box::new(zmesh_shared::metrics::ProcessCollector));
        zmesh_shared::metrics::encode(&r, openmetrics)
    }
}

fn gauge<N: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    v: N,
) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?)
}

/// A counter family with one label.
fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    label: &str,
    values: &[(&str, u64)],
) -> std::fmt::Result {
    let mut e = enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
    for (l, v) in values {
        ConstCounter::new(*v).encode(e.encode_family(&[(label, *l)])?)?;
    }
    Ok(())
}

/// Direction and path labels of the tunnel counters.
fn by_path(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    v: [(&str, &str, u64); 4],
) -> std::fmt::Result {
    let mut e = enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
    for (direction, path, n) in v {
        let labels = [("direction", direction), ("path", path)];
        ConstCounter::new(n).encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.counters;
        let e = &mut enc;
        let flag = |b: bool| i64::from(b);
        gauge(
            e,
            "zmesh_agent_tunnels_up",
            "1 while the data plane runs (the device is up), else 0.",
            None,
            flag(self.tunnels_up),
        )?;
        gauge(
            e,
            "zmesh_agent_control_connected",
            "1 while the control stream to the console is connected, else 0.",
            None,
            flag(self.control_connected),
        )?;
        if let Some((version, age)) = self.map {
            gauge(
                e,
                "zmesh_agent_map_revision",
                "Network revision of the peer map in force.",
                None,
                version as i64,
            )?;
            if let Some(age) = age {
                gauge(
                    e,
                    "zmesh_agent_map_age",
                    "Seconds since a peer map or delta was last applied.",
                    Some(Unit::Seconds),
                    age,
                )?;
            }
        }
        let mut g = e.encode_descriptor(
            "zmesh_agent_peers",
            "Peers in the map by path: direct, relay, unknown (no confirmed path yet).",
            None,
            MetricType::Gauge,
        )?;
        for (path, n) in ["direct", "relay", "unknown"].iter().zip(self.peers) {
            ConstGauge::new(n as i64).encode(g.encode_family(&[("path", *path)])?)?;
        }
        by_path(
            e,
            "zmesh_agent_tunnel_packets",
            "WireGuard data packets sent (tx) and received and delivered (rx), by path.",
            None,
            [
                ("tx", "direct", c.tx_packets - c.tx_packets_relay),
                ("tx", "relay", c.tx_packets_relay),
                ("rx", "direct", c.rx_packets - c.rx_packets_relay),
                ("rx", "relay", c.rx_packets_relay),
            ],
        )?;
        by_path(
            e,
            "zmesh_agent_tunnel",
            "Bytes of those packets as WireGuard messages (UDP payload), by path.",
            Some(Unit::Bytes),
            [
                ("tx", "direct", c.tx_bytes - c.tx_bytes_relay),
                ("tx", "relay", c.tx_bytes_relay),
                ("rx", "direct", c.rx_bytes - c.rx_bytes_relay),
                ("rx", "relay", c.rx_bytes_relay),
            ],
        )?;
        let h = ConstCounter::new(c.handshakes);
        h.encode(e.encode_descriptor(
            "zmesh_agent_handshakes",
            "WireGuard handshakes completed (as initiator or responder).",
            None,
            h.metric_type(),
        )?)?;
        let h = ConstCounter::new(c.cookie_replies);
        h.encode(e.encode_descriptor(
            "zmesh_agent_cookie_replies",
            "Handshakes answered with a cookie because the agent was under load.",
            None,
            h.metric_type(),
        )?)?;
        counters(
            e,
            "zmesh_agent_dropped_packets",
            "Packets and datagrams dropped by the data plane, by reason (policy: the \
             inbound filter, detailed in zmesh_agent_filter_denied_packets_total).",
            None,
            "reason",
            &[
                ("garbage", c.drop_garbage),
                ("unknown_index", c.drop_unknown_index),
                ("unknown_key", c.drop_unknown_key),
                ("handshake_failed", c.drop_handshake_failed),
                ("decrypt_failed", c.drop_decrypt_failed),
                ("replay", c.drop_replay),
                ("no_session", c.drop_no_session),
                ("bad_source", c.drop_bad_source),
                ("bad_inner", c.drop_bad_inner),
                ("no_route", c.drop_no_route),
                ("no_endpoint", c.drop_no_endpoint),
                ("tun_invalid", c.drop_tun_invalid),
                ("oversize", c.drop_oversize),
                ("policy", c.drop_policy),
                ("probe", c.drop_probe),
                ("cross_network", c.drop_cross_network),
            ],
        )?;
        let v: Vec<(&str, u64)> = (self.cross_network.iter())
            .map(|(n, v)| (n.as_str(), *v))
            .collect();
        counters(
            e,
            "zmesh_agent_dropped_cross_network_packets",
            "Packets a profile's data plane dropped because they would have crossed into \
             another profile's network, by profile (every running profile).",
            None,
            "profile",
            &v,
        )?;
        let f = &c.filter;
        counters(
            e,
            "zmesh_agent_filter_accepted_packets",
            "Inbound packets the policy filter accepted, by reason (rule: a policy rule \
             allows a new flow; reply: part of a flow this device opened; fragment).",
            None,
            "reason",
            &[
                ("rule", f.accepted_rule),
                ("reply", f.accepted_reply),
                ("fragment", f.accepted_fragment),
            ],
        )?;
        counters(
            e,
            "zmesh_agent_filter_denied_packets",
            "Inbound packets the policy filter denied, by reason (no_rule, malformed, \
             fragment).",
            None,
            "reason",
            &[
                ("no_rule", f.dropped_no_rule),
                ("malformed", f.dropped_malformed),
                ("fragment", f.dropped_fragment),
            ],
        )?;
        let mut b = e.encode_descriptor(
            "zmesh_agent_build_info",
            "Always 1; the labels say which build runs.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64)
            .encode(b.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_text() {
        let mut snap = Snapshot {
            tunnels_up: true,
            control_connected: true,
            map: Some((7, Some(1.5))),
            peers: [2, 1, 0],
            ..Default::default()
        };
        snap.counters.tx_packets = 10;
        snap.counters.tx_packets_relay = 3;
        snap.counters.tx_bytes = 1000;
        snap.counters.tx_bytes_relay = 300;
        snap.counters.drop_replay = 4;
        snap.counters.filter.accepted_rule = 6;
        snap.cross_network = vec![("default".into(), 2), ("lab".into(), 0)];
        let mut r = Registry::default();
        r.register_collector(Box::new(snap));
        let (t, _) = zmesh_shared::metrics::encode(&r, false);
        for line in [
            "zmesh_agent_tunnels_up 1",
            "zmesh_agent_control_connected 1",
            "zmesh_agent_map_revision 7",
            "zmesh_agent_map_age_seconds 1.5",
            "zmesh_agent_peers{path=\"direct\"} 2",
            "zmesh_agent_peers{path=\"relay\"} 1",
            "zmesh_agent_tunnel_packets_total{direction=\"tx\",path=\"direct\"} 7",
            "zmesh_agent_tunnel_packets_total{direction=\"tx\",path=\"relay\"} 3",
            "zmesh_agent_tunnel_bytes_total{direction=\"tx\",path=\"direct\"} 700",
            "zmesh_agent_dropped_packets_total{reason=\"replay\"} 4",
            "zmesh_agent_filter_accepted_packets_total{reason=\"rule\"} 6",
            "zmesh_agent_dropped_cross_network_packets_total{profile=\"default\"} 2",
            "zmesh_agent_dropped_cross_network_packets_total{profile=\"lab\"} 0",
        ] {
            assert!(t.lines().any(|l| l == line), "no {line:?} in\n{t}");
        }
    }
}
