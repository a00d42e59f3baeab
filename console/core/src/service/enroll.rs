//! Enrollment with a key: trade an enrollment key and a WireGuard public key for a
//! device record, overlay addresses and a stream credential (stored only hashed). A
//! refused key is recorded as `enroll.rejected` with its reason.

use zmesh_shared::enroll_key::EnrollKey;
use zmesh_shared::time::now_ms;
use zmesh_shared::{Secret, WgPublicKey};

use super::audit::record_refusal;
use super::{AuditCtx, Core, ServiceError};
use crate::store::{DeviceRow, EnrollDevice, Network, StoreError};

/// What an agent sends to enroll, checked by the caller for size and protocol.
#[derive(Debug)]
pub struct EnrollInput {
    /// The secret part of the key or the whole `zmek1.…` text.
    pub enroll_key: Secret,
    pub public_key: WgPublicKey,
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
}

/// The enrolled device, its network and its stream credential (shown once).
pub async fn enroll(
    core: &Core,
    ctx: AuditCtx,
    req: EnrollInput,
) -> Result<(DeviceRow, Network, Secret), ServiceError> {
    // Agents send the secret part; accept the whole `zmek1.…` text as well.
    let secret_hash = match req.enroll_key.expose().parse::<EnrollKey>() {
        Ok(k) => k.secret.hash(),
        Err(_) => req.enroll_key.hash(),
    };
    let credential = Secret::generate("zmd_");
    let device = match core
        .store
        .acting(ctx.clone())
        .enroll_device(EnrollDevice {
            secret_hash,
            public_key: req.public_key,
            name: req.name,
            hostname: req.hostname,
            os: req.os,
            credential_hash: credential.hash(),
            now_ms: now_ms(),
        })
        .await
    {
        Ok(d) => d,
        Err(StoreError::EnrollKey(why)) => {
            core.metrics.enrollment_refused(why.as_str());
            let detail = serde_json::json!({"reason": why.as_str()});
            record_refusal(&core.store, ctx, "enroll.rejected", detail).await;
            return Err(StoreError::EnrollKey(why).into());
        }
        Err(e) => {
            if let Some(reason) = refusal_reason(&e) {
                core.metrics.enrollment_refused(reason);
            }
            return Err(e.into());
        }
    };
    core.metrics.enrolled("key");
    let net = core.store.get_network(device.network_id).await?;
    tracing::info!(device = %device.id, name = %device.name, state = device.state.as_str(), "device enrolled");
    core.publish_revision(net.id, net.revision);
    Ok((device, net, credential))
}

/// The metrics label of an enrollment refused for another reason than its key; `None`
/// for a database failure (counted as a database error, not a refusal).
fn refusal_reason(e: &StoreError) -> Option<&'static str> {
    match e {
        StoreError::Db(_) | StoreError::Migrate(_) => None,
        StoreError::PublicKeyTaken => Some("public_key_taken"),
        StoreError::NameTaken { .. } => Some("name_taken"),
        StoreError::Invalid { .. } => Some("invalid"),
        StoreError::AddressSpaceExhausted => Some("address_space_exhausted"),
        _ => Some("other"),
    }
}
