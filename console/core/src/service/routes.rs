//! Subnet routes and exit nodes: what a device's agent advertises (checked, stored,
//! approved at once where the policy's `auto_approvers` say so) and what admins
//! approve or withdraw. Only an approved route carries traffic, and only for the
//! sources a policy rule names its prefix for; a change of the approved set bumps the
//! revision, so peers' maps follow within one delta.

use ipnet::IpNet;
use zmesh_shared::policy::{route_auto_approved, Policy};
use zmesh_shared::time::now_ms;
use zmesh_shared::{DeviceId, NetworkId};

use super::audit::record_refusal;
use super::devices::{find, is_online};
use super::{AuditCtx, Core, ServiceError};
use crate::domain::policy::snapshot_inventory;
use crate::domain::routes::{check_advertised, is_default};
use crate::store::{Advertised, RouteRow};

/// An advertised route as the API and the web page show it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RouteStatus {
    #[serde(flatten)]
    pub route: RouteRow,
    /// `0.0.0.0/0` or `::/0`: part of an exit-node offer.
    pub exit_node: bool,
    pub approved: bool,
    /// Whether the advertising device's agent is connected (see `DeviceStatus`).
    pub online: bool,
}

/// What became of an advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvertiseOutcome {
    Stored(Advertised),
    /// Refused, with the reason (logged and audited as `route.refused`); the stored set
    /// is left as it was.
    Refused(String),
}

/// Records the routes device `device` advertises (`ClientMsg::Routes`): refused whole
/// when one prefix breaks a rule (see [`check_advertised`]), otherwise stored, with
/// what `auto_approvers` approve approved by actor `policy`.
pub async fn advertise(
    core: &Core,
    ctx: &AuditCtx,
    device: DeviceId,
    network: NetworkId,
    advertise: &[IpNet],
    exit_node: bool,
) -> Result<AdvertiseOutcome, ServiceError> {
    let snap = core.store.network_snapshot(network).await?;
    let overlay = [
        IpNet::V4(snap.network.prefix_v4),
        IpNet::V6(snap.network.prefix_v6),
    ];
    let prefixes = match check_advertised(advertise, exit_node, &overlay) {
        Ok(p) => p,
        Err(reason) => {
            tracing::warn!(%device, %reason, "advertised routes refused");
            record_refusal(
                &core.store,
                ctx.clone(),
                "route.refused",
                serde_json::json!({
                    "device": device,
                    // bounded: the reason names the culprit anyway
                    "advertise": advertise.iter().take(16).collect::<Vec<_>>(),
                    "count": advertise.len(),
                    "exit_node": exit_node,
                    "reason": reason,
                }),
            )
            .await;
            return Ok(AdvertiseOutcome::Refused(reason));
        }
    };
    // A policy that does not parse approves nothing (fails closed).
    let auto: Vec<IpNet> = match Policy::parse(&snap.policy.text) {
        Ok(p) if !prefixes.is_empty() => {
            let inv = snapshot_inventory(&snap);
            prefixes
                .iter()
                .filter(|n| route_auto_approved(&p, &inv, &device, n))
                .copied()
                .collect()
        }
        _ => Vec::new(),
    };
    let out = core
        .store
        .acting(ctx.clone())
        .set_advertised_routes(device, &prefixes, &auto, now_ms())
        .await?;
    if out.changed {
        tracing::info!(%device, routes = prefixes.len(), exit_node, auto_approved = out.auto_approved.len(), "advertised routes stored");
    }
    if out.approved_changed() {
        core.publish_network(network).await;
    }
    Ok(AdvertiseOutcome::Stored(out))
}

/// Approves the waiting routes the policy's `auto_approvers` now cover: called after a
/// policy is saved and after a device is approved, since an advertisement is otherwise
/// judged only when it arrives. Failures are logged: the change that called this is
/// already committed, and the next advertisement tries again.
pub async fn apply_auto_approvers(core: &Core, network: NetworkId) {
    if let Err(e) = try_auto_approvers(core, network).await {
        tracing::error!(error = %e, %network, "could not apply the policy's auto_approvers");
    }
}

async fn try_auto_approvers(core: &Core, network: NetworkId) -> Result<(), ServiceError> {
    let waiting: Vec<RouteRow> = core
        .store
        .list_routes(network)
        .await?
        .into_iter()
        .filter(|r| r.approved_at_ms.is_none())
        .collect();
    if waiting.is_empty() {
        return Ok(());
    }
    let snap = core.store.network_snapshot(network).await?;
    let Ok(p) = Policy::parse(&snap.policy.text) else {
        return Ok(());
    };
    if p.auto_approvers.routes.is_empty() && p.auto_approvers.exit_node.is_empty() {
        return Ok(());
    }
    let inv = snapshot_inventory(&snap);
    let todo: Vec<(DeviceId, IpNet)> = waiting
        .iter()
        .filter(|r| route_auto_approved(&p, &inv, &r.device_id, &r.prefix))
        .map(|r| (r.device_id, r.prefix))
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let done = core
        .store
        .approve_routes_by_policy(network, &todo, now_ms())
        .await?;
    if !done.is_empty() {
        tracing::info!(%network, routes = done.len(), "routes approved by auto_approvers");
        core.publish_network(network).await;
    }
    Ok(())
}

/// Every advertised route of the network with its approval and its device's presence.
pub async fn list(
    core: &Core,
    ping_interval: std::time::Duration,
    now_ms: i64,
) -> Result<Vec<RouteStatus>, ServiceError> {
    let routes = core.store.list_routes(core.network_id).await?;
    let devices = core.store.list_devices(core.network_id).await?;
    Ok(routes
        .into_iter()
        .map(|route| RouteStatus {
            exit_node: is_default(&route.prefix),
            approved: route.approved_at_ms.is_some(),
            online: devices
                .iter()
                .find(|d| d.id == route.device_id)
                .is_some_and(|d| is_online(d, ping_interval, now_ms)),
            route,
        })
        .collect())
}

/// Parses the `prefix` field of an approval: an IP prefix in canonical form.
fn parse_prefix(prefix: &str) -> Result<IpNet, ServiceError> {
    let p: IpNet = prefix.trim().parse().map_err(|_| {
        ServiceError::invalid(
            "prefix",
            format!("{prefix:?} is not an IP prefix (like 10.1.0.0/24)"),
        )
    })?;
    if p != p.trunc() {
        return Err(ServiceError::invalid(
            "prefix",
            format!("{p} has host bits set; the route is {}", p.trunc()),
        ));
    }
    Ok(p)
}

/// An admin approves (`approve`) or withdraws the approval of a route the device
/// (id or name) advertises: audited as `route.approve` / `route.unapprove`, published
/// to the peers. 404 for an unknown device; `Invalid` on `prefix` for a prefix it does
/// not advertise.
pub async fn set_approval(
    core: &Core,
    ctx: AuditCtx,
    device: &str,
    prefix: &str,
    approve: bool,
) -> Result<RouteRow, ServiceError> {
    let prefix = parse_prefix(prefix)?;
    let dev = find(core, device).await?;
    let row = core
        .store
        .acting(ctx)
        .set_route_approval(dev.id, prefix, approve, now_ms())
        .await?;
    tracing::info!(device = %dev.id, %prefix, approve, "route approval set");
    core.publish_network(dev.network_id).await;
    Ok(row)
}
