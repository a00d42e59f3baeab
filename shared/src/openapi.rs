//! OpenAPI schemas (feature `openapi`) of the shared types whose JSON form is a string
//! written by hand-made serde impls: typed ids, keys, secrets and port ranges.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::ids::{DeviceId, EnrollKeyId, NetworkId, TokenId};
use crate::keys::{SigningPublicKey, WgPublicKey};
use crate::policy::PortRange;
use crate::secret::Secret;

fn string(pattern: Option<&str>, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(pattern)
        .description(Some(description))
        .into()
}

macro_rules! string_schema {
    ($($t:ty => $pattern:expr, $desc:expr;)*) => {$(
        impl PartialSchema for $t {
            fn schema() -> RefOr<Schema> {
                string($pattern, $desc)
            }
        }
        impl ToSchema for $t {}
    )*};
}

string_schema! {
    DeviceId => Some("^dev_[0-9a-f]{32}$"), "device id";
    NetworkId => Some("^net_[0-9a-f]{32}$"), "network id";
    EnrollKeyId => Some("^ek_[0-9a-f]{32}$"), "enrollment key id";
    TokenId => Some("^tok_[0-9a-f]{32}$"), "API token id";
    WgPublicKey => Some("^[A-Za-z0-9+/]{43}=$"), "WireGuard public key, base64";
    SigningPublicKey => Some("^[A-Za-z0-9+/]{43}=$"), "Ed25519 public key, base64";
    Secret => None, "a bearer secret; shown only once";
    PortRange => Some("^[0-9]{1,5}(-[0-9]{1,5})?$"), "port or inclusive port range, e.g. 22 or 8000-8099";
}
