//! A throw-away PostgreSQL server for tests and the enrollment benchmark.
//!
//! `ZMESH_TEST_PG_URL` (a URL to a server where we may create databases) wins when set.
//! Otherwise `initdb` and `postgres` are looked up on PATH and in
//! /usr/lib/postgresql/*/bin, a cluster is made in a temporary directory, and the server
//! listens on 127.0.0.1 at a free port (its unix socket stays in that directory).
//! PostgreSQL refuses to run as root, so under euid 0 the directory is handed to the
//! `postgres` system user (created if missing) and the binaries run through `setpriv`.
//!
//! One server per test binary ([`shared`]), one fresh database per test ([`fresh_db`]).
//! The server is stopped and its directory removed on `Drop`, at process exit (statics
//! are never dropped, so an `atexit` hook does it), and, should the process be killed,
//! by a small watchdog shell that notices its parent is gone.
//!
//! Without a server: when `CI` is set the caller panics with the reason, otherwise it
//! prints a notice and the test returns early.

#![allow(dead_code)] // each test binary / example uses a different part

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::Connection;

/// How long the server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a fast shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server (ours or an external one given by URL).
pub struct PgServer {
    /// `postgres://user@host:port` without a database.
    base_url: String,
    local: Option<Local>,
}

struct Local {
    dir: PathBuf,
    child: Mutex<Option<Child>>,
    watchdog: Mutex<Option<Child>>,
}

/// A database created for one test, on the shared server.
pub struct TestDb {
    pub url: String,
    pub name: String,
    /// Only databases on an external server are dropped afterwards; ours vanish with it.
    drop_after: bool,
    admin_url: String,
}

impl PgServer {
    /// The external server from `ZMESH_TEST_PG_URL`, or a new local one.
    /// `durable = false` turns fsync off (fine for tests, not for benchmarks).
    pub fn start(durable: bool) -> Result<PgServer, String> {
        if let Ok(url) = std::env::var("ZMESH_TEST_PG_URL") {
            return Ok(PgServer::external(&url));
        }
        let bins = find_binaries()?;
        let as_user = if unsafe { libc::geteuid() } == 0 {
            Some(ensure_postgres_user()?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("zmpg-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?
            .keep();
        let server = PgServer {
            base_url: String::new(),
            local: Some(Local {
                dir: dir.clone(),
                child: Mutex::new(None),
                watchdog: Mutex::new(None),
            }),
        };
        // from here on, Drop of `server` cleans the directory on any error
        let mut server = server;
        if let Some((uid, gid)) = as_user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
        }
        let data = dir.join("data");
        let out = run_as(as_user, &bins.initdb)
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bins.initdb.display()))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let mut last_err = String::new();
        // a free port can be taken between our probe and the server's bind: try a few
        for _ in 0..3 {
            let port = free_port()?;
            let log = std::fs::File::create(dir.join("postgres.log")).map_err(|e| e.to_string())?;
            if let Some((uid, gid)) = as_user {
                let _ = std::os::unix::fs::chown(dir.join("postgres.log"), Some(uid), Some(gid));
            }
            let mut cmd = run_as(as_user, &bins.postgres);
            cmd.arg("-D")
                .arg(&data)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(&dir);
            for (k, v) in [
                ("listen_addresses", "127.0.0.1"),
                ("max_connections", "300"),
                ("shared_buffers", "64MB"),
                ("fsync", if durable { "on" } else { "off" }),
                ("synchronous_commit", if durable { "on" } else { "off" }),
                ("full_page_writes", if durable { "on" } else { "off" }),
            ] {
                cmd.arg("-c").arg(format!("{k}={v}"));
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", bins.postgres.display()))?;
            let pid = child.id();
            let local = server.local.as_mut().expect("local server");
            *local.child.lock().unwrap() = Some(child);
            *local.watchdog.lock().unwrap() = spawn_watchdog(pid, &dir);
            match wait_ready(local, port) {
                Ok(()) => {
                    server.base_url = format!("postgres://postgres@127.0.0.1:{port}");
                    return Ok(server);
                }
                Err(e) => {
                    last_err = e;
                    server.stop_child();
                }
            }
        }
        Err(last_err)
    }

    /// A server someone else runs; databases made on it are dropped after use.
    pub fn external(url: &str) -> PgServer {
        PgServer {
            base_url: strip_database(url),
            local: None,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Creates a database with a random name and returns its URL.
    pub async fn create_db(&self) -> Result<TestDb, String> {
        let name = format!("zm_{}", uuid::Uuid::new_v4().simple());
        let admin_url = format!("{}/postgres", self.base_url);
        let mut c = sqlx::PgConnection::connect(&admin_url)
            .await
            .map_err(|e| format!("connect {admin_url}: {e}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .map_err(|e| format!("CREATE DATABASE: {e}"))?;
        let _ = c.close().await;
        Ok(TestDb {
            url: format!("{}/{name}", self.base_url),
            name,
            drop_after: self.local.is_none(),
            admin_url,
        })
    }

    /// Fast shutdown (SIGINT), then SIGKILL after a timeout; removes the directory.
    fn stop(&self) {
        self.stop_child();
        if let Some(l) = &self.local {
            if let Some(mut w) = l.watchdog.lock().unwrap().take() {
                let _ = w.kill();
                let _ = w.wait();
            }
            let _ = std::fs::remove_dir_all(&l.dir);
        }
    }

    fn stop_child(&self) {
        let Some(l) = &self.local else { return };
        let Some(mut child) = l.child.lock().unwrap().take() else {
            return;
        };
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }

    fn log_tail(&self) -> String {
        let Some(l) = &self.local else {
            return String::new();
        };
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(l.dir.join("postgres.log")) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if !self.drop_after {
            return;
        }
        // Drop cannot await; a short-lived runtime on its own thread does the DROP.
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut c = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut c)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

static SHARED: OnceLock<Result<PgServer, String>> = OnceLock::new();

extern "C" fn stop_shared_at_exit() {
    if let Some(Ok(s)) = SHARED.get() {
        s.stop();
    }
}

/// The server shared by all tests of this binary, started on first use.
pub fn shared() -> Result<&'static PgServer, String> {
    SHARED
        .get_or_init(|| {
            // started on a plain thread: the caller may be inside a tokio runtime
            let r = std::thread::spawn(|| PgServer::start(false))
                .join()
                .unwrap_or_else(|_| Err("PostgreSQL harness panicked".into()));
            if r.is_ok() {
                unsafe {
                    libc::atexit(stop_shared_at_exit);
                }
            }
            r
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A fresh database on the shared server, or `None` (after a notice) when no server can
/// be had. Panics when `CI` is set and no server can be had: CI must not skip silently.
pub async fn fresh_db(test: &str) -> Option<TestDb> {
    let r = match shared() {
        Ok(s) => s.create_db().await,
        Err(e) => Err(e),
    };
    match r {
        Ok(db) => Some(db),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("{test}: CI is set but no PostgreSQL server is available: {e}")
        }
        Err(e) => {
            eprintln!("NOTICE: {test}: skipping the PostgreSQL run, no server available: {e}");
            None
        }
    }
}

struct Binaries {
    initdb: PathBuf,
    postgres: PathBuf,
}

fn find_binaries() -> Result<Binaries, String> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    dirs.extend(versioned.into_iter().map(|(_, p)| p));
    let find = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p));
    match (find("initdb"), find("postgres")) {
        (Some(initdb), Some(postgres)) => Ok(Binaries { initdb, postgres }),
        _ => Err(
            "initdb/postgres not found on PATH or in /usr/lib/postgresql/*/bin \
                  (install the Debian package `postgresql`, or set ZMESH_TEST_PG_URL)"
                .into(),
        ),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// uid and gid of the `postgres` system user, created when missing.
fn ensure_postgres_user() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id")
            .args([flag, "postgres"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !o.status.success() {
            return None;
        }
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "postgres",
            ])
            .status()
            .map_err(|e| format!("useradd: {e}"))?;
        if !st.success() && id("-u").is_none() {
            return Err(
                "cannot create the postgres system user (PostgreSQL refuses to run as root)".into(),
            );
        }
    }
    match (id("-u"), id("-g")) {
        (Some(u), Some(g)) => Ok((u, g)),
        _ => Err("cannot read the postgres user's uid/gid".into()),
    }
}

/// `bin` as a command, run as `postgres` (through setpriv, which execs, so the child's
/// pid is the server's own and signals reach it) when we are root.
fn run_as(user: Option<(u32, u32)>, bin: &Path) -> Command {
    match user {
        None => Command::new(bin),
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(bin)
                .env("HOME", "/tmp");
            c
        }
    }
}

fn free_port() -> Result<u16, String> {
    let l =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Waits until the server accepts a real login (TCP accept alone comes too early).
fn wait_ready(local: &Local, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if let Some(st) = local
            .child
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            let mut log = String::new();
            let _ = std::fs::File::open(local.dir.join("postgres.log"))
                .and_then(|mut f| f.read_to_string(&mut log));
            return Err(format!("postgres exited early ({st}): {}", log.trim()));
        }
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .is_ok()
        {
            match rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), sqlx::PgConnection::connect(&url))
                    .await
            }) {
                Ok(Ok(c)) => {
                    let _ = rt.block_on(c.close());
                    return Ok(());
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "login timed out".into(),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "postgres not ready after {READY_TIMEOUT:?}: {last}"
    ))
}

/// Stops the server and removes its directory if this process dies without cleaning up
/// (killed by a signal, a test runner timeout). Exits on its own once the server is gone.
fn spawn_watchdog(server_pid: u32, dir: &Path) -> Option<Child> {
    let me = std::process::id();
    let script = format!(
        "while kill -0 {me} 2>/dev/null && kill -0 {server_pid} 2>/dev/null; do sleep 1; done; \
         if kill -0 {server_pid} 2>/dev/null; then kill -INT {server_pid}; \
         for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 {server_pid} 2>/dev/null || break; sleep 1; done; \
         kill -KILL {server_pid} 2>/dev/null; rm -rf '{}'; fi",
        dir.display()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// `postgres://u@h:p/db?x` -> `postgres://u@h:p` (the harness appends its own database).
fn strip_database(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}
