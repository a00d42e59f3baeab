//! Single sign-on pages: `GET /oidc/login` sends the browser to the OpenID Provider
//! with a fresh state, nonce and PKCE challenge (kept in a short-lived HttpOnly cookie,
//! SameSite=Lax so it comes back with the provider's redirect), and
//! `GET /oidc/callback` checks the state, trades the code for a verified ID token and
//! signs the user in. Every failure is explained on the page and audited
//! (`auth.sso_refused`); the pending sign-in is used once.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::html::{bare_page, esc};
use super::signin::see_other;
use crate::http::session::{
    clear_cookie, cookie, same_secret, session_set_cookie, PRE_CSRF_COOKIE,
};
use crate::http::{ApiError, AppState, Source};
use crate::infra::oidc::Pending;
use crate::service::sso::{self as svc, SsoSignIn, VerifiedLogin};
use crate::store::SealedToken;

/// Holds the pending sign-in between the two steps.
pub const OIDC_COOKIE: &str = "__Host-zmesh_oidc";
/// How long a user may take at the provider.
const PENDING_TTL_S: i64 = 600;

fn pending_cookie(value: &str, max_age_s: i64) -> HeaderValue {
    // Lax, not Strict: the provider's redirect back is a cross-site navigation.
    let v = format!(
        "{OIDC_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age_s}"
    );
    HeaderValue::from_str(&v).expect("cookie values are URL-safe")
}

fn failure_page(status: StatusCode, reason: &str) -> Response {
    let mut r = bare_page(
        status,
        "Sign-in failed",
        &format!(
            r#"<p class="error" id="sso-error">Single sign-on failed: {}.</p>
<p><a href="/ui/signin" id="back-to-signin">Back to sign-in</a></p>"#,
            esc(reason)
        ),
    );
    r.headers_mut()
        .append(header::SET_COOKIE, pending_cookie("", 0));
    r
}

#[derive(Deserialize)]
pub struct LoginQuery {
    /// `/ui/login/CODE`: a device login to go on to after signing in.
    next: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    Source(source): Source,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    let Some(oidc) = state.oidc.clone() else {
        return Err(ApiError::NotFound {
            what: "single sign-on",
        });
    };
    let next_login = q
        .next
        .as_deref()
        .and_then(|n| n.strip_prefix("/ui/login/"))
        .filter(|c| crate::infra::oidc::is_login_code(c))
        .map(str::to_string);
    match oidc.begin(next_login).await {
        Ok((url, pending)) => {
            let mut r = see_other(&url);
            r.headers_mut().append(
                header::SET_COOKIE,
                pending_cookie(&pending.to_cookie(), PENDING_TTL_S),
            );
            Ok(r)
        }
        Err(e) => {
            tracing::warn!(error = %e, "SSO sign-in could not start");
            svc::record_failure(&state.store, source, &e.reason()).await;
            Ok(failure_page(StatusCode::BAD_GATEWAY, &e.reason()))
        }
    }
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

pub async fn callback(
    State(state): State<AppState>,
    Source(source): Source,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, ApiError> {
    let Some(oidc) = state.oidc.clone() else {
        return Err(ApiError::NotFound {
            what: "single sign-on",
        });
    };
    let fail = |status: StatusCode, reason: String| {
        let (store, source) = (state.store.clone(), source.clone());
        async move {
            svc::record_failure(&store, source, &reason).await;
            Ok::<_, ApiError>(failure_page(status, &reason))
        }
    };
    if let Some(e) = &q.error {
        let code: String = e
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return fail(
            StatusCode::UNAUTHORIZED,
            format!("the identity provider said {code}"),
        )
        .await;
    }
    let Some(pending) = cookie(&headers, OIDC_COOKIE).and_then(Pending::from_cookie) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "no sign-in in progress in this browser (expired, or already used)".into(),
        )
        .await;
    };
    if !q
        .state
        .as_deref()
        .is_some_and(|s| same_secret(s, &pending.state))
    {
        return fail(StatusCode::BAD_REQUEST, "state mismatch".into()).await;
    }
    let Some(code) = q
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() < 4096)
    else {
        return fail(StatusCode::BAD_REQUEST, "no authorization code".into()).await;
    };
    let (id, refresh_token) = match oidc.finish(code, &pending).await {
        Ok(x) => x,
        Err(e) => {
            tracing::info!(error = %e, "SSO callback refused");
            let status = match e {
                crate::infra::oidc::OidcError::Discovery(_) => StatusCode::BAD_GATEWAY,
                _ => StatusCode::UNAUTHORIZED,
            };
            return fail(status, e.reason()).await;
        }
    };
    let login = VerifiedLogin {
        issuer: id.issuer,
        subject: id.subject,
        email: id.email,
        display_name: id.name,
        groups: id.groups,
    };
    // Members may sign in only to add a device of theirs.
    let allow_member = pending.next_login.is_some();
    let to = match &pending.next_login {
        Some(code) => format!("/ui/login/{code}"),
        None => "/ui/".into(),
    };
    match svc::sign_in(&state, oidc.rules(), login, source, allow_member).await? {
        SsoSignIn::Ok { session, user } => {
            // Kept (sealed, bound to the user) for the periodic IdP re-check.
            if let (Some(t), Some(_)) = (&refresh_token, oidc.refresh_interval()) {
                let sealed = SealedToken::new(oidc.sealer().seal(&user.id, t));
                svc::keep_refresh_token(&state.store, &user, &sealed).await;
            }
            // Not a redirect: the session cookie is SameSite=Strict, and a browser does
            // not send it on a redirect that is still part of the provider's cross-site
            // navigation. A page of our own that moves on is a same-site navigation.
            let mut r = bare_page(
                StatusCode::OK,
                "Signed in",
                &format!(
                    r#"<meta http-equiv="refresh" content="0;url={to}">
<p id="sso-done">Signed in. <a href="{to}" id="continue">Continue</a>.</p>"#
                ),
            );
            let h = r.headers_mut();
            h.append(header::SET_COOKIE, session_set_cookie(&session));
            h.append(header::SET_COOKIE, clear_cookie(PRE_CSRF_COOKIE));
            h.append(header::SET_COOKIE, pending_cookie("", 0));
            Ok(r.into_response())
        }
        SsoSignIn::Refused { reason } => Ok(failure_page(StatusCode::FORBIDDEN, &reason)),
    }
}
