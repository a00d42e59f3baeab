//! `/api/v1/users`: console accounts (admin or auditor) and their personal API tokens;
//! `/api/v1/whoami`: who the caller is. Passwords are hashed with Argon2id before they
//! reach the store and never come back out.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::{ApiError, ApiJson, AppState, Principal};
use crate::service::users::{self as svc, parse_role, UserChange};
use crate::store::{AdminTokenRow, AuditCtx, Role, UserRow};

pub use crate::service::users::PERSONAL_TOKEN_PREFIX;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    pub password: String,
    /// `admin` or `auditor` (default).
    #[serde(default)]
    pub role: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePersonalToken {
    pub name: String,
    /// Lifetime in seconds (default 30 days).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PersonalTokenCreated {
    /// Shown once, never stored.
    pub token: String,
    pub owner: String,
    #[serde(flatten)]
    pub row: AdminTokenRow,
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "users": state.store.list_users().await? })))
}

pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserRow>, ApiError> {
    Ok(Json(state.store.get_user(&id).await?))
}

pub async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<UserRow>), ApiError> {
    // username, then role, then password: the order the checks were always made in
    crate::store::validate_username(body.username.trim())?;
    let role = match body.role.as_deref() {
        None => Role::Auditor,
        Some(r) => parse_role(r)?,
    };
    let u = svc::create(&state.store, ctx, &body.username, role, body.password).await?;
    Ok((StatusCode::CREATED, Json(u)))
}

pub async fn update(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchUser>,
) -> Result<Json<UserRow>, ApiError> {
    let c = UserChange {
        role: body.role.as_deref().map(parse_role).transpose()?,
        password: body.password,
        disabled: body.disabled,
    };
    Ok(Json(svc::update(&state.store, ctx, &id, c).await?))
}

pub async fn remove(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    svc::delete(&state.store, ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_tokens(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let u = state.store.get_user(&id).await?;
    let tokens: Vec<_> = state
        .store
        .list_tokens_with_owner()
        .await?
        .into_iter()
        .filter(|t| t.owner.as_deref() == Some(u.username.as_str()))
        .collect();
    Ok(Json(json!({ "tokens": tokens })))
}

pub async fn create_token(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CreatePersonalToken>,
) -> Result<(StatusCode, Json<PersonalTokenCreated>), ApiError> {
    let (u, row, token) =
        svc::create_personal_token(&state.store, ctx, &id, &body.name, body.ttl_seconds).await?;
    Ok((
        StatusCode::CREATED,
        Json(PersonalTokenCreated {
            token: token.expose().to_string(),
            owner: u.username,
            row,
        }),
    ))
}

pub async fn whoami(Extension(caller): Extension<Principal>) -> Json<Value> {
    Json(json!({
        "kind": caller.kind(),
        "name": caller.name(),
        "role": caller.role(),
        "label": caller.label(),
    }))
}
