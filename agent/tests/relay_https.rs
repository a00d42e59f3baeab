//! A relay out of the box: the console started exactly as the README says
//! (`zmesh-console serve` in a directory, no flags: data in `./zmesh-data`, HTTPS on
//! 8443, STUN on 3478-3479, no relay port) serves its relay on the HTTPS port, and real
//! agents (`zmesh daemon` + `zmesh up`) in network namespaces use it:
//!
//! - a device joining a peer whose relay connection is up starts on the relay and
//!   moves to the direct path as soon as a probe answers (public <-> home NAT);
//! - two devices behind symmetric NATs reach each other through the relay on 8443;
//! - with every UDP datagram dropped in one device's namespace, still through it.
//!
//! Prints the time to the first packet (and to the direct path) of each case.
//! Needs root, `ip` and `nft`; fails instead of skipping when `CI` is set.

mod support;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::nat::{block_udp, host_behind, router, Nat};
use support::netns::{lab_or_skip, wait_for, Lab};
use support::{console_bin, text, wait_tcp, Agent};

const CONSOLE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// Runs `zmesh-console ARGS` in `dir` (the README's working directory) inside `ns`.
fn console_cmd(dir: &Path, args: &str) -> Vec<String> {
    vec![
        "bash".into(),
        "-c".into(),
        format!("cd \"$0\" && exec \"$1\" {args}"),
        dir.display().to_string(),
        console_bin().display().to_string(),
    ]
}

fn up(lab: &mut Lab, a: &mut Agent, key: &str) {
    a.start_daemon(lab);
    let url = format!("https://{CONSOLE_IP}:8443");
    a.zmesh(
        lab,
        &[
            "up",
            "--console",
            &url,
            "--enroll-key",
            key,
            "--name",
            &a.name,
        ],
    );
}

fn natted(lab: &mut Lab, name: &str, r: &mut support::nat::Router) -> Agent {
    let (ns, ip) = host_behind(lab, r);
    Agent {
        name: name.to_string(),
        ns,
        underlay: ip,
        state_dir: lab.dir.path().join(format!("state-{name}")),
        pid: None,
        host_dns: "off",
        daemon_args: vec![],
    }
}

fn ping1(lab: &Lab, from: &Agent, to: Ipv4Addr) -> bool {
    lab.exec_timeout(
        &from.ns,
        &["ping", "-n", "-q", "-c", "1", "-W", "1", &to.to_string()],
        Duration::from_secs(5),
    )
    .status
    .success()
}

fn first_packet(lab: &Lab, a: &Agent, b_ip: Ipv4Addr, t0: Instant) -> Duration {
    wait_for(
        &format!("first ping {} -> {b_ip}", a.name),
        Duration::from_secs(20),
        Duration::from_millis(50),
        || ping1(lab, a, b_ip).then(|| t0.elapsed()),
    )
}

/// `from`'s view of `peer`: (path, via).
fn path(lab: &Lab, from: &Agent, peer: &str) -> (String, String) {
    let s = from.status(lab);
    let p = s["peers"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == peer).cloned())
        .unwrap_or_default();
    (
        p["path"].as_str().unwrap_or("-").to_string(),
        p["via"].as_str().unwrap_or("-").to_string(),
    )
}

fn log(lab: &Lab, a: &Agent) -> String {
    std::fs::read_to_string(lab.log_path(&format!("daemon-{}", a.name))).unwrap_or_default()
}

/// Waits until `a` says its relay connection (through the HTTPS upgrade) is up.
fn relay_up_via_https(lab: &Lab, a: &Agent) {
    wait_for(
        &format!("{} connected to the relay on the HTTPS port", a.name),
        Duration::from_secs(15),
        Duration::from_millis(100),
        || {
            log(lab, a)
                .lines()
                .any(|l| {
                    l.contains("relay connected")
                        && l.contains(&format!("{CONSOLE_IP}:8443"))
                        && l.contains("https")
                })
                .then_some(())
        },
    );
}

/// Both sides relayed through "console", pings pass, and no direct path shows up
/// within a probe burst. Returns the time to the first packet.
fn relayed(lab: &Lab, case: &str, a: &Agent, b: &Agent, t0: Instant) -> Duration {
    let b_ip = b.overlay_v4(lab);
    let first = first_packet(lab, a, b_ip, t0);
    wait_for(
        &format!("{case}: both sides on the relay"),
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            (path(lab, a, &b.name) == ("relay".into(), "console".into())
                && path(lab, b, &a.name) == ("relay".into(), "console".into()))
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        path(lab, a, &b.name),
        ("relay".into(), "console".into()),
        "{case}"
    );
    for _ in 0..3 {
        assert!(ping1(lab, a, b_ip), "{case}: ping through the relay");
    }
    eprintln!(
        "RELAY-HTTPS {case:<36} first packet {:>5.2}s  path: relay console (HTTPS {CONSOLE_IP}:8443)",
        first.as_secs_f64()
    );
    first
}

#[test]
fn builtin_relay_on_the_https_port() {
    if !support::has_binary("nft") {
        assert!(
            std::env::var_os("CI").is_none(),
            "relay_https: nft (nftables) is required in CI"
        );
        eprintln!("NOTICE: skipping relay_https: needs nft");
        return;
    }
    let Some(mut lab) = lab_or_skip("relay_https") else {
        return;
    };
    let started = Instant::now();
    let console_ns = lab.add_node(CONSOLE_IP).expect("console namespace");
    let cwd = lab.dir.path().join("console-cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    // The README: `zmesh-console serve &`, nothing else.
    let serve = console_cmd(&cwd, "serve");
    let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
    lab.spawn(&console_ns, "console", &serve);
    wait_tcp(&lab, &console_ns, CONSOLE_IP, 8443, Duration::from_secs(30));
    let keys = console_cmd(&cwd, "keys create --reusable --ttl 24h");
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let out = lab.exec_timeout(&console_ns, &keys, Duration::from_secs(30));
    assert!(out.status.success(), "keys create: {}", text(&out));
    let key = support::find_enroll_key(&String::from_utf8_lossy(&out.stdout)).expect("key");
    let console_log = std::fs::read_to_string(lab.log_path("console")).unwrap_or_default();
    assert!(
        console_log.contains("relay on the HTTPS port") && !console_log.contains("relay on tcp"),
        "the zero-config console serves its relay on the HTTPS port only:\n{console_log}"
    );

    // 1. Start on the relay, then direct: pub1's relay connection is up before home1
    // joins, so home1 is added to pub1 on the relay path and moves to direct when a
    // probe answers.
    let mut pub1 = Agent::new(&mut lab, "pub1", Ipv4Addr::new(192, 0, 2, 11));
    up(&mut lab, &mut pub1, &key);
    relay_up_via_https(&lab, &pub1);
    let mut r1 = router(&mut lab, Ipv4Addr::new(192, 0, 2, 21), 1, Nat::Home);
    let mut home1 = natted(&mut lab, "home1", &mut r1);
    let t0 = Instant::now();
    up(&mut lab, &mut home1, &key);
    let home_ip = home1.overlay_v4(&lab);
    let first = first_packet(&lab, &pub1, home_ip, t0);
    let direct = wait_for(
        "pub1 to have a direct path to home1",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || (path(&lab, &pub1, "home1").0 == "direct").then(|| t0.elapsed()),
    );
    let changes: Vec<String> = log(&lab, &pub1)
        .lines()
        .filter(|l| l.contains("peer path changed"))
        .map(String::from)
        .collect();
    eprintln!("pub1's path changes for home1:\n{}", changes.join("\n"));
    assert!(
        changes.first().is_some_and(|l| l.contains("path=Relay"))
            && changes.iter().any(|l| l.contains("path=Direct(")),
        "home1 should start on the relay and then go direct: {changes:?}"
    );
    eprintln!(
        "RELAY-HTTPS {:<36} first packet {:>5.2}s  direct path {:.2}s",
        "public <-> home (relay, then direct)",
        first.as_secs_f64(),
        direct.as_secs_f64()
    );

    // 2. Symmetric <-> symmetric: only the relay works, and it is the one on 8443.
    let mut s1r = router(&mut lab, Ipv4Addr::new(192, 0, 2, 31), 3, Nat::Symmetric);
    let mut s2r = router(&mut lab, Ipv4Addr::new(192, 0, 2, 32), 4, Nat::Symmetric);
    let mut sym1 = natted(&mut lab, "sym1", &mut s1r);
    let mut sym2 = natted(&mut lab, "sym2", &mut s2r);
    let t0 = Instant::now();
    up(&mut lab, &mut sym1, &key);
    up(&mut lab, &mut sym2, &key);
    relayed(&lab, "symmetric <-> symmetric", &sym1, &sym2, t0);
    relay_up_via_https(&lab, &sym1);
    relay_up_via_https(&lab, &sym2);

    // 3. Every UDP datagram dropped in one device's namespace: only HTTPS gets out.
    let mut noudp = Agent::new(&mut lab, "noudp", Ipv4Addr::new(192, 0, 2, 13));
    block_udp(&lab, &noudp.ns);
    let t0 = Instant::now();
    up(&mut lab, &mut noudp, &key);
    relayed(&lab, "UDP blocked <-> symmetric", &noudp, &sym2, t0);
    relay_up_via_https(&lab, &noudp);

    for a in [&mut pub1, &mut home1, &mut sym1, &mut sym2, &mut noudp] {
        let _ = a.try_zmesh(&lab, &["down"]);
        a.stop_daemon(&mut lab);
    }
    eprintln!("relay_https took {:.1}s", started.elapsed().as_secs_f64());
}
