//! Names (DNS): the network's suffix. Setting it is one transaction (the new suffix,
//! its `network.dns` audit event, the revision bump), then the change is published, so
//! every agent's resolver answers under the new suffix within a second.

use serde::Serialize;

use super::{AuditCtx, Core, ServiceError};
use crate::domain::dns::{check_suffix, suffix, DEFAULT_PARENT};
use crate::store::Network;

/// The network's names as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DnsSettings {
    /// The suffix in force: every device answers as `NAME.SUFFIX`.
    pub suffix: String,
    /// True when no suffix was set (`NETWORK-NAME.zmesh.internal`).
    pub default: bool,
}

fn settings(net: &Network) -> DnsSettings {
    DnsSettings {
        suffix: suffix(net),
        default: net.dns_suffix.is_none(),
    }
}

pub async fn get(core: &Core) -> Result<DnsSettings, ServiceError> {
    Ok(settings(&core.store.get_network(core.network_id).await?))
}

/// Sets the suffix; `None` (or the default itself) goes back to the default.
pub async fn set_suffix(
    core: &Core,
    ctx: AuditCtx,
    new: Option<&str>,
) -> Result<DnsSettings, ServiceError> {
    let checked = new.map(|s| check_suffix("suffix", s)).transpose()?;
    let net = core.store.get_network(core.network_id).await?;
    let default = format!("{}.{DEFAULT_PARENT}", net.name.to_ascii_lowercase());
    let checked = checked.filter(|s| *s != default);
    let net = core
        .store
        .acting(ctx)
        .set_dns_suffix(core.network_id, checked.as_deref())
        .await?;
    tracing::info!(suffix = %suffix(&net), "DNS suffix set");
    core.publish_network(core.network_id).await;
    Ok(settings(&net))
}
