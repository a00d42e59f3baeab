//! The live device list in a real headless Chromium (Debian's `chromium` +
//! `chromium-driver`) against the real `zmesh-console serve` process: two browser
//! sessions of the same admin, one on the devices page and one on the overview; a
//! device enrolled through the agent API appears on both within 2 s without a reload
//! (server-sent events from `/ui/events`, no polling), with its IPv4, IPv6, OS and
//! owner; the device table sorts by a clicked column; the API's device list carries the
//! same `online` state the page shows.
//!
//! Without Chromium the test prints a notice and passes, unless `CI` is set: then it
//! fails.

#[path = "support/webdriver.rs"]
mod webdriver;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use webdriver::{Driver, Killer};
use zmesh_shared::WgPrivateKey;

const BIN: &str = env!("CARGO_BIN_EXE_zmesh-console");
const ADMIN_PW: &str = "correct horse battery staple";

/// Starts `zmesh-console serve` on a free loopback port; returns the process, its URL
/// and the one-time setup link it prints.
fn start_console(data: &Path) -> (Killer, String, String) {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-stun",
            "--data-dir",
        ])
        .arg(data)
        .env_remove("ZMESH_DATABASE_URL")
        .stdout(Stdio::piped())
        .env("ZMESH_LOG", "info")
        .stderr(std::fs::File::create(data.join("console.log")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Killer(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let link = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("no setup link within 60 s");
        if let Some(i) = line.find("https://") {
            if line.contains("/ui/setup/") {
                break line[i..].split_whitespace().next().unwrap().to_string();
            }
        }
    };
    let url = std::fs::read_to_string(data.join("console.url"))
        .unwrap()
        .trim()
        .to_string();
    (proc, url, link)
}

/// Enrolls a device as an agent would: a fresh WireGuard key pair, over HTTPS with the
/// console's certificate as the only root.
async fn enroll(data: &Path, url: &str, key: &str, name: &str) {
    let pem = std::fs::read(data.join("tls/cert.pem")).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let r = http
        .post(format!("{url}{}", zmesh_shared::wire::ENROLL_PATH))
        .json(&json!({
            "protocol": zmesh_shared::PROTOCOL_VERSION,
            "enroll_key": key,
            "public_key": WgPrivateKey::generate().public_key().to_string(),
            "name": name,
            "hostname": name,
            "os": "linux",
        }))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "enrollment of {name}: {}",
        r.status()
    );
}

/// A JSON request from the page, with its session cookie and CSRF token.
async fn page_json(d: &Driver, method: &str, path: &str, body: Value) -> Value {
    d.exec_async(
        "const done = arguments[arguments.length - 1];
         const csrf = document.querySelector('meta[name=\"csrf-token\"]').content;
         const init = {method: arguments[0], headers: {'X-CSRF-Token': csrf}};
         if (arguments[2] !== null) { init.body = JSON.stringify(arguments[2]); init.headers['Content-Type'] = 'application/json'; }
         fetch(arguments[1], init).then(r => r.json()).then(done).catch(e => done({error: String(e)}));",
        json!([method, path, body]),
    )
    .await
}

async fn sign_in(d: &Driver, url: &str) {
    d.goto(&format!("{url}/ui/signin")).await;
    d.type_into("#username", "alice").await;
    d.type_into("#password", ADMIN_PW).await;
    d.click("#signin").await;
    d.find("#who").await;
}

/// Waits until the page's event stream is connected.
async fn live(d: &Driver) {
    d.find("body[data-live=on]").await;
}

/// Milliseconds until `css` matches on the page, polling the browser (not the console)
/// every 20 ms; panics after 10 s.
async fn appears(d: &Driver, css: &str, since: Instant) -> u128 {
    loop {
        if !d.find_all(css).await.is_empty() {
            return since.elapsed().as_millis();
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{css} never appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn first_row(d: &Driver) -> String {
    d.exec(
        "return document.querySelector('#devices-body tr').dataset.device;",
        json!([]),
    )
    .await
    .as_str()
    .unwrap()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_device_appears_live_in_a_second_session() {
    if !webdriver::available() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but chromium or chromedriver is missing");
        }
        eprintln!("notice: chromium/chromedriver not installed; browser test skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_console, url, link) = start_console(dir.path());

    // session 1: the first admin, through the setup link; creates a key
    let a = Driver::start().await;
    a.goto(&link).await;
    a.type_into("#username", "alice").await;
    a.type_into("#password", ADMIN_PW).await;
    a.type_into("#password2", ADMIN_PW).await;
    a.click("#create-admin").await;
    a.find("#overview-stats").await;
    let key = page_json(
        &a,
        "POST",
        "/api/v1/enroll-keys",
        json!({"reusable": true, "description": "live test"}),
    )
    .await;
    let key = key["key"]
        .as_str()
        .unwrap_or_else(|| panic!("{key}"))
        .to_string();
    a.goto(&format!("{url}/ui/")).await;
    live(&a).await;

    // session 2: another browser, same admin, on the devices page
    let b = Driver::start().await;
    sign_in(&b, &url).await;
    b.goto(&format!("{url}/ui/devices")).await;
    live(&b).await;
    assert!(b.find_all("tr[data-device]").await.is_empty());

    let t0 = Instant::now();
    enroll(dir.path(), &url, &key, "web-1").await;
    let on_devices = appears(&b, "#devices-body tr[data-device=web-1]", t0).await;
    let on_overview = appears(&a, "#overview-devices-body tr[data-device=web-1]", t0).await;
    println!("new device shown after {on_devices} ms (devices page), {on_overview} ms (overview)");
    assert!(on_devices < 2000, "devices page took {on_devices} ms");
    assert!(on_overview < 2000, "overview took {on_overview} ms");
    // nothing reloaded: the page's own refresh counter moved
    let refreshed = b
        .exec("return document.body.dataset.refreshed;", json!([]))
        .await;
    assert!(
        refreshed.as_str().is_some(),
        "swapped in place, not reloaded"
    );

    let row = b.text("#devices-body tr[data-device=web-1]").await;
    assert!(row.contains("100.64."), "IPv4: {row}");
    assert!(row.contains("fd"), "IPv6: {row}");
    assert!(row.contains("linux"), "OS: {row}");
    assert!(
        row.contains("alice") || row.contains("key:"),
        "owner: {row}"
    );
    assert!(row.contains("offline") && row.contains("never"), "{row}");
    b.wait_text("#device-count", "the count", |t| t.starts_with("1 of 1"))
        .await;
    a.wait_text("#stat-total", "the total", |t| t == "1").await;

    // sort: a second device, then by name both ways
    enroll(dir.path(), &url, &key, "alpha-2").await;
    appears(&b, "#devices-body tr[data-device=alpha-2]", Instant::now()).await;
    b.click("#devices thead th:first-child").await;
    assert_eq!(first_row(&b).await, "alpha-2");
    b.click("#devices thead th:first-child").await;
    assert_eq!(first_row(&b).await, "web-1");
    // a change keeps the chosen order
    enroll(dir.path(), &url, &key, "zulu-3").await;
    appears(&b, "#devices-body tr[data-device=zulu-3]", Instant::now()).await;
    assert_eq!(first_row(&b).await, "zulu-3");

    let shots = std::env::var_os("ZMESH_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    println!(
        "screenshot: {}",
        b.screenshot(&shots, "live-devices").await.display()
    );

    // the API's list says the same as the page
    let list = page_json(&b, "GET", "/api/v1/devices", Value::Null).await;
    let devs = list["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 3);
    assert!(devs
        .iter()
        .all(|d| d["online"] == json!(false) && d["os"] == "linux"));
    a.quit().await;
    b.quit().await;
}
