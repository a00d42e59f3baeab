//! Re-authentication of an enrolled device by its user: the check of the device's proof
//! when it asks (its current credential; an expired device qualifies, a revoked one
//! does not), and the confirmation that rotates its WireGuard key and renews its key
//! expiry in one transaction (`device.reauth`, a revision bump), keeping its id, name,
//! owner and overlay addresses.

use sqlx::{Any, Transaction};
use zmesh_shared::wire::DeviceState;
use zmesh_shared::DeviceId;

use super::audit::{append, Change};
use super::devices::{device_from_row, fetch_device, DEVICE_COLS};
use super::networks::bump_revision;
use super::{DeviceLogin, DeviceRow, Store, StoreError, UserRow};

/// The owner string of the devices `user` enrolled by login.
pub fn user_owner(user: &UserRow) -> String {
    format!("user:{}", user.username)
}

/// Confirms the re-authentication `l` of `device` by `user` (its owner), inside the
/// confirmation's transaction `tx`: the login's public key becomes the device's, its
/// key expires at `key_expires_at_ms`, an earlier expiry is forgotten.
pub(super) async fn confirm_reauth(
    store: &Store,
    mut tx: Transaction<'static, Any>,
    l: &DeviceLogin,
    device: DeviceId,
    user: &UserRow,
    now_ms: i64,
    key_expires_at_ms: Option<i64>,
) -> Result<DeviceRow, StoreError> {
    let cur = fetch_device(&mut tx, device).await?;
    // The service checked all this before; checked again here, in the transaction, so a
    // revocation or a change of owner in between wins.
    if cur.state == DeviceState::Revoked
        || cur.agentless
        || cur.owner != user_owner(user)
        || cur.network_id != l.network_id
    {
        return Err(StoreError::NotFound {
            what: "device to re-authenticate",
        });
    }
    sqlx::query(
        "UPDATE devices SET public_key = $2, key_expires_at_ms = $3, expiry_noted_at_ms = NULL \
         WHERE id = $1",
    )
    .bind(device.to_string())
    .bind(l.public_key.to_string())
    .bind(key_expires_at_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE device_logins SET device_id = $2, user_id = $3 WHERE code = $1")
        .bind(&l.code)
        .bind(device.to_string())
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
    bump_revision(&mut tx, cur.network_id).await?;
    let row = fetch_device(&mut tx, device).await?;
    append(
        &mut tx,
        &store.audit,
        Change::new("device.reauth", format!("device:{device}"))
            .before(&serde_json::json!({"public_key": cur.public_key, "device": cur}))
            .after(&serde_json::json!({
                "user": user.username, "public_key": row.public_key, "device": row,
                "at_ms": now_ms,
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(row)
}

impl Store {
    /// The device `id` if `credential_hash` is its current credential's hash and it is
    /// not revoked (its key may have expired: that is what re-authentication is for).
    pub async fn device_for_reauth(
        &self,
        id: DeviceId,
        credential_hash: &str,
    ) -> Result<Option<DeviceRow>, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE id = $1 AND credential_hash = $2 \
             AND state <> 'revoked'"
        ))
        .bind(id.to_string())
        .bind(credential_hash)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(device_from_row).transpose()
    }
}
