//! `/api/v1/changes`: how far each change reached the agents (`applied by N of M
//! connected peers`, latencies, devices still pending); read-only, from the rollouts
//! `service::rollouts` records.

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::rollout::Report;
use crate::http::path::ApiPath;
use crate::http::scope::Scoped;
use crate::http::ApiError;
use crate::service::rollouts as svc;

/// Rollouts listed by `GET /api/v1/changes`.
const LIST_LIMIT: u32 = 20;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChangeList {
    /// The network's revision now; a change made after this call is published at a
    /// higher one.
    pub revision: u64,
    /// The newest rollouts, newest first.
    pub changes: Vec<Report>,
}

pub async fn list(Scoped(state): Scoped) -> Result<Json<ChangeList>, ApiError> {
    let (revision, changes) = svc::recent(&state, LIST_LIMIT).await?;
    Ok(Json(ChangeList { revision, changes }))
}

pub async fn get_one(
    Scoped(state): Scoped,
    ApiPath(revision): ApiPath<u64>,
) -> Result<Json<Report>, ApiError> {
    svc::report(&state, revision)
        .await?
        .map(Json)
        // nothing published at or after this revision yet
        .ok_or(ApiError::NotFound { what: "change" })
}
