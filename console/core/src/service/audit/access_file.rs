//! Offline verification of an access log export (the JSONL form of
//! [`super::access_export`]) with the console's public key, naming the first bad
//! sequence number.
//!
//! A `complete` export is checked as a chain from its start to its head: every link and
//! hash, every device signature (with the report keys of the header), and every anchor
//! of the header, so a record deleted, inserted or edited, or a tail cut off past an
//! anchor, fails. A `range` export (evidence packs) is the same from the record before
//! the range. A `filtered` export can only be checked record by record (hash,
//! signature, anchors where a record is one) plus the links between consecutive ones.
//!
//! What a plain export proves on its own is limited by its header, which nothing signs
//! as a whole: the checkpoints' signatures are checked, but an editor of the file could
//! swap a device's report key and re-sign records with a key of their own. An evidence
//! pack closes that gap: it passes [`Trusted`] keys and anchors taken from the signed
//! audit events instead of the file's header (see [`super::evidence`]).

use std::collections::HashMap;
use std::io::BufRead;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zmesh_shared::flowlog::{
    access_hash, verify_flow, AccessChainError, AccessEntry, AccessVerifier,
};
use zmesh_shared::{DeviceId, SigningPublicKey};

use super::access_export::{AccessHeader, ACCESS_FORMAT_TAG};
use super::verify::VerifyError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessFileReport {
    pub ok: bool,
    /// `complete`, `range` or `filtered` (see the module doc).
    pub mode: String,
    pub verified: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub anchors: usize,
    pub checkpoints: usize,
    pub report_keys: usize,
    pub first_bad_seq: Option<u64>,
    pub error: Option<String>,
}

/// Keys and anchors an evidence pack vouches for, used instead of the file's header.
#[derive(Debug, Clone, Default)]
pub struct Trusted {
    pub keys: HashMap<DeviceId, SigningPublicKey>,
    pub anchors: Vec<(u64, String)>,
}

/// Whether `first_line` is the header of an access export.
pub fn is_access_export(first_line: &str) -> bool {
    serde_json::from_str::<Value>(first_line)
        .is_ok_and(|v| v["type"] == "header" && v["format"] == ACCESS_FORMAT_TAG)
}

fn next_json(r: &mut impl BufRead, line: &mut String) -> Result<Option<Value>, VerifyError> {
    loop {
        line.clear();
        if r.read_line(line)? == 0 {
            return Ok(None);
        }
        if line.trim().is_empty() {
            continue;
        }
        return serde_json::from_str(line)
            .map(Some)
            .map_err(|e| VerifyError::Format(format!("bad JSON line: {e}")));
    }
}

/// Reads the header line of an access export.
pub fn read_header(r: &mut impl BufRead) -> Result<AccessHeader, VerifyError> {
    let mut line = String::new();
    let v = next_json(r, &mut line)?.ok_or_else(|| VerifyError::Format("empty file".into()))?;
    if v["type"] != "header" || v["format"] != ACCESS_FORMAT_TAG {
        return Err(VerifyError::Format(format!(
            "the first line is not a {ACCESS_FORMAT_TAG} header"
        )));
    }
    serde_json::from_value(v).map_err(|e| VerifyError::Format(format!("bad header: {e}")))
}

struct Partial {
    last: Option<(u64, String)>,
}

impl Partial {
    fn push(
        &mut self,
        e: &AccessEntry,
        keys: &HashMap<DeviceId, SigningPublicKey>,
        anchors: &HashMap<u64, String>,
    ) -> Result<(), AccessChainError> {
        if let Some((seq, hash)) = &self.last {
            if e.seq <= *seq {
                return Err(AccessChainError::Sequence {
                    seq: e.seq,
                    expected: seq + 1,
                });
            }
            if e.seq == seq + 1 && e.prev_hash != *hash {
                return Err(AccessChainError::Link { seq: e.seq });
            }
        }
        if access_hash(e) != e.hash {
            return Err(AccessChainError::Hash { seq: e.seq });
        }
        if anchors.get(&e.seq).is_some_and(|h| *h != e.hash) {
            return Err(AccessChainError::Anchor { seq: e.seq });
        }
        let key = keys
            .get(&e.reporter)
            .ok_or(AccessChainError::UnknownReporter {
                seq: e.seq,
                reporter: e.reporter,
            })?;
        verify_flow(key, e.reporter, &e.signed)
            .map_err(|why| AccessChainError::Signature { seq: e.seq, why })?;
        self.last = Some((e.seq, e.hash.clone()));
        Ok(())
    }
}

/// Verifies an access export read from `r` (see the module doc).
pub fn verify_access_export(
    mut r: impl BufRead,
    key: &SigningPublicKey,
    trusted: Option<&Trusted>,
) -> Result<AccessFileReport, VerifyError> {
    let h = read_header(&mut r)?;
    let mut rep = AccessFileReport {
        ok: true,
        mode: h.mode.clone(),
        verified: 0,
        first_seq: None,
        last_seq: None,
        anchors: 0,
        checkpoints: h.checkpoints.len(),
        report_keys: 0,
        first_bad_seq: None,
        error: None,
    };
    let fail = |mut rep: AccessFileReport, seq: Option<u64>, msg: String| {
        rep.ok = false;
        rep.first_bad_seq = seq;
        rep.error = Some(msg);
        Ok(rep)
    };
    if h.public_key != key.to_string() && trusted.is_none() {
        return fail(
            rep,
            None,
            "the export names another console public key".into(),
        );
    }
    if let Some(c) = h.checkpoints.iter().find(|c| !c.verify(key)) {
        return fail(
            rep,
            None,
            format!("audit checkpoint {}: bad signature", c.seq),
        );
    }
    let (keys, anchors) = match trusted {
        Some(t) => (t.keys.clone(), t.anchors.clone()),
        None => {
            let mut keys = HashMap::new();
            for (d, k) in &h.report_keys {
                let (Ok(d), Ok(k)) = (d.parse::<DeviceId>(), k.parse::<SigningPublicKey>()) else {
                    return Err(VerifyError::Format(format!("bad report key for {d}")));
                };
                keys.insert(d, k);
            }
            let anchors = h.anchors.iter().map(|a| (a.seq, a.hash.clone())).collect();
            (keys, anchors)
        }
    };
    rep.report_keys = keys.len();
    let chained = matches!(h.mode.as_str(), "complete" | "range");
    let anchors: Vec<(u64, String)> = anchors
        .into_iter()
        .filter(|(s, _)| h.mode != "range" || (*s > h.start.seq && *s <= h.head_seq))
        .collect();
    rep.anchors = anchors.len();
    let by_seq: HashMap<u64, String> = anchors.iter().cloned().collect();
    let mut full = chained.then(|| {
        AccessVerifier::new(
            Some((h.start.seq, h.start.hash.clone())),
            anchors.clone(),
            |d| keys.get(&d).copied(),
        )
    });
    let mut partial = Partial { last: None };
    let mut line = String::new();
    let mut ended = None;
    while let Some(v) = next_json(&mut r, &mut line)? {
        match v["type"].as_str() {
            Some("access") => {
                let e: AccessEntry = serde_json::from_value(v)
                    .map_err(|e| VerifyError::Format(format!("bad access record: {e}")))?;
                if ended.is_some() {
                    return fail(rep, Some(e.seq), "a record after the end line".into());
                }
                let res = match &mut full {
                    Some(f) => f.push(&e),
                    None => partial.push(&e, &keys, &by_seq),
                };
                if let Err(err) = res {
                    return fail(rep, Some(err.seq()), err.to_string());
                }
                rep.verified += 1;
                rep.first_seq.get_or_insert(e.seq);
                rep.last_seq = Some(e.seq);
            }
            Some("end") => ended = Some(v["records"].as_u64().unwrap_or(u64::MAX)),
            _ => return Err(VerifyError::Format("line without a known `type`".into())),
        }
    }
    if let Some(f) = full {
        if let Err(err) = f.finish() {
            return fail(rep, Some(err.seq()), err.to_string());
        }
        let end = rep.last_seq.unwrap_or(h.start.seq);
        if end < h.head_seq {
            let msg = format!(
                "export ends at {end} but its header says the chain reached {} (truncated)",
                h.head_seq
            );
            return fail(rep, Some(end + 1), msg);
        }
    }
    if ended != Some(rep.verified) {
        let msg = "the export's end line is missing or does not match its records (truncated file)";
        let seq = rep.last_seq.map(|l| l + 1);
        return fail(rep, seq, msg.into());
    }
    Ok(rep)
}
