//! Reachability questions: which rule (if any) lets one device reach another on a
//! given protocol and port, and which device-to-device edges a policy change adds
//! or removes. Used by policy `tests`, by the console's "why can't A reach B", and
//! to show an admin the effect of an edit before it is applied.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::edit::RuleSpec;
use super::model::*;
use super::resolve::{proto_port_match, Index, RRule};
use crate::ids::DeviceId;

/// Every rule's resolved sides, for repeated questions against one policy.
pub(crate) struct Matcher<'a> {
    pub ix: Index<'a>,
    /// The resolved rules, in policy order (a rule with `autogroup:self` gives several).
    pub rules: Vec<RRule>,
}

impl<'a> Matcher<'a> {
    pub fn new(p: &'a Policy, inv: &'a Inventory, all: bool) -> Self {
        let ix = Index::new(p, inv, all);
        let rules = ix.rules();
        Matcher { ix, rules }
    }

    /// The first rule that accepts `proto`/`port` from device `s` to device `d`.
    pub fn accepting(&self, s: usize, d: usize, proto: Proto, port: u16) -> Option<RuleRef> {
        let rules = &self.ix.policy.rules;
        self.rules
            .iter()
            .filter(|rr| rr.src.get(s))
            .find(|rr| {
                let r = &rules[rr.rule];
                rr.dst.iter().any(|(ei, b)| {
                    b.get(d) && proto_port_match(r.proto, &r.dst[*ei].v.ports, proto, port)
                })
            })
            .map(|rr| {
                let r = &rules[rr.rule];
                RuleRef {
                    index: rr.rule as u32,
                    line: r.pos.line,
                    column: r.pos.column,
                }
            })
    }
}

/// Which rule accepts `proto` traffic to `port` (ignored for icmp) from `src` to `dst`;
/// `None` means denied. Answers for the policy as written: devices are matched whether
/// or not they are active.
pub fn check(
    p: &Policy,
    inv: &Inventory,
    src: DeviceId,
    dst: DeviceId,
    proto: Proto,
    port: u16,
) -> Option<RuleRef> {
    let m = Matcher::new(p, inv, true);
    let (s, d) = (m.ix.position(&src)?, m.ix.position(&dst)?);
    m.accepting(s, d, proto, port)
}

/// One device-to-device permission that a policy change adds or removes.
/// `tcp`/`udp` carry port ranges; `icmp` (whole) has no ports,
/// and `any` (no ports) stands for the IP protocols other than tcp, udp and icmp.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EdgeChange {
    pub src: DeviceId,
    pub dst: DeviceId,
    pub proto: Proto,
    pub ports: Vec<PortRange>,
    pub added: bool,
}

const PROTOS: [Proto; 4] = [Proto::Tcp, Proto::Udp, Proto::Icmp, Proto::Any];
type Perms = [Vec<PortRange>; 4];

fn add_perm(perm: &mut Perms, proto: Proto, ports: &[PortRange]) {
    let all = is_all_ports(ports);
    let mut put = |k: usize, p: &[PortRange]| {
        perm[k].extend_from_slice(p);
        perm[k] = normalize_ports(std::mem::take(&mut perm[k]));
    };
    match proto {
        Proto::Tcp => put(0, ports),
        Proto::Udp => put(1, ports),
        Proto::Icmp => put(2, &[PortRange::ALL]),
        Proto::Any => {
            put(0, ports);
            put(1, ports);
            if all {
                put(2, &[PortRange::ALL]);
                put(3, &[PortRange::ALL]);
            }
        }
    }
}

/// Per destination device: its inbound profile, (resolved rule, ports) pairs in order.
fn profiles(m: &Matcher) -> Vec<Vec<(usize, Vec<PortRange>)>> {
    let n = m.ix.n();
    let mut prof: Vec<Vec<(usize, Vec<PortRange>)>> = vec![Vec::new(); n];
    for (k, rr) in m.rules.iter().enumerate() {
        if rr.src.is_empty() {
            continue;
        }
        let r = &m.ix.policy.rules[rr.rule];
        let mut per_dev: HashMap<usize, Vec<PortRange>> = HashMap::new();
        for (ei, b) in &rr.dst {
            for d in b.iter() {
                per_dev
                    .entry(d)
                    .or_default()
                    .extend_from_slice(&r.dst[*ei].v.ports);
            }
        }
        for (d, ports) in per_dev {
            prof[d].push((k, normalize_ports(ports)));
        }
    }
    prof
}

/// The permissions each source device has into a device with this profile.
fn grants(m: &Matcher, prof: &[(usize, Vec<PortRange>)]) -> BTreeMap<usize, Perms> {
    let mut out: BTreeMap<usize, Perms> = BTreeMap::new();
    for (k, ports) in prof {
        let rr = &m.rules[*k];
        let proto = m.ix.policy.rules[rr.rule].proto;
        for s in rr.src.iter() {
            add_perm(out.entry(s).or_default(), proto, ports);
        }
    }
    out
}

/// Every (source, destination, protocol, port range) edge between active devices that
/// `new` adds or removes relative to `old`, sorted. Ports are merged per device pair and
/// protocol, so a rule split or reordering that changes nothing yields nothing.
pub fn diff(old: &Policy, new: &Policy, inv: &Inventory) -> Vec<EdgeChange> {
    let mut out = Vec::new();
    each_edge_change(old, new, inv, |ix, s, d, k, ports, added| {
        out.push(EdgeChange {
            src: ix.devs[s].id,
            dst: ix.devs[d].id,
            proto: PROTOS[k],
            ports: if k < 2 { ports.to_vec() } else { Vec::new() },
            added,
        })
    });
    out.sort();
    out
}

/// How many edges [`diff`] would list as added and as removed, without building the
/// list: saving a policy only records these counts, and a port added to a full mesh
/// of N devices changes N*(N-1) edges (a million at 1,000 devices took ~0.5 s to list
/// and sort, 100 million at 10,000 would take GBs).
pub fn diff_counts(old: &Policy, new: &Policy, inv: &Inventory) -> (usize, usize) {
    let (mut added, mut removed) = (0, 0);
    each_edge_change(old, new, inv, |_, _, _, _, _, a| {
        if a {
            added += 1;
        } else {
            removed += 1;
        }
    });
    (added, removed)
}

/// Calls `f(index, source, destination, protocol slot, ports, added)` for every edge
/// change between `old` and `new`, in no particular order.
fn each_edge_change(
    old: &Policy,
    new: &Policy,
    inv: &Inventory,
    mut f: impl FnMut(&Index, usize, usize, usize, &[PortRange], bool),
) {
    let (mo, mn) = (Matcher::new(old, inv, false), Matcher::new(new, inv, false));
    let (po, pn) = (profiles(&mo), profiles(&mn));
    // Devices with the same pair of profiles see the same change; compute it once.
    type Key<'k> = (&'k [(usize, Vec<PortRange>)], &'k [(usize, Vec<PortRange>)]);
    // (source, protocol slot, ports, added)
    type Change = (usize, usize, Vec<PortRange>, bool);
    let mut cache: HashMap<Key, Vec<Change>> = HashMap::new();
    for d in 0..mo.ix.n() {
        let key: Key = (&po[d], &pn[d]);
        let changes = cache.entry(key).or_insert_with(|| {
            let (go, gn) = (grants(&mo, key.0), grants(&mn, key.1));
            let mut ch = Vec::new();
            let empty: Perms = Default::default();
            let srcs: std::collections::BTreeSet<usize> =
                go.keys().chain(gn.keys()).copied().collect();
            for s in srcs {
                let (a, b) = (go.get(&s).unwrap_or(&empty), gn.get(&s).unwrap_or(&empty));
                for k in 0..4 {
                    let added = subtract_ports(&b[k], &a[k]);
                    let removed = subtract_ports(&a[k], &b[k]);
                    if !added.is_empty() {
                        ch.push((s, k, added, true));
                    }
                    if !removed.is_empty() {
                        ch.push((s, k, removed, false));
                    }
                }
            }
            ch
        });
        for (s, k, ports, added) in changes.iter() {
            if *s != d {
                f(&mo.ix, *s, d, *k, ports, *added);
            }
        }
    }
}

/// A rule in canonical form (selectors and ports as the engine reads them), so the
/// same rule written twice compares equal.
pub fn rule_summary(r: &Rule) -> RuleSpec {
    RuleSpec {
        src: r.src.iter().map(|s| s.v.to_string()).collect(),
        dst: r.dst.iter().map(|d| d.v.to_string()).collect(),
        proto: r.proto,
        description: r.description.clone(),
    }
}

/// The rules `new` adds and removes relative to `old`, as multisets (order and
/// formatting do not count; a changed description is a removal and an addition).
/// Shown beside the edge diff and recorded in the policy's audit event.
pub fn rule_changes(old: &Policy, new: &Policy) -> (Vec<RuleSpec>, Vec<RuleSpec>) {
    let one_side = |a: &Policy, b: &Policy| {
        let mut left: HashMap<String, usize> = HashMap::new();
        for r in &b.rules {
            *left.entry(format!("{:?}", rule_summary(r))).or_default() += 1;
        }
        let mut out = Vec::new();
        for r in &a.rules {
            let s = rule_summary(r);
            match left.get_mut(&format!("{s:?}")) {
                Some(n) if *n > 0 => *n -= 1,
                _ => out.push(s),
            }
        }
        out
    };
    (one_side(new, old), one_side(old, new))
}
