//! The request-counting middleware of the API port: every answered request is counted
//! in [`crate::metrics::Metrics`] by method, route template (axum's [`MatchedPath`],
//! never the raw path, which holds ids) and status, with its latency; a response that
//! [`ApiError`](super::ApiError) made from a database failure is counted as one too.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// Put in a response's extensions by the error mapping when a database error failed
/// the request.
#[derive(Debug, Clone, Copy)]
pub struct DbErrorMark;

pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    // Set by the router before route layers run; absent for the fallback (no route).
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    if resp.extensions().get::<DbErrorMark>().is_some() {
        state.metrics.db_error("http");
    }
    state.metrics.http_request(
        method.as_str(),
        route.as_ref().map(|r| r.as_str()),
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp
}
