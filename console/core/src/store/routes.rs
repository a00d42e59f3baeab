//! Advertised routes (subnet routers, exit nodes): the prefixes each device's agent
//! offers, which of them are approved and by whom, and the approved ones per device for
//! the network snapshot (the policy engine's `InvDevice::routes`).
//!
//! Only the approved set is visible to peers, so only a change of it bumps the network
//! revision; a new advertisement that approves nothing is recorded and audited without
//! waking every stream.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use zmesh_shared::{DeviceId, NetworkId};

use super::audit::{append, AuditCtx, Change};
use super::devices::fetch_device;
use super::networks::bump_revision;
use super::{parse_col, Store, StoreError};

/// Approved routes by device (only devices that have some), each list sorted.
pub type ApprovedRoutes = BTreeMap<DeviceId, Vec<IpNet>>;

/// The actor recorded for approvals the policy's `auto_approvers` make.
pub const POLICY_ACTOR: &str = "policy";

/// One advertised route as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RouteRow {
    pub device_id: DeviceId,
    pub device_name: String,
    /// Canonical prefix: `10.1.0.0/24`; `0.0.0.0/0` and `::/0` for an exit node.
    #[schema(value_type = String, example = "10.1.0.0/24")]
    pub prefix: IpNet,
    pub advertised_at_ms: i64,
    /// When it was approved; `None`: advertised only, it carries nothing.
    pub approved_at_ms: Option<i64>,
    /// `admin:<name>`, `user:<name>`, or `policy` (`auto_approvers`).
    pub approved_by: Option<String>,
}

/// What replacing a device's advertised set did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertised {
    /// The advertised set differs from the one stored before.
    pub changed: bool,
    /// Prefixes approved by the policy in this call.
    pub auto_approved: Vec<IpNet>,
    /// Approved prefixes the device no longer offers (their approval went with them).
    pub withdrawn: Vec<IpNet>,
}

impl Advertised {
    /// Whether peers can see the change (the approved set moved).
    pub fn approved_changed(&self) -> bool {
        !self.auto_approved.is_empty() || !self.withdrawn.is_empty()
    }
}

const ROUTE_COLS: &str =
    "r.device_id, d.name, r.prefix, r.advertised_at_ms, r.approved_at_ms, r.approved_by";

fn route_from_row(r: &AnyRow) -> Result<RouteRow, StoreError> {
    Ok(RouteRow {
        device_id: parse_col(r, "device_id")?,
        device_name: r.try_get("name")?,
        prefix: parse_col(r, "prefix")?,
        advertised_at_ms: r.try_get("advertised_at_ms")?,
        approved_at_ms: r.try_get("approved_at_ms")?,
        approved_by: r.try_get("approved_by")?,
    })
}

async fn routes_in(
    tx: &mut Transaction<'static, Any>,
    device: DeviceId,
) -> Result<Vec<RouteRow>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {ROUTE_COLS} FROM device_routes r JOIN devices d ON d.id = r.device_id \
         WHERE r.device_id = $1"
    ))
    .bind(device.to_string())
    .fetch_all(&mut **tx)
    .await?;
    let mut v = rows
        .iter()
        .map(route_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    v.sort_by_key(|r| r.prefix);
    Ok(v)
}

/// The approved routes of the network's devices, for its snapshot.
pub(super) async fn approved_in(
    tx: &mut Transaction<'static, Any>,
    net: NetworkId,
) -> Result<ApprovedRoutes, StoreError> {
    let rows = sqlx::query(
        "SELECT r.device_id, r.prefix FROM device_routes r JOIN devices d ON d.id = r.device_id \
         WHERE d.network_id = $1 AND r.approved_at_ms IS NOT NULL",
    )
    .bind(net.to_string())
    .fetch_all(&mut **tx)
    .await?;
    let mut out = ApprovedRoutes::new();
    for r in &rows {
        let id: DeviceId = parse_col(r, "device_id")?;
        let prefix: IpNet = parse_col(r, "prefix")?;
        out.entry(id).or_default().push(prefix);
    }
    // sorted, so two snapshots of the same state compare equal (quick path, views)
    for v in out.values_mut() {
        v.sort();
    }
    Ok(out)
}

impl Store {
    /// Every advertised route of the network's devices that are not revoked (a revoked
    /// device never comes back, so its routes mean nothing), by device name then prefix.
    pub async fn list_routes(&self, net: NetworkId) -> Result<Vec<RouteRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ROUTE_COLS} FROM device_routes r JOIN devices d ON d.id = r.device_id \
             WHERE d.network_id = $1 AND d.state <> 'revoked'"
        ))
        .bind(net.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut v = rows
            .iter()
            .map(route_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        v.sort_by(|a, b| {
            (a.device_name.to_lowercase(), a.prefix).cmp(&(b.device_name.to_lowercase(), b.prefix))
        });
        Ok(v)
    }

    /// The routes one device advertises.
    pub async fn device_routes(&self, device: DeviceId) -> Result<Vec<RouteRow>, StoreError> {
        let mut tx = self.begin_snapshot().await?;
        let v = routes_in(&mut tx, device).await?;
        tx.commit().await?;
        Ok(v)
    }

    /// Replaces the device's advertised set with `prefixes` (already validated and
    /// canonical): prefixes still offered keep their approval, the others go with
    /// theirs; those of `auto` (the policy's `auto_approvers` verdict) not yet approved
    /// are approved with actor [`POLICY_ACTOR`]. Audited as `route.advertise` (by the
    /// acting device, when the set changed) and one `route.approve` per auto-approval;
    /// the revision moves only when the approved set did.
    pub async fn set_advertised_routes(
        &self,
        device: DeviceId,
        prefixes: &[IpNet],
        auto: &[IpNet],
        now_ms: i64,
    ) -> Result<Advertised, StoreError> {
        let new: BTreeSet<IpNet> = prefixes.iter().copied().collect();
        let mut tx = self.begin_write().await?;
        let dev = fetch_device(&mut tx, device).await?;
        let cur = routes_in(&mut tx, device).await?;
        let old: BTreeSet<IpNet> = cur.iter().map(|r| r.prefix).collect();
        let mut out = Advertised {
            changed: old != new,
            ..Default::default()
        };
        for r in cur.iter().filter(|r| !new.contains(&r.prefix)) {
            sqlx::query("DELETE FROM device_routes WHERE device_id = $1 AND prefix = $2")
                .bind(device.to_string())
                .bind(r.prefix.to_string())
                .execute(&mut *tx)
                .await?;
            if r.approved_at_ms.is_some() {
                out.withdrawn.push(r.prefix);
            }
        }
        for p in new.difference(&old) {
            sqlx::query(
                "INSERT INTO device_routes (device_id, prefix, advertised_at_ms) VALUES ($1, $2, $3)",
            )
            .bind(device.to_string())
            .bind(p.to_string())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        let approved: BTreeSet<IpNet> = cur
            .iter()
            .filter(|r| r.approved_at_ms.is_some())
            .map(|r| r.prefix)
            .collect();
        for p in auto
            .iter()
            .filter(|p| new.contains(p) && !approved.contains(p))
        {
            set_approval(&mut tx, device, p, Some((now_ms, POLICY_ACTOR))).await?;
            out.auto_approved.push(*p);
        }
        out.auto_approved.sort();
        out.auto_approved.dedup();
        if out.approved_changed() {
            bump_revision(&mut tx, dev.network_id).await?;
        }
        // audit events last (they take the chain head's lock)
        let target = format!("device:{device}");
        if out.changed {
            let c = Change::new("route.advertise", target.clone())
                .before(&serde_json::json!({ "routes": old }))
                .after(&serde_json::json!({ "routes": new, "withdrawn": out.withdrawn }));
            append(&mut tx, &self.audit, c).await?;
        }
        let policy = AuditCtx::new(POLICY_ACTOR, None);
        for p in &out.auto_approved {
            let c = Change::new("route.approve", target.clone()).after(&serde_json::json!({
                "device": dev.name, "prefix": p, "approved_by": POLICY_ACTOR,
            }));
            append(&mut tx, &policy, c).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Approves (`approve`) or withdraws the approval of one advertised prefix, as the
    /// acting admin (`route.approve` / `route.unapprove`, revision bump). A prefix the
    /// device does not advertise is refused (`Invalid` on `prefix`); one already in the
    /// wanted state is returned unchanged, with no event.
    pub async fn set_route_approval(
        &self,
        device: DeviceId,
        prefix: IpNet,
        approve: bool,
        now_ms: i64,
    ) -> Result<RouteRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let dev = fetch_device(&mut tx, device).await?;
        let cur = routes_in(&mut tx, device)
            .await?
            .into_iter()
            .find(|r| r.prefix == prefix)
            .ok_or_else(|| {
                StoreError::invalid(
                    "prefix",
                    format!("{} does not advertise {prefix}", dev.name),
                )
            })?;
        if cur.approved_at_ms.is_some() == approve {
            return Ok(cur);
        }
        let by = approve.then_some((now_ms, self.audit.actor.as_str()));
        set_approval(&mut tx, device, &prefix, by).await?;
        bump_revision(&mut tx, dev.network_id).await?;
        let row = routes_in(&mut tx, device)
            .await?
            .into_iter()
            .find(|r| r.prefix == prefix)
            .ok_or(StoreError::NotFound { what: "route" })?;
        let action = if approve {
            "route.approve"
        } else {
            "route.unapprove"
        };
        let c = Change::new(action, format!("device:{device}"))
            .before(&cur)
            .after(&row);
        append(&mut tx, &self.audit, c).await?;
        tx.commit().await?;
        Ok(row)
    }
}

impl Store {
    /// Approves, with actor [`POLICY_ACTOR`], those of `routes` still advertised and not
    /// yet approved (the policy's `auto_approvers` changed, or a device they name became
    /// active): one `route.approve` event each, one revision bump if any. Returns them.
    pub async fn approve_routes_by_policy(
        &self,
        net: NetworkId,
        routes: &[(DeviceId, IpNet)],
        now_ms: i64,
    ) -> Result<Vec<(DeviceId, IpNet)>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut done = Vec::new();
        for (d, p) in routes {
            let r = sqlx::query(
                "UPDATE device_routes SET approved_at_ms = $3, approved_by = $4 \
                 WHERE device_id = $1 AND prefix = $2 AND approved_at_ms IS NULL",
            )
            .bind(d.to_string())
            .bind(p.to_string())
            .bind(now_ms)
            .bind(POLICY_ACTOR)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() > 0 {
                done.push((*d, *p));
            }
        }
        if done.is_empty() {
            return Ok(done);
        }
        bump_revision(&mut tx, net).await?;
        let policy = AuditCtx::new(POLICY_ACTOR, None);
        for (d, p) in &done {
            let c = Change::new("route.approve", format!("device:{d}"))
                .after(&serde_json::json!({ "prefix": p, "approved_by": POLICY_ACTOR }));
            append(&mut tx, &policy, c).await?;
        }
        tx.commit().await?;
        Ok(done)
    }
}

/// Sets (`Some((when, by))`) or clears the approval of one row.
async fn set_approval(
    tx: &mut Transaction<'static, Any>,
    device: DeviceId,
    prefix: &IpNet,
    by: Option<(i64, &str)>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE device_routes SET approved_at_ms = $3, approved_by = $4 \
         WHERE device_id = $1 AND prefix = $2",
    )
    .bind(device.to_string())
    .bind(prefix.to_string())
    .bind(by.map(|b| b.0))
    .bind(by.map(|b| b.1.to_string()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
