//! Accounts of the web console through the real router on SQLite: cookie attributes
//! and a fresh session id at sign-in, sign-out killing the session server-side, the
//! sign-in rate limit, the one-time setup link, and personal API tokens carrying
//! (and losing) their owner's role.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use zmesh_console::bus::Bus;
use zmesh_console::domain::password::hash_password;
use zmesh_console::http::session;
use zmesh_console::service::sessions::issue_setup_link;
use zmesh_console::store::{Role, Store};
use zmesh_console::{app, AppState};
use zmesh_shared::time::now_ms;
use zmesh_shared::SigningKey;

const PW: &str = "a long enough password";

struct Env {
    _dir: tempfile::TempDir,
    app: Router,
    state: AppState,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .unwrap();
    let state = AppState::new(store, SigningKey::generate(), None, Bus::new())
        .await
        .unwrap();
    Env {
        _dir: dir,
        app: app(state.clone()),
        state,
    }
}

struct Resp {
    status: StatusCode,
    cookies: Vec<String>,
    location: String,
    body: String,
}

impl Env {
    async fn req(&self, r: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(r).await.unwrap();
        let cookies = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        let location = resp
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string())
            .unwrap_or_default();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            cookies,
            location,
            body: String::from_utf8_lossy(&body).into(),
        }
    }

    /// GET the sign-in form, then post it with its double-submit token.
    async fn sign_in(&self, user: &str, pw: &str, planted: Option<&str>) -> Resp {
        let form = self
            .req(Request::get("/ui/signin").body(Body::empty()).unwrap())
            .await;
        let pre = cookie_value(&form.cookies, session::PRE_CSRF_COOKIE).unwrap();
        let mut cookie = format!("{}={pre}", session::PRE_CSRF_COOKIE);
        if let Some(p) = planted {
            cookie.push_str(&format!("; {}={p}", session::SESSION_COOKIE));
        }
        self.req(
            Request::post("/ui/signin")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("cookie", cookie)
                .body(Body::from(format!(
                    "username={user}&password={}&csrf={pre}",
                    pw.replace(' ', "+")
                )))
                .unwrap(),
        )
        .await
    }

    async fn with_session(&self, method: &str, uri: &str, sid: &str, body: Option<Value>) -> Resp {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("cookie", format!("{}={sid}", session::SESSION_COOKIE))
            .header(session::CSRF_HEADER, session::csrf_for(sid));
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.req(b.body(body).unwrap()).await
    }

    async fn bearer_call(&self, method: &str, uri: &str, token: &str, body: Value) -> Resp {
        self.req(
            Request::builder()
                .method(method)
                .uri(uri)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    async fn bearer(&self, uri: &str, token: &str) -> Resp {
        self.req(
            Request::get(uri)
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn user(&self, name: &str, role: Role) -> String {
        let phc = hash_password(PW.into()).await.unwrap();
        self.state
            .store
            .create_user(name, role, &phc, now_ms())
            .await
            .unwrap()
            .id
    }
}

fn cookie_value(cookies: &[String], name: &str) -> Option<String> {
    cookies.iter().find_map(|c| {
        let (kv, _) = c.split_once(';').unwrap_or((c, ""));
        let (k, v) = kv.split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.to_string())
    })
}

#[tokio::test]
async fn sign_in_sets_a_fresh_strict_cookie_and_sign_out_kills_the_session() {
    let e = env().await;
    e.user("alice", Role::Admin).await;
    let planted = "zms_planted-by-an-attacker";
    let r = e.sign_in("alice", PW, Some(planted)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location, "/ui/");
    let set = r
        .cookies
        .iter()
        .find(|c| c.starts_with(session::SESSION_COOKIE))
        .unwrap();
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    let sid = cookie_value(&r.cookies, session::SESSION_COOKIE).unwrap();
    assert_ne!(sid, planted);
    // the database has only the hash
    let raw: Vec<(String,)> = sqlx::query_as("SELECT id_hash FROM web_sessions")
        .fetch_all(e.state.store.pool())
        .await
        .unwrap();
    assert_eq!(raw.len(), 1);
    assert_ne!(raw[0].0, sid);
    assert_eq!(
        e.with_session("GET", "/ui/", &sid, None).await.status,
        StatusCode::OK
    );
    let me = e.with_session("GET", "/api/v1/whoami", &sid, None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&me.body).unwrap()["label"],
        "user:alice"
    );

    // sign-out needs the CSRF token, then the session is dead on the server too
    let bad = e
        .req(
            Request::post("/ui/signout")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("cookie", format!("{}={sid}", session::SESSION_COOKIE))
                .body(Body::from("csrf=wrong"))
                .unwrap(),
        )
        .await;
    assert_eq!(bad.status, StatusCode::FORBIDDEN);
    let out = e
        .req(
            Request::post("/ui/signout")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("cookie", format!("{}={sid}", session::SESSION_COOKIE))
                .body(Body::from(format!("csrf={}", session::csrf_for(&sid))))
                .unwrap(),
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let again = e.with_session("GET", "/ui/", &sid, None).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert_eq!(again.location, "/ui/signin");
    let api = e.with_session("GET", "/api/v1/devices", &sid, None).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sign_in_is_rate_limited_per_account_and_audited() {
    let e = env().await;
    e.user("bob", Role::Auditor).await;
    let no_user = e.sign_in("nobody", PW, None).await;
    assert_eq!(no_user.status, StatusCode::UNAUTHORIZED);
    for _ in 0..4 {
        let r = e.sign_in("bob", "wrong password!!", None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.body.contains("Wrong username or password"));
    }
    // the fifth failure for bob reaches the limit: now even the right password waits
    assert_eq!(
        e.sign_in("BOB", "wrong password!!", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = e.sign_in("bob", PW, None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(cookie_value(&r.cookies, session::SESSION_COOKIE).is_none());
    let failed: Vec<(String,)> =
        sqlx::query_as("SELECT action FROM audit_events WHERE action = 'auth.signin_failed'")
            .fetch_all(e.state.store.pool())
            .await
            .unwrap();
    assert_eq!(failed.len(), 6);
    // the form without its double-submit token is refused before any password check
    let r = e
        .req(
            Request::post("/ui/signin")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(format!("username=bob&password={PW}&csrf=x")))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn setup_link_works_once() {
    let e = env().await;
    let t = issue_setup_link(&e.state.store).await.unwrap();
    let path = format!("/ui/setup/{t}");
    let form = e
        .req(Request::get(&path).body(Body::empty()).unwrap())
        .await;
    assert_eq!(form.status, StatusCode::OK);
    let pre = cookie_value(&form.cookies, session::PRE_CSRF_COOKIE).unwrap();
    let post = |pw2: &str| {
        Request::post(&path)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", format!("{}={pre}", session::PRE_CSRF_COOKIE))
            .body(Body::from(format!(
                "username=root&password=a+long+enough+password&password2={pw2}&csrf={pre}"
            )))
            .unwrap()
    };
    let mismatch = e.req(post("different+password")).await;
    assert_eq!(mismatch.status, StatusCode::UNPROCESSABLE_ENTITY);
    let ok = e.req(post("a+long+enough+password")).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert!(cookie_value(&ok.cookies, session::SESSION_COOKIE).is_some());
    let users = e.state.store.list_users().await.unwrap();
    assert_eq!((users.len(), users[0].role), (1, Role::Admin));
    assert_eq!(
        e.req(post("a+long+enough+password")).await.status,
        StatusCode::GONE
    );
    let gone = e
        .req(Request::get(&path).body(Body::empty()).unwrap())
        .await;
    assert_eq!(gone.status, StatusCode::GONE);
}

#[tokio::test]
async fn personal_tokens_carry_the_owner_role() {
    let e = env().await;
    e.user("alice", Role::Admin).await;
    let audrey = e.user("audrey", Role::Auditor).await;
    let r = e.sign_in("alice", PW, None).await;
    let sid = cookie_value(&r.cookies, session::SESSION_COOKIE).unwrap();
    let made = e
        .with_session(
            "POST",
            &format!("/api/v1/users/{audrey}/tokens"),
            &sid,
            Some(json!({"name": "cli", "ttl_seconds": 3600})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let v: Value = serde_json::from_str(&made.body).unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("zmp_"));
    assert_eq!(v["role"], "auditor");
    let who = e.bearer("/api/v1/whoami", &token).await;
    assert_eq!(
        serde_json::from_str::<Value>(&who.body).unwrap()["role"],
        "auditor"
    );
    // promoting the owner promotes the token; disabling the owner kills it
    let up = e
        .with_session(
            "PATCH",
            &format!("/api/v1/users/{audrey}"),
            &sid,
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(up.status, StatusCode::OK, "{}", up.body);
    let who = e.bearer("/api/v1/whoami", &token).await;
    assert_eq!(
        serde_json::from_str::<Value>(&who.body).unwrap()["role"],
        "admin"
    );
    let off = e
        .with_session(
            "PATCH",
            &format!("/api/v1/users/{audrey}"),
            &sid,
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK);
    assert_eq!(
        e.bearer("/api/v1/whoami", &token).await.status,
        StatusCode::UNAUTHORIZED
    );
    // an admin cannot demote, disable or delete their own account (409, with a message)
    let me = e
        .state
        .store
        .user_credentials("alice")
        .await
        .unwrap()
        .unwrap()
        .user
        .id;
    let last = e
        .with_session(
            "PATCH",
            &format!("/api/v1/users/{me}"),
            &sid,
            Some(json!({"role": "auditor"})),
        )
        .await;
    assert_eq!(last.status, StatusCode::CONFLICT, "{}", last.body);
    assert!(last.body.contains("your own account"), "{}", last.body);
    let off = e
        .with_session(
            "PATCH",
            &format!("/api/v1/users/{me}"),
            &sid,
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(off.status, StatusCode::CONFLICT, "{}", off.body);
    let del = e
        .with_session("DELETE", &format!("/api/v1/users/{me}"), &sid, None)
        .await;
    assert_eq!(del.status, StatusCode::CONFLICT, "{}", del.body);
    // and the last active admin cannot be demoted by anyone: here through the admin
    // token (alice is the only admin user left; the token is not a user)
    let root = zmesh_shared::Secret::generate("zmt_");
    e.state
        .store
        .create_admin_token("root", Role::Admin, &root.hash(), None, now_ms())
        .await
        .unwrap();
    let demote = e
        .bearer_call(
            "PATCH",
            &format!("/api/v1/users/{me}"),
            root.expose(),
            json!({"role": "auditor"}),
        )
        .await;
    assert_eq!(demote.status, StatusCode::CONFLICT, "{}", demote.body);
    assert!(demote.body.contains("last active admin"), "{}", demote.body);
    // short passwords are refused with the field named
    let weak = e
        .with_session(
            "POST",
            "/api/v1/users",
            &sid,
            Some(json!({"username": "x", "password": "short"})),
        )
        .await;
    assert_eq!(weak.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        serde_json::from_str::<Value>(&weak.body).unwrap()["error"]["field"],
        "password"
    );
}
