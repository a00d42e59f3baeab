//! `/api/v1/devices`: list, get (by id or name), update, approve, revoke, delete,
//! register agentless devices and export their wg-quick configuration.
//!
//! Every mutation publishes a change after it committed, so connected agents get a
//! delta at once; revoke and delete also close the device's own stream.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use zmesh_shared::time::now_ms;
use zmesh_shared::DeviceId;

use super::auth::Caller;
use super::path::ApiPath;
use super::types::{check_name, check_tags, AddDevice, DeviceList, PatchDevice};
use super::ApiJson;
use crate::bus::Change;
use crate::error::ApiError;
use crate::peermap::build_peer_map;
use crate::state::AppState;
use crate::store::{AuditCtx, DeviceRow, NewAgentlessDevice};

/// Finds a device of this console's network by id (`dev_…`) or by name.
pub async fn find(state: &AppState, id_or_name: &str) -> Result<DeviceRow, ApiError> {
    let row = match id_or_name.parse::<DeviceId>() {
        Ok(id) => state.store.get_device(id).await?,
        Err(_) => {
            state
                .store
                .device_by_name(state.network_id, id_or_name)
                .await?
        }
    };
    if row.network_id != state.network_id {
        return Err(ApiError::NotFound { what: "device" });
    }
    Ok(row)
}

pub async fn list(State(state): State<AppState>) -> Result<Json<DeviceList>, ApiError> {
    Ok(Json(DeviceList {
        devices: state.store.list_devices(state.network_id).await?,
    }))
}

pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeviceRow>, ApiError> {
    Ok(Json(find(&state, &id).await?))
}

pub async fn update(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PatchDevice>,
) -> Result<Json<DeviceRow>, ApiError> {
    // Validate everything first so a bad field never leaves a half-applied update.
    if let Some(n) = &body.name {
        check_name("name", n)?;
    }
    if let Some(t) = &body.tags {
        check_tags("tags", t)?;
        super::enroll_keys::declared(&state, "tags", t).await?;
    }
    let mut row = find(&state, &id).await?;
    let store = state.store.acting(ctx);
    if let Some(n) = &body.name {
        if !n.eq_ignore_ascii_case(&row.name) {
            row = store.rename_device(row.id, n).await?;
        }
    }
    if let Some(t) = &body.tags {
        row = store.set_device_tags(row.id, t).await?;
    }
    if let Some(exp) = body.key_expires_at_ms {
        row = store.set_device_key_expiry(row.id, exp).await?;
    }
    tracing::info!(device = %row.id, "device updated");
    state.publish_network(row.network_id).await;
    Ok(Json(row))
}

pub async fn approve(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeviceRow>, ApiError> {
    let row = find(&state, &id).await?;
    let row = state.store.acting(ctx).approve_device(row.id).await?;
    tracing::info!(device = %row.id, "device approved");
    state.publish_network(row.network_id).await;
    Ok(Json(row))
}

pub async fn revoke(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeviceRow>, ApiError> {
    let row = find(&state, &id).await?;
    let row = state
        .store
        .acting(ctx)
        .revoke_device(row.id, now_ms())
        .await?;
    tracing::info!(device = %row.id, "device revoked");
    state.bus.publish(Change::DeviceRevoked {
        device_id: row.id,
        reason: "revoked".into(),
    });
    state.publish_network(row.network_id).await;
    Ok(Json(row))
}

pub async fn remove(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let row = find(&state, &id).await?;
    state.store.acting(ctx).delete_device(row.id).await?;
    tracing::info!(device = %row.id, "device deleted");
    state.bus.publish(Change::DeviceRevoked {
        device_id: row.id,
        reason: "deleted".into(),
    });
    state.publish_network(row.network_id).await;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(ctx): Extension<AuditCtx>,
    ApiJson(body): ApiJson<AddDevice>,
) -> Result<(StatusCode, Json<DeviceRow>), ApiError> {
    check_name("name", &body.name)?;
    check_tags("tags", &body.tags)?;
    super::enroll_keys::declared(&state, "tags", &body.tags).await?;
    let row = state
        .store
        .acting(ctx)
        .add_agentless_device(NewAgentlessDevice {
            network_id: state.network_id,
            name: body.name,
            public_key: body.public_key,
            tags: body.tags,
            owner: caller.label(),
            now_ms: now_ms(),
        })
        .await?;
    tracing::info!(device = %row.id, "agentless device added");
    state.publish_network(row.network_id).await;
    Ok((StatusCode::CREATED, Json(row)))
}

pub async fn wireguard_config(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let row = find(&state, &id).await?;
    if !row.agentless {
        return Err(ApiError::conflict(
            "not_agentless",
            format!(
                "{} runs the zmesh agent, which configures itself; export is for agentless devices",
                row.name
            ),
            None,
        ));
    }
    let snap = state.store.network_snapshot(row.network_id).await?;
    let map = build_peer_map(&snap, row.id, now_ms()).ok_or_else(|| {
        ApiError::conflict(
            "device_not_active",
            format!("{} is not active", row.name),
            None,
        )
    })?;
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
