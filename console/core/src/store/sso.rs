//! Users who sign in through an OpenID Provider: found by (issuer, subject), created at
//! their first sign-in, and brought up to date at every sign-in (email, name, groups,
//! role), each change with its audit event in the same transaction.

use sqlx::{Any, Transaction};

use super::accounts::{new_user_id, user_from_row, validate_username, USER_COLS};
use super::audit::{append, Change};
use super::{to_json, Role, Store, StoreError, UserRow};

/// Who the OpenID Provider says signed in, and the role the console's settings give
/// them (checked against allowed domains and groups before it gets here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoIdentity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub groups: Vec<String>,
    pub role: Role,
}

/// What [`Store::sso_sign_in_user`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoOutcome {
    /// Created or brought up to date; may sign in. The networks listed had their
    /// revision bumped: the user's devices there changed groups (publish them).
    Ready(UserRow, Vec<zmesh_shared::NetworkId>),
    /// Disabled by an admin: left unchanged, must be refused.
    Disabled(UserRow),
    /// The username this identity would get belongs to another account.
    NameTaken(String),
}

/// The console username of an SSO user: the email (lower case) when it is a valid
/// username, else `subject@issuer-host`, with characters outside `[a-z0-9._@-]` as '-'.
pub fn sso_username(id: &SsoIdentity) -> String {
    let base = match &id.email {
        Some(e) if !e.is_empty() => e.to_lowercase(),
        _ => {
            let host = id
                .issuer
                .split("://")
                .nth(1)
                .unwrap_or(&id.issuer)
                .split(['/', ':'])
                .next()
                .unwrap_or("sso");
            format!("{}@{host}", id.subject).to_lowercase()
        }
    };
    let mut s: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        s.insert(0, 'u');
        s.truncate(64);
    }
    s
}

async fn by_identity(
    tx: &mut Transaction<'static, Any>,
    issuer: &str,
    subject: &str,
) -> Result<Option<UserRow>, StoreError> {
    let r = sqlx::query(&format!(
        "SELECT {USER_COLS} FROM users WHERE issuer = $1 AND subject = $2"
    ))
    .bind(issuer)
    .bind(subject)
    .fetch_optional(&mut **tx)
    .await?;
    r.as_ref().map(user_from_row).transpose()
}

/// The IdP groups of every enabled user who has any, keyed `user:NAME`.
pub(super) async fn owner_groups_in(
    tx: &mut Transaction<'static, Any>,
) -> Result<super::OwnerGroups, StoreError> {
    let rows = sqlx::query(
        "SELECT username, groups FROM users WHERE disabled_at_ms IS NULL AND groups <> '[]'",
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut out = super::OwnerGroups::new();
    for r in &rows {
        let name: String = sqlx::Row::try_get(r, "username")?;
        let groups: Vec<String> = super::json_col(r, "groups")?;
        out.insert(format!("user:{name}"), groups);
    }
    Ok(out)
}

/// Revokes every live device owned by `user:USERNAME` (off-boarding), each with a
/// `device.revoke` event, bumping the revision of their networks. Returns them revoked.
pub(super) async fn revoke_owned_devices(
    tx: &mut Transaction<'static, Any>,
    audit: &super::AuditCtx,
    username: &str,
    now_ms: i64,
) -> Result<Vec<super::DeviceRow>, StoreError> {
    use super::devices::{device_from_row, DEVICE_COLS};
    let rows = sqlx::query(&format!(
        "SELECT {DEVICE_COLS} FROM devices WHERE owner = $1 AND state <> 'revoked' ORDER BY id"
    ))
    .bind(format!("user:{username}"))
    .fetch_all(&mut **tx)
    .await?;
    let mut out = Vec::new();
    let mut nets = std::collections::BTreeSet::new();
    for r in &rows {
        let before = device_from_row(r)?;
        sqlx::query(
            "UPDATE devices SET state = 'revoked', credential_hash = NULL, revoked_at_ms = $2 \
             WHERE id = $1",
        )
        .bind(before.id.to_string())
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
        let after = super::devices::fetch_device(tx, before.id).await?;
        let c = Change::new("device.revoke", format!("device:{}", before.id))
            .before(&before)
            .after(&after);
        append(tx, audit, c).await?;
        nets.insert(after.network_id);
        out.push(after);
    }
    for n in nets {
        super::networks::bump_revision(tx, n).await?;
    }
    Ok(out)
}

/// `id` with its groups sorted and deduplicated, as stored.
pub(super) fn identity_sorted(id: &SsoIdentity) -> SsoIdentity {
    let mut id = id.clone();
    id.groups.sort();
    id.groups.dedup();
    id
}

/// Brings `before` up to date with what the provider says now (sign-in or IdP re-check):
/// email, name, groups and role, each change with its audit event; a new role is carried
/// over to the user's personal tokens. Answers the user as changed and the networks whose
/// revision was bumped (the user's devices there changed groups: publish them).
pub(super) async fn apply_identity(
    tx: &mut Transaction<'static, Any>,
    audit: &super::AuditCtx,
    before: &UserRow,
    id: &SsoIdentity,
) -> Result<(UserRow, Vec<zmesh_shared::NetworkId>), StoreError> {
    let r = sqlx::query(&format!(
        "UPDATE users SET email = $2, display_name = $3, groups = $4, role = $5 \
             WHERE id = $1 RETURNING {USER_COLS}"
    ))
    .bind(&before.id)
    .bind(&id.email)
    .bind(&id.display_name)
    .bind(to_json(&id.groups))
    .bind(id.role.as_str())
    .fetch_one(&mut **tx)
    .await?;
    let after = user_from_row(&r)?;
    let target = format!("user:{}", after.username);
    let mut bumped = Vec::new();
    if before.groups != after.groups {
        // Peers of the user's devices must see the new groups at once.
        let nets = sqlx::query(
            "SELECT DISTINCT network_id FROM devices WHERE owner = $1 AND revoked_at_ms IS NULL",
        )
        .bind(format!("user:{}", after.username))
        .fetch_all(&mut **tx)
        .await?;
        for r in &nets {
            let net: zmesh_shared::NetworkId = super::parse_col(r, "network_id")?;
            super::networks::bump_revision(tx, net).await?;
            bumped.push(net);
        }
        let c = Change::new("user.groups_changed", target.clone())
            .before(&serde_json::json!({"groups": before.groups}))
            .after(&serde_json::json!({"groups": after.groups}));
        append(tx, audit, c).await?;
    }
    if before.role != after.role {
        sqlx::query("UPDATE admin_tokens SET role = $2 WHERE user_id = $1")
            .bind(&after.id)
            .bind(after.role.as_str())
            .execute(&mut **tx)
            .await?;
        let c = Change::new("user.role_changed", target.clone())
            .before(&serde_json::json!({"role": before.role}))
            .after(&serde_json::json!({"role": after.role}));
        append(tx, audit, c).await?;
    }
    if before.email != after.email || before.display_name != after.display_name {
        let c = Change::new("user.profile_changed", target)
            .before(&serde_json::json!({"email": before.email, "name": before.display_name}))
            .after(&serde_json::json!({"email": after.email, "name": after.display_name}));
        append(tx, audit, c).await?;
    }
    Ok((after, bumped))
}

impl Store {
    /// Finds or creates the user of `id` and records what changed since their last
    /// sign-in (`user.create`, `user.groups_changed`, `user.role_changed`,
    /// `user.profile_changed`). A disabled user is left as it is.
    pub async fn sso_sign_in_user(
        &self,
        id: &SsoIdentity,
        now_ms: i64,
    ) -> Result<SsoOutcome, StoreError> {
        let mut groups = id.groups.clone();
        groups.sort();
        groups.dedup();
        let mut tx = self.begin_write().await?;
        let Some(before) = by_identity(&mut tx, &id.issuer, &id.subject).await? else {
            let username = sso_username(id);
            validate_username(&username)?;
            let taken = sqlx::query("SELECT id FROM users WHERE lower(username) = lower($1)")
                .bind(&username)
                .fetch_optional(&mut *tx)
                .await?;
            if taken.is_some() {
                return Ok(SsoOutcome::NameTaken(username));
            }
            // No password: an SSO user never signs in with one (an empty hash matches
            // nothing).
            let r = sqlx::query(&format!(
                "INSERT INTO users (id, username, role, password_hash, created_at_ms, \
                 created_by, disabled_at_ms, last_sign_in_ms, issuer, subject, email, \
                 display_name, groups) \
                 VALUES ($1, $2, $3, '', $4, $5, NULL, NULL, $6, $7, $8, $9, $10) \
                 RETURNING {USER_COLS}"
            ))
            .bind(new_user_id())
            .bind(&username)
            .bind(id.role.as_str())
            .bind(now_ms)
            .bind(format!("sso:{}", id.issuer))
            .bind(&id.issuer)
            .bind(&id.subject)
            .bind(&id.email)
            .bind(&id.display_name)
            .bind(to_json(&groups))
            .fetch_one(&mut *tx)
            .await?;
            let u = user_from_row(&r)?;
            append(
                &mut tx,
                &self.audit,
                Change::new("user.create", format!("user:{}", u.username)).after(
                    &serde_json::json!({"method": "sso", "issuer": u.issuer, "role": u.role,
                        "email": u.email, "groups": u.groups}),
                ),
            )
            .await?;
            tx.commit().await?;
            return Ok(SsoOutcome::Ready(u, vec![]));
        };
        if before.disabled_at_ms.is_some() {
            return Ok(SsoOutcome::Disabled(before));
        }
        let (after, bumped) =
            apply_identity(&mut tx, &self.audit, &before, &identity_sorted(id)).await?;
        tx.commit().await?;
        Ok(SsoOutcome::Ready(after, bumped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(email: Option<&str>) -> SsoIdentity {
        SsoIdentity {
            issuer: "https://idp.example.com/realms/x".into(),
            subject: "248289761001".into(),
            email: email.map(str::to_string),
            display_name: None,
            groups: vec![],
            role: Role::Member,
        }
    }

    #[test]
    fn usernames_are_valid() {
        assert_eq!(
            sso_username(&id(Some("Alice@Example.com"))),
            "alice@example.com"
        );
        assert_eq!(sso_username(&id(Some("a+b@x.io"))), "a-b@x.io");
        assert_eq!(sso_username(&id(None)), "248289761001@idp.example.com");
        assert_eq!(sso_username(&id(Some("+x@y"))), "u-x@y");
        for e in ["Alice@Example.com", "a+b@x.io", "+x@y", &"z".repeat(100)] {
            assert!(
                validate_username(&sso_username(&id(Some(e)))).is_ok(),
                "{e}"
            );
        }
    }
}
