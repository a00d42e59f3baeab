//! The periodic re-check of SSO users at the identity provider, end to end: the real
//! `zmesh-console serve` binary with `--oidc-refresh-interval 2` against the real OpenID
//! Provider (tests/fixtures/oidc). Users change at the provider and the console follows
//! within seconds, with no sign-in: new groups are applied (audited, as a sign-in would),
//! a user disabled there is disabled here (their enrolled device revoked, its credential
//! refused), a user moved out of the allowed groups too; with the provider gone nobody is
//! disabled. No client secret or token the provider issued is in the console's log or
//! database (the refresh tokens are kept sealed: `v1:…`).

#[path = "support/oidc.rs"]
mod oidc;
#[path = "support/sso_console.rs"]
mod sso_console;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::header::COOKIE;
use reqwest::StatusCode;
use serde_json::{json, Value};
use zmesh_shared::WgPrivateKey;

use oidc::{cookie_of, input_value, location, login_with_http, OidcProvider};
use sso_console::BIN;

const SECRET: &str = "idp-refresh-client-secret-93be0c";
const PW: &str = "correct horse battery staple";
/// How long the console may take to notice a change at the provider (interval 2 s).
const NOTICE_WITHIN: Duration = Duration::from_secs(15);

fn users() -> Value {
    let u = |email: &str, groups: &[&str]| json!({"password": PW, "email": email, "name": email.split('@').next(), "groups": groups});
    json!({
        "alice": u("alice@example.com", &["ops", "eng"]),
        "oscar": u("oscar@example.com", &["ops"]),
        "bob": u("bob@example.com", &["eng"]),
        "carol": u("carol@example.com", &["audit"]),
    })
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

fn audit(data: &Path, action: &str) -> Vec<Value> {
    cli(
        data,
        &["audit", "export", "--action", action, "--format", "jsonl"],
    )
    .lines()
    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    .collect()
}

struct Console {
    http: reqwest::Client,
    base: String,
    admin: String,
}

impl Console {
    async fn users(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/api/v1/users", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        v["users"].as_array().unwrap().clone()
    }

    async fn user(&self, name: &str) -> Value {
        self.users()
            .await
            .into_iter()
            .find(|u| u["username"] == name)
            .unwrap_or_else(|| panic!("no user {name}"))
    }

    /// Polls `/api/v1/users` (bounded) until `ok` holds for `name`; answers the user.
    async fn wait_user(&self, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + NOTICE_WITHIN;
        loop {
            let u = self.user(name).await;
            if ok(&u) {
                return u;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: not {what} within {NOTICE_WITHIN:?}: {u:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A browser sign-in through the provider; answers the callback's status.
    async fn sign_in(&self, user: &str) -> StatusCode {
        let r = self
            .http
            .get(format!("{}/oidc/login", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let pending = cookie_of(&r, "__Host-zmesh_oidc").unwrap();
        assert!(location(&r).contains("offline_access"), "{}", location(&r));
        let callback = login_with_http(&location(&r), user, PW).await;
        self.http
            .get(&callback)
            .header(COOKIE, format!("__Host-zmesh_oidc={pending}"))
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Enrollment by login (tests/device_login.rs): `user` signs in and confirms a new
    /// device; answers its id and credential.
    async fn enroll_by_login(&self, user: &str) -> (String, String) {
        let (http, base) = (&self.http, &self.base);
        let key = WgPrivateKey::generate().public_key().to_string();
        let started: Value = http
            .post(format!("{base}/agent/v1/login"))
            .json(
                &json!({"protocol": zmesh_shared::PROTOCOL_VERSION, "public_key": key,
                "hostname": format!("{user}-laptop"), "os": "linux"}),
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
        let poll = started["poll_secret"].as_str().unwrap().to_string();
        let r = http.get(&url).send().await.unwrap();
        let r = http
            .get(format!("{base}{}", location(&r)))
            .send()
            .await
            .unwrap();
        let pending = cookie_of(&r, "__Host-zmesh_oidc").unwrap();
        let callback = login_with_http(&location(&r), user, PW).await;
        let r = http
            .get(&callback)
            .header(COOKIE, format!("__Host-zmesh_oidc={pending}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let session = cookie_of(&r, "__Host-zmesh_session").expect("a session");
        let cookie = format!("__Host-zmesh_session={session}");
        let page = http
            .get(&url)
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let csrf = input_value(&page, "csrf");
        let r = http
            .post(&url)
            .header(COOKIE, &cookie)
            .header("origin", base)
            .form(&[
                ("csrf", csrf.as_str()),
                ("name", &format!("{user}s-laptop")),
            ])
            .send()
            .await
            .unwrap();
        assert!(r.text().await.unwrap().contains("device-added"));
        let r = http
            .post(format!("{base}/agent/v1/login/wait"))
            .json(&json!({"poll_secret": poll}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let enrolled: Value = r.json().await.unwrap();
        (
            enrolled["device_id"].as_str().unwrap().to_string(),
            enrolled["credential"].as_str().unwrap().to_string(),
        )
    }

    /// The status the control stream answers to `credential` (400: authenticated, only
    /// the upgrade missing; 401: refused).
    async fn stream_status(&self, credential: &str) -> StatusCode {
        self.http
            .get(format!("{}/agent/v1/stream", self.base))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// Every token the provider issued so far (`GET /__issued` of the fixture).
async fn issued_tokens(issuer: &str) -> Vec<(String, String)> {
    let v: Value = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("{issuer}/__issued"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap().to_string(),
                t["token"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The console's database files (SQLite and its WAL), as bytes.
fn database_bytes(data: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(data).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("zmesh.db") {
            all.extend(std::fs::read(&p).unwrap());
        }
    }
    assert!(all.len() > 10_000, "no database in {}", data.display());
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The sealed refresh tokens in the database, by username.
async fn sealed_tokens(data: &Path) -> Vec<(String, Option<String>)> {
    use sqlx::Row;
    let url = format!("sqlite://{}?mode=ro", data.join("zmesh.db").display());
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let rows = sqlx::query("SELECT username, refresh_token_enc FROM users ORDER BY username")
        .fetch_all(&pool)
        .await
        .unwrap();
    let out = rows
        .iter()
        .map(|r| (r.get("username"), r.get("refresh_token_enc")))
        .collect();
    pool.close().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_recheck_follows_the_provider() {
    let Some(idp) = OidcProvider::start_or_skip("sso_refresh", &users(), "zmesh-console", SECRET)
    else {
        return;
    };
    let issuer = idp.issuer().to_string();
    let dir = tempfile::tempdir().unwrap();
    let serve = sso_console::start(
        dir.path(),
        &issuer,
        SECRET,
        &[
            "--oidc-refresh-interval",
            "2",
            "--oidc-allowed-groups",
            "ops,eng,audit",
            "--oidc-admin-groups",
            "ops",
            "--oidc-auditor-groups",
            "audit",
        ],
    );
    let data = serve.data.clone();
    let fp =
        zmesh_console::infra::tls::fingerprint_of_pem_file(&data.join("tls/cert.pem")).unwrap();
    let c = Console {
        http: reqwest::Client::builder()
            .use_preconfigured_tls(
                zmesh_console::infra::tls_client::pinned_client_config(fp).unwrap(),
            )
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        base: serve.url.clone(),
        admin: std::fs::read_to_string(data.join("admin.token"))
            .unwrap()
            .trim()
            .to_string(),
    };

    // The schedule is printed at start.
    let printed = std::fs::read_to_string(&serve.log).unwrap();
    assert!(
        printed
            .contains("re-checked at the identity provider every 2s (--oidc-refresh-interval 2)"),
        "{printed}"
    );

    // alice and oscar (ops: admins) and carol (audit: auditor) sign in; bob (eng: a
    // member) adds a device by login.
    for u in ["alice", "oscar", "carol"] {
        assert_eq!(c.sign_in(u).await, StatusCode::OK, "{u}");
    }
    let (bob_dev, bob_cred) = c.enroll_by_login("bob").await;
    assert_eq!(c.stream_status(&bob_cred).await, StatusCode::BAD_REQUEST);
    let alice = c.user("alice@example.com").await;
    assert_eq!(alice["idp_check"], "ok", "{alice:#}");
    assert!(alice["idp_checked_at_ms"].as_i64().is_some(), "{alice:#}");
    // kept sealed, one per user
    for (name, tok) in sealed_tokens(&data).await {
        let tok = tok.unwrap_or_else(|| panic!("{name}: no refresh token kept"));
        assert!(tok.starts_with("v1:") && tok.len() > 60, "{name}: {tok}");
    }

    // Re-checks go on while nothing changes: still "ok", checked again.
    let first = alice["idp_checked_at_ms"].as_i64().unwrap();
    c.wait_user("alice@example.com", "checked again", |u| {
        u["idp_checked_at_ms"].as_i64().unwrap_or(0) > first && u["idp_check"] == "ok"
    })
    .await;

    // At the provider: alice changes groups, bob is disabled, carol leaves the allowed
    // groups.
    let changed_at = zmesh_shared::time::now_ms();
    let mut u = users();
    u["alice"]["groups"] = json!(["ops", "infra"]);
    u["bob"]["disabled"] = json!(true);
    u["carol"]["groups"] = json!(["contractors"]);
    idp.set_users(&u);

    // (1) alice's new groups, without a sign-in, as a sign-in would apply them.
    let alice = c
        .wait_user("alice@example.com", "given her new groups", |u| {
            u["groups"] == json!(["infra", "ops"])
        })
        .await;
    assert!(alice["disabled_at_ms"].is_null(), "{alice:#}");
    assert_eq!(alice["role"], "admin");
    assert!(
        alice["idp_checked_at_ms"].as_i64().unwrap() >= changed_at,
        "{alice:#}"
    );
    // `groups changed` at that check, `ok` at the next one (2 s later)
    assert!(
        alice["idp_check"] == "groups changed" || alice["idp_check"] == "ok",
        "{alice:#}"
    );
    let ev = audit(&data, "user.groups_changed");
    let e = ev
        .iter()
        .find(|e| e["target"] == "user:alice@example.com" && e["actor"] == "system:idp-refresh")
        .unwrap_or_else(|| panic!("no user.groups_changed by the re-check: {ev:#?}"));
    assert_eq!(e["after"]["groups"], json!(["infra", "ops"]), "{e:#}");

    // (2) bob, disabled at the provider: disabled here, his device revoked and its
    // credential refused, audited with the reason.
    let bob = c
        .wait_user("bob@example.com", "disabled", |u| {
            !u["disabled_at_ms"].is_null()
        })
        .await;
    assert_eq!(
        bob["idp_check"], "disabled: refresh refused (invalid_grant)",
        "{bob:#}"
    );
    let dev: Value = c
        .http
        .get(format!("{}/api/v1/devices/{bob_dev}", c.base))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dev["state"], "revoked", "{dev:#}");
    assert_eq!(c.stream_status(&bob_cred).await, StatusCode::UNAUTHORIZED);
    let updates = audit(&data, "user.update");
    let e = updates
        .iter()
        .find(|e| e["target"] == "user:bob@example.com")
        .unwrap_or_else(|| panic!("no user.update for bob: {updates:#?}"));
    assert_eq!(e["actor"], "system:idp-refresh", "{e:#}");
    assert!(
        e["after"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("invalid_grant")),
        "{e:#}"
    );
    let revokes = audit(&data, "device.revoke");
    assert!(
        revokes
            .iter()
            .any(|e| e["target"] == format!("device:{bob_dev}")
                && e["actor"] == "system:idp-refresh"),
        "{revokes:#?}"
    );

    // (3) carol, out of the allowed groups: disabled with that reason.
    let carol = c
        .wait_user("carol@example.com", "disabled", |u| {
            !u["disabled_at_ms"].is_null()
        })
        .await;
    assert_eq!(
        carol["idp_check"], "disabled: group not allowed",
        "{carol:#}"
    );
    assert!(
        updates
            .iter()
            .chain(audit(&data, "user.update").iter())
            .any(|e| e["target"] == "user:carol@example.com"
                && e["actor"] == "system:idp-refresh"
                && e["after"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("group not allowed"))),
        "no user.update for carol with the reason"
    );

    // What the admin sees in the CLI.
    let list = cli(&data, &["users", "list"]);
    assert!(list.contains("LAST IDP CHECK"), "{list}");
    assert!(
        list.contains("(disabled: refresh refused (invalid_grant))")
            && list.contains("(disabled: group not allowed)"),
        "{list}"
    );
    let json_list: Value = serde_json::from_str(&cli(&data, &["users", "list", "--json"])).unwrap();
    let a = json_list
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "alice@example.com")
        .unwrap();
    assert!(a["idp_checked_at_ms"].as_i64().is_some() && a["idp_check"].is_string());
    assert!(a.get("refresh_token_enc").is_none(), "{a:#}");

    // (5) Nothing the provider issued, nor the client secret, in the log or database.
    let tokens = issued_tokens(&issuer).await;
    let refreshes = tokens.iter().filter(|(k, _)| k == "refresh_token").count();
    // 4 sign-ins, then rotations at every re-check of the active users
    assert!(refreshes > 6, "{tokens:?}");
    let log = std::fs::read(&serve.log).unwrap();
    let db = database_bytes(&data);
    for (kind, t) in tokens
        .iter()
        .chain(std::iter::once(&("client secret".into(), SECRET.into())))
    {
        assert!(
            !contains(&log, t),
            "the console log holds a {kind}: {t:.8}…"
        );
        assert!(!contains(&db, t), "the database holds a {kind}: {t:.8}…");
    }
    let sealed = sealed_tokens(&data).await;
    for (name, tok) in &sealed {
        match name.as_str() {
            // disabled: their tokens are dropped
            "bob@example.com" | "carol@example.com" => assert!(tok.is_none(), "{name}"),
            _ => assert!(
                tok.as_deref().is_some_and(|t| t.starts_with("v1:")),
                "{name}"
            ),
        }
    }

    // (4) The provider goes away: nobody is disabled, the result says so.
    drop(idp);
    let alice = c
        .wait_user("alice@example.com", "noted unreachable", |u| {
            u["idp_check"]
                .as_str()
                .is_some_and(|r| r.starts_with("unreachable"))
        })
        .await;
    assert!(alice["disabled_at_ms"].is_null(), "{alice:#}");
    let oscar = c.user("oscar@example.com").await;
    assert!(oscar["disabled_at_ms"].is_null(), "{oscar:#}");
    let text = std::fs::read_to_string(&serve.log).unwrap();
    assert!(
        text.contains("identity provider re-check failed"),
        "no warning in the log"
    );
    for (kind, t) in &tokens {
        assert!(!text.contains(t.as_str()), "the console log holds a {kind}");
    }
    assert!(!text.contains(SECRET));
    // (the sealed token survives an unreachable provider)
    let after = sealed_tokens(&data).await;
    let alice_tok = after
        .iter()
        .find(|(n, _)| n == "alice@example.com")
        .and_then(|(_, t)| t.clone());
    assert!(alice_tok.is_some_and(|t| t.starts_with("v1:")));
    drop(serve);
}
