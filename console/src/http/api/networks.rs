//! `/api/v1/networks`: the networks of this console (list, create, get, make exclusive
//! or not, delete), their handlers and their part of the route table. Creating,
//! changing and deleting networks is console-wide (refused to principals scoped to one
//! network); a scoped principal lists and reads its own network only.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use crate::http::path::ApiPath;
use crate::http::query::known;
use crate::http::routes::{body, Access, RouteDef, E400, E401, E415, ERR};
use crate::http::{scope, ApiError, ApiJson, AppState, Principal};
use crate::service::networks::{self as svc, CreateNetwork, NetworkSummary};
use crate::store::AuditCtx;

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNetworkBody {
    /// A lower-case DNS label (1 to 63 of a-z, 0-9, '-').
    #[schema(min_length = 1, max_length = 63)]
    pub name: String,
    /// Overlay IPv4 range (prefix length 8 to 30); default: a free random /16 of
    /// 100.64.0.0/10. A range overlapping another network is refused (409).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v4: Option<String>,
    /// Overlay IPv6 range (unique-local, fd00::/8, length 32 to 64); default: a random
    /// ULA /48.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v6: Option<String>,
    /// DNS suffix; default NAME.zmesh.internal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_suffix: Option<String>,
    /// A device in this network may not be in any other network at the same time.
    #[serde(default)]
    pub exclusive: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchNetwork {
    /// Make the network exclusive (or not); connected agents get it in a delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<bool>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NetworkList {
    pub networks: Vec<NetworkSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkDeleted {
    pub name: String,
    /// Devices deleted with it (only with `force=true`).
    pub devices_deleted: u64,
}

/// Query of `DELETE /api/v1/networks/{name}`.
#[derive(utoipa::IntoParams)]
#[allow(dead_code)] // documentation only: the handler reads a map and checks the names
pub struct DeleteNetworkQuery {
    /// `true`: also delete the network's devices (else a network with devices is
    /// refused with 409).
    force: Option<bool>,
}

pub async fn list(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
) -> Result<Json<NetworkList>, ApiError> {
    let own = p.network();
    let networks = svc::list(&state)
        .await?
        .iter()
        .filter(|c| own.is_none_or(|o| c.network.id == o))
        .map(|c| NetworkSummary::of(&c.network, c.devices))
        .collect();
    Ok(Json(NetworkList { networks }))
}

pub async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    ApiJson(b): ApiJson<CreateNetworkBody>,
) -> Result<(StatusCode, Json<NetworkSummary>), ApiError> {
    let req = CreateNetwork {
        name: b.name,
        v4: b.v4,
        v6: b.v6,
        dns_suffix: b.dns_suffix,
        exclusive: b.exclusive,
    };
    Ok((
        StatusCode::CREATED,
        Json(svc::create(&state, ctx, req).await?),
    ))
}

/// The network named in the path, as the caller may see it (a scoped caller: its own
/// only; another answers like one that does not exist).
async fn visible(
    state: &AppState,
    p: &Principal,
    ctx: &AuditCtx,
    name: &str,
) -> Result<crate::store::Network, ApiError> {
    scope::resolve(state, Some(p), Some(ctx), Some(name))
        .await
        .map_err(|e| match e {
            ApiError::Invalid { .. } => ApiError::NoNetwork(name.into()),
            e => e,
        })
}

pub async fn get_one(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<NetworkSummary>, ApiError> {
    let net = visible(&state, &p, &ctx, &name).await?;
    Ok(Json(svc::summary(&state, net.id).await?))
}

pub async fn update(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(name): ApiPath<String>,
    ApiJson(b): ApiJson<PatchNetwork>,
) -> Result<Json<NetworkSummary>, ApiError> {
    let net = visible(&state, &p, &ctx, &name).await?;
    match b.exclusive {
        Some(x) => Ok(Json(svc::set_exclusive(&state, ctx, &net.name, x).await?)),
        None => Ok(Json(svc::summary(&state, net.id).await?)),
    }
}

pub async fn remove(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(name): ApiPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<NetworkDeleted>, ApiError> {
    // `network` (which the CLI's --network adds to every call) names nothing here
    known(&q, &["force", scope::PARAM])?;
    let force = match q.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid("force", "true or false")),
    };
    let net = visible(&state, &p, &ctx, &name).await?;
    let n = svc::delete(&state, ctx, &net.name, force).await?;
    Ok(Json(NetworkDeleted {
        name: net.name,
        devices_deleted: n,
    }))
}

const E422: (u16, crate::http::routes::Content, &str) = (
    422,
    ERR,
    "invalid field or path parameter; `field` names it",
);
const E404: (u16, crate::http::routes::Content, &str) = (
    404,
    ERR,
    "no network of this name (a caller scoped to a network sees only its own)",
);

/// The routes of `/api/v1/networks`.
pub fn routes() -> Vec<RouteDef> {
    use Access::Admin;
    vec![
        RouteDef {
            method: Method::GET,
            path: "/api/v1/networks",
            operation_id: "listNetworks",
            summary: "Every network with its ranges, rule and device count (a scoped caller: its own)",
            tag: "networks",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<NetworkList>(), "the networks"), E401],
            handler: || get(list),
        },
        RouteDef {
            method: Method::POST,
            path: "/api/v1/networks",
            operation_id: "createNetwork",
            summary: "Create a network (console-wide admins only)",
            tag: "networks",
            access: Admin,
            request: Some(body::<CreateNetworkBody>()),
            query: None,
            responses: vec![
                (201, body::<NetworkSummary>(), "created"),
                E400,
                E415,
                E401,
                (403, ERR, "auditor, or an account scoped to one network"),
                (409, ERR, "the name is taken, or a range overlaps another network (named); `field` says which"),
                (422, ERR, "invalid field; `field` names it"),
            ],
            handler: || post(create),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/networks/{name}",
            operation_id: "getNetwork",
            summary: "One network",
            tag: "networks",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<NetworkSummary>(), "the network"), E401, E404, E422],
            handler: || get(get_one),
        },
        RouteDef {
            method: Method::PATCH,
            path: "/api/v1/networks/{name}",
            operation_id: "updateNetwork",
            summary: "Make a network exclusive or not (bumps its revision; agents get a delta)",
            tag: "networks",
            access: Admin,
            request: Some(body::<PatchNetwork>()),
            query: None,
            responses: vec![
                (200, body::<NetworkSummary>(), "updated"),
                E400,
                E415,
                E401,
                (403, ERR, "auditor, or an account scoped to one network"),
                E404,
                E422,
            ],
            handler: || axum::routing::patch(update),
        },
        RouteDef {
            method: Method::DELETE,
            path: "/api/v1/networks/{name}",
            operation_id: "deleteNetwork",
            summary: "Delete a network (not the first); with force=true its devices too",
            tag: "networks",
            access: Admin,
            request: None,
            query: Some(crate::http::routes::query::<DeleteNetworkQuery>),
            responses: vec![
                (200, body::<NetworkDeleted>(), "deleted"),
                E401,
                (403, ERR, "auditor, or an account scoped to one network"),
                E404,
                (409, ERR, "the first network, or a network with devices without force=true"),
                (422, ERR, "`force` is not true or false, or an unknown query parameter"),
            ],
            handler: || axum::routing::delete(remove),
        },
    ]
}
