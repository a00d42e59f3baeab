//! Names (DNS): the network's suffix, admins' extra records and split-DNS entries.
//! Each change is one transaction (the new names, their audit event, the revision
//! bump), then published, so every agent's resolver follows within a second. Bad input
//! is refused with the field it concerns and changes nothing.

use serde::Serialize;
use zmesh_shared::peermap::{DnsRecord, SplitDns};

use super::{AuditCtx, Core, ServiceError};
use crate::domain::dns::{
    add_record, check_record, check_split, check_suffix, put_split, suffix, DEFAULT_PARENT,
};
use crate::domain::DomainError;
use crate::store::{Network, NetworkDns};

/// The network's names as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DnsSettings {
    /// The suffix in force: every device answers as `NAME.SUFFIX`.
    pub suffix: String,
    /// True when no suffix was set (`NETWORK-NAME.zmesh.internal`).
    pub default: bool,
    /// Extra names under the suffix (device names win over them).
    pub records: Vec<DnsRecord>,
    /// Domains answered by resolvers reachable through the mesh.
    pub split: Vec<SplitDns>,
}

fn settings(net: &Network) -> DnsSettings {
    DnsSettings {
        suffix: suffix(net),
        default: net.dns_suffix.is_none(),
        records: net.dns_records.clone(),
        split: net.dns_split.clone(),
    }
}

pub async fn get(core: &Core) -> Result<DnsSettings, ServiceError> {
    Ok(settings(&core.store.get_network(core.network_id).await?))
}

/// Runs one checked change of the names and publishes it.
async fn change(
    core: &Core,
    ctx: AuditCtx,
    action: &'static str,
    f: impl FnOnce(&NetworkDns) -> Result<NetworkDns, ServiceError>,
) -> Result<DnsSettings, ServiceError> {
    let net = core
        .store
        .acting(ctx)
        .update_dns(core.network_id, action, f)
        .await??;
    tracing::info!(action, suffix = %suffix(&net), records = net.dns_records.len(), split = net.dns_split.len(), "names changed");
    core.publish_network(core.network_id).await;
    Ok(settings(&net))
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
    change(core, ctx, "network.dns", |cur| {
        if let Some(s) = &checked {
            if let Some(e) = cur
                .split
                .iter()
                .find(|e| e.domain == *s || e.domain.ends_with(&format!(".{s}")))
            {
                return Err(DomainError::invalid(
                    "suffix",
                    format!("{s} would take over the split-DNS domain {}", e.domain),
                )
                .into());
            }
        }
        Ok(NetworkDns {
            suffix: checked,
            ..cur.clone()
        })
    })
    .await
}

/// Adds `NAME.SUFFIX` answering `ip`.
pub async fn add_dns_record(
    core: &Core,
    ctx: AuditCtx,
    name: &str,
    ip: &str,
) -> Result<DnsSettings, ServiceError> {
    let r = check_record(name, ip)?;
    change(core, ctx, "dns.record_add", |cur| Ok(add_record(cur, r)?)).await
}

/// Removes every record of `name`; NotFound when there is none.
pub async fn remove_dns_record(
    core: &Core,
    ctx: AuditCtx,
    name: &str,
) -> Result<DnsSettings, ServiceError> {
    let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
    change(core, ctx, "dns.record_remove", |cur| {
        let mut new = cur.clone();
        new.records.retain(|r| r.name != n);
        if new.records.len() == cur.records.len() {
            return Err(ServiceError::NotFound { what: "dns record" });
        }
        Ok(new)
    })
    .await
}

/// Adds or replaces the split-DNS entry for `domain`.
pub async fn put_split_dns(
    core: &Core,
    ctx: AuditCtx,
    domain: &str,
    resolvers: &[String],
) -> Result<DnsSettings, ServiceError> {
    let net = core.store.get_network(core.network_id).await?;
    let s = check_split(&net, domain, resolvers)?;
    change(core, ctx, "dns.split_set", |cur| {
        let ours = cur.suffix.clone().unwrap_or_else(|| suffix(&net));
        if s.domain == ours || s.domain.ends_with(&format!(".{ours}")) {
            return Err(DomainError::invalid(
                "domain",
                format!("{} is under the suffix {ours}", s.domain),
            )
            .into());
        }
        Ok(put_split(cur, s)?)
    })
    .await
}

/// Removes the split-DNS entry for `domain`; NotFound when there is none.
pub async fn remove_split_dns(
    core: &Core,
    ctx: AuditCtx,
    domain: &str,
) -> Result<DnsSettings, ServiceError> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    change(core, ctx, "dns.split_remove", |cur| {
        let mut new = cur.clone();
        new.split.retain(|e| e.domain != d);
        if new.split.len() == cur.split.len() {
            return Err(ServiceError::NotFound {
                what: "split-DNS domain",
            });
        }
        Ok(new)
    })
    .await
}
