//! Static-config data plane runner for benchmarks and manual tests: starts a `DataPlane`
//! from command-line arguments and runs until SIGTERM/SIGINT or `--max-seconds`.
//!
//! ```text
//! dataplane --key-file a.key --v4 100.64.0.1 --v6 fd7a::1 --port 51820 \
//!     --peer 'PUBKEY,198.51.100.2:51820,100.64.0.2/32,fd7a::2/128' --max-seconds 60
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tokio::signal::unix::{signal, SignalKind};
use zmesh_agent::io::{DataPlane, DataPlaneConfig, PeerConfig, DEFAULT_MTU};
use zmesh_shared::{DeviceId, WgPrivateKey, WgPublicKey};

#[derive(Parser, Debug)]
struct Args {
    /// File holding the base64 private key (as `wg genkey` writes it).
    #[arg(long)]
    key_file: PathBuf,
    #[arg(long, default_value = "zmesh0")]
    tun: String,
    #[arg(long)]
    v4: Ipv4Addr,
    #[arg(long, default_value = "fd7a:115c:a1e0::1")]
    v6: Ipv6Addr,
    #[arg(long, default_value = "100.64.0.0/10")]
    net4: Ipv4Net,
    #[arg(long, default_value = "fd7a:115c:a1e0::/48")]
    net6: Ipv6Net,
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long, default_value_t = DEFAULT_MTU)]
    mtu: u16,
    /// `PUBKEY,ENDPOINT,ALLOWED_IP[,ALLOWED_IP...]`; repeat for more peers.
    #[arg(long = "peer")]
    peers: Vec<String>,
    #[arg(long)]
    persistent_keepalive: Option<u16>,
    /// Hard upper bound on the run time.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// Ping this overlay address once the plane is up and print the RTT.
    #[arg(long)]
    ping: Option<IpAddr>,
}

fn parse_peer(s: &str, i: usize, keepalive: Option<u16>) -> anyhow::Result<PeerConfig> {
    let mut parts = s.split(',');
    let key: WgPublicKey = parts
        .next()
        .unwrap_or("")
        .parse()
        .with_context(|| format!("peer {i}: public key"))?;
    let ep: SocketAddr = parts
        .next()
        .context("peer needs an endpoint")?
        .parse()
        .with_context(|| format!("peer {i}: endpoint"))?;
    let allowed: Vec<IpNet> = parts
        .map(|p| {
            p.parse::<IpNet>()
                .with_context(|| format!("peer {i}: allowed ip {p:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    if allowed.is_empty() {
        bail!("peer {i}: at least one allowed ip is required");
    }
    Ok(PeerConfig {
        device_id: DeviceId::new(),
        name: format!("peer{i}"),
        public_key: key,
        allowed_ips: allowed,
        endpoints: vec![ep],
        persistent_keepalive: keepalive,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let key_text = std::fs::read_to_string(&a.key_file)
        .with_context(|| format!("reading {}", a.key_file.display()))?;
    let private_key = WgPrivateKey::from_base64(&key_text)?;
    let peers = a
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| parse_peer(p, i, a.persistent_keepalive))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dp = DataPlane::start(DataPlaneConfig {
        tun_name: a.tun.clone(),
        private_key: private_key.clone(),
        overlay_v4: a.v4,
        overlay_v6: a.v6,
        network_v4: a.net4,
        network_v6: a.net6,
        listen_port: a.port,
        mtu: a.mtu,
    })
    .await?;
    dp.set_peers(peers).await?;
    // A manual tunnel without a console has no policy: accept every inbound packet
    // (the filter still runs on every packet, so its cost is part of the measurement).
    dp.set_filter(vec![zmesh_shared::policy::FilterRule {
        src: vec!["0.0.0.0/0".parse()?, "::/0".parse()?],
        dst: Vec::new(),
        proto: zmesh_shared::policy::Proto::Any,
        ports: vec![zmesh_shared::policy::PortRange::ALL],
        rule: 0,
    }])
    .await?;
    println!(
        "public_key={} listen={}",
        private_key.public_key(),
        dp.local_addr()
    );
    if let Some(dst) = a.ping {
        for _ in 0..10 {
            match dp.ping(dst, Duration::from_secs(1)).await {
                Ok(rtt) => {
                    println!("ping {dst} rtt={rtt:?}");
                    break;
                }
                Err(e) => eprintln!("ping {dst}: {e}"),
            }
        }
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = tokio::time::sleep(Duration::from_secs(a.max_seconds)) => {
            eprintln!("--max-seconds reached");
        }
    }
    let counters = dp.counters().await;
    for p in dp.peer_stats().await {
        eprintln!(
            "peer {} endpoint={:?} rx={} tx={}",
            p.public_key.short(),
            p.endpoint,
            p.rx_bytes,
            p.tx_bytes
        );
    }
    eprintln!("counters {}", serde_json::to_string(&counters)?);
    dp.shutdown().await
}
