//! Typed identifiers. Each id is a UUID with a short prefix in its text form
//! (`dev_…`, `net_…`), so an id pasted into the wrong place is rejected on parse.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {kind} id {value:?}: expected {prefix}_<uuid>")]
pub struct IdParseError {
    kind: &'static str,
    prefix: &'static str,
    value: String,
}

macro_rules! typed_id {
    ($(#[$m:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
            pub fn from_uuid(u: Uuid) -> Self {
                Self(u)
            }
            pub fn uuid(&self) -> Uuid {
                self.0
            }
        }
        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}_{}", $prefix, self.0.simple())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = || IdParseError { kind: $kind, prefix: $prefix, value: s.chars().take(64).collect() };
                let rest = s.strip_prefix(concat!($prefix, "_")).ok_or_else(err)?;
                Uuid::parse_str(rest).map(Self).map_err(|_| err())
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

typed_id!(
    /// A network (tailnet): one overlay address space and one policy.
    NetworkId, "net", "network");
typed_id!(
    /// A device: one WireGuard key, one pair of overlay addresses.
    DeviceId, "dev", "device");
typed_id!(
    /// An enrollment key (the secret itself is never stored, only its hash).
    EnrollKeyId, "ek", "enrollment key");
typed_id!(
    /// An admin or device API token.
    TokenId, "tok", "token");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_prefix_check() {
        let d = DeviceId::new();
        let s = d.to_string();
        assert!(s.starts_with("dev_"));
        assert_eq!(s.parse::<DeviceId>().unwrap(), d);
        let wrong = s.replacen("dev_", "net_", 1);
        assert!(wrong.parse::<DeviceId>().is_err());
        assert!(wrong.parse::<NetworkId>().is_ok());
        assert!("dev_zzz".parse::<DeviceId>().is_err());
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<DeviceId>(&j).unwrap(), d);
        assert!(serde_json::from_str::<DeviceId>("\"dev_1\"").is_err());
    }
}

/// Where a device stands in its network (kept with the ids: every layer names it).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Enrolled but waiting for an admin's approval; gets no peers.
    Pending,
    Active,
    /// Credential dead, removed from every peer map. Final.
    Revoked,
}

impl DeviceState {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeviceState::Pending => "pending",
            DeviceState::Active => "active",
            DeviceState::Revoked => "revoked",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeviceState::Pending),
            "active" => Some(DeviceState::Active),
            "revoked" => Some(DeviceState::Revoked),
            _ => None,
        }
    }
}
