//! Streamed exports of the access log as JSON Lines, CSV or CEF, mirroring the audit
//! event exports (`export.rs`): read in pages by sequence number up to the head seen at
//! the start, pushed through a bounded channel, so memory stays bounded by the devices
//! and anchors, never by the records.
//!
//! Every record carries what an auditor reads (times, the reporting device, both ends
//! with their names and owners, ports, bytes and packets each way, verdict, rule,
//! policy version, which ends reported it) and what a verifier needs (the device's
//! report number and signature, `prev_hash`, `hash`).
//!
//! JSONL: a `header` line (format tag, mode, filter, the chain position before the
//! first record, the console's public key, the access anchors with the audit events
//! carrying them, the signed audit checkpoints from the first anchor on, and the report
//! key of every device that reported), one `access` line per record, an `end` line.
//! Modes: `complete` (no filter: the whole remaining chain), `filtered`, and `range`
//! (a contiguous stretch of the chain, used by evidence packs).
//!
//! CSV (RFC 4180, text cells quoted and defused as in the event CSV): the `record`
//! column says `export`, `anchor`, `checkpoint`, `key` or `access`. The export row puts
//! the head in `seq`, the format tag in `reporter`, the mode in `ends`, the filter
//! (JSON) in `rule`, the chain position before the first record in `report_seq` and
//! `prev_hash`, and the console's public key in `sig`; an anchor row its audit event in
//! `report_seq`; a checkpoint row its time in `received_at` and its signature in `sig`;
//! a key row the device in `reporter`/`reporter_name` and its report key in `sig`.
//! CEF: one line per anchor and per record (`access.accepted`, `access.denied`).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use zmesh_shared::audit::{Checkpoint, GENESIS_HASH};
use zmesh_shared::DeviceId;

use super::export::{cef_line, cell, csv_row, rfc3339, ExportError, Format};
use crate::store::{AccessFilter, AccessRow, Store, StoreError};

pub const ACCESS_FORMAT_TAG: &str = "zmesh-access-v1";
/// Records read per database round trip.
const PAGE: u32 = 2000;
/// Bytes gathered before a chunk is handed to the consumer.
const CHUNK: usize = 64 * 1024;

pub const ACCESS_CSV_COLUMNS: [&str; 31] = [
    "record",
    "seq",
    "first_seen",
    "first_seen_ms",
    "last_seen",
    "last_seen_ms",
    "received_at",
    "received_at_ms",
    "reporter",
    "reporter_name",
    "src_device",
    "src_name",
    "src_owner",
    "dst_device",
    "dst_name",
    "dst_owner",
    "proto",
    "src_port",
    "dst_port",
    "bytes",
    "packets",
    "bytes_back",
    "packets_back",
    "verdict",
    "rule",
    "policy_version",
    "ends",
    "report_seq",
    "sig",
    "prev_hash",
    "hash",
];

/// What an export holds.
#[derive(Debug, Clone, Default)]
pub struct AccessSelection {
    pub filter: AccessFilter,
    /// The user (email or name) the device filter was resolved from, for the header.
    pub user: Option<String>,
    /// A contiguous stretch `from..=to` of the chain, unfiltered (evidence packs).
    pub range: Option<(u64, u64)>,
}

impl AccessSelection {
    pub fn mode(&self) -> &'static str {
        let f = &self.filter;
        if self.range.is_some() {
            "range"
        } else if f.since_ms.is_none()
            && f.until_ms.is_none()
            && f.devices.is_none()
            && f.verdict.is_none()
            && !f.one_sided_only
        {
            "complete"
        } else {
            "filtered"
        }
    }

    pub fn filter_json(&self) -> Value {
        let f = &self.filter;
        json!({"since_ms": f.since_ms, "until_ms": f.until_ms, "user": self.user,
               "devices": f.devices, "verdict": f.verdict.map(|v| v.as_str()),
               "one_sided": f.one_sided_only,
               "range": self.range.map(|(a, b)| json!({"from_seq": a, "to_seq": b}))})
    }
}

/// A position in the access chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainPoint {
    pub seq: u64,
    pub hash: String,
}

/// An anchor of the access chain and the audit event (`access.checkpoint`) holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessAnchor {
    pub seq: u64,
    pub hash: String,
    pub event_seq: u64,
}

/// The JSONL header (see the module doc).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessHeader {
    pub format: String,
    /// `complete`, `filtered` or `range`.
    pub mode: String,
    pub filter: Value,
    /// The chain position just before the first record (the start, the retention cut,
    /// or the record before a range).
    pub start: ChainPoint,
    /// The last record the export may hold.
    pub head_seq: u64,
    /// The console's Ed25519 key that signs the audit checkpoints, base64.
    pub public_key: String,
    pub anchors: Vec<AccessAnchor>,
    /// Signed audit checkpoints from the first anchor's event on.
    pub checkpoints: Vec<Checkpoint>,
    /// Device id → report public key, for every device that reported a record here.
    pub report_keys: BTreeMap<String, String>,
}

/// What the export shows of a device: name, owner, overlay IPv4 address.
#[derive(Debug, Clone, Default)]
pub struct DeviceInfo {
    pub name: String,
    pub owner: String,
    pub addr: Option<String>,
}

pub type Directory = HashMap<DeviceId, DeviceInfo>;

/// Report keys the console knows: the devices' rows, then the `device.report_key`
/// events for devices deleted since.
pub async fn known_report_keys(store: &Store) -> Result<HashMap<DeviceId, String>, StoreError> {
    let mut keys: HashMap<DeviceId, String> = store
        .report_keys()
        .await?
        .into_iter()
        .map(|(d, k)| (d, k.to_string()))
        .collect();
    for (d, k) in store.report_key_events().await? {
        keys.entry(d).or_insert(k);
    }
    Ok(keys)
}

pub async fn header(
    store: &Store,
    sel: &AccessSelection,
    public_key: String,
) -> Result<AccessHeader, StoreError> {
    // Anchors first, then the head: a legitimate anchor then never lies beyond the
    // head, and one that does (a truncated log) travels with the export.
    let anchor_events = store.access_anchor_events().await?;
    let checkpoints = store.list_checkpoints().await?;
    let head = store.access_head().await?;
    let (cut_seq, cut_hash) = store
        .access_prunes()
        .await?
        .into_iter()
        .last()
        .unwrap_or((0, GENESIS_HASH.to_string()));
    let (start, head_seq) = match sel.range {
        Some((from, to)) => {
            let first = store.access_page(from.saturating_sub(1), 1).await?;
            let hash = first
                .first()
                .filter(|e| e.seq == from)
                .map(|e| e.prev_hash.clone())
                .unwrap_or_default();
            (
                ChainPoint {
                    seq: from.saturating_sub(1),
                    hash,
                },
                to,
            )
        }
        None => (
            ChainPoint {
                seq: cut_seq,
                hash: cut_hash,
            },
            head.seq,
        ),
    };
    let anchors: Vec<AccessAnchor> = anchor_events
        .into_iter()
        .filter(|a| sel.range.is_none() || (a.seq > start.seq && a.seq <= head_seq))
        .map(|a| AccessAnchor {
            seq: a.seq,
            hash: a.hash,
            event_seq: a.event_seq,
        })
        .collect();
    let first_event = anchors.iter().map(|a| a.event_seq).min();
    let checkpoints = checkpoints
        .into_iter()
        .filter(|c| first_event.is_some_and(|e| c.seq >= e))
        .collect();
    let known = known_report_keys(store).await?;
    let report_keys = store
        .access_reporters(start.seq, head_seq)
        .await?
        .into_iter()
        .filter_map(|d| known.get(&d).map(|k| (d.to_string(), k.clone())))
        .collect();
    Ok(AccessHeader {
        format: ACCESS_FORMAT_TAG.to_string(),
        mode: sel.mode().to_string(),
        filter: sel.filter_json(),
        start,
        head_seq,
        public_key,
        anchors,
        checkpoints,
        report_keys,
    })
}

/// Streams the export into `out`; returns how many records were written.
pub async fn run(
    store: &Store,
    sel: &AccessSelection,
    fmt: Format,
    public_key: String,
    dir: &Directory,
    out: mpsc::Sender<Bytes>,
) -> Result<u64, ExportError> {
    let h = header(store, sel, public_key).await?;
    let mut buf = Vec::with_capacity(CHUNK * 2);
    encode_header(fmt, &h, dir, &mut buf);
    let filter = if sel.range.is_some() {
        AccessFilter::default()
    } else {
        sel.filter.clone()
    };
    let mut after = h.start.seq;
    let mut count = 0u64;
    'pages: loop {
        let page = store.list_access(&filter, after, PAGE).await?;
        for r in &page {
            if r.entry.seq > h.head_seq {
                break 'pages;
            }
            after = r.entry.seq;
            encode_record(fmt, r, dir, &mut buf);
            count += 1;
            if buf.len() >= CHUNK {
                let chunk = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK * 2));
                out.send(Bytes::from(chunk))
                    .await
                    .map_err(|_| ExportError::Closed)?;
            }
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    if fmt == Format::Jsonl {
        let end = json!({"type": "end", "records": count, "head_seq": h.head_seq});
        buf.extend_from_slice(end.to_string().as_bytes());
        buf.push(b'\n');
    }
    if !buf.is_empty() {
        out.send(Bytes::from(buf))
            .await
            .map_err(|_| ExportError::Closed)?;
    }
    Ok(count)
}

/// Which ends reported the flow: `both`, `source only` or `destination only`.
pub fn ends(r: &AccessRow) -> &'static str {
    if !r.one_sided {
        "both"
    } else if r.entry.reporter == r.entry.signed.record.src_device {
        "source only"
    } else {
        "destination only"
    }
}

fn info(dir: &Directory, d: DeviceId) -> DeviceInfo {
    dir.get(&d).cloned().unwrap_or_default()
}

/// One record as a JSON object (the JSONL line, without its trailing newline).
pub fn record_json(r: &AccessRow, dir: &Directory) -> Value {
    let e = &r.entry;
    let f = &e.signed.record;
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    let (rep, src, dst) = (
        info(dir, e.reporter),
        info(dir, f.src_device),
        info(dir, f.dst_device),
    );
    v["type"] = "access".into();
    v["one_sided"] = r.one_sided.into();
    v["ends"] = ends(r).into();
    v["reporter_name"] = rep.name.into();
    v["src_name"] = src.name.into();
    v["src_owner"] = src.owner.into();
    v["dst_name"] = dst.name.into();
    v["dst_owner"] = dst.owner.into();
    v["first_seen"] = rfc3339(f.first_seen_ms).into();
    v["last_seen"] = rfc3339(f.last_seen_ms).into();
    v["received_at"] = rfc3339(e.received_at_ms).into();
    v
}

fn row_of(cells: &[(&str, String)]) -> Vec<String> {
    ACCESS_CSV_COLUMNS
        .iter()
        .map(|c| {
            cells
                .iter()
                .find(|(k, _)| k == c)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        })
        .collect()
}

pub fn encode_header(fmt: Format, h: &AccessHeader, dir: &Directory, buf: &mut Vec<u8>) {
    match fmt {
        Format::Jsonl => {
            let mut v = serde_json::to_value(h).unwrap_or(Value::Null);
            v["type"] = "header".into();
            buf.extend_from_slice(v.to_string().as_bytes());
            buf.push(b'\n');
        }
        Format::Csv => {
            buf.extend_from_slice(ACCESS_CSV_COLUMNS.join(",").as_bytes());
            buf.extend_from_slice(b"\r\n");
            let export = row_of(&[
                ("record", cell("export")),
                ("seq", h.head_seq.to_string()),
                ("reporter", cell(&h.format)),
                ("ends", cell(&h.mode)),
                ("rule", cell(&h.filter.to_string())),
                ("report_seq", h.start.seq.to_string()),
                ("prev_hash", cell(&h.start.hash)),
                ("sig", cell(&h.public_key)),
            ]);
            csv_row(buf, &export);
            for a in &h.anchors {
                let row = row_of(&[
                    ("record", cell("anchor")),
                    ("seq", a.seq.to_string()),
                    ("report_seq", a.event_seq.to_string()),
                    ("hash", cell(&a.hash)),
                ]);
                csv_row(buf, &row);
            }
            for c in &h.checkpoints {
                let row = row_of(&[
                    ("record", cell("checkpoint")),
                    ("seq", c.seq.to_string()),
                    ("received_at", cell(&rfc3339(c.time_ms))),
                    ("received_at_ms", c.time_ms.to_string()),
                    ("hash", cell(&c.hash)),
                    ("sig", cell(&c.signature)),
                ]);
                csv_row(buf, &row);
            }
            for (d, k) in &h.report_keys {
                let name = d
                    .parse()
                    .ok()
                    .map(|id| info(dir, id).name)
                    .unwrap_or_default();
                let row = row_of(&[
                    ("record", cell("key")),
                    ("reporter", cell(d)),
                    ("reporter_name", cell(&name)),
                    ("sig", cell(k)),
                ]);
                csv_row(buf, &row);
            }
        }
        Format::Cef => {
            for a in &h.anchors {
                let ext = [
                    ("cn1Label", "seq".into()),
                    ("cn1", a.seq.to_string()),
                    ("cn2Label", "auditSeq".into()),
                    ("cn2", a.event_seq.to_string()),
                    ("cs4Label", "hash".into()),
                    ("cs4", a.hash.clone()),
                ];
                cef_line(buf, "access.anchor", 1, &ext);
            }
        }
    }
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "IPv6-ICMP".into(),
        n => n.to_string(),
    }
}

pub fn encode_record(fmt: Format, r: &AccessRow, dir: &Directory, buf: &mut Vec<u8>) {
    let e = &r.entry;
    let f = &e.signed.record;
    match fmt {
        Format::Jsonl => {
            buf.extend_from_slice(record_json(r, dir).to_string().as_bytes());
            buf.push(b'\n');
        }
        Format::Csv => {
            let (rep, src, dst) = (
                info(dir, e.reporter),
                info(dir, f.src_device),
                info(dir, f.dst_device),
            );
            let row = [
                cell("access"),
                e.seq.to_string(),
                cell(&rfc3339(f.first_seen_ms)),
                f.first_seen_ms.to_string(),
                cell(&rfc3339(f.last_seen_ms)),
                f.last_seen_ms.to_string(),
                cell(&rfc3339(e.received_at_ms)),
                e.received_at_ms.to_string(),
                cell(&e.reporter.to_string()),
                cell(&rep.name),
                cell(&f.src_device.to_string()),
                cell(&src.name),
                cell(&src.owner),
                cell(&f.dst_device.to_string()),
                cell(&dst.name),
                cell(&dst.owner),
                f.proto.to_string(),
                f.src_port.to_string(),
                f.dst_port.to_string(),
                f.bytes.to_string(),
                f.packets.to_string(),
                f.bytes_back.to_string(),
                f.packets_back.to_string(),
                cell(f.verdict.as_str()),
                f.rule.as_deref().map(cell).unwrap_or_default(),
                f.policy_version.map(|v| v.to_string()).unwrap_or_default(),
                cell(ends(r)),
                e.signed.report_seq.to_string(),
                cell(&e.signed.sig),
                cell(&e.prev_hash),
                cell(&e.hash),
            ];
            csv_row(buf, &row);
        }
        Format::Cef => {
            let (src, dst) = (info(dir, f.src_device), info(dir, f.dst_device));
            let denied = zmesh_shared::flowlog::is_denied(f);
            let sev = match (denied, r.one_sided) {
                (true, _) => 5,
                (false, true) => 4,
                (false, false) => 3,
            };
            let mut ext = vec![
                ("rt", e.received_at_ms.to_string()),
                ("start", f.first_seen_ms.to_string()),
                ("end", f.last_seen_ms.to_string()),
            ];
            if let Some(a) = src.addr {
                ext.push(("src", a));
            }
            if let Some(a) = dst.addr {
                ext.push(("dst", a));
            }
            ext.extend([
                ("shost", src.name),
                ("dhost", dst.name),
                ("suser", src.owner),
                ("duser", dst.owner),
                ("spt", f.src_port.to_string()),
                ("dpt", f.dst_port.to_string()),
                ("proto", proto_name(f.proto)),
                ("out", f.bytes.to_string()),
                ("in", f.bytes_back.to_string()),
                ("act", f.verdict.as_str().to_string()),
                ("cn1Label", "seq".into()),
                ("cn1", e.seq.to_string()),
                ("cn3Label", "reportSeq".into()),
                ("cn3", e.signed.report_seq.to_string()),
                ("cs1Label", "rule".into()),
                ("cs1", f.rule.clone().unwrap_or_default()),
                ("cs2Label", "ends".into()),
                ("cs2", ends(r).into()),
                ("cs3Label", "reporter".into()),
                ("cs3", e.reporter.to_string()),
                ("cs4Label", "hash".into()),
                ("cs4", e.hash.clone()),
                ("cs5Label", "prevHash".into()),
                ("cs5", e.prev_hash.clone()),
                ("cs6Label", "signature".into()),
                ("cs6", e.signed.sig.clone()),
                ("flexString1Label", "srcDevice".into()),
                ("flexString1", f.src_device.to_string()),
                ("flexString2Label", "dstDevice".into()),
                ("flexString2", f.dst_device.to_string()),
            ]);
            if let Some(v) = f.policy_version {
                ext.push(("cn2Label", "policyVersion".into()));
                ext.push(("cn2", v.to_string()));
            }
            let name = if denied {
                "access.denied"
            } else {
                "access.accepted"
            };
            cef_line(buf, name, sev, &ext);
        }
    }
}
