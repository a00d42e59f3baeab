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
use crate::domain::password::MIN_PASSWORD;
use crate::http::session::{self, check_origin, same_secret, PRE_CSRF_COOKIE, SESSION_COOKIE};
use crate::http::{ApiError, AppState, Source};
use crate::service::sessions::{self as svc, Setup, SignIn};
use crate::store::AuditCtx;

/// To the overview with the new session's cookie (and without the pre-sign-in one).
fn signed_in(sid: &Secret) -> Response {
    let mut r = see_other("/ui/");
    r.headers_mut()
        .append(header::SET_COOKIE, session::session_set_cookie(sid));
    r.headers_mut()
        .append(header::SET_COOKIE, session::clear_cookie(PRE_CSRF_COOKIE));
    r
}

pub(super) fn see_other(to: &str) -> Response {
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

fn signin_body(csrf: &str, message: Option<&str>, no_users: bool, sso: bool) -> String {
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
<button type="submit" id="signin">Sign in</button></form>{sso}"#,
        csrf = esc(csrf),
        sso = if sso {
            r#"<p class="card"><a class="button" id="signin-sso" href="/oidc/login">Sign in with SSO</a></p>"#
        } else {
            ""
        },
    )
}

pub async fn form(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(sid) = session::session_cookie(&headers) {
        if session::load(&state, &sid).await?.is_some() {
            return Ok(see_other("/ui/"));
        }
    }
    let no_users = state.store.count_users().await? == 0;
    let sso = state.oidc.is_some();
    Ok(form_page(StatusCode::OK, "Sign in", |c| {
        signin_body(c, None, no_users, sso)
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
    let sso = state.oidc.is_some();
    if !pre_csrf_ok(&headers, &uri, &f.csrf) {
        return Ok(form_page(StatusCode::FORBIDDEN, "Sign in", |c| {
            signin_body(c, Some("The form expired; please try again."), false, sso)
        }));
    }
    match svc::sign_in(&state.store, &f.username, f.password, source).await? {
        SignIn::RateLimited => Ok(form_page(StatusCode::TOO_MANY_REQUESTS, "Sign in", |c| {
            signin_body(
                c,
                Some("Too many failed sign-ins. Wait 15 minutes and try again."),
                false,
                sso,
            )
        })),
        SignIn::Refused { .. } => Ok(form_page(StatusCode::UNAUTHORIZED, "Sign in", |c| {
            signin_body(c, Some("Wrong username or password."), false, sso)
        })),
        SignIn::Ok { session: sid, .. } => Ok(signed_in(&sid)),
    }
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
            svc::sign_out(&state.store, AuditCtx::new(web.actor(), source), &sid).await?;
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
        min = MIN_PASSWORD,
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
    match svc::redeem_setup(
        &state.store,
        &token,
        &f.username,
        f.password,
        &f.password2,
        source,
    )
    .await?
    {
        Setup::Gone => Ok(setup_gone()),
        Setup::Invalid(msg) => Ok(again(StatusCode::UNPROCESSABLE_ENTITY, &msg)),
        Setup::Done { session: sid, .. } => Ok(signed_in(&sid)),
    }
}
