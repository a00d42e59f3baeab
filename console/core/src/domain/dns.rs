//! Names (DNS): the network's suffix, its default and the rules it must follow. Every
//! device answers as `NAME.SUFFIX` at each agent's resolver; device names are DNS
//! labels already (`names::check_name`), so only the suffix is checked here.

use zmesh_shared::peermap::DnsConfig;

use super::DomainError;
use crate::store::Network;

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
    }
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
