//! Authorization matrix, generated from the router's own route tables (`api::routes`
//! and `web::routes`): every route × {anonymous, auditor, admin, revoked token} and the
//! same roles signed in to the web console (session cookie + CSRF token, and a session
//! that was signed out). Each route must be listed in `EXPECTED` with its class; a new
//! route fails this test until someone decides who may call it, and a listed route that
//! no longer exists fails it too.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use tower::ServiceExt;
use zmesh_console::bus::Bus;
use zmesh_console::http::web::{self, WebAccess};
use zmesh_console::http::{routes, Access};
use zmesh_console::store::{NewNetwork, Role, Store};
use zmesh_console::{app, AppState};
use zmesh_shared::time::now_ms;
use zmesh_shared::{Secret, SigningKey};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Anyone, signed in or not.
    Public,
    /// Admin and auditor (tokens or sessions); others 401.
    Read,
    /// Admin only (tokens or sessions); auditors 403, others 401.
    Write,
    /// Device credential only: every admin principal is refused.
    Device,
    /// An enrollment key in the body: nobody gets in without one.
    EnrollKey,
    /// Web page for any signed-in user; without a session: 303 to sign-in.
    Page,
    /// Web page for admins; auditors 403; without a session: 303.
    AdminPage,
}

const EXPECTED: &[(&str, &str, Class)] = {
    use Class::*;
    &[
        ("GET", "/api/v1/openapi.json", Public),
        ("POST", "/api/v1/enroll-keys", Write),
        ("GET", "/api/v1/enroll-keys", Read),
        ("GET", "/api/v1/enroll-keys/{id}", Read),
        ("POST", "/api/v1/enroll-keys/{id}/revoke", Write),
        ("GET", "/api/v1/devices", Read),
        ("POST", "/api/v1/devices", Write),
        ("GET", "/api/v1/devices/{id}", Read),
        ("PATCH", "/api/v1/devices/{id}", Write),
        ("DELETE", "/api/v1/devices/{id}", Write),
        ("POST", "/api/v1/devices/{id}/approve", Write),
        ("POST", "/api/v1/devices/{id}/revoke", Write),
        ("GET", "/api/v1/devices/{id}/wireguard-config", Read),
        ("GET", "/api/v1/changes", Read),
        ("GET", "/api/v1/changes/{revision}", Read),
        ("GET", "/api/v1/routes", Read),
        ("POST", "/api/v1/routes/approve", Write),
        ("POST", "/api/v1/routes/unapprove", Write),
        ("GET", "/api/v1/audit/events", Read),
        ("GET", "/api/v1/audit/access", Read),
        ("GET", "/api/v1/audit/evidence", Read),
        ("GET", "/api/v1/audit/checkpoints", Read),
        ("POST", "/api/v1/audit/checkpoints", Write),
        ("GET", "/api/v1/audit/verify", Read),
        ("GET", "/api/v1/flows", Read),
        ("POST", "/api/v1/tokens", Write),
        ("GET", "/api/v1/tokens", Read),
        ("POST", "/api/v1/tokens/{id}/revoke", Write),
        ("GET", "/api/v1/policy", Read),
        ("PUT", "/api/v1/policy", Write),
        ("POST", "/api/v1/policy/check", Read),
        ("POST", "/api/v1/policy/diff", Read),
        ("POST", "/api/v1/policy/edit", Read),
        ("GET", "/api/v1/policy/history", Read),
        ("GET", "/api/v1/policy/versions/{version}", Read),
        ("POST", "/api/v1/policy/rollback", Write),
        ("GET", "/api/v1/dns", Read),
        ("PUT", "/api/v1/dns", Write),
        ("POST", "/api/v1/dns/records", Write),
        ("DELETE", "/api/v1/dns/records/{name}", Write),
        ("PUT", "/api/v1/dns/split/{domain}", Write),
        ("DELETE", "/api/v1/dns/split/{domain}", Write),
        ("GET", "/api/v1/whoami", Read),
        ("GET", "/api/v1/users", Read),
        ("POST", "/api/v1/users", Write),
        ("GET", "/api/v1/users/{id}", Read),
        ("PATCH", "/api/v1/users/{id}", Write),
        ("DELETE", "/api/v1/users/{id}", Write),
        ("GET", "/api/v1/users/{id}/tokens", Read),
        ("POST", "/api/v1/users/{id}/tokens", Write),
        ("GET", "/api/v1/networks", Read),
        ("POST", "/api/v1/networks", Write),
        ("GET", "/api/v1/networks/{name}", Read),
        ("PATCH", "/api/v1/networks/{name}", Write),
        ("DELETE", "/api/v1/networks/{name}", Write),
        ("POST", "/agent/v1/enroll", EnrollKey),
        ("POST", "/agent/v1/login", Public),
        ("POST", "/agent/v1/login/wait", Public),
        ("GET", "/agent/v1/stream", Device),
        ("GET", "/agent/v1/relay", Public),
        ("GET", "/", Public),
        ("GET", "/ui/assets/app.css", Public),
        ("GET", "/ui/assets/app.js", Public),
        ("GET", "/ui/signin", Public),
        ("POST", "/ui/signin", Public),
        ("POST", "/ui/signout", Public),
        ("GET", "/oidc/login", Public),
        ("GET", "/ui/login/{code}", Public),
        ("POST", "/ui/login/{code}", Public),
        ("GET", "/oidc/callback", Public),
        ("GET", "/ui/setup/{token}", Public),
        ("POST", "/ui/setup/{token}", Public),
        ("GET", "/ui/events", Page),
        ("GET", "/ui/", Page),
        ("GET", "/ui/devices", Page),
        ("GET", "/ui/devices/{id}", Page),
        ("GET", "/ui/keys", Page),
        ("GET", "/ui/routes", Page),
        ("GET", "/ui/changes", Page),
        ("GET", "/ui/policy", Page),
        ("GET", "/ui/dns", Page),
        ("GET", "/ui/audit", Page),
        ("GET", "/ui/access", Page),
        ("GET", "/ui/users", AdminPage),
    ]
};

#[derive(Debug, Clone)]
enum Who {
    Anonymous,
    Token(&'static str, String),
    /// Session id and its CSRF token.
    Session(&'static str, String, String),
    /// A token or session scoped to the network "lab" (checked by
    /// `network_scoped_principals`, not by the matrix of unscoped ones).
    Scoped(&'static str, Box<Who>),
}

impl Who {
    fn name(&self) -> &'static str {
        match self {
            Who::Anonymous => "anonymous",
            Who::Token(n, _) | Who::Session(n, _, _) | Who::Scoped(n, _) => n,
        }
    }
}

/// Every (method, path) of the router with the class its access kind implies.
fn table() -> Vec<(String, &'static str, Option<Class>)> {
    let mut out = vec![];
    for r in routes() {
        let read = matches!(r.method, Method::GET | Method::HEAD);
        let implied = match r.access {
            Access::Public => Class::Public,
            Access::Admin if read => Class::Read,
            Access::Admin => Class::Write,
            Access::Reader => Class::Read,
            Access::Device => Class::Device,
            Access::EnrollKey => Class::EnrollKey,
        };
        out.push((r.method.to_string(), r.path, Some(implied)));
    }
    for r in web::routes() {
        let implied = match r.access {
            WebAccess::Public => Class::Public,
            WebAccess::Reader => Class::Page,
            WebAccess::Admin => Class::AdminPage,
        };
        out.push((r.method.to_string(), r.path, Some(implied)));
    }
    out
}

#[test]
fn every_route_is_listed_and_nothing_else() {
    let table = table();
    let have: BTreeSet<(String, String)> = table
        .iter()
        .map(|(m, p, _)| (m.clone(), p.to_string()))
        .collect();
    let listed: BTreeSet<(String, String)> = EXPECTED
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let unlisted: Vec<_> = have.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "routes without an entry in the authorization matrix (add them to EXPECTED): {unlisted:?}"
    );
    let stale: Vec<_> = listed.difference(&have).collect();
    assert!(
        stale.is_empty(),
        "EXPECTED lists routes the router does not have: {stale:?}"
    );
    // what the table says about a route and what the matrix expects must agree
    for (m, p, implied) in &table {
        let (_, _, want) = EXPECTED
            .iter()
            .find(|(em, ep, _)| em == m && ep == p)
            .expect("listed");
        assert_eq!(
            Some(*want),
            *implied,
            "{m} {p}: access kind and matrix differ"
        );
    }
}

struct Env {
    _dir: tempfile::TempDir,
    app: Router,
    who: Vec<Who>,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .unwrap();
    let now = now_ms();
    let mut who = vec![Who::Anonymous];
    // a second network with its own admin and auditor (token and session each)
    store.default_network().await.unwrap();
    let lab = store
        .create_network(|_| {
            Ok::<_, ()>(NewNetwork {
                name: "lab".into(),
                v4: "10.88.0.0/16".parse().unwrap(),
                v6: "fd88::/48".parse().unwrap(),
                dns_suffix: None,
                exclusive: false,
            })
        })
        .await
        .unwrap()
        .unwrap();
    let phc0 = zmesh_console::domain::password::hash_password("correct horse battery".into())
        .await
        .unwrap();
    for (label, role) in [("lab admin", Role::Admin), ("lab auditor", Role::Auditor)] {
        let t = Secret::generate("zmt_");
        store
            .create_admin_token_in(label, role, &t.hash(), None, now, Some(lab.id))
            .await
            .unwrap();
        who.push(Who::Scoped(
            label,
            Box::new(Who::Token(label, t.expose().into())),
        ));
        let u = store
            .create_user_in(&label.replace(' ', "-"), role, &phc0, now, Some(lab.id))
            .await
            .unwrap();
        let sid = Secret::generate("zms_");
        store
            .create_session(&u.id, &sid.hash(), now, now + 3_600_000)
            .await
            .unwrap();
        who.push(Who::Scoped(
            label,
            Box::new(Who::Session(
                label,
                sid.expose().into(),
                zmesh_console::http::session::csrf_for(sid.expose()),
            )),
        ));
    }
    for (name, role) in [("admin", Role::Admin), ("auditor", Role::Auditor)] {
        let t = Secret::generate("zmt_");
        store
            .create_admin_token(name, role, &t.hash(), None, now)
            .await
            .unwrap();
        who.push(Who::Token(
            if role == Role::Admin {
                "admin token"
            } else {
                "auditor token"
            },
            t.expose().into(),
        ));
    }
    let revoked = Secret::generate("zmt_");
    let row = store
        .create_admin_token("gone", Role::Admin, &revoked.hash(), None, now)
        .await
        .unwrap();
    store.revoke_admin_token(row.id, now).await.unwrap();
    who.push(Who::Token("revoked token", revoked.expose().into()));

    let phc = zmesh_console::domain::password::hash_password("correct horse battery".into())
        .await
        .unwrap();
    for (name, role) in [("alice", Role::Admin), ("audrey", Role::Auditor)] {
        let u = store.create_user(name, role, &phc, now).await.unwrap();
        let sid = Secret::generate("zms_");
        store
            .create_session(&u.id, &sid.hash(), now, now + 3_600_000)
            .await
            .unwrap();
        let label = if role == Role::Admin {
            "admin session"
        } else {
            "auditor session"
        };
        who.push(Who::Session(
            label,
            sid.expose().into(),
            zmesh_console::http::session::csrf_for(sid.expose()),
        ));
        if role == Role::Admin {
            let dead = Secret::generate("zms_");
            store
                .create_session(&u.id, &dead.hash(), now, now + 3_600_000)
                .await
                .unwrap();
            store.delete_session(&dead.hash()).await.unwrap();
            who.push(Who::Session(
                "signed-out session",
                dead.expose().into(),
                zmesh_console::http::session::csrf_for(dead.expose()),
            ));
        }
    }
    let state = AppState::new(store, SigningKey::generate(), None, Bus::new())
        .await
        .unwrap();
    Env {
        _dir: dir,
        app: app(state),
        who,
    }
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "nope")
        .replace("/networks/{name}", "/networks/lab")
        .replace("{version}", "1")
        .replace("{revision}", "1")
        .replace("{token}", "zsu_nope")
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    who: &Who,
    csrf: bool,
) -> (StatusCode, String) {
    let method: Method = method.parse().unwrap();
    let mut b = Request::builder()
        .method(method.clone())
        .uri(concrete(path));
    let who = match who {
        Who::Scoped(_, w) => w.as_ref(),
        w => w,
    };
    match who {
        Who::Anonymous | Who::Scoped(..) => {}
        Who::Token(_, t) => b = b.header("authorization", format!("Bearer {t}")),
        Who::Session(_, sid, token) => {
            b = b.header(
                "cookie",
                format!("{}={sid}", zmesh_console::http::session::SESSION_COOKIE),
            );
            if csrf {
                b = b.header(zmesh_console::http::session::CSRF_HEADER, token);
            }
        }
    }
    let read = matches!(method, Method::GET | Method::HEAD);
    let req = if read {
        b.body(Body::empty()).unwrap()
    } else if path.starts_with("/ui/") {
        b.header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(""))
            .unwrap()
    } else {
        b.header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap()
    };
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let loc = resp
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, loc)
}

fn is_role(who: &Who, role: &str) -> bool {
    who.name().starts_with(role)
}

/// Whether `status` is what `class` allows for `who`; the reason when not.
fn check(
    class: Class,
    method: &str,
    who: &Who,
    status: StatusCode,
    loc: &str,
) -> Result<(), String> {
    let s = status.as_u16();
    let admin = is_role(who, "admin");
    let auditor = is_role(who, "auditor");
    let session = matches!(who, Who::Session(..));
    let allowed = !matches!(s, 401 | 403) && s < 500 && s != 303;
    let ok = match class {
        Class::Public => s < 500 && s != 401 && (s != 403 || method == "POST"),
        Class::Read if admin || auditor => allowed,
        Class::Read => s == 401,
        Class::Write if admin => allowed,
        Class::Write if auditor => s == 403,
        Class::Write => s == 401,
        Class::Device => matches!(s, 400 | 401),
        Class::EnrollKey => (400..500).contains(&s) && s != 403,
        Class::Page if session && (admin || auditor) => s == 200 || s == 404,
        Class::Page => s == 303 && loc == "/ui/signin",
        Class::AdminPage if session && admin => s == 200,
        Class::AdminPage if session && auditor => s == 403,
        Class::AdminPage => s == 303 && loc == "/ui/signin",
    };
    if ok {
        Ok(())
    } else {
        Err(format!("got {s} (location {loc:?})"))
    }
}

#[tokio::test]
async fn matrix_of_every_route_and_principal() {
    let env = env().await;
    let mut failures = vec![];
    let mut cells = 0;
    for (method, path, class) in EXPECTED {
        for who in env.who.iter().filter(|w| !matches!(w, Who::Scoped(..))) {
            let (status, loc) = call(&env.app, method, path, who, true).await;
            cells += 1;
            if let Err(e) = check(*class, method, who, status, &loc) {
                failures.push(format!(
                    "{method} {path} as {}: {e} (class {class:?})",
                    who.name()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(cells >= EXPECTED.len() * 7);
}

/// Principals scoped to the network "lab" against every API route: in their own
/// network (no `network` parameter, or `network=lab`) like any admin or auditor; asking
/// for `default` (or a network that does not exist) always 404 for network-scoped
/// routes, never 2xx; console-wide routes (accounts, tokens, the whole audit chain,
/// the access log, changing networks) 403 whatever the network.
#[tokio::test]
async fn network_scoped_principals() {
    let env = env().await;
    let mut failures = vec![];
    let mut cells = 0;
    for (method, path, class) in EXPECTED {
        if !path.starts_with("/api/") {
            continue;
        }
        let m: Method = method.parse().unwrap();
        let console_wide = zmesh_console::http::scope::console_wide(&m, path);
        let scoped = zmesh_console::http::scope::network_scoped(path);
        for who in env.who.iter().filter(|w| matches!(w, Who::Scoped(..))) {
            let auditor = who.name().contains("auditor");
            for network in [None, Some("lab"), Some("default"), Some("nope")] {
                let p = match network {
                    Some(n) => format!("{}?network={n}", concrete(path)),
                    None => concrete(path),
                };
                let (status, _) = call(&env.app, method, &p, who, true).await;
                let s = status.as_u16();
                cells += 1;
                let other = matches!(network, Some("default" | "nope"));
                let ok = if auditor && *class == Class::Write {
                    s == 403
                } else if console_wide {
                    s == 403
                } else if scoped && other {
                    s == 404
                } else if *path == "/api/v1/audit/events" && other {
                    s == 404
                } else {
                    !matches!(s, 401 | 403) && s < 500
                };
                if !ok {
                    failures.push(format!(
                        "{method} {p} as {}: got {s} (class {class:?})",
                        who.name()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(cells > 200);
}

/// A session without its CSRF token may read but never write, whatever its role.
#[tokio::test]
async fn session_writes_need_the_csrf_token() {
    let env = env().await;
    let admin = env
        .who
        .iter()
        .find(|w| w.name() == "admin session")
        .unwrap()
        .clone();
    for (method, path, class) in EXPECTED {
        if *class != Class::Write {
            continue;
        }
        let (status, _) = call(&env.app, method, path, &admin, false).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{method} {path} without CSRF token"
        );
    }
    let (status, _) = call(&env.app, "GET", "/api/v1/devices", &admin, false).await;
    assert_eq!(status, StatusCode::OK);
}
