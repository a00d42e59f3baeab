//! Enrollment keys: create (the caller gets the secret once; the store keeps its hash),
//! revoke, and the rule that tags handed out must be declared in the policy.

use zmesh_shared::enroll_key::EnrollKey;
use zmesh_shared::time::now_ms;
use zmesh_shared::{CertFingerprint, EnrollKeyId};

use super::{AuditCtx, Core, ServiceError};
use crate::domain::names::{check_description, check_tags, key_expiry};
use crate::domain::policy::check_tags_declared;
use crate::store::{EnrollKeyRow, NewEnrollKey};

/// Input of [`create`], as the admin gave it.
#[derive(Debug, Clone, Default)]
pub struct KeyRequest {
    pub reusable: bool,
    pub preapproved: bool,
    pub tags: Vec<String>,
    pub ttl_seconds: Option<u64>,
    pub expires_at_ms: Option<i64>,
    pub description: Option<String>,
}

/// Creates a key; returns its row and its text (`zmek1.<secret>.<pin>`), shown once.
pub async fn create(
    core: &Core,
    ctx: AuditCtx,
    created_by: String,
    pin: Option<CertFingerprint>,
    req: KeyRequest,
) -> Result<(EnrollKeyRow, String), ServiceError> {
    let now = now_ms();
    check_tags("tags", &req.tags)?;
    check_description("description", req.description.as_deref())?;
    let expires_at_ms = key_expiry(req.ttl_seconds, req.expires_at_ms, now)?;
    tags_declared(core, "tags", &req.tags).await?;
    let secret = EnrollKey::new_secret();
    let row = core
        .store
        .acting(ctx)
        .create_enroll_key(
            NewEnrollKey {
                network_id: core.network_id,
                secret_hash: secret.hash(),
                description: req.description,
                reusable: req.reusable,
                preapproved: req.preapproved,
                tags: req.tags,
                expires_at_ms: Some(expires_at_ms),
                created_by,
            },
            now,
        )
        .await?;
    tracing::info!(enroll_key = %row.id, reusable = row.reusable, "enrollment key created");
    Ok((row, EnrollKey { secret, pin }.to_text()))
}

/// A key of this console's network by id.
pub async fn find(core: &Core, id: &str) -> Result<EnrollKeyRow, ServiceError> {
    let not_found = ServiceError::NotFound {
        what: "enrollment key",
    };
    let Ok(id) = id.parse::<EnrollKeyId>() else {
        return Err(not_found);
    };
    let row = core.store.get_enroll_key(id).await?;
    if row.network_id != core.network_id {
        return Err(not_found);
    }
    Ok(row)
}

pub async fn revoke(core: &Core, ctx: AuditCtx, id: &str) -> Result<EnrollKeyRow, ServiceError> {
    let row = find(core, id).await?;
    let row = core
        .store
        .acting(ctx)
        .revoke_enroll_key(row.id, now_ms())
        .await?;
    tracing::info!(enroll_key = %row.id, "enrollment key revoked");
    Ok(row)
}

/// Every tag must be declared in the policy in force (422 naming `field[i]`).
pub async fn tags_declared(core: &Core, field: &str, tags: &[String]) -> Result<(), ServiceError> {
    if tags.is_empty() {
        return Ok(());
    }
    let p = core.store.current_policy(core.network_id).await?;
    Ok(check_tags_declared(&p.text, field, tags)?)
}
