//! `/api/v1/audit/…` and `/api/v1/flows`: streamed exports of the audit log, its
//! checkpoints, server-side verification, and the flow records agents reported.
//! Readable by admin and auditor tokens; only signing a checkpoint is a write.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use zmesh_shared::wire::FlowVerdict;
use zmesh_shared::DeviceId;

use super::types::{AuditCheckpoints, AuditHead, FlowList};
use crate::audit::export::{self, Format};
use crate::audit::{checkpoint, verify};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{AuditChange, AuditCtx, EventFilter, FlowFilter};

/// Chunks buffered between the database reader and the client (64 KiB each).
const EXPORT_BUFFER: usize = 8;
const MAX_FLOW_PAGE: u32 = 10_000;

type Params = Query<HashMap<String, String>>;

/// Unix milliseconds or an RFC 3339 time (`2024-05-01T00:00:00Z`, `2024-05-01`).
pub fn parse_time(field: &str, s: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    let t = humantime::parse_rfc3339_weak(&full)
        .map_err(|_| ApiError::invalid(field, "expected Unix milliseconds or an RFC 3339 time"))?;
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ApiError::invalid(field, "before 1970"))?;
    i64::try_from(d.as_millis()).map_err(|_| ApiError::invalid(field, "too far in the future"))
}

fn known(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    for k in q.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::invalid(k.clone(), "unknown query parameter"));
        }
    }
    Ok(())
}

fn text_param(q: &HashMap<String, String>, k: &str) -> Result<Option<String>, ApiError> {
    match q.get(k) {
        None => Ok(None),
        Some(v) if v.is_empty() || v.len() > 256 || v.chars().any(char::is_control) => {
            Err(ApiError::invalid(k, "1 to 256 printable characters"))
        }
        Some(v) => Ok(Some(v.clone())),
    }
}

pub(crate) async fn event_filter(
    state: &AppState,
    q: &HashMap<String, String>,
) -> Result<EventFilter, ApiError> {
    let device = match text_param(q, "device")? {
        None => None,
        Some(d) => Some(match d.parse::<DeviceId>() {
            Ok(id) => id.to_string(),
            Err(_) => super::devices::find(state, &d).await?.id.to_string(),
        }),
    };
    Ok(EventFilter {
        since_ms: q.get("since").map(|s| parse_time("since", s)).transpose()?,
        until_ms: q.get("until").map(|s| parse_time("until", s)).transpose()?,
        actor: text_param(q, "actor")?,
        device,
        action: text_param(q, "action")?,
    })
}

pub async fn events(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    known(
        &q,
        &["format", "since", "until", "actor", "device", "action"],
    )?;
    let fmt = match q.get("format") {
        None => Format::Jsonl,
        Some(f) => {
            Format::parse(f).ok_or_else(|| ApiError::invalid("format", "csv, jsonl or cef"))?
        }
    };
    let filter = event_filter(&state, &q).await?;
    // who read the log is part of the log
    let mut c = AuditChange::new("audit.export", "audit");
    c.after = Some(json!({"format": fmt, "filter": export::filter_json(&filter)}));
    state.store.acting(ctx).record_event(c).await?;

    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(EXPORT_BUFFER);
    let store = state.store.clone();
    let pk = state.signing_key.public_key().to_string();
    // The producer stops as soon as the client goes away (send fails). An error half
    // way cannot change the status any more; it is logged and the body ends early, which
    // a JSONL reader notices by the missing `end` line.
    tokio::spawn(async move {
        if let Err(e) = export::run(&store, &filter, fmt, pk, tx).await {
            tracing::warn!(error = %e, "audit export ended early");
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    }));
    let ext = match fmt {
        Format::Jsonl => "jsonl",
        Format::Csv => "csv",
        Format::Cef => "cef",
    };
    Ok((
        [
            (header::CONTENT_TYPE, fmt.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"zmesh-audit.{ext}\""),
            ),
        ],
        body,
    )
        .into_response())
}

pub async fn checkpoints(
    State(state): State<AppState>,
) -> Result<Json<AuditCheckpoints>, ApiError> {
    let head = state.store.audit_head().await?;
    Ok(Json(AuditCheckpoints {
        head: AuditHead {
            seq: head.seq,
            hash: head.hash,
        },
        anchor: state.store.audit_anchor().await?,
        checkpoints: state.store.list_checkpoints().await?,
        public_key: state.signing_key.public_key().to_string(),
    }))
}

/// Signs the current head now (also done periodically and at shutdown).
pub async fn sign_checkpoint(State(state): State<AppState>) -> Result<Response, ApiError> {
    match checkpoint::create(&state.store, &state.signing_key, "manual").await? {
        Some(c) => Ok((StatusCode::CREATED, Json(c)).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

pub async fn verify_chain(
    State(state): State<AppState>,
) -> Result<Json<verify::VerifyReport>, ApiError> {
    let pk = state.signing_key.public_key();
    verify::verify_store(&state.store, &pk)
        .await
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

pub async fn flows(
    State(state): State<AppState>,
    Query(q): Params,
) -> Result<Json<FlowList>, ApiError> {
    known(
        &q,
        &[
            "since",
            "until",
            "device",
            "verdict",
            "one_sided",
            "after",
            "limit",
        ],
    )?;
    let device = match text_param(&q, "device")? {
        None => None,
        Some(d) => Some(match d.parse::<DeviceId>() {
            Ok(id) => id,
            Err(_) => super::devices::find(&state, &d).await?.id,
        }),
    };
    let verdict = match q.get("verdict") {
        None => None,
        Some(v) => Some(
            FlowVerdict::parse(v)
                .ok_or_else(|| ApiError::invalid("verdict", "accepted or denied"))?,
        ),
    };
    let one_sided_only = match q.get("one_sided").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid("one_sided", "true or false")),
    };
    let after = match q.get("after") {
        None => 0,
        Some(a) => a
            .parse::<i64>()
            .map_err(|_| ApiError::invalid("after", "a flow record id"))?,
    };
    let limit = match q.get("limit") {
        None => 1000,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_FLOW_PAGE).contains(l))
            .ok_or_else(|| ApiError::invalid("limit", format!("1 to {MAX_FLOW_PAGE}")))?,
    };
    let f = FlowFilter {
        since_ms: q.get("since").map(|s| parse_time("since", s)).transpose()?,
        until_ms: q.get("until").map(|s| parse_time("until", s)).transpose()?,
        device,
        verdict,
        one_sided_only,
    };
    let rows = state.store.list_flows(&f, after, limit).await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(FlowList {
        flows: rows,
        next_after: next,
    }))
}
