//! Network-namespace lab for end-to-end tests: one bridge namespace holding a Linux
//! bridge, and node namespaces each joined to it by a veth pair. Namespace names are
//! `zm<pid>-<n>`, unique per run. Every process started through the lab is tracked and
//! killed, and every namespace deleted, when the lab is dropped — also on panic.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn unique_name() -> String {
    format!(
        "zm{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn run_checked(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out)
}

/// A tracked background process.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

pub struct Lab {
    bridge_ns: String,
    namespaces: Vec<String>,
    procs: Vec<Proc>,
    next_veth: u32,
    pub dir: tempfile::TempDir,
}

/// Creates a lab, or explains why not: without `CI` the test prints a notice and
/// returns; with `CI` set, a missing facility is a failure.
pub fn lab_or_skip(test: &str) -> Option<Lab> {
    match Lab::new() {
        Ok(l) => Some(l),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("{test}: network namespaces are required in CI but unavailable: {e}")
        }
        Err(e) => {
            eprintln!("NOTICE: skipping {test}: needs root and network namespaces ({e})");
            None
        }
    }
}

impl Lab {
    pub fn new() -> Result<Lab, String> {
        let bridge_ns = unique_name();
        run_checked(Command::new("ip").args(["netns", "add", &bridge_ns]))?;
        let lab = Lab {
            bridge_ns: bridge_ns.clone(),
            namespaces: vec![bridge_ns.clone()],
            procs: Vec::new(),
            next_veth: 0,
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
        };
        lab.exec_ok(&bridge_ns, &["ip", "link", "set", "lo", "up"])?;
        lab.exec_ok(&bridge_ns, &["ip", "link", "add", "br0", "type", "bridge"])?;
        lab.exec_ok(&bridge_ns, &["ip", "link", "set", "br0", "up"])?;
        Ok(lab)
    }

    /// A new namespace attached to the bridge with `addr/24` on its `eth0`.
    pub fn add_node(&mut self, addr: Ipv4Addr) -> Result<String, String> {
        let ns = unique_name();
        run_checked(Command::new("ip").args(["netns", "add", &ns]))?;
        self.namespaces.push(ns.clone());
        let veth = format!("v{}", self.next_veth);
        self.next_veth += 1;
        let br = self.bridge_ns.clone();
        self.exec_ok(
            &br,
            &[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )?;
        self.exec_ok(&br, &["ip", "link", "set", &veth, "master", "br0"])?;
        self.exec_ok(&br, &["ip", "link", "set", &veth, "up"])?;
        self.exec_ok(&ns, &["ip", "link", "set", "lo", "up"])?;
        self.exec_ok(
            &ns,
            &["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"],
        )?;
        self.exec_ok(&ns, &["ip", "link", "set", "eth0", "up"])?;
        Ok(ns)
    }

    /// A new empty namespace (loopback up), deleted with the lab; for routers and hosts
    /// behind them that the caller wires up itself.
    pub fn add_ns(&mut self) -> Result<String, String> {
        let ns = unique_name();
        run_checked(Command::new("ip").args(["netns", "add", &ns]))?;
        self.namespaces.push(ns.clone());
        self.exec_ok(&ns, &["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Deletes `ns` with the lab (first, before the lab's own namespaces), for a namespace
    /// that a command under test creates by name itself. Harmless if it never exists.
    pub fn adopt_ns(&mut self, ns: &str) {
        self.namespaces.push(ns.to_string());
    }

    pub fn command(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    }

    /// Runs a command inside `ns` to completion, bounded by `timeout`.
    pub fn exec_timeout(&self, ns: &str, args: &[&str], timeout: Duration) -> Output {
        let mut c = self.command(ns, args);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    break;
                }
            }
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("wait {args:?}: {e}"))
    }

    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        self.exec_timeout(ns, args, Duration::from_secs(60))
    }

    pub fn exec_ok(&self, ns: &str, args: &[&str]) -> Result<Output, String> {
        let out = self.exec(ns, args);
        if !out.status.success() {
            return Err(format!(
                "`{}` in {ns} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
        Ok(out)
    }

    /// Starts a tracked background process in `ns`, output to `<lab dir>/<name>.log`.
    pub fn spawn(&mut self, ns: &str, name: &str, args: &[&str]) -> u32 {
        let log = self.dir.path().join(format!("{name}.log"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = self
            .command(ns, args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("log file"))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let pid = child.id();
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log,
        });
        pid
    }

    /// Stops a tracked process: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, pid: u32, grace: Duration) {
        let Some(i) = self.procs.iter().position(|p| p.child.id() == pid) else {
            return;
        };
        let mut p = self.procs.remove(i);
        // SAFETY: plain kill(2) on a pid we spawned and have not reaped yet.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = p.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = p.child.kill();
        let _ = p.child.wait();
    }

    /// Kills a tracked process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, pid: u32) {
        if let Some(i) = self.procs.iter().position(|p| p.child.id() == pid) {
            let mut p = self.procs.remove(i);
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn dump_logs(&self) {
        let Ok(rd) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                eprintln!("===== {} (last 60 lines) =====", p.display());
                eprintln!("{}", tail(&p, 60));
            }
        }
    }
}

pub fn tail(p: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("ZMESH_TEST_LOGS").is_some() {
            self.dump_logs();
        }
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            // Anything still running inside (e.g. a grandchild) would keep it alive.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: kill(2) on processes inside a namespace this lab created.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Polls `f` every `every` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}
