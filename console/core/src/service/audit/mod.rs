//! The console side of the tamper-evident audit log: events that go with no other
//! change (refusals, exports), signed checkpoints, verification (of the database and of
//! an export file), streamed exports (JSON Lines, CSV, CEF) and retention pruning
//! behind a signed anchor.
//!
//! The chain itself (hashing, checkpoint signatures, the streaming verifier) is pure
//! code in `zmesh_shared::audit`; events are appended by the store in the same
//! transaction as the change they record (`store/audit.rs`).

pub mod access_export;
pub mod access_file;
pub mod access_verify;
pub mod checkpoint;
pub mod evidence;
pub mod export;
pub mod retention;
pub mod verify;

use crate::store::{AuditChange, AuditCtx, Store, StoreError};

/// Records a refused call in the audit log, in a transaction of its own. A failure to
/// record is logged, and the refusal stands.
pub async fn record_refusal(
    store: &Store,
    ctx: AuditCtx,
    action: &'static str,
    detail: serde_json::Value,
) {
    let c = AuditChange {
        action,
        target: None,
        before: None,
        after: Some(detail),
        network: None,
    };
    if let Err(e) = store.acting(ctx).record_event(c).await {
        tracing::error!(error = %e, action, "could not record a refused call in the audit log");
    }
}

/// Records that someone read (exported) the log: who read it is part of the log.
pub async fn record_export(
    store: &Store,
    ctx: AuditCtx,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    let mut c = AuditChange::new("audit.export", "audit");
    c.after = Some(detail);
    store.acting(ctx).record_event(c).await.map(|_| ())
}
