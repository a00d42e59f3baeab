//! The periodic re-check of SSO users at their OpenID Provider, as the store sees it:
//! the user's refresh token (sealed by the caller: this layer only ever holds the
//! opaque, encrypted text), claiming the users due for a check (once, even with several
//! replicas), and recording what the check found, with the user brought up to date in
//! the same transaction when their groups or role changed.

use sqlx::Row;

use super::accounts::{user_from_row, USER_COLS};
use super::sso::{apply_identity, identity_sorted};
use super::{SsoIdentity, Store, StoreError, UserRow};

/// A refresh token as the console keeps it: encrypted (`v1:` + base64), opaque here.
/// `Debug` shows none of it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedToken(String);

impl SealedToken {
    pub fn new(s: String) -> Self {
        SealedToken(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SealedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedToken([redacted])")
    }
}

/// What to do with the stored refresh token when recording a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenUpdate {
    Keep,
    /// The provider rotated it.
    Replace(SealedToken),
    /// It no longer opens (the client secret changed): the user must sign in again.
    Clear,
}

/// A user claimed for a check, and their sealed refresh token (if any).
#[derive(Debug, Clone)]
pub struct DueUser {
    pub user: UserRow,
    pub token: Option<SealedToken>,
}

/// What [`Store::idp_refresh_user`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdpRefreshed {
    /// Brought up to date; `result` is what was recorded (`ok`, `groups changed`, `role
    /// changed`); the networks listed had their revision bumped (publish them).
    Updated {
        user: Box<UserRow>,
        result: String,
        bumped: Vec<zmesh_shared::NetworkId>,
    },
    /// Disabled (or gone) since it was claimed: left alone.
    Gone,
}

async fn set_check(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_id: &str,
    now_ms: i64,
    result: &str,
    token: &TokenUpdate,
) -> Result<(), StoreError> {
    // one short line: the result is shown in listings
    let result: String = result.chars().take(200).collect();
    let q = match token {
        TokenUpdate::Keep => {
            sqlx::query("UPDATE users SET idp_checked_at_ms = $2, idp_check = $3 WHERE id = $1")
        }
        TokenUpdate::Clear => sqlx::query(
            "UPDATE users SET idp_checked_at_ms = $2, idp_check = $3, \
             refresh_token_enc = NULL WHERE id = $1",
        ),
        TokenUpdate::Replace(_) => sqlx::query(
            "UPDATE users SET idp_checked_at_ms = $2, idp_check = $3, \
             refresh_token_enc = $4 WHERE id = $1",
        ),
    };
    let q = q.bind(user_id).bind(now_ms).bind(result);
    let q = match token {
        TokenUpdate::Replace(t) => q.bind(t.as_str().to_string()),
        _ => q,
    };
    q.execute(&mut **tx).await?;
    Ok(())
}

impl Store {
    /// Keeps the refresh token of a sign-in (sealed) and notes the sign-in as a check:
    /// the next re-check is one interval from now.
    pub async fn set_refresh_token(
        &self,
        user_id: &str,
        token: &SealedToken,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        set_check(
            &mut tx,
            user_id,
            now_ms,
            "ok",
            &TokenUpdate::Replace(token.clone()),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims at most `limit` active users of `issuer` whose last check is older than
    /// `due_before_ms` (never checked first), marking them checked at `now_ms`. The claim
    /// only succeeds if nobody else changed the mark since it was read, so two replicas
    /// never check one user at the same time.
    pub async fn claim_idp_checks(
        &self,
        issuer: &str,
        due_before_ms: i64,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<DueUser>, StoreError> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLS}, refresh_token_enc FROM users \
             WHERE issuer = $1 AND disabled_at_ms IS NULL \
             AND COALESCE(idp_checked_at_ms, 0) <= $2 \
             ORDER BY COALESCE(idp_checked_at_ms, 0), id LIMIT $3"
        ))
        .bind(issuer)
        .bind(due_before_ms)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let user = user_from_row(r)?;
            let token: Option<String> = r.try_get("refresh_token_enc")?;
            let claimed = sqlx::query(
                "UPDATE users SET idp_checked_at_ms = $2 WHERE id = $1 \
                 AND COALESCE(idp_checked_at_ms, 0) = $3 AND disabled_at_ms IS NULL",
            )
            .bind(&user.id)
            .bind(now_ms)
            .bind(user.idp_checked_at_ms.unwrap_or(0))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 1 {
                out.push(DueUser {
                    user,
                    token: token.filter(|t| !t.is_empty()).map(SealedToken),
                });
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Records what a check found that changes nothing else (`unreachable: …`, `no
    /// refresh token`, ...), and what to do with the stored token.
    pub async fn record_idp_check(
        &self,
        user_id: &str,
        now_ms: i64,
        result: &str,
        token: TokenUpdate,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        set_check(&mut tx, user_id, now_ms, result, &token).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Brings an active user up to date with what the provider says at a re-check,
    /// exactly as a sign-in does (`user.groups_changed`, `user.role_changed`,
    /// `user.profile_changed`, revision bumps), records the result and the rotated
    /// token, all in one transaction. `id.role` was decided by the caller.
    pub async fn idp_refresh_user(
        &self,
        user_id: &str,
        id: &SsoIdentity,
        token: TokenUpdate,
        now_ms: i64,
    ) -> Result<IdpRefreshed, StoreError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(&format!(
            "SELECT {USER_COLS} FROM users WHERE id = $1 AND disabled_at_ms IS NULL \
             AND issuer = $2 AND subject = $3"
        ))
        .bind(user_id)
        .bind(&id.issuer)
        .bind(&id.subject)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(before) = r.as_ref().map(user_from_row).transpose()? else {
            return Ok(IdpRefreshed::Gone);
        };
        let (after, bumped) =
            apply_identity(&mut tx, &self.audit, &before, &identity_sorted(id)).await?;
        let result = if before.groups != after.groups {
            "groups changed"
        } else if before.role != after.role {
            "role changed"
        } else {
            "ok"
        };
        set_check(&mut tx, user_id, now_ms, result, &token).await?;
        let r = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        let user = user_from_row(&r)?;
        tx.commit().await?;
        Ok(IdpRefreshed::Updated {
            user: Box::new(user),
            result: result.into(),
            bumped,
        })
    }
}
