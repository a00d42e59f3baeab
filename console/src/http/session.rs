//! Web sessions over HTTP: the `__Host-` cookie, CSRF tokens and the origin check.
//! Sessions themselves (sign-in, storage, lifetimes) are `service::sessions`.
//!
//! The session id is a random secret that lives only in the browser's cookie (Secure,
//! HttpOnly, SameSite=Strict, Path=/, host-only); the database keeps its SHA-256. The
//! CSRF token of a session is derived from the session id (SHA-256 over a label and
//! the id), so it needs no storage, cannot be computed from the database, and changes
//! with every sign-in. Every state-changing request made with a cookie must carry it,
//! as a `csrf` form field or an `X-CSRF-Token` header.

use axum::http::{header, HeaderMap, HeaderValue, Uri};
use sha2::{Digest, Sha256};
use zmesh_shared::secret::hash_secret;
use zmesh_shared::time::now_ms;

use super::error::ApiError;
use super::state::AppState;
use crate::service::sessions::{SESSION_IDLE_MS, SESSION_PREFIX, SESSION_TTL_MS};
use crate::store::{Role, SessionRow, UserRow};

pub const SESSION_COOKIE: &str = "__Host-zmesh_session";
/// Double-submit cookie protecting the sign-in and setup forms (no session yet).
pub const PRE_CSRF_COOKIE: &str = "__Host-zmesh_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

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

/// The Set-Cookie value of a new session (from `service::sessions::start`).
pub fn session_set_cookie(session_id: &zmesh_shared::Secret) -> HeaderValue {
    set_cookie(SESSION_COOKIE, session_id.expose(), SESSION_TTL_MS / 1000)
}
