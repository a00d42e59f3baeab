//! Client-side TLS trust for talking to a zmesh console, shared by the agent and the
//! admin CLI so there is one pinning verifier to review.
//!
//! Two ways to trust a console and no way to skip the check: the SHA-256 pin of its
//! certificate (carried in enrollment keys, for the self-signed default) or CA roots.
//! Handshake signatures are always verified with the ring provider, so a server that
//! holds the pinned certificate but not its private key is refused.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use zmesh_shared::CertFingerprint;

/// The one crypto provider zmesh uses (ring: no C toolchain beyond cc, fast on x86_64).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts exactly the end-entity certificate whose DER hashes to the pin, whatever its
/// names or dates: the operator chose this certificate for this console, which is a
/// stronger statement than any CA's.
#[derive(Debug)]
pub struct PinnedVerifier {
    pin: CertFingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    pub fn new(pin: CertFingerprint) -> Self {
        PinnedVerifier {
            pin,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let got = CertFingerprint::of_der(end_entity.as_ref());
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            tracing::warn!(expected = %self.pin, got = %got, "console certificate does not match the pin");
            Err(Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
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

/// Client config that trusts only the certificate with fingerprint `pin`.
pub fn pinned_client_config(pin: CertFingerprint) -> Result<ClientConfig, Error> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(pin)))
        .with_no_client_auth())
}

/// Client config with standard WebPKI verification (host name included) against `roots`.
pub fn roots_client_config(roots: RootCertStore) -> Result<ClientConfig, Error> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Why a CA file could not be used as the trust anchor.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("CA file holds no usable certificate")]
    NoCerts,
    #[error("CA file: {0}")]
    Pem(std::io::Error),
    #[error("CA certificate rejected: {0}")]
    Ca(Error),
    #[error("TLS setup: {0}")]
    Rustls(#[from] Error),
}

/// Client config with WebPKI verification against the CA certificates of a PEM text
/// (the agent's `--ca-file` and the admin CLI's / syslog forwarder's CA files).
pub fn ca_pem_client_config(pem: &[u8]) -> Result<ClientConfig, CaError> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots
            .add(cert.map_err(CaError::Pem)?)
            .map_err(CaError::Ca)?;
    }
    if roots.is_empty() {
        return Err(CaError::NoCerts);
    }
    Ok(roots_client_config(roots)?)
}
