//! Request and response bodies of the admin API, shared by the handlers and the CLI.
//! The input rules they are checked against live in `domain::names`.

use serde::{Deserialize, Deserializer, Serialize};
use zmesh_shared::WgPublicKey;

use crate::store::{DeviceRow, EnrollKeyRow};

pub use crate::domain::names::{
    check_name, check_tags, DEFAULT_TTL_SECONDS, MAX_DESCRIPTION, MAX_TAGS, MAX_TTL_SECONDS,
};

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollKey {
    /// May enroll many devices (default: one-off).
    #[serde(default)]
    pub reusable: bool,
    /// Devices enrolled with it are active at once (default true); else pending.
    #[serde(default = "yes")]
    pub preapproved: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Lifetime in seconds (1 ..= one year); default 24 h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Absolute expiry instead of `ttl_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnrollKeyCreated {
    /// `zmek1.<secret>.<certificate fingerprint>`: shown once, never stored.
    pub key: String,
    #[serde(flatten)]
    pub enroll_key: EnrollKeyRow,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnrollKeyList {
    pub enroll_keys: Vec<EnrollKeyRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceList {
    pub devices: Vec<DeviceRow>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    pub key_expires_at_ms: Option<Option<i64>>,
}

/// Distinguishes an explicit `null` (Some(None)) from an absent field (None).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddDevice {
    pub name: String,
    pub public_key: WgPublicKey,
    #[serde(default)]
    pub tags: Vec<String>,
}
