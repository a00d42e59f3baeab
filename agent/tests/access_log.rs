//! The access log end to end, in network namespaces: the real console and three real
//! agents with real TUN devices and real TCP and UDP traffic. Each agent signs its flow
//! reports with its own report key; the console chains them.
//!
//! a reaches b on tcp/7000 (3 x 20 kB up, 1 kB down) and udp/5353 (allowed), and tries
//! tcp/9090 (denied at b); c reaches b on tcp/7000 while c cannot talk to the console (an nftables rule in c's
//! namespace drops its packets to the console), so only b reports that flow. The test
//! checks the access log as an auditor gets it: both ends of a's flows, bytes each way,
//! the rule and policy version that decided, the denied flow with its verdict, c's
//! flow one-sided; then the CSV export parsed by Python's `csv` and the CEF export line
//! by line, and `audit verify` over the chain and every device signature.
//! Needs root and python3; fails instead of skipping when `CI` is set.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::Value;

use support::netns::{lab_or_skip, wait_for, Lab};
use support::tcp::{probe, stays_closed, SERVER};
use support::{Agent, Console};

/// Echoes every UDP datagram on the given port.
const UDP_ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    d, a = s.recvfrom(2048)
    s.sendto(d, a)
"#;

/// Sends `n` datagrams of 200 bytes from one socket and counts the echoes.
const UDP_SEND: &str = r#"
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
got = 0
for i in range(n):
    s.sendto(b"x" * 200, (host, port))
    try:
        s.recvfrom(2048)
        got += 1
    except OSError:
        pass
print(got)
sys.exit(0 if got >= n // 2 else 1)
"#;

/// Reads 20 kB from each connection, then answers 1 kB and closes.
const TCP_SINK: &str = r#"
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
def serve(c):
    got = 0
    c.settimeout(5)
    try:
        while got < 20000:
            d = c.recv(65536)
            if not d:
                break
            got += len(d)
        c.sendall(b"k" * 1000)
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Sends 20 kB over one connection and reads the 1 kB answer.
const TCP_BULK: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
s.sendall(b"y" * 20000)
got = 0
while got < 1000:
    d = s.recv(4096)
    if not d:
        break
    got += len(d)
s.close()
sys.exit(0 if got == 1000 else 1)
"#;

/// Reads an access CSV export with Python's `csv` and prints its access rows as JSON.
const READ_CSV: &str = r#"
import csv, json, sys
rows = [r for r in csv.DictReader(open(sys.argv[1], newline="")) if r["record"] == "access"]
print(json.dumps(rows))
"#;

/// Splits CEF lines into the 7 header fields and the extension (pipes may be escaped
/// with a backslash in the header) and prints them as JSON; fails on a malformed line.
const READ_CEF: &str = r#"
import json, re, sys
out = []
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if not line:
        continue
    assert line.startswith("CEF:0|"), line
    parts = re.split(r"(?<!\\)\|", line, maxsplit=7)
    assert len(parts) == 8, parts
    ext = dict(re.findall(r"(\w+)=((?:[^=\\]|\\.)*?)(?=\s\w+=|$)", parts[7]))
    out.append({"name": parts[5], "ext": ext})
print(json.dumps(out))
"#;

const POLICY: &str = r#"{
  "version": 1,
  "rules": [
    { "src": ["a"], "dst": ["b:7000,8080"], "proto": "tcp" },
    { "src": ["a"], "dst": ["b:5353"], "proto": "udp" },
    { "src": ["c"], "dst": ["b:7000"], "proto": "tcp" }
  ]
}"#;

fn records(console: &Console, lab: &Lab) -> Vec<Value> {
    let out = console.cli(lab, &["audit", "flows", "--limit", "10000", "--json"]);
    serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn access_log_names_both_ends_and_verifies() {
    let Some(mut lab) = lab_or_skip("access_log") else {
        return;
    };
    let mut console = Console::new(&mut lab, Ipv4Addr::new(10, 82, 0, 1));
    let mut agents: Vec<Agent> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| Agent::new(&mut lab, n, Ipv4Addr::new(10, 82, 0, 11 + i as u8)))
        .collect();
    let probe_ns = agents[0].ns.clone();
    console.start(&mut lab, &probe_ns);
    for a in agents.iter_mut() {
        a.start_daemon(&mut lab);
        let key = console.create_key(&lab);
        a.zmesh(
            &lab,
            &[
                "up",
                "--console",
                &console.url(),
                "--enroll-key",
                &key,
                "--name",
                &a.name,
            ],
        );
    }
    let p = lab.dir.path().join("policy.json");
    std::fs::write(&p, POLICY).unwrap();
    console.cli(&lab, &["policy", "set", p.to_str().unwrap()]);
    let (a, b, c) = (&agents[0], &agents[1], &agents[2]);
    for (ag, n) in [(a, 1), (b, 2), (c, 1)] {
        wait_for(
            &format!("{} to have {n} peers", ag.name),
            Duration::from_secs(20),
            Duration::from_millis(100),
            || (ag.peer_names(&lab).len() == n).then_some(()),
        );
    }
    let id = |ag: &Agent| {
        ag.status(&lab)["self"]["device_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (id_a, id_b, id_c) = (id(a), id(b), id(c));
    let ip_b = b.overlay_v4(&lab);
    lab.spawn(
        &b.ns,
        "tcp-server",
        &["python3", "-c", SERVER, "8080", "9090"],
    );
    lab.spawn(&b.ns, "udp-echo", &["python3", "-c", UDP_ECHO, "5353"]);
    lab.spawn(&b.ns, "tcp-sink", &["python3", "-c", TCP_SINK, "7000"]);
    assert!(probe(&lab, a, ip_b, 8080, true, 10.0), "a -> b:8080");

    // c can no longer reach the console: its reports stop (its tunnels do not).
    let rules = lab.dir.path().join("c.nft");
    std::fs::write(
        &rules,
        "table inet zmesh_test {\n  chain out {\n    type filter hook output priority 0;\n    \
         ip daddr 10.82.0.1 tcp dport 8443 drop;\n  }\n}\n",
    )
    .unwrap();
    let o = lab.exec(&c.ns, &["nft", "-f", rules.to_str().unwrap()]);
    assert!(o.status.success(), "nft: {}", support::text(&o));

    // The traffic.
    let ip = ip_b.to_string();
    for _ in 0..3 {
        let o = lab.exec_timeout(
            &a.ns,
            &["python3", "-c", TCP_BULK, &ip, "7000"],
            Duration::from_secs(10),
        );
        assert!(o.status.success(), "a bulk: {}", support::text(&o));
    }
    let o = lab.exec_timeout(
        &a.ns,
        &["python3", "-c", UDP_SEND, &ip, "5353", "10"],
        Duration::from_secs(20),
    );
    assert!(o.status.success(), "a udp: {}", support::text(&o));
    assert!(
        stays_closed(&lab, a, ip_b, 9090, 1.5),
        "a -> b:9090 is denied"
    );
    let o = lab.exec_timeout(
        &c.ns,
        &["python3", "-c", TCP_BULK, &ip, "7000"],
        Duration::from_secs(10),
    );
    assert!(o.status.success(), "c bulk: {}", support::text(&o));

    // The access log as the console has it.
    let find = |v: &[Value], src: &str, port: u64, proto: u64, reporter: &str| -> Option<Value> {
        v.iter()
            .find(|f| {
                f["src_device"] == src
                    && f["dst_device"] == id_b.as_str()
                    && f["dst_port"] == port
                    && f["proto"] == proto
                    && f["reporter"] == reporter
            })
            .cloned()
    };
    let names = [
        "a->b tcp/7000 by a",
        "a->b tcp/7000 by b",
        "a->b udp/5353 by a",
        "a->b udp/5353 by b",
        "a->b tcp/9090 denied by b",
        "c->b tcp/7000 by b",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let all = loop {
        let v = records(&console, &lab);
        let want = [
            find(&v, &id_a, 7000, 6, &id_a),
            find(&v, &id_a, 7000, 6, &id_b),
            find(&v, &id_a, 5353, 17, &id_a),
            find(&v, &id_a, 5353, 17, &id_b),
            find(&v, &id_a, 9090, 6, &id_b),
            find(&v, &id_c, 7000, 6, &id_b),
        ];
        let sent = |reporter: &str| -> u64 {
            v.iter()
                .filter(|f| {
                    f["src_device"] == id_a.as_str()
                        && f["dst_port"] == 7000
                        && f["proto"] == 6
                        && f["reporter"] == reporter
                })
                .map(|f| f["bytes"].as_u64().unwrap_or(0))
                .sum()
        };
        // every record of a's three 20 kB connections, from both ends
        let whole = sent(&id_a) >= 60_000 && sent(&id_b) >= 60_000;
        if want.iter().all(Option::is_some) && whole {
            break v;
        }
        if std::time::Instant::now() > deadline {
            let missing: Vec<&str> = (want.iter().zip(names))
                .filter(|(w, _)| w.is_none())
                .map(|(_, n)| n)
                .collect();
            panic!(
                "within 60 s: no record of {missing:?}; a->b:7000 bytes by a {}, by b {}; the log has:\n{v:#?}",
                sent(&id_a),
                sent(&id_b)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let tcp_a = find(&all, &id_a, 7000, 6, &id_a).unwrap();
    let tcp_b = find(&all, &id_a, 7000, 6, &id_b).unwrap();
    // A connection may span several reporting intervals (one record each): sum them.
    let total = |reporter: &str, field: &str| -> u64 {
        all.iter()
            .filter(|f| {
                f["src_device"] == id_a.as_str()
                    && f["dst_port"] == 7000
                    && f["proto"] == 6
                    && f["reporter"] == reporter
            })
            .map(|f| f[field].as_u64().unwrap())
            .sum()
    };
    for r in [&id_a, &id_b] {
        assert!(
            total(r, "bytes") >= 60_000,
            "a sent 3 x 20 kB: {}",
            total(r, "bytes")
        );
        assert!(total(r, "bytes_back") >= 3000, "b answered 3 x 1 kB");
    }
    for f in [&tcp_a, &tcp_b] {
        assert_eq!(f["verdict"], "accepted", "{f}");
        assert_eq!(f["one_sided"], false, "{f}");
        // the policy set above is the network's first: version 1
        assert_eq!(f["policy_version"].as_u64(), Some(1), "{f}");
        assert!(f["sig"].as_str().is_some_and(|s| !s.is_empty()), "{f}");
    }
    assert_eq!(tcp_a["rule"], "outbound");
    assert_eq!(tcp_b["rule"], "rules[0]");
    let udp_b = find(&all, &id_a, 5353, 17, &id_b).unwrap();
    assert_eq!(udp_b["rule"], "rules[1]", "{udp_b}");
    assert!(udp_b["bytes"].as_u64().unwrap() >= 1000, "{udp_b}");
    let denied = find(&all, &id_a, 9090, 6, &id_b).unwrap();
    assert_eq!(denied["verdict"], "denied", "{denied}");
    let from_c = find(&all, &id_c, 7000, 6, &id_b).unwrap();
    assert_eq!(
        from_c["one_sided"], true,
        "c's reports are stopped: {from_c}"
    );
    assert!(
        !all.iter().any(|f| f["reporter"] == id_c.as_str()),
        "nothing from c reached the console"
    );

    // The CSV export, as an auditor's tools read it.
    let dir = lab.dir.path().to_path_buf();
    let csv = dir.join("access.csv");
    console.cli(
        &lab,
        &[
            "audit",
            "export",
            "--log",
            "access",
            "--format",
            "csv",
            "-o",
            csv.to_str().unwrap(),
        ],
    );
    let o = lab.exec(&c.ns, &["python3", "-c", READ_CSV, csv.to_str().unwrap()]);
    assert!(o.status.success(), "csv: {}", support::text(&o));
    let rows: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let row = |src: &str, port: &str, reporter: &str| {
        rows.iter().find(|r| {
            r["src_name"] == src
                && r["dst_name"] == "b"
                && r["dst_port"] == port
                && r["reporter_name"] == reporter
        })
    };
    let ab = row("a", "7000", "b").expect("a->b:7000 as b reported it, in the CSV");
    assert_eq!(ab["ends"], "both", "{ab}");
    assert_eq!(ab["rule"], "rules[0]", "{ab}");
    assert_eq!(ab["verdict"], "accepted", "{ab}");
    assert!(
        ab["bytes"].as_str().unwrap().parse::<u64>().unwrap() > 0,
        "{ab}"
    );
    assert!(row("a", "7000", "a").is_some(), "a's own record of it");
    let d = row("a", "9090", "b").expect("the denied flow in the CSV");
    assert_eq!(d["verdict"], "denied", "{d}");
    let cb = row("c", "7000", "b").expect("c->b:7000 in the CSV");
    assert_eq!(cb["ends"], "destination only", "{cb}");
    assert_eq!(rows.len(), all.len(), "the CSV has every record");

    // The CEF export parses line by line and carries the same flows.
    let cef = dir.join("access.cef");
    console.cli(
        &lab,
        &[
            "audit",
            "export",
            "--log",
            "access",
            "--format",
            "cef",
            "-o",
            cef.to_str().unwrap(),
        ],
    );
    let o = lab.exec(&c.ns, &["python3", "-c", READ_CEF, cef.to_str().unwrap()]);
    assert!(o.status.success(), "cef: {}", support::text(&o));
    let lines: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l["ext"]["dpt"] == "9090" && l["ext"]["act"] == "denied"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l["ext"]["dpt"] == "7000"), "{lines:?}");

    // The chain and every device signature verify.
    let out = console.cli(&lab, &["audit", "checkpoint"]);
    eprintln!("{out}");
    let out = console.cli(&lab, &["audit", "verify"]);
    assert!(out.contains("access log OK"), "{out}");
    eprintln!("{out}");
    // And offline: a JSONL export with nothing but the console's public key.
    let jsonl = dir.join("access.jsonl");
    console.cli(
        &lab,
        &[
            "audit",
            "export",
            "--log",
            "access",
            "--format",
            "jsonl",
            "-o",
            jsonl.to_str().unwrap(),
        ],
    );
    let key = std::fs::read_to_string(console.data_dir.join("signing.key")).unwrap();
    let public = zmesh_shared::SigningKey::from_base64(key.trim())
        .unwrap()
        .public_key()
        .to_string();
    let out = console.cli(
        &lab,
        &[
            "audit",
            "verify",
            "--file",
            jsonl.to_str().unwrap(),
            "--public-key",
            &public,
        ],
    );
    eprintln!("{out}");
    let mut forged = std::fs::read_to_string(&jsonl).unwrap();
    let at = forged.find("\"bytes\":").expect("a record in the export");
    forged.insert(at + "\"bytes\":".len(), '9');
    std::fs::write(&jsonl, forged).unwrap();
    let bin = support::console_bin();
    let o = lab.exec(
        &c.ns,
        &[
            bin.to_str().unwrap(),
            "audit",
            "verify",
            "--file",
            jsonl.to_str().unwrap(),
            "--public-key",
            &public,
        ],
    );
    assert!(
        !o.status.success(),
        "an edited export verifies: {}",
        support::text(&o)
    );
    eprintln!("edited export: {}", support::text(&o).trim());

    for ag in agents.iter_mut() {
        ag.stop_daemon(&mut lab);
    }
    console.kill(&mut lab);
}
