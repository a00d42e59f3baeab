//! Evidence packs: one tar archive that proves, offline and with the console's public
//! key alone, what the access log and the audit log say about a time window.
//!
//! Building a pack: anchor the access head (an `access.checkpoint` event); export the
//! stretch of the access chain holding every record whose flow overlaps the window, up
//! to the first anchor covering it (`access.jsonl`, mode `range`); write the policy
//! versions in force during the window (`policy/vN.json`); record an `audit.evidence`
//! event naming the window, the SHA-256 of those files and the report key of every
//! device that reported in the stretch; sign an audit checkpoint; export the audit
//! events from the window's start up to that checkpoint (`events.jsonl`); and write
//! `manifest.json` (window, public key, every file with its SHA-256).
//!
//! Verifying a pack ([`verify_pack`]): the manifest's hashes; the events as a gapless
//! stretch ending at a checkpoint whose signature verifies (so every event in it,
//! including `audit.evidence`, `access.checkpoint` and `device.report_key`, is vouched
//! for by the console's key); the files' hashes against the signed `audit.evidence`
//! event; and the access records against the anchors and report keys taken from those
//! signed events, never from the access file's own header.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, Write};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use zmesh_shared::audit::AuditEvent;
use zmesh_shared::{DeviceId, SigningPublicKey};

use super::access_export::{self, AccessSelection, DeviceInfo, Directory};
use super::access_file::{read_header, verify_access_export, AccessFileReport, Trusted};
use super::export::{self, ExportError, Format, Header, FORMAT_TAG};
use super::verify::{verify_export, VerifyError, VerifyReport};
use super::{checkpoint, record_export};
use crate::service::Core;
use crate::store::{AuditChange, AuditCtx, EventFilter, StoreError};

pub const PACK_FORMAT_TAG: &str = "zmesh-evidence-v1";
/// The largest file a pack may hold when verified (read into memory).
const MAX_FILE: u64 = 4 << 30;

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("writing the pack: {0}")]
    Io(#[from] std::io::Error),
    #[error("the window is empty: since must be before until")]
    Window,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackFile {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub since_ms: i64,
    pub until_ms: i64,
    pub since: String,
    pub until: String,
    pub created_at_ms: i64,
    pub public_key: String,
    /// The `audit.evidence` event that vouches for the other files.
    pub evidence_event_seq: u64,
    /// The access chain stretch exported, if any record overlaps the window.
    pub access_range: Option<(u64, u64)>,
    pub files: Vec<PackFile>,
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Collects an export into memory (the pack's parts; a window's worth).
async fn collect<F, Fut>(produce: F) -> Result<Vec<u8>, EvidenceError>
where
    F: FnOnce(tokio::sync::mpsc::Sender<bytes::Bytes>) -> Fut,
    Fut: std::future::Future<Output = Result<u64, ExportError>>,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let consume = async move {
        let mut out = vec![];
        while let Some(b) = rx.recv().await {
            out.extend_from_slice(&b);
        }
        out
    };
    let (r, out) = tokio::join!(produce(tx), consume);
    r?;
    Ok(out)
}

pub async fn directory(core: &Core) -> Result<Directory, StoreError> {
    Ok(core
        .store
        .list_devices(core.network_id)
        .await?
        .into_iter()
        .map(|d| {
            (
                d.id,
                DeviceInfo {
                    name: d.name,
                    owner: d.owner,
                    addr: Some(d.overlay_v4.to_string()),
                },
            )
        })
        .collect())
}

/// The access chain stretch for the window: from the first record overlapping it to
/// the first anchor at or after the last one.
async fn access_range(
    core: &Core,
    since: i64,
    until: i64,
) -> Result<Option<(u64, u64)>, StoreError> {
    let s = &core.store;
    let Some((lo, hi)) = s.access_window_seqs(since, until).await? else {
        return Ok(None);
    };
    for _ in 0..2 {
        let anchors = s.access_anchor_events().await?;
        if let Some(a) = anchors.iter().filter(|a| a.seq >= hi).map(|a| a.seq).min() {
            return Ok(Some((lo, a)));
        }
        s.anchor_access_head().await?;
    }
    // Records arrived faster than the anchors: stop at the newest anchor.
    let newest = s.access_anchor_events().await?.iter().map(|a| a.seq).max();
    Ok(newest.filter(|&a| a >= lo).map(|a| (lo, a)))
}

/// Builds a pack for `[since_ms, until_ms)` into a temporary file (rewound), recording
/// the export (`audit.export`) and the evidence (`audit.evidence`) as `ctx`.
pub async fn build(
    core: &Core,
    ctx: AuditCtx,
    since_ms: i64,
    until_ms: i64,
) -> Result<std::fs::File, EvidenceError> {
    if since_ms >= until_ms {
        return Err(EvidenceError::Window);
    }
    let store = &core.store;
    let pk = core.signing_key.public_key().to_string();
    record_export(
        store,
        ctx.clone(),
        json!({"format": "evidence", "since_ms": since_ms, "until_ms": until_ms}),
    )
    .await?;
    store.anchor_access_head().await?;
    let range = access_range(core, since_ms, until_ms).await?;
    let dir = directory(core).await?;
    let mut files: Vec<(String, Vec<u8>)> = vec![];
    let sel = AccessSelection {
        range: Some(range.unwrap_or((1, 0))),
        ..Default::default()
    };
    let (pk2, dir2) = (pk.clone(), &dir);
    let access =
        collect(
            |tx| async move { access_export::run(store, &sel, Format::Jsonl, pk2, dir2, tx).await },
        )
        .await?;
    let keys = read_header(&mut &access[..])
        .map(|h| h.report_keys)
        .unwrap_or_default();
    files.push(("access.jsonl".into(), access));
    // The policy versions in force at some time in the window (newest first in history).
    let history = store.policy_history(core.network_id).await?;
    let mut next_start = i64::MAX;
    for p in &history {
        if p.created_at_ms < until_ms && next_start > since_ms {
            let v = json!({"version": p.version, "author": p.author,
                "created_at_ms": p.created_at_ms, "created_at": export::rfc3339(p.created_at_ms),
                "in_force_until_ms": (next_start != i64::MAX).then_some(next_start),
                "summary": p.summary, "rollback_of": p.rollback_of, "text": p.text});
            let mut text = serde_json::to_vec_pretty(&v).unwrap_or_default();
            text.push(b'\n');
            files.push((format!("policy/v{}.json", p.version), text));
        }
        next_start = next_start.min(p.created_at_ms);
    }
    let hashes: BTreeMap<String, String> = files.iter().map(|(n, b)| (n.clone(), sha(b))).collect();
    let mut c = AuditChange::new("audit.evidence", "audit");
    c.after = Some(json!({"since_ms": since_ms, "until_ms": until_ms,
        "access_range": range, "files": hashes, "report_keys": keys}));
    let ev = store.acting(ctx).record_event(c).await?;
    checkpoint::create(store, &core.signing_key, "evidence").await?;
    let upto = store
        .list_checkpoints()
        .await?
        .last()
        .map(|c| c.seq)
        .unwrap_or(ev.seq)
        .max(ev.seq);
    let since_filter = EventFilter {
        since_ms: Some(since_ms),
        ..Default::default()
    };
    let first = store
        .audit_events_page(0, upto, &since_filter, 1)
        .await?
        .first()
        .map_or(ev.seq, |e| e.seq);
    let events = events_stretch(core, first, upto, pk.clone()).await?;
    files.insert(0, ("events.jsonl".into(), events));
    let manifest = Manifest {
        format: PACK_FORMAT_TAG.into(),
        since_ms,
        until_ms,
        since: export::rfc3339(since_ms),
        until: export::rfc3339(until_ms),
        created_at_ms: zmesh_shared::time::now_ms(),
        public_key: pk,
        evidence_event_seq: ev.seq,
        access_range: range,
        files: files
            .iter()
            .map(|(n, b)| PackFile {
                name: n.clone(),
                sha256: sha(b),
                bytes: b.len() as u64,
            })
            .collect(),
    };
    let mut out = tempfile::tempfile()?;
    {
        let mut tar = tar::Builder::new(&mut out);
        let mut add = |name: &str, b: &[u8]| -> std::io::Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_size(b.len() as u64);
            h.set_mode(0o644);
            h.set_mtime((manifest.created_at_ms / 1000).max(0) as u64);
            h.set_cksum();
            tar.append_data(&mut h, name, b)
        };
        let mut m = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        m.push(b'\n');
        add("manifest.json", &m)?;
        for (n, b) in &files {
            add(n, b)?;
        }
        tar.finish()?;
    }
    out.flush()?;
    out.rewind()?;
    Ok(out)
}

/// The audit events `from..=upto` as a JSONL export (gapless, ending at a checkpoint).
async fn events_stretch(
    core: &Core,
    from: u64,
    upto: u64,
    public_key: String,
) -> Result<Vec<u8>, EvidenceError> {
    let store = &core.store;
    let h = Header {
        format: FORMAT_TAG,
        complete: false,
        head_seq: upto,
        filter: json!({"from_seq": from, "to_seq": upto}),
        anchor: store.audit_anchor().await?,
        checkpoints: store
            .list_checkpoints()
            .await?
            .into_iter()
            .filter(|c| c.seq >= from && c.seq <= upto)
            .collect(),
        public_key,
    };
    let mut buf = vec![];
    export::encode_header(Format::Jsonl, &h, &mut buf);
    let (mut after, mut count) = (from.saturating_sub(1), 0u64);
    let all = EventFilter::default();
    loop {
        let page = store
            .audit_events_page(after, upto, &all, export::PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            export::encode_event(Format::Jsonl, e, &mut buf);
            count += 1;
        }
    }
    let end = json!({"type": "end", "events": count, "latest_checkpoint": h.checkpoints.last()});
    buf.extend_from_slice(end.to_string().as_bytes());
    buf.push(b'\n');
    Ok(buf)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PackReport {
    pub ok: bool,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub files: usize,
    pub policies: usize,
    pub events: Option<VerifyReport>,
    pub access: Option<AccessFileReport>,
    /// The file where verification failed, if it did.
    pub failed_file: Option<String>,
    pub first_bad_seq: Option<u64>,
    pub error: Option<String>,
}

impl PackReport {
    fn fail(mut self, file: &str, seq: Option<u64>, msg: impl Into<String>) -> Self {
        self.ok = false;
        self.failed_file = Some(file.into());
        self.first_bad_seq = seq;
        self.error = Some(msg.into());
        self
    }
}

/// Whether the bytes start a tar archive (`ustar` magic at offset 257).
pub fn is_tar(head: &[u8]) -> bool {
    head.len() > 262 && &head[257..262] == b"ustar"
}

/// Verifies an evidence pack offline (see the module doc).
pub fn verify_pack(r: impl Read, key: &SigningPublicKey) -> Result<PackReport, VerifyError> {
    let mut ar = tar::Archive::new(r);
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in ar.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut b = vec![];
        (&mut entry).take(MAX_FILE).read_to_end(&mut b)?;
        if files.insert(name.clone(), b).is_some() {
            return Err(VerifyError::Format(format!("{name} twice in the pack")));
        }
    }
    let mut rep = PackReport {
        ok: true,
        since_ms: None,
        until_ms: None,
        files: files.len(),
        policies: files.keys().filter(|n| n.starts_with("policy/")).count(),
        events: None,
        access: None,
        failed_file: None,
        first_bad_seq: None,
        error: None,
    };
    let m: Manifest = files
        .get("manifest.json")
        .and_then(|b| serde_json::from_slice(b).ok())
        .filter(|m: &Manifest| m.format == PACK_FORMAT_TAG)
        .ok_or_else(|| VerifyError::Format("no zmesh-evidence-v1 manifest.json".into()))?;
    rep.since_ms = Some(m.since_ms);
    rep.until_ms = Some(m.until_ms);
    if m.public_key != key.to_string() {
        return Ok(rep.fail("manifest.json", None, "the pack names another console key"));
    }
    for f in &m.files {
        match files.get(&f.name) {
            None => return Ok(rep.fail(&f.name, None, "listed in the manifest but missing")),
            Some(b) if sha(b) != f.sha256 => {
                return Ok(rep.fail(&f.name, None, "does not match its SHA-256 in the manifest"))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = files
        .keys()
        .find(|n| n.as_str() != "manifest.json" && !m.files.iter().any(|f| &f.name == *n))
    {
        return Ok(rep.fail(extra, None, "not listed in the manifest"));
    }
    // The events: a gapless stretch ending at a signed checkpoint.
    let ev_bytes = files.get("events.jsonl").map(Vec::as_slice).unwrap_or(&[]);
    let er = verify_export(ev_bytes, key)?;
    rep.events = Some(er.clone());
    if !er.ok {
        let msg = format!("audit event {}", er.error.clone().unwrap_or_default());
        return Ok(rep.fail("events.jsonl", er.first_bad_seq, msg));
    }
    let (first, last) = (er.first_seq.unwrap_or(0), er.last_seq.unwrap_or(0));
    let header: Value = ev_bytes
        .split(|&b| b == b'\n')
        .next()
        .and_then(|l| serde_json::from_slice(l).ok())
        .unwrap_or(Value::Null);
    let signed_end = header["checkpoints"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["seq"].as_u64() == Some(last)));
    if er.verified != last.saturating_sub(first) + 1 || !signed_end {
        let msg = "the events are not a gapless stretch ending at a signed checkpoint";
        return Ok(rep.fail("events.jsonl", Some(last), msg));
    }
    let events: Vec<AuditEvent> = ev_bytes
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter(|v| v["type"] == "event")
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    let Some(evidence) = events
        .iter()
        .find(|e| e.seq == m.evidence_event_seq && e.action == "audit.evidence")
    else {
        return Ok(rep.fail(
            "events.jsonl",
            None,
            "no audit.evidence event for this pack",
        ));
    };
    let signed = evidence.after.clone().unwrap_or(Value::Null);
    if signed["since_ms"] != m.since_ms || signed["until_ms"] != m.until_ms {
        return Ok(rep.fail(
            "manifest.json",
            None,
            "window differs from the signed evidence",
        ));
    }
    let signed_files: HashMap<String, String> =
        serde_json::from_value(signed["files"].clone()).unwrap_or_default();
    for f in m.files.iter().filter(|f| f.name != "events.jsonl") {
        if signed_files.get(&f.name) != Some(&f.sha256) {
            let msg = "does not match the SHA-256 in the signed audit.evidence event";
            return Ok(rep.fail(&f.name, None, msg));
        }
    }
    if signed_files.len() + 1 != m.files.len() {
        return Ok(rep.fail(
            "manifest.json",
            None,
            "a file of the signed evidence is missing",
        ));
    }
    // Keys and anchors from the signed events, never from the access file's header.
    let mut trusted = Trusted::default();
    let attested: HashMap<String, String> =
        serde_json::from_value(signed["report_keys"].clone()).unwrap_or_default();
    for (d, k) in attested {
        let (Ok(d), Ok(k)) = (d.parse::<DeviceId>(), k.parse::<SigningPublicKey>()) else {
            return Ok(rep.fail("events.jsonl", None, "a bad report key in audit.evidence"));
        };
        trusted.keys.insert(d, k);
    }
    for e in &events {
        let a = e.after.clone().unwrap_or(Value::Null);
        match e.action.as_str() {
            "access.checkpoint" => {
                if let (Some(s), Some(h)) = (a["seq"].as_u64(), a["hash"].as_str()) {
                    trusted.anchors.push((s, h.to_string()));
                }
            }
            "device.report_key" => {
                let dev = e.target.as_deref().and_then(|t| t.strip_prefix("device:"));
                let dev = dev.and_then(|d| d.parse::<DeviceId>().ok());
                let key = a["report_key"].as_str().and_then(|k| k.parse().ok());
                if let (Some(d), Some(k)) = (dev, key) {
                    if trusted.keys.get(&d).is_some_and(|have| *have != k) {
                        let msg = format!(
                            "device {d}: attested report key differs from its registration"
                        );
                        return Ok(rep.fail("events.jsonl", Some(e.seq), msg));
                    }
                }
            }
            _ => {}
        }
    }
    let acc_bytes = files.get("access.jsonl").map(Vec::as_slice).unwrap_or(&[]);
    let ah = read_header(&mut &acc_bytes[..])?;
    if ah.mode != "range"
        || (ah.head_seq > ah.start.seq && !trusted.anchors.iter().any(|a| a.0 == ah.head_seq))
    {
        let msg = "the access records do not end at an anchor in the signed events";
        return Ok(rep.fail("access.jsonl", Some(ah.head_seq), msg));
    }
    let ar = verify_access_export(acc_bytes, key, Some(&trusted))?;
    rep.access = Some(ar.clone());
    if !ar.ok {
        let msg = format!("access record: {}", ar.error.clone().unwrap_or_default());
        return Ok(rep.fail("access.jsonl", ar.first_bad_seq, msg));
    }
    Ok(rep)
}
