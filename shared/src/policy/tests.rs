//! Cross-checks between the compiler, `check` and `diff` on generated inventories,
//! plus the tag-owner helper.

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::ids::DeviceId;

fn inventory(n: u32) -> Inventory {
    let tags = ["tag:server", "tag:ci", "tag:db"];
    Inventory {
        devices: (1..=n)
            .map(|i| InvDevice {
                routes: Vec::new(),
                id: DeviceId::from_uuid(uuid::Uuid::from_u128(i as u128 * 7919)),
                name: format!("d{i}"),
                owner: format!("u{}@example.com", i % 5),
                tags: if i % 3 == 0 {
                    vec![tags[(i as usize / 3) % 3].to_string()]
                } else {
                    vec![]
                },
                overlay_v4: Ipv4Addr::from(0x6440_0000 + i),
                overlay_v6: format!("fd00::{i:x}").parse().unwrap(),
                active: i % 11 != 0,
                user_owned: i % 7 != 0,
                groups: if i % 2 == 0 {
                    vec!["group:eng".into()]
                } else {
                    vec![]
                },
            })
            .collect(),
    }
}

const POLICY: &str = r#"{
  "version": 1,
  "groups": { "group:a": ["user:u1@example.com", "tag:ci", "group:b"], "group:b": ["user:u2@example.com", "d4"] },
  "tag_owners": { "tag:server": ["group:a"], "tag:ci": ["user:u3@example.com"], "tag:db": ["tag:server"] },
  "hosts": { "low": "100.64.0.0/28" },
  "rules": [
    { "src": ["group:a"], "dst": ["tag:server:22,80-90"], "proto": "tcp" },
    { "src": ["tag:server"], "dst": ["tag:db:5432", "low:53"], "proto": "udp" },
    { "src": ["user:u4@example.com", "100.64.0.40/29"], "dst": ["d7:*", "group:b:443"] },
    { "src": ["group:b"], "dst": ["tag:server"], "proto": "icmp" },
  ],
}"#;

#[test]
fn filters_peers_and_check_agree() {
    agree(POLICY, &inventory(60));
    agree(POLICY_SELF, &inventory(60));
}

/// The compiler's filters and peer sets say exactly what `check` says, pair by pair.
fn agree(text: &str, inv: &Inventory) {
    let p = Policy::parse_and_validate(text, inv).unwrap();
    let inv = inv.clone();
    let c = compile(&p, &inv);
    let active: Vec<&InvDevice> = inv.devices.iter().filter(|d| d.active).collect();
    assert_eq!(c.devices.len(), active.len());
    for s in &active {
        for d in &active {
            if s.id == d.id {
                continue;
            }
            let f = &c.get(&d.id).unwrap().filter;
            let mut linked = false;
            for (proto, port) in [
                (Proto::Tcp, 22),
                (Proto::Tcp, 85),
                (Proto::Udp, 53),
                (Proto::Udp, 5432),
                (Proto::Tcp, 443),
                (Proto::Icmp, 0),
                (Proto::Tcp, 1),
            ] {
                let want = check(&p, &inv, s.id, d.id, proto, port).is_some();
                let got = f
                    .iter()
                    .any(|r| r.accepts(IpAddr::V4(s.overlay_v4), proto, port));
                let got6 = f
                    .iter()
                    .any(|r| r.accepts(IpAddr::V6(s.overlay_v6), proto, port));
                assert_eq!(
                    (got, got6),
                    (want, want),
                    "{} -> {} {proto:?}/{port}",
                    s.name,
                    d.name
                );
                linked |= want;
            }
            if linked {
                assert!(
                    c.get(&s.id).unwrap().has_peer(&d.id) && c.get(&d.id).unwrap().has_peer(&s.id)
                );
            }
        }
        let me = c.get(&s.id).unwrap();
        assert!(!me.has_peer(&s.id));
        assert_eq!(me.peers().count(), me.peer_count());
    }
}

#[test]
fn compile_ignores_inventory_order() {
    let inv = inventory(40);
    let p = Policy::parse_and_validate(POLICY, &inv).unwrap();
    let mut rev = inv.clone();
    rev.devices.reverse();
    assert_eq!(compile(&p, &inv), compile(&p, &rev));
}

#[test]
fn diff_is_empty_for_equivalent_policies_and_symmetric() {
    let inv = inventory(40);
    let p = Policy::parse_and_validate(POLICY, &inv).unwrap();
    let same = POLICY.replace(
        r#"["tag:server:22,80-90"]"#,
        r#"["tag:server:80-85", "tag:server:22,86-90"]"#,
    );
    let q = Policy::parse_and_validate(&same, &inv).unwrap();
    assert!(diff(&p, &q, &inv).is_empty());
    let narrower = POLICY.replace("22,80-90", "22");
    let r = Policy::parse_and_validate(&narrower, &inv).unwrap();
    let fwd = diff(&p, &r, &inv);
    assert!(
        !fwd.is_empty()
            && fwd.iter().all(|e| !e.added
                && e.ports
                    == vec![PortRange {
                        first: 80,
                        last: 90
                    }])
    );
    let back = diff(&r, &p, &inv);
    assert_eq!(fwd.len(), back.len());
    assert!(back.iter().all(|e| e.added));
    // the counts a policy save records are the list's, without the list
    assert_eq!(diff_counts(&p, &r, &inv), (0, fwd.len()));
    assert_eq!(diff_counts(&r, &p, &inv), (back.len(), 0));
    assert_eq!(diff_counts(&p, &q, &inv), (0, 0));
}

#[test]
fn tag_owners_expand_groups() {
    let inv = inventory(10);
    let p = Policy::parse_and_validate(POLICY, &inv).unwrap();
    assert!(tag_owner_allows(&p, "user:u1@example.com", "tag:server"));
    assert!(
        tag_owner_allows(&p, "u2@example.com", "tag:server"),
        "nested group"
    );
    assert!(tag_owner_allows(&p, "tag:server", "tag:db"));
    assert!(!tag_owner_allows(&p, "user:u3@example.com", "tag:server"));
    assert!(!tag_owner_allows(&p, "user:u1@example.com", "tag:nope"));
}

#[test]
fn hostile_input_is_refused_cleanly() {
    let inv = inventory(3);
    for t in [
        "",
        "[]",
        "{",
        "{\"version\": 2}",
        "{\"version\":1,\"rules\":[{}]}",
        &"[".repeat(5000),
        "{\"version\":1,\"rules\":\"x\"}",
    ] {
        let e = Policy::parse_and_validate(t, &inv).unwrap_err();
        assert!(!e.is_empty());
    }
    let e = Policy::parse("{\"version\":1,\"rules\":[{\"src\":[1],\"dst\":[\"*:99999\"]}]}")
        .unwrap_err();
    assert_eq!(e.len(), 2, "{e:?}");
}

/// IdP groups (`group:NAME` of the owner, as synced at sign-in) and `autogroup:member`
/// select devices like the policy's own groups, untagged devices only; a group neither
/// defined nor held by anyone is an error with its position.
#[test]
fn identity_provider_groups_and_members() {
    let inv = inventory(30);
    let text = r#"{
  "version": 1,
  "groups": { "group:ops": ["d1"] },
  "tag_owners": { "tag:server": [], "tag:ci": [], "tag:db": [] },
  "rules": [
    { "src": ["group:eng"], "dst": ["tag:server:22"], "proto": "tcp" },
    { "src": ["autogroup:member"], "dst": ["group:ops:443"], "proto": "tcp" },
  ],
}"#;
    let p = Policy::parse_and_validate(text, &inv).unwrap();
    let by_name = |n: &str| inv.devices.iter().find(|d| d.name == n).unwrap();
    let server = inv
        .devices
        .iter()
        .find(|d| d.active && d.tags == ["tag:server"])
        .unwrap();
    for d in inv.devices.iter().filter(|d| d.active && d.id != server.id) {
        let eng = d.tags.is_empty() && d.groups.iter().any(|g| g == "group:eng");
        let ssh = check(&p, &inv, d.id, server.id, Proto::Tcp, 22).is_some();
        assert_eq!(
            ssh, eng,
            "{} groups {:?} tags {:?}",
            d.name, d.groups, d.tags
        );
        let member = d.tags.is_empty() && d.user_owned;
        let d1 = by_name("d1");
        if d.id != d1.id && d1.active {
            let https = check(&p, &inv, d.id, d1.id, Proto::Tcp, 443).is_some();
            assert_eq!(https, member, "{}", d.name);
        }
    }
    let bad = r#"{ "version": 1, "rules": [ { "src": ["group:nobody"], "dst": ["*:*"] } ] }"#;
    let errs = Policy::parse_and_validate(bad, &inv).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.to_string().contains("group:nobody") && e.line == 1),
        "{errs:?}"
    );
}

/// `autogroup:self` beside ordinary destinations in one rule, and alone.
const POLICY_SELF: &str = r#"{
  "version": 1,
  "tag_owners": { "tag:server": [], "tag:ci": [], "tag:db": [] },
  "rules": [
    { "src": ["autogroup:member"], "dst": ["autogroup:self:22"], "proto": "tcp" },
    { "src": ["group:eng"], "dst": ["tag:server:443", "autogroup:self:85,5432"] },
  ],
}"#;

/// `autogroup:self` lets a person's untagged devices reach each other and nothing
/// else: expectations computed from the inventory itself, not from the compiler.
#[test]
fn autogroup_self_is_pairwise_per_person() {
    let inv = inventory(60);
    let p = Policy::parse_and_validate(POLICY_SELF, &inv).unwrap();
    let c = compile(&p, &inv);
    let personal = |d: &InvDevice| d.tags.is_empty() && d.user_owned;
    let eng = |d: &InvDevice| d.tags.is_empty() && d.groups.iter().any(|g| g == "group:eng");
    let active: Vec<&InvDevice> = inv.devices.iter().filter(|d| d.active).collect();
    let mut same_owner_pairs = 0;
    for s in &active {
        for d in &active {
            if s.id == d.id {
                continue;
            }
            let mine = personal(s) && personal(d) && s.owner == d.owner;
            same_owner_pairs += usize::from(mine);
            let server = d.tags == ["tag:server"];
            for (proto, port, want) in [
                (Proto::Tcp, 22, mine),
                (Proto::Tcp, 85, mine && eng(s)),
                (Proto::Udp, 5432, mine && eng(s)),
                (Proto::Tcp, 443, eng(s) && server),
                (Proto::Tcp, 80, false),
            ] {
                let f = &c.get(&d.id).unwrap().filter;
                let got = f
                    .iter()
                    .any(|r| r.accepts(IpAddr::V4(s.overlay_v4), proto, port));
                assert_eq!(got, want, "{} -> {} {proto:?}/{port}", s.name, d.name);
            }
            let linked = mine || (eng(s) && server) || (eng(d) && s.tags == ["tag:server"]);
            assert_eq!(
                c.get(&s.id).unwrap().has_peer(&d.id),
                linked,
                "{} ~ {}",
                s.name,
                d.name
            );
        }
    }
    assert!(
        same_owner_pairs > 10,
        "the inventory must exercise the rule"
    );
    // Adding the rule adds exactly the same-person edges, on port 22.
    let base = r#"{ "version": 1, "tag_owners": { "tag:server": [], "tag:ci": [], "tag:db": [] }, "rules": [] }"#;
    let one = r#"{ "version": 1, "tag_owners": { "tag:server": [], "tag:ci": [], "tag:db": [] },
      "rules": [ { "src": ["autogroup:member"], "dst": ["autogroup:self:22"], "proto": "tcp" } ] }"#;
    let (b, o) = (
        Policy::parse_and_validate(base, &inv).unwrap(),
        Policy::parse_and_validate(one, &inv).unwrap(),
    );
    let edges = diff(&b, &o, &inv);
    assert_eq!(edges.len(), same_owner_pairs);
    let by_id = |id: &DeviceId| inv.devices.iter().find(|d| d.id == *id).unwrap();
    assert!(edges
        .iter()
        .all(|e| e.added && e.proto == Proto::Tcp && by_id(&e.src).owner == by_id(&e.dst).owner));
}

#[test]
fn autogroup_self_is_a_destination_only() {
    let inv = inventory(30);
    for (text, line) in [
        (
            "{ \"version\": 1,\n \"rules\": [ { \"src\": [\"autogroup:self\"], \"dst\": [\"*:*\"] } ] }",
            2,
        ),
        (
            "{ \"version\": 1,\n\n \"groups\": { \"group:x\": [\"autogroup:self\"] } }",
            3,
        ),
        (
            "{ \"version\": 1, \"rules\": [],\n \"tests\": [ { \"src\": \"autogroup:self\", \"accept\": [\"d1:22\"] } ] }",
            2,
        ),
    ] {
        let errs = Policy::parse_and_validate(text, &inv).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.line == line && e.to_string().contains("autogroup:self")),
            "{text}: {errs:?}"
        );
    }
    // A test may name it as a destination: each source's own other devices.
    let ok = |accept: &str| {
        format!(
            r#"{{ "version": 1, "tag_owners": {{ "tag:server": [], "tag:ci": [], "tag:db": [] }},
            "rules": [ {{ "src": ["autogroup:member"], "dst": ["autogroup:self:22"], "proto": "tcp" }} ],
            "tests": [ {{ "src": "user:u1@example.com", {accept} }} ] }}"#
        )
    };
    Policy::parse_and_validate(&ok(r#""accept": ["autogroup:self:22"]"#), &inv).unwrap();
    Policy::parse_and_validate(&ok(r#""deny": ["autogroup:self:23"]"#), &inv).unwrap();
    let errs =
        Policy::parse_and_validate(&ok(r#""deny": ["autogroup:self:22"]"#), &inv).unwrap_err();
    assert!(
        errs[0]
            .to_string()
            .contains("expected deny autogroup:self:22"),
        "{errs:?}"
    );
}
