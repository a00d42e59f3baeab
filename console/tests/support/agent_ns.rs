//! A real `zmesh` agent for the browser test: one network namespace (`zmw<pid>`) joined
//! to the host by a veth pair with addresses from a private /30, the agent daemon
//! inside it, and `zmesh up` run there against the console on the host. The guard
//! kills the daemon by PID and deletes the namespace and veth when dropped, also on
//! panic.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

fn ip(args: &[&str]) -> Result<Output, String> {
    run_checked(Command::new("ip").args(args))
}

/// `zmesh` from the same target directory as `zmesh-console`.
pub fn zmesh_bin(console_bin: &str) -> PathBuf {
    let p = Path::new(console_bin).with_file_name("zmesh");
    assert!(
        p.exists(),
        "{} is missing: run `cargo test --workspace` (or `cargo build -p zmesh-agent`) \
         with the same CARGO_TARGET_DIR so the agent binary sits next to zmesh-console",
        p.display()
    );
    p
}

pub struct AgentNs {
    pub ns: String,
    host_veth: String,
    /// The host end of the veth pair: the console is reached here from the namespace.
    pub host_ip: Ipv4Addr,
    pub agent_ip: Ipv4Addr,
    zmesh: PathBuf,
    daemon: Option<Child>,
    pub dir: tempfile::TempDir,
}

/// Creates the namespace, or explains why not: without `CI` the test prints a notice
/// and returns; with `CI` set, a missing facility is a failure.
pub fn agent_ns_or_skip(test: &str, zmesh: PathBuf) -> Option<AgentNs> {
    match AgentNs::new(zmesh) {
        Ok(a) => Some(a),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("{test}: network namespaces are required in CI but unavailable: {e}")
        }
        Err(e) => {
            eprintln!("NOTICE: skipping {test}: needs root and network namespaces ({e})");
            None
        }
    }
}

/// A /30 in 10.251.0.0/16 not yet on any host interface, starting from the pid so
/// parallel runs pick different ones.
fn free_subnet() -> Result<u8, String> {
    let start = std::process::id() % 250;
    for i in 0..250 {
        let n = ((start + i) % 250) as u8;
        let out = ip(&["-o", "addr", "show", "to", &format!("10.251.{n}.0/30")])?;
        if out.stdout.is_empty() {
            return Ok(n);
        }
    }
    Err("no free /30 in 10.251.0.0/16".into())
}

impl AgentNs {
    pub fn new(zmesh: PathBuf) -> Result<AgentNs, String> {
        let pid = std::process::id();
        let ns = format!("zmw{pid}");
        let host_veth = format!("zmw{pid}h");
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        ip(&["netns", "add", &ns])?;
        // From here on the guard owns the namespace and cleans up on any error.
        let mut a = AgentNs {
            ns: ns.clone(),
            host_veth: host_veth.clone(),
            host_ip: Ipv4Addr::UNSPECIFIED,
            agent_ip: Ipv4Addr::UNSPECIFIED,
            zmesh,
            daemon: None,
            dir,
        };
        let n = free_subnet()?;
        a.host_ip = Ipv4Addr::new(10, 251, n, 1);
        a.agent_ip = Ipv4Addr::new(10, 251, n, 2);
        ip(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", a.host_ip),
            "dev",
            &host_veth,
        ])?;
        // No IPv6 on the host end: its link-local address would finish duplicate address
        // detection a second or two later, and that late address event makes a browser
        // started meanwhile abort its page loads with ERR_NETWORK_CHANGED.
        let v6 = format!("/proc/sys/net/ipv6/conf/{host_veth}/disable_ipv6");
        if std::path::Path::new(&v6).exists() {
            std::fs::write(&v6, "1").map_err(|e| format!("{v6}: {e}"))?;
        }
        ip(&["link", "set", &host_veth, "up"])?;
        let agent_cidr = format!("{}/30", a.agent_ip);
        for args in [
            &["ip", "link", "set", "lo", "up"][..],
            &["ip", "addr", "add", &agent_cidr, "dev", "eth0"],
            &["ip", "link", "set", "eth0", "up"],
        ] {
            let mut full = vec!["netns", "exec", &ns];
            full.extend_from_slice(args);
            ip(&full)?;
        }
        a.settle(&host_veth)?;
        Ok(a)
    }

    /// Waits until the host end of the pair is operationally up (the kernel may report
    /// the carrier up to a second late) and no more link events are due, so a browser
    /// started next sees a quiet network.
    fn settle(&self, dev: &str) -> Result<(), String> {
        let state = format!("/sys/class/net/{dev}/operstate");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = std::fs::read_to_string(&state).map_err(|e| format!("{state}: {e}"))?;
            if s.trim() == "up" {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("{dev} is still {} after 5 s", s.trim()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// `zmesh ARGS --state-dir DIR` inside the namespace, bounded by `timeout`.
    pub fn zmesh(&self, args: &[&str], timeout: Duration) -> Output {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&self.zmesh)
            .args(args)
            .arg("--state-dir")
            .arg(self.state_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn zmesh {args:?}: {e}"));
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait_with_output().unwrap()
    }

    /// Starts `zmesh daemon` in the namespace and waits for its control socket.
    pub fn start_daemon(&mut self) {
        std::fs::create_dir_all(self.state_dir()).unwrap();
        let log = std::fs::File::create(self.log()).unwrap();
        // `ip netns exec` execs the command, so this child's PID is the daemon's.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&self.zmesh)
            .arg("daemon")
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(["--tun", "zmesh0", "--host-dns", "off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn zmesh daemon");
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        let sock = self.state_dir().join("zmesh.sock");
        loop {
            if let Some(Ok(Some(st))) = self.daemon.as_mut().map(|c| c.try_wait()) {
                panic!("zmesh daemon exited ({st}): {}", self.daemon_log());
            }
            if sock.exists()
                && self
                    .zmesh(&["status", "--json"], Duration::from_secs(5))
                    .status
                    .success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "zmesh daemon socket never came up: {}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

impl Drop for AgentNs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.daemon_log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "===== zmesh daemon log (last 60 lines) =====\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Anything else still running inside would keep the namespace alive.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if pid.parse::<u32>().is_ok() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}
