//! Enrollment by login, over the real agent API and the real OpenID Provider: an agent
//! with no enrollment key starts a login and waits; its user opens the URL, is sent
//! through single sign-on and back, sees what asks to join and confirms; the waiting
//! agent receives its enrollment, the device is owned by that user, its credential opens
//! the control stream, and the login cannot be used twice.

#[path = "support/oidc.rs"]
mod oidc;
#[path = "support/sso_console.rs"]
mod sso_console;

use std::time::Duration;

use reqwest::header::COOKIE;
use reqwest::StatusCode;
use serde_json::{json, Value};
use zmesh_shared::WgPrivateKey;

use oidc::{cookie_of, input_value, location, login_with_http, OidcProvider};

const SECRET: &str = "device-login-client-secret-51aa";
const PW: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_by_login() {
    let users = json!({
        "bob": {"password": PW, "email": "bob@example.com", "name": "Bob", "groups": ["eng"]},
    });
    let Some(idp) = OidcProvider::start_or_skip("device_login", &users, "zmesh-console", SECRET)
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let serve = sso_console::start(dir.path(), idp.issuer(), SECRET, &[]);
    let base = serve.url.clone();
    let fp = zmesh_console::infra::tls::fingerprint_of_pem_file(&serve.data.join("tls/cert.pem"))
        .unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(zmesh_console::infra::tls_client::pinned_client_config(fp).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let admin_token = std::fs::read_to_string(serve.data.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();

    // The agent starts a login (no enrollment key) and waits for its user.
    let key = WgPrivateKey::generate().public_key().to_string();
    let started: Value = http
        .post(format!("{base}/agent/v1/login"))
        .json(
            &json!({"protocol": zmesh_shared::PROTOCOL_VERSION, "public_key": key,
            "hostname": "bob-laptop", "os": "linux"}),
        )
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = started["login_url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("{base}/ui/login/")), "{url}");
    let poll = started["poll_secret"].as_str().unwrap().to_string();
    let waiter = {
        let (http, base, poll) = (http.clone(), base.clone(), poll.clone());
        tokio::spawn(async move {
            // bounded: at most 4 waits of ~25 s
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
    };

    // The user opens the URL: not signed in, so through single sign-on and back.
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert!(to.starts_with("/oidc/login?next=/ui/login/"), "{to}");
    let r = http.get(format!("{base}{to}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let pending = cookie_of(&r, "__Host-zmesh_oidc").unwrap();
    let callback = login_with_http(&location(&r), "bob", PW).await;
    let r = http
        .get(&callback)
        .header(COOKIE, format!("__Host-zmesh_oidc={pending}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // bob is a member: signed in only to add his device, and sent back to it
    let session = cookie_of(&r, "__Host-zmesh_session").expect("a session");
    let page = r.text().await.unwrap();
    let path = url.trim_start_matches(&base);
    assert!(page.contains(&format!("url={path}")), "{page}");
    let with_session =
        |rb: reqwest::RequestBuilder| rb.header(COOKIE, format!("__Host-zmesh_session={session}"));
    let console_page = with_session(http.get(format!("{base}/ui/")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        console_page.status(),
        StatusCode::FORBIDDEN,
        "members stay out of the console"
    );

    // The page says what asks to join; bob confirms with a name.
    let r = with_session(http.get(&url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("bob-laptop") && page.contains("bob@example.com"),
        "{page}"
    );
    let csrf = input_value(&page, "csrf");
    let r = with_session(http.post(&url))
        .header("origin", &base)
        .form(&[("csrf", csrf.as_str()), ("name", "bobs-laptop")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("device-added"));

    // The waiting agent is enrolled, as bob's device.
    let (status, enrolled) = waiter.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{enrolled}");
    assert_eq!(enrolled["name"], "bobs-laptop");
    assert_eq!(enrolled["state"], "active");
    let id = enrolled["device_id"].as_str().unwrap().to_string();
    let dev: Value = http
        .get(format!("{base}/api/v1/devices/{id}"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dev["owner"], "user:bob@example.com");
    assert_eq!(dev["hostname"], "bob-laptop");
    assert_eq!(dev["public_key"], key);

    // Its credential opens the control stream (authenticated: only the upgrade is
    // missing); a made-up one does not.
    let cred = enrolled["credential"].as_str().unwrap();
    let r = http
        .get(format!("{base}/agent/v1/stream"))
        .bearer_auth(cred)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = http
        .get(format!("{base}/agent/v1/stream"))
        .bearer_auth("zmd_madeup")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Used once: the poll secret and the link are spent; unknown secrets are refused.
    let r = http
        .post(format!("{base}/agent/v1/login/wait"))
        .json(&json!({"poll_secret": poll}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::GONE);
    let r = http
        .post(format!("{base}/agent/v1/login/wait"))
        .json(&json!({"poll_secret": "zmw_unknown"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = with_session(http.get(&url)).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("login-gone"));

    // Identity in the policy: bob's IdP group `eng` reaches a server on tcp/22 only.
    let policy = r#"{
  "version": 1,
  "tag_owners": { "tag:server": [] },
  "rules": [ { "src": ["group:eng"], "dst": ["tag:server:22"], "proto": "tcp" } ],
}"#;
    let r = http
        .put(format!("{base}/api/v1/policy"))
        .bearer_auth(&admin_token)
        .header("content-type", "text/plain")
        .body(policy)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = http
        .post(format!("{base}/api/v1/devices"))
        .bearer_auth(&admin_token)
        .json(&json!({"name": "server", "public_key": WgPrivateKey::generate().public_key().to_string(), "tags": ["server"]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let check = |port: u16| {
        let (http, base, admin_token) = (http.clone(), base.clone(), admin_token.clone());
        async move {
            let v: Value = http
                .post(format!("{base}/api/v1/policy/check"))
                .bearer_auth(&admin_token)
                .json(&json!({"src": "bobs-laptop", "dst": "server", "proto": "tcp", "port": port}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["allowed"].as_bool().unwrap()
        }
    };
    assert!(check(22).await, "group:eng reaches the server");
    assert!(!check(80).await, "on tcp/22 only");
    // bob leaves `eng` at the provider and signs in again: the console syncs his groups
    // (user.groups_changed, a new revision) and the rule no longer applies.
    let before: Value = http
        .get(format!("{base}/api/v1/policy"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut u = users.clone();
    u["bob"]["groups"] = json!(["sales"]);
    idp.set_users(&u);
    let r = http.get(format!("{base}/oidc/login")).send().await.unwrap();
    let pending = cookie_of(&r, "__Host-zmesh_oidc").unwrap();
    let callback = login_with_http(&location(&r), "bob", PW).await;
    let r = http
        .get(&callback)
        .header(COOKIE, format!("__Host-zmesh_oidc={pending}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "a member, not signed in to the console"
    );
    assert!(!check(22).await, "no longer in group:eng");
    let unchanged: Value = http
        .get(format!("{base}/api/v1/policy"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        before["version"], unchanged["version"],
        "the policy text did not change"
    );

    // Recorded: who enrolled which device, by login.
    let events = http
        .get(format!("{base}/api/v1/audit/events?action=device.enroll"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = events
        .lines()
        .find(|l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["type"] == "event" && v["action"] == "device.enroll")
        })
        .expect("a device.enroll event");
    assert!(
        line.contains("\"login\"") && line.contains("bob@example.com"),
        "{line}"
    );
    assert!(
        line.contains("user:bob@example.com"),
        "the actor is bob: {line}"
    );
}
