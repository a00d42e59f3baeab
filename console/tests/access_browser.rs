//! The access log in a real headless Chromium (Debian's `chromium` + `chromium-driver`
//! over WebDriver) against an in-process HTTPS console with records made through the
//! service path: an auditor signs in with a local account, opens the access log from
//! the navigation, filters for denied flows and sees only those, with device names and
//! owners; the export link carries the filter and downloads as CSV; the page offers no
//! change and the API refuses the auditor's writes.
//!
//! Without Chromium the test prints a notice and passes, unless `CI` is set: then it
//! fails. Screenshots go to `target/screenshots/` (or `ZMESH_SCREENSHOTS`).

#[path = "support/access_fixture.rs"]
mod access_fixture;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use webdriver::Driver;
use zmesh_console::bus::Bus;
use zmesh_console::domain::password::hash_password;
use zmesh_console::infra::config::TlsSource;
use zmesh_console::store::{Role, Store};
use zmesh_console::AppState;
use zmesh_shared::time::now_ms;
use zmesh_shared::SigningKey;

use access_fixture::CAROL;

const AUDITOR_PW: &str = "auditors read everything";

fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("ZMESH_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `fetch` from the page (with its cookie and CSRF token); returns [status, body].
async fn page_fetch(d: &Driver, method: &str, url: &str) -> (u64, String) {
    let v = d
        .exec_async(
            "const done = arguments[arguments.length - 1];
             const csrf = (document.querySelector('meta[name=\"csrf-token\"]') || {}).content || '';
             fetch(arguments[1], {method: arguments[0], headers: {'X-CSRF-Token': csrf}})
               .then(async r => done([r.status, await r.text()]))
               .catch(e => done([0, String(e)]));",
            json!([method, url]),
        )
        .await;
    (v[0].as_u64().unwrap(), v[1].as_str().unwrap().to_string())
}

/// Waits (bounded) until the browser's URL satisfies `pred`.
async fn url_is(d: &Driver, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = d.url().await;
        if pred(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "expected {what}, browser is at {now}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The access table's rows as [seq, verdict, text].
async fn table(d: &Driver) -> Vec<Value> {
    d.find("#access-records").await;
    let v = d
        .exec(
            "return [...document.querySelectorAll('#access-records tbody tr')]
               .map(r => [r.dataset.seq, r.dataset.verdict, r.innerText]);",
            json!([]),
        )
        .await;
    v.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditor_filters_the_access_log_in_headless_chromium() {
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
    // ---- an HTTPS console in this process, with records and an auditor ----
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .unwrap();
    let phc = hash_password(AUDITOR_PW.into()).await.unwrap();
    store
        .create_user("audrey", Role::Auditor, &phc, now_ms())
        .await
        .unwrap();
    let id = zmesh_console::infra::tls::load_or_create(
        dir.path(),
        &TlsSource::SelfSigned { extra_sans: vec![] },
    )
    .unwrap();
    let tls = zmesh_console::infra::tls::server_config(&id).unwrap();
    let state = AppState::new(
        store,
        SigningKey::generate(),
        Some(id.fingerprint),
        Bus::new(),
    )
    .await
    .unwrap();
    let seeded = access_fixture::seed(&state).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(zmesh_console::serve(
        listener,
        tls,
        state.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let shots = screenshot_dir();
    let d = Driver::start().await;

    // ---- sign in as the auditor, open the access log from the navigation ----
    d.goto(&format!("{url}/ui/signin")).await;
    d.type_into("#username", "audrey").await;
    d.type_into("#password", AUDITOR_PW).await;
    d.click("#signin").await;
    url_is(&d, "the overview", |u| u == format!("{url}/ui/")).await;
    d.find("#readonly-banner").await;
    d.click("#nav-access").await;
    url_is(&d, "the access log", |u| u == format!("{url}/ui/access")).await;
    let all = table(&d).await;
    assert_eq!(all.len(), 5, "{all:?}");
    d.screenshot(&shots, "access-01-all").await;

    // ---- filter: denied only ----
    d.click("#f-verdict option[value=denied]").await;
    d.click("#access-apply").await;
    url_is(&d, "the filtered page", |u| u.contains("verdict=denied")).await;
    let denied = table(&d).await;
    assert_eq!(denied.len(), 2, "{denied:?}");
    for r in &denied {
        assert_eq!(r[1], "denied", "{r:?}");
    }
    let text: Vec<&str> = denied.iter().map(|r| r[2].as_str().unwrap()).collect();
    // laptop → db tcp/22 (carol's laptop), and the device whose name is markup,
    // shown as text
    assert!(
        text.iter().any(|t| t.contains("laptop")
            && t.contains("db")
            && t.contains("tcp/22")
            && t.contains(CAROL)),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains(access_fixture::EVIL_NAME) && t.contains("udp/53")),
        "{text:?}"
    );
    assert!(text.iter().all(|t| !t.contains("5432")), "{text:?}");
    // the id is on hover
    let title = d
        .exec(
            "return document.querySelector('#access-records tbody tr .dev').title;",
            json!([]),
        )
        .await;
    assert!(
        [seeded.laptop, seeded.evil]
            .iter()
            .any(|id| title == json!(id.to_string())),
        "{title}"
    );
    d.screenshot(&shots, "access-02-denied").await;

    // ---- export: the link carries the filter; the CSV downloads with only those rows
    let href = d
        .exec(
            "return document.getElementById('export-csv').getAttribute('href');",
            json!([]),
        )
        .await;
    let href = href.as_str().unwrap().to_string();
    assert_eq!(href, "/api/v1/audit/access?format=csv&verdict=denied");
    let (status, csv) = page_fetch(&d, "GET", &href).await;
    assert_eq!(status, 200, "export {href}: {csv}");
    let rows: Vec<&str> = csv
        .lines()
        .filter(|l| l.starts_with("\"access\","))
        .collect();
    assert!(!rows.is_empty(), "no access rows: {csv}");
    assert!(
        rows.iter().all(|r| r.contains(",\"denied\",")),
        "the export ignores the filter: {csv}"
    );
    std::fs::write(shots.join("access-export.csv"), &csv).unwrap();

    // ---- the auditor can change nothing ----
    let writes = d
        .exec(
            "return [...document.querySelectorAll('[data-api]')].map(e => e.dataset.api)
               .concat([...document.querySelectorAll('form')]
                 .filter(f => (f.getAttribute('method') || 'get').toLowerCase() !== 'get')
                 .map(f => f.getAttribute('action')).filter(a => a !== '/ui/signout'));",
            json!([]),
        )
        .await;
    assert_eq!(writes, json!([]), "the access page offers changes");
    let (status, _) = page_fetch(&d, "DELETE", &format!("/api/v1/devices/{}", seeded.laptop)).await;
    assert_eq!(status, 403);
    let (status, _) = page_fetch(&d, "POST", "/api/v1/audit/checkpoints").await;
    assert_eq!(status, 403);
    assert!(state.store.get_device(seeded.laptop).await.is_ok());

    // ---- the audit log: names beside ids, details folded until opened ----
    d.click("#nav-audit").await;
    d.find("#audit-events details").await;
    let shown = d
        .exec(
            "const s = document.querySelector('#audit-events details summary'); s.click();
             return document.querySelector('#audit-events details').open;",
            json!([]),
        )
        .await;
    assert_eq!(shown, json!(true));
    let text = d.text("#audit-events").await;
    assert!(
        text.contains(&format!("laptop device:{}", seeded.laptop)),
        "{text}"
    );
    d.screenshot(&shots, "access-03-audit").await;

    // ---- a bad filter value: the field is named ----
    d.goto(&format!("{url}/ui/access?verdict=maybe")).await;
    d.wait_text("#filter-error", "the error", |t| t.contains("verdict"))
        .await;
    d.quit().await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
    eprintln!("screenshots: {}", shots.canonicalize().unwrap().display());
}
