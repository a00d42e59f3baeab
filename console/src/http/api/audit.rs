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
use crate::http::query::{event_filter, known, parse_time, text_param};
use crate::http::{ApiError, AppState};
use crate::service::audit::export::{self, Format};
use crate::service::audit::{checkpoint, record_export, verify};
use crate::store::{AccessFilter, AuditCtx};

/// Chunks buffered between the database reader and the client (64 KiB each).
const EXPORT_BUFFER: usize = 8;
const MAX_FLOW_PAGE: u32 = 10_000;

type Params = Query<HashMap<String, String>>;

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
    let detail = json!({"format": fmt, "filter": export::filter_json(&filter)});
    record_export(&state.store, ctx, detail).await?;

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
            Err(_) => crate::service::devices::find(&state, &d).await?.id,
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
            .parse::<u64>()
            .map_err(|_| ApiError::invalid("after", "an access record sequence number"))?,
    };
    let limit = match q.get("limit") {
        None => 1000,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_FLOW_PAGE).contains(l))
            .ok_or_else(|| ApiError::invalid("limit", format!("1 to {MAX_FLOW_PAGE}")))?,
    };
    let f = AccessFilter {
        since_ms: q.get("since").map(|s| parse_time("since", s)).transpose()?,
        until_ms: q.get("until").map(|s| parse_time("until", s)).transpose()?,
        devices: device.map(|d| vec![d]),
        verdict,
        one_sided_only,
    };
    let rows = state.store.list_access(&f, after, limit).await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.entry.seq))
        .flatten();
    Ok(Json(FlowList {
        flows: rows.into_iter().map(Into::into).collect(),
        next_after: next,
    }))
}
