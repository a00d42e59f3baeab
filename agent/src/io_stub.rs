//! Temporary stand-in for the `dataplane` branch's `io` module, with the exact API of
//! AGENT_SPEC.md, so the control plane compiles before the data plane lands. Every
//! operation fails at run time; this file is deleted when `dataplane` is merged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use ipnet::{Ipv4Net, Ipv6Net};
use zmesh_shared::{DeviceId, WgPrivateKey, WgPublicKey};

pub struct DataPlaneConfig {
    pub tun_name: String,
    pub private_key: WgPrivateKey,
    pub overlay_v4: Ipv4Addr,
    pub overlay_v6: Ipv6Addr,
    pub network_v4: Ipv4Net,
    pub network_v6: Ipv6Net,
    pub listen_port: u16,
    pub mtu: u16,
}

pub use crate::core::PeerConfig;

#[derive(Debug, Clone)]
pub struct PeerStats {
    pub device_id: DeviceId,
    pub name: String,
    pub public_key: WgPublicKey,
    pub endpoint: Option<SocketAddr>,
    pub path: &'static str,
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

#[derive(Clone)]
pub struct DataPlane {
    addr: SocketAddr,
    peers: std::sync::Arc<std::sync::Mutex<Vec<PeerConfig>>>,
    _sock: std::sync::Arc<std::net::UdpSocket>,
}

impl DataPlane {
    pub async fn start(cfg: DataPlaneConfig) -> anyhow::Result<DataPlane> {
        if std::env::var_os("ZMESH_STUB_DATAPLANE").is_none() {
            anyhow::bail!("data plane not built into this binary yet");
        }
        let sock = std::net::UdpSocket::bind(("0.0.0.0", cfg.listen_port))?;
        Ok(DataPlane {
            addr: sock.local_addr()?,
            peers: Default::default(),
            _sock: std::sync::Arc::new(sock),
        })
    }
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    pub async fn set_peers(&self, peers: Vec<PeerConfig>) -> anyhow::Result<()> {
        *self.peers.lock().unwrap() = peers;
        Ok(())
    }
    pub async fn peer_stats(&self) -> Vec<PeerStats> {
        self.peers
            .lock()
            .unwrap()
            .iter()
            .map(|p| PeerStats {
                device_id: p.device_id,
                name: p.name.clone(),
                public_key: p.public_key,
                endpoint: p.endpoints.first().copied(),
                path: "direct",
                last_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0,
            })
            .collect()
    }
    pub async fn ping(&self, _dst: IpAddr, _timeout: Duration) -> anyhow::Result<Duration> {
        anyhow::bail!("data plane not built into this binary yet")
    }
    pub async fn shutdown(self) -> anyhow::Result<()> {
        Ok(())
    }
}
