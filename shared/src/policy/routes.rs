//! Subnet routes and exit nodes in the compiled policy. A device may carry approved
//! routes (`InvDevice::routes`: LAN prefixes, or `0.0.0.0/0` and `::/0` for an exit
//! node). A rule whose destination is an address prefix or host alias inside such a
//! route, or `autogroup:internet`, makes two things:
//!
//! - each source device gets a [`RouteGrant`]: "send traffic for this prefix through
//!   that router" (the router becomes its peer, the prefix its allowed IPs there);
//! - the router gets a [`FilterRule`] with `dst` set: it forwards to that prefix only
//!   what the rule allows (the receiver enforces, here for its LAN).
//!
//! Only explicit prefixes, host aliases and `autogroup:internet` reach routes: `*`
//! means every *device*, so approving a route never opens a LAN by itself.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::compile::FilterRule;
use super::model::*;
use super::resolve::{Index, RRule};
use crate::ids::DeviceId;

/// "Traffic for `prefix` may go through device `via`." `exit_node`: the prefix is a
/// default route (`0.0.0.0/0` or `::/0`) offered by an exit node, used only when the
/// device chooses that exit node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RouteGrant {
    pub via: DeviceId,
    pub prefix: IpNet,
    pub exit_node: bool,
}

/// What the route pass adds to the device-to-device compilation, by device index.
#[derive(Default)]
pub(crate) struct RoutePass {
    pub grants: BTreeMap<usize, BTreeSet<RouteGrant>>,
    /// Filter rules for routers: forwarded traffic they accept.
    pub filters: BTreeMap<usize, Vec<FilterRule>>,
    /// Extra links (source device, router).
    pub links: BTreeSet<(usize, usize)>,
}

fn is_default(n: &IpNet) -> bool {
    n.prefix_len() == 0
}

/// The part of route `r` a destination `t` names, if any (the smaller of the two when
/// one contains the other). Default routes only serve `autogroup:internet`.
fn overlap(r: &IpNet, t: &IpNet) -> Option<IpNet> {
    if is_default(r) {
        return None;
    }
    if r.contains(t) {
        Some(*t)
    } else if t.contains(r) {
        Some(*r)
    } else {
        None
    }
}

pub(crate) fn route_pass(p: &Policy, ix: &Index, rules: &[RRule]) -> RoutePass {
    let mut out = RoutePass::default();
    let routers: Vec<usize> = (0..ix.n())
        .filter(|&i| !ix.devs[i].routes.is_empty())
        .collect();
    if routers.is_empty() {
        return out;
    }
    for rr in rules {
        let rule = &p.rules[rr.rule];
        let mut src_nets: Option<Vec<IpNet>> = None;
        for (ei, _) in &rr.dst {
            let entry = &rule.dst[*ei].v;
            let (targets, internet): (Vec<IpNet>, bool) = match &entry.sel {
                Selector::Prefix(n) => (vec![*n], false),
                Selector::Host(h) => (ix.host(h).into_iter().collect(), false),
                Selector::Internet => (Vec::new(), true),
                _ => continue,
            };
            for &r in &routers {
                let mut prefixes = Vec::new();
                for route in &ix.devs[r].routes {
                    if internet {
                        if is_default(route) {
                            prefixes.push((*route, true));
                        }
                    } else {
                        prefixes.extend(
                            targets
                                .iter()
                                .filter_map(|t| overlap(route, t))
                                .map(|n| (n, false)),
                        );
                    }
                }
                if prefixes.is_empty() {
                    continue;
                }
                let mut any_src = false;
                for s in rr.src.iter().filter(|&s| s != r) {
                    any_src = true;
                    out.links.insert((s, r));
                    let g = out.grants.entry(s).or_default();
                    for &(prefix, exit_node) in &prefixes {
                        g.insert(RouteGrant {
                            via: ix.devs[r].id,
                            prefix,
                            exit_node,
                        });
                    }
                }
                if !any_src && rr.literal.is_empty() {
                    continue;
                }
                let nets = src_nets.get_or_insert_with(|| {
                    let mut v = rr.literal.clone();
                    for i in rr.src.iter() {
                        v.extend(ix.device_nets(i));
                    }
                    IpNet::aggregate(&v)
                });
                out.filters.entry(r).or_default().push(FilterRule {
                    src: nets.clone(),
                    dst: IpNet::aggregate(&prefixes.iter().map(|(n, _)| *n).collect::<Vec<_>>()),
                    proto: rule.proto,
                    ports: entry.ports.clone(),
                    rule: rr.rule as u32,
                });
            }
        }
    }
    out
}

/// Whether `auto_approvers` approves `prefix` advertised by the device at `i`: an exit
/// node's default route by `exit_node`, a subnet by a `routes` entry containing it.
pub(crate) fn auto_approved(p: &Policy, ix: &Index, i: usize, prefix: &IpNet) -> bool {
    let matches = |sels: &[Item<Selector>]| sels.iter().any(|s| ix.resolve(&s.v).get(i));
    if is_default(prefix) {
        return matches(&p.auto_approvers.exit_node);
    }
    p.auto_approvers
        .routes
        .iter()
        .any(|(net, sels)| net.v.contains(prefix) && matches(sels))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::super::{compile, route_auto_approved, InvDevice, Inventory};
    use super::*;

    fn dev(i: u8, name: &str, routes: &[&str]) -> InvDevice {
        InvDevice {
            id: DeviceId::from_uuid(uuid::Uuid::from_u128(i as u128)),
            name: name.into(),
            owner: "o@example.com".into(),
            tags: vec![],
            overlay_v4: Ipv4Addr::new(100, 64, 0, i),
            overlay_v6: format!("fd00::{i}").parse().unwrap(),
            active: true,
            user_owned: false,
            groups: vec![],
            routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    const P: &str = r#"{
      "version": 1,
      "groups": { "group:eng": ["laptop"] },
      "hosts": { "lan": "10.1.0.0/24" },
      "auto_approvers": { "routes": { "10.0.0.0/8": ["router"] }, "exit_node": ["exit"] },
      "rules": [
        { "src": ["group:eng"], "dst": ["lan:80"], "proto": "tcp" },
        { "src": ["group:eng"], "dst": ["autogroup:internet:*"] },
        { "src": ["other"], "dst": ["*:*"] },
      ],
    }"#;

    #[test]
    fn routes_need_a_rule_and_the_router_enforces_them() {
        let inv = Inventory {
            devices: vec![
                dev(1, "laptop", &[]),
                dev(2, "router", &["10.1.0.0/16"]),
                dev(3, "exit", &["0.0.0.0/0", "::/0"]),
                dev(4, "other", &[]),
            ],
        };
        let p = Policy::parse_and_validate(P, &inv).unwrap();
        let c = compile(&p, &inv);
        let id = |i: usize| inv.devices[i].id;
        let laptop = c.get(&id(0)).unwrap();
        let want: Vec<RouteGrant> = vec![
            RouteGrant {
                via: id(1),
                prefix: "10.1.0.0/24".parse().unwrap(),
                exit_node: false,
            },
            RouteGrant {
                via: id(2),
                prefix: "0.0.0.0/0".parse().unwrap(),
                exit_node: true,
            },
            RouteGrant {
                via: id(2),
                prefix: "::/0".parse().unwrap(),
                exit_node: true,
            },
        ];
        let mut got = laptop.routes.to_vec();
        got.sort();
        assert_eq!(got, want);
        assert!(laptop.has_peer(&id(1)) && laptop.has_peer(&id(2)));
        // `*` reaches devices, not the LAN behind them
        let other = c.get(&id(3)).unwrap();
        assert!(other.routes.is_empty());
        // the router forwards exactly what the rule allows, and nothing to itself
        let router = c.get(&id(1)).unwrap();
        assert!(router.has_peer(&id(0)));
        let l: IpAddr = "100.64.0.1".parse().unwrap();
        let lan: IpAddr = "10.1.0.5".parse().unwrap();
        let fwd = |src: IpAddr, dst: IpAddr, port| {
            router
                .filter
                .iter()
                .any(|r| r.accepts_forward(src, dst, Proto::Tcp, port))
        };
        assert!(fwd(l, lan, 80));
        assert!(!fwd(l, lan, 22), "port not in the rule");
        assert!(
            !fwd(l, "10.1.1.5".parse().unwrap(), 80),
            "inside the route, outside the rule"
        );
        assert!(
            !fwd("100.64.0.4".parse().unwrap(), lan, 80),
            "other may not"
        );
        assert!(
            !router.filter.iter().any(|r| r.accepts(l, Proto::Tcp, 80)),
            "not to the router itself"
        );
        let exit = c.get(&id(2)).unwrap();
        assert!(exit.filter.iter().any(|r| r.accepts_forward(
            l,
            "192.0.2.7".parse().unwrap(),
            Proto::Udp,
            53
        )));

        let ok = |i: usize, n: &str| route_auto_approved(&p, &inv, &id(i), &n.parse().unwrap());
        assert!(ok(1, "10.1.0.0/16"));
        assert!(!ok(1, "192.168.0.0/24"), "outside the approver's prefix");
        assert!(!ok(1, "0.0.0.0/0"), "a router is not an exit node");
        assert!(ok(2, "0.0.0.0/0") && ok(2, "::/0"));
        assert!(!ok(3, "10.1.0.0/24"));
    }

    #[test]
    fn internet_is_a_destination_only_and_approvers_are_checked() {
        let e =
            Policy::parse(r#"{"version":1,"rules":[{"src":["autogroup:internet"],"dst":["*"]}]}"#)
                .unwrap_err();
        assert!(e[0].message.contains("only be a destination"), "{e:?}");
        let e = Policy::parse(r#"{"version":1,"auto_approvers":{"routes":{"nope":["x"]}}}"#)
            .unwrap_err();
        assert!(e[0].message.contains("not an IP prefix"), "{e:?}");
        let e = Policy::parse(r#"{"version":1,"auto_approvers":{"exit":["x"]}}"#).unwrap_err();
        assert!(e[0].message.contains("unknown field"), "{e:?}");
        let p = Policy::parse(r#"{"version":1,"auto_approvers":{"exit_node":["group:ghost"]}}"#)
            .unwrap();
        assert!(
            crate::policy::validate(&p, &Inventory::default()).is_err(),
            "unknown group refused"
        );
    }
}
