//! `zmesh-console relay`: a relay on its own host. It needs no database, only the
//! console's public signing key (printed by `serve` as "peer-map signing key") to check
//! the relay tokens devices present, and a TLS identity (self-signed in DATA_DIR/tls by
//! default; devices pin its fingerprint, or give a CA-signed pair).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use clap::Args;
use zmesh_shared::SigningPublicKey;

use super::{serve, Relay, RelayConfig};
use crate::infra::config::TlsSource;

#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// TLS/TCP address to listen on.
    #[arg(long, env = "ZMESH_RELAY_LISTEN", default_value = "0.0.0.0:8445")]
    pub listen: SocketAddr,
    /// The console's peer-map signing public key (base64), which signs relay tokens.
    #[arg(long, env = "ZMESH_CONSOLE_KEY")]
    pub console_key: SigningPublicKey,
    /// Sustained forwarding rate per device, bytes per second.
    #[arg(long, default_value_t = 12_500_000)]
    pub rate: u64,
    /// PEM certificate chain (with --tls-key) instead of a self-signed certificate.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,
}

pub async fn run(data_dir: &Path, a: RelayArgs) -> anyhow::Result<()> {
    crate::infra::files::create_private_dir(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let src = match (a.tls_cert, a.tls_key) {
        (Some(cert), Some(key)) => TlsSource::Files { cert, key },
        (None, None) => TlsSource::SelfSigned { extra_sans: vec![] },
        _ => anyhow::bail!("--tls-cert and --tls-key must be given together"),
    };
    let id = crate::infra::tls::load_or_create(data_dir, &src)?;
    let tls = crate::infra::tls::server_config(&id)?;
    let mut cfg = RelayConfig::new(a.console_key);
    cfg.rate_bytes_per_sec = a.rate;
    cfg.burst_bytes = a.rate.max(65_536);
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?;
    println!(
        "relay listening on {} (TLS certificate SHA-256 {})",
        listener.local_addr()?,
        id.fingerprint
    );
    serve(
        listener,
        tls,
        Relay::new(cfg),
        crate::infra::shutdown::shutdown_signal(),
    )
    .await;
    Ok(())
}
