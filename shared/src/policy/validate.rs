//! Checks a parsed policy against the inventory: every name must resolve, every tag
//! must be declared in `tag_owners`, groups must not form cycles, and every `tests`
//! expectation must hold. All problems are reported, each with its position.

use std::collections::{BTreeSet, HashSet};

use super::check::Matcher;
use super::model::*;

fn check_sel(p: &Policy, names: &HashSet<&str>, sel: &Item<Selector>, errs: &mut Vec<PolicyError>) {
    match &sel.v {
        // a group is defined in `groups` or is an identity-provider group of some user
        Selector::Group(g) if !p.groups.contains_key(g) && !names.contains(g.as_str()) => {
            errs.push(PolicyError::at(sel.pos, format!("unknown group {g:?}")))
        }
        Selector::Tag(t) if !p.tag_owners.contains_key(t) => errs.push(PolicyError::at(
            sel.pos,
            format!("tag {t:?} is not declared in tag_owners"),
        )),
        Selector::Device(d) if !names.contains(d.as_str()) => errs.push(PolicyError::at(
            sel.pos,
            format!("unknown device or host alias {d:?}"),
        )),
        _ => {}
    }
}

/// Validates `p` against `inv`. Returns every reason, sorted by position.
pub fn validate(p: &Policy, inv: &Inventory) -> Result<(), Vec<PolicyError>> {
    let mut errs = Vec::new();
    // device names, and the IdP groups (`group:…`) of device owners
    let names: HashSet<&str> = inv
        .devices
        .iter()
        .map(|d| d.name.as_str())
        .chain(
            inv.devices
                .iter()
                .flat_map(|d| d.groups.iter().map(String::as_str)),
        )
        .collect();
    for g in p.groups.values() {
        for m in &g.v {
            check_sel(p, &names, m, &mut errs);
        }
    }
    for t in p.tag_owners.values() {
        for m in &t.v {
            check_sel(p, &names, m, &mut errs);
        }
    }
    for m in p
        .auto_approvers
        .routes
        .iter()
        .flat_map(|(_, v)| v)
        .chain(&p.auto_approvers.exit_node)
    {
        check_sel(p, &names, m, &mut errs);
    }
    for r in &p.rules {
        for s in &r.src {
            check_sel(p, &names, s, &mut errs);
        }
        for d in &r.dst {
            check_sel(
                p,
                &names,
                &Item {
                    v: d.v.sel.clone(),
                    pos: d.pos,
                },
                &mut errs,
            );
        }
    }
    for t in &p.tests {
        check_sel(p, &names, &t.src, &mut errs);
        for d in t.accept.iter().chain(&t.deny) {
            check_sel(
                p,
                &names,
                &Item {
                    v: d.v.sel.clone(),
                    pos: d.pos,
                },
                &mut errs,
            );
        }
    }
    let mut undeclared = BTreeSet::new();
    for d in &inv.devices {
        for t in &d.tags {
            if !p.tag_owners.contains_key(t) {
                undeclared.insert((t.clone(), d.name.clone()));
            }
        }
    }
    for (t, d) in undeclared {
        errs.push(PolicyError::at(
            Pos::default(),
            format!("device {d:?} carries tag {t:?}, which is not declared in tag_owners"),
        ));
    }
    group_cycles(p, &mut errs);
    if errs.is_empty() {
        run_tests(p, inv, &mut errs);
    }
    if errs.is_empty() {
        Ok(())
    } else {
        errs.sort();
        errs.dedup();
        Err(errs)
    }
}

fn group_cycles(p: &Policy, errs: &mut Vec<PolicyError>) {
    // Colour DFS; each cycle is reported once, at the group where it closes.
    let mut done: HashSet<&str> = HashSet::new();
    fn visit<'a>(
        p: &'a Policy,
        g: &'a str,
        stack: &mut Vec<&'a str>,
        done: &mut HashSet<&'a str>,
        errs: &mut Vec<PolicyError>,
    ) {
        if done.contains(g) {
            return;
        }
        if let Some(i) = stack.iter().position(|s| *s == g) {
            let mut path: Vec<&str> = stack[i..].to_vec();
            path.push(g);
            let pos = p.groups.get(g).map(|x| x.pos).unwrap_or_default();
            errs.push(PolicyError::at(
                pos,
                format!("group cycle: {}", path.join(" -> ")),
            ));
            return;
        }
        let Some(members) = p.groups.get(g) else {
            return;
        };
        stack.push(g);
        for m in &members.v {
            if let Selector::Group(sub) = &m.v {
                visit(p, sub, stack, done, errs);
            }
        }
        stack.pop();
        done.insert(g);
    }
    for g in p.groups.keys() {
        visit(p, g, &mut Vec::new(), &mut done, errs);
    }
}

fn run_tests(p: &Policy, inv: &Inventory, errs: &mut Vec<PolicyError>) {
    if p.tests.is_empty() {
        return;
    }
    let m = Matcher::new(p, inv, true);
    for (ti, t) in p.tests.iter().enumerate() {
        let name = format!("test {} ({} {})", ti + 1, t.src.v, t.proto.as_str());
        let srcs: Vec<usize> = m.ix.resolve(&t.src.v).iter().collect();
        if srcs.is_empty() {
            errs.push(PolicyError::at(
                t.src.pos,
                format!("{name}: src {} matches no device", t.src.v),
            ));
            continue;
        }
        for (want, list) in [(true, &t.accept), (false, &t.deny)] {
            for d in list {
                // (source, destination) pairs; `autogroup:self` is each source's own
                // other devices.
                let pairs: Vec<(usize, usize)> = if d.v.sel == Selector::OwnDevices {
                    srcs.iter()
                        .flat_map(|&s| {
                            m.ix.own_devices(s)
                                .iter()
                                .filter(move |&x| x != s)
                                .map(move |x| (s, x))
                                .collect::<Vec<_>>()
                        })
                        .collect()
                } else {
                    let dsts: Vec<usize> = m.ix.resolve(&d.v.sel).iter().collect();
                    srcs.iter()
                        .flat_map(|&s| dsts.iter().map(move |&x| (s, x)))
                        .collect()
                };
                if pairs.is_empty() {
                    errs.push(PolicyError::at(
                        d.pos,
                        format!("{name}: destination {} matches no device", d.v.sel),
                    ));
                    continue;
                }
                let port = d.v.ports.first().map(|r| r.first).unwrap_or(0);
                let shown = if t.proto == Proto::Icmp {
                    d.v.sel.to_string()
                } else {
                    format!("{}:{port}", d.v.sel)
                };
                let bad = pairs.iter().find_map(|&(s, x)| {
                    let got = m.accepting(s, x, t.proto, port);
                    (got.is_some() != want).then_some((s, x, got))
                });
                if let Some((s, x, got)) = bad {
                    let (sn, xn) = (&m.ix.devs[s].name, &m.ix.devs[x].name);
                    let msg = match got {
                        None => format!("{name}: expected accept {shown}, but {sn} -> {xn} is denied"),
                        Some(r) => format!(
                            "{name}: expected deny {shown}, but {sn} -> {xn} is accepted by rule {} (line {})",
                            r.index + 1,
                            r.line
                        ),
                    };
                    errs.push(PolicyError::at(d.pos, msg));
                }
            }
        }
    }
}

/// Whether `actor` may assign `tag`. `actor` is `user:EMAIL`, a bare email, or a
/// `tag:NAME` (a tagged device or key acting for that tag). Owners listed as groups
/// are expanded, nested groups included.
pub fn tag_owner_allows(p: &Policy, actor: &str, tag: &str) -> bool {
    let actor = if actor.starts_with("user:") || actor.starts_with("tag:") {
        actor.to_string()
    } else {
        format!("user:{actor}")
    };
    let Some(owners) = p.tag_owners.get(tag) else {
        return false;
    };
    let mut seen = HashSet::new();
    let mut stack: Vec<&Selector> = owners.v.iter().map(|i| &i.v).collect();
    while let Some(s) = stack.pop() {
        match s {
            Selector::Group(g) => {
                if seen.insert(g.as_str()) {
                    if let Some(m) = p.groups.get(g) {
                        stack.extend(m.v.iter().map(|i| &i.v));
                    }
                }
            }
            other => {
                if other.to_string() == actor {
                    return true;
                }
            }
        }
    }
    false
}
