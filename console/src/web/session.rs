//! Web sessions: the `__Host-` cookie, CSRF tokens, Argon2id passwords, and the
//! bridge that lets a signed-in browser call the REST API.
//!
//! The session id is a random secret that lives only in the browser's cookie (Secure,
//! HttpOnly, SameSite=Strict, Path=/, host-only); the database keeps its SHA-256. The
//! CSRF token of a session is derived from the session id (SHA-256 over a label and
//! the id), so it needs no storage, cannot be computed from the database, and changes
//! with every sign-in. Every state-changing request made with a cookie must carry it,
//! as a `csrf` form field or an `X-CSRF-Token` header.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use zmesh_shared::secret::hash_secret;
use zmesh_shared::time::now_ms;
use zmesh_shared::{Secret, TokenId};

use crate::api::auth::{source_addr, Caller, CallerKind};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{AdminTokenRow, AuditCtx, Role, SessionRow, UserRow};

pub const SESSION_COOKIE: &str = "__Host-zmesh_session";
/// Double-submit cookie protecting the sign-in and setup forms (no session yet).
pub const PRE_CSRF_COOKIE: &str = "__Host-zmesh_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session lasts at most this long...
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;
/// ...and ends after this long without use.
pub const SESSION_IDLE_MS: i64 = 2 * 3600 * 1000;
pub const SESSION_PREFIX: &str = "zms_";

/// The signed-in user of a web request, with the session's CSRF token.
#[derive(Debug, Clone)]
pub struct WebUser {
    pub user: UserRow,
    pub csrf: String,
    pub session: SessionRow,
}

impl WebUser {
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }
    pub fn actor(&self) -> String {
        format!("user:{}", self.user.username)
    }
}

/// The value of cookie `name`, if the request has one.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The session id from the cookie, if it looks like one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
        .filter(|v| v.starts_with(SESSION_PREFIX) && v.len() < 100)
        .map(str::to_string)
}

pub fn csrf_for(session_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"zmesh-csrf-v1\0");
    h.update(session_id.as_bytes());
    hex::encode(h.finalize())
}

/// Compares without an early exit, so the time taken does not tell how much matched.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub fn set_cookie(name: &str, value: &str, max_age_s: i64) -> HeaderValue {
    let v =
        format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age_s}");
    HeaderValue::from_str(&v).expect("cookie values are ASCII tokens")
}

pub fn clear_cookie(name: &str) -> HeaderValue {
    set_cookie(name, "", 0)
}

/// Rejects a cross-site request whose browser told us where it came from. SameSite
/// cookies and the CSRF token already stop it; this is a third, independent check.
pub fn check_origin(headers: &HeaderMap, uri: &Uri) -> Result<(), ApiError> {
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), request_host(headers, uri))
    else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    if origin == format!("https://{host}") {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "cross_origin",
            "request from another origin refused",
        ))
    }
}

/// The host the client addressed: `Host` (HTTP/1.1) or the URI's authority (HTTP/2).
pub fn request_host(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
}

/// Looks up the live session of a session id.
pub async fn load(state: &AppState, session_id: &str) -> Result<Option<WebUser>, ApiError> {
    let Some(s) = state
        .store
        .session(&hash_secret(session_id), now_ms(), SESSION_IDLE_MS)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(WebUser {
        user: s.user.clone(),
        csrf: csrf_for(session_id),
        session: s,
    }))
}

/// Starts a session for `user`: a fresh random id (never one the browser sent), stored
/// hashed, with the sign-in recorded in the audit log. Returns the Set-Cookie value.
pub async fn start(
    state: &AppState,
    user: &UserRow,
    source: Option<String>,
) -> Result<HeaderValue, ApiError> {
    let sid = Secret::generate(SESSION_PREFIX);
    let now = now_ms();
    state
        .store
        .acting(AuditCtx::new(format!("user:{}", user.username), source))
        .create_session(&user.id, &sid.hash(), now, now + SESSION_TTL_MS)
        .await?;
    Ok(set_cookie(
        SESSION_COOKIE,
        sid.expose(),
        SESSION_TTL_MS / 1000,
    ))
}

/// The API's authentication for a request that carries a session cookie instead of a
/// bearer token (called from `api::auth`).
pub async fn authorize_api(
    state: AppState,
    mut req: Request,
    next: Next,
    read_only: bool,
    sid: String,
) -> Result<Response, ApiError> {
    let Some(web) = load(&state, &sid).await? else {
        return Err(ApiError::unauthorized(
            "session_expired",
            "the session has ended; sign in again",
        ));
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        check_origin(req.headers(), req.uri())?;
        let sent = req
            .headers()
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
    let ctx = AuditCtx::new(web.actor(), source_addr(req.extensions()));
    if web.user.role == Role::Auditor && !read_only {
        crate::api::auth::record_refusal(
            &state,
            ctx,
            "auth.forbidden",
            serde_json::json!({"method": req.method().as_str(), "path": req.uri().path(),
                "reason": "auditors may only read"}),
        )
        .await;
        return Err(ApiError::forbidden("forbidden", "auditors may only read"));
    }
    let row = AdminTokenRow {
        // not a stored token: a stand-in so handlers see one caller type
        id: TokenId::new(),
        name: web.user.username.clone(),
        role: web.user.role,
        created_at_ms: web.session.created_at_ms,
        expires_at_ms: Some(web.session.expires_at_ms),
        revoked_at_ms: None,
    };
    req.extensions_mut().insert(Caller(row, CallerKind::User));
    req.extensions_mut().insert(ctx);
    req.extensions_mut().insert(web);
    Ok(next.run(req).await)
}

// ---- passwords ----

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 12;
pub const MAX_PASSWORD: usize = 1024;

pub fn check_password_rules(field: &str, pw: &str) -> Result<(), ApiError> {
    let n = pw.chars().count();
    if n < MIN_PASSWORD || pw.len() > MAX_PASSWORD {
        return Err(ApiError::invalid(
            field,
            format!("a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ));
    }
    Ok(())
}

/// Argon2id (default parameters: 19 MiB, 2 passes) on a blocking thread.
pub async fn hash_password(pw: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(pw.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Internal(format!("hashing a password: {e}")))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("hashing task: {e}")))?
}

/// Parameters of the dummy hash equal the defaults, so checking against it costs the
/// same as checking a real one.
const DUMMY_PHC: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Checks a password against a PHC string; with `None` it hashes against a dummy so an
/// unknown username costs the same time as a wrong password, and is always refused.
pub async fn verify_password(pw: String, phc: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let real = phc.is_some();
        let phc = phc.unwrap_or_else(|| DUMMY_PHC.to_string());
        let ok = PasswordHash::new(&phc)
            .map(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
            .unwrap_or(false);
        ok && real
    })
    .await
    .unwrap_or(false)
}
