//! One agent in two networks at once (profiles), end to end in network namespaces:
//! two consoles (the second with its own overlay range, `serve --overlay-v4`), an
//! agent "multi" enrolled in both (profile `default` in console 1, `lab` in console
//! 2), a peer a1 in console 1 and b1 in console 2.
//!
//! multi pings a1 and b1; a1 cannot reach b1 through multi even with multi as its exit
//! node and forwarding on (multi's `dropped_cross_network` rises, b1 sees nothing);
//! a third console with the default range is refused (overlap); console 1's network
//! turned exclusive holds the lab profile and refuses a new one, and turned back lets
//! lab come back by itself; revoking multi in console 1 leaves lab working.
//! Needs root; see `support::netns`.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use support::netns::{lab_or_skip, wait_for};
use support::{console_bin, text, Agent, Console};

/// The profile `name` in multi's `status --json` (every profile is listed).
fn profile(s: &serde_json::Value, name: &str) -> Option<serde_json::Value> {
    s["profiles"]
        .as_array()?
        .iter()
        .find(|p| p["profile"] == name)
        .cloned()
}

fn has_peer(p: &serde_json::Value, peer: &str) -> bool {
    p["peers"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["name"] == peer))
}

fn console_at(lab: &mut support::netns::Lab, ip: Ipv4Addr, dir: &str) -> Console {
    let mut c = Console::new(lab, ip);
    c.data_dir = lab.dir.path().join(dir);
    std::fs::create_dir_all(&c.data_dir).unwrap();
    c
}

#[test]
fn one_agent_in_two_networks_never_bridges_them() {
    let Some(mut lab) = lab_or_skip("profiles_netns") else {
        return;
    };
    // The console flags this test needs come with several networks per console.
    let help = std::process::Command::new(console_bin())
        .args(["serve", "--help"])
        .output()
        .expect("zmesh-console runs");
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("--overlay-v4"),
        "zmesh-console has no `serve --overlay-v4`: this test needs the console's \
         several-networks support (branch networks-console)"
    );

    let ip = |n: u8| Ipv4Addr::new(10, 88, 0, n);
    let mut c1 = console_at(&mut lab, ip(1), "console-1");
    let mut c2 = console_at(&mut lab, ip(2), "console-2");
    let mut c3 = console_at(&mut lab, ip(3), "console-3");
    let mut multi = Agent::new(&mut lab, "multi", ip(11));
    let mut a1 = Agent::new(&mut lab, "a1", ip(12));
    let mut b1 = Agent::new(&mut lab, "b1", ip(13));
    let probe = multi.ns.clone();
    c1.start(&mut lab, &probe);
    c2.start_with(&mut lab, &probe, &["--overlay-v4", "10.77.0.0/16"], &[]);
    c3.start(&mut lab, &probe);
    a1.join(&mut lab, &c1, &[]);
    // in console 1 everyone reaches everyone, and a1 may use an exit node
    let pfile = lab.dir.path().join("policy.json");
    std::fs::write(
        &pfile,
        r#"{ "version": 1, "rules": [
            { "src": ["*"], "dst": ["*:*"] },
            { "src": ["a1"], "dst": ["autogroup:internet:*"] } ] }"#,
    )
    .unwrap();
    c1.cli(&lab, &["policy", "set", pfile.to_str().unwrap()]);
    b1.join(&mut lab, &c2, &[]);

    // ---- multi in both networks ----
    multi.start_daemon(&mut lab);
    let k1 = c1.create_key(&lab);
    multi.zmesh(
        &lab,
        &[
            "up",
            "--console",
            &c1.url(),
            "--enroll-key",
            &k1,
            "--name",
            "multi",
        ],
    );
    let k2 = c2.create_key(&lab);
    let out = multi.zmesh(
        &lab,
        &[
            "up",
            "--profile",
            "lab",
            "--console",
            &c2.url(),
            "--enroll-key",
            &k2,
            "--name",
            "multi",
        ],
    );
    assert!(out.contains("profile lab"), "{out}");
    let s = wait_for(
        "multi to list a1 in default and b1 in lab",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let s = multi.status(&lab);
            let (d, l) = (profile(&s, "default")?, profile(&s, "lab")?);
            (has_peer(&d, "a1") && has_peer(&l, "b1")).then_some(s)
        },
    );
    let lab_p = profile(&s, "lab").unwrap();
    assert_eq!(lab_p["self"]["state"], "up", "{lab_p}");
    assert!(
        lab_p["self"]["overlay_ips"][0]
            .as_str()
            .unwrap()
            .starts_with("10.77."),
        "{lab_p}"
    );
    // the top level stays the default profile's, as before profiles
    assert_eq!(s["profile"], "default");
    assert!(has_peer(&s, "a1") && !has_peer(&s, "b1"), "{s}");
    let one = multi.zmesh(&lab, &["status", "--json", "--profile", "lab"]);
    let one: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert!(has_peer(&one, "b1"), "{one}");
    let human = multi.zmesh(&lab, &["status"]);
    assert!(
        human.contains("profile default") && human.contains("profile lab"),
        "{human}"
    );

    let a1_ip = a1.overlay_v4(&lab);
    let b1_ip = b1.overlay_v4(&lab);
    assert!(b1_ip.octets()[..2] == [10, 77], "{b1_ip}");
    for (peer, addr) in [("a1", a1_ip), ("b1", b1_ip)] {
        wait_for(
            &format!("multi to ping {peer}"),
            Duration::from_secs(20),
            Duration::from_millis(200),
            || multi.ping(&lab, addr, 1).then_some(()),
        );
        let out = multi.zmesh(&lab, &["ping", peer, "-c", "1"]);
        assert!(out.contains("1 received"), "{out}");
    }
    assert!(a1.ping(&lab, multi.overlay_v4(&lab), 1));

    // ---- a1 tries to reach b1 through multi (its exit node, forwarding on) ----
    multi.zmesh(&lab, &["up", "--advertise-exit-node"]);
    c1.cli(&lab, &["routes", "approve", "multi", "0.0.0.0/0"]);
    c1.cli(&lab, &["routes", "approve", "multi", "::/0"]);
    wait_for(
        "a1 to be offered multi as an exit node",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || {
            let s = a1.status(&lab);
            s["peers"]
                .as_array()?
                .iter()
                .any(|p| p["name"] == "multi" && p["exit_node"] == true)
                .then_some(())
        },
    );
    a1.zmesh(&lab, &["up", "--exit-node", "multi"]);
    lab.exec_ok(&multi.ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    assert!(
        wait_for(
            "a1 through its exit node to multi",
            Duration::from_secs(15),
            Duration::from_millis(200),
            || a1.ping(&lab, multi.overlay_v4(&lab), 1).then_some(true),
        ),
        "the exit path works"
    );
    let dropped = |lab: &support::netns::Lab| {
        profile(&multi.status(lab), "default").unwrap()["dropped_cross_network"]
            .as_u64()
            .unwrap()
    };
    let before = dropped(&lab);
    let b1_rx = |lab: &support::netns::Lab| -> u64 {
        b1.status(lab)["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == "multi")
            .map(|p| p["rx_bytes"].as_u64().unwrap_or(0))
            .sum()
    };
    let rx0 = b1_rx(&lab);
    assert!(
        !a1.ping(&lab, b1_ip, 3),
        "a1 reached b1 in another network through multi"
    );
    let after = dropped(&lab);
    assert!(
        after >= before + 3,
        "dropped_cross_network {before} -> {after}"
    );
    // keepalives may pass, 3 pings of 84 bytes each (+32 of WireGuard) may not
    let rx1 = b1_rx(&lab);
    assert!(
        rx1 < rx0 + 3 * 116,
        "b1 received {} bytes from multi",
        rx1 - rx0
    );
    let metrics = multi.zmesh(&lab, &["metrics"]);
    assert!(
        metrics.lines().any(|l| {
            l.starts_with("zmesh_agent_dropped_cross_network_packets_total{profile=\"default\"}")
                && l.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()) >= Some(3)
        }),
        "{metrics}"
    );
    // the lab network still works for multi itself
    assert!(multi.ping(&lab, b1_ip, 1));
    a1.zmesh(&lab, &["up", "--exit-node="]);

    // ---- a third network with the default range: refused (overlap) ----
    let k3 = c3.create_key(&lab);
    let out = multi.try_zmesh(
        &lab,
        &[
            "up",
            "--profile",
            "third",
            "--console",
            &c3.url(),
            "--enroll-key",
            &k3,
        ],
    );
    assert!(!out.status.success(), "an overlapping profile came up");
    let msg = text(&out);
    assert!(
        msg.contains(
            "profile \"third\": its network 100.64.0.0/10 overlaps profile \"default\" \
             (100.64.0.0/10); a device cannot be in both at once"
        ) && msg.contains("--overlay-v4"),
        "{msg}"
    );
    let third = multi.zmesh(&lab, &["status", "--json", "--profile", "third"]);
    let third: serde_json::Value = serde_json::from_str(&third).unwrap();
    assert_eq!(third["self"]["state"], "refused", "{third}");
    assert!(
        third["blocked"]["reason"]
            .as_str()
            .unwrap()
            .contains("overlaps"),
        "{third}"
    );
    assert!(
        multi.ping(&lab, a1_ip, 1),
        "the default profile is untouched"
    );

    // ---- console 1's network turns exclusive: lab is held, a new profile refused ----
    c1.cli(&lab, &["networks", "set", "default", "--exclusive", "true"]);
    let held = wait_for(
        "the lab profile to be held",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let p = profile(&multi.status(&lab), "lab")?;
            (p["self"]["state"] == "held").then_some(p)
        },
    );
    let reason = held["blocked"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("network \"default\" (profile \"default\") is exclusive"),
        "{held}"
    );
    assert!(
        !multi.ping(&lab, b1_ip, 1),
        "a held profile carries nothing"
    );
    assert!(multi.ping(&lab, a1_ip, 1));
    let human = multi.zmesh(&lab, &["status"]);
    assert!(human.contains("held: network \"default\""), "{human}");
    let k4 = c2.create_key(&lab);
    let out = multi.try_zmesh(
        &lab,
        &[
            "up",
            "--profile",
            "new",
            "--console",
            &c2.url(),
            "--enroll-key",
            &k4,
            "--name",
            "multi2",
        ],
    );
    assert!(
        !out.status.success(),
        "a new profile came up beside an exclusive one"
    );
    assert!(
        text(&out).contains(
            "network \"default\" (profile \"default\") is exclusive: its admin forbids being \
             in another network at the same time; zmesh down --profile default first"
        ),
        "{}",
        text(&out)
    );
    // exclusivity off: the held profile comes back by itself
    c1.cli(
        &lab,
        &["networks", "set", "default", "--exclusive", "false"],
    );
    wait_for(
        "the lab profile to come back",
        Duration::from_secs(20),
        Duration::from_millis(300),
        || multi.ping(&lab, b1_ip, 1).then_some(()),
    );

    // ---- multi revoked in console 1: the lab profile keeps working ----
    c1.cli(&lab, &["devices", "revoke", "multi"]);
    wait_for(
        "the default profile to be revoked",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || (profile(&multi.status(&lab), "default")?["self"]["state"] == "revoked").then_some(()),
    );
    let out = multi.zmesh(&lab, &["ping", "--profile", "lab", "b1", "-c", "2"]);
    assert!(!out.contains(" 0 received"), "{out}");
    assert!(multi.ping(&lab, b1_ip, 1));
    assert!(!multi.ping(&lab, a1_ip, 1));

    // Clean up: daemons first (they remove their TUNs), then the consoles; the lab
    // deletes the namespaces and kills anything left.
    for ag in [&mut multi, &mut a1, &mut b1] {
        ag.stop_daemon(&mut lab);
    }
    for c in [&mut c1, &mut c2, &mut c3] {
        c.kill(&mut lab);
    }
}
