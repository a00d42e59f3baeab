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
}

impl DataPlane {
    pub async fn start(_cfg: DataPlaneConfig) -> anyhow::Result<DataPlane> {
        anyhow::bail!("data plane not built into this binary yet")
    }
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    pub async fn set_peers(&self, _peers: Vec<PeerConfig>) -> anyhow::Result<()> {
        anyhow::bail!("data plane not built into this binary yet")
    }
    pub async fn peer_stats(&self) -> Vec<PeerStats> {
        Vec::new()
    }
    pub async fn ping(&self, _dst: IpAddr, _timeout: Duration) -> anyhow::Result<Duration> {
        anyhow::bail!("data plane not built into this binary yet")
    }
    pub async fn shutdown(self) -> anyhow::Result<()> {
        Ok(())
    }
}
