//! `/api/v1/enroll-keys`: create (the key text is shown once), list, get, revoke.

use axum::http::StatusCode;
use axum::{Extension, Json};

use super::types::{CreateEnrollKey, EnrollKeyCreated, EnrollKeyList};
use crate::http::path::ApiPath;
use crate::http::scope::Scoped;
use crate::http::{ApiError, ApiJson, Principal};
use crate::service::enroll_keys::{self as svc, KeyRequest};
use crate::store::{AuditCtx, EnrollKeyRow};

pub async fn create(
    Scoped(state): Scoped,
    Extension(caller): Extension<Principal>,
    Extension(ctx): Extension<AuditCtx>,
    ApiJson(body): ApiJson<CreateEnrollKey>,
) -> Result<(StatusCode, Json<EnrollKeyCreated>), ApiError> {
    let req = KeyRequest {
        reusable: body.reusable,
        preapproved: body.preapproved,
        tags: body.tags,
        ttl_seconds: body.ttl_seconds,
        expires_at_ms: body.expires_at_ms,
        description: body.description,
    };
    let (row, key) = svc::create(&state, ctx, caller.label(), state.cert_pin, req).await?;
    Ok((
        StatusCode::CREATED,
        Json(EnrollKeyCreated {
            key,
            enroll_key: row,
        }),
    ))
}

pub async fn list(Scoped(state): Scoped) -> Result<Json<EnrollKeyList>, ApiError> {
    Ok(Json(EnrollKeyList {
        enroll_keys: state.store.list_enroll_keys(state.network_id).await?,
    }))
}

pub async fn get_one(
    Scoped(state): Scoped,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EnrollKeyRow>, ApiError> {
    Ok(Json(svc::find(&state, &id).await?))
}

pub async fn revoke(
    Scoped(state): Scoped,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EnrollKeyRow>, ApiError> {
    Ok(Json(svc::revoke(&state, ctx, &id).await?))
}
