//! Devices: find by id or name, update (name, tags, key expiry), approve, revoke,
//! delete, register an agentless device. Revoke and delete also close the device's own
//! stream (a `DeviceRevoked` change).

use zmesh_shared::peermap::PeerMap;
use zmesh_shared::time::now_ms;
use zmesh_shared::{DeviceId, WgPublicKey};

use super::{enroll_keys::tags_declared, AuditCtx, Core, ServiceError};
use crate::bus::Change;
use crate::domain::names::{check_name, check_tags};
use crate::domain::peermap::build_peer_map;
use crate::store::{DeviceRow, NewAgentlessDevice};

/// Whether the device's agent was heard from within three stream pings (a stream
/// silent for longer is dropped). The one definition of "online": web pages, the API
/// and through it the CLI use it.
pub fn is_online(d: &DeviceRow, ping_interval: std::time::Duration, now_ms: i64) -> bool {
    crate::domain::presence::is_online(d.last_seen_ms, ping_interval, now_ms)
}

/// A device with its derived online state, as the device list shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeviceStatus {
    #[serde(flatten)]
    pub device: DeviceRow,
    /// Heard from within three stream pings (see `last_seen_ms`).
    pub online: bool,
}

/// The network's devices with their online state at `now_ms`.
pub async fn list_with_status(
    core: &Core,
    ping_interval: std::time::Duration,
    now_ms: i64,
) -> Result<Vec<DeviceStatus>, ServiceError> {
    let rows = core.store.list_devices(core.network_id).await?;
    Ok(rows
        .into_iter()
        .map(|device| DeviceStatus {
            online: is_online(&device, ping_interval, now_ms),
            device,
        })
        .collect())
}

/// Finds a device of this console's network by id (`dev_…`) or by name.
pub async fn find(core: &Core, id_or_name: &str) -> Result<DeviceRow, ServiceError> {
    let row = match id_or_name.parse::<DeviceId>() {
        Ok(id) => core.store.get_device(id).await?,
        Err(_) => {
            core.store
                .device_by_name(core.network_id, id_or_name)
                .await?
        }
    };
    if row.network_id != core.network_id {
        return Err(ServiceError::NotFound { what: "device" });
    }
    Ok(row)
}

/// What an update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct DeviceUpdate {
    pub name: Option<String>,
    pub tags: Option<Vec<String>>,
    /// `Some(None)`: the key never expires.
    pub key_expires_at_ms: Option<Option<i64>>,
}

pub async fn update(
    core: &Core,
    ctx: AuditCtx,
    id_or_name: &str,
    u: DeviceUpdate,
) -> Result<DeviceRow, ServiceError> {
    // Validate everything first so a bad field never leaves a half-applied update.
    if let Some(n) = &u.name {
        check_name("name", n)?;
    }
    if let Some(t) = &u.tags {
        check_tags("tags", t)?;
        tags_declared(core, "tags", t).await?;
    }
    let mut row = find(core, id_or_name).await?;
    let store = core.store.acting(ctx);
    if let Some(n) = &u.name {
        if !n.eq_ignore_ascii_case(&row.name) {
            row = store.rename_device(row.id, n).await?;
        }
    }
    if let Some(t) = &u.tags {
        row = store.set_device_tags(row.id, t).await?;
    }
    if let Some(exp) = u.key_expires_at_ms {
        row = store.set_device_key_expiry(row.id, exp).await?;
    }
    tracing::info!(device = %row.id, "device updated");
    core.publish_network(row.network_id).await;
    Ok(row)
}

pub async fn approve(
    core: &Core,
    ctx: AuditCtx,
    id_or_name: &str,
) -> Result<DeviceRow, ServiceError> {
    let row = find(core, id_or_name).await?;
    let row = core.store.acting(ctx).approve_device(row.id).await?;
    tracing::info!(device = %row.id, "device approved");
    core.publish_network(row.network_id).await;
    // auto_approvers only judge active devices: its waiting routes may qualify now
    super::routes::apply_auto_approvers(core, row.network_id).await;
    Ok(row)
}

pub async fn revoke(
    core: &Core,
    ctx: AuditCtx,
    id_or_name: &str,
) -> Result<DeviceRow, ServiceError> {
    let row = find(core, id_or_name).await?;
    let row = core
        .store
        .acting(ctx)
        .revoke_device(row.id, now_ms())
        .await?;
    tracing::info!(device = %row.id, "device revoked");
    core.bus.publish(Change::DeviceRevoked {
        device_id: row.id,
        reason: "revoked".into(),
    });
    core.publish_network(row.network_id).await;
    Ok(row)
}

pub async fn delete(core: &Core, ctx: AuditCtx, id_or_name: &str) -> Result<(), ServiceError> {
    let row = find(core, id_or_name).await?;
    core.store.acting(ctx).delete_device(row.id).await?;
    tracing::info!(device = %row.id, "device deleted");
    core.bus.publish(Change::DeviceRevoked {
        device_id: row.id,
        reason: "deleted".into(),
    });
    core.publish_network(row.network_id).await;
    Ok(())
}

/// A stock WireGuard peer added by an admin (`owner` is the admin's label).
pub async fn add_agentless(
    core: &Core,
    ctx: AuditCtx,
    owner: String,
    name: String,
    public_key: WgPublicKey,
    tags: Vec<String>,
) -> Result<DeviceRow, ServiceError> {
    check_name("name", &name)?;
    check_tags("tags", &tags)?;
    tags_declared(core, "tags", &tags).await?;
    let row = core
        .store
        .acting(ctx)
        .add_agentless_device(NewAgentlessDevice {
            network_id: core.network_id,
            name,
            public_key,
            tags,
            owner,
            now_ms: now_ms(),
        })
        .await?;
    tracing::info!(device = %row.id, "agentless device added");
    core.publish_network(row.network_id).await;
    Ok(row)
}

/// An agentless device and its current peer map (for its wg-quick file).
pub async fn agentless_map(
    core: &Core,
    id_or_name: &str,
) -> Result<(DeviceRow, PeerMap), ServiceError> {
    let row = find(core, id_or_name).await?;
    if !row.agentless {
        return Err(ServiceError::conflict(
            "not_agentless",
            format!(
                "{} runs the zmesh agent, which configures itself; export is for agentless devices",
                row.name
            ),
            None,
        ));
    }
    let snap = core.store.network_snapshot(row.network_id).await?;
    let map = build_peer_map(&snap, row.id, now_ms()).ok_or_else(|| {
        ServiceError::conflict(
            "device_not_active",
            format!("{} is not active", row.name),
            None,
        )
    })?;
    Ok((row, map))
}
