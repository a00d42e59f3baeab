//! Console accounts: users (admin or auditor, Argon2id password hashes made by the
//! caller), web sessions and one-time setup links (both kept only as SHA-256 hashes),
//! failed sign-ins for rate limiting, and personal API tokens that carry their owner's
//! role.
//!
//! Every change is recorded in the audit chain in its own transaction, like the rest
//! of the store. Two invariants are kept inside the write transaction, so concurrent
//! admins cannot break them: the last active admin can be neither demoted, disabled nor
//! deleted, and a setup link works only once and only while there is no user yet.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use zmesh_shared::NetworkId;

use super::audit::{append, Change};
use super::enroll_keys::check_hash;
use super::{AdminTokenRow, DeviceRow, Role, Store, StoreError};

/// A user as stored, without the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = User)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub role: Role,
    pub created_at_ms: i64,
    pub created_by: String,
    pub disabled_at_ms: Option<i64>,
    pub last_sign_in_ms: Option<i64>,
    /// The OpenID Provider of an SSO user; `None` for a local account.
    pub issuer: Option<String>,
    /// The user's stable id at `issuer`.
    pub subject: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// IdP groups as last seen at sign-in or IdP re-check (empty for local accounts).
    pub groups: Vec<String>,
    /// When the console last asked the OpenID Provider about this SSO user (sign-in or
    /// the periodic re-check, `serve --oidc-refresh-interval`); `None`: never.
    pub idp_checked_at_ms: Option<i64>,
    /// What that check found: `ok`, `groups changed`, `role changed`, `disabled: REASON`,
    /// `unreachable: REASON`, `error: REASON` or `no refresh token`.
    pub idp_check: Option<String>,
    /// The one network this account may see and change; `None`: console-wide.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_id: Option<NetworkId>,
}

/// A user and their password hash, for sign-in only. Debug never prints the hash.
#[derive(Clone)]
pub struct UserCredentials {
    pub user: UserRow,
    pub password_hash: String,
}

impl std::fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A live web session and its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub user: UserRow,
    pub created_at_ms: i64,
    pub last_seen_ms: i64,
    pub expires_at_ms: i64,
}

/// What [`Store::update_user`] changes; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub role: Option<Role>,
    /// A new Argon2id PHC string; ends every session of the user.
    pub password_hash: Option<String>,
    /// `Some(true)` disables (ends sessions, revokes tokens), `Some(false)` enables.
    pub disabled: Option<bool>,
    /// Why, recorded in the `user.update` event (e.g. the IdP re-check's finding).
    pub reason: Option<String>,
}

/// A personal token with the name of its owner, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OwnedToken {
    #[serde(flatten)]
    pub token: AdminTokenRow,
    pub owner: Option<String>,
}

pub(super) const USER_COLS: &str = "id, username, role, created_at_ms, created_by, \
     disabled_at_ms, last_sign_in_ms, issuer, subject, email, display_name, groups, \
     idp_checked_at_ms, idp_check, network_id";
const USER_COLS_U: &str = "u.id, u.username, u.role, u.created_at_ms, u.created_by, \
     u.disabled_at_ms, u.last_sign_in_ms, u.issuer, u.subject, u.email, u.display_name, \
     u.groups, u.idp_checked_at_ms, u.idp_check, u.network_id";

pub(super) fn user_from_row(r: &AnyRow) -> Result<UserRow, StoreError> {
    let role: String = r.try_get("role")?;
    Ok(UserRow {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::corrupt("role", &role))?,
        created_at_ms: r.try_get("created_at_ms")?,
        created_by: r.try_get("created_by")?,
        disabled_at_ms: r.try_get("disabled_at_ms")?,
        last_sign_in_ms: r.try_get("last_sign_in_ms")?,
        issuer: r.try_get("issuer")?,
        subject: r.try_get("subject")?,
        email: r.try_get("email")?,
        display_name: r.try_get("display_name")?,
        groups: super::json_col(r, "groups")?,
        idp_checked_at_ms: r.try_get("idp_checked_at_ms")?,
        idp_check: r.try_get("idp_check")?,
        network_id: super::opt_parse_col(r, "network_id")?,
    })
}

/// Usernames: 1 to 64 of `[A-Za-z0-9._@-]`, starting with a letter or digit.
pub fn validate_username(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "username",
            "1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
        ))
    }
}

pub(super) fn new_user_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("usr_{}", hex::encode(b))
}

fn check_phc(h: &str) -> Result<(), StoreError> {
    if h.starts_with("$argon2id$") {
        Ok(())
    } else {
        Err(StoreError::invalid("password_hash", "must be Argon2id"))
    }
}

pub(super) async fn user_in(
    tx: &mut Transaction<'static, Any>,
    id: &str,
) -> Result<UserRow, StoreError> {
    let r = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound { what: "user" })?;
    user_from_row(&r)
}

/// Active admins other than `except`.
async fn other_active_admins(
    tx: &mut Transaction<'static, Any>,
    except: &str,
) -> Result<i64, StoreError> {
    let r = sqlx::query(
        "SELECT COUNT(*) AS n FROM users WHERE role = 'admin' AND disabled_at_ms IS NULL AND id <> $1",
    )
    .bind(except)
    .fetch_one(&mut **tx)
    .await?;
    Ok(r.try_get("n")?)
}

fn last_admin() -> StoreError {
    StoreError::Conflict {
        field: "role",
        reason: "this is the last active admin; make another admin first".into(),
    }
}

impl Store {
    pub async fn count_users(&self) -> Result<i64, StoreError> {
        let r = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get("n")?)
    }

    async fn insert_user(
        &self,
        tx: &mut Transaction<'static, Any>,
        username: &str,
        role: Role,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<UserRow, StoreError> {
        validate_username(username)?;
        check_phc(password_hash)?;
        let taken = sqlx::query("SELECT id FROM users WHERE lower(username) = lower($1)")
            .bind(username)
            .fetch_optional(&mut **tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::NameTaken {
                name: username.to_string(),
            });
        }
        let r = sqlx::query(&format!(
            "INSERT INTO users (id, username, role, password_hash, created_at_ms, created_by, \
             disabled_at_ms, last_sign_in_ms) VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL) \
             RETURNING {USER_COLS}"
        ))
        .bind(new_user_id())
        .bind(username)
        .bind(role.as_str())
        .bind(password_hash)
        .bind(now_ms)
        .bind(&self.audit.actor)
        .fetch_one(&mut **tx)
        .await?;
        user_from_row(&r)
    }

    /// Creates a user; `password_hash` is an Argon2id PHC string.
    pub async fn create_user(
        &self,
        username: &str,
        role: Role,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<UserRow, StoreError> {
        self.create_user_in(username, role, password_hash, now_ms, None)
            .await
    }

    /// Creates a user scoped to `network` (`None`: console-wide).
    pub async fn create_user_in(
        &self,
        username: &str,
        role: Role,
        password_hash: &str,
        now_ms: i64,
        network: Option<NetworkId>,
    ) -> Result<UserRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut u = self
            .insert_user(&mut tx, username, role, password_hash, now_ms)
            .await?;
        if let Some(n) = network {
            sqlx::query("UPDATE users SET network_id = $2 WHERE id = $1")
                .bind(&u.id)
                .bind(n.to_string())
                .execute(&mut *tx)
                .await?;
            u.network_id = Some(n);
        }
        append(
            &mut tx,
            &self.audit,
            Change::new("user.create", format!("user:{}", u.username)).after(&u),
        )
        .await?;
        tx.commit().await?;
        Ok(u)
    }

    pub async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLS} FROM users ORDER BY lower(username)"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    pub async fn get_user(&self, id: &str) -> Result<UserRow, StoreError> {
        let r = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { what: "user" })?;
        user_from_row(&r)
    }

    /// The user and password hash for a sign-in attempt (disabled users included:
    /// the caller refuses them after checking the password, so the answer does not
    /// tell whether an account exists).
    pub async fn user_credentials(
        &self,
        username: &str,
    ) -> Result<Option<UserCredentials>, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {USER_COLS}, password_hash FROM users WHERE lower(username) = lower($1)"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        r.map(|r| {
            Ok(UserCredentials {
                user: user_from_row(&r)?,
                password_hash: r.try_get("password_hash")?,
            })
        })
        .transpose()
    }

    /// Changes role, password or disabled state. Demoting, disabling the last active
    /// admin is refused. A new password or disabling ends the user's sessions; a new
    /// role is carried over to the user's personal tokens; disabling revokes them.
    pub async fn update_user(
        &self,
        id: &str,
        up: UserUpdate,
        now_ms: i64,
    ) -> Result<UserRow, StoreError> {
        Ok(self.update_user_offboarding(id, up, now_ms).await?.0)
    }

    /// [`Store::update_user`], also answering the devices that disabling revoked (the
    /// user's own devices: revoked in the same transaction, each with its audit event).
    pub async fn update_user_offboarding(
        &self,
        id: &str,
        up: UserUpdate,
        now_ms: i64,
    ) -> Result<(UserRow, Vec<DeviceRow>), StoreError> {
        if let Some(h) = &up.password_hash {
            check_phc(h)?;
        }
        let mut tx = self.begin_write().await?;
        let before = user_in(&mut tx, id).await?;
        let loses_admin = before.role == Role::Admin
            && before.disabled_at_ms.is_none()
            && (up.role == Some(Role::Auditor) || up.disabled == Some(true));
        if loses_admin && other_active_admins(&mut tx, id).await? == 0 {
            return Err(last_admin());
        }
        if let Some(role) = up.role {
            sqlx::query("UPDATE users SET role = $2 WHERE id = $1")
                .bind(id)
                .bind(role.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE admin_tokens SET role = $2 WHERE user_id = $1")
                .bind(id)
                .bind(role.as_str())
                .execute(&mut *tx)
                .await?;
        }
        if let Some(h) = &up.password_hash {
            sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
                .bind(id)
                .bind(h)
                .execute(&mut *tx)
                .await?;
        }
        let mut revoked = Vec::new();
        match up.disabled {
            Some(true) if before.disabled_at_ms.is_none() => {
                sqlx::query("UPDATE users SET disabled_at_ms = $2 WHERE id = $1")
                    .bind(id)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                revoke_user_tokens(&mut tx, id, now_ms).await?;
                revoked = super::sso::revoke_owned_devices(
                    &mut tx,
                    &self.audit,
                    &before.username,
                    now_ms,
                )
                .await?;
            }
            Some(false) => {
                sqlx::query("UPDATE users SET disabled_at_ms = NULL WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            _ => {}
        }
        if up.password_hash.is_some() || up.disabled == Some(true) {
            sqlx::query("DELETE FROM web_sessions WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let after = user_in(&mut tx, id).await?;
        let mut c = Change::new("user.update", format!("user:{}", after.username))
            .before(&before)
            .after(&after);
        if let Some(a) = c.after.as_mut() {
            if up.password_hash.is_some() {
                a["password_changed"] = true.into();
            }
            if let Some(r) = &up.reason {
                a["reason"] = r.as_str().into();
            }
        }
        append(&mut tx, &self.audit, c).await?;
        tx.commit().await?;
        Ok((after, revoked))
    }

    /// Deletes a user, ends their sessions and revokes their personal tokens.
    pub async fn delete_user(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let before = user_in(&mut tx, id).await?;
        if before.role == Role::Admin
            && before.disabled_at_ms.is_none()
            && other_active_admins(&mut tx, id).await? == 0
        {
            return Err(last_admin());
        }
        revoke_user_tokens(&mut tx, id, now_ms).await?;
        sqlx::query("DELETE FROM web_sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        append(
            &mut tx,
            &self.audit,
            Change::new("user.delete", format!("user:{}", before.username)).before(&before),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- sessions ----

    /// Stores a new session (by the hash of its id) and records the sign-in.
    pub async fn create_session(
        &self,
        user_id: &str,
        id_hash: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.create_session_via(user_id, id_hash, now_ms, expires_at_ms, "password")
            .await
    }

    /// [`Store::create_session`] recording how the user signed in (`password`, `sso`).
    pub async fn create_session_via(
        &self,
        user_id: &str,
        id_hash: &str,
        now_ms: i64,
        expires_at_ms: i64,
        method: &'static str,
    ) -> Result<(), StoreError> {
        check_hash("id_hash", id_hash)?;
        let mut tx = self.begin_write().await?;
        let u = user_in(&mut tx, user_id).await?;
        sqlx::query(
            "INSERT INTO web_sessions (id_hash, user_id, created_at_ms, last_seen_ms, \
             expires_at_ms, source_addr) VALUES ($1, $2, $3, $3, $4, $5)",
        )
        .bind(id_hash)
        .bind(user_id)
        .bind(now_ms)
        .bind(expires_at_ms)
        .bind(self.audit.source_addr.clone())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE users SET last_sign_in_ms = $2 WHERE id = $1")
            .bind(user_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sign_in_failures WHERE scope = 'user' AND subject = $1")
            .bind(u.username.to_lowercase())
            .execute(&mut *tx)
            .await?;
        // sessions of anyone that ran out are dropped on the way
        sqlx::query("DELETE FROM web_sessions WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        append(
            &mut tx,
            &self.audit,
            Change::new("auth.signin", format!("user:{}", u.username))
                .after(&serde_json::json!({"role": u.role, "method": method})),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live session with this id hash: unexpired, idle for less than `idle_ms`, of
    /// an enabled user. Marks it used (at most once a minute, to spare the database).
    pub async fn session(
        &self,
        id_hash: &str,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<Option<SessionRow>, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {USER_COLS_U}, s.created_at_ms AS s_created, s.last_seen_ms, s.expires_at_ms \
             FROM web_sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id_hash = $1 AND s.expires_at_ms > $2 AND s.last_seen_ms > $3 \
             AND u.disabled_at_ms IS NULL"
        ))
        .bind(id_hash)
        .bind(now_ms)
        .bind(now_ms - idle_ms)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = r else { return Ok(None) };
        let s = SessionRow {
            user: user_from_row(&r)?,
            created_at_ms: r.try_get("s_created")?,
            last_seen_ms: r.try_get("last_seen_ms")?,
            expires_at_ms: r.try_get("expires_at_ms")?,
        };
        if now_ms - s.last_seen_ms > 60_000 {
            sqlx::query("UPDATE web_sessions SET last_seen_ms = $2 WHERE id_hash = $1")
                .bind(id_hash)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(s))
    }

    /// Ends a session (sign-out). Returns whether there was one.
    pub async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "SELECT u.username FROM web_sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(r) = r else {
            tx.rollback().await?;
            return Ok(false);
        };
        let username: String = r.try_get("username")?;
        sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&mut *tx)
            .await?;
        append(
            &mut tx,
            &self.audit,
            Change::new("auth.signout", format!("user:{username}")),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    // ---- setup links ----

    /// Stores a new one-time setup link (by hash); older unused links stop working.
    pub async fn create_setup_token(
        &self,
        token_hash: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        check_hash("token_hash", token_hash)?;
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM setup_tokens")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO setup_tokens (token_hash, created_at_ms, expires_at_ms, used_at_ms) \
             VALUES ($1, $2, $3, NULL)",
        )
        .bind(token_hash)
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(&mut *tx)
        .await?;
        append(
            &mut tx,
            &self.audit,
            Change::new("setup.link_created", "setup")
                .after(&serde_json::json!({"expires_at_ms": expires_at_ms})),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether a setup link is usable now (unused, unexpired, and no user exists yet).
    pub async fn setup_token_valid(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "SELECT 1 AS ok FROM setup_tokens WHERE token_hash = $1 AND used_at_ms IS NULL \
             AND expires_at_ms > $2 AND NOT EXISTS (SELECT 1 FROM users)",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.is_some())
    }

    /// Uses a setup link to create the first admin, all or nothing. `Ok(None)` when the
    /// link is unknown, used, expired, or a user already exists.
    pub async fn redeem_setup_token(
        &self,
        token_hash: &str,
        username: &str,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<Option<UserRow>, StoreError> {
        let mut tx = self.begin_write().await?;
        let used = sqlx::query(
            "UPDATE setup_tokens SET used_at_ms = $2 WHERE token_hash = $1 AND used_at_ms IS NULL \
             AND expires_at_ms > $2 AND NOT EXISTS (SELECT 1 FROM users)",
        )
        .bind(token_hash)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let u = self
            .insert_user(&mut tx, username, Role::Admin, password_hash, now_ms)
            .await?;
        append(
            &mut tx,
            &self.audit,
            Change::new("user.create", format!("user:{}", u.username))
                .after(&serde_json::json!({"user": u, "via": "setup link"})),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(u))
    }

    // ---- sign-in rate limiting ----

    /// Failed sign-ins since `since_ms` from this address and for this username.
    pub async fn sign_in_failures(
        &self,
        addr: &str,
        username: &str,
        since_ms: i64,
    ) -> Result<(i64, i64), StoreError> {
        let count = |scope: &'static str, subject: String| {
            sqlx::query(
                "SELECT COUNT(*) AS n FROM sign_in_failures WHERE scope = $1 AND subject = $2 \
                 AND time_ms > $3",
            )
            .bind(scope)
            .bind(subject)
            .bind(since_ms)
            .fetch_one(&self.pool)
        };
        let ip: i64 = count("ip", addr.to_string()).await?.try_get("n")?;
        let user: i64 = count("user", username.to_lowercase()).await?.try_get("n")?;
        Ok((ip, user))
    }

    /// Counts a failed sign-in against the address and the username, and records it in
    /// the audit log. Entries older than `forget_before_ms` are dropped on the way.
    pub async fn record_sign_in_failure(
        &self,
        addr: &str,
        username: &str,
        reason: &str,
        now_ms: i64,
        forget_before_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM sign_in_failures WHERE time_ms <= $1")
            .bind(forget_before_ms)
            .execute(&mut *tx)
            .await?;
        for (scope, subject) in [("ip", addr.to_string()), ("user", username.to_lowercase())] {
            sqlx::query(
                "INSERT INTO sign_in_failures (scope, subject, time_ms) VALUES ($1, $2, $3)",
            )
            .bind(scope)
            .bind(subject)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        // the username as typed may be anything: keep it short in the log
        let shown: String = username.chars().take(64).collect();
        append(
            &mut tx,
            &self.audit,
            Change::new("auth.signin_failed", format!("user:{shown}"))
                .after(&serde_json::json!({"reason": reason})),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every API token with the username of its owner (`None`: not a personal token).
    pub async fn list_tokens_with_owner(&self) -> Result<Vec<OwnedToken>, StoreError> {
        let owners = sqlx::query(
            "SELECT t.id AS id, u.username AS username FROM admin_tokens t \
             JOIN users u ON u.id = t.user_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut by_id = std::collections::HashMap::new();
        for r in &owners {
            let id: String = r.try_get("id")?;
            let name: String = r.try_get("username")?;
            by_id.insert(id, name);
        }
        Ok(self
            .list_admin_tokens()
            .await?
            .into_iter()
            .map(|t| OwnedToken {
                owner: by_id.get(&t.id.to_string()).cloned(),
                token: t,
            })
            .collect())
    }
}

async fn revoke_user_tokens(
    tx: &mut Transaction<'static, Any>,
    user_id: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE admin_tokens SET revoked_at_ms = $2 WHERE user_id = $1 AND revoked_at_ms IS NULL",
    )
    .bind(user_id)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
