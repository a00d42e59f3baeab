//! The processes a scale run drives: `zmesh-console serve` (one or two replicas), haproxy
//! in TCP mode in front of them, and the admin API over the pinned TLS identity. Also
//! reads a process's CPU time and memory from /proc. Everything listens on loopback only.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use zmesh_shared::CertFingerprint;

/// How long a console or haproxy may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `addr` accepts TCP, failing early when `child` exits.
fn wait_listening(child: &mut Child, addr: SocketAddr, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait()? {
            bail!("exited early ({st}): {}", tail(log));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "not listening on {addr} after {READY_TIMEOUT:?}: {}",
        tail(log)
    )
}

/// The last lines of a log file, for error messages.
pub fn tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(12)..].join("\n")
}

fn kill_child(child: &mut Child) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    let _ = child.wait();
}

/// One `zmesh-console serve` process.
pub struct Console {
    pub name: String,
    pub addr: SocketAddr,
    pub pid: u32,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Console {
    /// Starts `serve` on a free loopback port (no STUN responder: it would bind
    /// 0.0.0.0 and two replicas would share its port); `db` is a PostgreSQL URL, else
    /// the data dir's SQLite file.
    pub fn start(
        bin: &Path,
        name: &str,
        data_dir: &Path,
        db: Option<&str>,
        log_dir: &Path,
    ) -> anyhow::Result<Console> {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--no-stun")
            // one line per stream connect/close at info would be 10,000s of lines
            .env("ZMESH_LOG", "warn")
            .env_remove("ZMESH_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if let Some(db) = db {
            cmd.arg("--database").arg(db);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        if let Err(e) = wait_listening(&mut child, addr, &log) {
            kill_child(&mut child);
            return Err(e.context(format!("console {name}")));
        }
        Ok(Console {
            name: name.to_string(),
            addr,
            pid: child.id(),
            data_dir: data_dir.to_path_buf(),
            log,
            child: Some(child),
        })
    }

    /// SIGKILL: no shutdown, no goodbye to the agents (a crashed or fenced replica).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_child(&mut c);
        }
    }

    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid)
    }

    pub fn rss_kb(&self) -> u64 {
        status_kb(self.pid, "VmRSS:")
    }

    pub fn peak_rss_kb(&self) -> u64 {
        status_kb(self.pid, "VmHWM:")
    }

    pub fn admin_token(&self) -> anyhow::Result<String> {
        let p = self.data_dir.join("admin.token");
        Ok(std::fs::read_to_string(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim()
            .to_string())
    }

    /// The SHA-256 pin of the console's TLS certificate (`tls/cert.pem`).
    pub fn pin(&self) -> anyhow::Result<CertFingerprint> {
        let p = self.data_dir.join("tls/cert.pem");
        let pem = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        let der = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .context("no certificate in tls/cert.pem")??;
        Ok(CertFingerprint::of_der(&der))
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies what replicas must share (signing key, TLS identity, admin token) from the
/// first replica's data dir into a new one, as docs/admin-guide.md §7 tells admins.
pub fn clone_identity(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to.join("tls"))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700))?;
    for f in ["signing.key", "admin.token"] {
        std::fs::copy(from.join(f), to.join(f)).with_context(|| format!("copying {f}"))?;
    }
    for e in std::fs::read_dir(from.join("tls"))? {
        let e = e?;
        std::fs::copy(e.path(), to.join("tls").join(e.file_name()))?;
    }
    Ok(())
}

/// CPU seconds (user + system) the process has used, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the parenthesised command name; utime and stime are fields 14 and 15
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// A `kB` line of /proc/PID/status (VmRSS, VmHWM), 0 when gone.
pub fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// haproxy in TCP mode (the TLS stays end to end between agent and console), round
/// robin over the replicas, health-checked every 500 ms so a dead replica is taken out
/// quickly; a connection refused by a dead one is redispatched to the other.
pub struct Haproxy {
    pub addr: SocketAddr,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Haproxy {
    pub fn start(backends: &[SocketAddr], dir: &Path) -> anyhow::Result<Haproxy> {
        let bin = which("haproxy")
            .context("haproxy not found (Debian package `haproxy`); needed for --replicas 2")?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        // two sockets per proxied connection, within the fd limit we hand it (haproxy
        // refuses to start when maxconn needs more)
        let maxconn = (super::raise_nofile(0).saturating_sub(64) / 2).clamp(256, 50_000);
        let mut cfg = format!(
            "global\n    maxconn {maxconn}\n    nbthread 1\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 1h\n    \
             timeout server 1h\n    timeout tunnel 1h\n    retries 2\n    option redispatch\n\
             listen zmesh\n    bind {addr}\n    balance roundrobin\n"
        );
        for (i, b) in backends.iter().enumerate() {
            cfg.push_str(&format!(
                "    server r{i} {b} check inter 500ms fall 2 rise 2\n"
            ));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg)?;
        let log = dir.join("haproxy.log");
        let out = std::fs::File::create(&log)?;
        // -db: stay in the foreground, so the pid we hold is the proxy's own
        let mut child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        if let Err(e) = wait_listening(&mut child, addr, &log) {
            kill_child(&mut child);
            return Err(e.context("haproxy"));
        }
        Ok(Haproxy {
            addr,
            log,
            child: Some(child),
        })
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_child(&mut c);
        }
    }
}

pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The admin REST API, trusted by the console's certificate pin.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub fn new(addr: SocketAddr, pin: CertFingerprint, token: &str) -> anyhow::Result<Api> {
        let tls = zmesh_tls::pinned_client_config(pin)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Api {
            http,
            base: format!("https://{addr}"),
            token: token.to_string(),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Saves a policy; returns its version.
    pub async fn set_policy(&self, text: &str) -> anyhow::Result<u64> {
        let v = self
            .call(
                reqwest::Method::PUT,
                "/api/v1/policy",
                Some(json!({ "policy": text })),
            )
            .await?;
        v["version"]
            .as_u64()
            .context("no version in the policy answer")
    }

    /// A reusable, pre-approved enrollment key with `tags`; returns its text (`zmek1.…`).
    pub async fn enroll_key(&self, tags: &[&str]) -> anyhow::Result<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/api/v1/enroll-keys",
                Some(json!({ "reusable": true, "tags": tags, "description": "bench-scale" })),
            )
            .await?;
        Ok(v["key"]
            .as_str()
            .context("no key in the answer")?
            .to_string())
    }

    pub async fn revoke(&self, id: zmesh_shared::DeviceId) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/devices/{id}/revoke"),
            None,
        )
        .await?;
        Ok(())
    }
}
