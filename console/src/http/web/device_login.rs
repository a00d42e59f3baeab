//! `/ui/login/CODE`: where a user adds a device that ran `zmesh up` without an
//! enrollment key. Any signed-in user may (members included: it is their device); one
//! not signed in is sent through single sign-on (or the sign-in page) and back. The
//! page shows what asks to join before the user confirms, since a link can be phished.
//! A re-authentication (`zmesh up --reauth`) reads "Sign in again for device NAME" and
//! only the device's owner may confirm it; anyone else gets a 403 page.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use zmesh_shared::time::now_ms;

use super::html::{bare_page, esc};
use super::signin::see_other;
use crate::http::session::{self, check_origin, same_secret, WebUser};
use crate::http::{ApiError, AppState, Source};
use crate::infra::oidc::is_login_code;
use crate::service::login as svc;
use crate::service::ServiceError;
use crate::store::{user_owner, AuditCtx, StoreError};

fn not_owner(message: &str) -> Response {
    bare_page(
        StatusCode::FORBIDDEN,
        "Sign in again",
        &format!(
            r#"<p class="error" id="not-owner">{}. Sign in as the user who added the device.</p>"#,
            esc(message)
        ),
    )
}

fn gone() -> Response {
    bare_page(
        StatusCode::NOT_FOUND,
        "Add a device",
        r#"<p class="error" id="login-gone">This sign-in link has expired or was used already. Run <code>zmesh up</code> on the device again.</p>"#,
    )
}

/// The signed-in user, or where to send the browser to sign in first.
async fn user_or_signin(
    state: &AppState,
    headers: &HeaderMap,
    code: &str,
) -> Result<Result<WebUser, Response>, ApiError> {
    if let Some(sid) = session::session_cookie(headers) {
        if let Some(w) = session::load(state, &sid).await? {
            return Ok(Ok(w));
        }
    }
    Ok(Err(if state.oidc.is_some() {
        see_other(&format!("/oidc/login?next=/ui/login/{code}"))
    } else {
        see_other("/ui/signin")
    }))
}

pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    if !is_login_code(&code) {
        return Ok(gone());
    }
    let user = match user_or_signin(&state, &headers, &code).await? {
        Ok(u) => u,
        Err(redirect) => return Ok(redirect),
    };
    let l = match state.store.device_login(&code, now_ms()).await {
        Ok(l) if l.device_id.is_none() => l,
        Ok(_) | Err(StoreError::NotFound { .. }) => return Ok(gone()),
        Err(e) => return Err(e.into()),
    };
    let key = l.public_key.to_string();
    if let Some(id) = l.reauth_device_id {
        let d = match state.store.get_device(id).await {
            Ok(d) => d,
            Err(StoreError::NotFound { .. }) => return Ok(gone()),
            Err(e) => return Err(e.into()),
        };
        if d.owner != user_owner(&user.user) {
            return Ok(not_owner(&format!(
                "Device {} belongs to another user",
                d.name
            )));
        }
        return Ok(bare_page(
            StatusCode::OK,
            "Sign in again",
            &format!(
                r#"<p>Signed in as <b id="login-user">{user}</b>.</p>
<p id="reauth-device">Sign in again for device <b>{name}</b> ({ip}). Its key is replaced by a new one; the old key stops working.</p>
<table class="card"><tr><th>Host</th><td id="login-host">{host}</td></tr><tr><th>OS</th><td>{os}</td></tr>
<tr><th>New key</th><td class="mono">{key}…</td></tr></table>
<p>Only confirm if you just ran <code>zmesh up --reauth</code> on this device.</p>
<form method="post" action="/ui/login/{code}" class="card" id="login-form">
<input type="hidden" name="csrf" value="{csrf}">
<button type="submit" id="confirm-device">Sign in again</button></form>"#,
                user = esc(&user.user.username),
                name = esc(&d.name),
                ip = d.overlay_v4,
                host = esc(l.hostname.as_deref().unwrap_or("(not given)")),
                os = esc(l.os.as_deref().unwrap_or("(not given)")),
                key = esc(&key[..12.min(key.len())]),
                code = esc(&code),
                csrf = esc(&user.csrf),
            ),
        ));
    }
    Ok(bare_page(
        StatusCode::OK,
        "Add a device",
        &format!(
            r#"<p>Signed in as <b id="login-user">{user}</b>. A device asks to join the network as yours:</p>
<table class="card"><tr><th>Host</th><td id="login-host">{host}</td></tr><tr><th>OS</th><td>{os}</td></tr>
<tr><th>Key</th><td class="mono">{key}…</td></tr></table>
<p>Only confirm if you just ran <code>zmesh up</code> on this device.</p>
<form method="post" action="/ui/login/{code}" class="card" id="login-form">
<input type="hidden" name="csrf" value="{csrf}">
<label>Device name <input name="name" id="device-name" value="{name}" placeholder="from the host name"></label>
<button type="submit" id="confirm-device">Add this device</button></form>"#,
            user = esc(&user.user.username),
            host = esc(l.hostname.as_deref().unwrap_or("(not given)")),
            os = esc(l.os.as_deref().unwrap_or("(not given)")),
            key = esc(&key[..12.min(key.len())]),
            code = esc(&code),
            csrf = esc(&user.csrf),
            name = esc(l.name.as_deref().unwrap_or("")),
        ),
    ))
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

pub async fn confirm(
    State(state): State<AppState>,
    Source(source): Source,
    headers: HeaderMap,
    uri: Uri,
    Path(code): Path<String>,
    Form(f): Form<ConfirmForm>,
) -> Result<Response, ApiError> {
    if !is_login_code(&code) {
        return Ok(gone());
    }
    let user = match user_or_signin(&state, &headers, &code).await? {
        Ok(u) => u,
        Err(redirect) => return Ok(redirect),
    };
    check_origin(&headers, &uri)?;
    if !same_secret(&f.csrf, &user.csrf) {
        return Err(ApiError::forbidden("csrf", "missing or wrong CSRF token"));
    }
    let name = f.name.trim();
    let ctx = AuditCtx::new(user.actor(), source);
    match svc::confirm(
        &state,
        ctx,
        &user.user,
        &code,
        (!name.is_empty()).then_some(name),
    )
    .await
    {
        Ok(svc::Confirmed {
            device: d,
            reauth: true,
        }) => Ok(bare_page(
            StatusCode::OK,
            "Signed in again",
            &format!(
                r#"<p id="device-reauth">Signed in again for <b>{}</b> ({}): its new key is in use. You can close this page; the device reconnects by itself.</p>"#,
                esc(&d.name),
                d.overlay_v4
            ),
        )),
        Ok(svc::Confirmed { device: d, .. }) => Ok(bare_page(
            StatusCode::OK,
            "Device added",
            &format!(
                r#"<p id="device-added">Added <b>{}</b> ({}) to your devices. You can close this page; the device connects by itself.</p>"#,
                esc(&d.name),
                d.overlay_v4
            ),
        )),
        Err(ServiceError::Forbidden { message, .. }) => Ok(not_owner(&message)),
        Err(ServiceError::Store(StoreError::NotFound { .. })) => Ok(gone()),
        Err(e) => Err(e.into()),
    }
}
