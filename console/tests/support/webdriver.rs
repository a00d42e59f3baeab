//! A minimal W3C WebDriver client (plain JSON over HTTP with reqwest) for the browser
//! test, plus guards that kill chromedriver by PID and remove the browser profile.
//! Only Debian's `chromium` and `chromium-driver` are used; nothing is downloaded.

#![allow(dead_code)] // each test binary uses a different part

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Drop for Driver {
    fn drop(&mut self) {
        self.quit_blocking();
    }
}

/// Kills a child process (by its PID) when dropped, also when the test fails.
pub struct Killer(pub Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the browser packages are installed.
pub fn available() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

pub struct Driver {
    http: reqwest::Client,
    base: String,
    session: String,
    _chromedriver: Killer,
    _profile: tempfile::TempDir,
}

impl Driver {
    /// Starts chromedriver on a free loopback port and a headless Chromium session with
    /// a fresh profile.
    pub async fn start() -> Driver {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let killer = Killer(child);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "unhandledPromptBehavior": "accept",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        Driver {
            http,
            base,
            session,
            _chromedriver: killer,
            _profile: profile,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_cmd(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    /// A command whose WebDriver error (a stale element while the page reloads, say)
    /// the caller handles.
    async fn try_cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        req = req.json(&body.unwrap_or_else(|| json!({})));
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if !v.is_object() || v.get("value").is_none() {
            return Err(v);
        }
        if v["value"].get("error").is_some() {
            return Err(v["value"].clone());
        }
        Ok(v["value"].clone())
    }

    /// Opens `url`. Chromium aborts a page load when the host's network configuration
    /// changes under it (ERR_NETWORK_CHANGED; the tests add and remove veth pairs), so
    /// that one error page is retried, a bounded number of times; any other error page
    /// is left for the caller's checks to report.
    pub async fn goto(&self, url: &str) {
        for attempt in 1..=3 {
            self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})))
                .await;
            let text = self
                .try_cmd(
                    reqwest::Method::POST,
                    "/execute/sync",
                    Some(json!({"script": "return document.body ? document.body.innerText : '';", "args": []})),
                )
                .await
                .unwrap_or(Value::Null);
            if !text.as_str().unwrap_or("").contains("ERR_NETWORK_CHANGED") {
                return;
            }
            eprintln!("note: {url}: ERR_NETWORK_CHANGED (attempt {attempt}), loading again");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Elements matching a CSS selector (possibly none).
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array()
            .unwrap_or_else(|| panic!("find {css}: {v}"))
            .iter()
            .map(|e| {
                e[ELEMENT]
                    .as_str()
                    .unwrap_or_else(|| panic!("find {css}: not an element: {e}"))
                    .to_string()
            })
            .collect()
    }

    /// The first element matching `css`, waiting up to 15 s for it to appear.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                return e;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no element {css} on {}\n{}",
                    self.url().await,
                    self.describe_page().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page's title, ready state and (the start of) its source, for failure messages:
    /// a missing element is only diagnosable by what the browser shows instead.
    pub async fn describe_page(&self) -> String {
        let state = self
            .try_cmd(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({"script": "return document.readyState + ' ' + document.title;", "args": []})),
            )
            .await
            .unwrap_or_else(|e| e);
        // The text, not the source: Chromium's own error pages are mostly CSS.
        let text = self
            .try_cmd(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({"script": "return document.body ? document.body.innerText : '(no body)';", "args": []})),
            )
            .await
            .unwrap_or_else(|e| e);
        let text = text
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| text.to_string());
        let cut: String = text.chars().take(3000).collect();
        format!("page state: {state}\npage text (first 3000 chars):\n{cut}")
    }

    /// Resizes the browser so that its viewport (what a screenshot shows) is `w` x `h`
    /// CSS pixels: the window is set, then grown by what its frame takes.
    pub async fn set_window_size(&self, w: u32, h: u32) {
        let mut rect = (w, h);
        for _ in 0..2 {
            self.cmd(
                reqwest::Method::POST,
                "/window/rect",
                Some(json!({"width": rect.0, "height": rect.1})),
            )
            .await;
            let v = self
                .exec("return [window.innerWidth, window.innerHeight];", json!([]))
                .await;
            let (iw, ih) = (
                v[0].as_u64().unwrap_or(0) as u32,
                v[1].as_u64().unwrap_or(0) as u32,
            );
            if (iw, ih) == (w, h) {
                return;
            }
            rect = (rect.0 + w.saturating_sub(iw), rect.1 + h.saturating_sub(ih));
        }
    }

    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{e}/click"), None)
            .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{e}/clear"), None)
            .await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.cmd(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Runs a script in the page (synchronous; `return` gives the value).
    pub async fn exec(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Runs an async script; it must call `arguments[arguments.length - 1](value)`.
    pub async fn exec_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Waits (up to 15 s) until the text of `css` satisfies `pred`; returns it.
    pub async fn wait_text(&self, css: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let found = self.find_all(css).await;
            if let Some(e) = found.first() {
                // the page may be reloading under us: a stale element is retried
                let t = self
                    .try_cmd(reqwest::Method::GET, &format!("/element/{e}/text"), None)
                    .await
                    .unwrap_or(Value::Null);
                let t = t.as_str().unwrap_or("").to_string();
                if pred(&t) {
                    return t;
                }
                if Instant::now() >= deadline {
                    panic!("{css}: waited for {what}, text is {t:?}");
                }
            } else if Instant::now() >= deadline {
                panic!("{css}: waited for {what}, no such element");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the browser session with a blocking request (for `Drop`): killing
    /// chromedriver alone would leave Chromium running.
    fn quit_blocking(&self) {
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://");
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = write!(
            s,
            "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session
        );
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }

    pub async fn quit(&self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}
