//! The web console in a real headless Chromium (Debian's `chromium` + `chromium-driver`,
//! driven over WebDriver), against the real `zmesh-console serve` process:
//!
//! setup link → first admin; sign out; a wrong password is refused; sign in; create an
//! enrollment key and read the `zmesh up` command; a device appears after the real
//! agent enrolls with that key (`zmesh daemon` + `zmesh up` in a network namespace
//! joined to the host by a veth pair; a second device enrolls through the agent API
//! with a generated WireGuard key pair); a policy with an error shows the error at its
//! line; the fixed policy shows the reachability diff;
//! apply; check access A→B; the audit log verifies and exports as CSV; the Names page
//! adds a DNS record and a split-DNS domain and refuses a bad suffix; an auditor sees
//! the same pages with no way to change anything and the API refuses their writes.
//!
//! Screenshots go to `target/screenshots/` (path printed). Without Chromium, or without
//! root and network namespaces, the test prints a notice and passes, unless `CI` is
//! set: then it fails. `zmesh` must sit next to `zmesh-console` (`cargo test --workspace`).

#[path = "support/agent_ns.rs"]
mod agent_ns;
#[path = "support/web_console.rs"]
mod web_console;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use webdriver::{Driver, Killer};
use zmesh_shared::WgPrivateKey;

const BIN: &str = env!("CARGO_BIN_EXE_zmesh-console");
const ADMIN_PW: &str = "correct horse battery staple";
const AUDITOR_PW: &str = "auditors read everything";

struct Console {
    _proc: Killer,
    url: String,
    setup_link: String,
    data: PathBuf,
}

impl Drop for Console {
    /// A failed run shows what the console logged (its stderr goes to a file).
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.data.join("console.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("===== zmesh-console log (last 80 lines) =====");
            for l in &lines[lines.len().saturating_sub(80)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// The console on a free port of every address: the agent reaches it over the veth
/// pair, the browser over loopback.
fn start_console(data: &Path) -> Console {
    let (proc, url, setup_link) = web_console::start_console_on(data, "0.0.0.0:0");
    Console {
        _proc: proc,
        url,
        setup_link,
        data: data.to_path_buf(),
    }
}

/// Enrolls a device as the agent would (for the second device): a fresh WireGuard key pair, the key text
/// from the browser, over HTTPS with the console's certificate as the only root.
async fn enroll(c: &Console, key: &str, name: &str) -> Value {
    let pem = std::fs::read(c.data.join("tls/cert.pem")).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let wg = WgPrivateKey::generate();
    let r = http
        .post(format!("{}{}", c.url, zmesh_shared::wire::ENROLL_PATH))
        .json(&json!({
            "protocol": zmesh_shared::PROTOCOL_VERSION,
            "enroll_key": key,
            "public_key": wg.public_key().to_string(),
            "name": name,
            "hostname": name,
            "os": "linux",
        }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(
        status.is_success(),
        "enrollment of {name} failed: {status} {body}"
    );
    body
}

fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("ZMESH_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const BAD_POLICY: &str = r#"{
  "version": 1,
  "rules": [
    { "src": ["laptop-1"], "dst": ["server-1:22"], "proto": "tcpp" }
  ]
}"#;

const GOOD_POLICY: &str = r#"{
  "version": 1,
  "rules": [
    { "src": ["laptop-1"], "dst": ["server-1:22"], "proto": "tcp" }
  ]
}"#;

/// Sets the editor's text as typing would (an `input` event), so the page validates it.
async fn set_policy(d: &Driver, text: &str) {
    d.find("#policy-text").await;
    d.exec(
        "const t = document.getElementById('policy-text'); t.value = arguments[0]; \
         t.dispatchEvent(new Event('input', {bubbles: true}));",
        json!([text]),
    )
    .await;
}

async fn sign_in(d: &Driver, url: &str, user: &str, pw: &str) {
    d.goto(&format!("{url}/ui/signin")).await;
    d.type_into("#username", user).await;
    d.type_into("#password", pw).await;
    d.click("#signin").await;
}

async fn path_is(d: &Driver, url: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = d.url().await;
        if now == format!("{url}{path}") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected {path}, browser is at {now}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `fetch` from the page (with its cookie); returns [status, body].
async fn page_fetch(d: &Driver, method: &str, url: &str, body: Option<&str>) -> (u64, String) {
    let v = d
        .exec_async(
            "const done = arguments[arguments.length - 1];
             const csrf = (document.querySelector('meta[name=\"csrf-token\"]') || {}).content || '';
             const init = {method: arguments[0], headers: {'X-CSRF-Token': csrf}};
             if (arguments[2] !== null) { init.body = arguments[2]; init.headers['Content-Type'] = 'text/plain'; }
             fetch(arguments[1], init).then(async r => done([r.status, await r.text()]))
               .catch(e => done([0, String(e)]));",
            json!([method, url, body]),
        )
        .await;
    (v[0].as_u64().unwrap(), v[1].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_console_in_headless_chromium() {
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
    let zmesh = agent_ns::zmesh_bin(BIN);
    let Some(mut agent) = agent_ns::agent_ns_or_skip("web_console_in_headless_chromium", zmesh)
    else {
        return;
    };
    agent.start_daemon();
    let shots = screenshot_dir();
    let dir = tempfile::tempdir().unwrap();
    let c = start_console(dir.path());
    let url = c.url.clone();
    let d = Driver::start().await;

    // ---- first admin through the one-time setup link ----
    d.goto(&c.setup_link).await;
    d.type_into("#username", "alice").await;
    d.type_into("#password", ADMIN_PW).await;
    d.type_into("#password2", ADMIN_PW).await;
    d.screenshot(&shots, "01-setup").await;
    d.click("#create-admin").await;
    path_is(&d, &url, "/ui/").await;
    // the link works once
    d.click("#signout").await;
    path_is(&d, &url, "/ui/signin").await;
    d.goto(&c.setup_link).await;
    d.find("#setup-gone").await;

    // ---- sign in: a wrong password first ----
    sign_in(&d, &url, "alice", "not the password!").await;
    d.wait_text("#signin-error", "refusal", |t| {
        t.contains("Wrong username or password")
    })
    .await;
    sign_in(&d, &url, "alice", ADMIN_PW).await;
    path_is(&d, &url, "/ui/").await;
    d.wait_text("#who", "the user", |t| {
        t.contains("alice") && t.contains("admin")
    })
    .await;

    // ---- enrollment key: create it, read the zmesh up command ----
    d.goto(&format!("{url}/ui/keys")).await;
    d.type_into("#create-key-form input[name=description]", "browser test")
        .await;
    d.exec(
        "document.querySelector('#create-key-form input[name=reusable]').checked = true;",
        json!([]),
    )
    .await;
    // durations as the CLI takes them
    d.exec(
        "document.querySelector('#create-key-form input[name=ttl_seconds]').value = '2h';",
        json!([]),
    )
    .await;
    d.click("#create-key").await;
    let cmd = d
        .wait_text("#up-command", "the zmesh up command", |t| {
            t.contains("--enroll-key")
        })
        .await;
    assert!(
        cmd.starts_with(&format!("zmesh up --console {url} --enroll-key zmek1.")),
        "{cmd}"
    );
    d.screenshot(&shots, "02-enroll-key-created").await;
    let key = cmd.rsplit(' ').next().unwrap().to_string();
    let keys = d
        .exec_async(
            "const done = arguments[arguments.length - 1];
             fetch('/api/v1/enroll-keys').then(r => r.json()).then(done);",
            json!([]),
        )
        .await;
    let made = keys["enroll_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["description"] == "browser test")
        .unwrap_or_else(|| panic!("{keys}"));
    let ttl = made["expires_at_ms"].as_i64().unwrap() - made["created_at_ms"].as_i64().unwrap();
    assert!(
        (7_190_000..=7_210_000).contains(&ttl),
        "'2h' gave {ttl} ms: {made}"
    );

    // ---- a device appears after the real agent enrolls with that key ----
    d.goto(&format!("{url}/ui/devices")).await;
    assert!(d.find_all("tr[data-device]").await.is_empty());
    let port = url.rsplit(':').next().unwrap();
    let console_from_ns = format!("https://{}:{port}", agent.host_ip);
    let up = tokio::task::block_in_place(|| {
        agent.zmesh(
            &[
                "up",
                "--console",
                &console_from_ns,
                "--enroll-key",
                &key,
                "--name",
                "laptop-1",
            ],
            Duration::from_secs(90),
        )
    });
    assert!(
        up.status.success(),
        "zmesh up in {} failed ({}): {}{}",
        agent.ns,
        up.status,
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.find_all("tr[data-device=\"laptop-1\"]").await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the device the agent enrolled never showed up"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        d.goto(&format!("{url}/ui/devices")).await;
    }
    // the agent, not a stand-in, enrolled it: its status names the device
    let status =
        tokio::task::block_in_place(|| agent.zmesh(&["status", "--json"], Duration::from_secs(10)));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["self"]["name"], "laptop-1", "agent status: {status}");
    enroll(&c, &key, "server-1").await;
    // "online": the agent holds its stream to the console
    d.wait_text(
        "tr[data-device=\"laptop-1\"]",
        "an active, online device",
        |t| t.contains("active") && t.contains("online"),
    )
    .await;
    d.screenshot(&shots, "03-devices").await;
    d.goto(&format!("{url}/ui/devices/laptop-1")).await;
    d.find("#rename-form").await;
    d.screenshot(&shots, "04-device").await;
    d.goto(&format!("{url}/ui/")).await;
    d.wait_text("#stat-total", "two devices", |t| t == "2")
        .await;
    d.screenshot(&shots, "05-overview").await;

    // ---- policy: an error at its line, then the diff, then apply ----
    d.goto(&format!("{url}/ui/policy")).await;
    set_policy(&d, BAD_POLICY).await;
    let errs = d
        .wait_text("#policy-errors", "an error", |t| t.contains("Line"))
        .await;
    assert!(errs.contains("Line 4"), "error not at line 4: {errs}");
    let bad_line = d
        .exec(
            "return document.getElementById('line-4').className;",
            json!([]),
        )
        .await;
    assert_eq!(bad_line, json!("bad"), "gutter does not mark line 4");
    assert_eq!(
        d.exec(
            "return document.getElementById('policy-apply').disabled;",
            json!([])
        )
        .await,
        json!(true)
    );
    d.screenshot(&shots, "06-policy-error").await;
    set_policy(&d, GOOD_POLICY).await;
    d.wait_text("#policy-status", "valid", |t| t == "valid")
        .await;
    let diff = d
        .wait_text("#policy-diff", "the diff", |t| !t.is_empty())
        .await;
    // from allow-all to one rule: everything but laptop-1 -> server-1 tcp/22 goes
    assert!(diff.contains("− server-1 → laptop-1"), "diff: {diff}");
    assert!(
        diff.contains("− laptop-1 → server-1 tcp:0-21,23-65535"),
        "diff: {diff}"
    );
    assert!(!diff.contains("tcp:22\n"), "diff: {diff}");
    d.screenshot(&shots, "07-policy-diff").await;
    d.click("#policy-apply").await;
    d.wait_text("#policy-version", "version 1", |t| t == "1")
        .await;
    // check access A -> B under the policy in force
    d.type_into("#check-src", "laptop-1").await;
    d.type_into("#check-dst", "server-1").await;
    d.type_into("#check-form input[name=port]", "22").await;
    d.click("#check-submit").await;
    d.wait_text("#check-result", "allowed", |t| t.starts_with("Allowed"))
        .await;
    d.type_into("#check-form input[name=port]", "80").await;
    d.click("#check-submit").await;
    d.wait_text("#check-result", "denied", |t| t.starts_with("Denied"))
        .await;
    d.screenshot(&shots, "08-policy-applied").await;

    // ---- audit: chain verified, CSV export ----
    d.goto(&format!("{url}/ui/audit")).await;
    let ok = d
        .exec(
            "return document.getElementById('chain-status').dataset.ok;",
            json!([]),
        )
        .await;
    assert_eq!(ok, json!("true"), "{}", d.text("#chain-status").await);
    d.wait_text("#audit-events", "the policy save", |t| {
        t.contains("policy.set")
    })
    .await;
    d.screenshot(&shots, "09-audit").await;
    let href = d
        .exec(
            "return document.getElementById('export-csv').getAttribute('href');",
            json!([]),
        )
        .await;
    let (status, csv) = page_fetch(&d, "GET", href.as_str().unwrap(), None).await;
    assert_eq!(status, 200);
    for action in [
        "auth.signin",
        "auth.signin_failed",
        "enroll_key.create",
        "device.enroll",
        "policy.set",
    ] {
        assert!(csv.contains(action), "CSV export lacks {action}");
    }
    std::fs::write(shots.join("audit-export.csv"), &csv).unwrap();

    // ---- names: the suffix, an extra record, a split-DNS domain; bad input refused ----
    d.goto(&format!("{url}/ui/dns")).await;
    d.wait_text("#dns-devices", "the devices' names", |t| {
        t.contains("laptop-1.default.zmesh.internal")
    })
    .await;
    d.type_into("#dns-record-form input[name=name]", "wiki")
        .await;
    d.type_into("#dns-record-form input[name=ip]", "100.64.9.9")
        .await;
    d.click("#dns-record-form button[type=submit]").await;
    d.wait_text("#dns-records", "the record", |t| {
        t.contains("wiki.default.zmesh.internal")
    })
    .await;
    d.type_into("#dns-split-form input[name=domain]", "corp.internal")
        .await;
    d.type_into("#dns-split-form input[name=resolvers]", "100.64.0.7")
        .await;
    d.click("#dns-split-form button[type=submit]").await;
    d.wait_text("#dns-split", "the split domain", |t| {
        t.contains("corp.internal")
    })
    .await;
    d.type_into("#dns-suffix-input", "bad_suffix").await;
    d.click("#dns-suffix-form button[type=submit]").await;
    d.wait_text("#dns-suffix-form .form-error", "the refusal", |t| {
        t.contains("bad_suffix")
    })
    .await;
    assert_eq!(d.text("#dns-suffix").await, "default.zmesh.internal");
    d.screenshot(&shots, "09b-names").await;

    // ---- users: make an auditor ----
    d.goto(&format!("{url}/ui/users")).await;
    d.type_into("#create-user-form input[name=username]", "audrey")
        .await;
    d.type_into("#create-user-form input[name=password]", AUDITOR_PW)
        .await;
    d.click("#create-user-form button[type=submit]").await;
    d.wait_text("#users", "the new user", |t| t.contains("audrey"))
        .await;
    d.screenshot(&shots, "10-users").await;
    d.click("#signout").await;
    path_is(&d, &url, "/ui/signin").await;

    // ---- the auditor: same pages, nothing to change ----
    sign_in(&d, &url, "audrey", AUDITOR_PW).await;
    path_is(&d, &url, "/ui/").await;
    for (path, shot) in [
        ("/ui/", "11-auditor-overview"),
        ("/ui/devices", "12-auditor-devices"),
        ("/ui/devices/laptop-1", ""),
        ("/ui/keys", "13-auditor-keys"),
        ("/ui/policy", "14-auditor-policy"),
        ("/ui/dns", ""),
        ("/ui/audit", ""),
    ] {
        d.goto(&format!("{url}{path}")).await;
        d.find("#readonly-banner").await;
        let writes = d
            .exec(
                "return [...document.querySelectorAll('[data-api]')].map(e => e.dataset.api)
                   .filter(a => a !== '/api/v1/policy/check')
                   .concat([...document.querySelectorAll('form[method=post]')]
                     .map(f => f.getAttribute('action')).filter(a => a !== '/ui/signout'));",
                json!([]),
            )
            .await;
        assert_eq!(writes, json!([]), "auditor page {path} offers changes");
        if !shot.is_empty() {
            d.screenshot(&shots, shot).await;
        }
    }
    d.goto(&format!("{url}/ui/policy")).await;
    assert_eq!(
        d.exec("return [document.getElementById('policy-text').readOnly, !!document.getElementById('policy-apply')];", json!([]))
            .await,
        json!([true, false])
    );
    // even a hand-made request is refused, and nothing changes
    let (status, _) = page_fetch(&d, "PUT", "/api/v1/policy", Some(BAD_POLICY)).await;
    assert_eq!(status, 403);
    let (status, body) = page_fetch(&d, "GET", "/api/v1/policy", None).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["version"], 1);
    // the auditor may still export the audit log
    let (status, _) = page_fetch(&d, "GET", "/api/v1/audit/events?format=csv", None).await;
    assert_eq!(status, 200);
    d.goto(&format!("{url}/ui/users")).await;
    d.wait_text("#page-error", "admins only", |t| t.contains("admins only"))
        .await;
    d.quit().await;
    eprintln!("screenshots: {}", shots.canonicalize().unwrap().display());
}
