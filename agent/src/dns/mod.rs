//! Names (DNS) on the device: a resolver on the overlay's first address
//! ([`zmesh_shared::peermap::resolver_v4`], 100.64.0.0 in the default range, added to
//! the TUN interface as a /32 of scope host) that answers `NAME.SUFFIX` for this device and its peers
//! from the current peer map, and forwards every other name to the host's previous
//! resolvers; and the host's configuration pointing at it ([`host`]).
//!
//! Layering: below `control` and `daemon` (which feed it the map and start it), beside
//! `io`; [`names`] is pure, [`server`] owns the socket.

pub mod host;
pub mod names;
pub mod server;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::Ipv4Net;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use host::HostDns;
pub use names::Names;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("adding the resolver address {addr} to {tun}: {message}")]
    Address {
        addr: Ipv4Addr,
        tun: String,
        message: String,
    },
    #[error("binding the resolver on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the resolver needs, from the daemon's configuration and the enrollment.
#[derive(Debug)]
pub struct DnsParams {
    pub tun: String,
    pub network_v4: Ipv4Net,
    pub host_dns: HostDns,
    pub state_dir: PathBuf,
    /// The current names; a new value on every map or delta.
    pub names: watch::Receiver<Arc<Names>>,
    pub stop: watch::Receiver<bool>,
}

/// Starts the resolver and the task that keeps the host pointed at it (again when
/// the suffix changes). Restoring the host is the daemon's job ([`host::restore`]).
pub async fn start(p: DnsParams) -> Result<JoinHandle<()>, DnsError> {
    let resolver = zmesh_shared::peermap::resolver_v4(p.network_v4);
    add_address(&p.tun, resolver)?;
    let addr = SocketAddr::from((resolver, 53));
    let sock = UdpSocket::bind(addr)
        .await
        .map_err(|source| DnsError::Bind { addr, source })?;
    let upstreams = host::upstreams(&p.state_dir, resolver);
    let mode = host::effective(p.host_dns);
    tracing::info!(%addr, ?upstreams, host_dns = ?mode, "resolver listening");
    let server = tokio::spawn(server::serve(
        sock,
        upstreams,
        p.names.clone(),
        p.stop.clone(),
    ));
    Ok(tokio::spawn(async move {
        let (mut names, mut stop) = (p.names, p.stop);
        let mut applied: Option<(String, Vec<String>)> = None;
        loop {
            let want = {
                let n = names.borrow_and_update();
                n.suffix().map(|s| (s.to_string(), n.split_domains()))
            };
            if want.is_some() && want != applied {
                let (s, split) = want.clone().unwrap_or_default();
                let (state_dir, tun) = (p.state_dir.clone(), p.tun.clone());
                let r = tokio::task::spawn_blocking(move || {
                    host::apply(mode, &state_dir, &tun, resolver, &s, &split)
                })
                .await;
                match r {
                    Ok(Ok(())) => applied = want,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot point the host at the resolver")
                    }
                    Err(e) => tracing::error!(error = %e, "host DNS task failed"),
                }
            }
            tokio::select! {
                r = names.changed() => if r.is_err() { break },
                _ = stop.changed() => break,
            }
        }
        server.abort();
    }))
}

fn add_address(tun: &str, addr: Ipv4Addr) -> Result<(), DnsError> {
    let out = std::process::Command::new("ip")
        // scope host: never picked as the source of packets to peers, which would fail
        // their source check (only the device's own overlay address is allowed)
        .args([
            "addr",
            "replace",
            &format!("{addr}/32"),
            "dev",
            tun,
            "scope",
            "host",
        ])
        .output();
    let message = match out {
        Ok(o) if o.status.success() => return Ok(()),
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => e.to_string(),
    };
    Err(DnsError::Address {
        addr,
        tun: tun.to_string(),
        message,
    })
}
