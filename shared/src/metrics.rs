//! What the console's and the agent's Prometheus endpoints share (feature `metrics`):
//! the standard `process_*` metrics read from `/proc/self` at scrape time, and the
//! encoding of a registry in the format the scraper asked for.
//!
//! Both endpoints answer OpenMetrics text to a client that accepts it (Prometheus
//! does) and the Prometheus text format 0.0.4 otherwise (curl, `promtool check
//! metrics`, which reads only the older format). Same metrics, same names.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// `Content-Type` of the OpenMetrics text answer.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics text.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Encodes `registry` as OpenMetrics text (`openmetrics`) or Prometheus text 0.0.4;
/// returns the body and its content type.
pub fn encode(registry: &Registry, openmetrics: bool) -> (String, &'static str) {
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in a collector,
    // and a partial answer is still better than none for the scraper.
    if openmetrics {
        let _ = prometheus_client::encoding::text::encode(&mut out, registry);
        (out, OPENMETRICS_CONTENT_TYPE)
    } else {
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
        (
            out,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    }
}

/// `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`,
/// `process_max_fds`, `process_start_time_seconds` and `process_threads`, read from
/// `/proc/self` on each scrape (Linux only; a value that cannot be read is left out).
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub threads: Option<u64>,
}

impl ProcessStats {
    pub fn read() -> Self {
        // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let fields = stat.as_deref().and_then(stat_fields);
        let field = |i: usize| fields.as_ref().and_then(|f| f.get(i)?.parse::<u64>().ok());
        let ticks = (ticks > 0).then_some(ticks as f64);
        // Field numbers of proc(5), counted from 3 (the state) after the command.
        let (utime, stime, threads, start, rss) =
            (field(14), field(15), field(20), field(22), field(24));
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
        });
        ProcessStats {
            cpu_seconds: match (utime, stime, ticks) {
                (Some(u), Some(s), Some(t)) => Some((u + s) as f64 / t),
                _ => None,
            },
            resident_bytes: match (rss, page) {
                (Some(r), p) if p > 0 => Some(r * p as u64),
                _ => None,
            },
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_fds: std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|s| max_open_files(&s)),
            start_time_seconds: match (boot, start, ticks) {
                (Some(b), Some(s), Some(t)) => Some(b as f64 + s as f64 / t),
                _ => None,
            },
            threads,
        }
    }
}

/// The fields of `/proc/self/stat`, indexed like proc(5) (1 = pid); the command,
/// which may hold spaces and parentheses, is skipped up to its last `)`.
fn stat_fields(s: &str) -> Option<Vec<&str>> {
    let end = s.rfind(')')?;
    let mut v = vec!["", "", ""];
    v.extend(s[end + 1..].split_whitespace());
    Some(v)
}

/// The soft limit of "Max open files" in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let p = ProcessStats::read();
        if let Some(v) = p.cpu_seconds {
            let c = ConstCounter::new(v);
            let e = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                c.metric_type(),
            )?;
            c.encode(e)?;
        }
        let gauges: [(&str, &str, Option<Unit>, Option<f64>); 5] = [
            (
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(Unit::Bytes),
                p.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                p.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                p.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(Unit::Seconds),
                p.start_time_seconds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                None,
                p.threads.map(|v| v as f64),
            ),
        ];
        for (name, help, unit, v) in gauges {
            let Some(v) = v else { continue };
            let g = ConstGauge::new(v);
            let e = encoder.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?;
            g.encode(e)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let p = ProcessStats::read();
        assert!(p.resident_bytes.unwrap() > 1 << 20, "{p:?}");
        assert!(p.open_fds.unwrap() >= 3, "{p:?}");
        assert!(p.max_fds.unwrap() >= p.open_fds.unwrap(), "{p:?}");
        assert!(p.threads.unwrap() >= 1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
        assert!(p.cpu_seconds.unwrap() >= 0.0);
    }

    #[test]
    fn parses_stat_with_odd_command_names() {
        let s = "42 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22";
        let f = stat_fields(s).unwrap();
        assert_eq!(f[3], "S");
        assert_eq!(f[14], "11");
        let limits = "Limit Soft Limit Hard Limit Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn both_formats() {
        let mut r = Registry::default();
        r.register_collector(Box::new(ProcessCollector));
        let (om, ct) = encode(&r, true);
        assert!(ct.starts_with("application/openmetrics-text"));
        assert!(om.contains("process_cpu_seconds_total "), "{om}");
        assert!(
            om.contains("# TYPE process_resident_memory_bytes gauge"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"));
        let (text, ct) = encode(&r, false);
        assert!(ct.starts_with("text/plain; version=0.0.4"));
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
