//! `/api/v1/devices`: list, get (by id or name), update, approve, revoke, delete,
//! register agentless devices and export their wg-quick configuration.
//!
//! Every change is a `service::devices` call (which publishes it to the agents).

use std::fmt::Write as _;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};

use super::types::{AddDevice, DeviceList, PatchDevice};
use crate::http::path::ApiPath;
use crate::http::scope::Scoped;
use crate::http::{ApiError, ApiJson, Principal};
use crate::service::devices::{self as svc, DeviceUpdate};
use crate::store::{AuditCtx, DeviceRow};

pub async fn list(Scoped(state): Scoped) -> Result<Json<DeviceList>, ApiError> {
    let now = zmesh_shared::time::now_ms();
    Ok(Json(DeviceList {
        devices: svc::list_with_status(&state, state.ping_interval, now).await?,
    }))
}

pub async fn get_one(
    Scoped(state): Scoped,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeviceRow>, ApiError> {
    Ok(Json(svc::find(&state, &id).await?))
}

pub async fn update(
    Scoped(state): Scoped,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PatchDevice>,
) -> Result<Json<DeviceRow>, ApiError> {
    let u = DeviceUpdate {
        name: body.name,
        tags: body.tags,
        key_expires_at_ms: body.key_expires_at_ms,
    };
    Ok(Json(svc::update(&state, ctx, &id, u).await?))
}

pub async fn approve(
    Scoped(state): Scoped,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeviceRow>, ApiError> {
    Ok(Json(svc::approve(&state, ctx, &id).await?))
}

pub async fn revoke(
    Scoped(state): Scoped,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeviceRow>, ApiError> {
    Ok(Json(svc::revoke(&state, ctx, &id).await?))
}

pub async fn remove(
    Scoped(state): Scoped,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    svc::delete(&state, ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add(
    Scoped(state): Scoped,
    Extension(caller): Extension<Principal>,
    Extension(ctx): Extension<AuditCtx>,
    ApiJson(body): ApiJson<AddDevice>,
) -> Result<(StatusCode, Json<DeviceRow>), ApiError> {
    let row = svc::add_agentless(
        &state,
        ctx,
        caller.label(),
        body.name,
        body.public_key,
        body.tags,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row)))
}

pub async fn wireguard_config(
    Scoped(state): Scoped,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let (row, map) = svc::agentless_map(&state, &id).await?;
    let text = render_wg_quick(&row, &map);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text))
}

/// A wg-quick file. The console never has the private key, so the operator adds it.
pub fn render_wg_quick(dev: &DeviceRow, map: &zmesh_shared::peermap::PeerMap) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# zmesh: wg-quick configuration for {} ({})",
        dev.name, dev.id
    );
    let _ = writeln!(
        s,
        "# Network revision {}. Export again after peers change.",
        map.version
    );
    let _ = writeln!(s, "[Interface]");
    let _ = writeln!(s, "# PrivateKey = <set on the device>");
    let _ = writeln!(s, "Address = {}/32, {}/128", dev.overlay_v4, dev.overlay_v6);
    for p in &map.peers {
        let _ = writeln!(s);
        let _ = writeln!(s, "[Peer]");
        let _ = writeln!(s, "# {} ({})", p.name, p.device_id);
        let _ = writeln!(s, "PublicKey = {}", p.public_key);
        let ips: Vec<String> = p.allowed_ips.iter().map(|n| n.to_string()).collect();
        let _ = writeln!(s, "AllowedIPs = {}", ips.join(", "));
        if let Some(ep) = p.endpoints.first() {
            let _ = writeln!(s, "Endpoint = {ep}");
        }
        let _ = writeln!(s, "PersistentKeepalive = 25");
    }
    s
}
