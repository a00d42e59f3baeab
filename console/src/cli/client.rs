//! HTTPS client of the admin CLI. Trust is either the console certificate pinned by
//! SHA-256 (read from DATA_DIR/tls/cert.pem) or a CA file; there is no insecure mode.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use zmesh_shared::wire::ErrorBody;

use super::ConnArgs;
use crate::infra::files::{admin_token_path, console_url_path};

pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
    /// `--network`: sent as `?network=NAME` with every call.
    network: Option<String>,
}

impl ApiClient {
    pub fn from_args(data_dir: &Path, a: &ConnArgs) -> anyhow::Result<Self> {
        let base = match &a.console {
            Some(u) => u.clone(),
            None => {
                let p = console_url_path(data_dir);
                std::fs::read_to_string(&p)
                    .with_context(|| format!("no --console given and cannot read {} (is the console running with --data-dir {}?)", p.display(), data_dir.display()))?
            }
        };
        let base = base.trim().trim_end_matches('/').to_string();
        if !base.starts_with("https://") {
            bail!("console URL must start with https:// (got {base:?})");
        }
        let token = match &a.token {
            Some(t) => t.clone(),
            None => {
                let p = admin_token_path(data_dir);
                std::fs::read_to_string(&p).with_context(|| {
                    format!(
                        "no --token/ZMESH_TOKEN given and cannot read {}",
                        p.display()
                    )
                })?
            }
        };
        let token = token.trim().to_string();
        let tls = match &a.ca_file {
            Some(ca) => crate::infra::tls_client::ca_client_config(ca)?,
            None => {
                let (cert, _) = crate::infra::tls::self_signed_paths(data_dir);
                let pin = crate::infra::tls::fingerprint_of_pem_file(&cert).with_context(|| {
                    "cannot pin the console certificate (use --ca-file for a CA-signed one)"
                })?;
                crate::infra::tls_client::pinned_client_config(pin)?
            }
        };
        let mut c = Self::new(base, token, tls)?;
        c.network = a.network.clone().filter(|n| !n.is_empty());
        Ok(c)
    }

    /// `--network`, if given.
    pub fn network(&self) -> Option<&str> {
        self.network.as_deref()
    }

    pub fn new(base: String, token: String, tls: rustls::ClientConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTPS client")?;
        Ok(ApiClient {
            http,
            base,
            token,
            network: None,
        })
    }

    fn req(&self, m: Method, path: &str) -> RequestBuilder {
        let r = self
            .http
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        match &self.network {
            Some(n) => r.query(&[("network", n)]),
            None => r,
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        json(self.send(self.req(Method::GET, path)).await?).await
    }

    /// The raw response, for bodies streamed to a file.
    pub async fn get_response(&self, path: &str) -> anyhow::Result<Response> {
        self.send(self.req(Method::GET, path)).await
    }

    /// The response whatever its status (the caller reads it), e.g. to tell a 404 from
    /// a failure.
    pub async fn get_response_any(&self, path: &str) -> anyhow::Result<Response> {
        self.req(Method::GET, path)
            .send()
            .await
            .with_context(|| format!("cannot reach the console at {}", self.base))
    }

    /// POST without a body; the answer's bytes (empty for 204).
    pub async fn post_raw(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let r = self.send(self.req(Method::POST, path)).await?;
        Ok(r.bytes().await?.to_vec())
    }

    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        Ok(self.send(self.req(Method::GET, path)).await?.text().await?)
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        let mut r = self.req(Method::POST, path);
        if let Some(b) = body {
            r = r.json(b);
        }
        json(self.send(r).await?).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        json(self.send(self.req(Method::PATCH, path).json(body)).await?).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        json(self.send(self.req(Method::PUT, path).json(body)).await?).await
    }

    /// DELETE that answers a JSON body.
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        json(self.send(self.req(Method::DELETE, path)).await?).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(self.req(Method::DELETE, path)).await?;
        Ok(())
    }

    /// Sends a body of the given content type and returns the status and body text
    /// whatever the status (for answers that carry more than one error).
    pub async fn raw(
        &self,
        m: Method,
        path: &str,
        body: Option<(&str, String)>,
    ) -> anyhow::Result<(reqwest::StatusCode, String)> {
        let mut r = self.req(m, path);
        if let Some((ct, b)) = body {
            r = r.header(reqwest::header::CONTENT_TYPE, ct).body(b);
        }
        let resp = r
            .send()
            .await
            .with_context(|| format!("cannot reach the console at {}", self.base))?;
        let status = resp.status();
        Ok((status, resp.text().await.unwrap_or_default()))
    }

    /// Sends, and turns a non-2xx answer into an error carrying the console's message.
    async fn send(&self, r: RequestBuilder) -> anyhow::Result<Response> {
        let resp = r
            .send()
            .await
            .with_context(|| format!("cannot reach the console at {}", self.base))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => match b.error.field {
                Some(f) => bail!(
                    "{} (field `{f}`; {status}, {})",
                    b.error.message,
                    b.error.code
                ),
                None => bail!("{} ({status}, {})", b.error.message, b.error.code),
            },
            Err(_) => bail!("console answered {status}"),
        }
    }
}

async fn json<T: DeserializeOwned>(r: Response) -> anyhow::Result<T> {
    let bytes = r.bytes().await.context("reading the console's answer")?;
    serde_json::from_slice(&bytes).context("the console's answer is not the expected JSON")
}
