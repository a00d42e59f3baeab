//! Pure logic of the console, with its own error type: policy compilation glue, peer
//! maps and the per-revision views streams share, NAT settings as agents see them,
//! password rules and hashing. No SQL (it takes rows from `store`), no HTTP.

pub mod dns;
pub mod names;
pub mod nat;
pub mod networks;
pub mod password;
pub mod peermap;
pub mod policy;
pub mod presence;
pub mod rollout;
pub mod routes;
pub mod sso;
pub mod view;

/// Why a domain rule refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Well-formed but not allowed; `field` names the culprit (a 422 at the API).
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    /// Something that should hold does not (for the log only).
    #[error("internal: {0}")]
    Internal(String),
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}
