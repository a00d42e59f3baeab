//! Devices: enrollment (key check, name, addresses, revision in one transaction),
//! agentless peers, lookups, and the admin and agent mutations.

use std::collections::HashSet;
use std::net::SocketAddr;

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use zmesh_shared::wire::DeviceState;
use zmesh_shared::{DeviceId, EnrollKeyId, NetworkId, WgPublicKey};

use super::audit::{append, Change};
use super::enroll_keys::{check_hash, enroll_key_from_row, ENROLL_KEY_COLS};
use super::error::{unique_violation, Violation};
use super::networks::{allocate, bump_revision, Allocation};
use super::validate::first_free_name;
use super::{bool_col, json_col, opt_parse_col, parse_col, to_json};
use super::{
    derive_name_base, normalize_tags, validate_name, DeviceRow, EnrollDevice, EnrollKeyRejection,
    NewAgentlessDevice, Store, StoreError,
};

pub(crate) const DEVICE_COLS: &str = "id, network_id, name, owner, tags, public_key, overlay_v4, overlay_v6, \
     state, agentless, hostname, os, endpoints, key_expires_at_ms, created_at_ms, last_seen_ms, enroll_key_id, agent_version";

/// A transaction that hit a unique index on addresses (only possible if rows were
/// edited behind the store's back) is retried this many times in all.
const MAX_ATTEMPTS: usize = 4;
/// Endpoints an agent may report at once.
const MAX_ENDPOINTS: usize = 32;

pub(crate) fn device_from_row(r: &AnyRow) -> Result<DeviceRow, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(DeviceRow {
        id: parse_col(r, "id")?,
        network_id: parse_col(r, "network_id")?,
        name: r.try_get("name")?,
        owner: r.try_get("owner")?,
        tags: json_col(r, "tags")?,
        public_key: parse_col(r, "public_key")?,
        overlay_v4: parse_col(r, "overlay_v4")?,
        overlay_v6: parse_col(r, "overlay_v6")?,
        state: DeviceState::parse(&state).ok_or_else(|| StoreError::corrupt("state", &state))?,
        agentless: bool_col(r, "agentless")?,
        hostname: r.try_get("hostname")?,
        os: r.try_get("os")?,
        endpoints: json_col(r, "endpoints")?,
        key_expires_at_ms: r.try_get("key_expires_at_ms")?,
        created_at_ms: r.try_get("created_at_ms")?,
        last_seen_ms: r.try_get("last_seen_ms")?,
        enroll_key_id: opt_parse_col(r, "enroll_key_id")?,
        agent_version: r.try_get("agent_version")?,
    })
}

/// Everything needed to insert one device row.
pub(super) struct Insert<'a> {
    pub(super) id: DeviceId,
    pub(super) network_id: NetworkId,
    pub(super) name: &'a str,
    pub(super) owner: &'a str,
    pub(super) tags: &'a [String],
    pub(super) public_key: WgPublicKey,
    pub(super) alloc: Allocation,
    pub(super) state: DeviceState,
    pub(super) agentless: bool,
    pub(super) hostname: Option<&'a str>,
    pub(super) os: Option<&'a str>,
    pub(super) created_at_ms: i64,
    pub(super) enroll_key_id: Option<EnrollKeyId>,
    pub(super) credential_hash: Option<&'a str>,
    /// `None`: the key never expires.
    pub(super) key_expires_at_ms: Option<i64>,
}

pub(super) async fn insert_device(
    tx: &mut Transaction<'static, Any>,
    d: &Insert<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO devices (id, network_id, name, owner, tags, public_key, host_num, overlay_v4, overlay_v6, \
         state, agentless, hostname, os, endpoints, key_expires_at_ms, created_at_ms, last_seen_ms, \
         enroll_key_id, credential_hash, revoked_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $18, $15, NULL, $16, $17, NULL)",
    )
    .bind(d.id.to_string())
    .bind(d.network_id.to_string())
    .bind(d.name)
    .bind(d.owner)
    .bind(to_json(&d.tags))
    .bind(d.public_key.to_string())
    .bind(d.alloc.host)
    .bind(d.alloc.v4.to_string())
    .bind(d.alloc.v6.to_string())
    .bind(d.state.as_str())
    .bind(i64::from(d.agentless))
    .bind(d.hostname.map(str::to_string))
    .bind(d.os.map(str::to_string))
    .bind("[]")
    .bind(d.created_at_ms)
    .bind(d.enroll_key_id.map(|k| k.to_string()))
    .bind(d.credential_hash.map(str::to_string))
    .bind(d.key_expires_at_ms)
    .execute(&mut **tx)
    .await
    .map_err(|e| match unique_violation(&e) {
        Some(Violation::PublicKey) => StoreError::PublicKeyTaken,
        Some(Violation::Name) => StoreError::NameTaken { name: d.name.to_string() },
        _ => StoreError::Db(e),
    })?;
    Ok(())
}

pub(super) async fn public_key_taken(
    tx: &mut Transaction<'static, Any>,
    pk: &WgPublicKey,
) -> Result<bool, StoreError> {
    Ok(sqlx::query("SELECT id FROM devices WHERE public_key = $1")
        .bind(pk.to_string())
        .fetch_optional(&mut **tx)
        .await?
        .is_some())
}

/// Whether another device of the network has this name (case-insensitive).
pub(super) async fn name_taken(
    tx: &mut Transaction<'static, Any>,
    net: NetworkId,
    name: &str,
    except: Option<DeviceId>,
) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "SELECT id FROM devices WHERE network_id = $1 AND lower(name) = lower($2) AND id <> $3",
    )
    .bind(net.to_string())
    .bind(name)
    .bind(except.map(|d| d.to_string()).unwrap_or_default())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.is_some())
}

/// `base` or the first free `base-N`; one query for all names of that shape.
pub(super) async fn free_derived_name(
    tx: &mut Transaction<'static, Any>,
    net: NetworkId,
    base: &str,
) -> Result<String, StoreError> {
    // the common case, a new hostname, is one indexed lookup; the LIKE below scans
    if !name_taken(tx, net, base, None).await? {
        return Ok(base.to_string());
    }
    // `base` is [a-z0-9-] only, so it holds no LIKE wildcard
    let rows = sqlx::query(
        "SELECT lower(name) AS n FROM devices WHERE network_id = $1 AND (lower(name) = $2 OR lower(name) LIKE $3)",
    )
    .bind(net.to_string())
    .bind(base)
    .bind(format!("{base}-%"))
    .fetch_all(&mut **tx)
    .await?;
    let taken = rows
        .iter()
        .map(|r| r.try_get::<String, _>("n"))
        .collect::<Result<HashSet<_>, _>>()?;
    Ok(first_free_name(base, &taken))
}

pub(super) async fn fetch_device(
    tx: &mut Transaction<'static, Any>,
    id: DeviceId,
) -> Result<DeviceRow, StoreError> {
    let r = sqlx::query(&format!("SELECT {DEVICE_COLS} FROM devices WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound { what: "device" })?;
    device_from_row(&r)
}

/// Runs `attempt` again when it failed on a unique index other than name or public key.
pub(super) async fn with_retry<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut n = 0;
    loop {
        n += 1;
        match attempt().await {
            Err(StoreError::Db(e))
                if n < MAX_ATTEMPTS && unique_violation(&e) == Some(Violation::Other) =>
            {
                tracing::debug!(attempt = n, "unique violation on device insert; retrying");
            }
            r => return r,
        }
    }
}

impl Store {
    /// Redeems an enrollment key for a new device; see the contract in CONSOLE_SPEC.md.
    pub async fn enroll_device(&self, e: EnrollDevice) -> Result<DeviceRow, StoreError> {
        if let Some(n) = &e.name {
            validate_name(n)?;
        }
        check_hash("credential_hash", &e.credential_hash)?;
        if !is_hash(&e.secret_hash) {
            return Err(StoreError::EnrollKey(EnrollKeyRejection::Unknown));
        }
        check_text("hostname", e.hostname.as_deref(), 255)?;
        check_text("os", e.os.as_deref(), 255)?;
        with_retry(|| self.try_enroll(&e)).await
    }

    async fn try_enroll(&self, e: &EnrollDevice) -> Result<DeviceRow, StoreError> {
        let mut tx = self.begin_write().await?;
        // Counting the use first locks the key row on PostgreSQL, so two devices racing
        // for a one-off key are serialised and the second sees used_count > 1. A
        // rejection below drops `tx`, which rolls the count back.
        let key = sqlx::query(&format!(
            "UPDATE enroll_keys SET used_count = used_count + 1, last_used_at_ms = $2 \
             WHERE secret_hash = $1 RETURNING {ENROLL_KEY_COLS}"
        ))
        .bind(&e.secret_hash)
        .bind(e.now_ms)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::EnrollKey(EnrollKeyRejection::Unknown))?;
        let key = enroll_key_from_row(&key)?;
        if key.revoked_at_ms.is_some() {
            return Err(StoreError::EnrollKey(EnrollKeyRejection::Revoked));
        }
        if key.expires_at_ms.is_some_and(|t| t <= e.now_ms) {
            return Err(StoreError::EnrollKey(EnrollKeyRejection::Expired));
        }
        if !key.reusable && key.used_count > 1 {
            return Err(StoreError::EnrollKey(EnrollKeyRejection::Used));
        }
        if public_key_taken(&mut tx, &e.public_key).await? {
            return Err(StoreError::PublicKeyTaken);
        }
        let alloc = allocate(&mut tx, key.network_id).await?;
        let name = match &e.name {
            Some(n) => {
                if name_taken(&mut tx, key.network_id, n, None).await? {
                    return Err(StoreError::NameTaken { name: n.clone() });
                }
                n.clone()
            }
            None => {
                free_derived_name(
                    &mut tx,
                    key.network_id,
                    &derive_name_base(e.hostname.as_deref()),
                )
                .await?
            }
        };
        let id = DeviceId::new();
        insert_device(
            &mut tx,
            &Insert {
                id,
                network_id: key.network_id,
                name: &name,
                owner: &key.created_by,
                tags: &key.tags,
                public_key: e.public_key,
                alloc,
                state: if key.preapproved {
                    DeviceState::Active
                } else {
                    DeviceState::Pending
                },
                agentless: false,
                hostname: e.hostname.as_deref(),
                os: e.os.as_deref(),
                created_at_ms: e.now_ms,
                enroll_key_id: Some(key.id),
                credential_hash: Some(&e.credential_hash),
                key_expires_at_ms: None,
            },
        )
        .await?;
        let row = fetch_device(&mut tx, id).await?;
        // the holder of the enrollment key is the one acting
        let ctx = super::AuditCtx::new(
            format!("enroll_key:{}", key.id),
            self.audit.source_addr.clone(),
        );
        let mut used = Change::new("enroll_key.use", format!("enroll_key:{}", key.id))
            .in_network(key.network_id);
        used.before = Some(serde_json::json!({"used_count": key.used_count - 1}));
        used.after = Some(serde_json::json!({"used_count": key.used_count, "device_id": id}));
        append(&mut tx, &ctx, used).await?;
        append(
            &mut tx,
            &ctx,
            Change::new("device.enroll", format!("device:{id}")).after(&row),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(device_id = %id, network_id = %key.network_id, enroll_key_id = %key.id,
            revision = alloc.revision, "device enrolled");
        Ok(row)
    }

    /// Adds a stock WireGuard peer (no agent, no credential). Active at once.
    pub async fn add_agentless_device(
        &self,
        d: NewAgentlessDevice,
    ) -> Result<DeviceRow, StoreError> {
        validate_name(&d.name)?;
        let tags = normalize_tags(&d.tags)?;
        check_text("owner", Some(&d.owner), 255)?;
        with_retry(|| async {
            let mut tx = self.begin_write().await?;
            if public_key_taken(&mut tx, &d.public_key).await? {
                return Err(StoreError::PublicKeyTaken);
            }
            let alloc = allocate(&mut tx, d.network_id).await?;
            if name_taken(&mut tx, d.network_id, &d.name, None).await? {
                return Err(StoreError::NameTaken {
                    name: d.name.clone(),
                });
            }
            let id = DeviceId::new();
            insert_device(
                &mut tx,
                &Insert {
                    id,
                    network_id: d.network_id,
                    name: &d.name,
                    owner: &d.owner,
                    tags: &tags,
                    public_key: d.public_key,
                    alloc,
                    state: DeviceState::Active,
                    agentless: true,
                    hostname: None,
                    os: None,
                    created_at_ms: d.now_ms,
                    enroll_key_id: None,
                    credential_hash: None,
                    key_expires_at_ms: None,
                },
            )
            .await?;
            let row = fetch_device(&mut tx, id).await?;
            append(
                &mut tx,
                &self.audit,
                Change::new("device.add_agentless", format!("device:{id}")).after(&row),
            )
            .await?;
            tx.commit().await?;
            Ok(row)
        })
        .await
    }

    /// The network's devices in every state, by name.
    pub async fn list_devices(&self, net: NetworkId) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE network_id = $1 ORDER BY lower(name), id"
        ))
        .bind(net.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_from_row).collect()
    }

    pub async fn get_device(&self, id: DeviceId) -> Result<DeviceRow, StoreError> {
        let r = sqlx::query(&format!("SELECT {DEVICE_COLS} FROM devices WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { what: "device" })?;
        device_from_row(&r)
    }

    /// Case-insensitive lookup by name.
    pub async fn device_by_name(
        &self,
        net: NetworkId,
        name: &str,
    ) -> Result<DeviceRow, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE network_id = $1 AND lower(name) = lower($2)"
        ))
        .bind(net.to_string())
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound { what: "device" })?;
        device_from_row(&r)
    }

    /// The device holding this credential, unless unknown or revoked.
    pub async fn device_by_credential(
        &self,
        credential_hash: &str,
    ) -> Result<Option<DeviceRow>, StoreError> {
        if !is_hash(credential_hash) {
            return Ok(None);
        }
        let r = sqlx::query(&format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE credential_hash = $1 AND state <> 'revoked'"
        ))
        .bind(credential_hash)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(device_from_row).transpose()
    }

    pub async fn rename_device(&self, id: DeviceId, name: &str) -> Result<DeviceRow, StoreError> {
        validate_name(name)?;
        let mut tx = self.begin_write().await?;
        let cur = fetch_device(&mut tx, id).await?;
        if cur.name == name {
            return Ok(cur);
        }
        if name_taken(&mut tx, cur.network_id, name, Some(id)).await? {
            return Err(StoreError::NameTaken {
                name: name.to_string(),
            });
        }
        sqlx::query("UPDATE devices SET name = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| match unique_violation(&e) {
                Some(Violation::Name) => StoreError::NameTaken {
                    name: name.to_string(),
                },
                _ => StoreError::Db(e),
            })?;
        self.finish_change(tx, "device.rename", &cur).await
    }

    pub async fn set_device_tags(
        &self,
        id: DeviceId,
        tags: &[String],
    ) -> Result<DeviceRow, StoreError> {
        let tags = normalize_tags(tags)?;
        let mut tx = self.begin_write().await?;
        let cur = fetch_device(&mut tx, id).await?;
        if cur.tags == tags {
            return Ok(cur);
        }
        sqlx::query("UPDATE devices SET tags = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(to_json(&tags))
            .execute(&mut *tx)
            .await?;
        self.finish_change(tx, "device.retag", &cur).await
    }

    /// Pending -> Active. Approving an active device changes nothing; a revoked one is refused.
    pub async fn approve_device(&self, id: DeviceId) -> Result<DeviceRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let cur = fetch_device(&mut tx, id).await?;
        match cur.state {
            DeviceState::Active => return Ok(cur),
            DeviceState::Revoked => {
                return Err(StoreError::invalid(
                    "state",
                    "a revoked device cannot be approved",
                ));
            }
            DeviceState::Pending => {}
        }
        sqlx::query("UPDATE devices SET state = 'active' WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        self.finish_change(tx, "device.approve", &cur).await
    }

    /// Revokes the device: its credential stops working with this commit (the hash is
    /// dropped too) and it leaves every peer map. Revoking twice changes nothing.
    pub async fn revoke_device(&self, id: DeviceId, now_ms: i64) -> Result<DeviceRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let cur = fetch_device(&mut tx, id).await?;
        if cur.state == DeviceState::Revoked {
            return Ok(cur);
        }
        sqlx::query(
            "UPDATE devices SET state = 'revoked', credential_hash = NULL, revoked_at_ms = $2 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let row = self.finish_change(tx, "device.revoke", &cur).await?;
        tracing::info!(device_id = %id, "device revoked");
        Ok(row)
    }

    /// Deletes the row (its public key may then enroll again).
    pub async fn delete_device(&self, id: DeviceId) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let cur = fetch_device(&mut tx, id).await?;
        sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        bump_revision(&mut tx, cur.network_id).await?;
        append(
            &mut tx,
            &self.audit,
            Change::new("device.delete", format!("device:{id}"))
                .in_network(cur.network_id)
                .before(&cur),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_device_key_expiry(
        &self,
        id: DeviceId,
        at_ms: Option<i64>,
    ) -> Result<DeviceRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let cur = fetch_device(&mut tx, id).await?;
        if cur.key_expires_at_ms == at_ms {
            return Ok(cur);
        }
        // A new expiry is a new chance to expire (and to be noticed doing so).
        sqlx::query(
            "UPDATE devices SET key_expires_at_ms = $2, expiry_noted_at_ms = NULL WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
        self.finish_change(tx, "device.key_expiry", &cur).await
    }

    /// Claims the active devices whose key expired at or before `now_ms` and were not
    /// noticed yet (at most `limit`): each gets a `device.expired` event and its network
    /// a new revision, in one transaction. Returns the networks that changed.
    ///
    /// Expiry needs no admin action, so without this nothing would tell the peers: they
    /// would keep the device until the next unrelated change. The conditional UPDATE
    /// claims each device once, also when several replicas sweep the same database.
    pub async fn note_expired_devices(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<NetworkId>, StoreError> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE state = 'active' \
             AND key_expires_at_ms IS NOT NULL AND key_expires_at_ms <= $1 \
             AND expiry_noted_at_ms IS NULL ORDER BY key_expires_at_ms LIMIT $2"
        ))
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut nets: Vec<NetworkId> = vec![];
        for r in &rows {
            let cur = device_from_row(r)?;
            let claimed = sqlx::query(
                "UPDATE devices SET expiry_noted_at_ms = $2 WHERE id = $1 AND expiry_noted_at_ms IS NULL",
            )
            .bind(cur.id.to_string())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 0 {
                continue;
            }
            append(
                &mut tx,
                &self.audit,
                Change::new("device.expired", format!("device:{}", cur.id)).before(&cur),
            )
            .await?;
            if !nets.contains(&cur.network_id) {
                nets.push(cur.network_id);
            }
        }
        if nets.is_empty() {
            tx.rollback().await?;
            return Ok(nets);
        }
        for n in &nets {
            bump_revision(&mut tx, *n).await?;
        }
        tx.commit().await?;
        Ok(nets)
    }

    /// Records the endpoints an agent reported (duplicates dropped, order kept) and its
    /// last-seen time. Returns whether they changed; only then is the revision bumped.
    pub async fn set_device_endpoints(
        &self,
        id: DeviceId,
        eps: &[SocketAddr],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut clean: Vec<SocketAddr> = Vec::with_capacity(eps.len());
        for e in eps {
            if !clean.contains(e) {
                clean.push(*e);
            }
        }
        if clean.len() > MAX_ENDPOINTS {
            return Err(StoreError::invalid(
                "endpoints",
                format!("at most {MAX_ENDPOINTS} endpoints"),
            ));
        }
        let mut tx = self.begin_write().await?;
        let cur = fetch_device(&mut tx, id).await?;
        let changed = cur.endpoints != clean;
        sqlx::query("UPDATE devices SET endpoints = $2, last_seen_ms = $3 WHERE id = $1")
            .bind(id.to_string())
            .bind(to_json(&clean))
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        if changed {
            bump_revision(&mut tx, cur.network_id).await?;
            let mut c = Change::new("device.endpoints", format!("device:{id}"));
            c.before = Some(serde_json::json!({"endpoints": cur.endpoints}));
            c.after = Some(serde_json::json!({"endpoints": clean}));
            append(&mut tx, &self.audit, c).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Records that the device was seen; not a change peers care about.
    pub async fn touch_device(&self, id: DeviceId, now_ms: i64) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE devices SET last_seen_ms = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "device" });
        }
        Ok(())
    }

    /// Records the version the device's agent reported (its stream's Hello), capped at
    /// 64 characters; not a change peers care about.
    pub async fn set_agent_version(&self, id: DeviceId, version: &str) -> Result<(), StoreError> {
        let v: String = version
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        let r = sqlx::query("UPDATE devices SET agent_version = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(v)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "device" });
        }
        Ok(())
    }

    /// Bumps the revision, re-reads the device, records the change and commits.
    async fn finish_change(
        &self,
        mut tx: Transaction<'static, Any>,
        action: &'static str,
        before: &DeviceRow,
    ) -> Result<DeviceRow, StoreError> {
        bump_revision(&mut tx, before.network_id).await?;
        let row = fetch_device(&mut tx, before.id).await?;
        let c = Change::new(action, format!("device:{}", before.id))
            .before(before)
            .after(&row);
        append(&mut tx, &self.audit, c).await?;
        tx.commit().await?;
        Ok(row)
    }
}

fn is_hash(h: &str) -> bool {
    check_hash("hash", h).is_ok()
}

pub(super) fn check_text(
    field: &'static str,
    v: Option<&str>,
    max: usize,
) -> Result<(), StoreError> {
    match v {
        Some(s) if s.len() > max => Err(StoreError::invalid(field, format!("at most {max} bytes"))),
        Some(s) if s.chars().any(char::is_control) => {
            Err(StoreError::invalid(field, "control characters"))
        }
        _ => Ok(()),
    }
}
