//! Sign-in, sign-out and the one-time setup link that creates the first admin.
//!
//! Sign-in is rate limited per client address and per account (failures in the last
//! 15 minutes, counted in the database so every replica sees them); each failure and
//! each sign-in is an audit event. A wrong password, an unknown user and a disabled
//! user all get the same answer after the same Argon2 work.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use zmesh_shared::secret::hash_secret;
use zmesh_shared::time::now_ms;
use zmesh_shared::Secret;

use super::html::{bare_page, esc};
use super::session::{self, check_origin, same_secret, PRE_CSRF_COOKIE, SESSION_COOKIE};
use crate::api::auth::Source;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{AuditCtx, Store, StoreError};

/// Window of the sign-in rate limit.
pub const FAILURE_WINDOW_MS: i64 = 15 * 60 * 1000;
/// Failed sign-ins allowed per account in the window.
pub const MAX_FAILURES_PER_ACCOUNT: i64 = 5;
/// Failed sign-ins allowed per client address in the window.
pub const MAX_FAILURES_PER_ADDR: i64 = 20;
/// How long a setup link works.
pub const SETUP_TTL_MS: i64 = 24 * 3600 * 1000;

/// Makes a new one-time setup link token (older ones stop working). Returns the
/// token, to be shown once as `https://HOST/ui/setup/<token>`.
pub async fn issue_setup_link(store: &Store) -> Result<String, StoreError> {
    let t = Secret::generate("zsu_");
    let now = now_ms();
    store
        .acting(AuditCtx::system())
        .create_setup_token(&t.hash(), now, now + SETUP_TTL_MS)
        .await?;
    Ok(t.expose().to_string())
}

fn see_other(to: &str) -> Response {
    let mut r = Redirect::to(to).into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    r
}

/// A page with a form protected by a fresh double-submit CSRF cookie.
fn form_page(
    status: StatusCode,
    title: &str,
    body_with_csrf: impl FnOnce(&str) -> String,
) -> Response {
    let token = Secret::generate("zpc_");
    let mut r = bare_page(status, title, &body_with_csrf(token.expose()));
    r.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(PRE_CSRF_COOKIE, token.expose(), 3600),
    );
    r
}

fn pre_csrf_ok(headers: &HeaderMap, uri: &Uri, sent: &str) -> bool {
    check_origin(headers, uri).is_ok()
        && session::cookie(headers, PRE_CSRF_COOKIE)
            .is_some_and(|c| !c.is_empty() && same_secret(c, sent))
}

fn signin_body(csrf: &str, message: Option<&str>, no_users: bool) -> String {
    let msg = message
        .map(|m| format!("<p class=\"error\" id=\"signin-error\">{}</p>", esc(m)))
        .unwrap_or_default();
    let hint = if no_users {
        "<p class=\"hint\" id=\"no-users\">No account exists yet. Open the one-time setup link \
         that <code>zmesh-console serve</code> printed, or run \
         <code>zmesh-console admin create</code> on the console host.</p>"
    } else {
        ""
    };
    format!(
        r#"{msg}{hint}<form method="post" action="/ui/signin" class="card" id="signin-form">
<input type="hidden" name="csrf" value="{csrf}">
<label>Username <input name="username" id="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
<button type="submit" id="signin">Sign in</button></form>"#,
        csrf = esc(csrf)
    )
}

pub async fn form(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(sid) = session::session_cookie(&headers) {
        if session::load(&state, &sid).await?.is_some() {
            return Ok(see_other("/ui/"));
        }
    }
    let no_users = state.store.count_users().await? == 0;
    Ok(form_page(StatusCode::OK, "Sign in", |c| {
        signin_body(c, None, no_users)
    }))
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

pub async fn submit(
    State(state): State<AppState>,
    Source(source): Source,
    headers: HeaderMap,
    uri: Uri,
    Form(f): Form<SignInForm>,
) -> Result<Response, ApiError> {
    if !pre_csrf_ok(&headers, &uri, &f.csrf) {
        return Ok(form_page(StatusCode::FORBIDDEN, "Sign in", |c| {
            signin_body(c, Some("The form expired; please try again."), false)
        }));
    }
    let addr = source.clone().unwrap_or_else(|| "unknown".into());
    let now = now_ms();
    let username = f.username.trim().to_string();
    let (by_addr, by_user) = state
        .store
        .sign_in_failures(&addr, &username, now - FAILURE_WINDOW_MS)
        .await?;
    if by_addr >= MAX_FAILURES_PER_ADDR || by_user >= MAX_FAILURES_PER_ACCOUNT {
        tracing::warn!(%addr, "sign-in rate limited");
        return Ok(form_page(StatusCode::TOO_MANY_REQUESTS, "Sign in", |c| {
            signin_body(
                c,
                Some("Too many failed sign-ins. Wait 15 minutes and try again."),
                false,
            )
        }));
    }
    let creds = if username.is_empty() {
        None
    } else {
        state.store.user_credentials(&username).await?
    };
    let ok =
        session::verify_password(f.password, creds.as_ref().map(|c| c.password_hash.clone())).await;
    let user = match creds {
        Some(c) if ok && c.user.disabled_at_ms.is_none() => c.user,
        other => {
            let reason = match other {
                None => "unknown user",
                Some(c) if c.user.disabled_at_ms.is_some() => "user disabled",
                Some(_) => "wrong password",
            };
            state
                .store
                .acting(AuditCtx::new("anonymous", source))
                .record_sign_in_failure(&addr, &username, reason, now, now - FAILURE_WINDOW_MS)
                .await?;
            return Ok(form_page(StatusCode::UNAUTHORIZED, "Sign in", |c| {
                signin_body(c, Some("Wrong username or password."), false)
            }));
        }
    };
    // A fresh id at every sign-in: a session id planted before sign-in is never used.
    let cookie = session::start(&state, &user, source).await?;
    tracing::info!(user = %user.username, "signed in");
    let mut r = see_other("/ui/");
    r.headers_mut().append(header::SET_COOKIE, cookie);
    r.headers_mut()
        .append(header::SET_COOKIE, session::clear_cookie(PRE_CSRF_COOKIE));
    Ok(r)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Ends the session in the database (not just in the browser) and clears the cookie.
pub async fn signout(
    State(state): State<AppState>,
    Source(source): Source,
    headers: HeaderMap,
    uri: Uri,
    Form(f): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    if let Some(sid) = session::session_cookie(&headers) {
        if let Some(web) = session::load(&state, &sid).await? {
            check_origin(&headers, &uri)?;
            if !same_secret(&f.csrf, &web.csrf) {
                return Err(ApiError::forbidden("csrf", "missing or wrong CSRF token"));
            }
            state
                .store
                .acting(AuditCtx::new(web.actor(), source))
                .delete_session(&hash_secret(&sid))
                .await?;
        }
    }
    let mut r = see_other("/ui/signin");
    r.headers_mut()
        .append(header::SET_COOKIE, session::clear_cookie(SESSION_COOKIE));
    Ok(r)
}

fn setup_body(csrf: &str, token: &str, message: Option<&str>) -> String {
    let msg = message
        .map(|m| format!("<p class=\"error\" id=\"setup-error\">{}</p>", esc(m)))
        .unwrap_or_default();
    format!(
        r#"<p>Create the first admin account of this console. This link works once.</p>{msg}
<form method="post" action="/ui/setup/{token}" class="card" id="setup-form">
<input type="hidden" name="csrf" value="{csrf}">
<label>Username <input name="username" id="username" autocomplete="username" required autofocus></label>
<label>Password (at least {min} characters) <input name="password" id="password" type="password" autocomplete="new-password" required></label>
<label>Password again <input name="password2" id="password2" type="password" autocomplete="new-password" required></label>
<button type="submit" id="create-admin">Create admin</button></form>"#,
        csrf = esc(csrf),
        token = esc(token),
        min = session::MIN_PASSWORD,
    )
}

fn setup_gone() -> Response {
    bare_page(
        StatusCode::GONE,
        "Setup link not valid",
        "<p id=\"setup-gone\">This setup link was used already, has expired, or an account \
         exists. Sign in at <a href=\"/ui/signin\">/ui/signin</a>, or make a new link by \
         restarting the console.</p>",
    )
}

pub async fn setup_form(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    if !state
        .store
        .setup_token_valid(&hash_secret(&token), now_ms())
        .await?
    {
        return Ok(setup_gone());
    }
    Ok(form_page(StatusCode::OK, "Set up zmesh console", |c| {
        setup_body(c, &token, None)
    }))
}

#[derive(Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password2: String,
    #[serde(default)]
    csrf: String,
}

pub async fn setup_submit(
    State(state): State<AppState>,
    Source(source): Source,
    Path(token): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    Form(f): Form<SetupForm>,
) -> Result<Response, ApiError> {
    let again = |status, msg: &str| {
        let msg = msg.to_string();
        let token = token.clone();
        form_page(status, "Set up zmesh console", move |c| {
            setup_body(c, &token, Some(&msg))
        })
    };
    if !pre_csrf_ok(&headers, &uri, &f.csrf) {
        return Ok(again(
            StatusCode::FORBIDDEN,
            "The form expired; please try again.",
        ));
    }
    let hash = hash_secret(&token);
    if !state.store.setup_token_valid(&hash, now_ms()).await? {
        return Ok(setup_gone());
    }
    let username = f.username.trim().to_string();
    if let Err(e) = crate::store::validate_username(&username) {
        return Ok(again(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()));
    }
    if let Err(e) = session::check_password_rules("password", &f.password) {
        return Ok(again(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()));
    }
    if f.password != f.password2 {
        return Ok(again(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The two passwords differ.",
        ));
    }
    let phc = session::hash_password(f.password).await?;
    let ctx = AuditCtx::new(format!("setup:{username}"), source.clone());
    let Some(user) = state
        .store
        .acting(ctx)
        .redeem_setup_token(&hash, &username, &phc, now_ms())
        .await?
    else {
        return Ok(setup_gone());
    };
    tracing::info!(user = %user.username, "first admin created through the setup link");
    let cookie = session::start(&state, &user, source).await?;
    let mut r = see_other("/ui/");
    r.headers_mut().append(header::SET_COOKIE, cookie);
    r.headers_mut()
        .append(header::SET_COOKIE, session::clear_cookie(PRE_CSRF_COOKIE));
    Ok(r)
}
