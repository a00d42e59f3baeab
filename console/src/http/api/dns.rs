//! `/api/v1/dns`: the network's names. Every device answers as `NAME.SUFFIX` at each
//! agent's resolver; the suffix defaults to `NETWORK-NAME.zmesh.internal`. Admins add
//! extra records under the suffix and split-DNS domains (answered by resolvers reached
//! through the mesh).

use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use crate::http::path::ApiPath;
use crate::http::scope::Scoped;
use crate::http::{ApiError, ApiJson};
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

pub async fn get(Scoped(state): Scoped) -> Result<Json<DnsSettings>, ApiError> {
    Ok(Json(svc::get(&state).await?))
}

pub async fn put(
    Scoped(state): Scoped,
    Extension(ctx): Extension<AuditCtx>,
    ApiJson(body): ApiJson<SetDns>,
) -> Result<Json<DnsSettings>, ApiError> {
    Ok(Json(
        svc::set_suffix(&state, ctx, body.suffix.as_deref()).await?,
    ))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDnsRecord {
    /// Relative to the suffix: `wiki` answers as `wiki.SUFFIX`.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// IPv4 (an A record) or IPv6 (AAAA).
    pub ip: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSplitDns {
    /// Resolvers for the domain, reachable through the mesh, tried in order.
    #[schema(min_items = 1, max_items = 4)]
    pub resolvers: Vec<String>,
}

pub async fn add_record(
    Scoped(state): Scoped,
    Extension(ctx): Extension<AuditCtx>,
    ApiJson(body): ApiJson<AddDnsRecord>,
) -> Result<Json<DnsSettings>, ApiError> {
    Ok(Json(
        svc::add_dns_record(&state, ctx, &body.name, &body.ip).await?,
    ))
}

pub async fn remove_record(
    Scoped(state): Scoped,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<DnsSettings>, ApiError> {
    Ok(Json(svc::remove_dns_record(&state, ctx, &name).await?))
}

pub async fn put_split(
    Scoped(state): Scoped,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(domain): ApiPath<String>,
    ApiJson(body): ApiJson<PutSplitDns>,
) -> Result<Json<DnsSettings>, ApiError> {
    Ok(Json(
        svc::put_split_dns(&state, ctx, &domain, &body.resolvers).await?,
    ))
}

pub async fn remove_split(
    Scoped(state): Scoped,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(domain): ApiPath<String>,
) -> Result<Json<DnsSettings>, ApiError> {
    Ok(Json(svc::remove_split_dns(&state, ctx, &domain).await?))
}
