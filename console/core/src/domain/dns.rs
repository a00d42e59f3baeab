//! Names (DNS): the network's suffix, its default, admins' extra records and split-DNS
//! entries, and the rules they follow. Every device answers as `NAME.SUFFIX` at each
//! agent's resolver; device names are DNS labels already (`names::check_name`).

use std::net::IpAddr;

use zmesh_shared::peermap::{resolver_v4, DnsConfig, DnsRecord, SplitDns};

use super::DomainError;
use crate::store::{Network, NetworkDns};

/// Most extra records a network holds (every map carries them all).
pub const MAX_RECORDS: usize = 1000;
/// Most split-DNS entries a network holds.
pub const MAX_SPLIT: usize = 64;
/// Most resolvers one split-DNS entry names.
pub const MAX_SPLIT_RESOLVERS: usize = 4;

/// Parent domain of every default suffix: `NETWORK-NAME.zmesh.internal` (`.internal`
/// is reserved for private use, so it never collides with a public name).
pub const DEFAULT_PARENT: &str = "zmesh.internal";

/// The suffix in force: the admin's, else `NETWORK-NAME.zmesh.internal`.
pub fn suffix(net: &Network) -> String {
    match &net.dns_suffix {
        Some(s) => s.clone(),
        None => format!("{}.{DEFAULT_PARENT}", net.name.to_ascii_lowercase()),
    }
}

/// What the network's maps carry about names.
pub fn config(net: &Network) -> DnsConfig {
    DnsConfig {
        suffix: suffix(net),
        records: net.dns_records.clone(),
        split: net.dns_split.clone(),
    }
}

fn labels_ok(s: &str) -> bool {
    s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

fn parse_ip(field: &str, s: &str) -> Result<IpAddr, DomainError> {
    let ip: IpAddr = s
        .trim()
        .parse()
        .map_err(|_| DomainError::invalid(field, format!("{s:?} is not an IP address")))?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(DomainError::invalid(
            field,
            format!("{ip} cannot be a DNS answer or resolver"),
        ));
    }
    Ok(ip)
}

/// An extra record: `name` relative to the suffix (`wiki`, `db.eu`), `ip` v4 or v6.
pub fn check_record(name: &str, ip: &str) -> Result<DnsRecord, DomainError> {
    let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if n.is_empty() || n.len() > 200 || !labels_ok(&n) {
        return Err(DomainError::invalid(
            "name",
            format!(
                "{name:?} is not a valid record name: labels (between dots) of 1-63 letters, \
                 digits or '-', not at either end; written relative to the suffix"
            ),
        ));
    }
    Ok(DnsRecord {
        name: n,
        ip: parse_ip("ip", ip)?,
    })
}

/// Adds a record (a record already there is kept once).
pub fn add_record(cur: &NetworkDns, r: DnsRecord) -> Result<NetworkDns, DomainError> {
    let mut new = cur.clone();
    if !new.records.contains(&r) {
        if new.records.len() >= MAX_RECORDS {
            return Err(DomainError::invalid(
                "name",
                format!("at most {MAX_RECORDS} records"),
            ));
        }
        new.records.push(r);
        new.records.sort();
    }
    Ok(new)
}

/// A split-DNS entry: `domain` (not the suffix nor under it) answered by `resolvers`.
pub fn check_split(
    net: &Network,
    domain: &str,
    resolvers: &[String],
) -> Result<SplitDns, DomainError> {
    let d = check_suffix("domain", domain)?;
    let ours = suffix(net);
    if d == ours || d.ends_with(&format!(".{ours}")) {
        return Err(DomainError::invalid(
            "domain",
            format!("{d} is the network's own suffix {ours} (or under it), answered by the agents"),
        ));
    }
    if resolvers.is_empty() || resolvers.len() > MAX_SPLIT_RESOLVERS {
        return Err(DomainError::invalid(
            "resolvers",
            format!("give 1 to {MAX_SPLIT_RESOLVERS} resolver addresses"),
        ));
    }
    let own = IpAddr::V4(resolver_v4(net.prefix_v4));
    let mut ips = vec![];
    for (i, r) in resolvers.iter().enumerate() {
        let ip = parse_ip(&format!("resolvers[{i}]"), r)?;
        if ip == own {
            return Err(DomainError::invalid(
                format!("resolvers[{i}]"),
                format!("{ip} is the agents' own resolver"),
            ));
        }
        ips.push(ip);
    }
    Ok(SplitDns {
        domain: d,
        resolvers: ips,
    })
}

/// Adds or replaces the entry for its domain.
pub fn put_split(cur: &NetworkDns, s: SplitDns) -> Result<NetworkDns, DomainError> {
    let mut new = cur.clone();
    new.split.retain(|e| e.domain != s.domain);
    if new.split.len() >= MAX_SPLIT {
        return Err(DomainError::invalid(
            "domain",
            format!("at most {MAX_SPLIT} split-DNS domains"),
        ));
    }
    new.split.push(s);
    new.split.sort();
    Ok(new)
}

/// Checks an admin's suffix and returns it normalised (lower case, no trailing dot):
/// 1 to 253 characters in labels of 1-63 letters, digits or '-' (not at either end of
/// a label), at least one label, and not all digits at the end (no IP look-alike).
pub fn check_suffix(field: &str, s: &str) -> Result<String, DomainError> {
    let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let bad = |why: &str| {
        Err(DomainError::invalid(
            field,
            format!("{s:?} is not a valid DNS domain: {why}"),
        ))
    };
    if s.is_empty() || s.len() > 253 {
        return bad("use 1 to 253 characters");
    }
    for label in s.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return bad(
                "each label (between dots) is 1-63 letters, digits or '-', not at either end",
            );
        }
    }
    if s.rsplit('.')
        .next()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return bad("the last label must not be all digits");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_split_entries_are_checked() {
        let r = check_record("Wiki.", "100.64.9.9").unwrap();
        assert_eq!(
            (r.name.as_str(), r.ip.to_string()),
            ("wiki", "100.64.9.9".into())
        );
        assert!(check_record("db.eu", "fd00::9").is_ok());
        for (n, ip, field) in [
            ("bad_name", "10.0.0.1", "name"),
            ("", "10.0.0.1", "name"),
            ("a..b", "10.0.0.1", "name"),
            ("ok", "10.0.0", "ip"),
            ("ok", "0.0.0.0", "ip"),
            ("ok", "ff02::1", "ip"),
        ] {
            let e = check_record(n, ip).unwrap_err();
            assert!(
                matches!(&e, DomainError::Invalid { field: f, .. } if f == field),
                "{n:?} {ip:?}: {e}"
            );
        }
        let net = crate::domain::peermap::tests::snapshot(vec![]).network;
        let s = check_split(&net, "Corp.Example", &["100.64.0.7".into()]).unwrap();
        assert_eq!(s.domain, "corp.example");
        for (d, rs, field) in [
            ("default.zmesh.internal", vec!["10.0.0.1"], "domain"),
            ("x.default.zmesh.internal", vec!["10.0.0.1"], "domain"),
            ("a..b", vec!["10.0.0.1"], "domain"),
            ("corp.example", vec![], "resolvers"),
            ("corp.example", vec!["nope"], "resolvers[0]"),
            (
                "corp.example",
                vec!["10.0.0.1", "100.64.0.0"],
                "resolvers[1]",
            ),
        ] {
            let rs: Vec<String> = rs.into_iter().map(String::from).collect();
            let e = check_split(&net, d, &rs).unwrap_err();
            assert!(
                matches!(&e, DomainError::Invalid { field: f, .. } if f == field),
                "{d:?} {rs:?}: {e}"
            );
        }
        let cur = NetworkDns::default();
        let one = put_split(&cur, s.clone()).unwrap();
        assert_eq!(put_split(&one, s).unwrap().split.len(), 1);
        let r = check_record("wiki", "10.1.1.1").unwrap();
        let with = add_record(&cur, r.clone()).unwrap();
        assert_eq!(add_record(&with, r).unwrap().records.len(), 1);
    }

    #[test]
    fn suffixes_are_checked_and_normalised() {
        assert_eq!(
            check_suffix("suffix", "Corp.Example.").unwrap(),
            "corp.example"
        );
        assert_eq!(check_suffix("suffix", "mesh").unwrap(), "mesh");
        for bad in [
            "",
            ".",
            "a..b",
            "-a.b",
            "a-.b",
            "a_b.c",
            "a b",
            "1.2.3.4",
            &"a".repeat(64),
            &format!("{}.x", "a.".repeat(130)),
        ] {
            let e = check_suffix("suffix", bad).unwrap_err();
            assert!(e.to_string().contains("suffix"), "{bad:?}: {e}");
        }
    }
}
