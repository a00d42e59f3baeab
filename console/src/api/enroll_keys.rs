//! `/api/v1/enroll-keys`: create (the key text is shown once), list, get, revoke.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use zmesh_shared::enroll_key::EnrollKey;
use zmesh_shared::time::now_ms;
use zmesh_shared::EnrollKeyId;

use super::auth::Caller;
use super::path::ApiPath;
use super::types::{CreateEnrollKey, EnrollKeyCreated, EnrollKeyList};
use super::ApiJson;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{AuditCtx, EnrollKeyRow, NewEnrollKey};

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(ctx): Extension<AuditCtx>,
    ApiJson(body): ApiJson<CreateEnrollKey>,
) -> Result<(StatusCode, Json<EnrollKeyCreated>), ApiError> {
    let now = now_ms();
    let expires_at_ms = body.expiry(now)?;
    declared(&state, "tags", &body.tags).await?;
    let secret = EnrollKey::new_secret();
    let row = state
        .store
        .acting(ctx)
        .create_enroll_key(
            NewEnrollKey {
                network_id: state.network_id,
                secret_hash: secret.hash(),
                description: body.description,
                reusable: body.reusable,
                preapproved: body.preapproved,
                tags: body.tags,
                expires_at_ms: Some(expires_at_ms),
                created_by: caller.label(),
            },
            now,
        )
        .await?;
    tracing::info!(enroll_key = %row.id, reusable = row.reusable, "enrollment key created");
    let key = EnrollKey {
        secret,
        pin: state.cert_pin,
    }
    .to_text();
    Ok((
        StatusCode::CREATED,
        Json(EnrollKeyCreated {
            key,
            enroll_key: row,
        }),
    ))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<EnrollKeyList>, ApiError> {
    Ok(Json(EnrollKeyList {
        enroll_keys: state.store.list_enroll_keys(state.network_id).await?,
    }))
}

fn parse_id(id: &str) -> Result<EnrollKeyId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound {
        what: "enrollment key",
    })
}

async fn find(state: &AppState, id: &str) -> Result<EnrollKeyRow, ApiError> {
    let row = state.store.get_enroll_key(parse_id(id)?).await?;
    if row.network_id != state.network_id {
        return Err(ApiError::NotFound {
            what: "enrollment key",
        });
    }
    Ok(row)
}

pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EnrollKeyRow>, ApiError> {
    Ok(Json(find(&state, &id).await?))
}

pub async fn revoke(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EnrollKeyRow>, ApiError> {
    let row = find(&state, &id).await?;
    let row = state
        .store
        .acting(ctx)
        .revoke_enroll_key(row.id, now_ms())
        .await?;
    tracing::info!(enroll_key = %row.id, "enrollment key revoked");
    Ok(Json(row))
}

/// Tags handed out by keys or admins must be declared in the policy's `tag_owners`.
pub(crate) async fn declared(
    state: &AppState,
    field: &str,
    tags: &[String],
) -> Result<(), ApiError> {
    if tags.is_empty() {
        return Ok(());
    }
    let p = state.store.current_policy(state.network_id).await?;
    crate::policy::check_tags_declared(&p.text, field, tags)
}
