//! The access-policy document model: groups, tag owners, host aliases, rules and
//! self-tests, each element carrying the source position it came from so that
//! validation and reachability answers can point back at the text.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::DeviceId;

/// 1-based line and column (in bytes) in the policy text.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

/// One reason a policy was refused.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyError {
    /// 0 when the reason has no single place in the text.
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl PolicyError {
    pub fn at(pos: Pos, message: impl Into<String>) -> Self {
        PolicyError {
            line: pos.line,
            column: pos.column,
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// Every IP protocol. Port lists restrict TCP and UDP; ICMP and other protocols
    /// are only covered when the ports are `*`.
    #[default]
    Any,
    Tcp,
    Udp,
    /// ICMP and ICMPv6.
    Icmp,
}

impl Proto {
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "any" | "*" => Some(Proto::Any),
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "icmp" => Some(Proto::Icmp),
            _ => None,
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Proto::Any => "any",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// An inclusive port range; text form `22` or `8000-8099`, all ports `0-65535`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const ALL: PortRange = PortRange {
        first: 0,
        last: u16::MAX,
    };
    pub fn one(p: u16) -> Self {
        PortRange { first: p, last: p }
    }
    pub fn contains(&self, p: u16) -> bool {
        self.first <= p && p <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let num = |t: &str| {
            t.parse::<u16>()
                .map_err(|_| format!("invalid port range {s:?}"))
        };
        match s.split_once('-') {
            Some((a, b)) => Ok(PortRange {
                first: num(a)?,
                last: num(b)?,
            }),
            None => num(s).map(PortRange::one),
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Sorts and merges overlapping or adjacent ranges.
pub fn normalize_ports(mut v: Vec<PortRange>) -> Vec<PortRange> {
    v.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(l) if (l.last as u32) + 1 >= r.first as u32 => l.last = l.last.max(r.last),
            _ => out.push(r),
        }
    }
    out
}

/// `a` minus `b`, both normalized.
pub fn subtract_ports(a: &[PortRange], b: &[PortRange]) -> Vec<PortRange> {
    let mut out = Vec::new();
    for r in a {
        let mut cur = Some((r.first as u32, r.last as u32));
        for x in b {
            let Some((f, l)) = cur else { break };
            let (xf, xl) = (x.first as u32, x.last as u32);
            if xl < f || xf > l {
                continue;
            }
            if xf > f {
                out.push(PortRange {
                    first: f as u16,
                    last: (xf - 1) as u16,
                });
            }
            cur = if xl < l { Some((xl + 1, l)) } else { None };
        }
        if let Some((f, l)) = cur {
            out.push(PortRange {
                first: f as u16,
                last: l as u16,
            });
        }
    }
    out
}

pub fn is_all_ports(p: &[PortRange]) -> bool {
    p == [PortRange::ALL]
}

/// Who or what a rule side names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Selector {
    /// Every device (and, as a source, every address).
    Any,
    /// `group:NAME`, stored with its prefix.
    Group(String),
    /// `tag:NAME`, stored with its prefix.
    Tag(String),
    /// `user:EMAIL`: untagged devices this user owns; stores the email only.
    User(String),
    /// `autogroup:member`: every untagged device owned by a person (a user).
    Members,
    /// `autogroup:self`, a destination only: the untagged devices owned by the same
    /// person as the source device. Pairwise, so it is expanded per owner (see
    /// [`super::resolve::Index::rules`]), never resolved to one device set.
    OwnDevices,
    /// `autogroup:internet`, a destination only: every address outside the mesh,
    /// reached through an exit node the source chose (see docs/policy.md).
    Internet,
    /// A device by its name.
    Device(String),
    /// A name from `hosts`.
    Host(String),
    /// An IP or CIDR literal.
    Prefix(IpNet),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Any => f.write_str("*"),
            Selector::Group(s) | Selector::Tag(s) | Selector::Device(s) | Selector::Host(s) => {
                f.write_str(s)
            }
            Selector::User(e) => write!(f, "user:{e}"),
            Selector::Members => f.write_str("autogroup:member"),
            Selector::OwnDevices => f.write_str("autogroup:self"),
            Selector::Internet => f.write_str("autogroup:internet"),
            Selector::Prefix(p) => write!(f, "{p}"),
        }
    }
}

/// A value with the position of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<T> {
    pub v: T,
    pub pos: Pos,
}

/// A destination: whom, and which ports (`[ALL]` when `*` or omitted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dst {
    pub sel: Selector,
    pub ports: Vec<PortRange>,
}

impl fmt::Display for Dst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_all_ports(&self.ports) {
            return write!(f, "{}:*", self.sel);
        }
        let p: Vec<String> = self.ports.iter().map(|p| p.to_string()).collect();
        write!(f, "{}:{}", self.sel, p.join(","))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub src: Vec<Item<Selector>>,
    pub dst: Vec<Item<Dst>>,
    pub proto: Proto,
    /// What the rule is for, in the admin's words; shown in diffs and audit events.
    pub description: Option<String>,
    pub pos: Pos,
}

/// A self-test: `src` must reach every `accept` destination and none of `deny`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTest {
    pub src: Item<Selector>,
    pub proto: Proto,
    pub accept: Vec<Item<Dst>>,
    pub deny: Vec<Item<Dst>>,
    pub pos: Pos,
}

/// A parsed policy. Build one with [`Policy::parse`] (syntax only) or
/// [`Policy::parse_and_validate`] (also checked against an inventory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub version: u32,
    /// Keyed by `group:NAME`; members are users, device names, tags or groups.
    pub groups: BTreeMap<String, Item<Vec<Item<Selector>>>>,
    /// Keyed by `tag:NAME`; owners are users, groups or tags.
    pub tag_owners: BTreeMap<String, Item<Vec<Item<Selector>>>>,
    pub hosts: BTreeMap<String, Item<IpNet>>,
    pub rules: Vec<Rule>,
    pub tests: Vec<PolicyTest>,
    /// Who may have routes approved without an admin (`auto_approvers`).
    pub auto_approvers: AutoApprovers,
}

/// `auto_approvers`: advertised routes approved as soon as they are advertised, when the
/// advertising device matches. A route is approved by an entry whose prefix contains it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoApprovers {
    /// Prefix → devices (users, groups, tags, device names) whose routes within it are
    /// approved.
    pub routes: Vec<(Item<IpNet>, Vec<Item<Selector>>)>,
    /// Devices whose exit-node offer is approved.
    pub exit_node: Vec<Item<Selector>>,
}

/// A device as the policy engine sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvDevice {
    pub id: DeviceId,
    pub name: String,
    /// Owner's email.
    pub owner: String,
    /// Full tag names (`tag:server`). A tagged device is identified by its tags only:
    /// `user:` selectors do not match it.
    #[serde(default)]
    pub tags: Vec<String>,
    pub overlay_v4: Ipv4Addr,
    pub overlay_v6: Ipv6Addr,
    /// Inactive devices (pending, disabled, revoked) are in no peer set and no filter.
    pub active: bool,
    /// Owned by a person (a user), not by a service or an API token.
    #[serde(default)]
    pub user_owned: bool,
    /// The owner's groups at the identity provider (`group:NAME`), as last synced:
    /// `group:NAME` selectors match these devices too (untagged ones only).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Routes an admin (or `auto_approvers`) approved for this device to carry: subnet
    /// prefixes, and `0.0.0.0/0` and `::/0` for an exit node. Unapproved advertisements
    /// are not here: they carry nothing.
    #[serde(default)]
    pub routes: Vec<IpNet>,
}

impl InvDevice {
    pub fn has_addr(&self, net: &IpNet) -> bool {
        net.contains(&IpAddr::V4(self.overlay_v4)) || net.contains(&IpAddr::V6(self.overlay_v6))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub devices: Vec<InvDevice>,
}

/// Which rule accepted: its index in `rules` and where it is written.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleRef {
    pub index: u32,
    pub line: u32,
    pub column: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_set_algebra() {
        let p = |a, b| PortRange { first: a, last: b };
        assert_eq!(
            normalize_ports(vec![p(10, 20), p(21, 22), p(5, 6), p(15, 30)]),
            vec![p(5, 6), p(10, 30)]
        );
        assert_eq!(
            subtract_ports(&[p(0, 100)], &[p(10, 20), p(50, 100)]),
            vec![p(0, 9), p(21, 49)]
        );
        assert_eq!(subtract_ports(&[PortRange::ALL], &[PortRange::ALL]), vec![]);
        assert_eq!(
            normalize_ports(vec![p(0, 65535), p(65535, 65535)]),
            vec![PortRange::ALL]
        );
        assert_eq!("8000-8099".parse::<PortRange>().unwrap(), p(8000, 8099));
    }
}
