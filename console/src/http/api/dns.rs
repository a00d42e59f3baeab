//! `/api/v1/dns`: the network's names. Every device answers as `NAME.SUFFIX` at each
//! agent's resolver; the suffix defaults to `NETWORK-NAME.zmesh.internal`.

use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use crate::http::{ApiError, ApiJson, AppState};
use crate::service::dns::{self as svc, DnsSettings};
use crate::store::AuditCtx;

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDns {
    /// The new suffix (a DNS domain such as `corp.example`); `null` restores the
    /// default.
    #[schema(max_length = 253)]
    pub suffix: Option<String>,
}

pub async fn get(State(state): State<AppState>) -> Result<Json<DnsSettings>, ApiError> {
    Ok(Json(svc::get(&state).await?))
}

pub async fn put(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    ApiJson(body): ApiJson<SetDns>,
) -> Result<Json<DnsSettings>, ApiError> {
    Ok(Json(
        svc::set_suffix(&state, ctx, body.suffix.as_deref()).await?,
    ))
}
