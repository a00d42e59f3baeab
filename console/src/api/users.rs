//! `/api/v1/users`: console accounts (admin or auditor) and their personal API tokens;
//! `/api/v1/whoami`: who the caller is. Passwords are hashed with Argon2id before they
//! reach the store and never come back out.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use zmesh_shared::time::now_ms;
use zmesh_shared::Secret;

use super::auth::{Caller, CallerKind};
use super::path::ApiPath;
use super::tokens::MAX_TOKEN_TTL_SECONDS;
use super::types::{CallerKindName, UserList, UserTokenList, WhoAmI};
use super::ApiJson;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{AdminTokenRow, AuditCtx, Role, UserRow, UserUpdate};
use crate::web::session::{check_password_rules, hash_password};

/// Prefix of personal API tokens (service tokens are `zmt_`).
pub const PERSONAL_TOKEN_PREFIX: &str = "zmp_";

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    #[schema(min_length = 12, max_length = 1024, write_only)]
    pub password: String,
    /// `admin` or `auditor` (default).
    #[serde(default)]
    #[schema(value_type = Option<Role>)]
    pub role: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    #[serde(default)]
    #[schema(value_type = Option<Role>)]
    pub role: Option<String>,
    #[serde(default)]
    #[schema(min_length = 12, max_length = 1024, write_only)]
    pub password: Option<String>,
    #[serde(default)]
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePersonalToken {
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// Lifetime in seconds (default 30 days).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 315360000)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PersonalTokenCreated {
    /// Shown once, never stored.
    pub token: String,
    pub owner: String,
    #[serde(flatten)]
    pub row: AdminTokenRow,
}

fn parse_role(r: &str) -> Result<Role, ApiError> {
    Role::parse(r).ok_or_else(|| ApiError::invalid("role", "admin or auditor"))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<UserList>, ApiError> {
    Ok(Json(UserList {
        users: state.store.list_users().await?,
    }))
}

pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<UserRow>, ApiError> {
    Ok(Json(state.store.get_user(&id).await?))
}

pub async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<UserRow>), ApiError> {
    let username = body.username.trim().to_string();
    crate::store::validate_username(&username)?;
    let role = match body.role.as_deref() {
        None => Role::Auditor,
        Some(r) => parse_role(r)?,
    };
    check_password_rules("password", &body.password)?;
    let phc = hash_password(body.password).await?;
    let u = state
        .store
        .acting(ctx)
        .create_user(&username, role, &phc, now_ms())
        .await?;
    tracing::info!(user = %u.username, role = u.role.as_str(), "user created");
    Ok((StatusCode::CREATED, Json(u)))
}

pub async fn update(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PatchUser>,
) -> Result<Json<UserRow>, ApiError> {
    let role = body.role.as_deref().map(parse_role).transpose()?;
    let password_hash = match body.password {
        Some(pw) => {
            check_password_rules("password", &pw)?;
            Some(hash_password(pw).await?)
        }
        None => None,
    };
    let u = state
        .store
        .acting(ctx)
        .update_user(
            &id,
            UserUpdate {
                role,
                password_hash,
                disabled: body.disabled,
            },
            now_ms(),
        )
        .await?;
    tracing::info!(user = %u.username, "user updated");
    Ok(Json(u))
}

pub async fn remove(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.store.acting(ctx).delete_user(&id, now_ms()).await?;
    tracing::info!(user = %id, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_tokens(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<UserTokenList>, ApiError> {
    let u = state.store.get_user(&id).await?;
    let tokens: Vec<_> = state
        .store
        .list_tokens_with_owner()
        .await?
        .into_iter()
        .filter(|t| t.owner.as_deref() == Some(u.username.as_str()))
        .collect();
    Ok(Json(UserTokenList { tokens }))
}

pub async fn create_token(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CreatePersonalToken>,
) -> Result<(StatusCode, Json<PersonalTokenCreated>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name", "1 to 128 printable characters"));
    }
    let ttl = body.ttl_seconds.unwrap_or(30 * 24 * 3600);
    if !(1..=MAX_TOKEN_TTL_SECONDS).contains(&ttl) {
        return Err(ApiError::invalid(
            "ttl_seconds",
            format!("1 to {MAX_TOKEN_TTL_SECONDS}"),
        ));
    }
    let u = state.store.get_user(&id).await?;
    let now = now_ms();
    let token = Secret::generate(PERSONAL_TOKEN_PREFIX);
    let row = state
        .store
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
    Ok((
        StatusCode::CREATED,
        Json(PersonalTokenCreated {
            token: token.expose().to_string(),
            owner: u.username,
            row,
        }),
    ))
}

pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<WhoAmI> {
    let kind = match caller.1 {
        CallerKind::Token => CallerKindName::Token,
        CallerKind::User => CallerKindName::User,
    };
    Json(WhoAmI {
        kind,
        label: caller.label(),
        name: caller.0.name,
        role: caller.0.role,
    })
}
