//! Enrollment keys: created by admins, redeemed by agents. Only the secret's hash is kept.

use sqlx::any::AnyRow;
use sqlx::Row;
use zmesh_shared::{EnrollKeyId, NetworkId};

use super::audit::{append, Change};
use super::error::unique_violation;
use super::{bool_col, json_col, normalize_tags, parse_col, to_json};
use super::{EnrollKeyRow, NewEnrollKey, Store, StoreError};

pub(crate) const ENROLL_KEY_COLS: &str =
    "id, network_id, description, reusable, preapproved, tags, \
     expires_at_ms, created_at_ms, created_by, revoked_at_ms, used_count, last_used_at_ms";

pub(crate) fn enroll_key_from_row(r: &AnyRow) -> Result<EnrollKeyRow, StoreError> {
    Ok(EnrollKeyRow {
        id: parse_col(r, "id")?,
        network_id: parse_col(r, "network_id")?,
        description: r.try_get("description")?,
        reusable: bool_col(r, "reusable")?,
        preapproved: bool_col(r, "preapproved")?,
        tags: json_col(r, "tags")?,
        expires_at_ms: r.try_get("expires_at_ms")?,
        created_at_ms: r.try_get("created_at_ms")?,
        created_by: r.try_get("created_by")?,
        revoked_at_ms: r.try_get("revoked_at_ms")?,
        used_count: r.try_get("used_count")?,
        last_used_at_ms: r.try_get("last_used_at_ms")?,
    })
}

/// Hashes are hex SHA-256 digests; anything else means the caller passed a secret by mistake.
pub(crate) fn check_hash(field: &'static str, h: &str) -> Result<(), StoreError> {
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::invalid(field, "expected a hex SHA-256 digest"));
    }
    Ok(())
}

impl Store {
    pub async fn create_enroll_key(
        &self,
        k: NewEnrollKey,
        now_ms: i64,
    ) -> Result<EnrollKeyRow, StoreError> {
        check_hash("secret_hash", &k.secret_hash)?;
        let tags = normalize_tags(&k.tags)?;
        if let Some(d) = &k.description {
            if d.len() > 512 {
                return Err(StoreError::invalid("description", "at most 512 bytes"));
            }
        }
        if k.created_by.is_empty() {
            return Err(StoreError::invalid("created_by", "must not be empty"));
        }
        self.get_network(k.network_id).await?;
        let id = EnrollKeyId::new();
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(&format!(
            "INSERT INTO enroll_keys (id, network_id, secret_hash, description, reusable, preapproved, tags, \
             expires_at_ms, created_at_ms, created_by, revoked_at_ms, used_count, last_used_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, 0, NULL) RETURNING {ENROLL_KEY_COLS}"
        ))
        .bind(id.to_string())
        .bind(k.network_id.to_string())
        .bind(&k.secret_hash)
        .bind(k.description.clone())
        .bind(i64::from(k.reusable))
        .bind(i64::from(k.preapproved))
        .bind(to_json(&tags))
        .bind(k.expires_at_ms)
        .bind(now_ms)
        .bind(&k.created_by)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match unique_violation(&e) {
            Some(_) => StoreError::invalid("secret_hash", "an enrollment key with this secret exists"),
            None => StoreError::Db(e),
        })?;
        let row = enroll_key_from_row(&r)?;
        append(
            &mut tx,
            &self.audit,
            Change::new("enroll_key.create", format!("enroll_key:{id}")).after(&row),
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// The network's keys, oldest first.
    pub async fn list_enroll_keys(&self, net: NetworkId) -> Result<Vec<EnrollKeyRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ENROLL_KEY_COLS} FROM enroll_keys WHERE network_id = $1 ORDER BY created_at_ms, id"
        ))
        .bind(net.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(enroll_key_from_row).collect()
    }

    pub async fn get_enroll_key(&self, id: EnrollKeyId) -> Result<EnrollKeyRow, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {ENROLL_KEY_COLS} FROM enroll_keys WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound {
            what: "enrollment key",
        })?;
        enroll_key_from_row(&r)
    }

    /// Revokes the key (idempotent: a second call keeps the first time). Devices it
    /// enrolled stay enrolled.
    pub async fn revoke_enroll_key(
        &self,
        id: EnrollKeyId,
        now_ms: i64,
    ) -> Result<EnrollKeyRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let before = sqlx::query(&format!(
            "SELECT {ENROLL_KEY_COLS} FROM enroll_keys WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound {
            what: "enrollment key",
        })?;
        let before = enroll_key_from_row(&before)?;
        if before.revoked_at_ms.is_some() {
            return Ok(before);
        }
        let r = sqlx::query(&format!(
            "UPDATE enroll_keys SET revoked_at_ms = $2 WHERE id = $1 RETURNING {ENROLL_KEY_COLS}"
        ))
        .bind(id.to_string())
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        let row = enroll_key_from_row(&r)?;
        append(
            &mut tx,
            &self.audit,
            Change::new("enroll_key.revoke", format!("enroll_key:{id}"))
                .before(&before)
                .after(&row),
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }
}
