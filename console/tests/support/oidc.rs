//! A real OpenID Provider for the SSO tests: `node tests/fixtures/oidc/provider.mjs`
//! (the npm package `oidc-provider`, pinned there) on `http://127.0.0.1:<free port>`,
//! with one confidential client and users from a JSON file the test can rewrite, plus
//! [`login_with_http`], which walks its login form with a plain HTTP client.
//!
//! `node_modules` comes from `.ci/run` (`npm ci --omit=dev --prefix
//! console/tests/fixtures/oidc`); outside CI a missing one is installed here once.
//! The process is killed by PID on drop; it also exits by itself when its standard
//! input closes, i.e. when the test process dies.

#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{StatusCode, Url};
use serde_json::Value;

/// How long the provider may take to print `READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one [`login_with_http`] walk may take, and how many requests it may make.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);
const LOGIN_MAX_REQUESTS: usize = 20;

/// `console/tests/fixtures/oidc` (found from any workspace member, since the agent's
/// end-to-end tests include this file too).
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../console/tests/fixtures/oidc")
}

/// Lifetimes (seconds) and other settings passed to `provider.mjs`; `None` keeps its
/// default (access/ID token 600, refresh token 3600, code 60).
#[derive(Clone, Debug, Default)]
pub struct OidcOptions {
    /// The client's registered redirect URIs; empty accepts any loopback http(s) URI.
    pub redirect_uris: Vec<String>,
    /// `RS256` (default) or `ES256`.
    pub id_token_alg: Option<String>,
    pub access_token_ttl: Option<u64>,
    pub id_token_ttl: Option<u64>,
    pub refresh_token_ttl: Option<u64>,
    pub code_ttl: Option<u64>,
    pub session_ttl: Option<u64>,
}

pub struct OidcProvider {
    child: Child,
    /// Held open: the provider exits when it closes.
    stdin: Option<ChildStdin>,
    issuer: String,
    client_id: String,
    client_secret: String,
    users_path: PathBuf,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

/// Why the provider cannot run here (node or npm missing, `npm ci` failed, ...).
fn node_problem() -> Option<String> {
    match Command::new("node").arg("--version").output() {
        Err(e) => Some(format!("`node` cannot be run: {e}")),
        Ok(o) if !o.status.success() => Some("`node --version` failed".into()),
        Ok(o) => {
            let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
            let major: u32 = v
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            (major < 18).then(|| format!("node {v} is too old: oidc-provider 8 needs 18 or later"))
        }
    }
}

/// Makes sure `node_modules` exists: with `CI` set it must already (from `.ci/run`),
/// otherwise `npm ci --omit=dev` runs once (per process; a file lock keeps test binaries
/// running side by side from installing at the same time).
fn ensure_node_modules() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = fixture_dir();
        let marker = dir.join("node_modules/oidc-provider/package.json");
        if marker.exists() {
            return Ok(());
        }
        if std::env::var_os("CI").is_some() {
            return Err(format!(
                "{} is missing: .ci/run installs it (`npm ci --omit=dev --prefix \
                 console/tests/fixtures/oidc`) before the tests",
                marker.display()
            ));
        }
        let lock = std::fs::File::create(dir.join(".npm-ci.lock"))
            .map_err(|e| format!("lock file in {}: {e}", dir.display()))?;
        // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        if marker.exists() {
            return Ok(());
        }
        eprintln!("NOTICE: installing the OIDC fixture's node_modules (npm ci --omit=dev)");
        let out = Command::new("npm")
            .args(["ci", "--omit=dev", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("`npm` cannot be run: {e}"))?;
        if !out.status.success() || !marker.exists() {
            return Err(format!(
                "npm ci --omit=dev in {} failed: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    })
    .clone()
}

/// Writes `users` as JSON so that a reader never sees half a file (temp file + rename).
fn write_users(path: &Path, users: &Value) {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(users).unwrap())
        .unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

impl OidcProvider {
    /// Starts the provider with default options; panics if it cannot (see
    /// [`OidcProvider::start_or_skip`] for a test that may skip outside CI).
    pub fn start(users: &Value, client_id: &str, client_secret: &str) -> OidcProvider {
        Self::start_with(users, client_id, client_secret, &OidcOptions::default())
    }

    /// Like [`OidcProvider::start`], or `None` with a notice when node is missing and `CI`
    /// is not set. With `CI` set a missing node is a failure.
    pub fn start_or_skip(
        test: &str,
        users: &Value,
        client_id: &str,
        client_secret: &str,
    ) -> Option<OidcProvider> {
        if let Some(problem) = node_problem() {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{test}: CI is set but the OIDC provider cannot run: {problem} \
                     (.ci/run installs the Debian packages nodejs and npm)"
                );
            }
            eprintln!("NOTICE: skipping {test}: {problem}");
            return None;
        }
        Some(Self::start(users, client_id, client_secret))
    }

    pub fn start_with(
        users: &Value,
        client_id: &str,
        client_secret: &str,
        opts: &OidcOptions,
    ) -> OidcProvider {
        if let Some(problem) = node_problem() {
            panic!("the OIDC provider cannot run: {problem}");
        }
        if let Err(e) = ensure_node_modules() {
            panic!("the OIDC provider cannot run: {e}");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let users_path = dir.path().join("users.json");
        write_users(&users_path, users);
        let log_path = dir.path().join("provider.log");
        let log = std::fs::File::create(&log_path).expect("provider log");

        let mut cmd = Command::new("node");
        cmd.arg("provider.mjs")
            .arg("0")
            .current_dir(fixture_dir())
            .env("OIDC_CLIENT_ID", client_id)
            .env("OIDC_CLIENT_SECRET", client_secret)
            .env("OIDC_USERS", &users_path)
            .env("OIDC_REDIRECT_URIS", opts.redirect_uris.join(" "))
            .env_remove("OIDC_PORT")
            .env_remove("NODE_OPTIONS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        let vars = [
            ("OIDC_ID_TOKEN_ALG", opts.id_token_alg.clone()),
            (
                "OIDC_TTL_ACCESS_TOKEN",
                opts.access_token_ttl.map(|v| v.to_string()),
            ),
            (
                "OIDC_TTL_ID_TOKEN",
                opts.id_token_ttl.map(|v| v.to_string()),
            ),
            (
                "OIDC_TTL_REFRESH_TOKEN",
                opts.refresh_token_ttl.map(|v| v.to_string()),
            ),
            ("OIDC_TTL_CODE", opts.code_ttl.map(|v| v.to_string())),
            ("OIDC_TTL_SESSION", opts.session_ttl.map(|v| v.to_string())),
        ];
        for (k, v) in vars {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let mut child = cmd.spawn().expect("start node provider.mjs");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();

        // Lines from stdout; the thread keeps draining it after READY.
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep reading so the pipe never fills.
                    continue;
                }
            }
        });

        let mut p = OidcProvider {
            child,
            stdin,
            issuer: String::new(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            users_path,
            log_path,
            dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(issuer) = line.strip_prefix("READY ") {
                        p.issuer = issuer.trim().to_string();
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "the OIDC provider printed no READY line within {READY_TIMEOUT:?}; its log:\n{}",
                    p.log()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = p.child.wait().ok();
                    panic!(
                        "the OIDC provider exited ({status:?}) before READY; its log:\n{}",
                        p.log()
                    )
                }
            }
        }
        assert!(
            p.issuer.starts_with("http://127.0.0.1:"),
            "unexpected issuer {:?}",
            p.issuer
        );
        p
    }

    /// `http://127.0.0.1:<port>` (no trailing slash), as in the discovery document.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }

    /// Replaces the users file; the provider reads it on every login, authorization
    /// and token request, so the next ID token or refresh sees the change.
    pub fn set_users(&self, users: &Value) {
        write_users(&self.users_path, users);
    }

    /// Closes the provider's stdin, as the death of the test process would.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Waits (bounded) for the provider process to exit by itself; true if it did.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The provider's stderr so far (errors, refused logins, rotations).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Makes a new RS256 + ES256 key pair and signs with it from now on; the old keys
    /// stay in the JWKS unless `retire_old`. Returns the key ids now published, newest
    /// first. Sessions, grants and tokens survive.
    pub async fn rotate_keys(&self, retire_old: bool) -> Vec<String> {
        let url = format!(
            "{}/__rotate{}",
            self.issuer,
            if retire_old { "?retire=1" } else { "" }
        );
        let r: Value = http_client()
            .post(url)
            .send()
            .await
            .expect("POST /__rotate")
            .error_for_status()
            .expect("POST /__rotate status")
            .json()
            .await
            .expect("POST /__rotate body");
        r["kids"]
            .as_array()
            .expect("kids")
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    }

    /// Makes the next token response carry a broken ID token: `bad-signature`,
    /// `wrong-audience` or `expired` (re-signed with the provider's real key).
    pub async fn tamper_next_id_token(&self, mode: &str) {
        http_client()
            .post(format!("{}/__tamper?mode={mode}", self.issuer))
            .send()
            .await
            .expect("POST /__tamper")
            .error_for_status()
            .expect("POST /__tamper status");
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill(); // by PID
        let _ = self.child.wait();
    }
}

/// A client for the provider: no redirects followed, no proxy, bounded time.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The login was refused, or the walk went somewhere unexpected.
#[derive(Debug)]
pub struct LoginFailed {
    pub status: StatusCode,
    /// The text of the login page's `#error` element, when there is one.
    pub error: Option<String>,
    pub page: String,
}

impl std::fmt::Display for LoginFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            Some(e) => write!(f, "login refused ({}): {e}", self.status),
            None => write!(f, "login failed ({}): {:.600}", self.status, self.page),
        }
    }
}

/// A cookie jar for one loopback host: enough for the provider's session and
/// interaction cookies (name, value, path; expiry only as "delete now").
#[derive(Default)]
struct Jar(Vec<(String, String, String)>);

impl Jar {
    fn store(&mut self, url: &Url, headers: &HeaderMap) {
        for h in headers.get_all(SET_COOKIE) {
            let Ok(h) = h.to_str() else { continue };
            let mut parts = h.split(';');
            let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
                continue;
            };
            let (name, value) = (name.trim().to_string(), value.trim().to_string());
            let dir = url.path().rsplit_once('/').map_or("/", |(d, _)| d);
            let mut path = if dir.is_empty() { "/" } else { dir }.to_string();
            let mut expired = value.is_empty();
            for attr in parts {
                let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "path" if v.trim().starts_with('/') => path = v.trim().to_string(),
                    "max-age" => expired |= v.trim().parse::<i64>().is_ok_and(|s| s <= 0),
                    "expires" => expired |= v.contains("1970"),
                    _ => {}
                }
            }
            self.0.retain(|(n, _, p)| !(n == &name && p == &path));
            if !expired {
                self.0.push((name, value, path));
            }
        }
    }

    fn header(&self, url: &Url) -> Option<String> {
        let req = url.path();
        let matches = |p: &str| {
            req == p
                || (req.starts_with(p) && (p.ends_with('/') || req[p.len()..].starts_with('/')))
        };
        let v: Vec<String> = self
            .0
            .iter()
            .filter(|(_, _, p)| matches(p))
            .map(|(n, v, _)| format!("{n}={v}"))
            .collect();
        (!v.is_empty()).then(|| v.join("; "))
    }
}

fn origin(u: &Url) -> (String, Option<String>, Option<u16>) {
    (
        u.scheme().to_string(),
        u.host_str().map(str::to_string),
        u.port_or_known_default(),
    )
}

/// The text inside `<... id="error" ...>TEXT</...>`, tags stripped.
fn error_text(page: &str) -> Option<String> {
    let at = page.find("id=\"error\"")?;
    let start = at + page[at..].find('>')? + 1;
    let end = start + page[start..].find("</")?;
    Some(page[start..end].trim().to_string())
}

/// The `action` of the login form, when `page` is the provider's login page.
fn login_action(page: &str) -> Option<String> {
    if !page.contains("id=\"username\"") || !page.contains("id=\"password\"") {
        return None;
    }
    let at = page.find("<form")?;
    let a = at + page[at..].find("action=\"")? + "action=\"".len();
    let end = a + page[a..].find('"')?;
    Some(page[a..end].replace("&#38;", "&"))
}

/// Starts at `authorize_url` (the provider's `/auth?...`), follows the provider's
/// redirects with its own cookie jar, posts `username`/`password` to the login form, and
/// returns the first redirect that leaves the provider (the console's callback URL with
/// `code`, `state` and `iss`, or `error`) without fetching it. Panics if the login is
/// refused; see [`try_login_with_http`].
pub async fn login_with_http(authorize_url: &str, username: &str, password: &str) -> String {
    try_login_with_http(authorize_url, username, password)
        .await
        .unwrap_or_else(|e| panic!("login of {username:?} at the OIDC provider: {e}"))
}

/// [`login_with_http`] that reports a refused login (wrong password: status 401 and the
/// page's `#error` text) instead of panicking.
pub async fn try_login_with_http(
    authorize_url: &str,
    username: &str,
    password: &str,
) -> Result<String, LoginFailed> {
    let http = http_client();
    let start = Url::parse(authorize_url).expect("authorize URL");
    assert!(
        matches!(start.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")),
        "the OIDC provider must be on loopback, not {authorize_url}"
    );
    let provider = origin(&start);
    let mut jar = Jar::default();
    let mut url = start;
    let mut form: Option<Vec<(&str, &str)>> = None;
    let mut posted = false;
    let deadline = Instant::now() + LOGIN_TIMEOUT;
    for _ in 0..LOGIN_MAX_REQUESTS {
        assert!(
            Instant::now() < deadline,
            "login walk took over {LOGIN_TIMEOUT:?}"
        );
        let mut req = match form.take() {
            Some(f) => http.post(url.clone()).form(&f),
            None => http.get(url.clone()),
        };
        if let Some(c) = jar.header(&url) {
            req = req.header(COOKIE, c);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to the OIDC provider {url}: {e}"));
        jar.store(&url, resp.headers());
        let status = resp.status();
        if status.is_redirection() {
            let loc = resp
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or_else(|| panic!("{status} from {url} without a Location"));
            let next = url.join(loc).expect("Location URL");
            if origin(&next) != provider {
                return Ok(next.to_string());
            }
            url = next;
            continue;
        }
        let page = resp.text().await.unwrap_or_default();
        if status == StatusCode::OK && !posted {
            if let Some(action) = login_action(&page) {
                url = url.join(&action).expect("form action URL");
                form = Some(vec![("username", username), ("password", password)]);
                posted = true;
                continue;
            }
        }
        return Err(LoginFailed {
            status,
            error: error_text(&page),
            page,
        });
    }
    panic!("login walk made {LOGIN_MAX_REQUESTS} requests without leaving the provider")
}

/// The value a response sets for cookie `name` (`None` when absent or cleared).
pub fn cookie_of(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap()[name.len() + 1..].to_string())
        .filter(|v| !v.is_empty())
}

/// A redirect's `Location`.
pub fn location(r: &reqwest::Response) -> String {
    r.headers()[LOCATION].to_str().unwrap().to_string()
}

/// The value of `<input ... name="NAME" ... value="...">` in a page.
pub fn input_value(page: &str, name: &str) -> String {
    let i = page.find(&format!("name=\"{name}\"")).expect(name);
    let rest = &page[i..];
    let v = rest.find("value=\"").unwrap() + 7;
    rest[v..v + rest[v..].find('"').unwrap()].to_string()
}
