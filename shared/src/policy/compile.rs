//! Compiles a policy for an inventory into what each device is sent: the peers it
//! may reach or be reached by (no others: unlinked devices never learn of each other)
//! and its inbound filter. Devices with the same rule memberships share one peer list
//! and one filter (`Arc`), which keeps `*` rules over thousands of devices cheap.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::model::*;
use super::resolve::{proto_port_match, Bits, Index};
pub use super::routes::RouteGrant;
use super::routes::{auto_approved, route_pass};
use crate::ids::DeviceId;

/// One inbound permission: packets from `src` of `proto` to `ports` are accepted.
/// `ports` apply to tcp and udp; with `proto: any`, icmp and other protocols pass only
/// when `ports` is all ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FilterRule {
    pub src: Vec<IpNet>,
    /// Empty: packets to this device itself. Otherwise packets this device forwards to
    /// these prefixes (a subnet router's LAN, an exit node's internet): see
    /// [`super::routes`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst: Vec<IpNet>,
    pub proto: Proto,
    pub ports: Vec<PortRange>,
    /// Index in the policy's `rules` of the rule that grants this.
    pub rule: u32,
}

impl FilterRule {
    /// Whether this rule accepts a packet; `proto` is the packet's (never `Any` for
    /// tcp/udp/icmp; `Any` for other IP protocols), `port` its destination port.
    pub fn accepts(&self, src: std::net::IpAddr, proto: Proto, port: u16) -> bool {
        self.dst.is_empty()
            && proto_port_match(self.proto, &self.ports, proto, port)
            && self.src.iter().any(|n| n.contains(&src))
    }

    /// Whether this rule lets the device forward a packet to `dst`, an address that is
    /// not its own (subnet router, exit node).
    pub fn accepts_forward(
        &self,
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        proto: Proto,
        port: u16,
    ) -> bool {
        self.dst.iter().any(|n| n.contains(&dst))
            && proto_port_match(self.proto, &self.ports, proto, port)
            && self.src.iter().any(|n| n.contains(&src))
    }
}

/// What one device gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePolicy {
    me: DeviceId,
    /// Sorted; may contain `me`, which [`DevicePolicy::peers`] skips.
    linked: Arc<[DeviceId]>,
    pub filter: Arc<[FilterRule]>,
    /// Prefixes this device may send through routers and exit nodes, sorted.
    pub routes: Arc<[RouteGrant]>,
}

impl DevicePolicy {
    /// Peer device ids, sorted, never the device itself.
    pub fn peers(&self) -> impl Iterator<Item = DeviceId> + '_ {
        self.linked.iter().copied().filter(move |d| *d != self.me)
    }
    pub fn has_peer(&self, id: &DeviceId) -> bool {
        *id != self.me && self.linked.binary_search(id).is_ok()
    }
    /// The sorted linked ids (may contain the device itself). Devices of one class share
    /// this allocation, so pointer equality tells that two devices link the same set.
    pub fn linked(&self) -> &Arc<[DeviceId]> {
        &self.linked
    }
    pub fn peer_count(&self) -> usize {
        self.linked.len() - usize::from(self.linked.binary_search(&self.me).is_ok())
    }
}

/// The compiled policy: one entry per active device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    pub devices: BTreeMap<DeviceId, DevicePolicy>,
}

impl Compiled {
    pub fn get(&self, id: &DeviceId) -> Option<&DevicePolicy> {
        self.devices.get(id)
    }
}

/// Groups equal keys into classes; returns the class of each item and the class keys.
fn classes<K: std::hash::Hash + Eq + Clone>(keys: impl Iterator<Item = K>) -> (Vec<usize>, Vec<K>) {
    let mut map: HashMap<K, usize> = HashMap::new();
    let mut reps = Vec::new();
    let of = keys
        .map(|k| {
            *map.entry(k.clone()).or_insert_with(|| {
                reps.push(k);
                reps.len() - 1
            })
        })
        .collect();
    (of, reps)
}

/// Whether the policy's `auto_approvers` approve `prefix` advertised by device `id`
/// (an active device of `inv`), so no admin needs to.
pub fn route_auto_approved(p: &Policy, inv: &Inventory, id: &DeviceId, prefix: &IpNet) -> bool {
    let ix = Index::new(p, inv, true);
    match ix.position(id) {
        Some(i) => auto_approved(p, &ix, i, prefix),
        None => false,
    }
}

/// Compiles `p` for the active devices of `inv`. Pure and deterministic: the same input
/// gives the same output, whatever the inventory order.
pub fn compile(p: &Policy, inv: &Inventory) -> Compiled {
    let ix = Index::new(p, inv, false);
    let n = ix.n();
    let rules = ix.rules();
    let nr = rules.len();
    let mut src: Vec<Bits> = Vec::with_capacity(nr);
    let mut dst_any: Vec<Bits> = Vec::with_capacity(nr);
    // Per device: (resolved rule, dst entry) pairs that cover it, in order.
    let mut covers: Vec<Vec<(u32, u32)>> = vec![Vec::new(); n];
    let mut literal: Vec<Vec<IpNet>> = Vec::with_capacity(nr);
    for (k, r) in rules.iter().enumerate() {
        let mut da = Bits::empty(n);
        for (ei, b) in &r.dst {
            for d in b.iter() {
                covers[d].push((k as u32, *ei as u32));
            }
            da.or(b);
        }
        src.push(r.src.clone());
        dst_any.push(da);
        literal.push(r.literal.clone());
    }

    // Peers: a device's links are the union of the destinations of the rules it is a
    // source of, and the sources of the rules it is a destination of.
    let mut src_sig = vec![Bits::empty(nr); n];
    let mut dst_sig = vec![Bits::empty(nr); n];
    for ri in 0..nr {
        for i in src[ri].iter() {
            src_sig[i].set(ri);
        }
        for i in dst_any[ri].iter() {
            dst_sig[i].set(ri);
        }
    }
    let (src_cls, src_reps) = classes(src_sig.into_iter());
    let (dst_cls, dst_reps) = classes(dst_sig.into_iter());
    let union = |sig: &Bits, sets: &[Bits]| {
        let mut u = Bits::empty(n);
        for r in sig.iter() {
            u.or(&sets[r]);
        }
        u
    };
    let out_u: Vec<Bits> = src_reps.iter().map(|s| union(s, &dst_any)).collect();
    let in_u: Vec<Bits> = dst_reps.iter().map(|s| union(s, &src)).collect();
    let (pair_cls, pair_reps) = classes((0..n).map(|i| (src_cls[i], dst_cls[i])));
    let linked: Vec<Arc<[DeviceId]>> = pair_reps
        .iter()
        .map(|&(a, b)| {
            let mut u = out_u[a].clone();
            u.or(&in_u[b]);
            u.iter().map(|i| ix.devs[i].id).collect()
        })
        .collect();

    // Filters: one per distinct set of covering (rule, entry) pairs. A rule's source
    // addresses are computed at most once.
    let mut src_nets: Vec<Option<Vec<IpNet>>> = vec![None; nr];
    let (f_cls, f_reps) = classes(covers.into_iter());
    let filters: Vec<Arc<[FilterRule]>> = f_reps
        .iter()
        .map(|cov| {
            let mut out: Vec<FilterRule> = Vec::new();
            // The resolved rule that made `out`'s last entry: entries of one resolved rule
            // share their sources, so their ports merge.
            let mut last_k = None;
            for (k, ei) in cov {
                let (ri, ei) = (*k as usize, *ei as usize);
                let orig = rules[ri].rule;
                let ports = &p.rules[orig].dst[ei].v.ports;
                if let Some(last) = out.last_mut().filter(|_| last_k == Some(ri)) {
                    last.ports = normalize_ports(last.ports.iter().chain(ports).copied().collect());
                    continue;
                }
                let nets = src_nets[ri].get_or_insert_with(|| {
                    let mut v = literal[ri].clone();
                    let covered_by_lit = |a: &IpNet| literal[ri].iter().any(|l| l.contains(a));
                    for i in src[ri].iter() {
                        for net in ix.device_nets(i) {
                            if !covered_by_lit(&net) {
                                v.push(net);
                            }
                        }
                    }
                    IpNet::aggregate(&v)
                });
                if nets.is_empty() {
                    continue;
                }
                out.push(FilterRule {
                    src: nets.clone(),
                    dst: Vec::new(),
                    proto: p.rules[orig].proto,
                    ports: ports.clone(),
                    rule: orig as u32,
                });
                last_k = Some(ri);
            }
            out.into()
        })
        .collect();

    // Routes are rare: their devices get their own allocations.
    let mut rp = route_pass(p, &ix, &rules);
    let mut extra: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &(s, r) in &rp.links {
        extra.entry(s).or_default().push(r);
        extra.entry(r).or_default().push(s);
    }
    let no_routes: Arc<[RouteGrant]> = Arc::new([]);
    let devices = (0..n)
        .map(|i| {
            let id = ix.devs[i].id;
            let mut linked = linked[pair_cls[i]].clone();
            if let Some(more) = extra.get(&i) {
                let mut v: Vec<DeviceId> = linked.iter().copied().collect();
                v.extend(more.iter().map(|&j| ix.devs[j].id));
                v.sort();
                v.dedup();
                linked = v.into();
            }
            let mut filter = filters[f_cls[i]].clone();
            if let Some(fwd) = rp.filters.remove(&i) {
                filter = filter.iter().cloned().chain(fwd).collect();
            }
            let routes = match rp.grants.remove(&i) {
                Some(g) => g.into_iter().collect(),
                None => no_routes.clone(),
            };
            (
                id,
                DevicePolicy {
                    me: id,
                    linked,
                    filter,
                    routes,
                },
            )
        })
        .collect();
    Compiled { devices }
}
