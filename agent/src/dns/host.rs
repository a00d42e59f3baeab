//! Pointing the host at the resolver, the way the host expects:
//!
//! - **systemd-resolved** (when it runs): per-link DNS on the TUN interface with the
//!   suffix as its search and routing domain (and each split-DNS domain as a routing
//!   domain, `~DOMAIN`), and the link not a default route, so only zmesh names go to
//!   zmesh (`resolvectl dns|domain|default-route`). The link's
//!   settings go with the interface when tunnels come down.
//! - **otherwise**: `/etc/resolv.conf` is rewritten (in place, so a bind-mounted file
//!   keeps working) to name the resolver first and search the suffix, after a copy of
//!   the original is kept in the state dir (`resolv.conf.zmesh-backup`). `zmesh down`,
//!   `zmesh logout` and the next start after a crash put the original back.
//!
//! The resolvers the host had before are read from that backup (or the current file,
//! or resolved's own list when its stub is in use) and receive every other name.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

/// How the daemon configures the host (`zmesh daemon --host-dns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HostDns {
    /// systemd-resolved when it runs, else /etc/resolv.conf.
    Auto,
    /// Always systemd-resolved (resolvectl).
    Resolved,
    /// Always rewrite /etc/resolv.conf (with a backup).
    ResolvConf,
    /// Leave the host alone: the resolver still answers on its address.
    Off,
}

pub const BACKUP_FILE: &str = "resolv.conf.zmesh-backup";
const RESOLV_CONF: &str = "/etc/resolv.conf";
const RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";
const RESOLVED_STUB: &str = "127.0.0.53";

#[derive(Debug, thiserror::Error)]
pub enum HostDnsError {
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("resolvectl {args}: {message}")]
    Resolvectl { args: String, message: String },
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> HostDnsError + '_ {
    move |source| HostDnsError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// True when systemd-resolved runs on this host: its varlink socket exists. (No
/// program is run to find out: hosts without resolved never spawn `resolvectl`.)
pub fn resolved_running() -> bool {
    Path::new("/run/systemd/resolve/io.systemd.Resolve").exists()
}

/// The mode of a profile other than `default`: /etc/resolv.conf has room for one
/// resolver only (the default profile's), so the others use systemd-resolved (per
/// link) when it runs and leave the host alone otherwise.
pub fn for_other_profile(mode: HostDns) -> HostDns {
    match mode {
        HostDns::Auto if resolved_running() => HostDns::Resolved,
        HostDns::Resolved => HostDns::Resolved,
        _ => HostDns::Off,
    }
}

/// What `Auto` means on this host.
pub fn effective(mode: HostDns) -> HostDns {
    match mode {
        HostDns::Auto if resolved_running() => HostDns::Resolved,
        HostDns::Auto => HostDns::ResolvConf,
        m => m,
    }
}

/// The `nameserver` addresses of a resolv.conf text.
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next()?.split('%').next()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// The host's resolvers before zmesh, on port 53, without the resolver itself.
pub fn upstreams(state_dir: &Path, resolver: Ipv4Addr) -> Vec<SocketAddr> {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let backup = state_dir.join(BACKUP_FILE);
    let mut ns = nameservers(&if backup.exists() {
        read(&backup)
    } else {
        read(Path::new(RESOLV_CONF))
    });
    if ns.iter().any(|a| a.to_string() == RESOLVED_STUB) {
        // the stub forwards to resolved, which would route our own names back to us
        let real = nameservers(&read(Path::new(RESOLVED_UPSTREAMS)));
        if !real.is_empty() {
            ns = real;
        }
    }
    ns.into_iter()
        .filter(|a| *a != IpAddr::V4(resolver))
        .map(|a| SocketAddr::new(a, 53))
        .collect()
}

/// The resolv.conf zmesh writes: the resolver first, the suffix searched first, the
/// original's other resolvers, search domains and options kept after them.
pub fn rewritten(original: &str, resolver: Ipv4Addr, suffix: &str, backup: &Path) -> String {
    let mut search = vec![suffix.to_string()];
    let mut rest = String::new();
    let mut servers = vec![];
    for l in original.lines() {
        let mut w = l.split_whitespace();
        match w.next() {
            Some("nameserver") => servers.extend(w.next().map(str::to_string)),
            Some("search") | Some("domain") => {
                search.extend(w.filter(|d| *d != suffix).map(str::to_string))
            }
            Some("options") | Some("sortlist") => {
                rest.push_str(l);
                rest.push('\n');
            }
            _ => {}
        }
    }
    let mut out = format!(
        "# Written by zmesh: names under {suffix} are answered at {resolver}.\n\
         # The original is {} and comes back on `zmesh down`.\n\
         nameserver {resolver}\n",
        backup.display()
    );
    // glibc reads at most three nameservers
    for s in servers
        .iter()
        .filter(|s| **s != resolver.to_string())
        .take(2)
    {
        out.push_str(&format!("nameserver {s}\n"));
    }
    out.push_str(&format!("search {}\n", search.join(" ")));
    out.push_str(&rest);
    out
}

/// Points the host at the resolver for `suffix` and the split-DNS domains (again
/// after a change; in resolv.conf mode every query comes to the resolver anyway).
pub fn apply(
    mode: HostDns,
    state_dir: &Path,
    tun: &str,
    resolver: Ipv4Addr,
    suffix: &str,
    split: &[String],
) -> Result<(), HostDnsError> {
    match mode {
        HostDns::Off | HostDns::Auto => Ok(()),
        HostDns::Resolved => {
            for args in resolved_commands(tun, resolver, suffix, split) {
                resolvectl(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
            }
            tracing::info!(%resolver, suffix, "host resolver configuration: systemd-resolved");
            Ok(())
        }
        HostDns::ResolvConf => {
            let conf = Path::new(RESOLV_CONF);
            let backup = state_dir.join(BACKUP_FILE);
            if !backup.exists() {
                let orig = std::fs::read_to_string(conf).map_err(file_err(conf))?;
                let tmp = state_dir.join(format!("{BACKUP_FILE}.tmp"));
                std::fs::write(&tmp, &orig).map_err(file_err(&tmp))?;
                std::fs::rename(&tmp, &backup).map_err(file_err(&backup))?;
            }
            let orig = std::fs::read_to_string(&backup).map_err(file_err(&backup))?;
            // in place: /etc/resolv.conf may be a bind mount (containers, `ip netns`)
            std::fs::write(conf, rewritten(&orig, resolver, suffix, &backup))
                .map_err(file_err(conf))?;
            tracing::info!(%resolver, suffix, "host resolver configuration: /etc/resolv.conf");
            Ok(())
        }
    }
}

/// Puts back the resolv.conf saved by [`apply`], if any (down, logout, start after a
/// crash). True when something was restored.
pub fn restore(state_dir: &Path) -> Result<bool, HostDnsError> {
    let backup = state_dir.join(BACKUP_FILE);
    let orig = match std::fs::read_to_string(&backup) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(file_err(&backup)(e)),
    };
    let conf = Path::new(RESOLV_CONF);
    std::fs::write(conf, orig).map_err(file_err(conf))?;
    std::fs::remove_file(&backup).map_err(file_err(&backup))?;
    tracing::info!("restored the original /etc/resolv.conf");
    Ok(true)
}

/// The `resolvectl` calls that point link `tun` at the resolver: its DNS server, the
/// suffix as search and routing domain, each split domain as a routing domain only, and
/// no default route (other names keep going where they went).
pub fn resolved_commands(
    tun: &str,
    resolver: Ipv4Addr,
    suffix: &str,
    split: &[String],
) -> Vec<Vec<String>> {
    let mut domain = vec!["domain".to_string(), tun.to_string(), suffix.to_string()];
    domain.extend(split.iter().map(|d| format!("~{d}")));
    vec![
        vec!["dns".into(), tun.into(), resolver.to_string()],
        domain,
        vec!["default-route".into(), tun.into(), "false".into()],
    ]
}

fn resolvectl(args: &[&str]) -> Result<(), HostDnsError> {
    let out = Command::new("resolvectl")
        .args(args)
        .output()
        .map_err(|e| HostDnsError::Resolvectl {
            args: args.join(" "),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(HostDnsError::Resolvectl {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_gets_per_link_dns_and_routing_domains() {
        let c = resolved_commands(
            "zmesh0",
            Ipv4Addr::new(100, 64, 0, 0),
            "default.zmesh.internal",
            &["corp.example".into()],
        );
        let c: Vec<String> = c.iter().map(|a| a.join(" ")).collect();
        assert_eq!(
            c,
            [
                "dns zmesh0 100.64.0.0",
                "domain zmesh0 default.zmesh.internal ~corp.example",
                "default-route zmesh0 false"
            ]
        );
    }

    #[test]
    fn rewrite_puts_the_resolver_and_suffix_first_and_keeps_the_rest() {
        let orig = "# hi\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nnameserver 10.0.0.54\n\
                    search lan\noptions edns0 ndots:1\n";
        assert_eq!(
            nameservers(orig),
            vec![
                "10.0.0.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap(),
                "10.0.0.54".parse().unwrap()
            ]
        );
        let r = Ipv4Addr::new(100, 64, 0, 0);
        let t = rewritten(orig, r, "default.zmesh.internal", Path::new("/s/b"));
        let lines: Vec<&str> = t.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            vec![
                "nameserver 100.64.0.0",
                "nameserver 10.0.0.53",
                "nameserver fe80::1%eth0",
                "search default.zmesh.internal lan",
                "options edns0 ndots:1"
            ]
        );
        // rewriting a rewritten file changes nothing more
        let again = rewritten(&t, r, "default.zmesh.internal", Path::new("/s/b"));
        assert_eq!(nameservers(&again)[0], IpAddr::V4(r));
        assert_eq!(nameservers(&again).len(), 3);
    }
}
