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

use super::types::{AuditCheckpoints, AuditHead, FlowList};
use crate::http::query::{access_filter, event_filter, known, parse_time};
use crate::http::{scope, ApiError, AppState, Principal};
use crate::service::audit::access_export::{self, AccessSelection};
use crate::service::audit::evidence;
use crate::service::audit::export::{self, Format};
use crate::service::audit::{checkpoint, record_export, verify};
use crate::store::AuditCtx;

/// Chunks buffered between the database reader and the client (64 KiB each).
const EXPORT_BUFFER: usize = 8;
const MAX_FLOW_PAGE: u32 = 10_000;

type Params = Query<HashMap<String, String>>;

pub async fn events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(ctx): Extension<AuditCtx>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    known(
        &q,
        &[
            "format", "since", "until", "actor", "device", "action", "network",
        ],
    )?;
    let fmt = format_param(&q)?;
    // `network` filters; a scoped principal sees its own network's events only
    let asked = q.get(scope::PARAM).map(String::as_str);
    let network = match (asked, principal.network()) {
        (None, None) => None,
        _ => Some(
            scope::resolve(&state, Some(&principal), Some(&ctx), asked)
                .await?
                .id,
        ),
    };
    let filter = event_filter(&state, &q, network).await?;
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
    Ok(streamed(rx, fmt, "zmesh-audit"))
}

/// The response of a streamed export: the body follows the producer's chunks.
fn streamed(rx: tokio::sync::mpsc::Receiver<Bytes>, fmt: Format, name: &str) -> Response {
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    }));
    let ext = match fmt {
        Format::Jsonl => "jsonl",
        Format::Csv => "csv",
        Format::Cef => "cef",
    };
    (
        [
            (header::CONTENT_TYPE, fmt.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.{ext}\""),
            ),
        ],
        body,
    )
        .into_response()
}

fn format_param(q: &HashMap<String, String>) -> Result<Format, ApiError> {
    match q.get("format") {
        None => Ok(Format::Jsonl),
        Some(f) => Format::parse(f).ok_or_else(|| ApiError::invalid("format", "csv, jsonl or cef")),
    }
}

/// `GET /api/v1/audit/access`: the access log, streamed, with the chain fields, device
/// signatures and report keys (see `service::audit::access_export`).
pub async fn access(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    known(
        &q,
        &[
            "format",
            "since",
            "until",
            "device",
            "user",
            "verdict",
            "one_sided",
        ],
    )?;
    let fmt = format_param(&q)?;
    let (filter, user) = access_filter(&state, &q).await?;
    let sel = AccessSelection {
        filter,
        user,
        range: None,
    };
    let detail = json!({"log": "access", "format": fmt, "filter": sel.filter_json()});
    record_export(&state.store, ctx, detail).await?;
    let dir = evidence::directory(&state).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(EXPORT_BUFFER);
    let store = state.store.clone();
    let pk = state.signing_key.public_key().to_string();
    tokio::spawn(async move {
        if let Err(e) = access_export::run(&store, &sel, fmt, pk, &dir, tx).await {
            tracing::warn!(error = %e, "access export ended early");
        }
    });
    Ok(streamed(rx, fmt, "zmesh-access"))
}

/// `GET /api/v1/audit/evidence?since&until`: an evidence pack (tar) for the window.
pub async fn evidence_pack(
    State(state): State<AppState>,
    Extension(ctx): Extension<AuditCtx>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    known(&q, &["since", "until"])?;
    let time = |k: &str| -> Result<i64, ApiError> {
        let v = q.get(k).ok_or_else(|| ApiError::invalid(k, "required"))?;
        parse_time(k, v)
    };
    let (since, until) = (time("since")?, time("until")?);
    if since >= until {
        return Err(ApiError::invalid("until", "must be after since"));
    }
    let file = evidence::build(&state, ctx, since, until)
        .await
        .map_err(|e| match e {
            evidence::EvidenceError::Store(e) => ApiError::Store(e),
            e => ApiError::Internal(e.to_string()),
        })?;
    let file = tokio::fs::File::from_std(file);
    let body = Body::from_stream(futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    }));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"zmesh-evidence.tar\"".to_string(),
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
            "user",
            "verdict",
            "one_sided",
            "after",
            "limit",
        ],
    )?;
    let (f, _) = access_filter(&state, &q).await?;
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
    let rows = state.store.list_access(&f, after, limit).await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.entry.seq))
        .flatten();
    Ok(Json(FlowList {
        flows: rows.into_iter().map(Into::into).collect(),
        next_after: next,
    }))
}
