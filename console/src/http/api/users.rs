//! `/api/v1/users`: console accounts (admin or auditor) and their personal API tokens;
//! `/api/v1/whoami`: who the caller is. Passwords are hashed with Argon2id before they
//! reach the store and never come back out.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::types::{CallerKindName, UserList, UserTokenList, WhoAmI};
use crate::http::path::ApiPath;
use crate::http::{ApiError, ApiJson, AppState, Principal};
use crate::service::users::{self as svc, parse_role, UserChange};
use crate::store::{AdminTokenRow, AuditCtx, Role, UserRow};

pub use crate::service::users::PERSONAL_TOKEN_PREFIX;

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
    /// The one network the account may see and change, by name; absent: console-wide.
    #[serde(default)]
    pub network: Option<String>,
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
    // username, then role, then password: the order the checks were always made in
    crate::store::validate_username(body.username.trim())?;
    let role = match body.role.as_deref() {
        None => Role::Auditor,
        Some(r) => parse_role(r)?,
    };
    let network = super::tokens::scope_of(&state, body.network.as_deref()).await?;
    let u = svc::create_in(
        &state.store,
        ctx,
        &body.username,
        role,
        body.password,
        network,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(u)))
}

/// Refuses a signed-in admin demoting, disabling or deleting their own account (they
/// would lock themselves out mid-session; another admin must do it).
fn not_yourself(caller: &Principal, id: &str, what: &str) -> Result<(), ApiError> {
    if let Principal::User(w) = caller {
        let u = &w.user;
        if u.id == id || u.username.eq_ignore_ascii_case(id) {
            return Err(ApiError::conflict(
                "own_account",
                format!("you cannot {what} your own account; ask another admin"),
                Some("id"),
            ));
        }
    }
    Ok(())
}

pub async fn update(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    Extension(caller): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PatchUser>,
) -> Result<Json<UserRow>, ApiError> {
    if body.disabled == Some(true) {
        not_yourself(&caller, &id, "disable")?;
    }
    if body.role.as_deref().is_some_and(|r| r != "admin") {
        not_yourself(&caller, &id, "demote")?;
    }
    let c = UserChange {
        role: body.role.as_deref().map(parse_role).transpose()?,
        password: body.password,
        disabled: body.disabled,
        reason: None,
    };
    Ok(Json(svc::update(&state, ctx, &id, c).await?))
}

pub async fn remove(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    Extension(caller): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    not_yourself(&caller, &id, "delete")?;
    svc::delete(&state.store, ctx, &id).await?;
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

pub async fn whoami(Extension(caller): Extension<Principal>) -> Json<WhoAmI> {
    let kind = match caller {
        Principal::Token { .. } => CallerKindName::Token,
        Principal::User(_) => CallerKindName::User,
    };
    Json(WhoAmI {
        kind,
        label: caller.label(),
        name: caller.name().to_string(),
        role: caller.role(),
    })
}
