//! Networks on one console: create (name and ranges checked, ranges chosen when not
//! given), list, find by name, make exclusive or not, delete. Each change is one store
//! transaction with its `network.*` audit event; a change agents see (exclusive) bumps
//! the revision and is published, so connected agents get a delta naming the network.

use serde::Serialize;
use zmesh_shared::NetworkId;

use super::{AuditCtx, Core, ServiceError};
use crate::domain::networks::{
    check_free, check_name, check_v4, check_v6, pick_v4, pick_v6, v4_overlap, Ranges,
};
use crate::store::{Network, NetworkCount, NewNetwork};

/// What an admin asks for; `None` ranges are chosen by the console.
#[derive(Debug, Clone, Default)]
pub struct CreateNetwork {
    pub name: String,
    pub v4: Option<String>,
    pub v6: Option<String>,
    pub dns_suffix: Option<String>,
    pub exclusive: bool,
}

/// A network as the API and the CLI show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NetworkSummary {
    pub id: String,
    pub name: String,
    /// Overlay IPv4 range.
    pub v4: String,
    /// Overlay IPv6 range.
    pub v6: String,
    /// The DNS suffix in force (devices answer as `NAME.SUFFIX`).
    pub dns_suffix: String,
    /// A device in this network may not be in any other network at the same time.
    pub exclusive: bool,
    /// Devices in every state.
    pub devices: u64,
    pub revision: u64,
    pub created_at_ms: i64,
    /// Set on creation only: the network whose IPv4 range the new one overlaps (the
    /// first network's built-in 100.64.0.0/10); one device cannot then be in both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shares_range_with: Option<String>,
}

impl NetworkSummary {
    pub fn of(n: &Network, devices: u64) -> Self {
        NetworkSummary {
            id: n.id.to_string(),
            name: n.name.clone(),
            v4: n.prefix_v4.to_string(),
            v6: n.prefix_v6.to_string(),
            dns_suffix: crate::domain::dns::suffix(n),
            exclusive: n.exclusive,
            devices,
            revision: n.revision,
            created_at_ms: n.created_at_ms,
            shares_range_with: None,
        }
    }
}

fn ranges(all: &[Network]) -> Vec<Ranges<'_>> {
    all.iter()
        .map(|n| Ranges {
            name: &n.name,
            v4: n.prefix_v4,
            v6: n.prefix_v6,
        })
        .collect()
}

/// Creates a network; explicit ranges that overlap another network are refused (409,
/// naming it), missing ones are chosen free (the IPv4 one may share the first
/// network's built-in 100.64.0.0/10, which the answer says).
pub async fn create(
    core: &Core,
    ctx: AuditCtx,
    req: CreateNetwork,
) -> Result<NetworkSummary, ServiceError> {
    let name = req.name.trim().to_string();
    check_name("name", &name)?;
    let v4 = req.v4.as_deref().map(|s| check_v4("v4", s)).transpose()?;
    let v6 = req.v6.as_deref().map(|s| check_v6("v6", s)).transpose()?;
    let dns_suffix = req
        .dns_suffix
        .as_deref()
        .map(|s| crate::domain::dns::check_suffix("dns_suffix", s))
        .transpose()?;
    let net = core
        .store
        .acting(ctx)
        .create_network(|all| {
            let others = ranges(all);
            check_free(v4.as_ref(), v6.as_ref(), &others)
                .map_err(|(field, msg)| ServiceError::conflict("overlap", msg, Some(&field)))?;
            let mut rng = rand::thread_rng();
            let v4 = match v4 {
                Some(v) => v,
                None => pick_v4(&others, &mut rng).ok_or_else(|| {
                    ServiceError::conflict(
                        "exhausted",
                        "every /16 of 100.64.0.0/10 is taken; give --v4",
                        Some("v4"),
                    )
                })?,
            };
            let v6 = v6.unwrap_or_else(|| pick_v6(&others, &mut rng));
            Ok::<_, ServiceError>(NewNetwork {
                name: name.clone(),
                v4,
                v6,
                dns_suffix: dns_suffix.clone(),
                exclusive: req.exclusive,
            })
        })
        .await??;
    let all = core.store.list_networks().await?;
    let others: Vec<Network> = all
        .into_iter()
        .map(|c| c.network)
        .filter(|n| n.id != net.id)
        .collect();
    let mut s = NetworkSummary::of(&net, 0);
    s.shares_range_with = v4_overlap(&net.prefix_v4, &ranges(&others)).map(str::to_string);
    tracing::info!(network = %net.name, v4 = %net.prefix_v4, v6 = %net.prefix_v6, exclusive = net.exclusive, "network created");
    // the rollout tracker starts following it from here
    core.publish_network(net.id).await;
    Ok(s)
}

/// Every network with its device count, the first one first.
pub async fn list(core: &Core) -> Result<Vec<NetworkCount>, ServiceError> {
    Ok(core.store.list_networks().await?)
}

/// The network named `name`; NotFound when there is none.
pub async fn find(core: &Core, name: &str) -> Result<Network, ServiceError> {
    core.store
        .network_by_name(name)
        .await?
        .ok_or(ServiceError::NotFound { what: "network" })
}

/// The network with this id and its device count.
pub async fn summary(core: &Core, id: NetworkId) -> Result<NetworkSummary, ServiceError> {
    let all = core.store.list_networks().await?;
    all.iter()
        .find(|c| c.network.id == id)
        .map(|c| NetworkSummary::of(&c.network, c.devices))
        .ok_or(ServiceError::NotFound { what: "network" })
}

/// Makes a network exclusive or not; published, so every connected agent of the
/// network gets a delta carrying the network's new rule.
pub async fn set_exclusive(
    core: &Core,
    ctx: AuditCtx,
    name: &str,
    exclusive: bool,
) -> Result<NetworkSummary, ServiceError> {
    let net = find(core, name).await?;
    let before = net.revision;
    let after = core
        .store
        .acting(ctx)
        .set_network_exclusive(net.id, exclusive)
        .await?;
    if after.revision != before {
        tracing::info!(network = %after.name, exclusive, "network rule changed");
        core.publish_network(after.id).await;
    }
    summary(core, after.id).await
}

/// Deletes a network (never the first); with `force` its devices too. Returns how
/// many devices were deleted. Their streams end as their network is gone.
pub async fn delete(
    core: &Core,
    ctx: AuditCtx,
    name: &str,
    force: bool,
) -> Result<u64, ServiceError> {
    let net = find(core, name).await?;
    let n = core.store.acting(ctx).delete_network(net.id, force).await?;
    tracing::info!(network = %net.name, devices = n, "network deleted");
    // streams of its devices look again, find nothing and close
    core.bus.publish(crate::bus::Change::Network {
        network_id: net.id,
        revision: net.revision + 1,
    });
    Ok(n)
}
