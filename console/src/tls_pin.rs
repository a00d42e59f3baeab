//! Client-side TLS for talking to a console: either pin the console certificate by its
//! SHA-256 (for the self-signed default) or verify against a CA file.
//!
//! The pinning verifier accepts exactly one end-entity certificate. Handshake
//! signatures are still checked with the ring provider, so a server holding the
//! certificate but not its key is refused. There is deliberately no way to turn
//! verification off.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use zmesh_shared::CertFingerprint;

#[derive(Debug)]
pub struct PinnedCertVerifier {
    pin: CertFingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedCertVerifier {
    pub fn new(pin: CertFingerprint) -> Self {
        PinnedCertVerifier {
            pin,
            provider: crate::tls::provider(),
        }
    }
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // The pin names one exact certificate, so host name and validity period add
        // nothing: the operator chose this certificate for this console.
        if CertFingerprint::of_der(end_entity) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("invalid TLS client configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Client config that trusts only the certificate with fingerprint `pin`.
pub fn pinned_client_config(pin: CertFingerprint) -> Result<rustls::ClientConfig, PinError> {
    Ok(
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertVerifier::new(pin)))
            .with_no_client_auth(),
    )
}

/// Client config that trusts certificates chaining to the CAs in a PEM file
/// (standard WebPKI verification including the host name).
pub fn ca_client_config(ca_file: &Path) -> Result<rustls::ClientConfig, PinError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in crate::tls::read_certs(ca_file)? {
        roots.add(c)?;
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}
