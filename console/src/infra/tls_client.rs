//! Client-side TLS for the admin CLI (and syslog forwarding): pin the console
//! certificate by its SHA-256, or verify against a CA file. The pinning verifier itself
//! lives in the `zmesh-tls` crate, shared with the agent; there is deliberately no way
//! to turn verification off.

use std::path::Path;

use zmesh_shared::CertFingerprint;

pub use zmesh_tls::PinnedVerifier as PinnedCertVerifier;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(transparent)]
    Tls(#[from] crate::infra::tls::TlsError),
    #[error("invalid TLS client configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ca(#[from] zmesh_tls::CaError),
}

/// Client config that trusts only the certificate with fingerprint `pin`.
pub fn pinned_client_config(pin: CertFingerprint) -> Result<rustls::ClientConfig, PinError> {
    Ok(zmesh_tls::pinned_client_config(pin)?)
}

/// Client config that trusts certificates chaining to the CAs in a PEM file
/// (standard WebPKI verification including the host name).
pub fn ca_client_config(ca_file: &Path) -> Result<rustls::ClientConfig, PinError> {
    let pem = std::fs::read(ca_file).map_err(|e| PinError::Read {
        path: ca_file.to_path_buf(),
        source: e,
    })?;
    Ok(zmesh_tls::ca_pem_client_config(&pem)?)
}
