//! Shared harness of the agent's end-to-end tests: the namespace lab, the real
//! `zmesh` and `zmesh-console` binaries, and small wrappers to drive them.
#![allow(dead_code)]

pub mod nat;
pub mod netns;
pub mod nsthread;
pub mod tcp;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use netns::{wait_for, Lab};

pub fn zmesh_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zmesh"))
}

/// `zmesh-console` from the same target directory as `zmesh`.
pub fn console_bin() -> PathBuf {
    let p = zmesh_bin().with_file_name("zmesh-console");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` (with the same CARGO_TARGET_DIR) before this test",
        p.display()
    );
    p
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits until a TCP port answers, probing from inside `from_ns`.
pub fn wait_tcp(lab: &Lab, from_ns: &str, ip: Ipv4Addr, port: u16, timeout: Duration) {
    let probe = format!("exec 3<>/dev/tcp/{ip}/{port}");
    wait_for(
        &format!("{ip}:{port} to accept connections"),
        timeout,
        Duration::from_millis(200),
        || {
            lab.exec_timeout(from_ns, &["bash", "-c", &probe], Duration::from_secs(2))
                .status
                .success()
                .then_some(())
        },
    );
}

/// The real console in its own namespace.
pub struct Console {
    pub ns: String,
    pub ip: Ipv4Addr,
    pub data_dir: PathBuf,
    pub pid: Option<u32>,
}

impl Console {
    pub fn new(lab: &mut Lab, ip: Ipv4Addr) -> Console {
        let ns = lab.add_node(ip).expect("console namespace");
        let data_dir = lab.dir.path().join("console-data");
        std::fs::create_dir_all(&data_dir).unwrap();
        Console {
            ns,
            ip,
            data_dir,
            pid: None,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}:8443", self.ip)
    }

    /// Starts `serve` and waits (from `probe_ns`) until it listens.
    pub fn start(&mut self, lab: &mut Lab, probe_ns: &str) {
        self.start_with(lab, probe_ns, &[], &[]);
    }

    /// [`Console::start`] with more `serve` flags and environment variables.
    pub fn start_with(
        &mut self,
        lab: &mut Lab,
        probe_ns: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) {
        let bin = console_bin();
        let listen = format!("{}:8443", self.ip);
        let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args: Vec<&str> = vec!["env"];
        args.extend(vars.iter().map(String::as_str));
        args.extend_from_slice(&[
            bin.to_str().unwrap(),
            "serve",
            "--data-dir",
            self.data_dir.to_str().unwrap(),
            "--listen",
            &listen,
        ]);
        args.extend_from_slice(extra);
        let pid = lab.spawn(&self.ns, "console", &args);
        self.pid = Some(pid);
        wait_tcp(lab, probe_ns, self.ip, 8443, Duration::from_secs(30));
    }

    pub fn kill(&mut self, lab: &mut Lab) {
        if let Some(pid) = self.pid.take() {
            lab.kill(pid);
        }
    }

    /// Runs a `zmesh-console` admin command against the data dir; panics on failure.
    pub fn cli(&self, lab: &Lab, args: &[&str]) -> String {
        let bin = console_bin();
        let mut full: Vec<&str> = vec![bin.to_str().unwrap()];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--data-dir", self.data_dir.to_str().unwrap()]);
        let out = lab.exec_timeout(&self.ns, &full, Duration::from_secs(30));
        assert!(
            out.status.success(),
            "zmesh-console {args:?} failed: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates an enrollment key and returns its text (`zmek1.…`).
    pub fn create_key(&self, lab: &Lab) -> String {
        let out = self.cli(lab, &["keys", "create"]);
        find_enroll_key(&out)
            .unwrap_or_else(|| panic!("no zmek1 key in `keys create` output: {out}"))
    }
}

pub fn find_enroll_key(out: &str) -> Option<String> {
    out.split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
        .find(|w| w.starts_with("zmek1."))
        .map(|w| w.to_string())
}

/// One agent: a namespace, a state dir and a daemon.
pub struct Agent {
    pub name: String,
    pub ns: String,
    pub underlay: Ipv4Addr,
    pub state_dir: PathBuf,
    pub pid: Option<u32>,
    /// `zmesh daemon --host-dns`: "off" unless a test gives the namespace its own
    /// /etc/resolv.conf (never touch the machine's).
    pub host_dns: &'static str,
    /// More `zmesh daemon` flags (e.g. `--metrics-listen`).
    pub daemon_args: Vec<String>,
}

impl Agent {
    pub fn new(lab: &mut Lab, name: &str, underlay: Ipv4Addr) -> Agent {
        let ns = lab.add_node(underlay).expect("agent namespace");
        let state_dir = lab.dir.path().join(format!("state-{name}"));
        Agent {
            name: name.to_string(),
            ns,
            underlay,
            state_dir,
            pid: None,
            host_dns: "off",
            daemon_args: vec![],
        }
    }

    /// Starts the daemon and enrolls the device under its own name with a fresh key;
    /// `extra`: more `zmesh up` flags.
    #[allow(dead_code)] // not every test binary enrolls this way
    pub fn join(&mut self, lab: &mut Lab, console: &Console, extra: &[&str]) {
        self.start_daemon(lab);
        let key = console.create_key(lab);
        let (url, name) = (console.url(), self.name.clone());
        let mut args = vec![
            "up",
            "--console",
            &url,
            "--enroll-key",
            &key,
            "--name",
            &name,
        ];
        args.extend_from_slice(extra);
        self.zmesh(lab, &args);
    }

    pub fn start_daemon(&mut self, lab: &mut Lab) {
        let bin = zmesh_bin();
        let log = format!("daemon-{}", self.name);
        let mut args = vec![
            bin.to_str().unwrap(),
            "daemon",
            "--state-dir",
            self.state_dir.to_str().unwrap(),
            "--tun",
            "zmesh0",
            "--port",
            "51820",
            "--host-dns",
            self.host_dns,
        ];
        args.extend(self.daemon_args.iter().map(String::as_str));
        let pid = lab.spawn(&self.ns, &log, &args);
        self.pid = Some(pid);
        let sock = self.state_dir.join("zmesh.sock");
        wait_for(
            &format!("daemon {} socket", self.name),
            Duration::from_secs(15),
            Duration::from_millis(50),
            || {
                (sock.exists() && self.try_zmesh(lab, &["status", "--json"]).status.success())
                    .then_some(())
            },
        );
    }

    /// Graceful stop (SIGTERM), as systemd would.
    pub fn stop_daemon(&mut self, lab: &mut Lab) {
        if let Some(pid) = self.pid.take() {
            lab.stop(pid, Duration::from_secs(10));
        }
    }

    pub fn try_zmesh(&self, lab: &Lab, args: &[&str]) -> Output {
        let bin = zmesh_bin();
        let mut full: Vec<&str> = vec![bin.to_str().unwrap()];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--state-dir", self.state_dir.to_str().unwrap()]);
        lab.exec_timeout(&self.ns, &full, Duration::from_secs(90))
    }

    pub fn zmesh(&self, lab: &Lab, args: &[&str]) -> String {
        let out = self.try_zmesh(lab, args);
        assert!(
            out.status.success(),
            "zmesh {args:?} on {} failed: {}",
            self.name,
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status(&self, lab: &Lab) -> serde_json::Value {
        let out = self.try_zmesh(lab, &["status", "--json"]);
        assert!(
            out.status.success(),
            "status of {} failed: {}",
            self.name,
            text(&out)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json of {}: {e}: {:?} {}",
                self.name,
                out.status,
                text(&out)
            )
        })
    }

    pub fn peer_names(&self, lab: &Lab) -> Vec<String> {
        let s = self.status(lab);
        let mut v: Vec<String> = s["peers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn overlay_v4(&self, lab: &Lab) -> Ipv4Addr {
        let s = self.status(lab);
        s["self"]["overlay_ips"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .filter_map(|v| v.as_str()?.parse::<Ipv4Addr>().ok())
                    .next()
            })
            .unwrap_or_else(|| panic!("no overlay v4 in status of {}: {s}", self.name))
    }

    /// `ping -c count -W 2` from this agent's namespace over the overlay.
    pub fn ping(&self, lab: &Lab, dst: Ipv4Addr, count: u32) -> bool {
        let c = count.to_string();
        let dst = dst.to_string();
        lab.exec_timeout(
            &self.ns,
            &["ping", "-n", "-q", "-c", &c, "-W", "2", &dst],
            Duration::from_secs(30),
        )
        .status
        .success()
    }
}

pub fn has_binary(bin: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A stock `wireguard-go` interface in a lab namespace. Its UAPI socket lives in the
/// host-wide /var/run/wireguard, so the name is unique per run and the socket is
/// removed on drop even if the process was killed.
pub struct WireguardGo {
    pub ifname: String,
    pub pid: u32,
    uapi: PathBuf,
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uapi);
    }
}

impl WireguardGo {
    /// Starts wireguard-go in `ns` and configures it as wg-quick would: `wg setconf`
    /// with `setconf`, then addresses and routes with `ip`.
    pub fn start(
        lab: &mut Lab,
        ns: &str,
        tag: &str,
        setconf: &str,
        addresses: &[String],
        routes: &[String],
    ) -> Self {
        let ifname = format!("zw{tag}{}", std::process::id() % 100_000);
        let uapi = PathBuf::from(format!("/var/run/wireguard/{ifname}.sock"));
        let pid = lab.spawn(
            ns,
            &format!("wireguard-go-{tag}"),
            &[
                "env",
                "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1",
                "LOG_LEVEL=error",
                "wireguard-go",
                "-f",
                &ifname,
            ],
        );
        let wg = WireguardGo {
            ifname: ifname.clone(),
            pid,
            uapi,
        };
        wait_for(
            "the wireguard-go interface",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || {
                lab.exec(ns, &["ip", "link", "show", &ifname])
                    .status
                    .success()
                    .then_some(())
            },
        );
        let conf = lab.dir.path().join(format!("{ifname}.conf"));
        std::fs::write(&conf, setconf).unwrap();
        lab.exec_ok(ns, &["wg", "setconf", &ifname, conf.to_str().unwrap()])
            .unwrap();
        for a in addresses {
            lab.exec_ok(ns, &["ip", "addr", "add", a, "dev", &ifname])
                .unwrap();
        }
        lab.exec_ok(ns, &["ip", "link", "set", &ifname, "mtu", "1420", "up"])
            .unwrap();
        for r in routes {
            lab.exec_ok(ns, &["ip", "route", "replace", r, "dev", &ifname])
                .unwrap();
        }
        wg
    }

    /// Unix time of the latest handshake with each peer (0 = never).
    pub fn handshakes(&self, lab: &Lab, ns: &str) -> Vec<u64> {
        let out = lab
            .exec_ok(ns, &["wg", "show", &self.ifname, "latest-handshakes"])
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .collect()
    }

    /// A clean stop lets wireguard-go remove its interface and socket itself.
    pub fn stop(self, lab: &mut Lab) {
        lab.stop(self.pid, Duration::from_secs(5));
    }
}

/// The fingerprint line `zmesh-console serve` prints, from its log.
pub fn printed_fingerprint(lab: &Lab) -> String {
    let log = lab.log_path("console");
    wait_for(
        "the console to print its certificate fingerprint",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let s = std::fs::read_to_string(&log).ok()?;
            let at = s.find("SHA-256 fingerprint: ")? + "SHA-256 fingerprint: ".len();
            let fp: String = s[at..]
                .chars()
                .take_while(|c| c.is_ascii_hexdigit() || *c == ':')
                .collect();
            (!fp.is_empty()).then_some(fp)
        },
    )
}
