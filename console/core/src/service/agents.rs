//! What a connected agent changes over its stream: its endpoints (peers see them, so
//! the revision moves and the change is published), its last-seen time, and the flow
//! records it reports (see [`super::access`]).

use std::net::SocketAddr;

use zmesh_shared::time::now_ms;
use zmesh_shared::{DeviceId, NetworkId};

use super::{Core, ServiceError};
use crate::store::AuditCtx;

/// Records the device's endpoints, as the actor `ctx` (the device). Returns whether
/// they changed (and were published).
pub async fn set_endpoints(
    core: &Core,
    ctx: &AuditCtx,
    device: DeviceId,
    network: NetworkId,
    endpoints: &[SocketAddr],
) -> Result<bool, ServiceError> {
    let changed = core
        .store
        .acting(ctx.clone())
        .set_device_endpoints(device, endpoints, now_ms())
        .await?;
    if changed {
        tracing::debug!(%device, count = endpoints.len(), "endpoints changed");
        core.publish_device_change(network).await;
    }
    Ok(changed)
}

/// Records the agent version the device's stream said Hello with, and that the device
/// is alive. Not a change peers see, but consoles watching the list do: it is published
/// as a [`crate::bus::Change::DeviceSeen`].
pub async fn hello(core: &Core, device: DeviceId, agent_version: &str) -> Result<(), ServiceError> {
    core.store.set_agent_version(device, agent_version).await?;
    core.store.touch_device(device, now_ms()).await?;
    core.bus.publish(crate::bus::Change::DeviceSeen {
        network_id: core.network_id,
        device_id: device,
    });
    Ok(())
}

/// Notes that the device is alive.
pub async fn touch(core: &Core, device: DeviceId) -> Result<(), ServiceError> {
    Ok(core.store.touch_device(device, now_ms()).await?)
}
