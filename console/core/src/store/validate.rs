//! Syntax rules for what admins and agents name things: device names are DNS labels
//! (they become `name.<network>` in MagicDNS-style lookups later), tags are short
//! lower-case words. Checked before anything touches the database.

use super::StoreError;

const MAX_LABEL: usize = 63;

/// A device name: a DNS label, 1..=63 of `[A-Za-z0-9-]`, not starting or ending with `-`.
/// Uniqueness is case-insensitive, so `Laptop` and `laptop` collide.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > MAX_LABEL {
        return Err(StoreError::invalid("name", "must be 1 to 63 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(StoreError::invalid(
            "name",
            "only letters, digits and '-' are allowed (a DNS label)",
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(StoreError::invalid(
            "name",
            "must not start or end with '-'",
        ));
    }
    Ok(())
}

/// Checks and canonicalises tags: an optional `tag:` prefix is dropped, the rest must be
/// `[a-z0-9-]{1,63}`; the result is sorted and free of duplicates.
pub fn normalize_tags(tags: &[String]) -> Result<Vec<String>, StoreError> {
    if tags.len() > 64 {
        return Err(StoreError::invalid("tags", "at most 64 tags"));
    }
    let mut out = Vec::with_capacity(tags.len());
    for t in tags {
        let bare = t.strip_prefix("tag:").unwrap_or(t);
        let ok = !bare.is_empty()
            && bare.len() <= MAX_LABEL
            && bare
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            let shown: String = t.chars().take(80).collect();
            return Err(StoreError::invalid(
                "tags",
                format!("{shown:?} is not a tag: expected [a-z0-9-]{{1,63}}, optionally prefixed with \"tag:\""),
            ));
        }
        out.push(bare.to_string());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The name a device gets when it asks for none: the first label of its hostname,
/// lower-cased, anything outside `[a-z0-9-]` turned into `-`, runs of `-` collapsed,
/// cut so that a `-NNNNN` suffix still fits in 63 characters. `device` when nothing is left.
pub fn derive_name_base(hostname: Option<&str>) -> String {
    let first = hostname.unwrap_or("").split('.').next().unwrap_or("");
    let mut s = String::with_capacity(first.len());
    for c in first.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && (s.is_empty() || s.ends_with('-')) {
            continue;
        }
        s.push(c);
    }
    s.truncate(MAX_LABEL - 8);
    let s = s.trim_end_matches('-').to_string();
    if s.is_empty() {
        "device".to_string()
    } else {
        s
    }
}

/// The first of `base`, `base-2`, `base-3`, … not in `taken` (lower-case names).
pub(crate) fn first_free_name(base: &str, taken: &std::collections::HashSet<String>) -> String {
    if !taken.contains(base) {
        return base.to_string();
    }
    // bounded: `taken` has finitely many entries, so one of the first len+2 is free
    (2..=taken.len() + 2)
        .map(|n| format!("{base}-{n}"))
        .find(|c| !taken.contains(c))
        .unwrap_or_else(|| format!("{base}-{}", taken.len() + 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        validate_name("laptop-1").unwrap();
        validate_name("Laptop").unwrap();
        for bad in ["", "-a", "a-", "a.b", "a b", "é", &"a".repeat(64)] {
            assert!(
                matches!(
                    validate_name(bad),
                    Err(StoreError::Invalid { field: "name", .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn tags() {
        let t = normalize_tags(&["tag:web".into(), "db".into(), "web".into()]).unwrap();
        assert_eq!(t, vec!["db".to_string(), "web".to_string()]);
        for bad in ["", "tag:", "Web", "a_b", "tag:x y"] {
            assert!(normalize_tags(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_names() {
        assert_eq!(derive_name_base(Some("My_Laptop.example.com")), "my-laptop");
        assert_eq!(derive_name_base(Some("--x--y--")), "x-y");
        assert_eq!(derive_name_base(Some("...")), "device");
        assert_eq!(derive_name_base(None), "device");
        let long = derive_name_base(Some(&"a".repeat(200)));
        assert!(long.len() <= 55);
        validate_name(&format!("{long}-99999")).unwrap();
        let taken: std::collections::HashSet<String> = ["pc", "pc-2", "pc-4"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(first_free_name("pc", &taken), "pc-3");
        assert_eq!(first_free_name("laptop", &taken), "laptop");
    }
}
