//! Flow reports: the data plane's denied packets and accepted-flow summaries turned
//! into records that name devices (both ends name a flow the same way: the source is
//! the device that opened it), then numbered and signed with the device's report key
//! (`zmesh_shared::flowlog`), so the console can keep them as evidence it cannot forge.

use std::net::IpAddr;
use std::time::Instant;

use zmesh_shared::flowlog::{sign_flow, SignedFlow};
use zmesh_shared::peermap::PeerMap;
use zmesh_shared::wire::{FlowRecord, FlowVerdict, MAX_FLOWS_PER_BATCH};
use zmesh_shared::{DeviceId, SigningKey, SigningPublicKey};

use crate::io::{DataPlane, Origin};

/// Most denied-packet records in one report.
pub(super) const MAX_DENIED_PER_REPORT: usize = 64;

/// Numbers and signs this device's records. Report numbers start at the wall clock in
/// microseconds and count up by one per record, so they keep increasing across daemon
/// restarts (a device sends far fewer than a million records a second) without any
/// state on disk; the console refuses a number it has seen from the device (a replay).
pub struct Reporter {
    key: SigningKey,
    device: DeviceId,
    next: u64,
}

impl Reporter {
    pub fn new(key: SigningKey, device: DeviceId, now_ms: i64) -> Self {
        Reporter {
            key,
            device,
            next: (now_ms.max(0) as u64).saturating_mul(1000),
        }
    }

    pub fn public_key(&self) -> SigningPublicKey {
        self.key.public_key()
    }

    pub fn sign(&mut self, records: Vec<FlowRecord>) -> Vec<SignedFlow> {
        records
            .into_iter()
            .map(|r| {
                self.next += 1;
                sign_flow(&self.key, self.device, self.next, r)
            })
            .collect()
    }
}

/// Drains the data plane's denied-flow records as `Flows` records (verdict denied,
/// one packet each: the filter samples denied packets, rate-limited per source).
/// Beyond one report's worth they are dropped, which bounds the audit stream.
pub(super) async fn denied(dp: &DataPlane, map: Option<&PeerMap>) -> Vec<FlowRecord> {
    let flows = dp.denied_flows().await;
    let Some(map) = map else {
        return vec![];
    };
    let (now, wall) = (Instant::now(), zmesh_shared::time::now_ms());
    if flows.len() > MAX_DENIED_PER_REPORT {
        tracing::debug!(
            dropped = flows.len() - MAX_DENIED_PER_REPORT,
            "denied-flow reports over the per-report limit"
        );
    }
    flows
        .into_iter()
        .take(MAX_DENIED_PER_REPORT)
        .filter_map(|f| {
            // The source passed the cryptokey check, so it is a peer's overlay address.
            let src = map
                .peers
                .iter()
                .find(|p| IpAddr::V4(p.overlay_v4) == f.src || IpAddr::V6(p.overlay_v6) == f.src)?;
            let at = wall - now.saturating_duration_since(f.at).as_millis() as i64;
            Some(FlowRecord {
                src_device: src.device_id,
                dst_device: map.device_id,
                proto: f.proto,
                src_port: f.src_port,
                dst_port: f.dst_port,
                bytes: 0,
                packets: 1,
                bytes_back: 0,
                packets_back: 0,
                first_seen_ms: at,
                last_seen_ms: at,
                rule: None,
                policy_version: map.policy_version,
                verdict: FlowVerdict::Denied,
            })
        })
        .collect()
}

/// The device owning an overlay address: this device or a peer.
fn device_of(map: &PeerMap, ip: IpAddr) -> Option<DeviceId> {
    if ip == IpAddr::V4(map.me.overlay_v4) || ip == IpAddr::V6(map.me.overlay_v6) {
        return Some(map.device_id);
    }
    map.peers
        .iter()
        .find(|p| IpAddr::V4(p.overlay_v4) == ip || IpAddr::V6(p.overlay_v6) == ip)
        .map(|p| p.device_id)
}

/// Drains up to one batch of accepted-flow summaries as `Flows` records (verdict
/// accepted), named the same way by both ends: source is the device that opened the
/// flow. Without a peer map they stay queued; summaries whose addresses are not
/// overlay addresses (routed subnets) are skipped.
pub(super) async fn accepted(dp: &DataPlane, map: Option<&PeerMap>) -> Vec<FlowRecord> {
    let Some(map) = map else {
        return vec![];
    };
    let sums = dp.flow_summaries(MAX_FLOWS_PER_BATCH).await;
    let (now, wall) = (Instant::now(), zmesh_shared::time::now_ms());
    let ms = |t: Instant| wall - now.saturating_duration_since(t).as_millis() as i64;
    let mut skipped = 0usize;
    let out: Vec<FlowRecord> = sums
        .into_iter()
        .filter_map(|s| {
            let (src, sport, dst, dport) = s.endpoints();
            let (tx, rx) = ((s.tx_bytes, s.tx_packets), (s.rx_bytes, s.rx_packets));
            let (fwd, back) = match s.origin {
                Origin::Local => (tx, rx),
                Origin::Peer(_) => (rx, tx),
            };
            let (Some(src_device), Some(dst_device)) = (device_of(map, src), device_of(map, dst))
            else {
                skipped += 1;
                return None;
            };
            Some(FlowRecord {
                src_device,
                dst_device,
                proto: s.key.proto,
                src_port: sport,
                dst_port: dport,
                // From the opener to the responder, and back: which of this
                // device's counters is which depends on who opened.
                bytes: fwd.0,
                packets: fwd.1,
                bytes_back: back.0,
                packets_back: back.1,
                first_seen_ms: ms(s.first_seen),
                last_seen_ms: ms(s.last_seen),
                rule: Some(match s.origin {
                    Origin::Local => "outbound".to_string(),
                    Origin::Peer(i) => format!("rules[{i}]"),
                }),
                policy_version: map.policy_version,
                verdict: FlowVerdict::Accepted,
            })
        })
        .collect();
    if skipped > 0 {
        tracing::debug!(skipped, "flow summaries not between overlay addresses");
    }
    out
}
