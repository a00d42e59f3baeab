//! Request and response bodies of the admin API, shared by the handlers and the CLI.
//! The input rules they are checked against live in `domain::names`.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use zmesh_shared::audit::Checkpoint;
use zmesh_shared::WgPublicKey;

use crate::store::{AccessRow, AdminTokenRow, EnrollKeyRow, OwnedToken, Role, UserRow};

pub use crate::domain::names::{
    check_name, check_tags, DEFAULT_TTL_SECONDS, MAX_DESCRIPTION, MAX_TAGS, MAX_TTL_SECONDS,
};

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
    /// Each device with its `online` state (heard from within three stream pings).
    pub devices: Vec<crate::service::devices::DeviceStatus>,
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

/// One access record: the flow as the reporting device signed it, its place in the
/// access chain, and whether the other end reported the same flow.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccessRecord {
    #[serde(flatten)]
    pub entry: zmesh_shared::flowlog::AccessEntry,
    /// No record of the same flow from the other end: one side is lying, broken, not
    /// reporting, or has not reported yet.
    pub one_sided: bool,
}

impl From<AccessRow> for AccessRecord {
    fn from(r: AccessRow) -> Self {
        AccessRecord {
            entry: r.entry,
            one_sided: r.one_sided,
        }
    }
}

/// One page of access records.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlowList {
    pub flows: Vec<AccessRecord>,
    /// Pass as `after` for the next page; null on the last one.
    pub next_after: Option<u64>,
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

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RouteList {
    /// Every advertised route (subnets; `0.0.0.0/0` and `::/0` for exit nodes), by
    /// device name then prefix.
    pub routes: Vec<crate::service::routes::RouteStatus>,
}

/// Approve, or withdraw the approval of, one route a device advertises.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteApproval {
    /// The advertising device, by id (`dev_…`) or name.
    #[schema(max_length = 253)]
    pub device: String,
    /// The advertised prefix, canonical (`10.1.0.0/24`, `0.0.0.0/0`, `::/0`).
    #[schema(example = "10.1.0.0/24", max_length = 64)]
    pub prefix: String,
}
