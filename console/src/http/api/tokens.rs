//! `/api/v1/tokens`: admin and auditor API tokens. The token text is returned once at
//! creation; the console keeps only its hash.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::types::TokenList;
use crate::http::path::ApiPath;
use crate::http::{ApiError, ApiJson, AppState};
use crate::service::{tokens as svc, users::parse_role};
use crate::store::{AdminTokenRow, AuditCtx, Role};

pub use crate::domain::names::MAX_TOKEN_TTL_SECONDS;

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
    #[schema(minimum = 1, maximum = 315360000)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// The one network the token may act in, by name; absent: console-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
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
    // the name is checked first, as it always was
    crate::domain::names::check_token_name("name", body.name.trim())?;
    let role = match body.role.as_deref() {
        None => Role::Admin,
        Some(r) => parse_role(r)?,
    };
    let network = scope_of(&state, body.network.as_deref()).await?;
    let (row, token) =
        svc::create(&state, ctx, &body.name, role, body.ttl_seconds, network).await?;
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
    Ok(Json(svc::revoke(&state, ctx, &id).await?))
}

/// The network named in a `network` field of a new account or token (`None`: absent,
/// console-wide); an unknown name is refused with 422 naming the field.
pub async fn scope_of(
    state: &AppState,
    name: Option<&str>,
) -> Result<Option<zmesh_shared::NetworkId>, ApiError> {
    let Some(name) = name else { return Ok(None) };
    match state.store.network_by_name(name).await? {
        Some(n) => Ok(Some(n.id)),
        None => Err(ApiError::invalid(
            "network",
            format!("no network named {name:?}"),
        )),
    }
}
