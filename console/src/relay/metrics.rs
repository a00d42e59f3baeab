//! The built-in relay's metrics: its [`RelayStats`](super::RelayStats) atomics and the
//! devices connected now, read at each scrape (the forwarding path only bumps atomics).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::Relay;

/// Registered with the console's metrics when `serve --relay-listen` starts the relay.
pub struct RelayCollector(pub Arc<Relay>);

impl std::fmt::Debug for RelayCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayCollector")
    }
}

impl Collector for RelayCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0.stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let g = ConstGauge::new(self.0.connected() as i64);
        g.encode(enc.encode_descriptor(
            "zmesh_console_relay_connections",
            "Devices connected to the built-in relay now.",
            None,
            g.metric_type(),
        )?)?;
        let mut e = enc.encode_descriptor(
            "zmesh_console_relay_authentications",
            "Relay connections by authentication result (ok, failed; busy: refused before \
             authenticating, too many connections from its source were still authenticating).",
            None,
            MetricType::Counter,
        )?;
        for (result, v) in [
            ("ok", &s.auth_ok),
            ("failed", &s.auth_failed),
            ("busy", &s.refused_busy),
        ] {
            ConstCounter::new(get(v)).encode(e.encode_family(&[("result", result)])?)?;
        }
        let c = ConstCounter::new(get(&s.forwarded));
        c.encode(enc.encode_descriptor(
            "zmesh_console_relay_forwarded_datagrams",
            "Datagrams the relay forwarded to a connected device.",
            None,
            c.metric_type(),
        )?)?;
        let c = ConstCounter::new(get(&s.forwarded_bytes));
        c.encode(enc.encode_descriptor(
            "zmesh_console_relay_forwarded",
            "Payload bytes of the datagrams the relay forwarded.",
            Some(&Unit::Bytes),
            c.metric_type(),
        )?)?;
        let mut e = enc.encode_descriptor(
            "zmesh_console_relay_dropped_datagrams",
            "Datagrams the relay dropped, by reason (unknown_destination, rate_limit, \
             queue_full).",
            None,
            MetricType::Counter,
        )?;
        for (reason, v) in [
            ("unknown_destination", &s.drop_unknown_dst),
            ("rate_limit", &s.drop_rate),
            ("queue_full", &s.drop_queue_full),
        ] {
            ConstCounter::new(get(v)).encode(e.encode_family(&[("reason", reason)])?)?;
        }
        Ok(())
    }
}
