//! The console's TLS identity: a self-signed certificate made once with rcgen (kept in
//! DATA_DIR/tls/) or operator-provided PEM files, and the rustls server config (ring
//! provider) built from it. Agents and the CLI pin the certificate's SHA-256.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zmesh_shared::CertFingerprint;

use crate::infra::config::TlsSource;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: no PEM certificate found")]
    NoCert { path: PathBuf },
    #[error("{path}: no PEM private key found")]
    NoKey { path: PathBuf },
    #[error("generating the certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Certificate chain and key the console serves.
pub struct TlsIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the end-entity certificate.
    pub fingerprint: CertFingerprint,
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .field("cert_path", &self.cert_path)
            .finish()
    }
}

/// Where a self-signed identity lives inside the data directory.
pub fn self_signed_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let d = data_dir.join("tls");
    (d.join("cert.pem"), d.join("key.pem"))
}

/// Loads the configured identity, generating the self-signed one on first start.
pub fn load_or_create(data_dir: &Path, src: &TlsSource) -> Result<TlsIdentity, TlsError> {
    match src {
        TlsSource::Files { cert, key } => load_files(cert, key),
        TlsSource::SelfSigned { extra_sans } => {
            let (cert, key) = self_signed_paths(data_dir);
            if !cert.exists() || !key.exists() {
                generate(&cert, &key, extra_sans)?;
            }
            load_files(&cert, &key)
        }
    }
}

/// Names the self-signed certificate is valid for.
pub fn default_sans(extra: &[String]) -> Vec<String> {
    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Some(h) = hostname() {
        sans.push(h);
    }
    for s in extra {
        let s = s.trim().to_string();
        if !sans.contains(&s) {
            sans.push(s);
        }
    }
    sans
}

fn generate(cert_path: &Path, key_path: &Path, extra: &[String]) -> Result<(), TlsError> {
    let sans = default_sans(extra);
    let mut params = rcgen::CertificateParams::new(sans)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "zmesh console");
    // Long-lived on purpose: agents pin this exact certificate, so rotating it means
    // re-pinning every agent; operators who want rotation bring their own files.
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    let key_pair = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key_pair)?;
    let dir = cert_path.parent().unwrap_or(Path::new("."));
    crate::infra::files::create_private_dir(dir).map_err(io_err(dir))?;
    crate::infra::files::write_private_file(key_path, key_pair.serialize_pem().as_bytes())
        .map_err(io_err(key_path))?;
    fs::write(cert_path, cert.pem()).map_err(io_err(cert_path))?;
    tracing::info!(cert = %cert_path.display(), "generated self-signed TLS certificate");
    Ok(())
}

pub fn load_files(cert_path: &Path, key_path: &Path) -> Result<TlsIdentity, TlsError> {
    let chain = read_certs(cert_path)?;
    let key_pem = fs::read(key_path).map_err(io_err(key_path))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(io_err(key_path))?
        .ok_or_else(|| TlsError::NoKey {
            path: key_path.to_path_buf(),
        })?;
    let fingerprint = CertFingerprint::of_der(&chain[0]);
    Ok(TlsIdentity {
        chain,
        key,
        fingerprint,
        cert_path: cert_path.to_path_buf(),
    })
}

/// All certificates of a PEM file; the first is the end-entity one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(io_err(path))?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err(path))?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

/// SHA-256 of the first certificate in a PEM file (what the CLI pins).
pub fn fingerprint_of_pem_file(path: &Path) -> Result<CertFingerprint, TlsError> {
    Ok(CertFingerprint::of_der(&read_certs(path)?[0]))
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// rustls server config: ring, TLS 1.2+1.3, ALPN h2 and http/1.1.
pub fn server_config(id: &TlsIdentity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(id.chain.clone(), id.key.clone_key())?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for writes of buf.len() bytes; gethostname NUL-terminates
    // within that length on success (we also guard with the position search below).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let h = String::from_utf8(buf[..end].to_vec())
        .ok()?
        .trim()
        .to_ascii_lowercase();
    let valid = !h.is_empty()
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    (valid && h.parse::<IpAddr>().is_err()).then_some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let src = TlsSource::SelfSigned {
            extra_sans: vec!["vpn.example.com".into(), "10.1.2.3".into()],
        };
        let a = load_or_create(dir.path(), &src).unwrap();
        let b = load_or_create(dir.path(), &src).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        let (_, key) = self_signed_paths(dir.path());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        server_config(&a).unwrap();
        assert_eq!(
            fingerprint_of_pem_file(&a.cert_path).unwrap(),
            a.fingerprint
        );
    }
}
