//! The console's Prometheus metrics: one [`Metrics`] per process, made with the
//! [`crate::Core`] at start-up and reached through it by every layer that counts
//! (services, the HTTP middleware, agent streams, the relay and STUN responder). No
//! global: tests that build several cores get separate registries.
//!
//! Counters and gauges are atomics (prometheus-client), so counting costs no lock.
//! Values that live in the database (audit head, last checkpoint, network revisions)
//! are read by the scrape handler and handed over with [`Metrics::set_scrape`] just
//! before encoding; process values are read from `/proc/self` while encoding.
//! Names follow Prometheus conventions: base units in the name (`_seconds`, `_bytes`),
//! counters end in `_total` (the encoder adds it). The reference is docs/admin-guide.md
//! ("Metrics").

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use zmesh_shared::wire::ServerMsg;

/// Bounds of the change-to-acknowledgement histogram: 5 ms to ~30 s, roughly doubling.
const APPLY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 20.0, 30.0,
];
/// Bounds of the API latency histogram: 1 ms to 10 s.
const HTTP_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// A request counted by route template (never the raw path: that would make a series
/// per device id) and status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    code: u16,
}

/// Latency by route and status class ("2xx"), keeping the histogram's series few.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    method: &'static str,
    route: String,
    class: &'static str,
}

/// Values read from the database by the scrape handler.
#[derive(Debug, Default, Clone)]
pub struct ScrapeValues {
    pub audit_head_seq: u64,
    /// Age of the newest signed checkpoint; `None` before the first one.
    pub checkpoint_age: Option<Duration>,
    /// (network id, revision).
    pub revisions: Vec<(String, u64)>,
}

/// The collector of [`ScrapeValues`] and the build info.
#[derive(Debug, Default)]
struct ScrapeCollector {
    values: Arc<Mutex<ScrapeValues>>,
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let v = self
            .values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let g = ConstGauge::new(v.audit_head_seq as i64);
        g.encode(enc.encode_descriptor(
            "zmesh_console_audit_head_sequence",
            "Sequence number of the newest audit event.",
            None,
            g.metric_type(),
        )?)?;
        if let Some(age) = v.checkpoint_age {
            let g = ConstGauge::new(age.as_secs_f64());
            g.encode(enc.encode_descriptor(
                "zmesh_console_audit_checkpoint_age",
                "Seconds since the newest signed audit checkpoint was made.",
                Some(&Unit::Seconds),
                g.metric_type(),
            )?)?;
        }
        let mut e = enc.encode_descriptor(
            "zmesh_console_network_revision",
            "Current revision of each network (bumped by every change peers can see).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (net, rev) in &v.revisions {
            let labels = [("network", net.as_str())];
            ConstGauge::new(*rev as i64).encode(e.encode_family(&labels)?)?;
        }
        let mut e = enc.encode_descriptor(
            "zmesh_console_build_info",
            "Always 1; the labels say which build runs.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        let labels = [("version", env!("CARGO_PKG_VERSION"))];
        ConstGauge::new(1i64).encode(e.encode_family(&labels)?)?;
        Ok(())
    }
}

/// The STUN responder's counters, cloned into its task.
#[derive(Clone, Debug)]
pub struct StunCounters {
    family: Family<OutcomeLabels, Counter>,
}

impl StunCounters {
    /// A Binding request answered.
    pub fn answered(&self) {
        self.family
            .get_or_create(&OutcomeLabels {
                outcome: "answered",
            })
            .inc();
    }
    /// A Binding request over the per-source rate limit (not answered).
    pub fn rate_limited(&self) {
        self.family
            .get_or_create(&OutcomeLabels {
                outcome: "rate_limited",
            })
            .inc();
    }
    /// A datagram that is not a Binding request.
    pub fn ignored(&self) {
        self.family
            .get_or_create(&OutcomeLabels { outcome: "ignored" })
            .inc();
    }
}

/// All of the console's metrics and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    /// Registration happens at start-up (and when the relay starts); the lock is taken
    /// again only to encode a scrape, never on a counting path.
    registry: Mutex<Registry>,
    streams: Gauge,
    stream_messages: Family<KindLabels, Counter>,
    stream_bytes: Family<KindLabels, Counter>,
    enrollments: Family<MethodLabels, Counter>,
    enrollment_refusals: Family<ReasonLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<LatencyLabels, Histogram>,
    db_errors: Family<SourceLabels, Counter>,
    change_apply: Histogram,
    change_acks: Counter,
    stun: StunCounters,
    scrape: Arc<Mutex<ScrapeValues>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        // (help texts without a final period: the registry adds one)
        let mut r = Registry::default();
        let streams = Gauge::default();
        r.register(
            "zmesh_console_agent_streams",
            "Agent control streams connected to this console now",
            streams.clone(),
        );
        let stream_messages = Family::<KindLabels, Counter>::default();
        r.register(
            "zmesh_console_stream_messages",
            "Messages sent on agent streams, by kind (map: a full signed map, delta: a \
             signed delta, other: hello, NAT settings, pong, revoked)",
            stream_messages.clone(),
        );
        let stream_bytes = Family::<KindLabels, Counter>::default();
        r.register_with_unit(
            "zmesh_console_stream_sent",
            "Bytes of messages sent on agent streams (the JSON text), by kind",
            Unit::Bytes,
            stream_bytes.clone(),
        );
        let enrollments = Family::<MethodLabels, Counter>::default();
        r.register(
            "zmesh_console_enrollments",
            "Devices enrolled, by method (key: an enrollment key, login: a user signed in)",
            enrollments.clone(),
        );
        let enrollment_refusals = Family::<ReasonLabels, Counter>::default();
        r.register(
            "zmesh_console_enrollment_refusals",
            "Enrollments refused, by reason (unknown, expired, used, revoked key; \
             public_key_taken, name_taken, invalid, address_space_exhausted, other)",
            enrollment_refusals.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        r.register(
            "zmesh_console_http_requests",
            "HTTP requests answered on the API port, by method, route template and \
             status code (route \"unmatched\" for paths no route serves)",
            requests.clone(),
        );
        let request_seconds = Family::<LatencyLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(HTTP_BUCKETS)) as fn() -> Histogram,
        );
        r.register_with_unit(
            "zmesh_console_http_request_duration",
            "Time to answer an HTTP request (to the response head; a WebSocket until \
             its upgrade), by method, route template and status class",
            Unit::Seconds,
            request_seconds.clone(),
        );
        let db_errors = Family::<SourceLabels, Counter>::default();
        r.register(
            "zmesh_console_database_errors",
            "Database errors (SQL, connection, pool) that failed a request (source \
             http), an agent stream (stream) or a metrics scrape (scrape)",
            db_errors.clone(),
        );
        let change_apply = Histogram::new(APPLY_BUCKETS);
        r.register_with_unit(
            "zmesh_console_change_apply",
            "Time from a committed change to each connected affected agent's \
             acknowledgement that it applied it",
            Unit::Seconds,
            change_apply.clone(),
        );
        let change_acks = Counter::default();
        r.register(
            "zmesh_console_change_acks",
            "Acknowledgements of applied changes received from agents",
            change_acks.clone(),
        );
        let stun = StunCounters {
            family: Family::default(),
        };
        r.register(
            "zmesh_console_stun_requests",
            "Datagrams at the built-in STUN responder, by outcome (answered, \
             rate_limited, ignored: not a Binding request)",
            stun.family.clone(),
        );
        let scrape = Arc::new(Mutex::new(ScrapeValues::default()));
        r.register_collector(Box::new(ScrapeCollector {
            values: scrape.clone(),
        }));
        r.register_collector(Box::new(zmesh_shared::metrics::ProcessCollector));
        // Known label values start at 0, so a rate() or an alert sees the series before
        // the first event.
        for kind in ["map", "delta", "other"] {
            let _ = stream_messages.get_or_create(&KindLabels { kind });
            let _ = stream_bytes.get_or_create(&KindLabels { kind });
        }
        for method in ["key", "login"] {
            let _ = enrollments.get_or_create(&MethodLabels { method });
        }
        for reason in ["unknown", "expired", "used", "revoked"] {
            let _ = enrollment_refusals.get_or_create(&ReasonLabels { reason });
        }
        for source in ["http", "stream", "scrape"] {
            let _ = db_errors.get_or_create(&SourceLabels { source });
        }
        for outcome in ["answered", "rate_limited", "ignored"] {
            let _ = stun.family.get_or_create(&OutcomeLabels { outcome });
        }
        Metrics {
            registry: Mutex::new(r),
            streams,
            stream_messages,
            stream_bytes,
            enrollments,
            enrollment_refusals,
            requests,
            request_seconds,
            db_errors,
            change_apply,
            change_acks,
            stun,
            scrape,
        }
    }

    /// Adds a collector read at every scrape (the relay's, when it starts).
    pub fn register_collector(&self, c: Box<dyn Collector>) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register_collector(c);
    }

    /// The database values the next scrape shows.
    pub fn set_scrape(&self, v: ScrapeValues) {
        *self.scrape.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }

    /// Everything, as OpenMetrics text (`openmetrics`) or Prometheus text 0.0.4.
    pub fn encode(&self, openmetrics: bool) -> (String, &'static str) {
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        zmesh_shared::metrics::encode(&r, openmetrics)
    }

    /// Counts a connected agent stream until the guard is dropped (also when the
    /// stream's task is cancelled).
    pub fn stream_connected(&self) -> StreamGuard {
        self.streams.inc();
        StreamGuard(self.streams.clone())
    }

    /// A message of `bytes` went out on an agent stream.
    pub fn stream_sent(&self, m: &ServerMsg, bytes: usize) {
        let kind = match m {
            ServerMsg::PeerMap { .. } => "map",
            ServerMsg::PeerDelta { .. } => "delta",
            _ => "other",
        };
        let l = KindLabels { kind };
        self.stream_messages.get_or_create(&l).inc();
        self.stream_bytes.get_or_create(&l).inc_by(bytes as u64);
    }

    /// A device enrolled with a key (`"key"`) or by login (`"login"`).
    pub fn enrolled(&self, method: &'static str) {
        self.enrollments
            .get_or_create(&MethodLabels { method })
            .inc();
    }

    /// An enrollment refused, with a reason from a fixed set (never user input).
    pub fn enrollment_refused(&self, reason: &'static str) {
        self.enrollment_refusals
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// An HTTP request answered. `route` is the route template, or `None` when no
    /// route matched.
    pub fn http_request(&self, method: &str, route: Option<&str>, code: u16, took: Duration) {
        let method = known_method(method);
        let route = route.unwrap_or("unmatched").to_string();
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.clone(),
                code,
            })
            .inc();
        self.request_seconds
            .get_or_create(&LatencyLabels {
                method,
                route,
                class: status_class(code),
            })
            .observe(took.as_secs_f64());
    }

    /// A database error surfaced at `source` ("http", "stream", "scrape").
    pub fn db_error(&self, source: &'static str) {
        self.db_errors.get_or_create(&SourceLabels { source }).inc();
    }

    /// An agent acknowledged a change `seconds` after it was committed. Called by the
    /// acknowledgement tracker once per connected affected agent.
    pub fn observe_change_applied(&self, seconds: f64) {
        self.change_apply.observe(seconds);
        self.change_acks.inc();
    }

    /// The STUN responder's counters.
    pub fn stun(&self) -> StunCounters {
        self.stun.clone()
    }
}

/// Decrements the connected-streams gauge when dropped.
#[derive(Debug)]
pub struct StreamGuard(Gauge);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The method as a label: one of the standard ones, else "other" (a client must not
/// be able to make new series).
fn known_method(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn counts_and_encodes() {
        let m = Metrics::new();
        let g = m.stream_connected();
        let _g2 = m.stream_connected();
        drop(g);
        m.enrolled("key");
        m.enrollment_refused("used");
        m.http_request(
            "GET",
            Some("/api/v1/devices/{id}"),
            404,
            Duration::from_millis(3),
        );
        m.http_request("BREW", None, 405, Duration::from_millis(1));
        m.observe_change_applied(0.012);
        m.observe_change_applied(40.0);
        m.stun().answered();
        m.set_scrape(ScrapeValues {
            audit_head_seq: 17,
            checkpoint_age: Some(Duration::from_secs(5)),
            revisions: vec![("net_x".into(), 9)],
        });
        let (t, _) = m.encode(false);
        assert_eq!(
            line(&t, "zmesh_console_agent_streams "),
            Some("zmesh_console_agent_streams 1")
        );
        assert!(
            t.contains("zmesh_console_enrollments_total{method=\"key\"} 1"),
            "{t}"
        );
        assert!(t.contains("zmesh_console_enrollment_refusals_total{reason=\"used\"} 1"));
        assert!(t.contains(
            "zmesh_console_http_requests_total{method=\"GET\",route=\"/api/v1/devices/{id}\",code=\"404\"} 1"
        ), "{t}");
        assert!(t.contains("method=\"other\",route=\"unmatched\",code=\"405\""));
        assert!(
            t.contains("zmesh_console_change_apply_seconds_bucket{le=\"0.025\"} 1"),
            "{t}"
        );
        assert!(t.contains("zmesh_console_change_apply_seconds_count 2"));
        assert!(t.contains("zmesh_console_change_acks_total 2"));
        assert!(t.contains("zmesh_console_audit_head_sequence 17"));
        assert!(
            t.contains("zmesh_console_audit_checkpoint_age_seconds 5"),
            "{t}"
        );
        assert!(t.contains("zmesh_console_network_revision{network=\"net_x\"} 9"));
        assert!(t.contains("zmesh_console_stun_requests_total{outcome=\"answered\"} 1"));
        assert!(t.contains("process_resident_memory_bytes "));
        let (om, _) = m.encode(true);
        assert!(om.ends_with("# EOF\n"));
        assert!(
            om.contains("# UNIT zmesh_console_change_apply_seconds seconds"),
            "{om}"
        );
    }
}
