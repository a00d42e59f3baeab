//! The web console through the real router in-process (no TLS, no browser): a signed-in
//! session made straight in the store, and GET of a page with its cookie.

#![allow(dead_code)] // each test binary uses a different part

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;
use zmesh_console::http::session;
use zmesh_console::store::{Role, Store};
use zmesh_shared::time::now_ms;
use zmesh_shared::Secret;

/// A password hash nobody signs in with (sessions are made directly).
const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";

/// A user `name` with `role` and a live session; returns the session cookie's value.
pub async fn session(store: &Store, name: &str, role: Role) -> String {
    session_in(store, name, role, None).await
}

/// [`session`] for a user scoped to `network` (`None`: console-wide).
#[allow(dead_code)] // not every test that includes this module has scoped users
pub async fn session_in(
    store: &Store,
    name: &str,
    role: Role,
    network: Option<zmesh_shared::NetworkId>,
) -> String {
    let now = now_ms();
    let u = store
        .create_user_in(name, role, PHC, now, network)
        .await
        .unwrap();
    let sid = Secret::generate("zms_");
    store
        .create_session(&u.id, &sid.hash(), now, now + 3_600_000)
        .await
        .unwrap();
    sid.expose().to_string()
}

/// GET `uri` with the session; status and body.
pub async fn get(app: &Router, sid: &str, uri: &str) -> (StatusCode, String) {
    let r = Request::get(uri)
        .header("cookie", format!("{}={}", session::SESSION_COOKIE, sid))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(r).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into())
}
