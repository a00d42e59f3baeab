//! API tokens: create (the secret is returned once, the store keeps its hash) and revoke.

use zmesh_shared::time::now_ms;
use zmesh_shared::{Secret, TokenId};

use super::{AuditCtx, Core, ServiceError};
use crate::domain::names::{check_token_name, check_token_ttl};
use crate::store::{AdminTokenRow, Role};

/// Creates an admin or auditor token; returns the row and the token text.
pub async fn create(
    core: &Core,
    ctx: AuditCtx,
    name: &str,
    role: Role,
    ttl_seconds: Option<u64>,
    network: Option<zmesh_shared::NetworkId>,
) -> Result<(AdminTokenRow, Secret), ServiceError> {
    let name = name.trim();
    check_token_name("name", name)?;
    let now = now_ms();
    let expires = match ttl_seconds {
        None => None,
        Some(t) => {
            check_token_ttl("ttl_seconds", t)?;
            Some(now + t as i64 * 1000)
        }
    };
    let token = Secret::generate("zmt_");
    let row = core
        .store
        .acting(ctx)
        .create_admin_token_in(name, role, &token.hash(), expires, now, network)
        .await?;
    tracing::info!(token = %row.id, role = row.role.as_str(), "API token created");
    Ok((row, token))
}

pub async fn revoke(core: &Core, ctx: AuditCtx, id: &str) -> Result<AdminTokenRow, ServiceError> {
    let id: TokenId = id
        .parse()
        .map_err(|_| ServiceError::NotFound { what: "token" })?;
    let store = core.store.acting(ctx);
    store.revoke_admin_token(id, now_ms()).await?;
    tracing::info!(token = %id, "API token revoked");
    Ok(store.get_admin_token(id).await?)
}

/// The first admin token of a console whose database has no usable one (`serve` writes
/// it to DATA_DIR/admin.token). Recorded with the actor `system`.
pub async fn create_initial_admin(store: &crate::store::Store) -> Result<Secret, ServiceError> {
    let token = Secret::generate("zmt_");
    store
        .acting(AuditCtx::system())
        .create_admin_token("initial-admin", Role::Admin, &token.hash(), None, now_ms())
        .await?;
    Ok(token)
}
