//! Single sign-on end to end: the real `zmesh-console serve` binary configured with
//! `--oidc-*` against a real OpenID Provider (npm `oidc-provider`, tests/fixtures/oidc),
//! driven by an HTTP client through the provider's login form. Admins and auditors come
//! from IdP groups, members are kept out, every refusal is explained and audited, key
//! rotation needs nothing, and no secret, code or session id reaches the console's logs.

#[path = "support/oidc.rs"]
mod oidc;
#[path = "support/sso_console.rs"]
mod sso_console;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use oidc::{login_with_http, OidcProvider};

use sso_console::BIN;
const SECRET: &str = "oidc-client-secret-7f3a9c51d2";
const PW: &str = "correct horse battery staple";

fn users() -> Value {
    let u = |email: &str, groups: &[&str]| json!({"password": PW, "email": email, "name": email.split('@').next(), "groups": groups});
    json!({
        "alice": u("alice@example.com", &["ops", "eng"]),
        "audrey": u("audrey@example.com", &["audit"]),
        "bob": u("bob@example.com", &["eng"]),
        "carol": u("carol@other.org", &["ops"]),
        "oscar": u("oscar@example.com", &["ops"]),
    })
}

struct Browser {
    http: reqwest::Client,
    base: String,
}

/// One attempt: the login redirect, the provider's answer and the console's callback.
struct Attempt {
    pending_cookie: String,
    callback_url: String,
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap()[name.len() + 1..].to_string())
}

impl Browser {
    fn new(data: &Path, base: &str) -> Browser {
        let fp =
            zmesh_console::infra::tls::fingerprint_of_pem_file(&data.join("tls/cert.pem")).unwrap();
        let tls = zmesh_console::infra::tls_client::pinned_client_config(fp).unwrap();
        Browser {
            http: reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            base: base.to_string(),
        }
    }

    async fn begin(&self) -> (String, String) {
        let r = self
            .http
            .get(format!("{}/oidc/login", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::SEE_OTHER,
            "{}",
            r.text().await.unwrap()
        );
        let cookie = set_cookie(&r, "__Host-zmesh_oidc").expect("pending cookie");
        let raw = r
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|v| v.starts_with("__Host-zmesh_oidc="))
            .unwrap();
        assert!(raw.contains("HttpOnly") && raw.contains("Secure") && raw.contains("SameSite=Lax"));
        let loc = r.headers()[LOCATION].to_str().unwrap().to_string();
        assert!(loc.contains("code_challenge_method=S256"), "{loc}");
        assert!(loc.contains("nonce=") && loc.contains("state="), "{loc}");
        (loc, cookie)
    }

    async fn attempt(&self, user: &str) -> Attempt {
        let (loc, cookie) = self.begin().await;
        let callback_url = login_with_http(&loc, user, PW).await;
        assert!(callback_url.starts_with(&format!("{}/oidc/callback?", self.base)));
        Attempt {
            pending_cookie: cookie,
            callback_url,
        }
    }

    async fn callback(
        &self,
        url: &str,
        pending: Option<&str>,
    ) -> (StatusCode, Option<String>, String) {
        let mut req = self.http.get(url);
        if let Some(c) = pending {
            req = req.header(COOKIE, format!("__Host-zmesh_oidc={c}"));
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let session = set_cookie(&r, "__Host-zmesh_session").filter(|s| !s.is_empty());
        (status, session, r.text().await.unwrap())
    }

    async fn whoami(&self, session: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}/api/v1/whoami", self.base))
            .header(COOKIE, format!("__Host-zmesh_session={session}"))
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
}

fn cli(data: &Path, args: &[&str]) -> String {
    let o = Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("ZMESH_TOKEN")
        .env_remove("ZMESH_CONSOLE_URL")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn refusals(data: &Path) -> Vec<Value> {
    cli(
        data,
        &[
            "audit",
            "export",
            "--action",
            "auth.sso_refused",
            "--format",
            "jsonl",
        ],
    )
    .lines()
    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    .filter(|v| v["action"] == "auth.sso_refused")
    .collect()
}

fn reason_recorded(data: &Path, needle: &str) -> bool {
    refusals(data)
        .iter()
        .any(|e| e.to_string().contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_sign_in_roles_refusals_and_audit() {
    let Some(idp) = OidcProvider::start_or_skip("sso", &users(), "zmesh-console", SECRET) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let serve = sso_console::start(
        dir.path(),
        idp.issuer(),
        SECRET,
        &[
            "--oidc-allowed-domains",
            "example.com",
            "--oidc-admin-groups",
            "ops",
            "--oidc-auditor-groups",
            "audit",
        ],
    );
    let (data, log, base) = (serve.data.clone(), serve.log.clone(), serve.url.clone());
    let b = Browser::new(&data, &base);
    let mut leaks: Vec<String> = vec![SECRET.to_string()];

    // The redirect URI to register is printed at start.
    let printed = std::fs::read_to_string(&log).unwrap();
    assert!(
        printed.contains(&format!(
            "redirect URI at the provider: {base}/oidc/callback"
        )),
        "{printed}"
    );

    // The sign-in page offers SSO.
    let page = b
        .http
        .get(format!("{base}/ui/signin"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"signin-sso\""), "{page}");

    // alice is in `ops`: an admin.
    let a = b.attempt("alice").await;
    let (status, session, body) = b.callback(&a.callback_url, Some(&a.pending_cookie)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("sso-done"), "{body}");
    let alice_session = session.expect("a session cookie");
    let (s, who) = b.whoami(&alice_session).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(who["kind"], "user");
    assert_eq!(who["role"], "admin");
    assert_eq!(who["name"], "alice@example.com");
    leaks.push(alice_session.clone());
    let code = url_param(&a.callback_url, "code");
    leaks.push(code);

    // The same code again (replay, with the pending cookie it came with): the provider
    // refuses it, the console explains and records.
    let (status, session, body) = b.callback(&a.callback_url, Some(&a.pending_cookie)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(session.is_none());
    assert!(body.contains("code exchange refused"), "{body}");

    // audrey is in `audit`: an auditor.
    let a = b.attempt("audrey").await;
    let (status, session, body) = b.callback(&a.callback_url, Some(&a.pending_cookie)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, who) = b.whoami(&session.unwrap()).await;
    assert_eq!(who["role"], "auditor");

    // bob is in no console group: a member, recorded but kept out.
    let a = b.attempt("bob").await;
    let (status, session, body) = b.callback(&a.callback_url, Some(&a.pending_cookie)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(session.is_none());
    assert!(body.contains("no console access"), "{body}");

    // carol's domain is not allowed.
    let a = b.attempt("carol").await;
    let (status, _, body) = b.callback(&a.callback_url, Some(&a.pending_cookie)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("domain not allowed"), "{body}");

    // A tampered state.
    let a = b.attempt("alice").await;
    let bad = a.callback_url.replacen("state=", "state=x", 1);
    let (status, session, body) = b.callback(&bad, Some(&a.pending_cookie)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        session.is_none() && body.contains("state mismatch"),
        "{body}"
    );

    // No sign-in in progress in this browser (no pending cookie).
    let (status, _, body) = b.callback(&a.callback_url, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("no sign-in in progress"), "{body}");

    // A nonce other than the one the provider put in the token.
    let a = b.attempt("alice").await;
    let mut parts: Vec<&str> = a.pending_cookie.split('.').collect();
    let other_nonce = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string();
    parts[1] = &other_nonce;
    let forged = parts.join(".");
    let (status, session, body) = b.callback(&a.callback_url, Some(&forged)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        session.is_none() && body.contains("nonce mismatch"),
        "{body}"
    );

    // ID tokens the provider's keys did not sign as they are, that name another client,
    // or that expired an hour ago (the provider re-signs them with its real key).
    for (mode, reason) in [
        ("bad-signature", "bad signature"),
        ("wrong-audience", "wrong audience"),
        ("expired", "expired"),
    ] {
        let a = b.attempt("alice").await;
        idp.tamper_next_id_token(mode).await;
        let (status, session, body) = b.callback(&a.callback_url, Some(&a.pending_cookie)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{mode}: {body}");
        assert!(session.is_none(), "{mode}");
        assert!(
            body.contains(&format!("ID token rejected ({reason})")),
            "{mode}: {body}"
        );
        assert!(
            reason_recorded(&data, &format!("ID token rejected ({reason})")),
            "{mode}"
        );
    }

    // Key rotation at the provider needs nothing on the console's side.
    idp.rotate_keys(true).await;
    let a = b.attempt("alice").await;
    let (status, _, body) = b.callback(&a.callback_url, Some(&a.pending_cookie)).await;
    assert_eq!(status, StatusCode::OK, "after key rotation: {body}");

    // Users: SSO users beside local ones, with groups; disabling one ends their
    // sessions and refuses their next sign-in.
    let list = cli(&data, &["users", "list"]);
    assert!(
        list.contains("alice@example.com") && list.contains("bob@example.com"),
        "{list}"
    );
    assert!(list.contains("member") && list.contains("sso"), "{list}");
    let json_list: Value = serde_json::from_str(&cli(&data, &["users", "list", "--json"])).unwrap();
    let alice = json_list
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "alice@example.com")
        .unwrap()
        .clone();
    assert_eq!(alice["issuer"], idp.issuer());
    assert_eq!(alice["groups"], json!(["eng", "ops"]));
    // (another admin first: the last active admin cannot be disabled)
    let a = b.attempt("oscar").await;
    assert_eq!(
        b.callback(&a.callback_url, Some(&a.pending_cookie)).await.0,
        StatusCode::OK
    );
    cli(&data, &["users", "disable", "alice@example.com"]);
    assert_eq!(b.whoami(&alice_session).await.0, StatusCode::UNAUTHORIZED);
    let a = b.attempt("alice").await;
    let (status, _, body) = b.callback(&a.callback_url, Some(&a.pending_cookie)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("user disabled"), "{body}");
    cli(&data, &["users", "enable", "alice@example.com"]);

    // Group changes at the provider reach the console at the next sign-in, audited.
    let mut u = users();
    u["alice"]["groups"] = json!(["eng"]);
    idp.set_users(&u);
    let a = b.attempt("alice").await;
    let (status, _, body) = b.callback(&a.callback_url, Some(&a.pending_cookie)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "now a member: {body}");
    let events = cli(
        &data,
        &["audit", "export", "--action", "user.", "--format", "jsonl"],
    );
    assert!(
        events.contains("user.groups_changed") && events.contains("user.role_changed"),
        "{events}"
    );

    // Every refusal above is in the audit log with its reason.
    for reason in [
        "code exchange refused",
        "no console access",
        "domain not allowed",
        "state mismatch",
        "no sign-in in progress",
        "nonce mismatch",
        "user disabled",
    ] {
        assert!(
            reason_recorded(&data, reason),
            "no auth.sso_refused with {reason:?}"
        );
    }

    // The provider goes away: sign-in fails cleanly and is recorded.
    drop(idp);
    let r = b
        .http
        .get(format!("{base}/oidc/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("identity provider unreachable"));
    assert!(reason_recorded(&data, "identity provider unreachable"));

    // No client secret, code or session id in the console's output.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.len() > 1000, "the console logged at debug level");
    for l in &leaks {
        assert!(
            !text.contains(l.as_str()),
            "the console log contains a secret: {l:.8}…"
        );
    }
}

fn url_param(url: &str, name: &str) -> String {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
