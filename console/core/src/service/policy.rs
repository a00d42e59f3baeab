//! The access policy: set a new text or roll back to an earlier version. Validation
//! happens inside the saving transaction against the devices as they are then, so a
//! policy is never checked against one inventory and saved over another. A rejected
//! text changes nothing and is recorded as `policy.rejected`.

use zmesh_shared::policy::PolicyError;
use zmesh_shared::time::now_ms;

use super::audit::record_refusal;
use super::{AuditCtx, Core, ServiceError};
use crate::domain::policy::validate;
use crate::store::SavedPolicy;

/// Saves `text` (a rollback when `rollback_of` names the version it restores).
/// `Ok(Err(problems))`: rejected with every problem found; the old policy stays.
pub async fn save(
    core: &Core,
    ctx: AuditCtx,
    author: &str,
    text: String,
    rollback_of: Option<u64>,
) -> Result<Result<SavedPolicy, Vec<PolicyError>>, ServiceError> {
    let r = core
        .store
        .acting(ctx.clone())
        .save_policy(
            core.network_id,
            &text,
            author,
            rollback_of,
            now_ms(),
            |devices, owners, current| {
                let v = validate(&text, devices, owners, &current.text)?;
                let summary = match rollback_of {
                    Some(r) => format!("rollback to version {r}; {}", v.summary),
                    None => v.summary,
                };
                let rules = serde_json::to_value(&v.rules).unwrap_or_default();
                Ok::<_, Vec<PolicyError>>((summary, rules))
            },
        )
        .await?;
    match &r {
        Ok(SavedPolicy { version, revision }) => {
            tracing::info!(version = version.version, revision, summary = %version.summary, "access policy saved");
            core.publish_revision(core.network_id, *revision);
            // new auto_approvers may cover routes already waiting
            super::routes::apply_auto_approvers(core, core.network_id).await;
        }
        Err(errors) => {
            tracing::info!(problems = errors.len(), "access policy rejected");
            record_refusal(
                &core.store,
                ctx,
                "policy.rejected",
                serde_json::json!({ "problems": errors.len(), "rollback_of": rollback_of }),
            )
            .await;
        }
    }
    Ok(r)
}
