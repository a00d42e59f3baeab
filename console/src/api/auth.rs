//! Bearer-token authentication for the admin API.
//!
//! Tokens are looked up by their SHA-256 (the store never holds a token). The
//! `admin` role may do anything; `auditor` may only read (GET/HEAD), so a write
//! with an auditor token is refused with 403 before any handler runs.

use axum::extract::{Request, State};
use axum::http::{header::AUTHORIZATION, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use zmesh_shared::secret::hash_secret;
use zmesh_shared::time::now_ms;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{AdminTokenRow, AuditChange, AuditCtx, Role};

/// The authenticated admin, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct Caller(pub AdminTokenRow, pub CallerKind);

/// How the caller signed in: an API token, or a user's web session (whose row is
/// made up from the user: name = username, role = the user's role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    Token,
    User,
}

impl Caller {
    /// How the caller is recorded in `created_by` / `owner` columns.
    pub fn label(&self) -> String {
        match self.1 {
            CallerKind::Token => format!("token:{}", self.0.name),
            CallerKind::User => format!("user:{}", self.0.name),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let v = headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized(
            "unauthorized",
            "missing Authorization: Bearer <token> header",
        )
    })?;
    let v = v
        .to_str()
        .map_err(|_| ApiError::unauthorized("unauthorized", "malformed Authorization header"))?;
    let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::unauthorized(
            "unauthorized",
            "expected Authorization: Bearer <token>",
        ));
    }
    Ok(token)
}

/// The client's IP address as the server accepted it (absent in in-process tests).
pub fn source_addr(ext: &axum::http::Extensions) -> Option<String> {
    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

/// Extractor: the client's IP address, for audit events of unauthenticated routes.
#[derive(Debug, Clone)]
pub struct Source(pub Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Source(source_addr(&parts.extensions)))
    }
}

/// Records a refused call in the audit log, in a transaction of its own. A failure to
/// record is logged, and the refusal stands.
pub async fn record_refusal(
    state: &AppState,
    ctx: AuditCtx,
    action: &'static str,
    detail: serde_json::Value,
) {
    let c = AuditChange {
        action,
        target: None,
        before: None,
        after: Some(detail),
    };
    if let Err(e) = state.store.acting(ctx).record_event(c).await {
        tracing::error!(error = %e, action, "could not record a refused call in the audit log");
    }
}

pub async fn require_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    authorize(state, req, next, read_only).await
}

/// For calls that change nothing whatever their method (policy check and diff are
/// POSTs with a body): auditors may make them too.
pub async fn require_reader(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    authorize(state, req, next, true).await
}

async fn authorize(
    state: AppState,
    mut req: Request,
    next: Next,
    read_only: bool,
) -> Result<Response, ApiError> {
    // A browser signed in to the web console calls the same API with its session
    // cookie (and a CSRF header for writes) instead of a bearer token.
    if !req.headers().contains_key(AUTHORIZATION) {
        if let Some(sid) = crate::web::session::session_cookie(req.headers()) {
            return crate::web::session::authorize_api(state, req, next, read_only, sid).await;
        }
    }
    let source = source_addr(req.extensions());
    let what = serde_json::json!({"method": req.method().as_str(), "path": req.uri().path()});
    let token = match bearer(req.headers()) {
        Ok(t) => t,
        Err(e) => {
            let mut d = what;
            d["reason"] = "missing or malformed bearer token".into();
            record_refusal(&state, AuditCtx::new("anonymous", source), "auth.failed", d).await;
            return Err(e);
        }
    };
    let Some(row) = state
        .store
        .admin_token_by_hash(&hash_secret(token), now_ms())
        .await?
    else {
        let mut d = what;
        d["reason"] = "unknown, expired or revoked token".into();
        record_refusal(&state, AuditCtx::new("anonymous", source), "auth.failed", d).await;
        return Err(ApiError::unauthorized(
            "unauthorized",
            "unknown, expired or revoked token",
        ));
    };
    let ctx = AuditCtx::new(format!("{}:{}", row.role.as_str(), row.name), source);
    if row.role == Role::Auditor && !read_only {
        let mut d = what;
        d["reason"] = "auditor tokens may only read".into();
        record_refusal(&state, ctx, "auth.forbidden", d).await;
        return Err(ApiError::forbidden(
            "forbidden",
            "auditor tokens may only read",
        ));
    }
    tracing::debug!(token = %row.id, role = row.role.as_str(), method = %req.method(), path = %req.uri().path(), "admin call");
    req.extensions_mut().insert(Caller(row, CallerKind::Token));
    req.extensions_mut().insert(ctx);
    Ok(next.run(req).await)
}
