//! Subnet routers and exit nodes end to end: the real console and five real agents in
//! network namespaces (client `c`, routers `r1` and `r2`, exit node `x`), a "LAN"
//! namespace 10.1.0.0/24 behind both routers with an HTTP server that answers with the
//! address it sees, and an "internet" namespace behind the exit node.
//!
//! Checked: a route advertised but not approved carries nothing; once an admin approves
//! it (`zmesh-console routes approve`), c reaches the LAN server, which sees the
//! router's LAN address (source NAT); a port the policy does not allow is dropped at the
//! router; a second router for the prefix takes over when the first one dies (the time
//! is printed); bad advertisements are refused by `up` and change nothing; an exit node
//! that is not approved is refused; once approved, c reaches the "internet" server
//! through it (which sees the exit node's address), its tunnel keeps working (no routing
//! loop: the WireGuard socket is marked and the console kept on the underlay); `down`
//! leaves `ip rule` and every routing table exactly as before `up`, and so does a
//! daemon restarted after being killed while the exit node was in use.
//! Needs root; fails instead of skipping when `CI` is set (see `support::netns`).

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use support::netns::{lab_or_skip, wait_for, Lab};
use support::{text, Agent, Console};

/// Answers every GET with the client address it sees.
const WHO: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

/// One GET with a 2 s timeout: the body, or `None`.
const GET: &str = r#"
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())
except Exception as e:
    print("ERR", e)
    sys.exit(1)
"#;

fn get(lab: &Lab, ns: &str, url: &str) -> Option<String> {
    let out = lab.exec_timeout(ns, &["python3", "-c", GET, url], Duration::from_secs(10));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A veth pair between two namespaces with an address on each end.
fn link(lab: &Lab, a: (&str, &str, &str), b: (&str, &str, &str)) {
    lab.exec_ok(
        a.0,
        &[
            "ip", "link", "add", a.1, "type", "veth", "peer", "name", b.1, "netns", b.0,
        ],
    )
    .unwrap();
    for (ns, dev, addr) in [a, b] {
        if !addr.is_empty() {
            lab.exec_ok(ns, &["ip", "addr", "add", addr, "dev", dev])
                .unwrap();
        }
        lab.exec_ok(ns, &["ip", "link", "set", dev, "up"]).unwrap();
    }
}

/// `ip rule` and every routing table of a namespace, for before/after comparisons.
/// The kernel's own IPv6 link-local entries are left out: they appear by themselves
/// when duplicate address detection ends, whatever zmesh does.
fn routing(lab: &Lab, ns: &str) -> String {
    let mut s = String::new();
    for args in [
        &["ip", "-4", "rule"][..],
        &["ip", "-6", "rule"],
        &["ip", "-4", "route", "show", "table", "all"],
        &["ip", "-6", "route", "show", "table", "all"],
    ] {
        for l in text(&lab.exec(ns, args)).lines() {
            if !l.contains("fe80:") {
                s.push_str(l);
                s.push('\n');
            }
        }
    }
    s
}

fn peer<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

const POLICY: &str = r#"{
  "version": 1,
  "hosts": { "lan": "10.1.0.0/24" },
  "rules": [
    { "src": ["c"], "dst": ["lan:8080"], "proto": "tcp", "description": "c uses the LAN web server" },
    { "src": ["c"], "dst": ["autogroup:internet:*"], "description": "c may use exit nodes" },
    { "src": ["*"], "dst": ["*:*"], "proto": "icmp" },
  ],
}"#;

#[test]
fn subnet_routers_failover_and_exit_nodes() {
    let Some(mut lab) = lab_or_skip("routes_netns") else {
        return;
    };
    let mut console = Console::new(&mut lab, Ipv4Addr::new(10, 81, 0, 1));
    let names = ["c", "r1", "r2", "x"];
    let mut agents: Vec<Agent> = names
        .iter()
        .enumerate()
        .map(|(i, n)| Agent::new(&mut lab, n, Ipv4Addr::new(10, 81, 0, 11 + i as u8)))
        .collect();
    // The LAN: a bridge namespace holding the server at 10.1.0.5 (no default route:
    // it can only answer the routers' LAN addresses), wired to both routers.
    let lan = lab.add_ns().unwrap();
    lab.exec_ok(&lan, &["ip", "link", "add", "br1", "type", "bridge"])
        .unwrap();
    lab.exec_ok(&lan, &["ip", "addr", "add", "10.1.0.5/24", "dev", "br1"])
        .unwrap();
    lab.exec_ok(&lan, &["ip", "link", "set", "br1", "up"])
        .unwrap();
    for (i, r) in [&agents[1], &agents[2]].iter().enumerate() {
        let host_if = format!("l{i}");
        link(
            &lab,
            (&lan, &host_if, ""),
            (&r.ns, "eth1", &format!("10.1.0.{}/24", 2 + i)),
        );
        lab.exec_ok(&lan, &["ip", "link", "set", &host_if, "master", "br1"])
            .unwrap();
    }
    // The internet behind the exit node.
    let inet = lab.add_ns().unwrap();
    link(
        &lab,
        (&inet, "eth0", "198.51.100.10/24"),
        (&agents[3].ns, "eth1", "198.51.100.1/24"),
    );
    lab.spawn(&lan, "lan-web", &["python3", "-c", WHO, "10.1.0.5", "8080"]);
    lab.spawn(
        &lan,
        "lan-other",
        &["python3", "-c", WHO, "10.1.0.5", "9090"],
    );
    lab.spawn(
        &inet,
        "inet-web",
        &["python3", "-c", WHO, "198.51.100.10", "8080"],
    );
    // A server on the shared underlay LAN (in r2's namespace), for --exit-node-allow-lan.
    lab.spawn(
        &agents[2].ns,
        "underlay-web",
        &["python3", "-c", WHO, "10.81.0.13", "8081"],
    );

    let probe_ns = agents[0].ns.clone();
    console.start(&mut lab, &probe_ns);
    let before_c = routing(&lab, &agents[0].ns);
    let pfile = lab.dir.path().join("policy.json");
    std::fs::write(&pfile, POLICY).unwrap();
    for a in agents.iter_mut() {
        let extra: &[&str] = if a.name.starts_with('r') {
            &["--advertise-routes", "10.1.0.0/24"]
        } else {
            &[]
        };
        a.join(&mut lab, &console, extra);
    }
    console.cli(&lab, &["policy", "set", pfile.to_str().unwrap()]);
    let c = &agents[0];
    wait_for(
        "c to see its peers",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || (c.peer_names(&lab).len() == 3).then_some(()),
    );

    // ---- advertised, not approved: nothing ----
    let s = c.status(&lab);
    assert!(
        peer(&s, "r1")
            .is_some_and(|p| p["routes"].is_null() || p["routes"] == serde_json::json!([])),
        "an unapproved route is offered to no one: {s}"
    );
    assert!(
        get(&lab, &c.ns, "http://10.1.0.5:8080/").is_none(),
        "unapproved routes carry nothing"
    );
    let listed = console.cli(&lab, &["routes", "list"]);
    assert!(
        listed.contains("10.1.0.0/24") && listed.contains("r1"),
        "{listed}"
    );

    // ---- approved on r1: c reaches the LAN, the server sees r1 ----
    console.cli(&lab, &["routes", "approve", "r1", "10.1.0.0/24"]);
    let t0 = Instant::now();
    let seen = wait_for(
        "c to reach the LAN through r1",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || get(&lab, &c.ns, "http://10.1.0.5:8080/"),
    );
    println!(
        "LAN reachable {} ms after approval",
        t0.elapsed().as_millis()
    );
    assert_eq!(seen, "10.1.0.2", "source NAT: the server sees the router");
    assert!(
        get(&lab, &c.ns, "http://10.1.0.5:9090/").is_none(),
        "a port the policy does not allow is dropped"
    );
    let human = c.zmesh(&lab, &["status"]);
    assert!(human.contains("via r1: 10.1.0.0/24 (primary)"), "{human}");
    let own = agents[1].zmesh(&lab, &["status"]);
    assert!(own.contains("advertising 10.1.0.0/24 (approved)"), "{own}");
    let st = agents[2].status(&lab);
    assert_eq!(
        st["routes"]["advertised"],
        serde_json::json!(["10.1.0.0/24"])
    );
    assert_eq!(
        st["routes"]["approved"],
        serde_json::json!([]),
        "r2 waits: {st}"
    );

    // ---- failover: r2 offers the same prefix; the carrier dies, the other takes over ----
    console.cli(&lab, &["routes", "approve", "r2", "10.1.0.0/24"]);
    wait_for(
        "c to learn r2's route",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let s = c.status(&lab);
            peer(&s, "r2")
                .filter(|p| p["routes"] == serde_json::json!(["10.1.0.0/24"]))
                .map(|_| ())
        },
    );
    let s = c.status(&lab);
    let primary = ["r1", "r2"]
        .into_iter()
        .find(|n| {
            peer(&s, n).is_some_and(|p| p["primary_routes"] == serde_json::json!(["10.1.0.0/24"]))
        })
        .unwrap_or_else(|| panic!("one primary: {s}"));
    assert_eq!(primary, "r1", "the carrier that works stays (no flapping)");
    let pid = agents[1].pid.take().unwrap();
    lab.kill(pid);
    let t0 = Instant::now();
    let (c, x) = (&agents[0], &agents[3]);
    let seen = wait_for(
        "the LAN through r2",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || get(&lab, &c.ns, "http://10.1.0.5:8080/").filter(|s| s == "10.1.0.3"),
    );
    let took = t0.elapsed();
    println!("failover to r2 took {} ms", took.as_millis());
    assert_eq!(seen, "10.1.0.3");

    // ---- bad input changes nothing ----
    for (bad, why) in [
        ("100.64.1.0/24", "overlaps"),
        ("0.0.0.0/0", "--advertise-exit-node"),
        ("10.9.0.1/24", "host bits"),
        ("nonsense", "not a prefix"),
    ] {
        let out = c.try_zmesh(&lab, &["up", "--advertise-routes", bad]);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(text(&out).contains(why), "{bad}: {}", text(&out));
    }
    assert_eq!(
        c.status(&lab)["routes"]["advertised"],
        serde_json::json!([])
    );

    // ---- exit node: refused until approved, then all traffic goes through it ----
    x.zmesh(&lab, &["up", "--advertise-exit-node"]);
    let out = c.try_zmesh(&lab, &["up", "--exit-node", "x"]);
    assert!(!out.status.success(), "an unapproved exit node is refused");
    assert!(text(&out).contains("not offered"), "{}", text(&out));
    assert!(
        get(&lab, &c.ns, "http://198.51.100.10:8080/").is_none(),
        "no route to the internet yet"
    );
    console.cli(&lab, &["routes", "approve", "x", "0.0.0.0/0"]);
    console.cli(&lab, &["routes", "approve", "x", "::/0"]);
    wait_for(
        "x offered as an exit node",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let s = c.status(&lab);
            (peer(&s, "x")?["exit_node"] == true).then_some(())
        },
    );
    c.zmesh(&lab, &["up", "--exit-node", "x"]);
    let seen = wait_for(
        "the internet through x",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || get(&lab, &c.ns, "http://198.51.100.10:8080/"),
    );
    assert_eq!(seen, "198.51.100.1", "the internet sees the exit node");
    let x_ip = x.overlay_v4(&lab);
    assert!(
        c.ping(&lab, x_ip, 2),
        "the tunnel keeps working with all traffic in it"
    );
    assert!(
        get(&lab, &c.ns, "http://10.1.0.5:8080/").is_some(),
        "subnet routes still win"
    );
    let s = c.status(&lab);
    assert_eq!(s["routes"]["exit_node"], "x");
    assert_eq!(s["routes"]["exit_node_active"], true);
    // the local network too goes through the exit node (it answers from x) ...
    let seen = get(&lab, &c.ns, "http://10.81.0.13:8081/");
    assert_eq!(
        seen.as_deref(),
        Some("10.81.0.14"),
        "the LAN through the exit node"
    );
    // ... unless the local networks are kept direct
    c.zmesh(&lab, &["up", "--exit-node-allow-lan"]);
    let seen = wait_for(
        "the LAN directly",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || get(&lab, &c.ns, "http://10.81.0.13:8081/").filter(|s| s == "10.81.0.11"),
    );
    assert_eq!(seen, "10.81.0.11");
    assert_eq!(
        get(&lab, &c.ns, "http://198.51.100.10:8080/").as_deref(),
        Some("198.51.100.1"),
        "the internet still goes through the exit node"
    );

    // ---- down restores the routing exactly ----
    c.zmesh(&lab, &["down"]);
    assert_eq!(
        routing(&lab, &c.ns),
        before_c,
        "down leaves ip rule and every table as before"
    );

    // ---- a crash with the exit node in use: the next daemon cleans up ----
    c.zmesh(&lab, &["up"]);
    wait_for(
        "the internet through x again",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || get(&lab, &c.ns, "http://198.51.100.10:8080/"),
    );
    let pid = agents[0].pid.take().unwrap();
    lab.kill(pid);
    let c = &mut agents[0];
    let left = routing(&lab, &c.ns);
    assert!(
        left.contains("5250:"),
        "a killed daemon leaves its rules behind: {left}"
    );
    // The restarted daemon removes them first, then (the device was up) brings the
    // tunnels and the exit node back: one set of rules, not two.
    c.start_daemon(&mut lab);
    wait_for(
        "the exit node in use after the restart",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || get(&lab, &c.ns, "http://198.51.100.10:8080/"),
    );
    let now = text(&lab.exec(&c.ns, &["ip", "-4", "rule"]));
    assert_eq!(now.matches("5250:").count(), 1, "no duplicate rules: {now}");
    c.zmesh(&lab, &["down"]);
    assert_eq!(
        routing(&lab, &c.ns),
        before_c,
        "down after the restart restores everything"
    );
}
