//! Fuzz target: the access policy pipeline (`zmesh_shared::policy`) on any text:
//! parse, validate against a small fixed inventory, compile, and cross-check the
//! compiled filters with `check` and `diff`.
//!
//! Never a panic; every refusal gives at least one reason, placed inside the text; for
//! a valid policy the compiled inbound filters and `check` agree on who may reach whom
//! (on a few protocol/port probes), and a policy's diff with itself is empty.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use zmesh_shared::policy::{check, compile, diff, validate, InvDevice, Inventory, Policy, Proto};
use zmesh_shared::DeviceId;

/// Six devices: two owners, tags, one inactive (the names the seed policies use).
fn inventory() -> &'static Inventory {
    static INV: OnceLock<Inventory> = OnceLock::new();
    INV.get_or_init(|| Inventory {
        devices: (1u8..=6)
            .map(|i| InvDevice { routes: Vec::new(),
                id: format!("dev_{:032x}", i).parse::<DeviceId>().unwrap(),
                name: format!("d{i}"),
                owner: format!("u{}@example.com", i % 2),
                tags: match i {
                    3 => vec!["tag:server".into()],
                    4 => vec!["tag:server".into(), "tag:db".into()],
                    5 => vec!["tag:ci".into()],
                    _ => vec![],
                },
                overlay_v4: Ipv4Addr::new(100, 64, 0, i),
                overlay_v6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i as u16),
                user_owned: i != 5,
                groups: if i == 1 { vec!["group:eng".into()] } else { vec![] },
                active: i != 6,
            })
            .collect(),
    })
}

const PROBES: [(Proto, u16); 5] = [
    (Proto::Tcp, 22),
    (Proto::Udp, 53),
    (Proto::Tcp, 443),
    (Proto::Icmp, 0),
    (Proto::Any, 0),
];

fuzz_target!(|data: &[u8]| {
    // Lossy rather than skipping invalid UTF-8: the replacement characters put
    // multi-byte text everywhere, where byte offsets and columns can go wrong.
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    let lines = text.lines().count() as u32 + 1;
    let p = match Policy::parse(text) {
        Ok(p) => p,
        Err(errs) => {
            assert!(!errs.is_empty(), "refused without a reason");
            for e in &errs {
                assert!(e.line <= lines, "error placed past the end: {e:?}");
            }
            return;
        }
    };
    let inv = inventory();
    if let Err(errs) = validate(&p, inv) {
        assert!(!errs.is_empty(), "invalid without a reason");
        return;
    }
    let c = compile(&p, inv);
    assert!(diff(&p, &p, inv).is_empty(), "a policy differs from itself");
    let active: Vec<&InvDevice> = inv.devices.iter().filter(|d| d.active).collect();
    assert_eq!(c.devices.len(), active.len());
    for s in &active {
        let me = c.get(&s.id).unwrap();
        assert!(!me.has_peer(&s.id));
        assert_eq!(me.peers().count(), me.peer_count());
        for d in &active {
            if s.id == d.id {
                continue;
            }
            let f = &c.get(&d.id).unwrap().filter;
            for (proto, port) in PROBES {
                let want = check(&p, inv, s.id, d.id, proto, port).is_some();
                let got4 = f
                    .iter()
                    .any(|r| r.accepts(IpAddr::V4(s.overlay_v4), proto, port));
                let got6 = f
                    .iter()
                    .any(|r| r.accepts(IpAddr::V6(s.overlay_v6), proto, port));
                assert_eq!(
                    (got4, got6),
                    (want, want),
                    "{} -> {} {proto:?}/{port}: filter and check disagree",
                    s.name,
                    d.name
                );
                if want {
                    assert!(me.has_peer(&d.id) && c.get(&d.id).unwrap().has_peer(&s.id));
                }
            }
        }
    }
});
