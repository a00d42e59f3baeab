//! Request and response bodies of the admin API, shared by the handlers and the CLI,
//! plus the input checks done before anything is written (so a rejected PATCH never
//! leaves a half-applied change).

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use zmesh_shared::audit::Checkpoint;
use zmesh_shared::WgPublicKey;

use crate::error::ApiError;
use crate::store::{AdminTokenRow, DeviceRow, EnrollKeyRow, FlowRow, OwnedToken, Role, UserRow};

/// Longest enrollment key lifetime: one year.
pub const MAX_TTL_SECONDS: u64 = 365 * 24 * 3600;
/// Lifetime of a key created without `ttl_seconds` or `expires_at_ms`.
pub const DEFAULT_TTL_SECONDS: u64 = 24 * 3600;
pub const MAX_TAGS: usize = 32;
pub const MAX_DESCRIPTION: usize = 256;

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollKey {
    /// May enroll many devices (default: one-off).
    #[serde(default)]
    pub reusable: bool,
    /// Devices enrolled with it are active at once (default true); else pending.
    #[serde(default = "yes")]
    pub preapproved: bool,
    #[serde(default)]
    #[schema(max_items = 32)]
    pub tags: Vec<String>,
    /// Lifetime in seconds (1 ..= one year); default 24 h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 31536000)]
    pub ttl_seconds: Option<u64>,
    /// Absolute expiry instead of `ttl_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 256)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnrollKeyCreated {
    /// `zmek1.<secret>.<certificate fingerprint>`: shown once, never stored.
    pub key: String,
    #[serde(flatten)]
    pub enroll_key: EnrollKeyRow,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnrollKeyList {
    pub enroll_keys: Vec<EnrollKeyRow>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceRow>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchDevice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Absent: unchanged; null: never expires; number: expiry in Unix ms.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<i64>)]
    pub key_expires_at_ms: Option<Option<i64>>,
}

/// Distinguishes an explicit `null` (Some(None)) from an absent field (None).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDevice {
    pub name: String,
    pub public_key: WgPublicKey,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<AdminTokenRow>,
}

/// A user's personal tokens, each with its owner.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserTokenList {
    pub tokens: Vec<OwnedToken>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserRow>,
}

/// How the caller signed in.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CallerKindName {
    Token,
    User,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WhoAmI {
    pub kind: CallerKindName,
    pub name: String,
    pub role: Role,
    /// How the caller is recorded in `created_by` and audit actors (`token:ops`).
    pub label: String,
}

/// One page of flow records.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlowList {
    pub flows: Vec<FlowRow>,
    /// Pass as `after` for the next page; null on the last one.
    pub next_after: Option<i64>,
}

/// The end of the audit chain.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditCheckpoints {
    pub head: AuditHead,
    /// Where a pruned chain now starts, if it was ever pruned.
    pub anchor: Option<Checkpoint>,
    pub checkpoints: Vec<Checkpoint>,
    /// The console's Ed25519 key that signs checkpoints, base64.
    pub public_key: String,
}

/// A DNS label: what device names must be (the store re-checks and lower-cases).
pub fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!(
                "{name:?} is not a valid name: use 1-63 letters, digits or '-', not at either end"
            ),
        ))
    }
}

/// Tags: `[a-z0-9-]{1,63}`, optionally written with a `tag:` prefix.
pub fn check_tags(field: &str, tags: &[String]) -> Result<(), ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::invalid(field, format!("at most {MAX_TAGS} tags")));
    }
    for (i, t) in tags.iter().enumerate() {
        let bare = t.strip_prefix("tag:").unwrap_or(t);
        let ok = !bare.is_empty()
            && bare.len() <= 63
            && bare
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(ApiError::invalid(
                format!("{field}[{i}]"),
                format!("{t:?} is not a valid tag: use 1-63 of a-z, 0-9, '-' (optionally prefixed tag:)"),
            ));
        }
    }
    Ok(())
}

impl CreateEnrollKey {
    /// Checks the fields and resolves the expiry against `now_ms`.
    pub fn expiry(&self, now_ms: i64) -> Result<i64, ApiError> {
        check_tags("tags", &self.tags)?;
        if let Some(d) = &self.description {
            if d.chars().count() > MAX_DESCRIPTION {
                return Err(ApiError::invalid(
                    "description",
                    format!("at most {MAX_DESCRIPTION} characters"),
                ));
            }
        }
        match (self.ttl_seconds, self.expires_at_ms) {
            (Some(_), Some(_)) => Err(ApiError::invalid(
                "expires_at_ms",
                "give either ttl_seconds or expires_at_ms, not both",
            )),
            (Some(ttl), None) => {
                if ttl == 0 || ttl > MAX_TTL_SECONDS {
                    return Err(ApiError::invalid(
                        "ttl_seconds",
                        format!("must be between 1 and {MAX_TTL_SECONDS} seconds"),
                    ));
                }
                Ok(now_ms + ttl as i64 * 1000)
            }
            (None, Some(at)) => {
                if at <= now_ms || at > now_ms + MAX_TTL_SECONDS as i64 * 1000 {
                    return Err(ApiError::invalid(
                        "expires_at_ms",
                        "must be in the future and at most one year ahead",
                    ));
                }
                Ok(at)
            }
            (None, None) => Ok(now_ms + DEFAULT_TTL_SECONDS as i64 * 1000),
        }
    }
}
