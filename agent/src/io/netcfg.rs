//! Host network configuration for routes and exit nodes: kernel routes for the
//! prefixes this device sends into the tunnel; with an exit node, policy routing that
//! sends everything into the tunnel except the underlay (the marked WireGuard socket,
//! the console and the relays, and optionally the local networks); on a subnet router
//! or exit node, IP forwarding and source NAT for what comes out of the tunnel.
//!
//! Done with iproute2, nft and /proc/sys, like the TUN's own addresses ([`super::tun`]).
//! Every rule sits at a fixed priority, the routes in one table and the NAT in one nft
//! table, all named below, so removal is exact: `down` and `logout` undo what was added,
//! and a daemon restarting after a crash removes what a dead one left
//! ([`NetCfg::cleanup_stale`]). Previous forwarding settings are saved in the state
//! directory before they are changed, and put back.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Routing table holding the exit node's default route.
pub const TABLE: u32 = 5252;
/// Mark on the WireGuard UDP socket: its packets always take the main table.
pub const FWMARK: u32 = 0x5a4d;
const PRIO_MARK: u32 = 5210;
const PRIO_KEEP: u32 = 5220;
const PRIO_LAN: u32 = 5230;
const PRIO_EXIT: u32 = 5250;
const PRIOS: [u32; 4] = [PRIO_MARK, PRIO_KEEP, PRIO_LAN, PRIO_EXIT];
/// nft table (family inet) with the router's source NAT.
const NFT_TABLE: &str = "zmesh";
/// File in the state directory with the forwarding settings found before enabling.
pub const SAVED_FILE: &str = "netcfg.json";

const FWD_V4: &str = "/proc/sys/net/ipv4/ip_forward";
const FWD_V6: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Using an exit node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitCfg {
    /// Keep the local networks (the main table's specific routes) off the tunnel.
    pub allow_lan: bool,
    /// Underlay addresses that must not go into the tunnel: console, relays, STUN.
    pub keep: Vec<IpAddr>,
    /// The overlay ranges (routed into the tunnel in the exit table too).
    pub overlay: Vec<IpNet>,
}

/// What the host should look like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Prefixes routed into the tunnel (subnet routes this device uses).
    pub routes: BTreeSet<IpNet>,
    pub exit: Option<ExitCfg>,
    /// Forward for others (subnet router, exit node); `Some(snat)`.
    pub router: Option<bool>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    forward_v4: Option<String>,
    forward_v6: Option<String>,
}

pub struct NetCfg {
    tun: String,
    saved: PathBuf,
    have: Wanted,
}

/// Runs `cmd args`; its stderr is the error on failure.
pub(super) fn run(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn fam(n: &IpNet) -> &'static str {
    match n {
        IpNet::V4(_) => "-4",
        IpNet::V6(_) => "-6",
    }
}

/// An IPv6 step that fails (IPv6 disabled here) is logged, not fatal.
fn soft(r: anyhow::Result<()>, what: &str) {
    if let Err(e) = r {
        tracing::warn!(error = %format!("{e:#}"), "{what}");
    }
}

impl NetCfg {
    pub fn new(tun: &str, state_dir: &Path) -> Self {
        NetCfg {
            tun: tun.to_string(),
            saved: state_dir.join(SAVED_FILE),
            have: Wanted::default(),
        }
    }

    /// Removes whatever a previous daemon left (it may have crashed): our rules, our
    /// table, our NAT, and puts saved forwarding settings back. Idempotent.
    pub fn cleanup_stale(state_dir: &Path) {
        remove_policy_routing();
        let _ = run("nft", &["delete", "table", "inet", NFT_TABLE]);
        restore_forwarding(&state_dir.join(SAVED_FILE));
    }

    /// Makes the host look like `want`, changing only what differs.
    pub fn sync(&mut self, want: &Wanted) -> anyhow::Result<()> {
        if want.router != self.have.router {
            self.set_router(want.router)?;
        }
        let exit_changed = want.exit != self.have.exit;
        if exit_changed {
            self.clear_exit();
        }
        for r in self.have.routes.difference(&want.routes) {
            soft(
                run(
                    "ip",
                    &[fam(r), "route", "del", &r.to_string(), "dev", &self.tun],
                ),
                "removing a route",
            );
            let t = TABLE.to_string();
            let _ = run(
                "ip",
                &[
                    fam(r),
                    "route",
                    "del",
                    &r.to_string(),
                    "dev",
                    &self.tun,
                    "table",
                    &t,
                ],
            );
        }
        for r in &want.routes {
            let new = !self.have.routes.contains(r);
            if new {
                run(
                    "ip",
                    &[fam(r), "route", "replace", &r.to_string(), "dev", &self.tun],
                )?;
            }
            if want.exit.is_some() && (new || exit_changed) {
                let t = TABLE.to_string();
                run(
                    "ip",
                    &[
                        fam(r),
                        "route",
                        "replace",
                        &r.to_string(),
                        "dev",
                        &self.tun,
                        "table",
                        &t,
                    ],
                )?;
            }
        }
        self.have.routes = want.routes.clone();
        if exit_changed {
            if let Some(e) = &want.exit {
                self.set_exit(e)?;
            }
            self.have.exit = want.exit.clone();
        }
        Ok(())
    }

    fn set_exit(&self, e: &ExitCfg) -> anyhow::Result<()> {
        let t = TABLE.to_string();
        let dev = self.tun.as_str();
        run(
            "ip",
            &["-4", "route", "replace", "default", "dev", dev, "table", &t],
        )?;
        soft(
            run(
                "ip",
                &["-6", "route", "replace", "default", "dev", dev, "table", &t],
            ),
            "IPv6 default route through the exit node",
        );
        for n in &e.overlay {
            soft(
                run(
                    "ip",
                    &[
                        fam(n),
                        "route",
                        "replace",
                        &n.to_string(),
                        "dev",
                        dev,
                        "table",
                        &t,
                    ],
                ),
                "overlay route in the exit table",
            );
        }
        for f in ["-4", "-6"] {
            let step = |args: &[&str]| {
                let mut a = vec![f, "rule", "add"];
                a.extend_from_slice(args);
                run("ip", &a)
            };
            let r = (|| {
                step(&[
                    "fwmark",
                    &format!("{FWMARK:#x}"),
                    "lookup",
                    "main",
                    "priority",
                    &PRIO_MARK.to_string(),
                ])?;
                for k in e.keep.iter().filter(|k| k.is_ipv4() == (f == "-4")) {
                    step(&[
                        "to",
                        &k.to_string(),
                        "lookup",
                        "main",
                        "priority",
                        &PRIO_KEEP.to_string(),
                    ])?;
                }
                if e.allow_lan {
                    step(&[
                        "lookup",
                        "main",
                        "suppress_prefixlength",
                        "0",
                        "priority",
                        &PRIO_LAN.to_string(),
                    ])?;
                }
                step(&["lookup", &t, "priority", &PRIO_EXIT.to_string()])
            })();
            if f == "-4" {
                r?;
            } else {
                soft(r, "IPv6 policy routing for the exit node");
            }
        }
        tracing::info!(
            allow_lan = e.allow_lan,
            keep = e.keep.len(),
            "all traffic now goes through the exit node"
        );
        Ok(())
    }

    fn clear_exit(&mut self) {
        if self.have.exit.take().is_none() {
            return;
        }
        remove_policy_routing();
        tracing::info!("exit node no longer used: routing as before");
    }

    fn set_router(&mut self, want: Option<bool>) -> anyhow::Result<()> {
        let _ = run("nft", &["delete", "table", "inet", NFT_TABLE]);
        match want {
            None => restore_forwarding(&self.saved),
            Some(snat) => {
                if !self.saved.exists() {
                    let s = Saved {
                        forward_v4: std::fs::read_to_string(FWD_V4)
                            .ok()
                            .map(|v| v.trim().to_string()),
                        forward_v6: std::fs::read_to_string(FWD_V6)
                            .ok()
                            .map(|v| v.trim().to_string()),
                    };
                    std::fs::write(&self.saved, serde_json::to_vec(&s)?)
                        .with_context(|| format!("saving {}", self.saved.display()))?;
                }
                std::fs::write(FWD_V4, "1").context("enabling IPv4 forwarding")?;
                soft(
                    std::fs::write(FWD_V6, "1").context("enabling IPv6 forwarding"),
                    "IPv6 forwarding",
                );
                if snat {
                    nft_snat(&self.tun)?;
                }
                tracing::info!(snat, "forwarding for the mesh");
            }
        }
        self.have.router = want;
        Ok(())
    }

    /// Undoes everything this instance added.
    pub fn teardown(&mut self) {
        self.clear_exit();
        for r in std::mem::take(&mut self.have.routes) {
            let _ = run(
                "ip",
                &[fam(&r), "route", "del", &r.to_string(), "dev", &self.tun],
            );
        }
        if self.have.router.is_some() {
            let _ = self.set_router(None);
        }
    }
}

/// Removes every rule at our priorities and empties our table (both families).
fn remove_policy_routing() {
    for f in ["-4", "-6"] {
        for p in PRIOS {
            // Bounded: each call removes one rule; we never add more than a few.
            for _ in 0..32 {
                if run("ip", &[f, "rule", "del", "priority", &p.to_string()]).is_err() {
                    break;
                }
            }
        }
        let _ = run("ip", &[f, "route", "flush", "table", &TABLE.to_string()]);
    }
}

/// Masquerades what leaves through another interface after coming out of the tunnel.
fn nft_snat(tun: &str) -> anyhow::Result<()> {
    let rules = format!(
        "table inet {NFT_TABLE} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    iifname \"{tun}\" oifname != \"{tun}\" masquerade\n  }}\n}}\n"
    );
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (nftables) for source NAT")?;
    use std::io::Write;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Puts back the forwarding settings saved before this device became a router.
fn restore_forwarding(saved: &Path) {
    let Ok(text) = std::fs::read(saved) else {
        return;
    };
    if let Ok(s) = serde_json::from_slice::<Saved>(&text) {
        for (path, v) in [(FWD_V4, s.forward_v4), (FWD_V6, s.forward_v6)] {
            if let Some(v) = v {
                soft(
                    std::fs::write(path, &v).with_context(|| format!("restoring {path}")),
                    "restoring forwarding",
                );
            }
        }
    }
    let _ = std::fs::remove_file(saved);
    tracing::info!("forwarding settings restored");
}
