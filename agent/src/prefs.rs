//! What this device offers and uses as routes, set by `zmesh up` and kept in its
//! enrollment: advertised subnet routes (`--advertise-routes`), the exit-node offer
//! (`--advertise-exit-node`), the exit node in use (`--exit-node`), whether the local
//! networks stay reachable beside it, and source NAT on a router. Checked here, on
//! the device, before the console sees them (the console checks again).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// What this device offers and uses; part of its enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutePrefs {
    #[serde(default)]
    pub advertise_routes: Vec<IpNet>,
    #[serde(default)]
    pub advertise_exit_node: bool,
    /// The exit node in use, by device name.
    #[serde(default)]
    pub exit_node: Option<String>,
    /// With an exit node: keep the local networks reachable directly.
    #[serde(default)]
    pub exit_node_allow_lan: bool,
    /// As a router: masquerade forwarded traffic behind this device's LAN address, so
    /// the LAN needs no route back to the overlay.
    #[serde(default = "yes")]
    pub snat: bool,
}

fn yes() -> bool {
    true
}

impl Default for RoutePrefs {
    fn default() -> Self {
        RoutePrefs {
            advertise_routes: Vec::new(),
            advertise_exit_node: false,
            exit_node: None,
            exit_node_allow_lan: false,
            snat: true,
        }
    }
}

/// `zmesh up` flags; `None` keeps the current preference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteFlags {
    #[serde(default)]
    pub advertise_routes: Option<Vec<IpNet>>,
    #[serde(default)]
    pub advertise_exit_node: Option<bool>,
    /// `Some("")`: stop using an exit node.
    #[serde(default)]
    pub exit_node: Option<String>,
    #[serde(default)]
    pub exit_node_allow_lan: Option<bool>,
    #[serde(default)]
    pub snat: Option<bool>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("--advertise-routes: {0} is a default route; offer it with --advertise-exit-node")]
    DefaultRoute(IpNet),
    #[error("--advertise-routes: {0} overlaps the mesh's own addresses ({1})")]
    Overlay(IpNet, IpNet),
    #[error("--advertise-routes: {0} has host bits set; did you mean {1}?")]
    HostBits(IpNet, IpNet),
    #[error("--advertise-routes: at most {MAX_ROUTES} routes")]
    TooMany,
}

/// Most prefixes one device advertises.
pub const MAX_ROUTES: usize = 64;

/// The `0.0.0.0/0` and `::/0` an exit node offers.
pub fn default_routes() -> [IpNet; 2] {
    [
        "0.0.0.0/0".parse().expect("literal"),
        "::/0".parse().expect("literal"),
    ]
}

/// Checks advertised routes against the overlay ranges (the console checks again).
pub fn check_routes(routes: &[IpNet], overlay: &[IpNet]) -> Result<(), RouteError> {
    if routes.len() > MAX_ROUTES {
        return Err(RouteError::TooMany);
    }
    for r in routes {
        if r.prefix_len() == 0 {
            return Err(RouteError::DefaultRoute(*r));
        }
        if r.trunc() != *r {
            return Err(RouteError::HostBits(*r, r.trunc()));
        }
        if let Some(o) = overlay.iter().find(|o| o.contains(r) || r.contains(*o)) {
            return Err(RouteError::Overlay(*r, *o));
        }
    }
    Ok(())
}

impl RoutePrefs {
    /// These preferences with `f` applied.
    pub fn merged(&self, f: &RouteFlags) -> RoutePrefs {
        let mut p = self.clone();
        if let Some(r) = &f.advertise_routes {
            // As given: host bits are refused by `check_routes`, not silently dropped.
            p.advertise_routes = r.clone();
            p.advertise_routes.sort();
            p.advertise_routes.dedup();
        }
        if let Some(b) = f.advertise_exit_node {
            p.advertise_exit_node = b;
        }
        if let Some(e) = &f.exit_node {
            p.exit_node = Some(e.trim().to_string()).filter(|e| !e.is_empty());
        }
        if let Some(b) = f.exit_node_allow_lan {
            p.exit_node_allow_lan = b;
        }
        if let Some(b) = f.snat {
            p.snat = b;
        }
        p
    }

    /// Whether this device forwards for others (needs IP forwarding).
    pub fn is_router(&self) -> bool {
        !self.advertise_routes.is_empty() || self.advertise_exit_node
    }

    /// What the console is told: the offered prefixes, default routes included when
    /// this is an exit node.
    pub fn advertised(&self) -> (Vec<IpNet>, bool) {
        let mut v = self.advertise_routes.clone();
        if self.advertise_exit_node {
            v.extend(default_routes());
        }
        (v, self.advertise_exit_node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_routes_are_checked() {
        let overlay: Vec<IpNet> = vec![
            "100.64.0.0/10".parse().unwrap(),
            "fd00::/48".parse().unwrap(),
        ];
        let ok: Vec<IpNet> = vec!["10.1.0.0/24".parse().unwrap(), "fd10::/64".parse().unwrap()];
        assert_eq!(check_routes(&ok, &overlay), Ok(()));
        let bad = |s: &str| check_routes(&[s.parse().unwrap()], &overlay).unwrap_err();
        assert!(matches!(bad("0.0.0.0/0"), RouteError::DefaultRoute(_)));
        assert!(matches!(bad("100.64.3.0/24"), RouteError::Overlay(..)));
        assert!(
            matches!(bad("100.0.0.0/8"), RouteError::Overlay(..)),
            "containing the overlay"
        );
        assert!(matches!(bad("10.1.0.1/24"), RouteError::HostBits(..)));
        let p = RoutePrefs::default().merged(&RouteFlags {
            advertise_exit_node: Some(true),
            ..Default::default()
        });
        assert!(p.is_router());
        assert_eq!(p.advertised().0, default_routes().to_vec());
        assert!(p.snat, "source NAT is on by default");
    }
}
