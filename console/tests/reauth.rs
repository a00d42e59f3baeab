//! Session lifetime and re-authentication, over the real agent API, the real web pages
//! and the real OpenID Provider: a device enrolled by login gets a key expiry of
//! `--device-key-lifetime` days (0: none; a bad value stops `serve` with an error
//! naming the flag); a re-authentication needs the device's current credential (else
//! 401 and `auth.failed`), can only be confirmed by the device's owner (anyone else:
//! 403, `auth.forbidden`, nothing changed), and, confirmed by the owner, keeps the
//! device's id, name and addresses, installs the new public key and a new expiry
//! (`device.reauth`), and swaps the stream credential (the old one is refused).

#[path = "support/oidc.rs"]
mod oidc;
#[path = "support/sso_console.rs"]
mod sso_console;

use std::time::{Duration, Instant};

use reqwest::header::COOKIE;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use zmesh_shared::time::now_ms;
use zmesh_shared::WgPrivateKey;

use oidc::{cookie_of, input_value, location, login_with_http, OidcProvider};

const SECRET: &str = "reauth-client-secret-93f1";
const PW: &str = "correct horse battery staple";
const DAY_MS: i64 = 86_400_000;

struct Env {
    http: reqwest::Client,
    base: String,
    admin: String,
}

impl Env {
    fn new(serve: &sso_console::Serve) -> Env {
        let fp =
            zmesh_console::infra::tls::fingerprint_of_pem_file(&serve.data.join("tls/cert.pem"))
                .unwrap();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(
                zmesh_console::infra::tls_client::pinned_client_config(fp).unwrap(),
            )
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let admin = std::fs::read_to_string(serve.data.join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        Env {
            http,
            base: serve.url.clone(),
            admin,
        }
    }

    /// `POST /agent/v1/login` with `public_key` (and a re-authentication proof).
    async fn start_login(&self, public_key: &str, reauth: Option<Value>) -> (StatusCode, Value) {
        let mut body = json!({"protocol": zmesh_shared::PROTOCOL_VERSION,
            "public_key": public_key, "hostname": "alice-laptop", "os": "linux"});
        if let Some(p) = reauth {
            body["reauth"] = p;
        }
        let r = self
            .http
            .post(format!("{}/agent/v1/login", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    /// The agent's long poll, in the background (at most 4 waits of ~25 s).
    fn wait_login(&self, poll: &str) -> JoinHandle<(StatusCode, Value)> {
        let (http, base, poll) = (self.http.clone(), self.base.clone(), poll.to_string());
        tokio::spawn(async move {
            for _ in 0..4 {
                let r = http
                    .post(format!("{base}/agent/v1/login/wait"))
                    .json(&json!({"poll_secret": poll}))
                    .send()
                    .await
                    .unwrap();
                match r.status() {
                    StatusCode::ACCEPTED => continue,
                    s => return (s, r.json::<Value>().await.unwrap()),
                }
            }
            panic!("the login was never confirmed");
        })
    }

    /// `user` opens `link` without a session: single sign-on, and back; the session.
    async fn sign_in_via(&self, link: &str, user: &str) -> String {
        let r = self.http.get(link).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let to = location(&r);
        assert!(to.starts_with("/oidc/login?next=/ui/login/"), "{to}");
        let r = self
            .http
            .get(format!("{}{to}", self.base))
            .send()
            .await
            .unwrap();
        let pending = cookie_of(&r, "__Host-zmesh_oidc").unwrap();
        let callback = login_with_http(&location(&r), user, PW).await;
        let r = self
            .http
            .get(&callback)
            .header(COOKIE, format!("__Host-zmesh_oidc={pending}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        cookie_of(&r, "__Host-zmesh_session").expect("a session")
    }

    async fn page(&self, link: &str, session: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(link)
            .header(COOKIE, format!("__Host-zmesh_session={session}"))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn confirm(&self, link: &str, session: &str, csrf: &str) -> (StatusCode, String) {
        let r = self
            .http
            .post(link)
            .header(COOKIE, format!("__Host-zmesh_session={session}"))
            .header("origin", &self.base)
            .form(&[("csrf", csrf)])
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn device(&self, id: &str) -> Value {
        self.admin_call(reqwest::Method::GET, &format!("/api/v1/devices/{id}"), None)
            .await
    }

    async fn admin_call(&self, m: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut rb = self
            .http
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(&self.admin);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// The audit events with `action`.
    async fn events(&self, action: &str) -> Vec<Value> {
        let text = self
            .http
            .get(format!("{}/api/v1/audit/events?action={action}", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "event" && v["action"] == action)
            .collect()
    }

    /// Waits (at most 10 s) until there are `n` events with `action`.
    async fn wait_events(&self, action: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.events(action).await.len();
            if got >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{got} {action} events, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The status the control stream answers `credential` (400: accepted, only the
    /// WebSocket upgrade missing; 401: refused).
    async fn stream_status(&self, credential: &str) -> StatusCode {
        self.http
            .get(format!("{}/agent/v1/stream", self.base))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// A whole enrollment by login, confirmed by `user`: the enrollment and the session.
    async fn enroll_by_login(&self, user: &str, public_key: &str) -> (Value, String) {
        let (st, started) = self.start_login(public_key, None).await;
        assert_eq!(st, StatusCode::OK, "{started}");
        let link = started["login_url"].as_str().unwrap().to_string();
        let waiter = self.wait_login(started["poll_secret"].as_str().unwrap());
        let session = self.sign_in_via(&link, user).await;
        let (st, page) = self.page(&link, &session).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        let (st, page) = self
            .confirm(&link, &session, &input_value(&page, "csrf"))
            .await;
        assert_eq!(st, StatusCode::OK, "{page}");
        assert!(page.contains("device-added"), "{page}");
        let (st, enrolled) = waiter.await.unwrap();
        assert_eq!(st, StatusCode::OK, "{enrolled}");
        (enrolled, session)
    }
}

/// When the console noticed the device's key expiry, read from its database.
async fn expiry_noted(serve: &sso_console::Serve, id: &str) -> Option<i64> {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}", serve.data.join("zmesh.db").display());
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let v: Option<i64> = sqlx::query_scalar("SELECT expiry_noted_at_ms FROM devices WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    v
}

fn key() -> String {
    WgPrivateKey::generate().public_key().to_string()
}

fn assert_about(got: &Value, want_ms: i64, what: &str) {
    let got = got
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: no expiry: {got}"));
    assert!(
        (got - want_ms).abs() < 5 * 60_000,
        "{what}: expiry {got}, expected about {want_ms}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauth_keeps_the_device_and_rotates_its_key() {
    let users = json!({
        "alice": {"password": PW, "email": "alice@example.com", "name": "Alice", "groups": []},
        "bob": {"password": PW, "email": "bob@example.com", "name": "Bob", "groups": []},
    });
    let Some(idp) = OidcProvider::start_or_skip("reauth", &users, "zmesh-console", SECRET) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let serve = sso_console::start(
        dir.path(),
        idp.issuer(),
        SECRET,
        &["--device-key-lifetime", "30"],
    );
    let e = Env::new(&serve);

    // Enrolled by login: the key expires after the configured 30 days.
    let k1 = key();
    let (enrolled, alice) = e.enroll_by_login("alice", &k1).await;
    let id = enrolled["device_id"].as_str().unwrap().to_string();
    let cred1 = enrolled["credential"].as_str().unwrap().to_string();
    let before = e.device(&id).await;
    assert_eq!(before["owner"], "user:alice@example.com");
    assert_about(
        &before["key_expires_at_ms"],
        now_ms() + 30 * DAY_MS,
        "login enrollment",
    );

    // A re-authentication needs the device's current credential.
    let (st, v) = e
        .start_login(
            &key(),
            Some(json!({"device_id": id, "credential": "zmd_not-the-credential"})),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let failed = e.events("auth.failed").await;
    assert!(
        failed.iter().any(|ev| ev["after"]["device"] == id.as_str()
            && ev["after"]["reason"]
                .as_str()
                .unwrap_or("")
                .contains("re-authentication")),
        "{failed:?}"
    );
    // A device enrolled with a key has no user to sign in again.
    let ek = e
        .admin_call(
            reqwest::Method::POST,
            "/api/v1/enroll-keys",
            Some(json!({"tags": []})),
        )
        .await;
    let secret = ek["key"]
        .as_str()
        .unwrap()
        .parse::<zmesh_shared::enroll_key::EnrollKey>()
        .unwrap()
        .secret;
    let server: Value = e
        .http
        .post(format!("{}/agent/v1/enroll", e.base))
        .json(
            &json!({"protocol": zmesh_shared::PROTOCOL_VERSION, "enroll_key": secret.expose(),
            "public_key": key(), "name": "server"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        server["key_expires_at_ms"].is_null()
            && e.device(server["device_id"].as_str().unwrap()).await["key_expires_at_ms"].is_null(),
        "key-enrolled devices do not expire: {server}"
    );
    let (st, v) = e
        .start_login(
            &key(),
            Some(json!({"device_id": server["device_id"], "credential": server["credential"]})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");

    // The key expires (an admin sets it in the past); an expired device may still sign in
    // again, with its current credential and a new key.
    e.admin_call(
        reqwest::Method::PATCH,
        &format!("/api/v1/devices/{id}"),
        Some(json!({"key_expires_at_ms": now_ms() - 1000})),
    )
    .await;
    e.wait_events("device.expired", 1).await;
    assert!(expiry_noted(&serve, &id).await.is_some());
    let k2 = key();
    let (st, started) = e
        .start_login(&k2, Some(json!({"device_id": id, "credential": cred1})))
        .await;
    assert_eq!(st, StatusCode::OK, "{started}");
    let link = started["login_url"].as_str().unwrap().to_string();
    let waiter = e.wait_login(started["poll_secret"].as_str().unwrap());

    // bob is not the owner: the page and the confirmation refuse him; nothing changes.
    let bob = e.sign_in_via(&link, "bob").await;
    let (st, page) = e.page(&link, &bob).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("not-owner"), "{page}");
    // (his CSRF token, from a page he may see: his own device's login)
    let (_, other) = e.start_login(&key(), None).await;
    let (_, own) = e.page(other["login_url"].as_str().unwrap(), &bob).await;
    let (st, page) = e.confirm(&link, &bob, &input_value(&own, "csrf")).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{page}");
    assert!(
        page.contains("not-owner") && page.contains("belongs to another user"),
        "{page}"
    );
    let unchanged = e.device(&id).await;
    assert_eq!(unchanged["public_key"], k1.as_str());
    assert!(unchanged["key_expires_at_ms"].as_i64().unwrap() < now_ms());
    let forbidden = e.events("auth.forbidden").await;
    assert!(
        forbidden
            .iter()
            .any(|ev| ev["after"]["device"] == id.as_str()
                && ev["after"]["user"] == "bob@example.com"
                && ev["actor"] == "user:bob@example.com"),
        "{forbidden:?}"
    );
    assert!(e.events("device.reauth").await.is_empty());

    // alice, the owner: "Sign in again for device NAME", no name to pick; she confirms.
    let (st, page) = e.page(&link, &alice).await;
    assert_eq!(st, StatusCode::OK, "{page}");
    let name = before["name"].as_str().unwrap();
    assert!(
        page.contains("Sign in again for device") && page.contains(name),
        "{page}"
    );
    assert!(!page.contains("name=\"name\""), "no name field: {page}");
    let (st, page) = e.confirm(&link, &alice, &input_value(&page, "csrf")).await;
    assert_eq!(st, StatusCode::OK, "{page}");
    assert!(page.contains("device-reauth"), "{page}");

    // The agent gets the same device back, with a new credential.
    let (st, again) = waiter.await.unwrap();
    assert_eq!(st, StatusCode::OK, "{again}");
    for f in [
        "device_id",
        "name",
        "overlay_v4",
        "overlay_v6",
        "network_id",
    ] {
        assert_eq!(again[f], enrolled[f], "{f}");
    }
    let cred2 = again["credential"].as_str().unwrap().to_string();
    assert_ne!(cred2, cred1);
    let after = e.device(&id).await;
    assert_eq!(after["public_key"], k2.as_str(), "the key was rotated");
    for f in [
        "id",
        "name",
        "owner",
        "overlay_v4",
        "overlay_v6",
        "created_at_ms",
    ] {
        assert_eq!(after[f], before[f], "{f}");
    }
    assert_about(
        &after["key_expires_at_ms"],
        now_ms() + 30 * DAY_MS,
        "re-authentication",
    );
    let reauths = e.events("device.reauth").await;
    assert_eq!(reauths.len(), 1, "{reauths:?}");
    let ev = &reauths[0];
    assert_eq!(ev["before"]["public_key"], k1.as_str(), "{ev}");
    assert_eq!(ev["after"]["public_key"], k2.as_str(), "{ev}");
    assert_eq!(ev["actor"], "user:alice@example.com", "{ev}");
    assert_eq!(ev["target"], format!("device:{id}"), "{ev}");

    // The old credential is refused, on the stream and for another re-authentication;
    // the new one works.
    assert_eq!(e.stream_status(&cred1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(e.stream_status(&cred2).await, StatusCode::BAD_REQUEST);
    let (st, _) = e
        .start_login(&key(), Some(json!({"device_id": id, "credential": cred1})))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // And the link is spent.
    let (_, page) = e.page(&link, &alice).await;
    assert!(page.contains("login-gone"), "{page}");
    // The noticed expiry is forgotten, so the renewed key's expiry is noticed in turn.
    assert_eq!(expiry_noted(&serve, &id).await, None);
    drop(serve);

    // --device-key-lifetime 0: devices enrolled by login never expire.
    let dir0 = tempfile::tempdir().unwrap();
    let serve0 = sso_console::start(
        dir0.path(),
        idp.issuer(),
        SECRET,
        &["--device-key-lifetime", "0"],
    );
    let e0 = Env::new(&serve0);
    let (enrolled, _) = e0.enroll_by_login("alice", &key()).await;
    let dev = e0.device(enrolled["device_id"].as_str().unwrap()).await;
    assert!(dev["key_expires_at_ms"].is_null(), "{dev}");
    drop(serve0);

    // A bad lifetime, by flag or environment, stops `serve` with an error naming the flag.
    for (flag, env) in [
        (Some("--device-key-lifetime=-3"), None),
        (None, Some("ten")),
    ] {
        let d = tempfile::tempdir().unwrap();
        let mut c = std::process::Command::new(sso_console::BIN);
        c.arg("--data-dir")
            .arg(d.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--no-stun"])
            .args(flag)
            .env_remove("ZMESH_DEVICE_KEY_LIFETIME")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(v) = env {
            c.env("ZMESH_DEVICE_KEY_LIFETIME", v);
        }
        let mut child = c.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve with a bad lifetime ({flag:?} {env:?}) kept running");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!status.success());
        assert!(err.contains("--device-key-lifetime"), "{err}");
    }
}
