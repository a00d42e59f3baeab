//! Text to [`Policy`]: the lenient JSON front end, then the document shape (known
//! fields, value types), selectors and port lists. Every problem found is collected
//! with its position; only a JSON syntax error stops the walk early.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::json::{self, JVal, LineIndex, SJson};
use super::model::*;

/// Largest policy text accepted, so a hostile upload cannot exhaust memory.
pub const MAX_POLICY_BYTES: usize = 4 << 20;

struct Cx<'a> {
    idx: &'a LineIndex,
    errs: Vec<PolicyError>,
}

impl Cx<'_> {
    fn pos(&self, j: &SJson) -> Pos {
        self.idx.pos(j.at)
    }
    fn err(&mut self, j: &SJson, m: impl Into<String>) {
        let p = self.pos(j);
        self.errs.push(PolicyError::at(p, m));
    }
    fn str<'j>(&mut self, j: &'j SJson, what: &str) -> Option<&'j str> {
        match &j.v {
            JVal::Str(s) => Some(s),
            other => {
                self.err(
                    j,
                    format!("{what} must be a string, found {}", other.kind()),
                );
                None
            }
        }
    }
    fn arr<'j>(&mut self, j: &'j SJson, what: &str) -> &'j [SJson] {
        match &j.v {
            JVal::Arr(a) => a,
            other => {
                self.err(
                    j,
                    format!("{what} must be an array, found {}", other.kind()),
                );
                &[]
            }
        }
    }
    fn obj<'j>(&mut self, j: &'j SJson, what: &str) -> &'j [(SJson, SJson)] {
        match &j.v {
            JVal::Obj(o) => o,
            other => {
                self.err(
                    j,
                    format!("{what} must be an object, found {}", other.kind()),
                );
                &[]
            }
        }
    }
}

fn key(k: &SJson) -> &str {
    match &k.v {
        JVal::Str(s) => s,
        _ => "",
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn parse_prefix(s: &str) -> Option<IpNet> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(n.trunc());
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

/// Parses a selector. `hosts` decides whether a bare name is a host alias or a device.
pub fn parse_selector(s: &str, hosts: &BTreeMap<String, Item<IpNet>>) -> Result<Selector, String> {
    if s == "*" {
        return Ok(Selector::Any);
    }
    for (prefix, mk) in [
        ("group:", Selector::Group as fn(String) -> Selector),
        ("tag:", Selector::Tag as fn(String) -> Selector),
    ] {
        if let Some(name) = s.strip_prefix(prefix) {
            if !valid_name(name) {
                return Err(format!(
                    "invalid name in {s:?}: use letters, digits, '-', '_', '.'"
                ));
            }
            return Ok(mk(s.to_string()));
        }
    }
    if let Some(g) = s.strip_prefix("autogroup:") {
        return match g {
            "member" => Ok(Selector::Members),
            "self" => Ok(Selector::OwnDevices),
            "internet" => Ok(Selector::Internet),
            _ => Err(format!(
                "unknown autogroup {s:?}: autogroup:member, autogroup:self and autogroup:internet are supported"
            )),
        };
    }
    if let Some(email) = s.strip_prefix("user:") {
        if email.is_empty() || !email.contains('@') || email.contains(char::is_whitespace) {
            return Err(format!("invalid user {s:?}: expected user:EMAIL"));
        }
        return Ok(Selector::User(email.to_string()));
    }
    if let Some(p) = parse_prefix(s) {
        return Ok(Selector::Prefix(p));
    }
    if s.contains('/') || s.contains(':') {
        return Err(format!("invalid selector {s:?}"));
    }
    if hosts.contains_key(s) {
        return Ok(Selector::Host(s.to_string()));
    }
    if valid_name(s) {
        return Ok(Selector::Device(s.to_string()));
    }
    Err(format!("invalid selector {s:?}"))
}

fn is_port_syntax(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b == b',' || b == b'-' || b == b'*')
}

/// Parses a port list (`*`, `N`, `N-M`, comma separated), collecting every bad piece.
pub fn parse_ports(s: &str) -> Result<Vec<PortRange>, Vec<String>> {
    if s == "*" {
        return Ok(vec![PortRange::ALL]);
    }
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for piece in s.split(',') {
        let num = |t: &str| -> Result<u16, String> {
            let n: u64 = t
                .parse()
                .map_err(|_| format!("invalid port {t:?} in {s:?}"))?;
            if n == 0 {
                return Err(format!("port 0 is not allowed (in {s:?})"));
            }
            if n > 65535 {
                return Err(format!("port {n} is out of range 1-65535 (in {s:?})"));
            }
            Ok(n as u16)
        };
        let r = match piece.split_once('-') {
            Some((a, b)) => match (num(a), num(b)) {
                (Ok(a), Ok(b)) if a > b => Err(format!("port range {piece:?} is reversed")),
                (Ok(a), Ok(b)) => Ok(PortRange { first: a, last: b }),
                (Err(e), _) | (_, Err(e)) => Err(e),
            },
            None => num(piece).map(PortRange::one),
        };
        match r {
            Ok(r) => out.push(r),
            Err(e) => errs.push(e),
        }
    }
    if errs.is_empty() {
        Ok(normalize_ports(out))
    } else {
        Err(errs)
    }
}

/// `autogroup:self` means "the source's own devices": it needs a source to be relative to.
const SELF_ONLY_DST: &str =
    "autogroup:self can only be a destination (it means: the source person's own devices)";
/// `autogroup:internet` is where traffic goes through an exit node: a destination.
const INTERNET_ONLY_DST: &str =
    "autogroup:internet can only be a destination (it means: the internet through an exit node)";

/// Parses `SELECTOR[:PORTS]`; IPv6 literals with ports are written `[fd00::1]:22`.
/// Without ports, all ports are meant.
pub fn parse_dst(s: &str, hosts: &BTreeMap<String, Item<IpNet>>) -> Result<Dst, Vec<String>> {
    let ports = |p: &str| parse_ports(p);
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, tail) = rest
            .split_once(']')
            .ok_or_else(|| vec![format!("missing ']' in {s:?}")])?;
        let net =
            parse_prefix(addr).ok_or_else(|| vec![format!("invalid address {addr:?} in {s:?}")])?;
        let ports = match tail {
            "" => vec![PortRange::ALL],
            t => ports(
                t.strip_prefix(':')
                    .ok_or_else(|| vec![format!("expected ':' after ']' in {s:?}")])?,
            )?,
        };
        return Ok(Dst {
            sel: Selector::Prefix(net),
            ports,
        });
    }
    if let Some((head, tail)) = s.rsplit_once(':') {
        if is_port_syntax(tail) {
            if let Ok(sel) = parse_selector(head, hosts) {
                return Ok(Dst {
                    sel,
                    ports: ports(tail)?,
                });
            }
        }
    }
    parse_selector(s, hosts)
        .map(|sel| Dst {
            sel,
            ports: vec![PortRange::ALL],
        })
        .map_err(|e| vec![e])
}

/// Parses and shape-checks a policy text. Errors come sorted by position.
pub fn parse(text: &str) -> Result<Policy, Vec<PolicyError>> {
    let idx = LineIndex::new(text);
    if text.len() > MAX_POLICY_BYTES {
        return Err(vec![PolicyError::at(
            Pos::default(),
            format!("policy is larger than {MAX_POLICY_BYTES} bytes"),
        )]);
    }
    let clean = json::strip(text).map_err(|(at, m)| vec![PolicyError::at(idx.pos(at), m)])?;
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&clean) {
        let msg = e.to_string();
        // serde_json appends " at line L column C"; the position goes in its own fields.
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        return Err(vec![PolicyError {
            line: e.line() as u32,
            column: e.column() as u32,
            message: msg,
        }]);
    }
    let mut dups = Vec::new();
    let root = json::parse_spanned(&clean, &mut dups);
    let mut cx = Cx {
        idx: &idx,
        errs: Vec::new(),
    };
    for (at, k) in dups {
        cx.errs
            .push(PolicyError::at(idx.pos(at), format!("duplicate key {k:?}")));
    }
    let mut p = Policy {
        version: 0,
        groups: BTreeMap::new(),
        tag_owners: BTreeMap::new(),
        hosts: BTreeMap::new(),
        rules: Vec::new(),
        tests: Vec::new(),
        auto_approvers: AutoApprovers::default(),
    };
    let top = cx.obj(&root, "the policy");
    let field = |name: &str| top.iter().find(|(k, _)| key(k) == name).map(|(_, v)| v);
    for (k, _) in top {
        if ![
            "version",
            "groups",
            "tag_owners",
            "hosts",
            "rules",
            "tests",
            "auto_approvers",
        ]
        .contains(&key(k))
        {
            cx.err(k, format!("unknown field {:?}", key(k)));
        }
    }
    match field("version") {
        None if matches!(root.v, JVal::Obj(_)) => {
            cx.err(&root, "missing field \"version\" (expected 1)")
        }
        None => {}
        Some(v) => match &v.v {
            JVal::Num(n) if n == "1" => p.version = 1,
            _ => cx.err(v, "unsupported version: expected 1"),
        },
    }
    // Hosts first: whether a bare name is a host or a device depends on them.
    if let Some(h) = field("hosts") {
        for (k, v) in cx.obj(h, "hosts") {
            let name = key(k);
            if !valid_name(name) || name.contains(':') {
                cx.err(k, format!("invalid host alias name {name:?}"));
                continue;
            }
            if let Some(s) = cx.str(v, "a host alias") {
                match parse_prefix(s) {
                    Some(n) => {
                        p.hosts.insert(
                            name.to_string(),
                            Item {
                                v: n,
                                pos: cx.pos(v),
                            },
                        );
                    }
                    None => cx.err(
                        v,
                        format!("host {name:?}: {s:?} is not an IP address or prefix"),
                    ),
                }
            }
        }
    }
    let hosts = p.hosts.clone();
    let members = |cx: &mut Cx, j: &SJson, what: &str, allow_group: bool| -> Vec<Item<Selector>> {
        let mut out = Vec::new();
        for m in cx.arr(j, what) {
            let Some(s) = cx.str(m, "a member") else {
                continue;
            };
            match parse_selector(s, &BTreeMap::new()) {
                Ok(sel @ (Selector::User(_) | Selector::Tag(_) | Selector::Device(_))) => {
                    out.push(Item {
                        v: sel,
                        pos: cx.pos(m),
                    })
                }
                Ok(sel @ Selector::Group(_)) if allow_group => out.push(Item {
                    v: sel,
                    pos: cx.pos(m),
                }),
                Ok(_) => unreachable_member(cx, m, s, what),
                Err(e) => cx.err(m, e),
            }
        }
        out
    };
    if let Some(g) = field("groups") {
        for (k, v) in cx.obj(g, "groups") {
            let name = key(k);
            if !name.starts_with("group:") || !valid_name(&name[6..]) {
                cx.err(k, format!("group name {name:?} must look like group:NAME"));
                continue;
            }
            let m = members(&mut cx, v, "group members", true);
            p.groups.insert(
                name.to_string(),
                Item {
                    v: m,
                    pos: cx.pos(k),
                },
            );
        }
    }
    if let Some(t) = field("tag_owners") {
        for (k, v) in cx.obj(t, "tag_owners") {
            let name = key(k);
            if !name.starts_with("tag:") || !valid_name(&name[4..]) {
                cx.err(k, format!("tag name {name:?} must look like tag:NAME"));
                continue;
            }
            let m = members(&mut cx, v, "tag owners", true);
            p.tag_owners.insert(
                name.to_string(),
                Item {
                    v: m,
                    pos: cx.pos(k),
                },
            );
        }
    }
    if let Some(a) = field("auto_approvers") {
        for (k, v) in cx.obj(a, "auto_approvers") {
            match key(k) {
                "routes" => {
                    for (pk, pv) in cx.obj(v, "auto_approvers.routes") {
                        let Some(net) = parse_prefix(key(pk)) else {
                            cx.err(pk, format!("{:?} is not an IP prefix", key(pk)));
                            continue;
                        };
                        let m = members(&mut cx, pv, "route approvers", true);
                        p.auto_approvers.routes.push((
                            Item {
                                v: net,
                                pos: cx.pos(pk),
                            },
                            m,
                        ));
                    }
                }
                "exit_node" => {
                    p.auto_approvers.exit_node = members(&mut cx, v, "exit node approvers", true)
                }
                other => cx.err(
                    k,
                    format!(
                        "unknown field {other:?} in auto_approvers: expected routes or exit_node"
                    ),
                ),
            }
        }
    }
    if let Some(r) = field("rules") {
        for rj in cx.arr(r, "rules") {
            if let Some(rule) = parse_rule(&mut cx, rj, &hosts) {
                p.rules.push(rule);
            }
        }
    }
    if let Some(t) = field("tests") {
        for tj in cx.arr(t, "tests") {
            if let Some(test) = parse_test(&mut cx, tj, &hosts) {
                p.tests.push(test);
            }
        }
    }
    if cx.errs.is_empty() {
        Ok(p)
    } else {
        cx.errs.sort();
        Err(cx.errs)
    }
}

fn unreachable_member(cx: &mut Cx, m: &SJson, s: &str, what: &str) {
    cx.err(
        m,
        format!("{s:?} cannot be one of the {what}: use users, device names, tags or groups"),
    );
}

fn proto_field(cx: &mut Cx, v: Option<&SJson>) -> Proto {
    let Some(v) = v else { return Proto::Any };
    let Some(s) = cx.str(v, "proto") else {
        return Proto::Any;
    };
    Proto::parse(s).unwrap_or_else(|| {
        cx.err(
            v,
            format!("unknown proto {s:?}: expected tcp, udp, icmp or any"),
        );
        Proto::Any
    })
}

fn dst_list(
    cx: &mut Cx,
    j: &SJson,
    what: &str,
    hosts: &BTreeMap<String, Item<IpNet>>,
    proto: Proto,
) -> Vec<Item<Dst>> {
    let mut out = Vec::new();
    for d in cx.arr(j, what) {
        let Some(s) = cx.str(d, "a destination") else {
            continue;
        };
        match parse_dst(s, hosts) {
            Ok(dst) => {
                if proto == Proto::Icmp && !is_all_ports(&dst.ports) {
                    cx.err(d, format!("{s:?}: ports cannot be given for icmp"));
                }
                out.push(Item {
                    v: dst,
                    pos: cx.pos(d),
                });
            }
            Err(es) => {
                for e in es {
                    cx.err(d, e);
                }
            }
        }
    }
    out
}

fn parse_rule(cx: &mut Cx, j: &SJson, hosts: &BTreeMap<String, Item<IpNet>>) -> Option<Rule> {
    let o = cx.obj(j, "a rule");
    if !matches!(j.v, JVal::Obj(_)) {
        return None;
    }
    let f = |n: &str| o.iter().find(|(k, _)| key(k) == n).map(|(_, v)| v);
    for (k, _) in o {
        if !["src", "dst", "proto", "description"].contains(&key(k)) {
            cx.err(k, format!("unknown field {:?} in rule", key(k)));
        }
    }
    let proto = proto_field(cx, f("proto"));
    let mut src = Vec::new();
    match f("src") {
        None => cx.err(j, "rule is missing \"src\""),
        Some(sj) => {
            for s in cx.arr(sj, "src") {
                let Some(t) = cx.str(s, "a source") else {
                    continue;
                };
                match parse_selector(t, hosts) {
                    Ok(Selector::OwnDevices) => cx.err(s, SELF_ONLY_DST),
                    Ok(Selector::Internet) => cx.err(s, INTERNET_ONLY_DST),
                    Ok(sel) => src.push(Item {
                        v: sel,
                        pos: cx.pos(s),
                    }),
                    Err(e) => cx.err(s, e),
                }
            }
        }
    }
    let dst = match f("dst") {
        None => {
            cx.err(j, "rule is missing \"dst\"");
            Vec::new()
        }
        Some(dj) => dst_list(cx, dj, "dst", hosts, proto),
    };
    let description = f("description").and_then(|d| {
        let s = cx.str(d, "a rule description")?;
        match description_problem(s) {
            Some(why) => {
                cx.err(d, why);
                None
            }
            None => Some(s.to_string()),
        }
    });
    Some(Rule {
        src,
        dst,
        proto,
        description,
        pos: cx.pos(j),
    })
}

/// Longest rule description, in characters: a sentence, not a document.
pub const MAX_DESCRIPTION_CHARS: usize = 200;

/// Why a rule description is refused, if it is: it shows in audit events, diffs and
/// one-line listings, so it is one short line of printable text.
pub fn description_problem(s: &str) -> Option<String> {
    if s.chars().count() > MAX_DESCRIPTION_CHARS {
        Some(format!(
            "a rule description is at most {MAX_DESCRIPTION_CHARS} characters"
        ))
    } else if s.chars().any(char::is_control) {
        Some("a rule description is one line of text (no control characters)".into())
    } else {
        None
    }
}

fn parse_test(cx: &mut Cx, j: &SJson, hosts: &BTreeMap<String, Item<IpNet>>) -> Option<PolicyTest> {
    let o = cx.obj(j, "a test");
    if !matches!(j.v, JVal::Obj(_)) {
        return None;
    }
    let f = |n: &str| o.iter().find(|(k, _)| key(k) == n).map(|(_, v)| v);
    for (k, _) in o {
        if !["src", "proto", "accept", "deny"].contains(&key(k)) {
            cx.err(k, format!("unknown field {:?} in test", key(k)));
        }
    }
    // Tests default to tcp: a test is about one concrete connection.
    let proto = match f("proto") {
        None => Proto::Tcp,
        v => proto_field(cx, v),
    };
    let src = match f("src") {
        None => {
            cx.err(j, "test is missing \"src\"");
            return None;
        }
        Some(sj) => {
            let t = cx.str(sj, "test src")?;
            match parse_selector(t, hosts) {
                Ok(Selector::OwnDevices) => {
                    cx.err(sj, SELF_ONLY_DST);
                    return None;
                }
                Ok(Selector::Internet) => {
                    cx.err(sj, INTERNET_ONLY_DST);
                    return None;
                }
                Ok(sel) => Item {
                    v: sel,
                    pos: cx.pos(sj),
                },
                Err(e) => {
                    cx.err(sj, e);
                    return None;
                }
            }
        }
    };
    let mut list = |name: &str| -> Vec<Item<Dst>> {
        let Some(l) = f(name) else { return Vec::new() };
        let v = dst_list(cx, l, name, hosts, proto);
        for d in &v {
            let single = d.v.ports.len() == 1 && d.v.ports[0].first == d.v.ports[0].last;
            if proto != Proto::Icmp && !single {
                cx.errs.push(PolicyError::at(
                    d.pos,
                    format!("test {name} entry {} must name exactly one port", d.v.sel),
                ));
            }
        }
        v
    };
    let accept = list("accept");
    let deny = list("deny");
    Some(PolicyTest {
        src,
        proto,
        accept,
        deny,
        pos: cx.pos(j),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h() -> BTreeMap<String, Item<IpNet>> {
        let mut m = BTreeMap::new();
        m.insert(
            "db-net".to_string(),
            Item {
                v: "100.64.10.0/24".parse().unwrap(),
                pos: Pos::default(),
            },
        );
        m
    }

    #[test]
    fn dst_forms() {
        let d = parse_dst("tag:server:22,443", &h()).unwrap();
        assert_eq!(d.sel, Selector::Tag("tag:server".into()));
        assert_eq!(d.ports, vec![PortRange::one(22), PortRange::one(443)]);
        assert_eq!(
            parse_dst("db-net:5432", &h()).unwrap().sel,
            Selector::Host("db-net".into())
        );
        assert_eq!(
            parse_dst("laptop-1", &h()).unwrap().ports,
            vec![PortRange::ALL]
        );
        assert_eq!(parse_dst("*:*", &h()).unwrap().sel, Selector::Any);
        let v6 = parse_dst("[fd00::1]:80-81", &h()).unwrap();
        assert_eq!(v6.sel, Selector::Prefix("fd00::1/128".parse().unwrap()));
        assert_eq!(
            v6.ports,
            vec![PortRange {
                first: 80,
                last: 81
            }]
        );
        assert_eq!(
            parse_dst("fd00::/64", &h()).unwrap().ports,
            vec![PortRange::ALL]
        );
        assert_eq!(
            parse_dst("user:a@b.c:22", &h()).unwrap().sel,
            Selector::User("a@b.c".into())
        );
        let e = parse_dst("x:0,70000,9-3", &h()).unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(parse_dst("tag:bad name", &h()).is_err());
    }
}
