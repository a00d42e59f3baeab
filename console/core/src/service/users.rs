//! Console users (web sign-in accounts) and their personal API tokens: create, update
//! (role, password, disabled), delete. Users are not seen by peers, so these need only
//! the store (the admin CLI calls them on a database with no console running).

use zmesh_shared::time::now_ms;
use zmesh_shared::Secret;

use super::{AuditCtx, Core, ServiceError};
use crate::bus::Change;
use crate::domain::names::{check_token_name, check_token_ttl};
use crate::domain::password::{check_password_rules, hash_password};
use crate::store::{validate_username, AdminTokenRow, Role, Store, UserRow, UserUpdate};

/// Prefix of personal API tokens (a user's own, for scripts).
pub const PERSONAL_TOKEN_PREFIX: &str = "zmp_";
/// Lifetime of a personal token created without `ttl_seconds`: 30 days.
pub const DEFAULT_PERSONAL_TTL_SECONDS: u64 = 30 * 24 * 3600;

pub fn parse_role(r: &str) -> Result<Role, ServiceError> {
    // members come only from single sign-on
    Role::parse(r)
        .filter(|r| *r != Role::Member)
        .ok_or_else(|| ServiceError::invalid("role", "admin or auditor"))
}

pub async fn create(
    store: &Store,
    ctx: AuditCtx,
    username: &str,
    role: Role,
    password: String,
) -> Result<UserRow, ServiceError> {
    create_in(store, ctx, username, role, password, None).await
}

/// Creates a user scoped to `network` (`None`: console-wide): the account sees and
/// changes that network only.
pub async fn create_in(
    store: &Store,
    ctx: AuditCtx,
    username: &str,
    role: Role,
    password: String,
    network: Option<zmesh_shared::NetworkId>,
) -> Result<UserRow, ServiceError> {
    let username = username.trim();
    validate_username(username)?;
    check_password_rules("password", &password)?;
    let phc = hash_password(password).await?;
    let u = store
        .acting(ctx)
        .create_user_in(username, role, &phc, now_ms(), network)
        .await?;
    tracing::info!(user = %u.username, role = u.role.as_str(), "user created");
    Ok(u)
}

/// What an update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub role: Option<Role>,
    pub password: Option<String>,
    pub disabled: Option<bool>,
    /// Why (recorded in the audit event); admins give none.
    pub reason: Option<String>,
}

/// Applies `c`. Disabling also revokes the user's devices in the same transaction (each
/// audited), closes their streams and tells every peer at once (off-boarding).
pub async fn update(
    core: &Core,
    ctx: AuditCtx,
    id: &str,
    c: UserChange,
) -> Result<UserRow, ServiceError> {
    let password_hash = match c.password {
        Some(pw) => {
            check_password_rules("password", &pw)?;
            Some(hash_password(pw).await?)
        }
        None => None,
    };
    let (u, revoked) = core
        .store
        .acting(ctx)
        .update_user_offboarding(
            id,
            UserUpdate {
                role: c.role,
                password_hash,
                disabled: c.disabled,
                reason: c.reason,
            },
            now_ms(),
        )
        .await?;
    let mut nets = std::collections::BTreeSet::new();
    for d in &revoked {
        core.bus.publish(Change::DeviceRevoked {
            device_id: d.id,
            reason: "owner disabled".into(),
        });
        nets.insert(d.network_id);
    }
    for n in nets {
        core.publish_network(n).await;
    }
    tracing::info!(user = %u.username, devices_revoked = revoked.len(), "user updated");
    Ok(u)
}

/// Sets a user's password (the admin CLI, on the database); their sessions end.
pub async fn set_password(
    store: &Store,
    ctx: AuditCtx,
    id: &str,
    password: String,
) -> Result<UserRow, ServiceError> {
    check_password_rules("password", &password)?;
    let h = hash_password(password).await?;
    let up = UserUpdate {
        password_hash: Some(h),
        ..Default::default()
    };
    Ok(store.acting(ctx).update_user(id, up, now_ms()).await?)
}

pub async fn delete(store: &Store, ctx: AuditCtx, id: &str) -> Result<(), ServiceError> {
    store.acting(ctx).delete_user(id, now_ms()).await?;
    tracing::info!(user = %id, "user deleted");
    Ok(())
}

/// A personal token for user `id`; returns the user, the row and the token text.
pub async fn create_personal_token(
    store: &Store,
    ctx: AuditCtx,
    id: &str,
    name: &str,
    ttl_seconds: Option<u64>,
) -> Result<(UserRow, AdminTokenRow, Secret), ServiceError> {
    let name = name.trim();
    check_token_name("name", name)?;
    let ttl = ttl_seconds.unwrap_or(DEFAULT_PERSONAL_TTL_SECONDS);
    check_token_ttl("ttl_seconds", ttl)?;
    let u = store.get_user(id).await?;
    let now = now_ms();
    let token = Secret::generate(PERSONAL_TOKEN_PREFIX);
    let row = store
        .acting(ctx)
        .create_personal_token(
            &u.id,
            name,
            &token.hash(),
            Some(now + ttl as i64 * 1000),
            now,
        )
        .await?;
    tracing::info!(token = %row.id, owner = %u.username, "personal API token created");
    Ok((u, row, token))
}
