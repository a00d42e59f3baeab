//! The user's side of single sign-on in the agent's namespace tests, as a browser would
//! do it: through the console's `/oidc/login`, the provider's login form and back to
//! `/oidc/callback`, then (for enrollment by login) the confirm form with the session
//! cookie, CSRF token and Origin. Runs inside the console's namespace (see
//! `nsthread::in_netns`); the console is trusted by its printed fingerprint.
//!
//! Included with `#[path]` by the tests that also include the console's `oidc` support.

#![allow(dead_code)] // each test binary uses a different part

use std::time::Duration;

use reqwest::header::COOKIE;
use reqwest::StatusCode;

use crate::oidc::{cookie_of, input_value, location, login_with_http};

/// A client for the console that trusts its certificate by fingerprint and follows no
/// redirects (the test checks each hop).
pub fn console_client(fp: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(
            zmesh_console::infra::tls_client::pinned_client_config(fp.parse().unwrap()).unwrap(),
        )
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Signs in at the console through the provider, starting at `start` (a path such as
/// `/oidc/login` or a device login link that redirects there). Returns the callback's
/// status and the session cookie, if one was set.
pub async fn sso(
    http: &reqwest::Client,
    base: &str,
    start: &str,
    user: &str,
    password: &str,
) -> (StatusCode, Option<String>) {
    let mut to = start.to_string();
    // A device link first redirects to `/oidc/login?next=…`.
    if !to.starts_with("/oidc/login") {
        let r = http.get(&to).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{to}");
        to = location(&r);
        assert!(to.starts_with("/oidc/login"), "{to}");
    }
    let r = http.get(format!("{base}{to}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let pending = cookie_of(&r, "__Host-zmesh_oidc").expect("the pending sign-in cookie");
    let callback = login_with_http(&location(&r), user, password).await;
    let r = http
        .get(&callback)
        .header(COOKIE, format!("__Host-zmesh_oidc={pending}"))
        .send()
        .await
        .unwrap();
    (r.status(), cookie_of(&r, "__Host-zmesh_session"))
}

/// Opens the device login `link`, signs in as `user` and confirms the name the agent
/// asked for (`want_name`). Returns the confirmation page.
pub async fn sign_in_and_confirm(
    link: String,
    base: String,
    fp: String,
    user: &str,
    password: &str,
    email: &str,
    want_name: &str,
) -> String {
    let http = console_client(&fp);
    let (status, session) = sso(&http, &base, &link, user, password).await;
    assert_eq!(status, StatusCode::OK);
    let session = session.expect("a session");
    let with_session =
        |rb: reqwest::RequestBuilder| rb.header(COOKIE, format!("__Host-zmesh_session={session}"));
    let r = with_session(http.get(&link)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains(email), "{page}");
    let csrf = input_value(&page, "csrf");
    let name = input_value(&page, "name");
    assert_eq!(name, want_name, "the name the agent asked for is offered");
    let r = with_session(http.post(&link))
        .header("origin", &base)
        .form(&[("csrf", csrf.as_str()), ("name", name.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains("device-added"), "{page}");
    page
}

/// Runs a future to completion on a fresh single-threaded runtime (inside `in_netns`).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
