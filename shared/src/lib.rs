//! zmesh-shared: the vocabulary the agent and the console share.
//!
//! Typed ids, key newtypes whose `Debug` never shows a secret, the versioned wire
//! messages of the enrollment API and the control stream, and the signed peer map.
//! Pure code only: no async runtime, no web framework, no database.

pub mod audit;
pub mod enroll_key;
pub mod flowlog;
pub mod ids;
pub mod keys;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "openapi")]
mod openapi;
pub mod peermap;
pub mod policy;
pub mod relay;
pub mod secret;
pub mod signed;
pub mod stun;
pub mod time;
pub mod wire;

pub use ids::{DeviceId, DeviceState, EnrollKeyId, NetworkId, TokenId};
pub use keys::{CertFingerprint, SigningKey, SigningPublicKey, WgPrivateKey, WgPublicKey};
pub use secret::Secret;

/// Version of the agent <-> console protocol. Bumped on any incompatible change; both
/// sides send it in their first message and refuse a version they do not speak.
pub const PROTOCOL_VERSION: u16 = 1;
