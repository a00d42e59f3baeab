//! Names (DNS) end to end: the real console and two real agents in network
//! namespaces, and dnsmasq in a third namespace as the host's upstream resolver.
//!
//! Agent alpha's namespace has its own /etc/resolv.conf (`/etc/netns/NS/resolv.conf`,
//! which `ip netns exec` binds over /etc/resolv.conf; the machine's file is never
//! touched) naming dnsmasq, and its daemon runs with `--host-dns resolv-conf`. Checks:
//! `dig @100.64.0.0 bravo.SUFFIX` answers bravo's overlay addresses (A and AAAA), an
//! outside name is forwarded to dnsmasq, an admin's extra record is answered, a
//! split-DNS domain is answered by a second dnsmasq on bravo's overlay address through
//! the tunnel, `ping bravo` works through the rewritten
//! resolv.conf (search domain), a rename is answered within 1 s (measured), a suffix
//! change reaches the resolver, `status --json` shows the names, and the original
//! resolv.conf comes back on `down`, after a crash-restart (and the backup is the
//! original, not zmesh's file), and on `logout`. Needs root; CI fails rather than
//! skips when root, dig or dnsmasq is missing.

mod support;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::netns::{lab_or_skip, wait_for, Lab};
use support::{has_binary, Agent, Console};

const RESOLVER: &str = "100.64.0.0";
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 53);
const ORIGINAL: &str =
    "# the namespace's own resolv.conf\nnameserver 10.79.0.53\noptions timeout:1 attempts:2\n";

/// Removes `/etc/netns/NS` (the namespace's private /etc files) however the test ends.
struct NetnsEtc(PathBuf);

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dig(lab: &Lab, ns: &str, name: &str, rtype: &str) -> Vec<String> {
    let at = format!("@{RESOLVER}");
    let out = lab.exec_timeout(
        ns,
        &["dig", &at, "+short", "+time=1", "+tries=1", name, rtype],
        Duration::from_secs(10),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .collect()
}

fn resolv_conf(etc: &NetnsEtc) -> String {
    std::fs::read_to_string(etc.0.join("resolv.conf")).unwrap_or_default()
}

#[test]
fn names_resolve_forward_follow_renames_and_restore_the_host() {
    for (bin, pkg) in [("dig", "bind9-dnsutils"), ("dnsmasq", "dnsmasq-base")] {
        if !has_binary(bin) {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: Debian package {pkg} is required"
            );
            eprintln!("NOTICE: skipping dns_netns: {bin} ({pkg}) is missing");
            return;
        }
    }
    let Some(mut lab) = lab_or_skip("dns_netns") else {
        return;
    };
    let mut console = Console::new(&mut lab, Ipv4Addr::new(10, 79, 0, 1));
    let mut alpha = Agent::new(&mut lab, "alpha", Ipv4Addr::new(10, 79, 0, 11));
    let mut bravo = Agent::new(&mut lab, "bravo", Ipv4Addr::new(10, 79, 0, 12));
    let upstream_ns = lab.add_node(UPSTREAM).expect("upstream namespace");
    let etc = NetnsEtc(PathBuf::from("/etc/netns").join(&alpha.ns));
    std::fs::create_dir_all(&etc.0).unwrap();
    std::fs::write(etc.0.join("resolv.conf"), ORIGINAL).unwrap();
    alpha.host_dns = "resolv-conf";

    // the upstream: a real dnsmasq that knows one outside name
    let pidfile = lab.dir.path().join("dnsmasq.pid");
    let pidfile_arg = format!("--pid-file={}", pidfile.display());
    let listen = format!("--listen-address={UPSTREAM}");
    lab.spawn(
        &upstream_ns,
        "dnsmasq",
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &listen,
            "--address=/outside.example/192.0.2.77",
            "--user=root",
            "--log-queries",
            "--log-facility=-",
            &pidfile_arg,
        ],
    );

    let probe_ns = alpha.ns.clone();
    console.start(&mut lab, &probe_ns);
    for a in [&mut alpha, &mut bravo] {
        a.join(&mut lab, &console, &[]);
    }
    wait_for(
        "alpha to list bravo with names",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || (alpha.status(&lab)["peers"][0]["dns_name"].is_string()).then_some(()),
    );
    let s = alpha.status(&lab);
    let suffix = "default.zmesh.internal";
    assert_eq!(s["self"]["dns_name"], format!("alpha.{suffix}"), "{s}");
    assert_eq!(s["peers"][0]["dns_name"], format!("bravo.{suffix}"), "{s}");
    assert_eq!(s["dns"]["resolver"], RESOLVER, "{s}");
    assert_eq!(s["dns"]["suffix"], suffix, "{s}");
    let human = alpha.zmesh(&lab, &["status"]);
    assert!(
        human.contains(&format!("names: {suffix} (resolver {RESOLVER})")),
        "{human}"
    );

    // A and AAAA of the peer, and of the device itself
    let b = bravo.status(&lab);
    let b4: Ipv4Addr = b["self"]["overlay_ips"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let b6: Ipv6Addr = b["self"]["overlay_ips"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let fq = format!("bravo.{suffix}");
    wait_for(
        "the resolver to answer",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || (dig(&lab, &alpha.ns, &fq, "A") == [b4.to_string()]).then_some(()),
    );
    let aaaa = dig(&lab, &alpha.ns, &fq, "AAAA");
    assert_eq!(
        aaaa.iter()
            .map(|a| a.parse::<Ipv6Addr>().unwrap())
            .collect::<Vec<_>>(),
        vec![b6]
    );
    let a4 = alpha.overlay_v4(&lab);
    assert_eq!(
        dig(&lab, &alpha.ns, &format!("alpha.{suffix}"), "A"),
        [a4.to_string()]
    );
    eprintln!("dig @{RESOLVER} {fq}: A {b4}, AAAA {b6}");

    // an outside name goes to dnsmasq in its own namespace
    assert_eq!(
        dig(&lab, &alpha.ns, "outside.example", "A"),
        ["192.0.2.77"],
        "forwarded to dnsmasq at {UPSTREAM}"
    );

    // the resolver's address is never the source toward peers (it is scope host)
    let out = lab.exec_timeout(
        &alpha.ns,
        &["ip", "-4", "route", "get", &b4.to_string()],
        Duration::from_secs(10),
    );
    let route = String::from_utf8_lossy(&out.stdout);
    assert!(route.contains(&format!("src {a4}")), "{route}");

    // an admin's extra record
    console.cli(&lab, &["dns", "add-record", "wiki", "100.64.9.9"]);
    let wiki = format!("wiki.{suffix}");
    wait_for(
        "the extra record",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || (dig(&lab, &alpha.ns, &wiki, "A") == ["100.64.9.9"]).then_some(()),
    );

    // split DNS: corp.internal is answered by a dnsmasq on bravo's overlay address,
    // reached through the tunnel
    let pidfile_b = format!(
        "--pid-file={}",
        lab.dir.path().join("dnsmasq-b.pid").display()
    );
    let listen_b = format!("--listen-address={b4}");
    lab.spawn(
        &bravo.ns,
        "dnsmasq-bravo",
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &listen_b,
            "--address=/corp.internal/10.20.30.40",
            "--user=root",
            "--log-queries",
            "--log-facility=-",
            &pidfile_b,
        ],
    );
    console.cli(&lab, &["dns", "split", "corp.internal", &b4.to_string()]);
    wait_for(
        "a split-DNS name answered through the mesh",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || (dig(&lab, &alpha.ns, "git.corp.internal", "A") == ["10.20.30.40"]).then_some(()),
    );
    eprintln!("split DNS: git.corp.internal answered by dnsmasq at {b4} through the mesh");

    // the namespace's resolv.conf now points at the resolver and searches the suffix
    let conf = resolv_conf(&etc);
    assert!(conf.contains(&format!("nameserver {RESOLVER}\n")), "{conf}");
    assert!(conf.contains(&format!("search {suffix}")), "{conf}");
    assert!(conf.contains("nameserver 10.79.0.53"), "{conf}");
    let out = lab.exec_timeout(
        &alpha.ns,
        &["ping", "-c", "1", "-W", "2", "bravo"],
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "ping bravo: {}", support::text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&b4.to_string()) || said.contains(&b6.to_string()),
        "ping bravo reached an overlay address: {said}"
    );
    eprintln!("ping bravo: {}", said.lines().next().unwrap_or(""));
    let out = lab.exec_timeout(
        &alpha.ns,
        &["getent", "hosts", "outside.example"],
        Duration::from_secs(20),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("192.0.2.77"),
        "outside names still resolve through the host: {}",
        support::text(&out)
    );

    // a rename is answered within a second
    let t = Instant::now();
    console.cli(&lab, &["devices", "rename", "bravo", "charlie"]);
    let committed = t.elapsed();
    let fq2 = format!("charlie.{suffix}");
    let mut seen = None;
    while t.elapsed() < Duration::from_secs(5) {
        if dig(&lab, &alpha.ns, &fq2, "A") == [b4.to_string()] {
            seen = Some(t.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = seen.expect("the new name was never answered");
    eprintln!(
        "rename: answered {seen:?} after `devices rename` started ({committed:?} of it the CLI)"
    );
    assert!(seen < Duration::from_secs(1), "rename took {seen:?}");
    assert!(
        dig(&lab, &alpha.ns, &fq, "A").is_empty(),
        "the old name is gone"
    );

    // a new suffix reaches the resolver and the host's search list
    console.cli(&lab, &["dns", "set", "corp.example"]);
    wait_for(
        "the new suffix",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || (dig(&lab, &alpha.ns, "charlie.corp.example", "A") == [b4.to_string()]).then_some(()),
    );
    wait_for(
        "resolv.conf to search the new suffix",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            resolv_conf(&etc)
                .contains("search corp.example")
                .then_some(())
        },
    );

    // down restores the original
    alpha.zmesh(&lab, &["down"]);
    assert_eq!(resolv_conf(&etc), ORIGINAL);

    // a crash leaves zmesh's file; the next start restores, then points it again
    alpha.zmesh(&lab, &["up"]);
    wait_for(
        "resolv.conf rewritten after up",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || resolv_conf(&etc).contains(RESOLVER).then_some(()),
    );
    lab.kill(alpha.pid.take().unwrap());
    assert!(
        resolv_conf(&etc).contains(RESOLVER),
        "still zmesh's after a crash"
    );
    alpha.start_daemon(&mut lab);
    wait_for(
        "resolv.conf rewritten after the restart",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || resolv_conf(&etc).contains(RESOLVER).then_some(()),
    );
    let backup = std::fs::read_to_string(alpha.state_dir.join("resolv.conf.zmesh-backup"))
        .unwrap_or_default();
    assert_eq!(
        backup, ORIGINAL,
        "the backup is the original, not zmesh's file"
    );
    wait_for(
        "names after the restart",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || (dig(&lab, &alpha.ns, "charlie.corp.example", "A") == [b4.to_string()]).then_some(()),
    );

    // logout restores it too
    alpha.zmesh(&lab, &["logout"]);
    assert_eq!(resolv_conf(&etc), ORIGINAL);
    for a in [&mut alpha, &mut bravo] {
        a.stop_daemon(&mut lab);
    }
    console.kill(&mut lab);
}
