//! Enrollment: one HTTPS POST of the device's public key and the enrollment secret;
//! the console answers with the device's identity, addresses and stream credential.

use std::time::Duration;

use zmesh_shared::wire::{EnrollRequest, EnrollResponse, ErrorBody, ENROLL_PATH};
use zmesh_shared::{Secret, WgPublicKey, PROTOCOL_VERSION};

use super::tls::{client_config, TlsSetupError, Trust};

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("console URL {0:?} is not a valid https:// URL")]
    BadUrl(String),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("cannot reach the console: {0}")]
    Http(#[from] reqwest::Error),
    #[error("console refused enrollment ({status}): {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("console speaks protocol {0}, this agent speaks {PROTOCOL_VERSION}")]
    Protocol(u16),
}

/// Parses and checks the console base URL (https only; no path needed).
pub fn parse_console_url(s: &str) -> Result<reqwest::Url, EnrollError> {
    let u = reqwest::Url::parse(s.trim()).map_err(|_| EnrollError::BadUrl(s.to_string()))?;
    if u.scheme() != "https" || u.host_str().is_none() {
        return Err(EnrollError::BadUrl(s.to_string()));
    }
    Ok(u)
}

pub struct EnrollParams<'a> {
    pub console: &'a str,
    pub trust: &'a Trust,
    pub secret: &'a Secret,
    pub public_key: WgPublicKey,
    pub name: Option<String>,
}

pub async fn enroll(p: EnrollParams<'_>) -> Result<EnrollResponse, EnrollError> {
    let base = parse_console_url(p.console)?;
    let url = base
        .join(ENROLL_PATH)
        .map_err(|_| EnrollError::BadUrl(p.console.to_string()))?;
    let client = http_client(p.trust, Duration::from_secs(20))?;
    let req = EnrollRequest {
        protocol: PROTOCOL_VERSION,
        enroll_key: p.secret.clone(),
        public_key: p.public_key,
        name: p.name,
        hostname: hostname(),
        os: Some(std::env::consts::OS.to_string()),
    };
    let resp = client.post(url).json(&req).send().await?;
    let status = resp.status();
    if !status.is_success() {
        return Err(refused(resp).await);
    }
    let body: EnrollResponse = resp.json().await?;
    if body.protocol != PROTOCOL_VERSION {
        return Err(EnrollError::Protocol(body.protocol));
    }
    Ok(body)
}

/// An HTTPS client for the console that trusts it by `trust` only; every request is
/// bounded by `timeout`.
pub(super) fn http_client(
    trust: &Trust,
    timeout: Duration,
) -> Result<reqwest::Client, EnrollError> {
    let tls = client_config(trust, &[b"http/1.1"])?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .build()?)
}

/// The console's refusal, from its JSON error body (or the first bytes of another body).
pub(super) async fn refused(resp: reqwest::Response) -> EnrollError {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => (b.error.code, b.error.message),
        Err(_) => ("http_error".to_string(), text.chars().take(300).collect()),
    };
    EnrollError::Refused {
        status,
        code,
        message,
    }
}

pub(super) fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for writes of its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let s = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls() {
        assert!(parse_console_url("https://10.0.0.1:8443").is_ok());
        assert!(parse_console_url("http://10.0.0.1:8443").is_err());
        assert!(parse_console_url("10.0.0.1:8443").is_err());
        assert!(parse_console_url("").is_err());
    }
}
