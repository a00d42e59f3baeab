//! Passwords of local accounts: the length rule and Argon2id hashing and checking
//! (on a blocking thread: each costs ~19 MiB and tens of milliseconds).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::DomainError;

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 12;
pub const MAX_PASSWORD: usize = 1024;

pub fn check_password_rules(field: &str, pw: &str) -> Result<(), DomainError> {
    let n = pw.chars().count();
    if n < MIN_PASSWORD || pw.len() > MAX_PASSWORD {
        return Err(DomainError::invalid(
            field,
            format!("a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ));
    }
    Ok(())
}

/// Argon2id (default parameters: 19 MiB, 2 passes) on a blocking thread.
pub async fn hash_password(pw: String) -> Result<String, DomainError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(pw.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| DomainError::Internal(format!("hashing a password: {e}")))
    })
    .await
    .map_err(|e| DomainError::Internal(format!("hashing task: {e}")))?
}

/// Parameters of the dummy hash equal the defaults, so checking against it costs the
/// same as checking a real one.
const DUMMY_PHC: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Checks a password against a PHC string; with `None` it hashes against a dummy so an
/// unknown username costs the same time as a wrong password, and is always refused.
pub async fn verify_password(pw: String, phc: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let real = phc.is_some();
        let phc = phc.unwrap_or_else(|| DUMMY_PHC.to_string());
        let ok = PasswordHash::new(&phc)
            .map(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
            .unwrap_or(false);
        ok && real
    })
    .await
    .unwrap_or(false)
}
