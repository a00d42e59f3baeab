//! The access log's intake: a device's report key is registered once (first stream
//! after enrollment) and every flow record it reports must carry a valid signature made
//! with that key. Valid records are chained by the store; the rest are refused, counted
//! and audited (`access.rejected`, with the reason and how many), so a forged, replayed
//! or unsigned report leaves a trace instead of a record.

use zmesh_shared::flowlog::{verify_flow, SignedFlow};
use zmesh_shared::time::now_ms;
use zmesh_shared::{DeviceId, SigningPublicKey};

use super::audit::record_refusal;
use super::{AuditCtx, Core, ServiceError};
use crate::store::KeyRegistration;

/// What became of one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intake {
    pub kept: usize,
    /// Malformed or repeated report numbers.
    pub dropped: usize,
    /// Refused: no registered key, or a signature that does not verify.
    pub refused: usize,
    /// Why records were refused, when some were.
    pub reason: Option<&'static str>,
}

/// Registers the device's report key; a different key than the registered one is
/// refused and audited (a device keeps its key for its life).
pub async fn register_key(
    core: &Core,
    ctx: &AuditCtx,
    device: DeviceId,
    key: &SigningPublicKey,
) -> Result<KeyRegistration, ServiceError> {
    let r = core
        .store
        .acting(ctx.clone())
        .register_report_key(device, key, now_ms())
        .await?;
    match r {
        KeyRegistration::Registered => tracing::info!(%device, "report key registered"),
        KeyRegistration::AlreadyKnown => {}
        KeyRegistration::Conflict => {
            tracing::warn!(%device, "a different report key was offered; refused");
            record_refusal(
                &core.store,
                ctx.clone(),
                "access.report_key_refused",
                serde_json::json!({
                    "device": device, "offered": key.to_string(),
                    "reason": "the device has another report key",
                }),
            )
            .await;
        }
    }
    Ok(r)
}

/// Checks each record's signature with the device's registered key and chains the
/// valid ones. Refusals are returned for the caller to count and audit (see
/// [`audit_refusals`]), so a flood of bad reports costs one event per interval.
pub async fn ingest(
    core: &Core,
    device: DeviceId,
    flows: &[SignedFlow],
) -> Result<Intake, ServiceError> {
    let Some(key) = core.store.device_report_key(device).await? else {
        return Ok(Intake {
            refused: flows.len(),
            reason: Some("no report key registered"),
            ..Default::default()
        });
    };
    let (good, bad): (Vec<&SignedFlow>, Vec<&SignedFlow>) = flows
        .iter()
        .partition(|f| verify_flow(&key, device, f).is_ok());
    let good: Vec<SignedFlow> = good.into_iter().cloned().collect();
    let (kept, dropped) = core.store.append_access(device, &good, now_ms()).await?;
    tracing::debug!(%device, received = flows.len(), kept, dropped, refused = bad.len(), "access records");
    Ok(Intake {
        kept,
        dropped,
        refused: bad.len(),
        reason: (!bad.is_empty()).then_some("bad signature"),
    })
}

/// Records refused reports in the audit log: `access.rejected` with the reason and
/// the count since the last such event of this stream.
pub async fn audit_refusals(
    core: &Core,
    ctx: &AuditCtx,
    device: DeviceId,
    reason: &str,
    count: u64,
) {
    tracing::warn!(%device, reason, count, "flow reports refused");
    record_refusal(
        &core.store,
        ctx.clone(),
        "access.rejected",
        serde_json::json!({ "device": device, "reason": reason, "records": count }),
    )
    .await;
}
