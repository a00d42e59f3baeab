//! `POST /agent/v1/enroll`: trade an enrollment key and a WireGuard public key for a
//! device record, overlay addresses and a stream credential (stored only hashed).

use axum::extract::State;
use axum::Json;
use zmesh_shared::wire::{EnrollRequest, EnrollResponse};
use zmesh_shared::PROTOCOL_VERSION;

use crate::http::{ApiError, ApiJson, AppState, Source};
use crate::service::enroll::{enroll as enroll_device, EnrollInput};
use crate::store::AuditCtx;

/// Longest hostname / OS string kept from an agent.
const MAX_INFO_LEN: usize = 255;

pub async fn enroll(
    State(state): State<AppState>,
    Source(source): Source,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    check_agent(req.protocol, &req.hostname, &req.os)?;
    let input = EnrollInput {
        enroll_key: req.enroll_key,
        public_key: req.public_key,
        name: req.name,
        hostname: req.hostname,
        os: req.os,
    };
    let (device, net, credential) =
        enroll_device(&state, AuditCtx::new("agent", source), input).await?;
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

/// The protocol version and the host details every agent request carries.
pub(super) fn check_agent(
    protocol: u16,
    hostname: &Option<String>,
    os: &Option<String>,
) -> Result<(), ApiError> {
    if protocol != PROTOCOL_VERSION {
        return Err(ApiError::Invalid {
            code: "unsupported_protocol",
            message: format!(
                "this console speaks protocol {PROTOCOL_VERSION}, the agent sent {}",
                protocol
            ),
            field: Some("protocol".into()),
        });
    }
    for (field, v) in [("hostname", hostname), ("os", os)] {
        if v.as_ref()
            .is_some_and(|s| s.len() > MAX_INFO_LEN || s.chars().any(char::is_control))
        {
            return Err(ApiError::invalid(
                field,
                format!("at most {MAX_INFO_LEN} printable characters"),
            ));
        }
    }
    Ok(())
}
