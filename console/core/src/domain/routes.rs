//! The rules an advertised route set must follow before it is stored (subnet routers
//! and exit nodes): canonical prefixes, none inside the overlay (a route there would
//! hijack peers' addresses), default routes only as an exit-node offer, and a bound on
//! how many. Pure: the service records a refusal, the agent keeps running.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Most prefixes one device may advertise (an exit node's two defaults included).
pub const MAX_ROUTES: usize = 64;

/// The two prefixes an exit node offers.
pub fn default_routes() -> [IpNet; 2] {
    [IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())]
}

/// Whether `p` is `0.0.0.0/0` or `::/0`.
pub fn is_default(p: &IpNet) -> bool {
    p.prefix_len() == 0
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Checks an advertisement against the network's overlay prefixes (`overlay`): the
/// set to store, sorted and deduplicated, with both defaults when `exit_node`; or why
/// it is refused (nothing of it is stored).
pub fn check_advertised(
    advertise: &[IpNet],
    exit_node: bool,
    overlay: &[IpNet],
) -> Result<Vec<IpNet>, String> {
    if advertise.len() > MAX_ROUTES {
        return Err(format!(
            "{} routes advertised; at most {MAX_ROUTES} are accepted",
            advertise.len()
        ));
    }
    let mut out = Vec::with_capacity(advertise.len() + 2);
    for p in advertise {
        if *p != p.trunc() {
            return Err(format!(
                "{p} is not a canonical prefix (host bits set); advertise {}",
                p.trunc()
            ));
        }
        if is_default(p) {
            if !exit_node {
                return Err(format!(
                    "{p} is a default route; it is offered only with exit_node (--advertise-exit-node)"
                ));
            }
            continue;
        }
        if let Some(o) = overlay.iter().find(|o| overlaps(p, o)) {
            return Err(format!(
                "{p} overlaps the mesh's overlay range {o}; a route there would take peers' addresses"
            ));
        }
        out.push(*p);
    }
    if exit_node {
        out.extend(default_routes());
    }
    out.sort();
    out.dedup();
    if out.len() > MAX_ROUTES {
        return Err(format!(
            "{} routes with the exit-node defaults; at most {MAX_ROUTES} are accepted",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn advertisements_are_checked() {
        let overlay = nets(&["100.64.0.0/10", "fd7a:1:2::/48"]);
        let ok = check_advertised(
            &nets(&["10.1.0.0/24", "192.168.1.0/24", "10.1.0.0/24"]),
            false,
            &overlay,
        );
        assert_eq!(ok.unwrap(), nets(&["10.1.0.0/24", "192.168.1.0/24"]));
        let exit = check_advertised(&nets(&["0.0.0.0/0"]), true, &overlay).unwrap();
        assert_eq!(exit, nets(&["0.0.0.0/0", "::/0"]));
        let exit = check_advertised(&[], true, &overlay).unwrap();
        assert_eq!(exit, nets(&["0.0.0.0/0", "::/0"]));
        for (bad, why) in [
            ("100.64.1.0/24", "overlay"),
            ("100.0.0.0/8", "overlay"),
            ("fd7a:1:2:3::/64", "overlay"),
            ("0.0.0.0/0", "exit_node"),
            ("::/0", "exit_node"),
            ("10.1.0.1/24", "canonical"),
        ] {
            let e = check_advertised(&nets(&[bad]), false, &overlay).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let many: Vec<IpNet> = (0..=MAX_ROUTES as u32)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap())
            .collect();
        assert!(check_advertised(&many, false, &overlay)
            .unwrap_err()
            .contains("at most"));
        assert!(check_advertised(&many[..MAX_ROUTES - 1], true, &overlay).is_err());
    }
}
