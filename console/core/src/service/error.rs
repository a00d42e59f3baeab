//! The one error type of the service layer. Client-caused failures carry what a 4xx
//! answer needs (code, message, field); store failures pass through unchanged so the
//! HTTP layer keeps one mapping for them; internal ones are for the log only.

use crate::domain::DomainError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// Well-formed but invalid input; `field` names the culprit.
    #[error("{message}")]
    Invalid {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    /// Conflicts with existing state.
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    /// Not allowed for this actor.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// The caller's proof of who it is (a credential) was refused.
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServiceError::Invalid {
            code: "invalid",
            message: message.into(),
            field: Some(field.into()),
        }
    }
    pub fn conflict(code: &'static str, message: impl Into<String>, field: Option<&str>) -> Self {
        ServiceError::Conflict {
            code,
            message: message.into(),
            field: field.map(str::to_string),
        }
    }
}

impl From<DomainError> for ServiceError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid { field, message } => ServiceError::Invalid {
                code: "invalid",
                message,
                field: Some(field),
            },
            DomainError::Internal(m) => ServiceError::Internal(m),
        }
    }
}
