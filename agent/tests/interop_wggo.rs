//! Interoperability with stock WireGuard: an agentless device registered on the real
//! console runs `wireguard-go` configured from `zmesh-console devices export-config`;
//! the zmesh agent must complete a handshake with it and carry ping both ways.
//! Needs root, `wireguard-go` and `wg` (Debian: wireguard-go, wireguard-tools).

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use support::netns::{lab_or_skip, wait_for};
use support::{has_binary, Agent, Console, WireguardGo};

/// wg-quick keys that `wg setconf` does not understand.
const WG_QUICK_ONLY: &[&str] = &[
    "address",
    "dns",
    "mtu",
    "table",
    "preup",
    "postup",
    "predown",
    "postdown",
    "saveconfig",
];

struct Converted {
    setconf: String,
    addresses: Vec<String>,
    routes: Vec<String>,
}

/// Turns an exported wg-quick config into `wg setconf` input plus the addresses and
/// routes `ip` must add (what wg-quick would do), inserting our private key.
fn convert(cfg: &str, private_key: &str) -> Converted {
    let mut out = Vec::new();
    let (mut addresses, mut routes) = (Vec::new(), Vec::new());
    let mut section = String::new();
    let mut have_key = false;
    for line in cfg.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.starts_with('[') {
            section = t.to_ascii_lowercase();
            out.push(t.to_string());
            if section == "[interface]" {
                out.push(format!("PrivateKey = {private_key}"));
                have_key = true;
            }
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            continue;
        };
        let key = k.trim().to_ascii_lowercase();
        let vals = || {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        if section == "[interface]" && key == "address" {
            addresses.extend(vals());
        }
        if section == "[peer]" && key == "allowedips" {
            routes.extend(vals());
        }
        if WG_QUICK_ONLY.contains(&key.as_str()) || key == "privatekey" {
            continue;
        }
        out.push(format!("{} = {}", k.trim(), v.trim()));
    }
    assert!(
        have_key,
        "exported config has no [Interface] section:\n{cfg}"
    );
    Converted {
        setconf: out.join("\n") + "\n",
        addresses,
        routes,
    }
}

#[test]
fn agent_interoperates_with_wireguard_go() {
    let Some(mut lab) = lab_or_skip("interop_wggo") else {
        return;
    };
    if !has_binary("wireguard-go") || !has_binary("wg") {
        let msg =
            "interop_wggo needs wireguard-go and wg (apt-get install wireguard-go wireguard-tools)";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("NOTICE: skipping: {msg}");
        return;
    }
    let mut console = Console::new(&mut lab, Ipv4Addr::new(10, 78, 0, 1));
    let mut agent = Agent::new(&mut lab, "a", Ipv4Addr::new(10, 78, 0, 11));
    let wg_ns = lab
        .add_node(Ipv4Addr::new(10, 78, 0, 21))
        .expect("wireguard-go namespace");
    console.start(&mut lab, &agent.ns.clone());
    agent.start_daemon(&mut lab);
    let key = console.create_key(&lab);
    agent.zmesh(
        &lab,
        &[
            "up",
            "--console",
            &console.url(),
            "--enroll-key",
            &key,
            "--name",
            "a",
        ],
    );
    let a_ip = agent.overlay_v4(&lab);
    wait_for(
        "agent a to be connected",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || (agent.status(&lab)["self"]["connected"] == true).then_some(()),
    );

    // Stock WireGuard key pair, made by `wg` itself.
    let private = String::from_utf8(lab.exec_ok(&wg_ns, &["wg", "genkey"]).unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let public = {
        let mut c = lab.command(&wg_ns, &["wg", "pubkey"]);
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut ch = c.spawn().unwrap();
        use std::io::Write;
        ch.stdin
            .take()
            .unwrap()
            .write_all(private.as_bytes())
            .unwrap();
        String::from_utf8(ch.wait_with_output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string()
    };
    console.cli(&lab, &["devices", "add", "wggo", "--public-key", &public]);
    // The agent learns about the new peer from the console.
    wait_for(
        "a to list wggo",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            agent
                .peer_names(&lab)
                .contains(&"wggo".to_string())
                .then_some(())
        },
    );
    // Export once a's endpoint is known, so the config points at it.
    let cfg = wait_for(
        "export-config with a's endpoint",
        Duration::from_secs(20),
        Duration::from_millis(300),
        || {
            let c = console.cli(&lab, &["devices", "export-config", "wggo"]);
            c.contains("10.78.0.11").then_some(c)
        },
    );
    assert!(
        !cfg.contains(&private),
        "the console must never know the agentless private key"
    );
    let conv = convert(&cfg, &private);
    let wg_ip: Ipv4Addr = conv
        .addresses
        .iter()
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .next()
        .unwrap_or_else(|| panic!("no IPv4 Address in exported config:\n{cfg}"));

    // wireguard-go in the foreground, configured with wg + ip as wg-quick would.
    let wg = WireguardGo::start(
        &mut lab,
        &wg_ns,
        "i",
        &conv.setconf,
        &conv.addresses,
        &conv.routes,
    );

    // Ping both ways; wireguard-go initiates first (it knows a's endpoint).
    wait_for(
        "ping wggo -> a",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            lab.exec_timeout(
                &wg_ns,
                &["ping", "-n", "-q", "-c", "2", "-W", "2", &a_ip.to_string()],
                Duration::from_secs(10),
            )
            .status
            .success()
            .then_some(())
        },
    );
    wait_for(
        "ping a -> wggo",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || agent.ping(&lab, wg_ip, 2).then_some(()),
    );
    let hs = wg.handshakes(&lab, &wg_ns);
    assert!(
        hs.first().is_some_and(|t| *t > 0),
        "wireguard-go reports no handshake: {hs:?}"
    );
    let s = agent.status(&lab);
    let peer = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "wggo")
        .cloned()
        .unwrap();
    assert!(
        peer["last_handshake"].is_string(),
        "agent reports no handshake with wggo: {peer}"
    );
    assert_eq!(peer["public_key"], public.as_str());
    let out = agent.zmesh(&lab, &["ping", "wggo", "--count", "2"]);
    assert!(out.contains("reply from wggo"), "{out}");
    wg.stop(&mut lab);
}

#[test]
fn converts_wg_quick_config() {
    let cfg = "# comment = x\n[Interface]\n# PrivateKey = <set on the device>\nAddress = 100.64.0.9/32, fd00::9/128\nDNS = 1.1.1.1\n\n[Peer]\nPublicKey = abc=\nAllowedIPs = 100.64.0.1/32, fd00::1/128\nEndpoint = 10.0.0.1:51820\n";
    let c = convert(cfg, "PRIV=");
    assert_eq!(c.addresses, vec!["100.64.0.9/32", "fd00::9/128"]);
    assert_eq!(c.routes, vec!["100.64.0.1/32", "fd00::1/128"]);
    assert!(c.setconf.contains("PrivateKey = PRIV="));
    assert!(
        !c.setconf.contains("<set")
            && !c.setconf.contains('#')
            && !c.setconf.contains("Address")
            && !c.setconf.contains("DNS")
    );
    assert!(c.setconf.contains("Endpoint = 10.0.0.1:51820"));
}
