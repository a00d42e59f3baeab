//! Admin and enrollment API through `Router::oneshot` on a real SQLite database in a
//! temp dir: auth, enrollment keys, enrollment and every rejection, device
//! management, OpenAPI coverage and wg-quick export. Every rejected request is
//! followed by a check that nothing in the database changed.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use zmesh_console::bus::Bus;
use zmesh_console::store::{NewEnrollKey, Role, Store};
use zmesh_console::{app, AppState};
use zmesh_shared::enroll_key::EnrollKey;
use zmesh_shared::time::now_ms;
use zmesh_shared::{CertFingerprint, Secret, SigningKey, WgPrivateKey};

struct Env {
    _dir: tempfile::TempDir,
    state: AppState,
    app: Router,
    admin: String,
    auditor: String,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .unwrap();
    let admin = Secret::generate("zmt_");
    store
        .create_admin_token("root", Role::Admin, &admin.hash(), None, now_ms())
        .await
        .unwrap();
    let auditor = Secret::generate("zmt_");
    store
        .create_admin_token("audit", Role::Auditor, &auditor.hash(), None, now_ms())
        .await
        .unwrap();
    let pin = CertFingerprint::of_der(b"test certificate");
    let state = AppState::new(store, SigningKey::generate(), Some(pin), Bus::new())
        .await
        .unwrap();
    let env = Env {
        _dir: dir,
        app: app(state.clone()),
        state,
        admin: admin.expose().into(),
        auditor: auditor.expose().into(),
    };
    // Tags must be declared in the access policy before keys or admins hand them out.
    let (st, v) = env
        .admin(
            Method::PUT,
            "/api/v1/policy",
            Some(json!({"policy": TAGS_POLICY})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    env
}

const TAGS_POLICY: &str = r#"{"version": 1,
  "tag_owners": {"tag:web": [], "tag:prod": [], "tag:db": [], "tag:net": []},
  "rules": [{"src": ["*"], "dst": ["*:*"]}]}"#;

impl Env {
    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        self.send(req).await
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, path, Some(&self.admin.clone()), body)
            .await
    }

    /// Raw body with an optional content type (for malformed input).
    async fn raw(
        &self,
        method: Method,
        path: &str,
        ct: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.admin));
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        self.send(b.body(Body::from(body.to_string())).unwrap())
            .await
    }

    /// Everything an API call could have changed.
    async fn db_state(&self) -> Value {
        let s = &self.state.store;
        let net = s.get_network(self.state.network_id).await.unwrap();
        json!({
            "revision": net.revision,
            "devices": serde_json::to_value(s.list_devices(net.id).await.unwrap()).unwrap(),
            "keys": serde_json::to_value(s.list_enroll_keys(net.id).await.unwrap()).unwrap(),
        })
    }

    async fn new_key(&self, body: Value) -> String {
        let (st, v) = self
            .admin(Method::POST, "/api/v1/enroll-keys", Some(body))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        v["key"].as_str().unwrap().to_string()
    }

    async fn enroll(&self, key: &str, name: Option<&str>) -> (StatusCode, Value) {
        let secret = key.parse::<EnrollKey>().unwrap().secret;
        let body = json!({
            "protocol": zmesh_shared::PROTOCOL_VERSION,
            "enroll_key": secret.expose(),
            "public_key": WgPrivateKey::generate().public_key().to_string(),
            "name": name,
            "hostname": "host",
        });
        self.call(Method::POST, "/agent/v1/enroll", None, Some(body))
            .await
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}
fn field(v: &Value) -> &str {
    v["error"]["field"].as_str().unwrap_or("")
}

#[tokio::test]
async fn auth_is_required_and_auditors_only_read() {
    let e = env().await;
    let before = e.db_state().await;
    let (st, v) = e.call(Method::GET, "/api/v1/devices", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&v), "unauthorized");
    let (st, _) = e
        .call(Method::GET, "/api/v1/devices", Some("zmt_bogus"), None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = e
        .call(
            Method::POST,
            "/api/v1/enroll-keys",
            Some("zmt_bogus"),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = e
        .call(Method::GET, "/api/v1/devices", Some(&e.auditor), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = e
        .call(
            Method::POST,
            "/api/v1/enroll-keys",
            Some(&e.auditor),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(code(&v), "forbidden");
    assert_eq!(e.db_state().await, before);
    let (st, v) = e
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["openapi"], "3.1.0");
}

#[tokio::test]
async fn enroll_keys_create_list_get_revoke() {
    let e = env().await;
    let (st, v) = e
        .admin(
            Method::POST,
            "/api/v1/enroll-keys",
            Some(json!({"reusable": true, "tags": ["web", "tag:prod"], "ttl_seconds": 3600, "description": "fleet"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let text = v["key"].as_str().unwrap();
    let key: EnrollKey = text.parse().unwrap();
    assert_eq!(key.pin, e.state.cert_pin);
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["reusable"], true);
    assert_eq!(v["preapproved"], true);
    let exp = v["expires_at_ms"].as_i64().unwrap();
    assert!((exp - now_ms() - 3_600_000).abs() < 60_000);

    let (st, list) = e.admin(Method::GET, "/api/v1/enroll-keys", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list["enroll_keys"].as_array().unwrap().len(), 1);
    assert!(
        !list.to_string().contains(key.secret.expose()),
        "secret must never be listed"
    );
    let (st, one) = e
        .admin(Method::GET, &format!("/api/v1/enroll-keys/{id}"), None)
        .await;
    assert_eq!(
        (st, one["id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );
    let (st, _) = e
        .admin(Method::GET, "/api/v1/enroll-keys/ek_nope", None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Works before revocation, refused with the reason after.
    let (st, _) = e.enroll(text, None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, r) = e
        .admin(
            Method::POST,
            &format!("/api/v1/enroll-keys/{id}/revoke"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(r["revoked_at_ms"].is_i64());
    let before = e.db_state().await;
    let (st, v) = e.enroll(text, None).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::FORBIDDEN, "enroll_key_revoked")
    );
    assert_eq!(e.db_state().await, before);
}

#[tokio::test]
async fn enroll_key_input_errors_name_the_field() {
    let e = env().await;
    let before = e.db_state().await;
    let p = "/api/v1/enroll-keys";
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"ttl_seconds": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ttl_seconds",
        ),
        (
            json!({"ttl_seconds": 400 * 24 * 3600}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ttl_seconds",
        ),
        (
            json!({"ttl_seconds": -5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ttl_seconds",
        ),
        (
            json!({"ttl_seconds": 60, "expires_at_ms": now_ms() + 1000}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "expires_at_ms",
        ),
        (
            json!({"expires_at_ms": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "expires_at_ms",
        ),
        (
            json!({"reusable": "yes"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reusable",
        ),
        (
            json!({"bogus": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bogus",
        ),
        (
            json!({"tags": ["ok", "Not OK"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tags[1]",
        ),
        (
            json!({"tags": "web"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tags",
        ),
    ];
    for (body, want, f) in cases {
        let (st, v) = e.admin(Method::POST, p, Some(body.clone())).await;
        assert_eq!(st, want, "{body} -> {v}");
        assert_eq!(field(&v), f, "{body} -> {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    let (st, v) = e
        .raw(
            Method::POST,
            p,
            Some("application/json"),
            "{\"reusable\": tru",
        )
        .await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_json"));
    let (st, v) = e.raw(Method::POST, p, Some("application/json"), "").await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "body_required"));
    let (st, _) = e.raw(Method::POST, p, None, "").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, v) = e.raw(Method::POST, p, Some("text/plain"), "{}").await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    assert_eq!(
        e.db_state().await,
        before,
        "rejected requests must change nothing"
    );
    // Wrong method on a known path is 405 in the same error format.
    let (st, v) = e.admin(Method::PUT, p, None).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

#[tokio::test]
async fn enrollment_happy_path() {
    let e = env().await;
    let key = e.new_key(json!({"tags": ["web"]})).await;
    let pk = WgPrivateKey::generate().public_key();
    let body = json!({"protocol": 1, "enroll_key": key, "public_key": pk.to_string(), "hostname": "My Laptop", "os": "linux"});
    // The whole key text is accepted as well as its secret part.
    let (st, v) = e
        .call(Method::POST, "/agent/v1/enroll", None, Some(body))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["credential"].as_str().unwrap().starts_with("zmd_"));
    assert_eq!(
        v["signing_key"].as_str().unwrap(),
        e.state.signing_key.public_key().to_string()
    );
    assert_eq!(v["state"], "active");
    assert_eq!(v["protocol"], 1);
    let id = v["device_id"].as_str().unwrap();
    let (st, d) = e
        .admin(Method::GET, &format!("/api/v1/devices/{id}"), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(d["public_key"].as_str().unwrap(), pk.to_string());
    assert_eq!(d["tags"].as_array().unwrap().len(), 1);
    assert_eq!(d["overlay_v4"], v["overlay_v4"]);
    assert!(!d.to_string().contains(v["credential"].as_str().unwrap()));
    // The credential authenticates the stream (no upgrade here, so 400, not 401).
    let req = Request::get("/agent/v1/stream")
        .header(
            "authorization",
            format!("Bearer {}", v["credential"].as_str().unwrap()),
        )
        .body(Body::empty())
        .unwrap();
    let (st, v2) = e.send(req).await;
    assert_eq!(
        (st, code(&v2)),
        (StatusCode::BAD_REQUEST, "websocket_required")
    );
    let (st, _) = e
        .call(Method::GET, "/agent/v1/stream", Some("zmd_wrong"), None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn enrollment_rejections_change_nothing() {
    let e = env().await;
    let one_off = e.new_key(json!({})).await;
    let (st, first) = e.enroll(&one_off, Some("alpha")).await;
    assert_eq!(st, StatusCode::OK);
    let reusable = e.new_key(json!({"reusable": true})).await;
    // An expired key can only be made through the store (the API refuses past expiry).
    let expired = EnrollKey::new_secret();
    e.state
        .store
        .create_enroll_key(
            NewEnrollKey {
                network_id: e.state.network_id,
                secret_hash: expired.hash(),
                description: None,
                reusable: true,
                preapproved: true,
                tags: vec![],
                expires_at_ms: Some(now_ms() - 1000),
                created_by: "test".into(),
            },
            now_ms() - 5000,
        )
        .await
        .unwrap();
    let expired_text = EnrollKey {
        secret: expired,
        pin: None,
    }
    .to_text();
    let before = e.db_state().await;

    let (st, v) = e.enroll(&one_off, None).await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "enroll_key_used"));
    let (st, v) = e.enroll(&expired_text, None).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::FORBIDDEN, "enroll_key_expired")
    );
    let unknown = EnrollKey {
        secret: EnrollKey::new_secret(),
        pin: None,
    }
    .to_text();
    let (st, v) = e.enroll(&unknown, None).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNAUTHORIZED, "enroll_key_unknown")
    );
    let (st, v) = e.enroll(&reusable, Some("alpha")).await;
    assert_eq!(
        (st, code(&v), field(&v)),
        (StatusCode::CONFLICT, "name_taken", "name")
    );
    let (st, v) = e.enroll(&reusable, Some("bad name!")).await;
    assert_eq!((st, field(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "name"));
    // The same WireGuard key enrolls once.
    let pk = e
        .state
        .store
        .get_device(first["device_id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .public_key;
    let secret = reusable.parse::<EnrollKey>().unwrap().secret;
    let body = json!({"protocol": 1, "enroll_key": secret.expose(), "public_key": pk.to_string()});
    let (st, v) = e
        .call(Method::POST, "/agent/v1/enroll", None, Some(body.clone()))
        .await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "public_key_taken"));
    // Malformed input.
    let mut b = body.clone();
    b["protocol"] = json!(99);
    let (st, v) = e
        .call(Method::POST, "/agent/v1/enroll", None, Some(b))
        .await;
    assert_eq!(
        (st, code(&v), field(&v)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_protocol",
            "protocol"
        )
    );
    let mut b = body.clone();
    b["extra"] = json!(true);
    let (st, v) = e
        .call(Method::POST, "/agent/v1/enroll", None, Some(b))
        .await;
    assert_eq!((st, field(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "extra"));
    let mut b = body.clone();
    b["public_key"] = json!(5);
    let (st, v) = e
        .call(Method::POST, "/agent/v1/enroll", None, Some(b))
        .await;
    assert_eq!(
        (st, field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "public_key")
    );
    let mut b = body.clone();
    b["public_key"] = json!("not-a-key");
    let (st, v) = e
        .call(Method::POST, "/agent/v1/enroll", None, Some(b))
        .await;
    assert_eq!(
        (st, field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "public_key")
    );
    let req = Request::post("/agent/v1/enroll")
        .header("content-type", "application/json")
        .body(Body::from("{nope"))
        .unwrap();
    let (st, v) = e.send(req).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_json"));
    assert_eq!(
        e.db_state().await,
        before,
        "rejected enrollments must change nothing"
    );
}

#[tokio::test]
async fn device_rename_tags_approve_revoke_delete() {
    let e = env().await;
    let key = e
        .new_key(json!({"reusable": true, "preapproved": false}))
        .await;
    let (_, a) = e.enroll(&key, Some("alpha")).await;
    let (_, b) = e.enroll(&key, Some("beta")).await;
    assert_eq!(a["state"], "pending");
    let a_id = a["device_id"].as_str().unwrap().to_string();

    let (st, d) = e
        .admin(Method::POST, "/api/v1/devices/alpha/approve", None)
        .await;
    assert_eq!((st, d["state"].as_str()), (StatusCode::OK, Some("active")));
    let (st, d) = e
        .admin(
            Method::PATCH,
            &format!("/api/v1/devices/{a_id}"),
            Some(json!({"name": "gamma"})),
        )
        .await;
    assert_eq!((st, d["name"].as_str()), (StatusCode::OK, Some("gamma")));
    let (st, d) = e
        .admin(
            Method::PATCH,
            "/api/v1/devices/gamma",
            Some(json!({"tags": ["db", "tag:prod"]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{d}");
    assert_eq!(d["tags"].as_array().unwrap().len(), 2);
    let (st, d) = e
        .admin(
            Method::PATCH,
            "/api/v1/devices/gamma",
            Some(json!({"key_expires_at_ms": 4102444800000i64})),
        )
        .await;
    assert_eq!(
        (st, d["key_expires_at_ms"].as_i64()),
        (StatusCode::OK, Some(4102444800000))
    );

    let before = e.db_state().await;
    let (st, v) = e
        .admin(
            Method::PATCH,
            "/api/v1/devices/gamma",
            Some(json!({"name": "beta"})),
        )
        .await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "name_taken"));
    // A bad field rejects the whole update: the valid rename is not applied either.
    let (st, v) = e
        .admin(
            Method::PATCH,
            "/api/v1/devices/gamma",
            Some(json!({"name": "delta", "tags": ["BAD"]})),
        )
        .await;
    assert_eq!(
        (st, field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "tags[0]")
    );
    let (st, v) = e
        .admin(
            Method::PATCH,
            "/api/v1/devices/gamma",
            Some(json!({"name": 7})),
        )
        .await;
    assert_eq!((st, field(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "name"));
    let (st, _) = e
        .admin(Method::POST, "/api/v1/devices/nosuch/approve", None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(e.db_state().await, before);

    let (st, d) = e
        .admin(Method::POST, "/api/v1/devices/beta/revoke", None)
        .await;
    assert_eq!((st, d["state"].as_str()), (StatusCode::OK, Some("revoked")));
    let (st, _) = e
        .call(
            Method::GET,
            "/agent/v1/stream",
            Some(b["credential"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "a revoked device's credential is dead"
    );
    let (st, _) = e.admin(Method::DELETE, "/api/v1/devices/gamma", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = e
        .admin(Method::GET, &format!("/api/v1/devices/{a_id}"), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, list) = e.admin(Method::GET, "/api/v1/devices", None).await;
    assert_eq!(list["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn openapi_documents_exactly_the_registered_routes() {
    let e = env().await;
    let (_, doc) = e
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    let routes = zmesh_console::http::routes();
    let mut documented = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            documented += 1;
            assert!(
                routes
                    .iter()
                    .any(|r| r.path == path && r.method.as_str().eq_ignore_ascii_case(method)),
                "{method} {path} documented but not in the route table"
            );
        }
    }
    assert_eq!(documented, routes.len(), "every route is documented once");
    let is_registered = |st: StatusCode, v: &Value| {
        !(st == StatusCode::METHOD_NOT_ALLOWED
            || (st == StatusCode::NOT_FOUND && v["error"]["message"] == "route not found"))
    };
    for r in &routes {
        let path = r.path.replace("{id}", "nosuch");
        let (st, v) = e.admin(r.method.clone(), &path, None).await;
        assert!(
            is_registered(st, &v),
            "{} {} is documented but not served: {st} {v}",
            r.method,
            r.path
        );
    }
    // The check can fail: an undocumented path is not served.
    let (st, v) = e.admin(Method::GET, "/api/v1/not-a-route", None).await;
    assert!(!is_registered(st, &v));
}

#[tokio::test]
async fn export_config_for_agentless_device() {
    let e = env().await;
    let key = e.new_key(json!({})).await;
    let (_, agent) = e.enroll(&key, Some("agent1")).await;
    let agent_id: zmesh_shared::DeviceId = agent["device_id"].as_str().unwrap().parse().unwrap();
    let ep: std::net::SocketAddr = "192.0.2.7:51820".parse().unwrap();
    e.state
        .store
        .set_device_endpoints(agent_id, &[ep], now_ms())
        .await
        .unwrap();

    let before = e.db_state().await;
    let (st, v) = e
        .admin(
            Method::POST,
            "/api/v1/devices",
            Some(json!({"name": "router", "public_key": "short"})),
        )
        .await;
    assert_eq!(
        (st, field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "public_key")
    );
    let (st, v) = e
        .admin(
            Method::POST,
            "/api/v1/devices",
            Some(json!({"public_key": "x"})),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(e.db_state().await, before);

    let pk = WgPrivateKey::generate().public_key();
    let (st, dev) = e
        .admin(
            Method::POST,
            "/api/v1/devices",
            Some(json!({"name": "router", "public_key": pk.to_string(), "tags": ["net"]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{dev}");
    assert_eq!(dev["agentless"], true);
    let (st, text) = e
        .admin(Method::GET, "/api/v1/devices/router/wireguard-config", None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let text = text.as_str().unwrap();
    let agent_row = e.state.store.get_device(agent_id).await.unwrap();
    for want in [
        "[Interface]".to_string(),
        "# PrivateKey = <set on the device>".to_string(),
        format!(
            "Address = {}/32, {}/128",
            dev["overlay_v4"].as_str().unwrap(),
            dev["overlay_v6"].as_str().unwrap()
        ),
        "[Peer]".to_string(),
        format!("PublicKey = {}", agent_row.public_key),
        format!(
            "AllowedIPs = {}/32, {}/128",
            agent_row.overlay_v4, agent_row.overlay_v6
        ),
        format!("Endpoint = {ep}"),
        "PersistentKeepalive = 25".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains(&pk.to_string()), "its own key is not a peer");
    let (st, v) = e
        .admin(Method::GET, "/api/v1/devices/agent1/wireguard-config", None)
        .await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "not_agentless"));
}
