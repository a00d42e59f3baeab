//! Streamed exports of the audit log as JSON Lines, CSV or CEF.
//!
//! Events are read in pages by sequence number up to the head seen at the start, so an
//! export is a consistent prefix of the chain and memory stays bounded whatever its
//! size: the producer pushes chunks into a bounded channel and waits when the reader
//! is slow. Every export carries the chain fields (`seq`, `prev_hash`, `hash`), the
//! anchor (after pruning) and the signed checkpoints up to its end, so an unfiltered
//! JSONL or CSV export can be verified offline with the console's public key alone.
//!
//! JSONL: a `header` line, one `event` line each, an `end` line. CSV (RFC 4180, every
//! text cell quoted): a `record` column says `export`, `anchor`, `checkpoint` or
//! `event`. A text cell starting with `= + - @ ' TAB CR` gets one leading `'` so a
//! spreadsheet never evaluates it; readers remove exactly one leading `'`. An empty
//! cell is an absent value. CEF: one line per checkpoint and event, for SIEMs.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use zmesh_shared::audit::{AuditEvent, Checkpoint};

use crate::store::{EventFilter, Store, StoreError};

/// Events read per database round trip.
pub const PAGE: u32 = 2000;
/// Bytes gathered before a chunk is handed to the consumer.
const CHUNK: usize = 64 * 1024;
pub const FORMAT_TAG: &str = "zmesh-audit-v1";

/// The columns of a CSV export; exports from before several networks lack the last
/// one (`network`), and the verifier takes both.
pub const CSV_COLUMNS: [&str; 14] = [
    "record",
    "seq",
    "time_ms",
    "time",
    "actor",
    "action",
    "target",
    "source_addr",
    "before",
    "after",
    "prev_hash",
    "hash",
    "signature",
    "network",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jsonl,
    Csv,
    Cef,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "jsonl" | "json" | "ndjson" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            "cef" => Some(Format::Cef),
            _ => None,
        }
    }
    pub fn content_type(&self) -> &'static str {
        match self {
            Format::Jsonl => "application/x-ndjson; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Cef => "text/plain; charset=utf-8",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the reader went away")]
    Closed,
}

/// What precedes the events.
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    pub format: &'static str,
    /// Unfiltered: the export is the whole remaining chain and verifies as such.
    pub complete: bool,
    pub head_seq: u64,
    pub filter: Value,
    pub anchor: Option<Checkpoint>,
    pub checkpoints: Vec<Checkpoint>,
    pub public_key: String,
}

pub fn filter_json(f: &EventFilter) -> Value {
    json!({"since_ms": f.since_ms, "until_ms": f.until_ms, "actor": f.actor,
           "device": f.device, "action": f.action})
}

/// Reads the head, anchor and checkpoints that frame an export.
pub async fn header(
    store: &Store,
    filter: &EventFilter,
    public_key: String,
) -> Result<Header, StoreError> {
    // Checkpoints first, then the head: every legitimate checkpoint then lies at or
    // below the head, and one beyond it (a truncated log) travels with the export,
    // where the offline verifier catches it.
    let checkpoints = store.list_checkpoints().await?;
    let head = store.audit_head().await?;
    Ok(Header {
        format: FORMAT_TAG,
        complete: filter.is_empty(),
        head_seq: head.seq,
        filter: filter_json(filter),
        anchor: store.audit_anchor().await?,
        checkpoints,
        public_key,
    })
}

/// Streams the export into `out`; returns how many events were written.
pub async fn run(
    store: &Store,
    filter: &EventFilter,
    fmt: Format,
    public_key: String,
    out: mpsc::Sender<Bytes>,
) -> Result<u64, ExportError> {
    let h = header(store, filter, public_key).await?;
    let mut buf = Vec::with_capacity(CHUNK * 2);
    encode_header(fmt, &h, &mut buf);
    let mut after = h.anchor.as_ref().map(|a| a.seq).unwrap_or(0);
    let mut count = 0u64;
    loop {
        let page = store
            .audit_events_page(after, h.head_seq, filter, PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            encode_event(fmt, e, &mut buf);
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
        let end = json!({"type": "end", "events": count,
            "latest_checkpoint": h.checkpoints.last()});
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

pub fn encode_header(fmt: Format, h: &Header, buf: &mut Vec<u8>) {
    match fmt {
        Format::Jsonl => {
            let mut v = serde_json::to_value(h).unwrap_or(Value::Null);
            v["type"] = "header".into();
            buf.extend_from_slice(v.to_string().as_bytes());
            buf.push(b'\n');
        }
        Format::Csv => {
            buf.extend_from_slice(CSV_COLUMNS.join(",").as_bytes());
            buf.extend_from_slice(b"\r\n");
            let target = if h.complete { "complete" } else { "filtered" };
            let meta = [
                cell("export"),
                h.head_seq.to_string(),
                String::new(),
                String::new(),
                String::new(),
                cell(h.format),
                cell(target),
                String::new(),
                String::new(),
                cell(&h.filter.to_string()),
                String::new(),
                String::new(),
                cell(&h.public_key),
                String::new(),
            ];
            csv_row(buf, &meta);
            if let Some(a) = &h.anchor {
                csv_checkpoint(buf, "anchor", a);
            }
            for c in &h.checkpoints {
                csv_checkpoint(buf, "checkpoint", c);
            }
        }
        Format::Cef => {
            if let Some(a) = &h.anchor {
                cef_checkpoint(buf, "audit.anchor", a);
            }
            for c in &h.checkpoints {
                cef_checkpoint(buf, "audit.checkpoint", c);
            }
        }
    }
}

pub fn encode_event(fmt: Format, e: &AuditEvent, buf: &mut Vec<u8>) {
    match fmt {
        Format::Jsonl => {
            let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
            v["type"] = "event".into();
            buf.extend_from_slice(v.to_string().as_bytes());
            buf.push(b'\n');
        }
        Format::Csv => {
            let opt = |s: &Option<String>| s.as_deref().map(cell).unwrap_or_default();
            let js =
                |v: &Option<Value>| v.as_ref().map(|v| cell(&v.to_string())).unwrap_or_default();
            let row = [
                cell("event"),
                e.seq.to_string(),
                e.time_ms.to_string(),
                cell(&rfc3339(e.time_ms)),
                cell(&e.actor),
                cell(&e.action),
                opt(&e.target),
                opt(&e.source_addr),
                js(&e.before),
                js(&e.after),
                cell(&e.prev_hash),
                cell(&e.hash),
                String::new(),
                opt(&e.network),
            ];
            csv_row(buf, &row);
        }
        Format::Cef => {
            let sev = match e.action.as_str() {
                "auth.failed" | "auth.forbidden" | "enroll.rejected" => 5,
                a if a.ends_with(".revoke") || a.ends_with(".delete") || a == "audit.prune" => 4,
                _ => 3,
            };
            let mut ext = vec![
                ("rt", e.time_ms.to_string()),
                ("suser", e.actor.clone()),
                ("act", e.action.clone()),
                ("cn1Label", "seq".into()),
                ("cn1", e.seq.to_string()),
            ];
            if let Some(s) = e
                .source_addr
                .as_ref()
                .filter(|s| s.parse::<std::net::IpAddr>().is_ok())
            {
                ext.push(("src", s.clone()));
            }
            if let Some(t) = &e.target {
                ext.push(("cs1Label", "target".into()));
                ext.push(("cs1", t.clone()));
            }
            if let Some(b) = &e.before {
                ext.push(("cs2Label", "before".into()));
                ext.push(("cs2", b.to_string()));
            }
            if let Some(a) = &e.after {
                ext.push(("cs3Label", "after".into()));
                ext.push(("cs3", a.to_string()));
            }
            ext.push(("cs4Label", "hash".into()));
            ext.push(("cs4", e.hash.clone()));
            ext.push(("cs5Label", "prevHash".into()));
            ext.push(("cs5", e.prev_hash.clone()));
            cef_line(buf, &e.action, sev, &ext);
        }
    }
}

pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A quoted CSV text cell, defused against formula injection (see the module doc).
pub fn cell(s: &str) -> String {
    let defused = match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\'' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_string(),
    };
    format!("\"{}\"", defused.replace('"', "\"\""))
}

/// Inverse of the defusing in [`cell`], applied to an already unquoted cell.
pub fn uncell(s: &str) -> &str {
    s.strip_prefix('\'').unwrap_or(s)
}

pub fn csv_row(buf: &mut Vec<u8>, cells: &[String]) {
    buf.extend_from_slice(cells.join(",").as_bytes());
    buf.extend_from_slice(b"\r\n");
}

fn csv_checkpoint(buf: &mut Vec<u8>, record: &str, c: &Checkpoint) {
    let row = [
        cell(record),
        c.seq.to_string(),
        c.time_ms.to_string(),
        cell(&rfc3339(c.time_ms)),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        cell(&c.hash),
        cell(&c.signature),
        String::new(),
    ];
    csv_row(buf, &row);
}

fn cef_header_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

fn cef_ext_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\r', "\\r")
        .replace('\n', "\\n")
}

pub fn cef_line(buf: &mut Vec<u8>, name: &str, sev: u8, ext: &[(&str, String)]) {
    let ext: Vec<String> = ext
        .iter()
        .map(|(k, v)| format!("{k}={}", cef_ext_escape(v)))
        .collect();
    let line = format!(
        "CEF:0|zmesh|zmesh-console|{}|{}|{}|{sev}|{}\n",
        env!("CARGO_PKG_VERSION"),
        cef_header_escape(name),
        cef_header_escape(name),
        ext.join(" ")
    );
    buf.extend_from_slice(line.as_bytes());
}

fn cef_checkpoint(buf: &mut Vec<u8>, name: &str, c: &Checkpoint) {
    let ext = [
        ("rt", c.time_ms.to_string()),
        ("cn1Label", "seq".into()),
        ("cn1", c.seq.to_string()),
        ("cs4Label", "hash".into()),
        ("cs4", c.hash.clone()),
        ("cs6Label", "signature".into()),
        ("cs6", c.signature.clone()),
    ];
    cef_line(buf, name, 1, &ext);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_defused_and_reversible() {
        for s in [
            "=1+1", "+x", "-2", "@SUM(A1)", "'q", "\tx", "\rx", "plain", "a\"b", "",
        ] {
            let c = cell(s);
            assert!(c.starts_with('"') && c.ends_with('"'));
            let inner = c[1..c.len() - 1].replace("\"\"", "\"");
            assert!(
                !inner.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{s:?} -> {c}"
            );
            assert_eq!(uncell(&inner), s);
        }
    }

    #[test]
    fn cef_escapes() {
        let mut b = vec![];
        cef_line(&mut b, "a|b", 3, &[("cs1", "x=y\\z\nw".into())]);
        let line = String::from_utf8(b).unwrap();
        assert!(line.contains("|a\\|b|"), "{line}");
        assert!(line.contains("cs1=x\\=y\\\\z\\nw"), "{line}");
        assert_eq!(line.matches('\n').count(), 1);
    }
}
