//! The `zmesh` command line: `daemon` runs the agent; every other command is a thin
//! client that sends one request to the daemon's control socket and prints the answer.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use zmesh_shared::enroll_key::EnrollKey;
use zmesh_shared::{CertFingerprint, Secret};

use crate::config::DaemonConfig;
use crate::control::login::MAX_LOGIN_WAIT;
use crate::ipc::{self, Reply, Request, Response};
use crate::statedir::StateDir;
use crate::status_text::ago;
pub use crate::status_text::{status_table, status_tables};

#[derive(Debug, Parser)]
#[command(
    name = "zmesh",
    version,
    about = "zmesh agent: zero-trust WireGuard mesh"
)]
pub struct Cli {
    /// State directory (key, enrollment, peer cache, control socket).
    #[arg(
        long,
        global = true,
        env = "ZMESH_STATE_DIR",
        default_value = "/var/lib/zmesh"
    )]
    pub state_dir: PathBuf,
    /// Log format on standard error.
    #[arg(
        long,
        global = true,
        env = "ZMESH_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub cmd: Command,
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; colours only when standard error is a terminal.
    Text,
    /// One JSON object per line (for journald/SIEM pipelines).
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (what the systemd unit starts).
    Daemon {
        /// Name of the TUN device to create.
        #[arg(long, env = "ZMESH_TUN", default_value = "zmesh0")]
        tun: String,
        /// UDP port of the data plane (0 = ephemeral).
        #[arg(long, default_value_t = 0)]
        port: u16,
        #[arg(long, default_value_t = 1420)]
        mtu: u16,
        /// How the host is pointed at the resolver for zmesh names: systemd-resolved
        /// when it runs, else /etc/resolv.conf (auto); one of them always; or off.
        #[arg(long, env = "ZMESH_HOST_DNS", value_enum, default_value = "auto")]
        host_dns: crate::dns::HostDns,
        /// Serve Prometheus metrics (plain HTTP, `GET /metrics`, no authentication) on
        /// this address, e.g. 127.0.0.1:9470. Off by default; loopback only unless
        /// --metrics-allow-remote. `zmesh metrics` prints the same without it.
        #[arg(long, env = "ZMESH_METRICS_LISTEN", value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Allow --metrics-listen on a non-loopback address.
        #[arg(long)]
        metrics_allow_remote: bool,
    },
    /// Enroll (first time: with an enrollment key, or by signing in) and bring tunnels up.
    Up {
        /// Console base URL, e.g. https://console.example:8443
        #[arg(long)]
        console: Option<String>,
        /// Enrollment key (zmek1.…); also read from ZMESH_ENROLL_KEY.
        #[arg(long, env = "ZMESH_ENROLL_KEY", hide_env_values = true)]
        enroll_key: Option<String>,
        /// Device name to request (default: derived from the hostname).
        #[arg(long)]
        name: Option<String>,
        /// PEM CA file to verify the console by (instead of the key's pin).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// SHA-256 fingerprint of the console's certificate, as `zmesh-console serve`
        /// prints it (hex, colons optional). Without --enroll-key, `up` enrolls by login
        /// (you sign in in a browser) and trusts the console by this or by --ca-file.
        #[arg(long, value_name = "SHA256", value_parser = parse_fingerprint)]
        fingerprint: Option<CertFingerprint>,
        /// Print the sign-in link as a JSON object (`login_url`, `expires_at_ms`).
        #[arg(long)]
        json: bool,
        /// Sign in again as this (enrolled) device, e.g. when its key expired: prints a
        /// link; once you sign in as the device's owner it keeps its id, name and
        /// addresses and uses a new WireGuard key (the old one stops working at once).
        /// (An enrollment key, e.g. from ZMESH_ENROLL_KEY, is not used.)
        #[arg(long, conflicts_with_all = ["name", "console", "ca_file", "fingerprint"])]
        reauth: bool,
        #[command(flatten)]
        routes: RouteArgs,
        /// The profile (a separate enrollment, in another network) to enroll or bring
        /// up: 1-15 characters of a-z, 0-9, '-'. Default: the profile `default`.
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        /// Enrolling by login (no --enroll-key): the console's network to join, by name
        /// (default: the console's first network, or the network of the account that
        /// confirms, if it is scoped to one). An enrollment key names its network itself.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["enroll_key", "reauth"])]
        network: Option<String>,
    },
    /// Show this device and its peers, in every profile.
    Status {
        #[arg(long)]
        json: bool,
        /// Only this profile.
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
    },
    /// Ping a peer (name or overlay IP) through the tunnel.
    Ping {
        peer: String,
        /// The profile whose network the peer is in (default: the one running profile
        /// that has a peer of that name or address).
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        #[arg(long, short = 'c', default_value_t = 4)]
        count: u32,
        /// Per-probe timeout, e.g. 2s or 500ms.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Check UDP reachability, mapped addresses, NAT mapping behaviour and relay latency.
    Netcheck {
        /// STUN server IP:PORT (repeat; two or more tell the mapping behaviour). Default:
        /// the STUN servers and relays the console gave the running daemon.
        #[arg(long = "stun")]
        stun: Vec<std::net::SocketAddr>,
        /// Relay IP:PORT (repeat).
        #[arg(long = "relay")]
        relay: Vec<std::net::SocketAddr>,
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Print the daemon's Prometheus metrics (what `daemon --metrics-listen` serves).
    Metrics {
        /// OpenMetrics text instead of the Prometheus text format 0.0.4.
        #[arg(long)]
        openmetrics: bool,
    },
    /// Remove tunnels and the TUN device; keep the enrollment.
    Down {
        /// The profile to take down (default: `default`).
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
    },
    /// Down, then forget the enrollment, the key and the peer cache.
    Logout {
        /// The profile to forget (default: `default`).
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
    },
    /// Test hooks (hidden): `zmesh debug wake` makes the running daemon behave as
    /// after a wake from sleep.
    #[command(hide = true)]
    Debug {
        #[command(subcommand)]
        what: DebugCommand,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DebugCommand {
    /// New handshakes with active peers, STUN and probes now, control stream and relay
    /// reconnected: what the daemon does when it notices that the host slept.
    Wake,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// What the CLI waits for the daemon beyond the login's own bound.
const LOGIN_WAIT_SLACK: Duration = Duration::from_secs(30);

/// `zmesh up` flags for subnet routes and exit nodes; each one left out keeps the
/// device's current setting.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RouteArgs {
    /// Offer these networks to the mesh as a subnet router (comma-separated prefixes,
    /// e.g. 10.1.0.0/24,fd10::/64; empty: none). They carry nothing until an admin or
    /// the policy's auto_approvers approves them.
    #[arg(long, value_name = "PREFIXES")]
    advertise_routes: Option<String>,
    /// Offer this device as an exit node (0.0.0.0/0 and ::/0), approved like routes.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    advertise_exit_node: Option<bool>,
    /// Send all traffic through this exit node (a device name); `--exit-node=` stops.
    #[arg(long, value_name = "NAME")]
    exit_node: Option<String>,
    /// With an exit node, keep reaching the local networks directly.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    exit_node_allow_lan: Option<bool>,
    /// As a subnet router or exit node, masquerade forwarded traffic behind this
    /// device's address (default true; false if the LAN routes the overlay back).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    snat_subnet_routes: Option<bool>,
}

impl RouteArgs {
    fn flags(self) -> anyhow::Result<crate::prefs::RouteFlags> {
        let advertise_routes = match self.advertise_routes {
            None => None,
            Some(s) => Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        p.parse::<ipnet::IpNet>().with_context(|| {
                            format!("--advertise-routes: {p:?} is not a prefix like 10.1.0.0/24")
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?,
            ),
        };
        Ok(crate::prefs::RouteFlags {
            advertise_routes,
            advertise_exit_node: self.advertise_exit_node,
            exit_node: self.exit_node,
            exit_node_allow_lan: self.exit_node_allow_lan,
            snat: self.snat_subnet_routes,
        })
    }
}

fn parse_fingerprint(s: &str) -> Result<CertFingerprint, String> {
    s.parse().map_err(|_| {
        "expected the SHA-256 fingerprint of the console's certificate: 64 hex digits, \
         colons optional"
            .to_string()
    })
}

/// Named relays plus the ones given by address on the command line.
fn relays_plus(
    mut named: Vec<(String, std::net::SocketAddr)>,
    extra: &[std::net::SocketAddr],
) -> Vec<(String, std::net::SocketAddr)> {
    for a in extra {
        if !named.iter().any(|(_, b)| b == a) {
            named.push((a.to_string(), *a));
        }
    }
    named
}

async fn call(state: &StateDir, req: &Request) -> anyhow::Result<Reply> {
    match ipc::call(&state.socket_path(), req, CALL_TIMEOUT).await? {
        Response::Ok { result } => Ok(result),
        Response::Error { message } => bail!("{message}"),
    }
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let state = StateDir::new(&cli.state_dir);
    match cli.cmd {
        Command::Daemon {
            tun,
            port,
            mtu,
            host_dns,
            metrics_listen,
            metrics_allow_remote,
        } => {
            let cfg = DaemonConfig {
                host_dns,
                ..DaemonConfig::new(cli.state_dir.clone(), tun, port, mtu)?
            }
            .with_metrics_listen(metrics_listen, metrics_allow_remote)?;
            crate::daemon::run(cfg).await?;
            Ok(0)
        }
        Command::Up {
            console,
            enroll_key,
            name,
            ca_file,
            fingerprint,
            json,
            reauth,
            routes,
            profile,
            network,
        } => {
            let routes = routes.flags()?;
            // (the console and its trust come from the enrollment)
            let enroll_key = enroll_key.filter(|_| !reauth);
            if let Some(k) = &enroll_key {
                // Catch a mangled key here, with a clear message, before it travels.
                k.parse::<EnrollKey>().context("--enroll-key")?;
                if console.is_none() {
                    bail!("--console URL is required with --enroll-key");
                }
            }
            let ca_pem = match ca_file {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("--ca-file {}", p.display()))?,
                ),
                None => None,
            };
            let req = Request::Up {
                console,
                enroll_key: enroll_key.map(Secret::from_string),
                name,
                ca_pem,
                fingerprint,
                reauth,
                routes,
                profile,
                network,
            };
            match call(&state, &req).await? {
                Reply::Login {
                    login_url,
                    expires_at_ms,
                    wait_ms,
                } => {
                    print_login_link(&login_url, expires_at_ms, json)?;
                    let bound = Duration::from_millis(wait_ms).min(MAX_LOGIN_WAIT);
                    let reply = match ipc::call(
                        &state.socket_path(),
                        &Request::LoginWait,
                        bound + LOGIN_WAIT_SLACK,
                    )
                    .await?
                    {
                        Response::Ok { result } => result,
                        Response::Error { message } => bail!("{message}"),
                    };
                    print_done(reply);
                }
                other => print_done(other),
            }
            Ok(0)
        }
        Command::Netcheck {
            stun,
            relay,
            timeout,
        } => {
            let (stun, relays) = if stun.is_empty() {
                let Reply::Nat(n) = call(&state, &Request::Nat).await? else {
                    bail!("unexpected reply")
                };
                let relays = n.relays.into_iter().map(|r| (r.name, r.addr)).collect();
                let relays: Vec<(String, std::net::SocketAddr)> = relays_plus(relays, &relay);
                (n.stun, relays)
            } else {
                (stun, relays_plus(vec![], &relay))
            };
            if stun.is_empty() {
                bail!("no STUN servers: the console advertises none; pass --stun IP:PORT");
            }
            crate::netcheck::run_cli(stun, relays, timeout).await
        }
        Command::Metrics { openmetrics } => {
            let Reply::Metrics { text } = call(&state, &Request::Metrics { openmetrics }).await?
            else {
                bail!("unexpected reply")
            };
            print!("{text}");
            Ok(0)
        }
        Command::Down { profile } => {
            print_done(call(&state, &Request::Down { profile }).await?);
            Ok(0)
        }
        Command::Logout { profile } => {
            print_done(call(&state, &Request::Logout { profile }).await?);
            Ok(0)
        }
        Command::Debug {
            what: DebugCommand::Wake,
        } => {
            print_done(call(&state, &Request::DebugWake).await?);
            Ok(0)
        }
        Command::Status { json, profile } => {
            let Reply::Status(s) = call(&state, &Request::Status { profile }).await? else {
                bail!("unexpected reply")
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", status_tables(&s));
            }
            Ok(0)
        }
        Command::Ping {
            peer,
            count,
            timeout,
            profile,
        } => {
            let mut ok = 0;
            let count = count.clamp(1, 10_000);
            for i in 0..count {
                if i > 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                let req = Request::Ping {
                    peer: peer.clone(),
                    timeout_ms: timeout.as_millis() as u64,
                    profile: profile.clone(),
                };
                match call(&state, &req).await {
                    Ok(Reply::Pong(p)) => {
                        ok += 1;
                        let via = p
                            .via
                            .clone()
                            .or(p.endpoint.map(|e| e.to_string()))
                            .map(|v| format!(" via {v}"))
                            .unwrap_or_default();
                        let path_rtt = p
                            .path_rtt_ms
                            .map(|r| format!(" path_rtt={r:.2} ms"))
                            .unwrap_or_default();
                        let since = p
                            .path_since
                            .as_ref()
                            .map(|_| format!(" path_changed={}", ago(&p.path_since)))
                            .unwrap_or_default();
                        println!(
                            "reply from {} ({}): seq={} time={:.2} ms path={}{via}{path_rtt}{since}",
                            p.peer,
                            p.ip,
                            i + 1,
                            p.rtt_us as f64 / 1000.0,
                            p.path
                        );
                    }
                    Ok(_) => bail!("unexpected reply"),
                    Err(e) => println!("no reply from {peer}: seq={} {e:#}", i + 1),
                }
            }
            println!("{count} sent, {ok} received");
            Ok(if ok > 0 { 0 } else { 1 })
        }
    }
}

/// The one line that sends the user to the browser, shown as soon as it is known.
fn print_login_link(url: &str, expires_at_ms: i64, json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let line = if json {
        serde_json::json!({"login_url": url, "expires_at_ms": expires_at_ms}).to_string()
    } else {
        format!("To sign in, visit: {url}")
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn print_done(r: Reply) {
    if let Reply::Done { message } = r {
        println!("{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::{PeerStatus, SelfStatus, Status};

    #[test]
    fn cli_parses_the_documented_commands() {
        let c = Cli::try_parse_from([
            "zmesh",
            "daemon",
            "--state-dir",
            "/tmp/s",
            "--tun",
            "zm1",
            "--port",
            "51820",
        ])
        .unwrap();
        assert!(matches!(c.cmd, Command::Daemon { ref tun, port: 51820, .. } if tun == "zm1"));
        let c = Cli::try_parse_from([
            "zmesh",
            "up",
            "--console",
            "https://x:8443",
            "--enroll-key",
            "k",
            "--name",
            "a",
        ])
        .unwrap();
        assert!(matches!(c.cmd, Command::Up { name: Some(ref n), .. } if n == "a"));
        let fp = "AB:".repeat(31) + "AB";
        let c = Cli::try_parse_from([
            "zmesh",
            "up",
            "--console",
            "https://x",
            "--fingerprint",
            &fp,
        ])
        .unwrap();
        assert!(
            matches!(c.cmd, Command::Up { fingerprint: Some(f), enroll_key: None, .. } if f.to_string() == "ab".repeat(32))
        );
        let e = Cli::try_parse_from([
            "zmesh",
            "up",
            "--console",
            "https://x",
            "--fingerprint",
            "ab",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
        let c = Cli::try_parse_from(["zmesh", "up", "--reauth", "--json"]).unwrap();
        assert!(matches!(
            c.cmd,
            Command::Up {
                reauth: true,
                json: true,
                ..
            }
        ));
        for other in [
            ["--console", "https://x"],
            ["--name", "b"],
            ["--fingerprint", &fp],
        ] {
            let mut args = vec!["zmesh", "up", "--reauth"];
            args.extend(other);
            let e = Cli::try_parse_from(&args).unwrap_err();
            assert!(e.to_string().contains("--reauth"), "{e}");
        }
        let c = Cli::try_parse_from(["zmesh", "ping", "b", "--count", "3", "--state-dir", "/s"])
            .unwrap();
        assert!(matches!(c.cmd, Command::Ping { count: 3, .. }));
        assert_eq!(c.state_dir, PathBuf::from("/s"));
        assert!(Cli::try_parse_from(["zmesh", "status", "--json"]).is_ok());
        assert!(Cli::try_parse_from(["zmesh", "frobnicate"]).is_err());
    }

    #[test]
    fn table_lists_peers() {
        let s = Status {
            profile: "default".into(),
            network: None,
            blocked: None,
            dropped_cross_network: 0,
            profiles: vec![],
            routes: Default::default(),
            me: Some(SelfStatus {
                name: "a".into(),
                overlay_ips: vec!["100.64.0.1".parse().unwrap()],
                public_key: "k".into(),
                device_id: "dev_1".into(),
                console: "https://c:8443".into(),
                connected: false,
                state: "up".into(),
                listen_port: Some(1),
                key_expires_at: Some("2027-06-01T00:00:00Z".into()),
                dns_name: None,
            }),
            peers: vec![PeerStatus {
                routes: vec![],
                primary_routes: vec![],
                exit_node: false,
                name: "bravo".into(),
                overlay_ips: vec!["100.64.0.2".parse().unwrap()],
                public_key: "p".into(),
                endpoint: Some("10.0.0.2:51820".parse().unwrap()),
                path: crate::ipc::PeerPath::Direct,
                via: Some("10.0.0.2:51820".into()),
                rtt_ms: Some(1.5),
                path_since: None,
                last_handshake: None,
                rx_bytes: 10,
                tx_bytes: 20,
                dns_name: Some("bravo.default.zmesh.internal".into()),
            }],
            dns: None,
        };
        let t = status_table(&s);
        assert!(t.contains("(connecting)"), "{t}");
        let mut down = s.clone();
        down.me.as_mut().unwrap().state = "down".into();
        assert!(status_table(&down).contains("(not connected)"));
        assert!(t.contains("key expires 2027-06-01T00:00:00Z"), "{t}");
        assert!(
            t.lines()
                .nth(2)
                .unwrap()
                .starts_with("bravo  100.64.0.2  direct 10.0.0.2:51820  1.5ms"),
            "{t}"
        );
        assert!(t.contains("never"));
        let mut named = s.clone();
        named.me.as_mut().unwrap().dns_name = Some("a.default.zmesh.internal".into());
        named.dns = Some(Box::new(crate::ipc::DnsStatus {
            resolver: "100.64.0.0".parse().unwrap(),
            suffix: "default.zmesh.internal".into(),
        }));
        let t = status_table(&named);
        assert!(
            t.contains("names: default.zmesh.internal (resolver 100.64.0.0), this device is a.default.zmesh.internal"),
            "{t}"
        );
    }
}
