//! Verification of the audit chain, in the database or in an export file, with the
//! console's public key. Reports the first bad sequence number where there is one.
//!
//! Beyond what `zmesh_shared::audit::Verifier` checks, the database check compares the
//! chain's end with the `audit_head` row (a truncated tail past the last checkpoint, or
//! a forged event appended after the head), and an event whose hash only matches one
//! sequence number lower is reported as an insertion just before it.

use std::io::BufRead;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zmesh_shared::audit::{event_hash, AuditEvent, ChainError, Checkpoint, Verifier};
use zmesh_shared::SigningPublicKey;

use super::export::{uncell, CSV_COLUMNS, FORMAT_TAG};
use crate::store::{EventFilter, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerifyReport {
    pub ok: bool,
    /// `full`: the whole (remaining) chain; `partial`: a filtered export, where only
    /// each event's own hash, links between consecutive events and checkpoints can be
    /// checked.
    pub mode: String,
    pub verified: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub checkpoints: usize,
    /// Events after the newest signed checkpoint (chained, but not yet signed).
    pub unsigned_tail: u64,
    pub first_bad_seq: Option<u64>,
    pub error: Option<String>,
    /// The access log's verification (database checks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<super::access_verify::AccessVerifyReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a zmesh audit export: {0}")]
    Format(String),
}

struct Tally {
    verified: u64,
    first: Option<u64>,
    last: Option<u64>,
    last_hash: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            verified: 0,
            first: None,
            last: None,
            last_hash: None,
        }
    }
    fn saw(&mut self, e: &AuditEvent) {
        self.first.get_or_insert(e.seq);
        self.last = Some(e.seq);
        self.last_hash = Some(e.hash.clone());
    }
    fn report(
        &self,
        mode: &'static str,
        cps: &[Checkpoint],
        bad: Option<(Option<u64>, String)>,
    ) -> VerifyReport {
        let newest = cps.iter().map(|c| c.seq).max().unwrap_or(0);
        VerifyReport {
            ok: bad.is_none(),
            mode: mode.to_string(),
            verified: self.verified,
            first_seq: self.first,
            last_seq: self.last,
            checkpoints: cps.len(),
            unsigned_tail: self.last.map(|l| l.saturating_sub(newest)).unwrap_or(0),
            first_bad_seq: bad.as_ref().and_then(|b| b.0),
            error: bad.map(|b| b.1),
            access: None,
        }
    }
}

/// A hash error at `seq` on an event that would be valid one number lower: everything
/// from here on was renumbered to make room for an event inserted at `seq - 1`.
fn explain(e: &AuditEvent, err: ChainError) -> (Option<u64>, String) {
    if let ChainError::Hash { seq } | ChainError::Link { seq } = err {
        if seq > 1 {
            let mut moved = e.clone();
            moved.seq = seq - 1;
            if event_hash(&moved) == e.hash {
                return (
                    Some(seq - 1),
                    format!(
                        "event {}: inserted (the events after it were renumbered)",
                        seq - 1
                    ),
                );
            }
        }
    }
    (err.seq(), err.to_string())
}

/// Verifies the whole audit chain in the database against its signed checkpoints and
/// head, then (when that holds, since it carries the anchors) the access log.
pub async fn verify_store(
    store: &Store,
    key: &SigningPublicKey,
) -> Result<VerifyReport, VerifyError> {
    let mut r = verify_events(store, key).await?;
    if r.ok {
        let a = super::access_verify::verify_access_store(store).await?;
        r.ok = a.ok;
        r.access = Some(a);
    }
    Ok(r)
}

async fn verify_events(store: &Store, key: &SigningPublicKey) -> Result<VerifyReport, VerifyError> {
    let anchor = store.audit_anchor().await?;
    let cps = store.list_checkpoints().await?;
    let head = store.audit_head().await?;
    let mut t = Tally::new();
    let mut v = match Verifier::new(key, anchor.as_ref(), cps.clone()) {
        Ok(v) => v,
        Err(e) => return Ok(t.report("full", &cps, Some((e.seq(), e.to_string())))),
    };
    let mut after = anchor.as_ref().map(|a| a.seq).unwrap_or(0);
    let all = EventFilter::default();
    loop {
        let page = store
            .audit_events_page(after, i64::MAX as u64, &all, super::export::PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            if let Err(err) = v.push(e) {
                return Ok(t.report("full", &cps, Some(explain(e, err))));
            }
            t.verified += 1;
            t.saw(e);
        }
    }
    if let Err(e) = v.finish() {
        return Ok(t.report("full", &cps, Some((e.seq(), e.to_string()))));
    }
    let end = t.last.or(anchor.as_ref().map(|a| a.seq)).unwrap_or(0);
    let end_hash = t
        .last_hash
        .clone()
        .or(anchor.as_ref().map(|a| a.hash.clone()))
        .unwrap_or_else(|| zmesh_shared::audit::GENESIS_HASH.to_string());
    if head.seq > end {
        let msg = format!(
            "chain ends at {end} but its head says {} (truncated)",
            head.seq
        );
        return Ok(t.report("full", &cps, Some((Some(end + 1), msg))));
    }
    if head.seq < end {
        let msg = format!(
            "events after the head ({}) were added behind the store's back",
            head.seq
        );
        return Ok(t.report("full", &cps, Some((Some(head.seq + 1), msg))));
    }
    if head.hash != end_hash {
        let msg = format!("event {end} does not match the chain head");
        return Ok(t.report("full", &cps, Some((Some(end), msg))));
    }
    Ok(t.report("full", &cps, None))
}

/// One record of an export file.
enum Rec {
    Header {
        complete: bool,
        head_seq: u64,
        anchor: Option<Checkpoint>,
        checkpoints: Vec<Checkpoint>,
    },
    Event(AuditEvent),
    End {
        events: u64,
    },
}

/// Verifies an export (JSONL or CSV, told apart by its first line).
pub fn verify_export(r: impl BufRead, key: &SigningPublicKey) -> Result<VerifyReport, VerifyError> {
    let mut recs = Records::new(r)?;
    let Some(Rec::Header {
        complete,
        head_seq,
        anchor,
        checkpoints,
    }) = recs.next_rec()?
    else {
        return Err(VerifyError::Format(
            "the first record is not the export header".into(),
        ));
    };
    let mut t = Tally::new();
    let mode = if complete { "full" } else { "partial" };
    for c in anchor.iter().chain(&checkpoints) {
        if !c.verify(key) {
            let e = ChainError::CheckpointSignature { seq: c.seq };
            return Ok(t.report(mode, &checkpoints, Some((e.seq(), e.to_string()))));
        }
    }
    let mut full = if complete {
        Some(
            Verifier::new(key, anchor.as_ref(), checkpoints.clone())
                .map_err(|e| VerifyError::Format(e.to_string()))?,
        )
    } else {
        None
    };
    let by_seq: std::collections::HashMap<u64, &Checkpoint> =
        checkpoints.iter().map(|c| (c.seq, c)).collect();
    let mut ended = None;
    while let Some(rec) = recs.next_rec()? {
        match rec {
            Rec::Event(e) => {
                let res = match &mut full {
                    Some(v) => v.push(&e),
                    None => partial_check(&t, &e, &by_seq),
                };
                if let Err(err) = res {
                    return Ok(t.report(mode, &checkpoints, Some(explain(&e, err))));
                }
                t.verified += 1;
                t.saw(&e);
            }
            Rec::End { events } => ended = Some(events),
            Rec::Header { .. } => {
                return Err(VerifyError::Format("a second header".into()));
            }
        }
    }
    if let Some(v) = full {
        if let Err(e) = v.finish() {
            return Ok(t.report(mode, &checkpoints, Some((e.seq(), e.to_string()))));
        }
        let end = t.last.or(anchor.as_ref().map(|a| a.seq)).unwrap_or(0);
        if end < head_seq {
            let msg = format!(
                "export ends at {end} but its header says the chain reached {head_seq} (truncated)"
            );
            return Ok(t.report(mode, &checkpoints, Some((Some(end + 1), msg))));
        }
    }
    if recs.jsonl && ended != Some(t.verified) {
        let msg = "the export's end line is missing or does not match its events (truncated file)";
        return Ok(t.report(
            mode,
            &checkpoints,
            Some((t.last.map(|l| l + 1), msg.into())),
        ));
    }
    Ok(t.report(mode, &checkpoints, None))
}

fn partial_check(
    t: &Tally,
    e: &AuditEvent,
    cps: &std::collections::HashMap<u64, &Checkpoint>,
) -> Result<(), ChainError> {
    if let Some(last) = t.last {
        if e.seq <= last {
            return Err(ChainError::Sequence {
                seq: e.seq,
                expected: last + 1,
            });
        }
        if e.seq == last + 1 && t.last_hash.as_deref() != Some(e.prev_hash.as_str()) {
            return Err(ChainError::Link { seq: e.seq });
        }
    }
    if event_hash(e) != e.hash {
        return Err(ChainError::Hash { seq: e.seq });
    }
    if cps.get(&e.seq).is_some_and(|c| c.hash != e.hash) {
        return Err(ChainError::CheckpointMismatch { seq: e.seq });
    }
    Ok(())
}

struct Records<R> {
    r: R,
    jsonl: bool,
    csv_header_pending: Option<Vec<String>>,
    /// CSV: checkpoint rows seen before the first event, gathered into the header.
    line: String,
}

impl<R: BufRead> Records<R> {
    fn new(mut r: R) -> Result<Self, VerifyError> {
        let jsonl = r.fill_buf()?.first() == Some(&b'{');
        Ok(Records {
            r,
            jsonl,
            csv_header_pending: None,
            line: String::new(),
        })
    }

    fn next_rec(&mut self) -> Result<Option<Rec>, VerifyError> {
        if self.jsonl {
            self.next_json()
        } else {
            self.next_csv()
        }
    }

    fn next_json(&mut self) -> Result<Option<Rec>, VerifyError> {
        loop {
            self.line.clear();
            if self.r.read_line(&mut self.line)? == 0 {
                return Ok(None);
            }
            if self.line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&self.line)
                .map_err(|e| VerifyError::Format(format!("bad JSON line: {e}")))?;
            let bad = |e: serde_json::Error| VerifyError::Format(e.to_string());
            return Ok(Some(match v["type"].as_str() {
                Some("header") => {
                    if v["format"] != FORMAT_TAG {
                        return Err(VerifyError::Format(format!("format is not {FORMAT_TAG}")));
                    }
                    Rec::Header {
                        complete: v["complete"].as_bool().unwrap_or(false),
                        head_seq: v["head_seq"].as_u64().unwrap_or(0),
                        anchor: serde_json::from_value(v["anchor"].clone()).map_err(bad)?,
                        checkpoints: serde_json::from_value(v["checkpoints"].clone())
                            .map_err(bad)?,
                    }
                }
                Some("event") => Rec::Event(serde_json::from_value(v).map_err(bad)?),
                Some("end") => Rec::End {
                    events: v["events"].as_u64().unwrap_or(u64::MAX),
                },
                _ => return Err(VerifyError::Format("line without a known `type`".into())),
            }));
        }
    }

    fn next_csv(&mut self) -> Result<Option<Rec>, VerifyError> {
        if self.csv_header_pending.is_none() {
            let cols = read_csv_record(&mut self.r)?
                .ok_or_else(|| VerifyError::Format("empty file".into()))?;
            if cols != CSV_COLUMNS {
                return Err(VerifyError::Format("unexpected CSV columns".into()));
            }
            let meta = read_csv_record(&mut self.r)?
                .ok_or_else(|| VerifyError::Format("no export row".into()))?;
            if meta.len() != CSV_COLUMNS.len()
                || meta[0] != "export"
                || uncell(&meta[5]) != FORMAT_TAG
            {
                return Err(VerifyError::Format(
                    "the second row is not the export row".into(),
                ));
            }
            self.csv_header_pending = Some(meta);
        }
        if let Some(meta) = self.csv_header_pending.as_mut().filter(|m| !m.is_empty()) {
            let meta = std::mem::take(meta);
            let mut anchor = None;
            let mut checkpoints = vec![];
            // checkpoint rows follow the export row; the first event row is kept back
            loop {
                let Some(row) = read_csv_record(&mut self.r)? else {
                    break;
                };
                match row[0].as_str() {
                    "anchor" => anchor = Some(csv_checkpoint(&row)?),
                    "checkpoint" => checkpoints.push(csv_checkpoint(&row)?),
                    _ => {
                        self.line = serde_json::to_string(&row).unwrap_or_default();
                        break;
                    }
                }
            }
            return Ok(Some(Rec::Header {
                complete: uncell(&meta[6]) == "complete",
                head_seq: meta[1]
                    .parse()
                    .map_err(|_| VerifyError::Format("bad head seq".into()))?,
                anchor,
                checkpoints,
            }));
        }
        let row: Vec<String> = if !self.line.is_empty() {
            let r = serde_json::from_str(&self.line).unwrap_or_default();
            self.line.clear();
            r
        } else {
            match read_csv_record(&mut self.r)? {
                Some(r) => r,
                None => return Ok(None),
            }
        };
        if row.len() != CSV_COLUMNS.len() || row[0] != "event" {
            return Err(VerifyError::Format("expected an event row".into()));
        }
        let text = |i: usize| -> Option<String> {
            (!row[i].is_empty()).then(|| uncell(&row[i]).to_string())
        };
        let json = |i: usize| -> Result<Option<Value>, VerifyError> {
            text(i)
                .map(|s| serde_json::from_str(&s).map_err(|e| VerifyError::Format(e.to_string())))
                .transpose()
        };
        let num = |i: usize| -> Result<i64, VerifyError> {
            row[i]
                .parse()
                .map_err(|_| VerifyError::Format(format!("bad number in {}", CSV_COLUMNS[i])))
        };
        Ok(Some(Rec::Event(AuditEvent {
            seq: num(1)? as u64,
            time_ms: num(2)?,
            actor: text(4).unwrap_or_default(),
            action: text(5).unwrap_or_default(),
            target: text(6),
            source_addr: text(7),
            before: json(8)?,
            after: json(9)?,
            network: None,
            prev_hash: text(10).unwrap_or_default(),
            hash: text(11).unwrap_or_default(),
        })))
    }
}

fn csv_checkpoint(row: &[String]) -> Result<Checkpoint, VerifyError> {
    if row.len() != CSV_COLUMNS.len() {
        return Err(VerifyError::Format("short checkpoint row".into()));
    }
    let bad = || VerifyError::Format("bad checkpoint row".into());
    Ok(Checkpoint {
        seq: row[1].parse().map_err(|_| bad())?,
        time_ms: row[2].parse().map_err(|_| bad())?,
        hash: uncell(&row[11]).to_string(),
        signature: uncell(&row[12]).to_string(),
    })
}

/// Longest CSV record accepted (a guard against a file that never closes a quote).
const MAX_CSV_RECORD: usize = 16 * 1024 * 1024;

/// One RFC 4180 record (quoted cells may hold commas, quotes and line breaks).
pub fn read_csv_record(r: &mut impl BufRead) -> Result<Option<Vec<String>>, VerifyError> {
    let mut raw = Vec::new();
    let mut quotes = 0usize;
    loop {
        let n = r.read_until(b'\n', &mut raw)?;
        if n == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            break;
        }
        quotes += raw[raw.len() - n..].iter().filter(|&&b| b == b'"').count();
        if quotes % 2 == 0 {
            break;
        }
        if raw.len() > MAX_CSV_RECORD {
            return Err(VerifyError::Format(
                "CSV record too long or unterminated quote".into(),
            ));
        }
    }
    let text =
        String::from_utf8(raw).map_err(|_| VerifyError::Format("CSV is not UTF-8".into()))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let mut cells = vec![];
    let mut cur = String::new();
    let mut in_q = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (in_q, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => in_q = false,
            (false, '"') => in_q = true,
            (false, ',') => cells.push(std::mem::take(&mut cur)),
            (_, c) => cur.push(c),
        }
    }
    cells.push(cur);
    Ok(Some(cells))
}
