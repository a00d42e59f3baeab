//! `POST /agent/v1/enroll`: trade an enrollment key and a WireGuard public key for a
//! device record, overlay addresses and a stream credential (stored only hashed).

use axum::extract::State;
use axum::Json;
use zmesh_shared::enroll_key::EnrollKey;
use zmesh_shared::time::now_ms;
use zmesh_shared::wire::{EnrollRequest, EnrollResponse};
use zmesh_shared::{Secret, PROTOCOL_VERSION};

use crate::api::auth::{record_refusal, Source};
use crate::api::ApiJson;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{AuditCtx, EnrollDevice, StoreError};

/// Longest hostname / OS string kept from an agent.
const MAX_INFO_LEN: usize = 255;

pub async fn enroll(
    State(state): State<AppState>,
    Source(source): Source,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    if req.protocol != PROTOCOL_VERSION {
        return Err(ApiError::Invalid {
            code: "unsupported_protocol",
            message: format!(
                "this console speaks protocol {PROTOCOL_VERSION}, the agent sent {}",
                req.protocol
            ),
            field: Some("protocol".into()),
        });
    }
    for (field, v) in [("hostname", &req.hostname), ("os", &req.os)] {
        if v.as_ref()
            .is_some_and(|s| s.len() > MAX_INFO_LEN || s.chars().any(char::is_control))
        {
            return Err(ApiError::invalid(
                field,
                format!("at most {MAX_INFO_LEN} printable characters"),
            ));
        }
    }
    // Agents send the secret part; accept the whole `zmek1.…` text as well.
    let secret_hash = match req.enroll_key.expose().parse::<EnrollKey>() {
        Ok(k) => k.secret.hash(),
        Err(_) => req.enroll_key.hash(),
    };
    let credential = Secret::generate("zmd_");
    let ctx = AuditCtx::new("agent", source);
    let device = match state
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
            let detail = serde_json::json!({"reason": why.as_str()});
            record_refusal(&state, ctx, "enroll.rejected", detail).await;
            return Err(StoreError::EnrollKey(why).into());
        }
        Err(e) => return Err(e.into()),
    };
    let net = state.store.get_network(device.network_id).await?;
    tracing::info!(device = %device.id, name = %device.name, state = device.state.as_str(), "device enrolled");
    state.bus.publish(crate::bus::Change::Network {
        network_id: net.id,
        revision: net.revision,
    });
    Ok(Json(EnrollResponse {
        protocol: PROTOCOL_VERSION,
        device_id: device.id,
        network_id: device.network_id,
        name: device.name,
        state: device.state,
        overlay_v4: device.overlay_v4,
        overlay_v6: device.overlay_v6,
        network_v4: net.prefix_v4,
        network_v6: net.prefix_v6,
        credential,
        signing_key: state.signing_key.public_key(),
    }))
}
