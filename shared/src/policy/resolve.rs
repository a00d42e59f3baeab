//! Selector resolution: an index of the inventory by name, tag, owner and address,
//! and device sets as bitsets, so resolving a rule costs O(devices / 64) per selector
//! instead of a scan per device.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::model::*;

/// A set of device indices.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Bits(pub Vec<u64>);

impl Bits {
    pub fn empty(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    pub fn full(n: usize) -> Self {
        let mut b = Bits::empty(n);
        for i in 0..n {
            b.set(i);
        }
        b
    }
    pub fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    pub fn get(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 == 1
    }
    pub fn or(&mut self, o: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            *a |= b;
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let t = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + t)
            })
        })
    }
}

pub(crate) struct Index<'a> {
    pub devs: Vec<&'a InvDevice>,
    pub policy: &'a Policy,
    by_name: HashMap<&'a str, Vec<usize>>,
    by_tag: HashMap<&'a str, Vec<usize>>,
    by_owner: HashMap<&'a str, Vec<usize>>,
    /// Untagged devices by their owner's IdP groups.
    by_idp_group: HashMap<&'a str, Vec<usize>>,
    members: Vec<usize>,
    /// Untagged devices owned by a person, by owner, in owner order (for `autogroup:self`).
    personal: std::collections::BTreeMap<&'a str, Vec<usize>>,
    by_v4: HashMap<Ipv4Addr, usize>,
    by_v6: HashMap<Ipv6Addr, usize>,
    groups: HashMap<&'a str, Bits>,
}

impl<'a> Index<'a> {
    /// Indexes the devices (only active ones unless `all`), sorted by id so that every
    /// derived list is deterministic.
    pub fn new(policy: &'a Policy, inv: &'a Inventory, all: bool) -> Self {
        let mut devs: Vec<&InvDevice> = inv.devices.iter().filter(|d| all || d.active).collect();
        devs.sort_by_key(|d| d.id);
        devs.dedup_by_key(|d| d.id);
        let mut ix = Index {
            devs,
            policy,
            by_name: HashMap::new(),
            by_tag: HashMap::new(),
            by_owner: HashMap::new(),
            by_idp_group: HashMap::new(),
            members: Vec::new(),
            personal: Default::default(),
            by_v4: HashMap::new(),
            by_v6: HashMap::new(),
            groups: HashMap::new(),
        };
        for (i, d) in ix.devs.iter().enumerate() {
            ix.by_name.entry(d.name.as_str()).or_default().push(i);
            for t in &d.tags {
                ix.by_tag.entry(t.as_str()).or_default().push(i);
            }
            if d.tags.is_empty() {
                ix.by_owner.entry(d.owner.as_str()).or_default().push(i);
                for g in &d.groups {
                    ix.by_idp_group.entry(g.as_str()).or_default().push(i);
                }
                if d.user_owned {
                    ix.members.push(i);
                    ix.personal.entry(d.owner.as_str()).or_default().push(i);
                }
            }
            ix.by_v4.insert(d.overlay_v4, i);
            ix.by_v6.insert(d.overlay_v6, i);
        }
        for g in policy.groups.keys() {
            let mut visiting = Vec::new();
            let b = ix.expand_group(g, &mut visiting);
            ix.groups.insert(g.as_str(), b);
        }
        // IdP groups the policy does not define
        let idp: Vec<&str> = ix.by_idp_group.keys().copied().collect();
        for g in idp {
            if !ix.groups.contains_key(g) {
                let b = ix.set_of(ix.by_idp_group.get(g));
                ix.groups.insert(g, b);
            }
        }
        ix
    }

    pub fn n(&self) -> usize {
        self.devs.len()
    }

    fn set_of(&self, l: Option<&Vec<usize>>) -> Bits {
        let mut b = Bits::empty(self.n());
        for &i in l.into_iter().flatten() {
            b.set(i);
        }
        b
    }

    fn expand_group(&self, g: &'a str, visiting: &mut Vec<&'a str>) -> Bits {
        // the IdP's members of a group count as members of the policy's group of that name
        let mut b = self.set_of(self.by_idp_group.get(g));
        // A cycle is reported by validation; here it just stops the recursion.
        if visiting.contains(&g) {
            return b;
        }
        let Some(members) = self.policy.groups.get(g) else {
            return b;
        };
        visiting.push(g);
        for m in &members.v {
            match &m.v {
                Selector::Group(sub) => b.or(&self.expand_group(sub, visiting)),
                other => b.or(&self.resolve(other)),
            }
        }
        visiting.pop();
        b
    }

    /// Devices whose overlay address lies in `net`.
    pub fn in_prefix(&self, net: &IpNet) -> Bits {
        let mut b = Bits::empty(self.n());
        match net {
            IpNet::V4(n) if n.prefix_len() == 32 => {
                if let Some(&i) = self.by_v4.get(&n.addr()) {
                    b.set(i)
                }
            }
            IpNet::V6(n) if n.prefix_len() == 128 => {
                if let Some(&i) = self.by_v6.get(&n.addr()) {
                    b.set(i)
                }
            }
            _ => {
                for (i, d) in self.devs.iter().enumerate() {
                    if d.has_addr(net) {
                        b.set(i);
                    }
                }
            }
        }
        b
    }

    pub fn host(&self, h: &str) -> Option<IpNet> {
        self.policy.hosts.get(h).map(|i| i.v)
    }

    pub fn resolve(&self, s: &Selector) -> Bits {
        match s {
            Selector::Any => Bits::full(self.n()),
            Selector::Group(g) => self
                .groups
                .get(g.as_str())
                .cloned()
                .unwrap_or_else(|| Bits::empty(self.n())),
            Selector::Tag(t) => self.set_of(self.by_tag.get(t.as_str())),
            Selector::User(u) => self.set_of(self.by_owner.get(u.as_str())),
            Selector::Members => self.set_of(Some(&self.members)),
            // Relative to a source: see `rules` and `own_devices`.
            Selector::OwnDevices | Selector::Internet => Bits::empty(self.n()),
            Selector::Device(d) => self.set_of(self.by_name.get(d.as_str())),
            Selector::Host(h) => match self.host(h) {
                Some(n) => self.in_prefix(&n),
                None => Bits::empty(self.n()),
            },
            Selector::Prefix(n) => self.in_prefix(n),
        }
    }

    /// The devices `autogroup:self` means for source device `i`: the untagged devices of
    /// its owner when `i` is an untagged device of a person, else none.
    pub fn own_devices(&self, i: usize) -> Bits {
        let d = self.devs[i];
        if !d.user_owned || !d.tags.is_empty() {
            return Bits::empty(self.n());
        }
        self.set_of(self.personal.get(d.owner.as_str()))
    }

    /// The policy's rules with their sides resolved. A rule with `autogroup:self`
    /// destinations becomes one resolved rule for its other destinations plus one per
    /// person whose devices are among its sources: sources = that person's source
    /// devices, destinations = that person's devices. The pairwise relation thus turns
    /// into plain (sources, destinations) sets the compiler and checker already handle.
    pub fn rules(&self) -> Vec<RRule> {
        let n = self.n();
        let mut out = Vec::with_capacity(self.policy.rules.len());
        for (ri, r) in self.policy.rules.iter().enumerate() {
            let mut src = Bits::empty(n);
            let mut literal = Vec::new();
            for sel in &r.src {
                src.or(&self.resolve(&sel.v));
                literal.extend(self.literal_prefixes(&sel.v));
            }
            let own: Vec<usize> = (r.dst.iter().enumerate())
                .filter(|(_, e)| e.v.sel == Selector::OwnDevices)
                .map(|(ei, _)| ei)
                .collect();
            let dst: Vec<(usize, Bits)> = (r.dst.iter().enumerate())
                .filter(|(_, e)| e.v.sel != Selector::OwnDevices)
                .map(|(ei, e)| (ei, self.resolve(&e.v.sel)))
                .collect();
            if own.is_empty() || !dst.is_empty() {
                out.push(RRule {
                    rule: ri,
                    src: src.clone(),
                    literal,
                    dst,
                });
            }
            if own.is_empty() {
                continue;
            }
            for devices in self.personal.values() {
                let mut s = Bits::empty(n);
                for &i in devices.iter().filter(|&&i| src.get(i)) {
                    s.set(i);
                }
                if s.is_empty() {
                    continue;
                }
                let mine = self.set_of(Some(devices));
                out.push(RRule {
                    rule: ri,
                    src: s,
                    literal: Vec::new(),
                    dst: own.iter().map(|&ei| (ei, mine.clone())).collect(),
                });
            }
        }
        out
    }

    /// The address prefixes a source selector stands for beyond its devices.
    pub fn literal_prefixes(&self, s: &Selector) -> Vec<IpNet> {
        match s {
            Selector::Any => vec![
                "0.0.0.0/0".parse().expect("literal"),
                "::/0".parse().expect("literal"),
            ],
            Selector::Host(h) => self.host(h).into_iter().collect(),
            Selector::Prefix(n) => vec![*n],
            _ => vec![],
        }
    }

    pub fn device_nets(&self, i: usize) -> [IpNet; 2] {
        let d = self.devs[i];
        [
            IpNet::from(IpAddr::V4(d.overlay_v4)),
            IpNet::from(IpAddr::V6(d.overlay_v6)),
        ]
    }

    pub fn position(&self, id: &crate::ids::DeviceId) -> Option<usize> {
        self.devs.binary_search_by_key(id, |d| d.id).ok()
    }
}

/// A rule with its sides resolved to device sets (see [`Index::rules`]).
pub(crate) struct RRule {
    /// Index of the policy rule this comes from.
    pub rule: usize,
    pub src: Bits,
    /// Source prefixes beyond devices (`*`, hosts, CIDRs).
    pub literal: Vec<IpNet>,
    /// (index of the destination entry in the rule, devices it covers)
    pub dst: Vec<(usize, Bits)>,
}

/// Whether a rule's protocol and ports admit a packet of `proto` to `port`.
pub fn proto_port_match(rule_proto: Proto, ports: &[PortRange], proto: Proto, port: u16) -> bool {
    let all = is_all_ports(ports);
    match (rule_proto, proto) {
        (Proto::Any, Proto::Tcp | Proto::Udp) => ports.iter().any(|r| r.contains(port)),
        (Proto::Any, _) => all,
        (Proto::Icmp, Proto::Icmp) => true,
        (r, p) if r == p => ports.iter().any(|r| r.contains(port)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_iterate_in_order() {
        let mut b = Bits::empty(200);
        for i in [0, 63, 64, 130, 199] {
            b.set(i);
        }
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 63, 64, 130, 199]);
        assert!(b.get(130) && !b.get(131));
        assert_eq!(Bits::full(70).iter().count(), 70);
    }
}
