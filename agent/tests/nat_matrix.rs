//! The namespace NAT matrix: the real console (STUN responder and relay on its public
//! address) and real agents (`zmesh daemon` + `zmesh up`) behind NATs made with nftables
//! in router namespaces, on a bridge that plays the internet (192.0.2.0/24).
//!
//! NATs: "home" = `masquerade` (Linux keeps the source port: endpoint-independent
//! mapping), "symmetric" = `masquerade fully-random` (a new port per destination); both
//! filter port-dependently (only replies to what went out come in), drop unsolicited
//! inbound and do not hairpin. Cases, run one after another on one console:
//! public<->public, home<->home and home<->public go direct; symmetric<->symmetric goes
//! through the relay; with UDP dropped at one side's router, the relay over TCP; two
//! devices behind one NAT use their local addresses; a device that moves to another
//! network (new underlay and public address) mid-transfer recovers. Each case prints the
//! time to the first packet over the overlay and to a confirmed direct path.
//!
//! Needs root, `ip` and `nft`; fails instead of skipping when `CI` is set.

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use support::netns::{lab_or_skip, wait_for, Lab};
use support::{console_bin, has_binary, text, wait_tcp, Agent};

const CONSOLE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Nat {
    /// Endpoint-independent mapping (home router).
    Home,
    /// Endpoint-dependent mapping (symmetric NAT).
    Symmetric,
}

struct Router {
    ns: String,
    /// LAN is 10.<lan>.0.0/24, the router is .1.
    lan: u8,
    hosts: u32,
}

/// `zmesh netcheck` with no flags (the daemon's STUN servers: the console's two ports
/// and its relay), retried until the console's NAT settings have arrived; checks the
/// mapping line and that the relay answers.
fn netcheck_mapping(lab: &Lab, agent: &Agent, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = agent.try_zmesh(lab, &["netcheck", "--timeout", "2s"]);
        if out.status.success() || Instant::now() >= deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let t = text(&out);
    eprintln!("zmesh netcheck on {}:\n{t}", agent.name);
    assert!(out.status.success(), "netcheck on {}: {t}", agent.name);
    assert!(
        t.contains(&format!("stun {CONSOLE_IP}:3478: mapped"))
            && t.contains(&format!("stun {CONSOLE_IP}:3479: mapped")),
        "netcheck on {} did not use both console STUN ports: {t}",
        agent.name
    );
    assert!(
        t.contains(&format!("mapping: {want}\n")),
        "{}: want {want}: {t}",
        agent.name
    );
    assert!(
        t.contains(&format!("relay console {CONSOLE_IP}:8445: ")) && !t.contains("unreachable"),
        "{}: relay latency missing: {t}",
        agent.name
    );
}

fn nft_rules(nat: Nat, block_udp: bool) -> String {
    let masq = match nat {
        Nat::Home => "masquerade",
        Nat::Symmetric => "masquerade fully-random",
    };
    let block = if block_udp {
        "        meta l4proto udp drop\n"
    } else {
        ""
    };
    format!(
        r#"table ip zmnat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth0" {masq}
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
{block}        iifname "eth0" ct state established,related accept
        iifname "eth0" drop
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "eth0" ct state established,related accept
        iifname "eth0" drop
    }}
}}
"#
    )
}

struct Matrix {
    lab: Lab,
    console_ns: String,
    data_dir: std::path::PathBuf,
    next_veth: u32,
    results: Vec<String>,
}

impl Matrix {
    fn router(&mut self, wan: Ipv4Addr, lan: u8, nat: Nat, block_udp: bool) -> Router {
        let ns = self.lab.add_node(wan).expect("router namespace");
        let l = &self.lab;
        l.exec_ok(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            .unwrap();
        l.exec_ok(&ns, &["ip", "link", "add", "brlan", "type", "bridge"])
            .unwrap();
        l.exec_ok(
            &ns,
            &[
                "ip",
                "addr",
                "add",
                &format!("10.{lan}.0.1/24"),
                "dev",
                "brlan",
            ],
        )
        .unwrap();
        l.exec_ok(&ns, &["ip", "link", "set", "brlan", "up"])
            .unwrap();
        let rules = self.lab.dir.path().join(format!("{ns}.nft"));
        std::fs::write(&rules, nft_rules(nat, block_udp)).unwrap();
        l.exec_ok(&ns, &["nft", "-f", rules.to_str().unwrap()])
            .unwrap();
        Router { ns, lan, hosts: 1 }
    }

    /// Plugs `host_ns` into the router's LAN with the next free address; returns it.
    fn plug(&mut self, r: &mut Router, host_ns: &str) -> Ipv4Addr {
        r.hosts += 1;
        let ip = Ipv4Addr::new(10, r.lan, 0, r.hosts as u8);
        let veth = format!("l{}", self.next_veth);
        self.next_veth += 1;
        let l = &self.lab;
        l.exec_ok(
            &r.ns,
            &[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                host_ns,
            ],
        )
        .unwrap();
        l.exec_ok(&r.ns, &["ip", "link", "set", &veth, "master", "brlan"])
            .unwrap();
        l.exec_ok(&r.ns, &["ip", "link", "set", &veth, "up"])
            .unwrap();
        l.exec_ok(
            host_ns,
            &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        )
        .unwrap();
        l.exec_ok(host_ns, &["ip", "link", "set", "eth0", "up"])
            .unwrap();
        l.exec_ok(
            host_ns,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("10.{}.0.1", r.lan),
            ],
        )
        .unwrap();
        ip
    }

    fn public_agent(&mut self, name: &str, ip: Ipv4Addr) -> Agent {
        let mut a = Agent::new(&mut self.lab, name, ip);
        self.up(&mut a);
        a
    }

    fn natted_agent(&mut self, name: &str, r: &mut Router) -> Agent {
        let ns = self.lab.add_ns().expect("host namespace");
        let ip = self.plug(r, &ns);
        let mut a = Agent {
            name: name.to_string(),
            ns,
            underlay: ip,
            state_dir: self.lab.dir.path().join(format!("state-{name}")),
            pid: None,
            host_dns: "off",
            daemon_args: vec![],
        };
        self.up(&mut a);
        a
    }

    fn create_key(&self) -> String {
        let bin = console_bin();
        let out = self.lab.exec_timeout(
            &self.console_ns,
            &[
                bin.to_str().unwrap(),
                "keys",
                "create",
                "--data-dir",
                self.data_dir.to_str().unwrap(),
            ],
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "keys create: {}", text(&out));
        support::find_enroll_key(&String::from_utf8_lossy(&out.stdout)).expect("enroll key")
    }

    fn up(&mut self, a: &mut Agent) {
        a.start_daemon(&mut self.lab);
        let key = self.create_key();
        let url = format!("https://{CONSOLE_IP}:8443");
        a.zmesh(
            &self.lab,
            &[
                "up",
                "--console",
                &url,
                "--enroll-key",
                &key,
                "--name",
                &a.name,
            ],
        );
    }

    /// One ping over the overlay, waiting at most 1 s for the reply.
    fn ping1(&self, from: &Agent, to: Ipv4Addr) -> bool {
        self.lab
            .exec_timeout(
                &from.ns,
                &["ping", "-n", "-q", "-c", "1", "-W", "1", &to.to_string()],
                Duration::from_secs(5),
            )
            .status
            .success()
    }

    /// `from`'s view of `peer`: (path, via, rtt_ms).
    fn path(&self, from: &Agent, peer: &str) -> (String, String, Option<f64>) {
        let s = from.status(&self.lab);
        let p = s["peers"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == peer).cloned())
            .unwrap_or_default();
        (
            p["path"].as_str().unwrap_or("-").to_string(),
            p["via"].as_str().unwrap_or("-").to_string(),
            p["rtt_ms"].as_f64(),
        )
    }

    /// Time until a ping from `a` to `b` gets through, measured from `t0`. Each try
    /// waits 250 ms for its reply (every path here answers well within that), so a
    /// lost echo costs a quarter second of resolution, not a whole one.
    fn first_packet(&self, a: &Agent, b_ip: Ipv4Addr, t0: Instant, limit: Duration) -> Duration {
        wait_for(
            &format!("first ping {} -> {b_ip}", a.name),
            limit,
            Duration::from_millis(20),
            || {
                self.lab
                    .exec_timeout(
                        &a.ns,
                        &[
                            "ping",
                            "-n",
                            "-q",
                            "-c",
                            "1",
                            "-W",
                            "0.25",
                            &b_ip.to_string(),
                        ],
                        Duration::from_secs(5),
                    )
                    .status
                    .success()
                    .then(|| t0.elapsed())
            },
        )
    }

    /// Time until `a` has a probed direct path to `b` whose address satisfies `via_ok`.
    fn direct(
        &self,
        a: &Agent,
        b: &str,
        t0: Instant,
        limit: Duration,
        via_ok: impl Fn(&str) -> bool,
    ) -> (Duration, String, f64) {
        wait_for(
            &format!("{} to have a direct path to {b}", a.name),
            limit,
            Duration::from_millis(200),
            || {
                let (path, via, rtt) = self.path(a, b);
                (path == "direct" && via_ok(&via))
                    .then_some(())
                    .and(rtt.map(|r| (t0.elapsed(), via, r)))
            },
        )
    }

    fn record(&mut self, case: &str, first: Duration, direct: Option<Duration>, path: &str) {
        let line = format!(
            "{case:<36} first packet {:>6.2}s  direct path {:>8}  final path: {path}",
            first.as_secs_f64(),
            direct.map_or("never".to_string(), |d| format!("{:.2}s", d.as_secs_f64()))
        );
        eprintln!("NAT-MATRIX {line}");
        self.results.push(line);
    }

    /// A case that must go direct in both directions.
    fn direct_case(&mut self, case: &str, a: &Agent, b: &Agent, t0: Instant, want_via: &str) {
        let b_ip = b.overlay_v4(&self.lab);
        let first = self.first_packet(a, b_ip, t0, Duration::from_secs(30));
        let (d, via, rtt) = self.direct(a, &b.name, t0, Duration::from_secs(30), |v| {
            v.starts_with(want_via)
        });
        let (_, via_back, _) = self.direct(b, &a.name, t0, Duration::from_secs(30), |_| true);
        assert!(self.ping1(a, b_ip), "{case}: ping after the direct path");
        self.record(
            case,
            first,
            Some(d),
            &format!("direct {via} (back: {via_back}), rtt {rtt:.2} ms"),
        );
    }

    fn stop(&mut self, agents: &mut [&mut Agent]) {
        for a in agents.iter_mut() {
            let _ = a.try_zmesh(&self.lab, &["down"]);
            a.stop_daemon(&mut self.lab);
        }
    }
}

/// A relayed case: traffic flows, both sides say "relay console", and no direct path
/// appears during a full probe burst.
fn relay_case(m: &mut Matrix, case: &str, a: &Agent, b: &Agent, t0: Instant) {
    let b_ip = b.overlay_v4(&m.lab);
    let first = m.first_packet(a, b_ip, t0, Duration::from_secs(30));
    let settle = Instant::now();
    wait_for(
        &format!("{case}: both sides on the relay"),
        Duration::from_secs(15),
        Duration::from_millis(200),
        || {
            let (pa, va, _) = m.path(a, &b.name);
            let (pb, vb, _) = m.path(b, &a.name);
            (pa == "relay" && va == "console" && pb == "relay" && vb == "console").then_some(())
        },
    );
    // The probes of a whole burst (5 s) find nothing: still relayed.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(settle.elapsed()));
    let (pa, va, _) = m.path(a, &b.name);
    assert_eq!((pa.as_str(), va.as_str()), ("relay", "console"), "{case}");
    for _ in 0..3 {
        assert!(m.ping1(a, b_ip), "{case}: ping through the relay");
    }
    m.record(case, first, None, "relay console");
}

#[test]
fn nat_matrix() {
    if !has_binary("nft") {
        assert!(
            std::env::var_os("CI").is_none(),
            "nat_matrix: nft (nftables) is required in CI"
        );
        eprintln!("NOTICE: skipping nat_matrix: needs nft");
        return;
    }
    let Some(mut lab) = lab_or_skip("nat_matrix") else {
        return;
    };
    let started = Instant::now();
    let console_ns = lab.add_node(CONSOLE_IP).expect("console namespace");
    let data_dir = lab.dir.path().join("console-data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let bin = console_bin();
    lab.spawn(
        &console_ns,
        "console",
        &[
            bin.to_str().unwrap(),
            "serve",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen",
            &format!("{CONSOLE_IP}:8443"),
            "--stun-listen",
            "0.0.0.0:3478",
            "--relay-listen",
            "0.0.0.0:8445",
        ],
    );
    wait_tcp(&lab, &console_ns, CONSOLE_IP, 8443, Duration::from_secs(30));
    let mut m = Matrix {
        lab,
        console_ns,
        data_dir,
        next_veth: 0,
        results: vec![],
    };

    // public <-> public
    let mut p1 = m.public_agent("pub1", Ipv4Addr::new(192, 0, 2, 11));
    let mut p2 = m.public_agent("pub2", Ipv4Addr::new(192, 0, 2, 12));
    let t0 = Instant::now();
    m.direct_case("public <-> public", &p1, &p2, t0, "192.0.2.12:");
    let table = p1.zmesh(&m.lab, &["status"]);
    eprintln!("zmesh status on pub1:\n{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("pub2 ") && l.contains(" direct 192.0.2.12:51820 ")),
        "{table}"
    );
    m.stop(&mut [&mut p1]);

    // home <-> home (two endpoint-independent NATs)
    let mut r1 = m.router(Ipv4Addr::new(192, 0, 2, 21), 1, Nat::Home, false);
    let mut r2 = m.router(Ipv4Addr::new(192, 0, 2, 22), 2, Nat::Home, false);
    let mut h1 = m.natted_agent("home1", &mut r1);
    let mut h2 = m.natted_agent("home2", &mut r2);
    let t0 = Instant::now();
    m.direct_case("home <-> home", &h1, &h2, t0, "192.0.2.22:");
    netcheck_mapping(&m.lab, &h1, "endpoint-independent");

    // home <-> public (pub2 is still up)
    let mut h4 = m.natted_agent("home4", &mut r1);
    let t0 = Instant::now();
    m.direct_case("home <-> public", &h4, &p2, t0, "192.0.2.12:");
    m.stop(&mut [&mut h4]);

    // two devices behind one NAT talk over the LAN (no hairpin needed)
    let mut h3 = m.natted_agent("home3", &mut r1);
    let t0 = Instant::now();
    m.direct_case("same NAT (local addresses)", &h3, &h1, t0, "10.1.0.");
    m.stop(&mut [&mut h3]);

    // symmetric <-> symmetric: only the relay works
    let mut s1r = m.router(Ipv4Addr::new(192, 0, 2, 31), 3, Nat::Symmetric, false);
    let mut s2r = m.router(Ipv4Addr::new(192, 0, 2, 32), 4, Nat::Symmetric, false);
    let mut s1 = m.natted_agent("sym1", &mut s1r);
    let mut s2 = m.natted_agent("sym2", &mut s2r);
    let t0 = Instant::now();
    relay_case(&mut m, "symmetric <-> symmetric", &s1, &s2, t0);
    netcheck_mapping(&m.lab, &s1, "endpoint-dependent");
    let table = s1.zmesh(&m.lab, &["status"]);
    eprintln!("zmesh status on sym1:\n{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("sym2 ") && l.contains(" relay console ")),
        "{table}"
    );
    let s2_ip = s2.overlay_v4(&m.lab);
    // Revoking sym2 takes it off the relay at once (the console's relay hears it on
    // the change bus) and sym1 can no longer reach it.
    let bin = console_bin();
    let out = m.lab.exec_timeout(
        &m.console_ns,
        &[
            bin.to_str().unwrap(),
            "devices",
            "revoke",
            "sym2",
            "--data-dir",
            m.data_dir.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "devices revoke: {}", text(&out));
    wait_for(
        "the relay to drop revoked sym2",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            std::fs::read_to_string(m.lab.log_path("console"))
                .unwrap_or_default()
                .contains("relay dropped a revoked device")
                .then_some(())
        },
    );
    assert!(!m.ping1(&s1, s2_ip), "revoked sym2 still reachable");
    m.stop(&mut [&mut s1, &mut s2]);

    // UDP blocked at one side's router: the relay over TLS/TCP
    let mut br = m.router(Ipv4Addr::new(192, 0, 2, 41), 5, Nat::Home, true);
    let mut blocked = m.natted_agent("udpblocked", &mut br);
    let t0 = Instant::now();
    relay_case(
        &mut m,
        "UDP blocked <-> public (relay/TCP)",
        &blocked,
        &p2,
        t0,
    );
    m.stop(&mut [&mut blocked]);

    // home1 moves from r1's LAN to r2's LAN while pinging pub2, then back: its old
    // underlay address disappears with its link, a new one comes with a new link.
    let (_, via_before, _) = m.direct(&p2, "home1", Instant::now(), Duration::from_secs(30), |v| {
        v.starts_with("192.0.2.21:")
    });
    let mut moves = vec![move_host(
        &mut m,
        &mut h1,
        &mut r2,
        &p2,
        "address change (r1 -> r2)",
        "192.0.2.22:",
        &via_before,
    )];
    let (_, via_before, _) = m.direct(&p2, "home1", Instant::now(), Duration::from_secs(30), |v| {
        v.starts_with("192.0.2.22:")
    });
    moves.push(move_host(
        &mut m,
        &mut h1,
        &mut r1,
        &p2,
        "address change (r2 -> r1)",
        "192.0.2.21:",
        &via_before,
    ));

    m.stop(&mut [&mut h1, &mut h2, &mut p2]);
    eprintln!(
        "\n===== NAT matrix ({:.1}s) =====",
        started.elapsed().as_secs_f64()
    );
    for l in &m.results {
        eprintln!("{l}");
    }
    let _ = (&r1, &r2, &s1r, &s2r, &br);
    // Issue 17: a moved device's first packet within 1 s, a direct path within 2 s.
    for (case, first, direct) in moves {
        assert!(
            first <= Duration::from_secs(1) && direct <= Duration::from_secs(2),
            "{case}: first packet after {first:?} (want <= 1 s), direct after {direct:?} (want <= 2 s)"
        );
    }
}

/// Moves `h` (pinging `peer` all along) onto router `to`'s LAN: its link, and with it
/// its underlay address, is deleted, and a new one plugged in. Records and returns the
/// time from the unplug to the first ping through and to `peer` seeing `h` directly at
/// an address starting with `want_via`.
fn move_host(
    m: &mut Matrix,
    h: &mut Agent,
    to: &mut Router,
    peer: &Agent,
    case: &str,
    want_via: &str,
    via_before: &str,
) -> (String, Duration, Duration) {
    let peer_ip = peer.overlay_v4(&m.lab);
    let log = format!("move-ping-{}", to.lan);
    let pinger = m.lab.spawn(
        &h.ns,
        &log,
        &["ping", "-n", "-i", "0.2", "-w", "25", &peer_ip.to_string()],
    );
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    m.lab
        .exec_ok(&h.ns, &["ip", "link", "del", "eth0"])
        .unwrap();
    let new_ip = m.plug(to, &h.ns.clone());
    h.underlay = new_ip;
    let first = m.first_packet(h, peer_ip, t0, Duration::from_secs(30));
    let (d, via, _) = m.direct(peer, &h.name, t0, Duration::from_secs(40), |v| {
        v.starts_with(want_via)
    });
    m.record(
        case,
        first,
        Some(d),
        &format!("direct {via} (was {via_before})"),
    );
    // SIGINT makes ping print its summary.
    // SAFETY: kill(2) on a process this test spawned and has not reaped.
    unsafe { libc::kill(pinger as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(300));
    m.lab.stop(pinger, Duration::from_secs(1));
    let out = std::fs::read_to_string(m.lab.log_path(&log)).unwrap_or_default();
    eprintln!(
        "ping during the move ({case}): {}",
        out.lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or("(no summary)")
    );
    (case.to_string(), first, d)
}
