//! `/api/v1/tokens`: admin and auditor API tokens. The token text is returned once at
//! creation; the console keeps only its hash.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use zmesh_shared::time::now_ms;
use zmesh_shared::{Secret, TokenId};

use super::path::ApiPath;
use super::types::TokenList;
use super::ApiJson;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{AdminTokenRow, AuditCtx, Role};

/// Longest token lifetime: ten years.
pub const MAX_TOKEN_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// `admin` (default) or `auditor` (reads everything, changes nothing).
    #[serde(default)]
    #[schema(value_type = Option<Role>)]
    pub role: Option<String>,
    /// Lifetime in seconds; absent: never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 315360000)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenCreated {
    /// Shown once, never stored.
    pub token: String,
    #[serde(flatten)]
    pub row: AdminTokenRow,
}

pub async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name", "1 to 128 printable characters"));
    }
    let role = match body.role.as_deref() {
        None => Role::Admin,
        Some(r) => Role::parse(r).ok_or_else(|| ApiError::invalid("role", "admin or auditor"))?,
    };
    let now = now_ms();
    let expires = match body.ttl_seconds {
        None => None,
        Some(t) if (1..=MAX_TOKEN_TTL_SECONDS).contains(&t) => Some(now + t as i64 * 1000),
        Some(_) => {
            return Err(ApiError::invalid(
                "ttl_seconds",
                format!("1 to {MAX_TOKEN_TTL_SECONDS}"),
            ))
        }
    };
    let token = Secret::generate("zmt_");
    let row = state
        .store
        .acting(ctx)
        .create_admin_token(name, role, &token.hash(), expires, now)
        .await?;
    tracing::info!(token = %row.id, role = row.role.as_str(), "API token created");
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            token: token.expose().to_string(),
            row,
        }),
    ))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<TokenList>, ApiError> {
    let tokens = state.store.list_admin_tokens().await?;
    Ok(Json(TokenList { tokens }))
}

pub async fn revoke(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AdminTokenRow>, ApiError> {
    let id: TokenId = id
        .parse()
        .map_err(|_| ApiError::NotFound { what: "token" })?;
    let store = state.store.acting(ctx);
    store.revoke_admin_token(id, now_ms()).await?;
    tracing::info!(token = %id, "API token revoked");
    Ok(Json(store.get_admin_token(id).await?))
}
