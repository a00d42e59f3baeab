//! Store errors. Client-caused failures carry enough to build a 4xx answer; database
//! and migration errors are for logs only and never shown to clients.

/// Why an enrollment key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnrollKeyRejection {
    /// No key has this secret (401).
    #[error("unknown enrollment key")]
    Unknown,
    /// Past its expiry (403).
    #[error("enrollment key has expired")]
    Expired,
    /// A one-off key that has already enrolled a device (403).
    #[error("enrollment key has already been used")]
    Used,
    /// Revoked by an admin (403).
    #[error("enrollment key has been revoked")]
    Revoked,
}

impl EnrollKeyRejection {
    pub fn as_str(&self) -> &'static str {
        match self {
            EnrollKeyRejection::Unknown => "unknown",
            EnrollKeyRejection::Expired => "expired",
            EnrollKeyRejection::Used => "used",
            EnrollKeyRejection::Revoked => "revoked",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("name {name:?} is already taken in this network")]
    NameTaken { name: String },
    #[error("this WireGuard public key is already enrolled")]
    PublicKeyTaken,
    #[error(transparent)]
    EnrollKey(EnrollKeyRejection),
    #[error("the network's overlay address space is exhausted")]
    AddressSpaceExhausted,
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The change is well-formed but would break an invariant (the last admin).
    #[error("{field}: {reason}")]
    Conflict { field: &'static str, reason: String },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        StoreError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// A stored value that does not parse: the database was edited by hand or is corrupt.
    pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> Self {
        StoreError::Db(sqlx::Error::Decode(
            format!("stored {what} is malformed: {detail}").into(),
        ))
    }
}

/// Which unique constraint a failed write hit, as far as the two backends tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    PublicKey,
    Name,
    /// Overlay address, host number or anything else: worth retrying the transaction.
    Other,
}

/// Classifies a unique violation. PostgreSQL names the index; SQLite names the columns
/// (or the index, for expression indexes), so both are matched on text.
pub(crate) fn unique_violation(e: &sqlx::Error) -> Option<Violation> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    if db.kind() != sqlx::error::ErrorKind::UniqueViolation {
        return None;
    }
    let text = format!("{} {}", db.constraint().unwrap_or(""), db.message());
    Some(if text.contains("public_key") {
        Violation::PublicKey
    } else if text.contains("devices_name_uq") || text.contains("devices.name") {
        Violation::Name
    } else {
        Violation::Other
    })
}
