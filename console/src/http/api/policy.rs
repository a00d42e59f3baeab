//! `/api/v1/policy`: the access policy in force, saving a new one (validated against
//! the live inventory; rejected with every reason and nothing changed), history,
//! single versions, rollback, and the reachability tools `check` and `diff`.
//!
//! A policy body is the policy text itself (`text/plain`, or the JSON document sent as
//! `application/json`) or a JSON wrapper `{"policy": "<text>"}`. The wrapper is told
//! apart by being an object whose only field is a string `policy`, which no valid
//! policy document can be (`policy` is not a policy field).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use zmesh_shared::policy::{
    self, Edit, EditError, Outline, PolicyError, PortRange, Proto, RuleRef, RuleSpec,
};
use zmesh_shared::wire::ErrorDetail;
use zmesh_shared::DeviceId;

use crate::domain::policy::{snapshot_inventory, summarize, RuleChanges};
use crate::http::path::ApiPath;
use crate::http::scope::Scoped;
use crate::http::{ApiError, ApiJson, AppState, Principal};
use crate::store::{AuditCtx, PolicyVersion, SavedPolicy};

/// Largest policy text accepted (500 rules with long source lists fit easily).
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;

/// A policy text from a request body (see the module header).
pub struct PolicyBody(pub String);

impl<S: Send + Sync> FromRequest<S> for PolicyBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ct = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::bad_request(
                "body_unreadable",
                format!("could not read the request body: {}", e.body_text()),
            )
        })?;
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(ApiError::bad_request(
                "body_too_large",
                format!("policy exceeds {MAX_POLICY_BYTES} bytes"),
            ));
        }
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| ApiError::invalid("policy", "the policy text is not valid UTF-8"))?;
        if text.trim().is_empty() {
            return Err(ApiError::bad_request(
                "body_required",
                "request body is empty; send the policy text",
            ));
        }
        match ct.as_deref() {
            Some("application/json") => {
                if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(&text) {
                    if o.len() == 1 {
                        if let Some(serde_json::Value::String(p)) = o.get("policy") {
                            return Ok(PolicyBody(p.clone()));
                        }
                    }
                }
                Ok(PolicyBody(text))
            }
            None | Some("text/plain") | Some("application/octet-stream") => Ok(PolicyBody(text)),
            Some(other) => Err(ApiError::UnsupportedMediaType(format!(
                "expected text/plain or application/json, got {other}"
            ))),
        }
    }
}

/// 422 answer for a refused policy: the usual `ErrorBody` plus every reason.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyRejected {
    pub error: ErrorDetail,
    pub errors: Vec<PolicyError>,
}

fn rejected(errors: Vec<PolicyError>) -> Response {
    let n = errors.len();
    let body = PolicyRejected {
        error: ErrorDetail {
            code: "policy_invalid".into(),
            message: format!(
                "policy rejected ({n} problem{}); the policy in force is unchanged",
                if n == 1 { "" } else { "s" }
            ),
            field: Some("policy".into()),
        },
        errors,
    };
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

/// A saved version and the network revision it produced.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = PolicySaved)]
pub struct Saved {
    #[serde(flatten)]
    pub version: PolicyVersion,
    pub revision: u64,
}

pub async fn get_current(Scoped(state): Scoped) -> Result<Json<PolicyVersion>, ApiError> {
    Ok(Json(state.store.current_policy(state.network_id).await?))
}

async fn save(
    state: &AppState,
    caller: &Principal,
    ctx: AuditCtx,
    text: String,
    rollback_of: Option<u64>,
) -> Result<Response, ApiError> {
    let r = crate::service::policy::save(state, ctx, &caller.label(), text, rollback_of).await?;
    match r {
        Ok(SavedPolicy { version, revision }) => {
            Ok(Json(Saved { version, revision }).into_response())
        }
        Err(errors) => Ok(rejected(errors)),
    }
}

pub async fn put(
    Scoped(state): Scoped,
    Extension(caller): Extension<Principal>,
    Extension(ctx): Extension<AuditCtx>,
    PolicyBody(text): PolicyBody,
) -> Result<Response, ApiError> {
    save(&state, &caller, ctx, text, None).await
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = PolicyRollback)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    pub version: u64,
}

pub async fn rollback(
    Scoped(state): Scoped,
    Extension(caller): Extension<Principal>,
    Extension(ctx): Extension<AuditCtx>,
    ApiJson(body): ApiJson<RollbackRequest>,
) -> Result<Response, ApiError> {
    let old = match state
        .store
        .policy_version(state.network_id, body.version)
        .await
    {
        Ok(v) => v,
        Err(crate::store::StoreError::NotFound { .. }) => {
            return Err(ApiError::invalid(
                "version",
                format!("there is no policy version {}", body.version),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    save(&state, &caller, ctx, old.text, Some(body.version)).await
}

/// A history entry: everything but the text.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = PolicyHistoryEntry)]
pub struct HistoryEntry {
    pub version: u64,
    pub author: String,
    pub created_at_ms: i64,
    pub summary: String,
    pub rollback_of: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = PolicyHistory)]
pub struct History {
    pub versions: Vec<HistoryEntry>,
}

pub async fn history(Scoped(state): Scoped) -> Result<Json<History>, ApiError> {
    let versions = state
        .store
        .policy_history(state.network_id)
        .await?
        .into_iter()
        .map(|v| HistoryEntry {
            version: v.version,
            author: v.author,
            created_at_ms: v.created_at_ms,
            summary: v.summary,
            rollback_of: v.rollback_of,
        })
        .collect();
    Ok(Json(History { versions }))
}

pub async fn get_version(
    Scoped(state): Scoped,
    ApiPath(n): ApiPath<String>,
) -> Result<Json<PolicyVersion>, ApiError> {
    let n: u64 = n
        .parse()
        .map_err(|_| ApiError::invalid("version", "a version is a non-negative integer"))?;
    Ok(Json(state.store.policy_version(state.network_id, n).await?))
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = PolicyCheck)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Device name or id.
    pub src: String,
    pub dst: String,
    pub proto: Proto,
    /// Destination port; required for tcp and udp.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = PolicyCheckResult)]
pub struct CheckResult {
    pub allowed: bool,
    /// The first rule that accepts, when allowed.
    pub rule: Option<RuleRef>,
    pub policy_version: u64,
}

async fn current_snapshot(
    state: &AppState,
) -> Result<std::sync::Arc<crate::store::NetworkSnapshot>, ApiError> {
    let net = state.store.get_network(state.network_id).await?;
    Ok(state
        .snapshots
        .get(&state.store, state.network_id, net.revision)
        .await?)
}

fn find_device(
    snap: &crate::store::NetworkSnapshot,
    field: &str,
    s: &str,
) -> Result<DeviceId, ApiError> {
    let by_id = s.parse::<DeviceId>().ok();
    snap.devices
        .iter()
        .find(|d| Some(d.id) == by_id || d.name.eq_ignore_ascii_case(s))
        .map(|d| d.id)
        .ok_or_else(|| ApiError::invalid(field, format!("no device named {s:?}")))
}

pub async fn check(
    Scoped(state): Scoped,
    ApiJson(body): ApiJson<CheckRequest>,
) -> Result<Json<CheckResult>, ApiError> {
    let port = match (body.proto, body.port) {
        (Proto::Tcp | Proto::Udp, None) => {
            return Err(ApiError::invalid(
                "port",
                "a port is required for tcp and udp",
            ))
        }
        (_, Some(0)) => return Err(ApiError::invalid("port", "ports are 1-65535")),
        (_, p) => p.unwrap_or(0),
    };
    let snap = current_snapshot(&state).await?;
    let src = find_device(&snap, "src", &body.src)?;
    let dst = find_device(&snap, "dst", &body.dst)?;
    let p = policy::Policy::parse(&snap.policy.text)
        .map_err(|_| ApiError::Internal("the policy in force does not parse".into()))?;
    let inv = snapshot_inventory(&snap);
    let rule = policy::check(&p, &inv, src, dst, body.proto, port);
    Ok(Json(CheckResult {
        allowed: rule.is_some(),
        rule,
        policy_version: snap.policy.version,
    }))
}

/// One edge a proposed policy adds or removes, with device names for display.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = PolicyEdge)]
pub struct Edge {
    pub src: DeviceId,
    pub src_name: String,
    pub dst: DeviceId,
    pub dst_name: String,
    pub proto: Proto,
    pub ports: Vec<PortRange>,
    pub added: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = PolicyDiff)]
pub struct DiffResult {
    pub summary: String,
    /// The version the proposal is compared with.
    pub base_version: u64,
    pub changes: Vec<Edge>,
    /// Rules the proposal adds (canonical form, with descriptions).
    pub rules_added: Vec<RuleSpec>,
    /// Rules the proposal removes.
    pub rules_removed: Vec<RuleSpec>,
}

pub async fn diff(
    Scoped(state): Scoped,
    PolicyBody(text): PolicyBody,
) -> Result<Response, ApiError> {
    let snap = current_snapshot(&state).await?;
    let inv = snapshot_inventory(&snap);
    let new = match policy::Policy::parse_and_validate(&text, &inv) {
        Ok(p) => p,
        Err(errors) => return Ok(rejected(errors)),
    };
    let old = policy::Policy::parse(&snap.policy.text)
        .map_err(|_| ApiError::Internal("the policy in force does not parse".into()))?;
    let rules = RuleChanges::between(&old, &new);
    let changes = tokio::task::spawn_blocking(move || policy::diff(&old, &new, &inv))
        .await
        .map_err(|e| ApiError::Internal(format!("diff failed: {e}")))?;
    let names: std::collections::HashMap<DeviceId, &str> = snap
        .devices
        .iter()
        .map(|d| (d.id, d.name.as_str()))
        .collect();
    let name = |id: &DeviceId| names.get(id).copied().unwrap_or_default().to_string();
    let summary = summarize(&changes);
    let changes = changes
        .into_iter()
        .map(|c| Edge {
            src_name: name(&c.src),
            dst_name: name(&c.dst),
            src: c.src,
            dst: c.dst,
            proto: c.proto,
            ports: c.ports,
            added: c.added,
        })
        .collect();
    Ok(Json(DiffResult {
        summary,
        base_version: snap.policy.version,
        changes,
        rules_added: rules.added,
        rules_removed: rules.removed,
    })
    .into_response())
}

/// A policy text and the structured edits to make to it (none: just its outline).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = PolicyEditRequest)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    /// The draft being edited (usually the editor's current text, not yet saved).
    pub text: String,
    #[serde(default)]
    pub edits: Vec<Edit>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = PolicyEdited)]
pub struct EditResult {
    /// The edited text: comments and order outside the edited entries kept.
    pub text: String,
    pub outline: Outline,
}

/// `POST /api/v1/policy/edit`: applies structured edits to a draft and answers the new
/// text with its outline, or refuses with every reason (the draft is not changed and
/// nothing is saved). The result must validate against the live inventory, so an edit
/// naming an unknown group or tag is refused here, where the admin made it.
pub async fn edit(
    Scoped(state): Scoped,
    ApiJson(body): ApiJson<EditRequest>,
) -> Result<Response, ApiError> {
    if body.text.len() > MAX_POLICY_BYTES {
        return Err(ApiError::invalid(
            "text",
            format!("policy exceeds {MAX_POLICY_BYTES} bytes"),
        ));
    }
    let text = match policy::edit::apply(&body.text, &body.edits) {
        Ok(t) => t,
        Err(EditError::Unparsable(errors)) => return Ok(rejected(errors)),
        Err(EditError::Invalid { field, message }) => {
            return Err(ApiError::invalid(field, message))
        }
    };
    let snap = current_snapshot(&state).await?;
    let inv = snapshot_inventory(&snap);
    if let Err(errors) = policy::Policy::parse_and_validate(&text, &inv) {
        return Ok(rejected(errors));
    }
    let outline = policy::edit::outline(&text)
        .map_err(|_| ApiError::Internal("an edited policy that validates has no outline".into()))?;
    Ok(Json(EditResult { text, outline }).into_response())
}
