//! A real `zmesh-console serve` for browser tests: started on a free loopback port with
//! its own data dir, the first admin made through the one-time setup link, devices
//! enrolled over HTTPS as an agent would, and JSON requests made from the page itself
//! (session cookie and CSRF token), so the browser tests share one harness.

#![allow(dead_code)] // each test uses its own part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zmesh_shared::WgPrivateKey;

use super::webdriver::{self, Driver, Killer};

pub const BIN: &str = env!("CARGO_BIN_EXE_zmesh-console");
pub const ADMIN_PW: &str = "correct horse battery staple";

/// Starts `zmesh-console serve` on a free loopback port; returns the process, its URL
/// and the one-time setup link it prints.
pub fn start_console(data: &Path) -> (Killer, String, String) {
    start_console_on(data, "127.0.0.1:0")
}

/// [`start_console`] listening on `listen` (a free port of every address, for tests
/// whose agents reach the console over a veth pair). No STUN responder, so parallel
/// tests do not clash on UDP 3478. The console's log goes to `DATA/console.log`.
pub fn start_console_on(data: &Path, listen: &str) -> (Killer, String, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", listen, "--no-stun", "--data-dir"])
        .arg(data)
        .env_remove("ZMESH_DATABASE_URL")
        .stdout(Stdio::piped())
        .env("ZMESH_LOG", "info,zmesh_console=debug")
        .stderr(std::fs::File::create(data.join("console.log")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Killer(child);
    let (tx, rx) = mpsc::channel();
    // keeps draining stdout so the console never blocks on a full pipe
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
pub async fn enroll(data: &Path, url: &str, key: &str, name: &str) {
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
pub async fn page_json(d: &Driver, method: &str, path: &str, body: Value) -> Value {
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

pub async fn sign_in(d: &Driver, url: &str) {
    d.goto(&format!("{url}/ui/signin")).await;
    d.type_into("#username", "alice").await;
    d.type_into("#password", ADMIN_PW).await;
    d.click("#signin").await;
    d.find("#who").await;
}

/// A GET from the page, as text (JSON Lines, CSV).
pub async fn page_text(d: &Driver, path: &str) -> String {
    d.exec_async(
        "const done = arguments[arguments.length - 1];
         fetch(arguments[0]).then(r => r.text()).then(done).catch(e => done(String(e)));",
        json!([path]),
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// Whether the browser tests can run; under `CI` a missing browser is a failure.
pub fn browser_or_skip() -> bool {
    if webdriver::available() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but chromium or chromedriver is missing");
    }
    eprintln!("notice: chromium/chromedriver not installed; browser test skipped");
    false
}

/// Makes the first admin (`alice`) through the setup link; the browser is left signed in
/// on the overview.
pub async fn first_admin(d: &Driver, link: &str) {
    d.goto(link).await;
    d.type_into("#username", "alice").await;
    d.type_into("#password", ADMIN_PW).await;
    d.type_into("#password2", ADMIN_PW).await;
    d.click("#create-admin").await;
    d.find("#overview-stats").await;
}

/// Where screenshots go: `$ZMESH_SCREENSHOTS`, else `target/screenshots`, plus `sub`.
pub fn shots_dir(sub: &str) -> PathBuf {
    let d = std::env::var_os("ZMESH_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots"))
        .join(sub);
    std::fs::create_dir_all(&d).unwrap();
    d
}
