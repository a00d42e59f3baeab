//! `/api/v1/routes`: the routes devices advertise (subnet routers, exit nodes), and
//! their approval by admins. Every change is a `service::routes` call, which audits it
//! and publishes it to the agents.

use axum::{Extension, Json};

use super::types::{RouteApproval, RouteList};
use crate::http::scope::Scoped;
use crate::http::{ApiError, ApiJson};
use crate::service::routes as svc;
use crate::store::{AuditCtx, RouteRow};

pub async fn list(Scoped(state): Scoped) -> Result<Json<RouteList>, ApiError> {
    let now = zmesh_shared::time::now_ms();
    Ok(Json(RouteList {
        routes: svc::list(&state, state.ping_interval, now).await?,
    }))
}

pub async fn approve(
    Scoped(state): Scoped,
    Extension(ctx): Extension<AuditCtx>,
    ApiJson(body): ApiJson<RouteApproval>,
) -> Result<Json<RouteRow>, ApiError> {
    Ok(Json(
        svc::set_approval(&state, ctx, &body.device, &body.prefix, true).await?,
    ))
}

pub async fn unapprove(
    Scoped(state): Scoped,
    Extension(ctx): Extension<AuditCtx>,
    ApiJson(body): ApiJson<RouteApproval>,
) -> Result<Json<RouteRow>, ApiError> {
    Ok(Json(
        svc::set_approval(&state, ctx, &body.device, &body.prefix, false).await?,
    ))
}
