//! Verification of the access log in the database: the chain of access records from
//! its start (or the cut retention left, as recorded by the last `access.prune` event)
//! to its head, every record's device signature against that device's registered
//! report key, and every anchor the audit log holds (`access.checkpoint` events). The
//! anchors are only as good as the audit chain that carries them, so this runs after
//! the audit chain verified (see [`super::verify::verify_store`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use zmesh_shared::audit::GENESIS_HASH;
use zmesh_shared::flowlog::AccessVerifier;

use crate::store::{Store, StoreError};

/// Records read per page.
const PAGE: u32 = 2000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessVerifyReport {
    pub ok: bool,
    pub verified: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Anchors of the access chain in the audit log.
    pub anchors: usize,
    /// Records after the newest anchor (chained and signed by devices, not yet anchored).
    pub unanchored_tail: u64,
    pub first_bad_seq: Option<u64>,
    pub error: Option<String>,
}

/// The cut the last `access.prune` event recorded, if any.
async fn recorded_cut(store: &Store) -> Result<Option<(u64, String)>, StoreError> {
    Ok(store.access_prunes().await?.into_iter().last())
}

pub async fn verify_access_store(store: &Store) -> Result<AccessVerifyReport, StoreError> {
    let keys: HashMap<_, _> = store.report_keys().await?.into_iter().collect();
    let anchors = store.access_anchors().await?;
    let head = store.access_head().await?;
    let cut = recorded_cut(store).await?;
    let newest_anchor = anchors.iter().map(|a| a.0).max().unwrap_or(0);
    let mut report = AccessVerifyReport {
        ok: true,
        verified: 0,
        first_seq: None,
        last_seq: None,
        anchors: anchors.len(),
        unanchored_tail: 0,
        first_bad_seq: None,
        error: None,
    };
    let fail = |mut r: AccessVerifyReport, seq: u64, msg: String| {
        r.ok = false;
        r.first_bad_seq = Some(seq);
        r.error = Some(msg);
        Ok(r)
    };
    // The head row's cut must be the one the audit log recorded.
    let (cut_seq, cut_hash) = cut.clone().unwrap_or((0, GENESIS_HASH.to_string()));
    if (head.pruned_seq, head.pruned_hash.as_str()) != (cut_seq, cut_hash.as_str()) {
        let msg = format!(
            "the access log says it was pruned through {} but the audit log records {cut_seq}",
            head.pruned_seq
        );
        return fail(report, cut_seq.min(head.pruned_seq) + 1, msg);
    }
    let mut v = AccessVerifier::new(cut, anchors, |d| keys.get(&d).copied());
    let mut after = cut_seq;
    let mut last_hash = cut_hash;
    loop {
        let page = store.access_page(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            if let Err(err) = v.push(e) {
                return fail(report, err.seq(), err.to_string());
            }
            report.first_seq.get_or_insert(e.seq);
            report.last_seq = Some(e.seq);
            last_hash = e.hash.clone();
        }
    }
    report.verified = v.verified;
    if let Err(err) = v.finish() {
        return fail(report, err.seq(), err.to_string());
    }
    let end = report.last_seq.unwrap_or(cut_seq);
    if head.seq > end {
        let msg = format!(
            "access log ends at {end} but its head says {} (truncated)",
            head.seq
        );
        return fail(report, end + 1, msg);
    }
    if head.seq < end {
        let msg = format!(
            "access records after the head ({}) were added behind the store's back",
            head.seq
        );
        return fail(report, head.seq + 1, msg);
    }
    if head.hash != last_hash {
        return fail(
            report,
            end,
            format!("access record {end} does not match the head"),
        );
    }
    report.unanchored_tail = end.saturating_sub(newest_anchor.max(cut_seq));
    Ok(report)
}
