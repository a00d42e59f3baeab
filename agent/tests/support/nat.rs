//! NAT routers for namespace tests: a router namespace on the lab's "internet" bridge
//! with a LAN bridge behind it, NATed by nftables. "Home" = `masquerade` (Linux keeps
//! the source port: endpoint-independent mapping), "symmetric" = `masquerade
//! fully-random` (a new port per destination); both filter port-dependently, drop
//! unsolicited inbound and do not hairpin. (The same routers as `nat_matrix.rs`.)

use std::net::Ipv4Addr;

use super::netns::Lab;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Nat {
    Home,
    Symmetric,
}

pub struct Router {
    pub ns: String,
    /// LAN is 10.<lan>.0.0/24, the router is .1.
    pub lan: u8,
    hosts: u32,
}

fn nft_rules(nat: Nat) -> String {
    let masq = match nat {
        Nat::Home => "masquerade",
        Nat::Symmetric => "masquerade fully-random",
    };
    format!(
        r#"table ip zmnat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth0" {masq}
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "eth0" ct state established,related accept
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

/// A router at `wan` on the internet bridge, LAN 10.`lan`.0.0/24 behind `nat`.
pub fn router(lab: &mut Lab, wan: Ipv4Addr, lan: u8, nat: Nat) -> Router {
    let ns = lab.add_node(wan).expect("router namespace");
    let gw = format!("10.{lan}.0.1/24");
    for cmd in [
        &["sysctl", "-qw", "net.ipv4.ip_forward=1"][..],
        &["ip", "link", "add", "brlan", "type", "bridge"],
        &["ip", "addr", "add", &gw, "dev", "brlan"],
        &["ip", "link", "set", "brlan", "up"],
    ] {
        lab.exec_ok(&ns, cmd).unwrap();
    }
    nft(lab, &ns, &nft_rules(nat));
    Router { ns, lan, hosts: 1 }
}

/// A new host namespace on the router's LAN with the next free address.
pub fn host_behind(lab: &mut Lab, r: &mut Router) -> (String, Ipv4Addr) {
    let ns = lab.add_ns().expect("host namespace");
    r.hosts += 1;
    let ip = Ipv4Addr::new(10, r.lan, 0, r.hosts as u8);
    let veth = format!("l{}", r.hosts);
    let (cidr, gw) = (format!("{ip}/24"), format!("10.{}.0.1", r.lan));
    for cmd in [
        &[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ][..],
        &["ip", "link", "set", &veth, "master", "brlan"],
        &["ip", "link", "set", &veth, "up"],
    ] {
        lab.exec_ok(&r.ns, cmd).unwrap();
    }
    for cmd in [
        &["ip", "addr", "add", &cidr, "dev", "eth0"][..],
        &["ip", "link", "set", "eth0", "up"],
        &["ip", "route", "add", "default", "via", &gw],
    ] {
        lab.exec_ok(&ns, cmd).unwrap();
    }
    (ns, ip)
}

/// Drops every UDP datagram in and out of namespace `ns` (a network that allows only
/// TCP, e.g. HTTPS).
pub fn block_udp(lab: &Lab, ns: &str) {
    nft(
        lab,
        ns,
        "table inet zmnoudp {\n\
         \x20   chain input { type filter hook input priority filter; policy accept; meta l4proto udp drop; }\n\
         \x20   chain output { type filter hook output priority filter; policy accept; meta l4proto udp drop; }\n\
         }\n",
    );
}

fn nft(lab: &Lab, ns: &str, rules: &str) {
    let path = lab.dir.path().join(format!("{ns}.nft"));
    std::fs::write(&path, rules).unwrap();
    lab.exec_ok(ns, &["nft", "-f", path.to_str().unwrap()])
        .unwrap();
}
