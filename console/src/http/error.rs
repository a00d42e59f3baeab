//! The one error type of the console's HTTP layer, its JSON form, and the one mapping
//! from service, domain and store errors to statuses.
//!
//! Every handler returns `Result<_, ApiError>`; the response is always a
//! `zmesh_shared::wire::ErrorBody` with a stable `code`. Store and internal failures
//! become a bare 500 whose details go to the log only, so clients never see SQL,
//! paths or other internals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use zmesh_shared::wire::{ErrorBody, ErrorDetail};

use crate::domain::DomainError;
use crate::service::ServiceError;
use crate::store::{EnrollKeyRejection, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be read at all (malformed JSON, missing body).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 401: no, malformed or unknown credential.
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// 403: authenticated (or key known) but not allowed.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// 404 naming the network asked for (that does not exist or is not the caller's).
    #[error("network {0:?} not found")]
    NoNetwork(String),
    /// 410: the thing asked for existed but is over (an expired login request).
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    /// 405 for a known path with another method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: conflicts with existing state.
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    /// 429: this client has too much under way (e.g. relay upgrades still
    /// authenticating); it may retry later.
    #[error("{message}")]
    TooMany { code: &'static str, message: String },
    /// 415: body without `Content-Type: application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed but invalid input; `field` names the culprit.
    #[error("{message}")]
    Invalid {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 500 with a message for the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            code: "invalid",
            message: message.into(),
            field: Some(field.into()),
        }
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Unauthorized {
            code,
            message: message.into(),
        }
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Forbidden {
            code,
            message: message.into(),
        }
    }
    pub fn conflict(code: &'static str, message: impl Into<String>, field: Option<&str>) -> Self {
        ApiError::Conflict {
            code,
            message: message.into(),
            field: field.map(str::to_string),
        }
    }

    /// Status, code, client-visible message and field.
    fn parts(&self) -> (StatusCode, &'static str, String, Option<String>) {
        use StatusCode as S;
        match self {
            ApiError::BadRequest { code, message } => (S::BAD_REQUEST, code, message.clone(), None),
            ApiError::Unauthorized { code, message } => {
                (S::UNAUTHORIZED, code, message.clone(), None)
            }
            ApiError::Forbidden { code, message } => (S::FORBIDDEN, code, message.clone(), None),
            ApiError::NotFound { what } => {
                (S::NOT_FOUND, "not_found", format!("{what} not found"), None)
            }
            ApiError::NoNetwork(name) => (
                S::NOT_FOUND,
                "not_found",
                format!("network {name:?} not found"),
                Some("network".into()),
            ),
            ApiError::Gone { code, message } => (S::GONE, code, message.clone(), None),
            ApiError::TooMany { code, message } => {
                (S::TOO_MANY_REQUESTS, code, message.clone(), None)
            }
            ApiError::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this path".into(),
                None,
            ),
            ApiError::Conflict {
                code,
                message,
                field,
            } => (S::CONFLICT, code, message.clone(), field.clone()),
            ApiError::UnsupportedMediaType(m) => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                m.clone(),
                None,
            ),
            ApiError::Invalid {
                code,
                message,
                field,
            } => (
                S::UNPROCESSABLE_ENTITY,
                code,
                message.clone(),
                field.clone(),
            ),
            ApiError::Store(e) => store_parts(e),
            ApiError::Internal(_) => internal(),
        }
    }
}

fn internal() -> (StatusCode, &'static str, String, Option<String>) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal server error; see the console log".into(),
        None,
    )
}

fn store_parts(e: &StoreError) -> (StatusCode, &'static str, String, Option<String>) {
    use StatusCode as S;
    match e {
        StoreError::NotFound { what } => {
            (S::NOT_FOUND, "not_found", format!("{what} not found"), None)
        }
        StoreError::NameTaken { name } => (
            S::CONFLICT,
            "name_taken",
            format!("the name {name:?} is already taken"),
            Some("name".into()),
        ),
        StoreError::PublicKeyTaken => (
            S::CONFLICT,
            "public_key_taken",
            "this WireGuard public key is already enrolled".into(),
            Some("public_key".into()),
        ),
        StoreError::EnrollKey(r) => match r {
            EnrollKeyRejection::Unknown => (
                S::UNAUTHORIZED,
                "enroll_key_unknown",
                "unknown enrollment key".into(),
                None,
            ),
            EnrollKeyRejection::Expired => (
                S::FORBIDDEN,
                "enroll_key_expired",
                "enrollment key has expired".into(),
                None,
            ),
            EnrollKeyRejection::Used => (
                S::FORBIDDEN,
                "enroll_key_used",
                "one-off enrollment key was already used".into(),
                None,
            ),
            EnrollKeyRejection::Revoked => (
                S::FORBIDDEN,
                "enroll_key_revoked",
                "enrollment key was revoked".into(),
                None,
            ),
        },
        StoreError::AddressSpaceExhausted => (
            S::CONFLICT,
            "address_space_exhausted",
            "no free overlay address left in this network".into(),
            None,
        ),
        StoreError::Invalid { field, reason } => (
            S::UNPROCESSABLE_ENTITY,
            "invalid",
            reason.clone(),
            Some(field.to_string()),
        ),
        StoreError::Conflict { field, reason } => (
            S::CONFLICT,
            "conflict",
            reason.clone(),
            Some(field.to_string()),
        ),
        _ => internal(),
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound { what } => ApiError::NotFound { what },
            ServiceError::Invalid {
                code,
                message,
                field,
            } => ApiError::Invalid {
                code,
                message,
                field,
            },
            ServiceError::Conflict {
                code,
                message,
                field,
            } => ApiError::Conflict {
                code,
                message,
                field,
            },
            ServiceError::Forbidden { code, message } => ApiError::Forbidden { code, message },
            ServiceError::Unauthorized { code, message } => {
                ApiError::Unauthorized { code, message }
            }
            ServiceError::Store(e) => ApiError::Store(e),
            ServiceError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ServiceError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, field) = self.parts();
        if status.is_server_error() {
            // The full error (SQL, I/O) is logged; the client gets a generic message.
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(%status, code, "request rejected");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message,
                field,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if matches!(
            self,
            ApiError::Store(StoreError::Db(_) | StoreError::Migrate(_))
        ) {
            // counted by the metrics middleware (`database_errors_total{source="http"}`)
            resp.extensions_mut().insert(super::metrics::DbErrorMark);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak() {
        let e = ApiError::Internal("secret path /etc/x".into());
        let (status, _, msg, _) = e.parts();
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!msg.contains("/etc/x"));
        let e = ApiError::Store(StoreError::Db(sqlx::Error::PoolTimedOut));
        let (status, code, msg, _) = e.parts();
        assert_eq!(
            (status, code),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        );
        assert!(!msg.to_lowercase().contains("pool"));
    }

    #[test]
    fn enroll_rejections_carry_reason() {
        let (s, c, _, _) =
            ApiError::Store(StoreError::EnrollKey(EnrollKeyRejection::Expired)).parts();
        assert_eq!((s, c), (StatusCode::FORBIDDEN, "enroll_key_expired"));
        let (s, c, _, _) =
            ApiError::Store(StoreError::EnrollKey(EnrollKeyRejection::Unknown)).parts();
        assert_eq!((s, c), (StatusCode::UNAUTHORIZED, "enroll_key_unknown"));
    }
}
