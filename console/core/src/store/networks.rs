//! Networks: the first network ("default"), the others admins create, list, change and
//! delete (each change one transaction with its audit event), revisions, overlay
//! address allocation and snapshots.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use rand::RngCore;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use zmesh_shared::NetworkId;

use super::devices::{device_from_row, DEVICE_COLS};
use super::{parse_col, to_json, Network, NetworkDns, NetworkSnapshot, Store, StoreError};

pub(crate) const NETWORK_COLS: &str =
    "id, name, prefix_v4, prefix_v6, revision, created_at_ms, dns_suffix, dns_records, dns_split, exclusive";

/// The first network's name (made on first start; never deleted).
pub const FIRST_NETWORK: &str = "default";
/// The CGNAT range, which Tailscale-style overlays use because LANs rarely do: the
/// first network's default range.
pub const FIRST_V4: &str = "100.64.0.0/10";
const DEFAULT_NAME: &str = FIRST_NETWORK;
const DEFAULT_V4: &str = FIRST_V4;

/// A network to create, its ranges already chosen and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNetwork {
    pub name: String,
    pub v4: Ipv4Net,
    pub v6: Ipv6Net,
    pub dns_suffix: Option<String>,
    pub exclusive: bool,
}

/// A network with how many devices (in every state) it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkCount {
    pub network: Network,
    pub devices: u64,
}

pub(crate) fn network_from_row(r: &AnyRow) -> Result<Network, StoreError> {
    let revision: i64 = r.try_get("revision")?;
    Ok(Network {
        id: parse_col(r, "id")?,
        name: r.try_get("name")?,
        prefix_v4: parse_col(r, "prefix_v4")?,
        prefix_v6: parse_col(r, "prefix_v6")?,
        revision: u64::try_from(revision).map_err(|e| StoreError::corrupt("revision", e))?,
        created_at_ms: r.try_get("created_at_ms")?,
        dns_suffix: r.try_get("dns_suffix")?,
        dns_records: opt_json(r, "dns_records")?,
        dns_split: opt_json(r, "dns_split")?,
        exclusive: r.try_get::<i64, _>("exclusive")? != 0,
    })
}

/// A JSON list column where NULL means empty.
fn opt_json<T: serde::de::DeserializeOwned>(r: &AnyRow, col: &str) -> Result<Vec<T>, StoreError> {
    let s: Option<String> = r.try_get(col)?;
    match s {
        None => Ok(vec![]),
        Some(s) => serde_json::from_str(&s).map_err(|e| StoreError::corrupt(col, e)),
    }
}

/// A random ULA /48 (fdxx:xxxx:xxxx::/48, RFC 4193), so two consoles' networks differ.
fn random_ula48() -> Ipv6Net {
    let mut b = [0u8; 16];
    b[0] = 0xfd;
    rand::thread_rng().fill_bytes(&mut b[1..6]);
    for x in &mut b[6..] {
        *x = 0;
    }
    Ipv6Net::new(Ipv6Addr::from(b), 48).expect("48 is a valid prefix length")
}

/// The overlay addresses of host number `host` (1-based) in a network.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allocation {
    pub host: i64,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub revision: i64,
}

/// The largest host number both prefixes can hold (v4 skips network and broadcast).
fn max_host(v4: &Ipv4Net, v6: &Ipv6Net) -> i64 {
    let v4_hosts = (1u64 << (32 - u32::from(v4.prefix_len()))).saturating_sub(2);
    let v6_bits = 128 - u32::from(v6.prefix_len());
    let v6_hosts = if v6_bits >= 63 {
        i64::MAX as u64
    } else {
        (1u64 << v6_bits) - 1
    };
    v4_hosts.min(v6_hosts).min(i64::MAX as u64) as i64
}

fn addresses(v4: &Ipv4Net, v6: &Ipv6Net, host: i64) -> (Ipv4Addr, Ipv6Addr) {
    let a4 = Ipv4Addr::from(u32::from(v4.network()).wrapping_add(host as u32));
    let a6 = Ipv6Addr::from(u128::from(v6.network()).wrapping_add(host as u128));
    (a4, a6)
}

/// Bumps the network revision; returns the new one. `NotFound` if the network is gone.
pub(crate) async fn bump_revision(
    tx: &mut Transaction<'static, Any>,
    net: NetworkId,
) -> Result<i64, StoreError> {
    let row =
        sqlx::query("UPDATE networks SET revision = revision + 1 WHERE id = $1 RETURNING revision")
            .bind(net.to_string())
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::NotFound { what: "network" })?;
    Ok(row.try_get("revision")?)
}

/// Takes the next host number and bumps the revision in one statement. On PostgreSQL the
/// UPDATE locks the network row until commit, which serialises enrollments per network
/// (SQLite serialises all writers anyway), so the name and address checks that follow
/// in the same transaction cannot race. Numbers are handed out in order and not reused
/// while the counter has room (a deleted device's address is not given to a newcomer
/// soon after); once the counter passes the end, the lowest free number is searched.
pub(crate) async fn allocate(
    tx: &mut Transaction<'static, Any>,
    net: NetworkId,
) -> Result<Allocation, StoreError> {
    let row = sqlx::query(
        "UPDATE networks SET revision = revision + 1, next_host = next_host + 1 \
         WHERE id = $1 RETURNING revision, next_host, prefix_v4, prefix_v6",
    )
    .bind(net.to_string())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound { what: "network" })?;
    let v4: Ipv4Net = parse_col(&row, "prefix_v4")?;
    let v6: Ipv6Net = parse_col(&row, "prefix_v6")?;
    let revision: i64 = row.try_get("revision")?;
    let next: i64 = row.try_get("next_host")?;
    let max = max_host(&v4, &v6);
    let host = if next > 1 && next - 1 <= max {
        next - 1
    } else {
        lowest_free_host(tx, net, max).await?
    };
    let (a4, a6) = addresses(&v4, &v6, host);
    Ok(Allocation {
        host,
        v4: a4,
        v6: a6,
        revision,
    })
}

async fn lowest_free_host(
    tx: &mut Transaction<'static, Any>,
    net: NetworkId,
    max: i64,
) -> Result<i64, StoreError> {
    let rows = sqlx::query("SELECT host_num FROM devices WHERE network_id = $1 ORDER BY host_num")
        .bind(net.to_string())
        .fetch_all(&mut **tx)
        .await?;
    let mut want = 1i64;
    for r in rows {
        let h: i64 = r.try_get("host_num")?;
        if h > want {
            break;
        }
        want = want.max(h + 1);
    }
    if want > max {
        return Err(StoreError::AddressSpaceExhausted);
    }
    Ok(want)
}

impl Store {
    /// Changes the network's names (suffix, extra records, split DNS) in one
    /// transaction: `change` gets the current ones and returns the new ones (already
    /// checked by the domain) or refuses; a change is audited as `action` and bumps the
    /// revision, so every agent's map carries it. `Ok(Err(_))`: refused, nothing written.
    pub async fn update_dns<E>(
        &self,
        net: NetworkId,
        action: &'static str,
        change: impl FnOnce(&NetworkDns) -> Result<NetworkDns, E>,
    ) -> Result<Result<Network, E>, StoreError> {
        let mut tx = self.begin_write().await?;
        // First: locks the network row on PostgreSQL until commit.
        bump_revision(&mut tx, net).await?;
        let select = format!("SELECT {NETWORK_COLS} FROM networks WHERE id = $1");
        let before = network_from_row(
            &sqlx::query(&select)
                .bind(net.to_string())
                .fetch_one(&mut *tx)
                .await?,
        )?;
        let cur = NetworkDns::of(&before);
        let new = match change(&cur) {
            Ok(n) => n,
            Err(e) => {
                tx.rollback().await?;
                return Ok(Err(e));
            }
        };
        if new == cur {
            tx.rollback().await?;
            return Ok(Ok(self.get_network(net).await?));
        }
        if let Some(s) = &new.suffix {
            super::devices::check_text("suffix", Some(s), 253)?;
        }
        let list = |v: String| (v != "[]").then_some(v);
        sqlx::query(
            "UPDATE networks SET dns_suffix = $2, dns_records = $3, dns_split = $4 WHERE id = $1",
        )
        .bind(net.to_string())
        .bind(new.suffix.as_deref())
        .bind(list(to_json(&new.records)))
        .bind(list(to_json(&new.split)))
        .execute(&mut *tx)
        .await?;
        let c = super::audit::Change::new(action, format!("network:{net}"))
            .before(&cur)
            .after(&new);
        super::audit::append(&mut tx, &self.audit, c).await?;
        let after = network_from_row(
            &sqlx::query(&select)
                .bind(net.to_string())
                .fetch_one(&mut *tx)
                .await?,
        )?;
        tx.commit().await?;
        Ok(Ok(after))
    }

    /// The network named "default", created on first call (100.64.0.0/10 and a random
    /// ULA /48). Replicas racing to create it all end up with the same row.
    pub async fn default_network(&self) -> Result<Network, StoreError> {
        self.first_network(None, None).await
    }

    /// The network named "default", created on first call with these ranges (`None`:
    /// 100.64.0.0/10, a random ULA /48). An existing one keeps its stored ranges.
    pub async fn first_network(
        &self,
        v4: Option<Ipv4Net>,
        v6: Option<Ipv6Net>,
    ) -> Result<Network, StoreError> {
        let select = format!("SELECT {NETWORK_COLS} FROM networks WHERE name = $1");
        if let Some(r) = sqlx::query(&select)
            .bind(DEFAULT_NAME)
            .fetch_optional(&self.pool)
            .await?
        {
            return network_from_row(&r);
        }
        sqlx::query(
            "INSERT INTO networks (id, name, prefix_v4, prefix_v6, revision, next_host, created_at_ms) \
             VALUES ($1, $2, $3, $4, 0, 1, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(NetworkId::new().to_string())
        .bind(DEFAULT_NAME)
        .bind(v4.map_or_else(|| DEFAULT_V4.to_string(), |n| n.to_string()))
        .bind(v6.unwrap_or_else(random_ula48).to_string())
        .bind(zmesh_shared::time::now_ms())
        .execute(&self.pool)
        .await?;
        let r = sqlx::query(&select)
            .bind(DEFAULT_NAME)
            .fetch_one(&self.pool)
            .await?;
        network_from_row(&r)
    }

    pub async fn get_network(&self, id: NetworkId) -> Result<Network, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {NETWORK_COLS} FROM networks WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound { what: "network" })?;
        network_from_row(&r)
    }

    /// The network with this name, if any.
    pub async fn network_by_name(&self, name: &str) -> Result<Option<Network>, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {NETWORK_COLS} FROM networks WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(network_from_row).transpose()
    }

    /// Every network with its number of devices, oldest first (the first network first).
    pub async fn list_networks(&self) -> Result<Vec<NetworkCount>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {NETWORK_COLS}, (SELECT COUNT(*) FROM devices d WHERE d.network_id = networks.id) AS n \
             FROM networks ORDER BY created_at_ms, name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get("n")?;
                Ok(NetworkCount {
                    network: network_from_row(r)?,
                    devices: n.max(0) as u64,
                })
            })
            .collect()
    }

    /// Creates a network in one transaction with its `network.create` event: `check`
    /// gets every existing network (read under a lock, so two creations cannot both
    /// pass an overlap check) and returns what to create or refuses. `Ok(Err(_))`:
    /// refused, nothing written.
    pub async fn create_network<E>(
        &self,
        check: impl FnOnce(&[Network]) -> Result<NewNetwork, E>,
    ) -> Result<Result<Network, E>, StoreError> {
        let mut tx = self.begin_write().await?;
        // serialises creations on PostgreSQL (the first network's row stays locked)
        sqlx::query("UPDATE networks SET revision = revision WHERE name = $1")
            .bind(DEFAULT_NAME)
            .execute(&mut *tx)
            .await?;
        let all = sqlx::query(&format!(
            "SELECT {NETWORK_COLS} FROM networks ORDER BY name"
        ))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(network_from_row)
        .collect::<Result<Vec<_>, _>>()?;
        let new = match check(&all) {
            Ok(n) => n,
            Err(e) => {
                tx.rollback().await?;
                return Ok(Err(e));
            }
        };
        if all.iter().any(|n| n.name == new.name) {
            tx.rollback().await?;
            return Err(StoreError::Conflict {
                field: "name",
                reason: format!("a network named {:?} already exists", new.name),
            });
        }
        if let Some(s) = &new.dns_suffix {
            super::devices::check_text("dns_suffix", Some(s), 253)?;
        }
        let id = NetworkId::new();
        sqlx::query(
            "INSERT INTO networks (id, name, prefix_v4, prefix_v6, revision, next_host, created_at_ms, dns_suffix, exclusive) \
             VALUES ($1, $2, $3, $4, 0, 1, $5, $6, $7)",
        )
        .bind(id.to_string())
        .bind(&new.name)
        .bind(new.v4.to_string())
        .bind(new.v6.to_string())
        .bind(zmesh_shared::time::now_ms())
        .bind(new.dns_suffix.as_deref())
        .bind(i64::from(new.exclusive))
        .execute(&mut *tx)
        .await?;
        let net = fetch_network(&mut tx, id).await?;
        let ctx = self.audit.as_ref().clone().in_network(id);
        let c = super::audit::Change::new("network.create", format!("network:{id}")).after(&net);
        super::audit::append(&mut tx, &ctx, c).await?;
        tx.commit().await?;
        Ok(Ok(net))
    }

    /// Sets whether a network is exclusive: bumps its revision (agents get a delta
    /// with the network's new rule) and records `network.update`, in one transaction.
    /// Unchanged: nothing is written. Returns the network after.
    pub async fn set_network_exclusive(
        &self,
        id: NetworkId,
        exclusive: bool,
    ) -> Result<Network, StoreError> {
        let mut tx = self.begin_write().await?;
        let before = fetch_network(&mut tx, id).await?;
        if before.exclusive == exclusive {
            tx.rollback().await?;
            return Ok(before);
        }
        bump_revision(&mut tx, id).await?;
        sqlx::query("UPDATE networks SET exclusive = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(i64::from(exclusive))
            .execute(&mut *tx)
            .await?;
        let after = fetch_network(&mut tx, id).await?;
        let ctx = self.audit.as_ref().clone().in_network(id);
        let c = super::audit::Change::new("network.update", format!("network:{id}"))
            .before(&serde_json::json!({"exclusive": before.exclusive}))
            .after(&serde_json::json!({"exclusive": after.exclusive}));
        super::audit::append(&mut tx, &ctx, c).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Deletes a network (never the first), its keys, policy versions and rollouts;
    /// one that still has devices only with `force`, which deletes them in the same
    /// transaction. Records `network.delete` with the network and the deleted devices'
    /// names. Returns how many devices went.
    pub async fn delete_network(&self, id: NetworkId, force: bool) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let net = fetch_network(&mut tx, id).await?;
        if net.name == DEFAULT_NAME {
            tx.rollback().await?;
            return Err(StoreError::Conflict {
                field: "name",
                reason: "the first network (\"default\") cannot be deleted".into(),
            });
        }
        let names: Vec<String> =
            sqlx::query("SELECT name FROM devices WHERE network_id = $1 ORDER BY name")
                .bind(id.to_string())
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get("name"))
                .collect::<Result<_, _>>()?;
        if !names.is_empty() && !force {
            tx.rollback().await?;
            return Err(StoreError::Conflict {
                field: "force",
                reason: format!(
                    "network {:?} still has {} device(s); delete them first or use force",
                    net.name,
                    names.len()
                ),
            });
        }
        sqlx::query("DELETE FROM devices WHERE network_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM networks WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let ctx = self.audit.as_ref().clone().in_network(id);
        let c = super::audit::Change::new("network.delete", format!("network:{id}"))
            .before(&serde_json::json!({"network": net, "devices": names}));
        super::audit::append(&mut tx, &ctx, c).await?;
        tx.commit().await?;
        Ok(names.len() as u64)
    }

    /// Every network's id and revision (for the metrics scrape), by id.
    pub async fn network_revisions(&self) -> Result<Vec<(NetworkId, u64)>, StoreError> {
        let rows = sqlx::query("SELECT id, revision FROM networks ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let rev: i64 = r.try_get("revision")?;
                Ok((parse_col(r, "id")?, rev.max(0) as u64))
            })
            .collect()
    }

    /// The network, all its devices (every state), their approved routes and its policy,
    /// consistent with its revision.
    pub async fn network_snapshot(&self, net: NetworkId) -> Result<NetworkSnapshot, StoreError> {
        let mut tx = self.begin_snapshot().await?;
        let r = sqlx::query(&format!(
            "SELECT {NETWORK_COLS} FROM networks WHERE id = $1"
        ))
        .bind(net.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound { what: "network" })?;
        let network = network_from_row(&r)?;
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE network_id = $1 ORDER BY id"
        ))
        .bind(net.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let policy = super::policies::current_in(&mut tx, net).await?;
        let owner_groups = super::sso::owner_groups_in(&mut tx).await?;
        let routes = super::routes::approved_in(&mut tx, net).await?;
        tx.commit().await?;
        let devices = rows
            .iter()
            .map(device_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NetworkSnapshot {
            network,
            devices,
            policy,
            owner_groups,
            routes,
        })
    }
}

async fn fetch_network(
    tx: &mut Transaction<'static, Any>,
    id: NetworkId,
) -> Result<Network, StoreError> {
    let r = sqlx::query(&format!(
        "SELECT {NETWORK_COLS} FROM networks WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound { what: "network" })?;
    network_from_row(&r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_numbers_map_into_both_prefixes() {
        let v4: Ipv4Net = DEFAULT_V4.parse().unwrap();
        let v6: Ipv6Net = "fd12:3456:789a::/48".parse().unwrap();
        assert_eq!(max_host(&v4, &v6), (1 << 22) - 2);
        let (a, b) = addresses(&v4, &v6, 1);
        assert_eq!(a, Ipv4Addr::new(100, 64, 0, 1));
        assert_eq!(b, "fd12:3456:789a::1".parse::<Ipv6Addr>().unwrap());
        let (a, _) = addresses(&v4, &v6, 256);
        assert_eq!(a, Ipv4Addr::new(100, 64, 1, 0));
        let (a, _) = addresses(&v4, &v6, max_host(&v4, &v6));
        assert_eq!(a, Ipv4Addr::new(100, 127, 255, 254));
        let small: Ipv4Net = "10.0.0.0/30".parse().unwrap();
        assert_eq!(max_host(&small, &v6), 2);
        let ula = random_ula48();
        assert_eq!(ula.prefix_len(), 48);
        assert_eq!(ula.network().octets()[0], 0xfd);
    }
}
