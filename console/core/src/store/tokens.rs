//! Admin API tokens, looked up by the hash of the bearer secret, and users' personal
//! tokens.

use sqlx::any::AnyRow;
use sqlx::Row;
use zmesh_shared::TokenId;

use super::audit::{append, Change};
use super::enroll_keys::check_hash;
use super::error::unique_violation;
use super::{parse_col, AdminTokenRow, Role, Store, StoreError};

const TOKEN_COLS: &str = "id, name, role, created_at_ms, expires_at_ms, revoked_at_ms, network_id";

fn token_from_row(r: &AnyRow) -> Result<AdminTokenRow, StoreError> {
    let role: String = r.try_get("role")?;
    Ok(AdminTokenRow {
        id: parse_col(r, "id")?,
        name: r.try_get("name")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::corrupt("role", &role))?,
        created_at_ms: r.try_get("created_at_ms")?,
        expires_at_ms: r.try_get("expires_at_ms")?,
        revoked_at_ms: r.try_get("revoked_at_ms")?,
        network_id: super::opt_parse_col(r, "network_id")?,
    })
}

impl Store {
    pub async fn create_admin_token(
        &self,
        name: &str,
        role: Role,
        token_hash: &str,
        expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<AdminTokenRow, StoreError> {
        self.create_admin_token_in(name, role, token_hash, expires_at_ms, now_ms, None)
            .await
    }

    /// Creates a token scoped to `network` (`None`: console-wide).
    pub async fn create_admin_token_in(
        &self,
        name: &str,
        role: Role,
        token_hash: &str,
        expires_at_ms: Option<i64>,
        now_ms: i64,
        network: Option<zmesh_shared::NetworkId>,
    ) -> Result<AdminTokenRow, StoreError> {
        if name.trim().is_empty() || name.len() > 128 {
            return Err(StoreError::invalid("name", "must be 1 to 128 bytes"));
        }
        check_hash("token_hash", token_hash)?;
        let id = TokenId::new();
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(&format!(
            "INSERT INTO admin_tokens (id, name, role, token_hash, created_at_ms, expires_at_ms, revoked_at_ms, network_id) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL, $7) RETURNING {TOKEN_COLS}"
        ))
        .bind(id.to_string())
        .bind(name)
        .bind(role.as_str())
        .bind(token_hash)
        .bind(now_ms)
        .bind(expires_at_ms)
        .bind(network.map(|n| n.to_string()))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match unique_violation(&e) {
            Some(_) => StoreError::invalid("token_hash", "a token with this secret exists"),
            None => StoreError::Db(e),
        })?;
        let row = token_from_row(&r)?;
        append(
            &mut tx,
            &self.audit,
            Change::new("token.create", format!("token:{id}")).after(&row),
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// The live token with this hash: `None` if unknown, revoked or expired at `now_ms`.
    pub async fn admin_token_by_hash(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<AdminTokenRow>, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM admin_tokens WHERE token_hash = $1 AND revoked_at_ms IS NULL \
             AND (expires_at_ms IS NULL OR expires_at_ms > $2)"
        ))
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(token_from_row).transpose()
    }

    /// All tokens, revoked and expired included, oldest first.
    pub async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM admin_tokens ORDER BY created_at_ms, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Revokes a token (idempotent; the first revocation time is kept).
    pub async fn revoke_admin_token(&self, id: TokenId, now_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let before = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM admin_tokens WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound { what: "token" })?;
        let before = token_from_row(&before)?;
        if before.revoked_at_ms.is_some() {
            return Ok(());
        }
        let r = sqlx::query(&format!(
            "UPDATE admin_tokens SET revoked_at_ms = $2 WHERE id = $1 RETURNING {TOKEN_COLS}"
        ))
        .bind(id.to_string())
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        let row = token_from_row(&r)?;
        append(
            &mut tx,
            &self.audit,
            Change::new("token.revoke", format!("token:{id}"))
                .before(&before)
                .after(&row),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_admin_token(&self, id: TokenId) -> Result<AdminTokenRow, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM admin_tokens WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound { what: "token" })?;
        token_from_row(&r)
    }
}

impl Store {
    // ---- personal API tokens ----

    /// Creates a token owned by `user_id` with that user's role (kept in step when the
    /// role changes; revoked when the user is disabled or deleted).
    pub async fn create_personal_token(
        &self,
        user_id: &str,
        name: &str,
        token_hash: &str,
        expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<AdminTokenRow, StoreError> {
        if name.trim().is_empty() || name.len() > 128 {
            return Err(StoreError::invalid("name", "must be 1 to 128 bytes"));
        }
        check_hash("token_hash", token_hash)?;
        let mut tx = self.begin_write().await?;
        let u = super::accounts::user_in(&mut tx, user_id).await?;
        if u.disabled_at_ms.is_some() {
            return Err(StoreError::invalid("user", "the user is disabled"));
        }
        let id = TokenId::new();
        sqlx::query(
            "INSERT INTO admin_tokens (id, name, role, token_hash, created_at_ms, expires_at_ms, \
             revoked_at_ms, user_id, network_id) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8)",
        )
        .bind(id.to_string())
        .bind(name)
        .bind(u.role.as_str())
        .bind(token_hash)
        .bind(now_ms)
        .bind(expires_at_ms)
        .bind(user_id)
        .bind(u.network_id.map(|n| n.to_string()))
        .execute(&mut *tx)
        .await?;
        let row = AdminTokenRow {
            id,
            name: name.to_string(),
            role: u.role,
            created_at_ms: now_ms,
            expires_at_ms,
            revoked_at_ms: None,
            network_id: u.network_id,
        };
        append(
            &mut tx,
            &self.audit,
            Change::new("token.create", format!("token:{id}"))
                .after(&serde_json::json!({"token": row, "owner": u.username})),
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }
}
