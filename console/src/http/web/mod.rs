//! The web console: server-rendered pages under `/ui/` for admins and auditors.
//!
//! Like the API, the pages come from ONE table ([`routes`]) that registers them and
//! that the authorization-matrix test walks. Pages only read; every change a page
//! offers is made by `assets/app.js` calling the REST API (`/api/v1/…`) with the
//! session cookie and its CSRF token, so the API and the UI cannot do different things
//! and the API's role checks also guard the UI. An auditor's pages carry no forms or
//! buttons that change anything, and the API refuses them with 403 anyway.

pub mod html;
mod names;
mod pages;
mod pages_access;
mod pages_admin;
mod pages_changes;
mod pages_dns;
mod pages_policy;
mod pages_routes;

mod device_login;
mod events;
mod signin;
mod sso;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;

use crate::http::error::ApiError;
use crate::http::state::AppState;

/// Who may open a web route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebAccess {
    /// No session needed (sign-in, setup, assets); the handler checks what it needs.
    Public,
    /// Any signed-in user (admin or auditor).
    Reader,
    /// Signed-in admins only; auditors get 403.
    Admin,
}

pub struct WebRoute {
    pub method: Method,
    pub path: &'static str,
    pub access: WebAccess,
    pub handler: fn() -> MethodRouter<AppState>,
}

/// Every web route the console serves.
pub fn routes() -> Vec<WebRoute> {
    use WebAccess::*;
    let r = |method, path, access, handler| WebRoute {
        method,
        path,
        access,
        handler,
    };
    vec![
        r(Method::GET, "/", Public, || {
            get(|| async { Redirect::to("/ui/") })
        }),
        r(Method::GET, "/ui/assets/app.css", Public, || {
            get(|| async { asset("text/css; charset=utf-8", html::APP_CSS) })
        }),
        r(Method::GET, "/ui/assets/app.js", Public, || {
            get(|| async { asset("text/javascript; charset=utf-8", html::APP_JS) })
        }),
        r(Method::GET, "/ui/signin", Public, || get(signin::form)),
        r(Method::POST, "/ui/signin", Public, || post(signin::submit)),
        r(Method::POST, "/ui/signout", Public, || {
            post(signin::signout)
        }),
        r(Method::GET, "/oidc/login", Public, || get(sso::login)),
        r(Method::GET, "/ui/login/{code}", Public, || {
            get(device_login::show)
        }),
        r(Method::POST, "/ui/login/{code}", Public, || {
            post(device_login::confirm)
        }),
        r(Method::GET, "/oidc/callback", Public, || get(sso::callback)),
        r(Method::GET, "/ui/setup/{token}", Public, || {
            get(signin::setup_form)
        }),
        r(Method::POST, "/ui/setup/{token}", Public, || {
            post(signin::setup_submit)
        }),
        r(Method::GET, "/ui/events", Reader, || get(events::events)),
        r(Method::GET, "/ui/", Reader, || get(pages::overview)),
        r(Method::GET, "/ui/devices", Reader, || get(pages::devices)),
        r(Method::GET, "/ui/devices/{id}", Reader, || {
            get(pages::device)
        }),
        r(Method::GET, "/ui/keys", Reader, || get(pages::keys)),
        r(Method::GET, "/ui/routes", Reader, || {
            get(pages_routes::routes)
        }),
        r(Method::GET, "/ui/policy", Reader, || {
            get(pages_policy::policy)
        }),
        r(Method::GET, "/ui/dns", Reader, || get(pages_dns::dns)),
        r(Method::GET, "/ui/changes", Reader, || {
            get(pages_changes::changes)
        }),
        r(Method::GET, "/ui/audit", Reader, || get(pages_admin::audit)),
        r(Method::GET, "/ui/access", Reader, || {
            get(pages_access::access)
        }),
        r(Method::GET, "/ui/users", Admin, || get(pages_admin::users)),
    ]
}

fn asset(ct: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The web routes, to be merged into the API router (state is added there).
pub fn router(state: AppState) -> Router<AppState> {
    let mut public = Router::new();
    let mut reader = Router::new();
    let mut admin = Router::new();
    let mut by_path: std::collections::BTreeMap<&str, (WebAccess, MethodRouter<AppState>)> =
        Default::default();
    for r in routes() {
        let mr = (r.handler)();
        let entry = match by_path.remove(r.path) {
            Some((a, prev)) => {
                assert_eq!(a, r.access, "one path, one access kind: {}", r.path);
                (a, prev.merge(mr))
            }
            None => (r.access, mr),
        };
        by_path.insert(r.path, entry);
    }
    for (path, (access, mr)) in by_path {
        let mr = mr.fallback(|| async { ApiError::MethodNotAllowed });
        match access {
            WebAccess::Public => public = public.route(path, mr),
            WebAccess::Reader => reader = reader.route(path, mr),
            WebAccess::Admin => admin = admin.route(path, mr),
        }
    }
    let reader = reader.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        require_reader,
    ));
    let admin = admin.route_layer(axum::middleware::from_fn_with_state(
        state,
        require_admin_page,
    ));
    public.merge(reader).merge(admin)
}

async fn require_reader(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    gate(state, req, next, false).await
}

async fn require_admin_page(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    gate(state, req, next, true).await
}

/// Pages need a live session; without one the browser is sent to sign in.
async fn gate(
    state: AppState,
    mut req: Request,
    next: Next,
    admin_only: bool,
) -> Result<Response, ApiError> {
    let web = match crate::http::session::session_cookie(req.headers()) {
        Some(sid) => crate::http::session::load(&state, &sid).await?,
        None => None,
    };
    let Some(web) = web else {
        let mut r = Redirect::to("/ui/signin").into_response();
        *r.status_mut() = StatusCode::SEE_OTHER;
        if req.headers().contains_key(header::COOKIE) {
            // a dead session cookie is of no use any more
            r.headers_mut().append(
                header::SET_COOKIE,
                crate::http::session::clear_cookie(crate::http::session::SESSION_COOKIE),
            );
        }
        return Ok(r);
    };
    if web.user.role == crate::store::Role::Member {
        return Ok(html::error_page(
            &web,
            StatusCode::FORBIDDEN,
            "Your account has no access to the console; ask an admin.",
        ));
    }
    // accounts and the access log are console-wide: not for accounts scoped to a network
    if web.user.network_id.is_some() && (admin_only || req.uri().path().starts_with("/ui/access")) {
        return Ok(html::error_page(
            &web,
            StatusCode::FORBIDDEN,
            "This page is console-wide; your account is scoped to one network.",
        ));
    }
    // pages resolve their network (`?network=`) like the API does (`http::scope`)
    req.extensions_mut()
        .insert(crate::http::Principal::User(Box::new(web.clone())));
    if admin_only && !web.is_admin() {
        return Ok(html::error_page(
            &web,
            StatusCode::FORBIDDEN,
            "This page is for admins only.",
        ));
    }
    req.extensions_mut().insert(web);
    Ok(next.run(req).await)
}
