//! How far a change has reached: from a rollout's targets (the devices whose map it
//! changed, connected or not when it was published, and when each acknowledged it),
//! the figures every surface shows: `applied by N of M connected peers (p50 X ms,
//! p99 Y ms, max Z ms)`, plus the devices still pending.

use serde::Serialize;
use zmesh_shared::DeviceId;

use crate::store::{RolloutRow, TargetRow};

/// The figures of one rollout. Latencies are from the change's publication to each
/// connected target's acknowledgement, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Figures {
    /// Targets connected when the change was published.
    pub connected: usize,
    /// Of those, the ones that applied it.
    pub applied: usize,
    pub p50_ms: Option<i64>,
    pub p99_ms: Option<i64>,
    pub max_ms: Option<i64>,
    /// Targets that were offline; they apply the change when they come back.
    pub offline: usize,
    pub offline_applied: usize,
}

/// A device that has not applied the change yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Pending {
    pub device_id: DeviceId,
    pub name: String,
    /// Connected when the change was published (an agent that is slow or stuck);
    /// otherwise it was offline.
    pub connected: bool,
}

/// A rollout as the API returns it (`GET /api/v1/changes/{revision}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// The network revision the change was published at.
    pub revision: u64,
    pub made_at_ms: i64,
    /// The figures are final: every connected target applied it, or the console
    /// stopped waiting ([`crate::service::rollouts::WAIT`]); for an admin change the
    /// `change.applied` audit event has them. Offline targets may still apply it later.
    pub finished: bool,
    #[serde(flatten)]
    pub figures: Figures,
    /// `applied by N of M connected peers (p50 X ms, p99 Y ms, max Z ms)`.
    pub summary: String,
    /// The devices that have not applied it yet (at most 100 listed).
    pub pending: Vec<Pending>,
    pub pending_total: usize,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

pub fn figures(made_at_ms: i64, targets: &[TargetRow]) -> Figures {
    let mut lat: Vec<i64> = targets
        .iter()
        .filter(|t| t.connected)
        .filter_map(|t| t.applied_at_ms.map(|a| (a - made_at_ms).max(0)))
        .collect();
    lat.sort_unstable();
    let connected = targets.iter().filter(|t| t.connected).count();
    let offline_applied = targets
        .iter()
        .filter(|t| !t.connected && t.applied_at_ms.is_some())
        .count();
    Figures {
        connected,
        applied: lat.len(),
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        max_ms: lat.last().copied(),
        offline: targets.len() - connected,
        offline_applied,
    }
}

/// Every connected target applied the change.
pub fn complete(f: &Figures) -> bool {
    f.applied == f.connected
}

/// `applied by N of M connected peers (p50 X ms, p99 Y ms, max Z ms)`, and the offline
/// devices still to apply it, if any.
pub fn summary(f: &Figures) -> String {
    let mut s = format!(
        "applied by {} of {} connected peer{}",
        f.applied,
        f.connected,
        if f.connected == 1 { "" } else { "s" }
    );
    if let (Some(p50), Some(p99), Some(max)) = (f.p50_ms, f.p99_ms, f.max_ms) {
        s.push_str(&format!(" (p50 {p50} ms, p99 {p99} ms, max {max} ms)"));
    }
    let waiting = f.offline - f.offline_applied;
    if waiting > 0 {
        s.push_str(&format!("; {waiting} offline, pending"));
    }
    s
}

pub fn report(r: &RolloutRow, targets: &[TargetRow]) -> Report {
    let f = figures(r.made_at_ms, targets);
    Report {
        revision: r.revision,
        made_at_ms: r.made_at_ms,
        finished: r.finished_at_ms.is_some(),
        summary: summary(&f),
        figures: f,
        pending: targets
            .iter()
            .filter(|t| t.applied_at_ms.is_none())
            .map(|t| Pending {
                device_id: t.device_id,
                name: t.name.clone(),
                connected: t.connected,
            })
            .collect(),
        pending_total: targets.iter().filter(|t| t.applied_at_ms.is_none()).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(connected: bool, applied: Option<i64>) -> TargetRow {
        TargetRow {
            device_id: DeviceId::new(),
            name: "d".into(),
            connected,
            applied_at_ms: applied,
        }
    }

    #[test]
    fn figures_count_connected_and_rank_latencies() {
        let made = 1_000;
        let mut ts: Vec<TargetRow> = (1..=100).map(|i| t(true, Some(made + i))).collect();
        ts.push(t(true, None));
        ts.push(t(false, None));
        ts.push(t(false, Some(made + 5_000)));
        // an acknowledgement that came before the change was noted counts as 0 ms
        ts.push(t(true, Some(made - 3)));
        let f = figures(made, &ts);
        assert_eq!((f.connected, f.applied), (102, 101));
        assert_eq!((f.offline, f.offline_applied), (2, 1));
        assert_eq!(f.p50_ms, Some(50));
        assert_eq!(f.p99_ms, Some(99));
        assert_eq!(f.max_ms, Some(100));
        assert!(!complete(&f));
        assert_eq!(
            summary(&f),
            "applied by 101 of 102 connected peers (p50 50 ms, p99 99 ms, max 100 ms); 1 offline, pending"
        );
    }

    #[test]
    fn nothing_connected_is_complete_and_says_so() {
        let f = figures(0, &[t(false, None)]);
        assert!(complete(&f));
        assert_eq!(
            summary(&f),
            "applied by 0 of 0 connected peers; 1 offline, pending"
        );
        let f = figures(0, &[t(true, Some(7))]);
        assert_eq!(
            summary(&f),
            "applied by 1 of 1 connected peer (p50 7 ms, p99 7 ms, max 7 ms)"
        );
    }

    #[test]
    fn report_lists_what_is_pending() {
        let r = RolloutRow {
            network_id: zmesh_shared::NetworkId::new(),
            revision: 9,
            made_at_ms: 0,
            audited: true,
            finished_at_ms: None,
        };
        let ts = [t(true, Some(3)), t(true, None), t(false, None)];
        let rep = report(&r, &ts);
        assert!(!rep.finished);
        assert_eq!(rep.pending_total, 2);
        assert_eq!(rep.pending.len(), 2);
        assert!(rep.pending[0].connected && !rep.pending[1].connected);
    }
}
