//! Who is calling: one [`Principal`] for every surface, authenticated by the route
//! table's middleware before a handler runs.
//!
//! An API token (admin or auditor; looked up by its SHA-256, the store never holds a
//! token) or a signed-in user's web session (cookie plus a CSRF header for writes).
//! The `admin` role may do anything; `auditor` may only read (GET/HEAD), so a write by
//! an auditor is refused with 403 before any handler runs. Every refusal is audited.

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header::AUTHORIZATION, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use zmesh_shared::secret::hash_secret;
use zmesh_shared::time::now_ms;
use zmesh_shared::{NetworkId, TokenId};

use super::error::ApiError;
use super::session::{self, check_origin, same_secret, WebUser, CSRF_HEADER};
use super::state::AppState;
use crate::service::audit::record_refusal;
use crate::store::{AuditCtx, Role};

/// The authenticated caller, available to handlers as an extension (with its
/// [`AuditCtx`], which adds the client address).
#[derive(Debug, Clone)]
pub enum Principal {
    /// An admin or auditor API token (also a user's personal token).
    Token {
        id: TokenId,
        name: String,
        role: Role,
        /// The one network the token may act in; `None`: console-wide.
        network: Option<NetworkId>,
    },
    /// A user signed in to the web console, calling with the session cookie.
    User(Box<WebUser>),
}

impl Principal {
    pub fn role(&self) -> Role {
        match self {
            Principal::Token { role, .. } => *role,
            Principal::User(w) => w.user.role,
        }
    }

    /// The one network the caller may see and change; `None`: console-wide.
    pub fn network(&self) -> Option<NetworkId> {
        match self {
            Principal::Token { network, .. } => *network,
            Principal::User(w) => w.user.network_id,
        }
    }

    /// The token's or user's name.
    pub fn name(&self) -> &str {
        match self {
            Principal::Token { name, .. } => name,
            Principal::User(w) => &w.user.username,
        }
    }

    /// `token` or `user`.
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Token { .. } => "token",
            Principal::User(_) => "user",
        }
    }

    /// How the caller is recorded in `created_by` / `owner` columns.
    pub fn label(&self) -> String {
        format!("{}:{}", self.kind(), self.name())
    }

    /// How the caller is recorded as the actor of audit events.
    pub fn actor(&self) -> String {
        match self {
            Principal::Token { name, role, .. } => format!("{}:{name}", role.as_str()),
            Principal::User(w) => w.actor(),
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
    req: Request,
    next: Next,
    read_only: bool,
) -> Result<Response, ApiError> {
    // The body is not Sync: only the head is looked at (and held across awaits).
    let (mut parts, body) = req.into_parts();
    let source = source_addr(&parts.extensions);
    let what = serde_json::json!({"method": parts.method.as_str(), "path": parts.uri.path()});
    // A browser signed in to the web console calls the same API with its session
    // cookie (and a CSRF header for writes) instead of a bearer token.
    let principal = match session::session_cookie(&parts.headers) {
        Some(sid) if !parts.headers.contains_key(AUTHORIZATION) => {
            from_session(&state, &parts, &sid).await?
        }
        _ => from_token(&state, &parts, source.clone(), what.clone()).await?,
    };
    let mut ctx = AuditCtx::new(principal.actor(), source);
    // whatever a principal scoped to a network does is recorded inside that network
    ctx.network = principal.network();
    if principal.role() == Role::Member {
        let reason = "members have no access to the admin API";
        let mut d = what;
        d["reason"] = reason.into();
        record_refusal(&state.store, ctx, "auth.forbidden", d).await;
        return Err(ApiError::forbidden("forbidden", reason));
    }
    if principal.role() == Role::Auditor && !read_only {
        let reason = match principal {
            Principal::Token { .. } => "auditor tokens may only read",
            Principal::User(_) => "auditors may only read",
        };
        let mut d = what;
        d["reason"] = reason.into();
        record_refusal(&state.store, ctx, "auth.forbidden", d).await;
        return Err(ApiError::forbidden("forbidden", reason));
    }
    if let Some(net) = principal.network() {
        if super::scope::console_wide(&parts.method, parts.uri.path()) {
            let name = state
                .store
                .get_network(net)
                .await
                .map(|n| n.name)
                .unwrap_or_else(|_| net.to_string());
            let reason = format!("this account is scoped to network {name}");
            let mut d = what;
            d["reason"] = reason.clone().into();
            record_refusal(&state.store, ctx, "auth.forbidden", d).await;
            return Err(ApiError::forbidden("forbidden", reason));
        }
    }
    tracing::debug!(kind = principal.kind(), role = principal.role().as_str(), method = %parts.method, path = %parts.uri.path(), "admin call");
    if let Principal::User(w) = &principal {
        parts.extensions.insert(WebUser::clone(w));
    }
    parts.extensions.insert(principal);
    parts.extensions.insert(ctx);
    Ok(next.run(Request::from_parts(parts, body)).await)
}

async fn from_token(
    state: &AppState,
    req: &Parts,
    source: Option<String>,
    what: serde_json::Value,
) -> Result<Principal, ApiError> {
    let token = match bearer(&req.headers) {
        Ok(t) => t,
        Err(e) => {
            let mut d = what;
            d["reason"] = "missing or malformed bearer token".into();
            let ctx = AuditCtx::new("anonymous", source);
            record_refusal(&state.store, ctx, "auth.failed", d).await;
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
        let ctx = AuditCtx::new("anonymous", source);
        record_refusal(&state.store, ctx, "auth.failed", d).await;
        return Err(ApiError::unauthorized(
            "unauthorized",
            "unknown, expired or revoked token",
        ));
    };
    Ok(Principal::Token {
        id: row.id,
        name: row.name,
        role: row.role,
        network: row.network_id,
    })
}

async fn from_session(state: &AppState, req: &Parts, sid: &str) -> Result<Principal, ApiError> {
    let Some(web) = session::load(state, sid).await? else {
        return Err(ApiError::unauthorized(
            "session_expired",
            "the session has ended; sign in again",
        ));
    };
    if !matches!(req.method, Method::GET | Method::HEAD) {
        check_origin(&req.headers, &req.uri)?;
        let sent = req
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same_secret(sent, &web.csrf) {
            return Err(ApiError::forbidden(
                "csrf",
                "missing or wrong X-CSRF-Token header",
            ));
        }
    }
    Ok(Principal::User(Box::new(web)))
}
