//! The rules of several networks on one console: network names, overlay ranges (what
//! `serve --overlay-v4/-v6` and `networks create --v4/--v6` accept), the default range
//! of a new network and the overlap check. Pure: the caller passes the networks that
//! exist and a random source.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use rand::Rng;

use super::DomainError;

/// The first network's name (made by `serve` on a fresh data dir; never deleted).
pub const FIRST: &str = crate::store::FIRST_NETWORK;
/// The CGNAT range, the first network's default and where new networks get a /16.
pub const CGNAT: &str = crate::store::FIRST_V4;

/// A network name: a lower-case DNS label (1 to 63 of `a-z 0-9 -`, no `-` at an end):
/// a device name's rule, in lower case only (it is the default DNS suffix's first label
/// and appears in URLs).
pub fn check_name(field: &str, name: &str) -> Result<(), DomainError> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(DomainError::invalid(
            field,
            "a lower-case DNS label: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'",
        ));
    }
    super::names::check_name(field, name)
}

/// An overlay IPv4 range: a canonical prefix of length 8 to 30.
pub fn check_v4(field: &str, s: &str) -> Result<Ipv4Net, DomainError> {
    let n: Ipv4Net = s
        .parse()
        .map_err(|_| DomainError::invalid(field, "expected an IPv4 prefix like 10.77.0.0/16"))?;
    if !(8..=30).contains(&n.prefix_len()) {
        return Err(DomainError::invalid(
            field,
            "the prefix length must be 8 to 30",
        ));
    }
    if n.trunc() != n {
        return Err(DomainError::invalid(
            field,
            format!("host bits are set; did you mean {}?", n.trunc()),
        ));
    }
    Ok(n)
}

/// An overlay IPv6 range: a canonical unique-local (fd00::/8) prefix of length 32 to 64.
pub fn check_v6(field: &str, s: &str) -> Result<Ipv6Net, DomainError> {
    let n: Ipv6Net = s.parse().map_err(|_| {
        DomainError::invalid(field, "expected an IPv6 prefix like fd12:3456:789a::/48")
    })?;
    if n.network().octets()[0] != 0xfd {
        return Err(DomainError::invalid(
            field,
            "must be a unique-local range inside fd00::/8",
        ));
    }
    if !(32..=64).contains(&n.prefix_len()) {
        return Err(DomainError::invalid(
            field,
            "the prefix length must be 32 to 64",
        ));
    }
    if n.trunc() != n {
        return Err(DomainError::invalid(
            field,
            format!("host bits are set; did you mean {}?", n.trunc()),
        ));
    }
    Ok(n)
}

/// A random ULA /48 (fdxx:xxxx:xxxx::/48, RFC 4193).
pub fn random_ula48(rng: &mut impl Rng) -> Ipv6Net {
    let mut b = [0u8; 16];
    b[0] = 0xfd;
    rng.fill(&mut b[1..6]);
    Ipv6Net::new(Ipv6Addr::from(b), 48).expect("48 is a valid prefix length")
}

/// A network as far as ranges go.
#[derive(Debug, Clone)]
pub struct Ranges<'a> {
    pub name: &'a str,
    pub v4: Ipv4Net,
    pub v6: Ipv6Net,
}

fn overlap4(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn overlap6(a: &Ipv6Net, b: &Ipv6Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Whether `n` is the first network with its built-in range, which new networks may
/// overlap (their devices are then told apart by network, not by address).
fn is_shared_first(n: &Ranges<'_>) -> bool {
    n.name == FIRST && n.v4.to_string() == CGNAT
}

/// The network (if any) whose IPv4 range overlaps `v4`.
pub fn v4_overlap<'a>(v4: &Ipv4Net, others: &'a [Ranges<'a>]) -> Option<&'a str> {
    others.iter().find(|o| overlap4(v4, &o.v4)).map(|o| o.name)
}

/// Checks explicit ranges against every other network: an overlap is refused, naming
/// the other network and the field.
pub fn check_free(
    v4: Option<&Ipv4Net>,
    v6: Option<&Ipv6Net>,
    others: &[Ranges<'_>],
) -> Result<(), (String, String)> {
    for o in others {
        if let Some(v4) = v4 {
            if overlap4(v4, &o.v4) {
                return Err((
                    "v4".into(),
                    format!("{v4} overlaps network {:?} ({})", o.name, o.v4),
                ));
            }
        }
        if let Some(v6) = v6 {
            if overlap6(v6, &o.v6) {
                return Err((
                    "v6".into(),
                    format!("{v6} overlaps network {:?} ({})", o.name, o.v6),
                ));
            }
        }
    }
    Ok(())
}

/// A random /16 inside 100.64.0.0/10 that overlaps no other network's range, except
/// the first network's own 100.64.0.0/10, which it may share. `None`: all 64 taken.
pub fn pick_v4(others: &[Ranges<'_>], rng: &mut impl Rng) -> Option<Ipv4Net> {
    let cgnat: Ipv4Net = CGNAT.parse().expect("constant");
    let base = u32::from(cgnat.network());
    let free: Vec<Ipv4Net> = (0..64u32)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(base + (i << 16)), 16).expect("16 is valid"))
        .filter(|c| {
            others
                .iter()
                .filter(|o| !is_shared_first(o))
                .all(|o| !overlap4(c, &o.v4))
        })
        .collect();
    if free.is_empty() {
        None
    } else {
        Some(free[rng.gen_range(0..free.len())])
    }
}

/// A random ULA /48 that overlaps no other network's IPv6 range.
pub fn pick_v6(others: &[Ranges<'_>], rng: &mut impl Rng) -> Ipv6Net {
    loop {
        let c = random_ula48(rng);
        if others.iter().all(|o| !overlap6(&c, &o.v6)) {
            return c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ranges() {
        for ok in ["lab", "a", "lab-2", "x1"] {
            check_name("name", ok).unwrap();
        }
        for bad in ["", "Lab", "-lab", "lab-", "la_b", "lab.x", &"a".repeat(64)] {
            assert!(check_name("name", bad).is_err(), "{bad}");
        }
        assert!(check_v4("v4", "10.77.0.0/16").is_ok());
        assert!(check_v4("v4", "10.77.0.1/16").is_err());
        assert!(check_v4("v4", "10.0.0.0/7").is_err());
        assert!(check_v4("v4", "10.0.0.0/31").is_err());
        assert!(check_v4("v4", "fd00::/48").is_err());
        assert!(check_v6("v6", "fd12:3456:789a::/48").is_ok());
        assert!(check_v6("v6", "2001:db8::/48").is_err());
        assert!(check_v6("v6", "fd12::/16").is_err());
        assert!(check_v6("v6", "fd12:3456:789a::/65").is_err());
    }

    #[test]
    fn new_ranges_avoid_others_but_may_share_the_first() {
        let mut rng = rand::thread_rng();
        let first = Ranges {
            name: FIRST,
            v4: CGNAT.parse().unwrap(),
            v6: "fd00:1::/48".parse().unwrap(),
        };
        let lab = Ranges {
            name: "lab",
            v4: "100.70.0.0/16".parse().unwrap(),
            v6: "fd00:2::/48".parse().unwrap(),
        };
        let all = [first.clone(), lab.clone()];
        for _ in 0..200 {
            let v4 = pick_v4(&all, &mut rng).unwrap();
            assert_eq!(v4.prefix_len(), 16);
            assert!(overlap4(&v4, &first.v4));
            assert_ne!(v4, lab.v4);
            let v6 = pick_v6(&all, &mut rng);
            assert!(check_free(None, Some(&v6), &all).is_ok());
        }
        // explicit ranges that overlap are refused, naming the network
        let (field, msg) =
            check_free(Some(&"100.70.5.0/24".parse().unwrap()), None, &all[1..]).unwrap_err();
        assert_eq!(field, "v4");
        assert!(msg.contains("\"lab\""), "{msg}");
        assert!(check_free(Some(&"10.0.0.0/16".parse().unwrap()), None, &all).is_ok());
        // a first network with a range of its own is avoided too
        let own = [Ranges {
            name: FIRST,
            v4: "100.64.0.0/11".parse().unwrap(),
            v6: "fd00:1::/48".parse().unwrap(),
        }];
        for _ in 0..100 {
            let v4 = pick_v4(&own, &mut rng).unwrap();
            assert!(!overlap4(&v4, &own[0].v4));
        }
    }
}
