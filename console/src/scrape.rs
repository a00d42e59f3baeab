//! `serve --metrics-listen ADDR`: a separate plain-HTTP listener answering `GET
//! /metrics` with the console's Prometheus metrics, and nothing else. It is never the
//! API port: the API's router has no `/metrics` route, and this listener has no other.
//! It takes no credentials, so it listens on loopback unless `--metrics-allow-remote`
//! says otherwise (see `infra::config`).
//!
//! A scrape reads the values that live in the database (audit head, newest checkpoint,
//! network revisions) first, then encodes; a database failure leaves those at their
//! last reading and counts `database_errors_total{source="scrape"}`.

use std::future::Future;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use zmesh_shared::time::now_ms;

use crate::http::AppState;
use crate::metrics::ScrapeValues;
use crate::store::StoreError;

/// The metrics endpoint's router (also used by tests without a listener).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "only /metrics is served here\n") })
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match read_db(&state).await {
        Ok(v) => state.metrics.set_scrape(v),
        Err(e) => {
            state.metrics.db_error("scrape");
            tracing::warn!(error = %e, "metrics scrape could not read the database");
        }
    }
    let accept = headers.get(ACCEPT).and_then(|v| v.to_str().ok());
    let (body, ct) = state
        .metrics
        .encode(zmesh_shared::metrics::wants_openmetrics(accept));
    ([(CONTENT_TYPE, ct)], body).into_response()
}

async fn read_db(state: &AppState) -> Result<ScrapeValues, StoreError> {
    let head = state.store.audit_head().await?;
    let last = state.store.last_checkpoint_ms().await?;
    let revisions = state.store.network_revisions().await?;
    Ok(ScrapeValues {
        audit_head_seq: head.seq,
        checkpoint_age: last
            .map(|t| Duration::from_millis(now_ms().saturating_sub(t).max(0) as u64)),
        revisions: revisions
            .into_iter()
            .map(|(id, rev)| (id.to_string(), rev))
            .collect(),
    })
}
