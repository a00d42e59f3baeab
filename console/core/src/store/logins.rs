//! Enrollment by login: the pending request an agent makes without an enrollment key,
//! its confirmation by a signed-in user (which enrolls the device, owned by that user,
//! with its audit event and revision bump in one transaction), and the agent's one-time
//! collection of its device credential. A login started by an enrolled device (a
//! re-authentication) names that device instead: confirming it, by the device's owner,
//! rotates the device's key and renews its key expiry, keeping its id, name and
//! addresses (`device.reauth`).

use sqlx::any::AnyRow;
use sqlx::Row;
use zmesh_shared::wire::DeviceState;
use zmesh_shared::{DeviceId, NetworkId, WgPublicKey};

use super::audit::{append, Change};
use super::devices::{
    check_text, fetch_device, free_derived_name, insert_device, name_taken, public_key_taken,
    with_retry, Insert,
};
use super::networks::allocate;
use super::validate::derive_name_base;
use super::{opt_parse_col, parse_col, validate_name, DeviceRow, Store, StoreError, UserRow};

/// A login request as stored (never the poll secret, nor its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLogin {
    /// The code in the URL the user opens.
    pub code: String,
    pub network_id: NetworkId,
    pub public_key: WgPublicKey,
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// Set once a user confirmed.
    pub device_id: Option<DeviceId>,
    pub collected_at_ms: Option<i64>,
    /// A re-authentication of this (enrolled) device; `None`: a new enrollment.
    pub reauth_device_id: Option<DeviceId>,
}

/// Input of [`Store::create_device_login`].
#[derive(Debug, Clone)]
pub struct NewDeviceLogin {
    pub code: String,
    pub poll_hash: String,
    pub network_id: NetworkId,
    pub public_key: WgPublicKey,
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub now_ms: i64,
    pub expires_at_ms: i64,
    /// The device re-authenticating (its credential was checked by the caller).
    pub reauth_device_id: Option<DeviceId>,
}

/// What the agent's poll finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginPoll {
    /// No request has this poll secret.
    Unknown,
    /// Not confirmed yet.
    Waiting,
    /// Expired, or the credential was collected already.
    Gone,
    /// Confirmed: the device, whose credential hash was just set.
    Ready(Box<DeviceRow>),
}

const COLS: &str = "code, network_id, public_key, name, hostname, os, created_at_ms, \
     expires_at_ms, device_id, collected_at_ms, reauth_device_id";

fn login_from_row(r: &AnyRow) -> Result<DeviceLogin, StoreError> {
    Ok(DeviceLogin {
        code: r.try_get("code")?,
        network_id: parse_col(r, "network_id")?,
        public_key: parse_col(r, "public_key")?,
        name: r.try_get("name")?,
        hostname: r.try_get("hostname")?,
        os: r.try_get("os")?,
        created_at_ms: r.try_get("created_at_ms")?,
        expires_at_ms: r.try_get("expires_at_ms")?,
        device_id: opt_parse_col(r, "device_id")?,
        collected_at_ms: r.try_get("collected_at_ms")?,
        reauth_device_id: opt_parse_col(r, "reauth_device_id")?,
    })
}

impl Store {
    /// Records a login request (expired ones are dropped on the way). A re-authentication
    /// supersedes the device's earlier unconfirmed ones: their keys' private halves are
    /// gone with the agent's older attempt, so confirming them would break the device.
    pub async fn create_device_login(&self, l: NewDeviceLogin) -> Result<DeviceLogin, StoreError> {
        if let Some(n) = &l.name {
            validate_name(n)?;
        }
        check_text("hostname", l.hostname.as_deref(), 255)?;
        check_text("os", l.os.as_deref(), 255)?;
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM device_logins WHERE expires_at_ms <= $1")
            .bind(l.now_ms)
            .execute(&mut *tx)
            .await?;
        if let Some(d) = l.reauth_device_id {
            sqlx::query(
                "DELETE FROM device_logins WHERE reauth_device_id = $1 AND device_id IS NULL",
            )
            .bind(d.to_string())
            .execute(&mut *tx)
            .await?;
        }
        let r = sqlx::query(&format!(
            "INSERT INTO device_logins (code, poll_hash, network_id, public_key, name, hostname, \
             os, created_at_ms, expires_at_ms, reauth_device_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             RETURNING {COLS}"
        ))
        .bind(&l.code)
        .bind(&l.poll_hash)
        .bind(l.network_id.to_string())
        .bind(l.public_key.to_string())
        .bind(&l.name)
        .bind(&l.hostname)
        .bind(&l.os)
        .bind(l.now_ms)
        .bind(l.expires_at_ms)
        .bind(l.reauth_device_id.map(|d| d.to_string()))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        login_from_row(&r)
    }

    /// A live (not expired) login request by the code in its URL.
    pub async fn device_login(&self, code: &str, now_ms: i64) -> Result<DeviceLogin, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {COLS} FROM device_logins WHERE code = $1 AND expires_at_ms > $2"
        ))
        .bind(code)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound {
            what: "login request",
        })?;
        login_from_row(&r)
    }

    /// `user` confirms the request: the device is enrolled, active and owned by them
    /// (`name` overrides the requested one), its key expiring at `key_expires_at_ms`.
    /// The device joins `network` (the login's, or the confirming account's when the
    /// service decided so). Recorded as `device.enroll` (method login). A
    /// re-authentication goes to
    /// [`Store::confirm_reauth`] instead (`name` is not used).
    pub async fn confirm_device_login(
        &self,
        code: &str,
        network: NetworkId,
        user: &UserRow,
        name: Option<&str>,
        now_ms: i64,
        key_expires_at_ms: Option<i64>,
    ) -> Result<DeviceRow, StoreError> {
        if let Some(n) = name {
            validate_name(n)?;
        }
        with_retry(|| self.try_confirm(code, network, user, name, now_ms, key_expires_at_ms)).await
    }

    async fn try_confirm(
        &self,
        code: &str,
        network: NetworkId,
        user: &UserRow,
        name: Option<&str>,
        now_ms: i64,
        key_expires_at_ms: Option<i64>,
    ) -> Result<DeviceRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(&format!(
            "SELECT {COLS} FROM device_logins WHERE code = $1 AND expires_at_ms > $2 \
             AND device_id IS NULL"
        ))
        .bind(code)
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound {
            what: "login request",
        })?;
        let l = login_from_row(&r)?;
        if public_key_taken(&mut tx, &l.public_key).await? {
            return Err(StoreError::PublicKeyTaken);
        }
        if let Some(device) = l.reauth_device_id {
            return super::reauth::confirm_reauth(
                self,
                tx,
                &l,
                device,
                user,
                now_ms,
                key_expires_at_ms,
            )
            .await;
        }
        let alloc = allocate(&mut tx, network).await?;
        let name = match name.map(str::to_string).or(l.name.clone()) {
            Some(n) => {
                if name_taken(&mut tx, network, &n, None).await? {
                    return Err(StoreError::NameTaken { name: n });
                }
                n
            }
            None => {
                free_derived_name(&mut tx, network, &derive_name_base(l.hostname.as_deref()))
                    .await?
            }
        };
        let id = DeviceId::new();
        let owner = format!("user:{}", user.username);
        insert_device(
            &mut tx,
            &Insert {
                id,
                network_id: network,
                name: &name,
                owner: &owner,
                tags: &[],
                public_key: l.public_key,
                alloc,
                state: DeviceState::Active,
                agentless: false,
                hostname: l.hostname.as_deref(),
                os: l.os.as_deref(),
                created_at_ms: now_ms,
                enroll_key_id: None,
                credential_hash: None,
                key_expires_at_ms,
            },
        )
        .await?;
        sqlx::query("UPDATE device_logins SET device_id = $2, user_id = $3 WHERE code = $1")
            .bind(code)
            .bind(id.to_string())
            .bind(&user.id)
            .execute(&mut *tx)
            .await?;
        let row = fetch_device(&mut tx, id).await?;
        append(
            &mut tx,
            &self.audit,
            Change::new("device.enroll", format!("device:{id}")).after(&serde_json::json!({
                "method": "login", "user": user.username, "device": row,
            })),
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// The agent's poll: when confirmed, sets the device's credential hash and marks
    /// the request collected (once).
    pub async fn collect_device_login(
        &self,
        poll_hash: &str,
        credential_hash: &str,
        now_ms: i64,
    ) -> Result<LoginPoll, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(r) = sqlx::query(&format!(
            "SELECT {COLS} FROM device_logins WHERE poll_hash = $1"
        ))
        .bind(poll_hash)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(LoginPoll::Unknown);
        };
        let l = login_from_row(&r)?;
        if l.collected_at_ms.is_some() {
            return Ok(LoginPoll::Gone);
        }
        let Some(device) = l.device_id else {
            return Ok(if l.expires_at_ms <= now_ms {
                LoginPoll::Gone
            } else {
                LoginPoll::Waiting
            });
        };
        sqlx::query("UPDATE devices SET credential_hash = $2 WHERE id = $1")
            .bind(device.to_string())
            .bind(credential_hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE device_logins SET collected_at_ms = $2 WHERE code = $1")
            .bind(&l.code)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        let row = fetch_device(&mut tx, device).await?;
        tx.commit().await?;
        Ok(LoginPoll::Ready(Box::new(row)))
    }
}
