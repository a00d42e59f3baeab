//! Input rules checked before anything is written, so a rejected change never leaves a
//! half-applied update: device names, tags, token names, lifetimes and descriptions.

use super::DomainError;

/// Longest enrollment key lifetime: one year.
pub const MAX_TTL_SECONDS: u64 = 365 * 24 * 3600;
/// Lifetime of a key created without `ttl_seconds` or `expires_at_ms`.
pub const DEFAULT_TTL_SECONDS: u64 = 24 * 3600;
pub const MAX_TAGS: usize = 32;
pub const MAX_DESCRIPTION: usize = 256;
/// Longest API token lifetime: ten years.
pub const MAX_TOKEN_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// A DNS label: what device names must be (the store re-checks and lower-cases).
pub fn check_name(field: &str, name: &str) -> Result<(), DomainError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            format!(
                "{name:?} is not a valid name: use 1-63 letters, digits or '-', not at either end"
            ),
        ))
    }
}

/// Tags: `[a-z0-9-]{1,63}`, optionally written with a `tag:` prefix.
pub fn check_tags(field: &str, tags: &[String]) -> Result<(), DomainError> {
    if tags.len() > MAX_TAGS {
        return Err(DomainError::invalid(
            field,
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    for (i, t) in tags.iter().enumerate() {
        let bare = t.strip_prefix("tag:").unwrap_or(t);
        let ok = !bare.is_empty()
            && bare.len() <= 63
            && bare
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(DomainError::invalid(
                format!("{field}[{i}]"),
                format!("{t:?} is not a valid tag: use 1-63 of a-z, 0-9, '-' (optionally prefixed tag:)"),
            ));
        }
    }
    Ok(())
}

/// An enrollment key's description.
pub fn check_description(field: &str, d: Option<&str>) -> Result<(), DomainError> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(DomainError::invalid(
            field,
            format!("at most {MAX_DESCRIPTION} characters"),
        )),
        _ => Ok(()),
    }
}

/// An enrollment key's expiry from either a lifetime or an absolute time (not both);
/// at most a year ahead, 24 h when neither is given.
pub fn key_expiry(
    ttl_seconds: Option<u64>,
    expires_at_ms: Option<i64>,
    now_ms: i64,
) -> Result<i64, DomainError> {
    match (ttl_seconds, expires_at_ms) {
        (Some(_), Some(_)) => Err(DomainError::invalid(
            "expires_at_ms",
            "give either ttl_seconds or expires_at_ms, not both",
        )),
        (Some(ttl), None) => {
            if ttl == 0 || ttl > MAX_TTL_SECONDS {
                return Err(DomainError::invalid(
                    "ttl_seconds",
                    format!("must be between 1 and {MAX_TTL_SECONDS} seconds"),
                ));
            }
            Ok(now_ms + ttl as i64 * 1000)
        }
        (None, Some(at)) => {
            if at <= now_ms || at > now_ms + MAX_TTL_SECONDS as i64 * 1000 {
                return Err(DomainError::invalid(
                    "expires_at_ms",
                    "must be in the future and at most one year ahead",
                ));
            }
            Ok(at)
        }
        (None, None) => Ok(now_ms + DEFAULT_TTL_SECONDS as i64 * 1000),
    }
}

/// An API token's name: 1 to 128 printable characters (after trimming).
pub fn check_token_name(field: &str, name: &str) -> Result<(), DomainError> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(DomainError::invalid(field, "1 to 128 printable characters"));
    }
    Ok(())
}

/// An API token's lifetime in seconds.
pub fn check_token_ttl(field: &str, ttl: u64) -> Result<(), DomainError> {
    if !(1..=MAX_TOKEN_TTL_SECONDS).contains(&ttl) {
        return Err(DomainError::invalid(
            field,
            format!("1 to {MAX_TOKEN_TTL_SECONDS}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        assert!(check_name("name", "web-1").is_ok());
        for bad in ["", "-a", "a-", "a b", &"x".repeat(64)] {
            assert!(check_name("name", bad).is_err(), "{bad:?}");
        }
        assert!(check_tags("tags", &["tag:web".into(), "db".into()]).is_ok());
        match check_tags("tags", &["ok".into(), "Bad".into()]) {
            Err(DomainError::Invalid { field, .. }) => assert_eq!(field, "tags[1]"),
            other => panic!("{other:?}"),
        }
        assert!(key_expiry(Some(1), Some(5), 0).is_err());
        assert_eq!(key_expiry(None, None, 0).unwrap(), 86_400_000);
        assert!(key_expiry(Some(0), None, 0).is_err());
    }
}
