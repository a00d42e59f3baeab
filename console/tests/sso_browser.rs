//! Headless Chromium signs in to the web console through the OpenID Provider's own
//! login page: a user in the admin group lands as an admin, one in the auditor group as
//! a read-only auditor (the admin-only Users page refuses them).

#[path = "support/oidc.rs"]
mod oidc;
#[path = "support/sso_console.rs"]
mod sso_console;
#[path = "support/webdriver.rs"]
mod webdriver;

use serde_json::json;

use oidc::OidcProvider;
use webdriver::Driver;

const SECRET: &str = "browser-test-client-secret-0c1d";
const PW: &str = "correct horse battery staple";

/// Signs in through SSO in a fresh browser (a fresh provider session, too).
async fn sign_in(base: &str, user: &str) -> Driver {
    let d = Driver::start().await;
    d.goto(&format!("{base}/ui/signin")).await;
    d.click("#signin-sso").await;
    // the provider's login form
    d.type_into("#username", user).await;
    d.type_into("#password", PW).await;
    d.click("#signin").await;
    for _ in 0..50 {
        if d.url().await.starts_with(base) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if d.find_all("#who").await.is_empty() {
        panic!(
            "not signed in: at {}\n{}",
            d.url().await,
            d.describe_page().await
        );
    }
    d.wait_text("#who", "the console's header", |t| t.contains(user))
        .await;
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_in_headless_chromium() {
    if !webdriver::available() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI is set but {} or {} is missing: apt-get install chromium chromium-driver",
                webdriver::CHROMIUM,
                webdriver::CHROMEDRIVER
            );
        }
        eprintln!("notice: chromium/chromedriver not installed; browser test skipped");
        return;
    }
    let users = json!({
        "alice": {"password": PW, "email": "alice@example.com", "name": "Alice", "groups": ["ops"]},
        "audrey": {"password": PW, "email": "audrey@example.com", "name": "Audrey", "groups": ["audit"]},
    });
    let Some(idp) = OidcProvider::start_or_skip("sso_browser", &users, "zmesh-console", SECRET)
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let serve = sso_console::start(
        dir.path(),
        idp.issuer(),
        SECRET,
        &[
            "--oidc-admin-groups",
            "ops",
            "--oidc-auditor-groups",
            "audit",
        ],
    );
    let base = serve.url.clone();

    let d = sign_in(&base, "alice").await;
    let who = d.text("#who").await;
    assert!(
        who.contains("alice@example.com") && who.contains("admin"),
        "{who}"
    );
    assert!(d.url().await.starts_with(&format!("{base}/ui/")));
    d.goto(&format!("{base}/ui/users")).await;
    let row = d.find("tr[data-user='alice@example.com']").await;
    assert!(!row.is_empty());
    d.quit().await;

    let d = sign_in(&base, "audrey").await;
    let who = d.text("#who").await;
    assert!(
        who.contains("audrey@example.com") && who.contains("auditor"),
        "{who}"
    );
    d.find("#readonly-banner").await;
    d.goto(&format!("{base}/ui/users")).await;
    let body = d.text("main").await;
    assert!(body.contains("admins only"), "{body}");
    d.quit().await;
}
