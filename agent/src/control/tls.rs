//! TLS to the console. Two ways to trust it and no way to skip the check: the SHA-256
//! pin of its certificate (carried in the enrollment key, for self-signed consoles) or
//! PEM CA roots. Handshake signatures are always verified with the ring provider, so a
//! pinned certificate still proves possession of its private key.

use rustls::{ClientConfig, Error as TlsError};
use zmesh_shared::CertFingerprint;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error(transparent)]
    Ca(#[from] zmesh_tls::CaError),
    #[error("TLS setup: {0}")]
    Rustls(#[from] TlsError),
    #[error("neither a certificate pin nor a CA file: refusing to trust the console blindly")]
    NoTrust,
}

/// How the console's certificate is trusted.
#[derive(Debug, Clone)]
pub enum Trust {
    Pin(CertFingerprint),
    CaPem(String),
}

impl Trust {
    pub fn from_parts(
        pin: Option<CertFingerprint>,
        ca_pem: Option<&str>,
    ) -> Result<Trust, TlsSetupError> {
        match (ca_pem, pin) {
            (Some(pem), _) => Ok(Trust::CaPem(pem.to_string())),
            (None, Some(p)) => Ok(Trust::Pin(p)),
            (None, None) => Err(TlsSetupError::NoTrust),
        }
    }
}

pub use zmesh_tls::provider;

/// Builds the client config for `trust`, advertising the given ALPN protocols.
pub fn client_config(trust: &Trust, alpn: &[&[u8]]) -> Result<ClientConfig, TlsSetupError> {
    let mut cfg = match trust {
        Trust::Pin(pin) => zmesh_tls::pinned_client_config(*pin)?,
        Trust::CaPem(pem) => zmesh_tls::ca_pem_client_config(pem.as_bytes())?,
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    struct TestServer {
        addr: std::net::SocketAddr,
        der: Vec<u8>,
        cert_pem: String,
    }

    async fn server() -> TestServer {
        let ck = rcgen::generate_simple_self_signed(vec!["console.test".into()]).unwrap();
        let der = ck.cert.der().to_vec();
        let cert_pem = ck.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(der.clone())], key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(cfg));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(s).await {
                        let _ = tls.write_all(b"hi").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        TestServer {
            addr,
            der,
            cert_pem,
        }
    }

    async fn try_connect(
        addr: std::net::SocketAddr,
        trust: &Trust,
    ) -> Result<Vec<u8>, std::io::Error> {
        let cfg = client_config(trust, &[]).unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("console.test").unwrap(), tcp)
            .await?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn pin_accepts_the_pinned_cert_and_rejects_another() {
        let s = server().await;
        let good = Trust::Pin(CertFingerprint::of_der(&s.der));
        assert_eq!(try_connect(s.addr, &good).await.unwrap(), b"hi");
        let other = rcgen::generate_simple_self_signed(vec!["console.test".into()]).unwrap();
        let bad = Trust::Pin(CertFingerprint::of_der(other.cert.der()));
        let err = try_connect(s.addr, &bad).await.unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn ca_file_trust_checks_the_chain() {
        let s = server().await;
        assert_eq!(
            try_connect(s.addr, &Trust::CaPem(s.cert_pem.clone()))
                .await
                .unwrap(),
            b"hi"
        );
        let other = rcgen::generate_simple_self_signed(vec!["console.test".into()]).unwrap();
        assert!(try_connect(s.addr, &Trust::CaPem(other.cert.pem()))
            .await
            .is_err());
        assert!(matches!(
            client_config(&Trust::CaPem("nothing".into()), &[]),
            Err(TlsSetupError::Ca(zmesh_tls::CaError::NoCerts))
        ));
        assert!(matches!(
            Trust::from_parts(None, None),
            Err(TlsSetupError::NoTrust)
        ));
    }
}
