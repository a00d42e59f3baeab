//! I/O layer of the data plane: the TUN device, the UDP socket with batched I/O, the
//! packet loop, and the [`DataPlane`] handle the daemon uses.
//!
//! The packet loop runs on one dedicated OS thread that owns the [`Node`] outright: on a
//! small machine, per-packet syscalls (not crypto) set the limit, so the loop batches
//! everything (TSO super-packets from the TUN, `sendmmsg` with UDP GSO, `recvmmsg` with
//! UDP GRO) instead of paying for locks or cross-thread hand-offs. Control calls reach
//! it through a channel plus an eventfd that wakes its `poll`.

mod coalesce;
pub mod netcfg;
mod netwatch;
mod offload;
pub mod relay;
mod tun;
mod udp;
mod worker;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context};
use ipnet::{Ipv4Net, Ipv6Net};
use tokio::sync::{oneshot, watch};
use zmesh_shared::{DeviceId, WgPrivateKey, WgPublicKey};

pub use crate::core::{Counters, PeerConfig};
pub use crate::filter::{DeniedFlow, FlowSummary, Origin};
use zmesh_shared::policy::FilterRule;

/// Everything needed to bring the data plane up.
#[derive(Debug, Clone)]
pub struct DataPlaneConfig {
    /// TUN device name, e.g. "zmesh0".
    pub tun_name: String,
    pub private_key: WgPrivateKey,
    pub overlay_v4: Ipv4Addr,
    pub overlay_v6: Ipv6Addr,
    /// Routed via the TUN.
    pub network_v4: Ipv4Net,
    pub network_v6: Ipv6Net,
    /// UDP port; 0 = ephemeral.
    pub listen_port: u16,
    /// TUN MTU (1420 leaves room for WireGuard over IPv6 on a 1500 path).
    pub mtu: u16,
}

pub const DEFAULT_MTU: u16 = 1420;

/// One peer as the status display shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStats {
    pub device_id: DeviceId,
    pub name: String,
    pub public_key: WgPublicKey,
    pub endpoint: Option<SocketAddr>,
    /// Direct (with the address in use), through the relay, or not confirmed yet.
    pub path: crate::core::PathKind,
    /// Smoothed probe RTT of the direct path, if one is in use.
    pub rtt: Option<Duration>,
    /// When that path last answered.
    pub last_rx: Option<std::time::Instant>,
    /// When the endpoint in use last changed (direct address or relay).
    pub path_changed: Option<SystemTime>,
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// The latest change of the host's network the packet loop noticed (rtnetlink or a
/// wake from sleep), for the control stream and the relay client: they reconnect at
/// once when their connection cannot have survived it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetChange {
    /// Counts changes; 0 = none yet.
    pub seq: u64,
    /// The latest change was a wake from sleep (or the test hook that stands for one).
    pub wake: bool,
}

/// Where the packet loop puts datagrams for the relay: (peer public key, datagram).
/// Full means dropped, like a full UDP send buffer.
pub type RelayOut = tokio::sync::mpsc::Sender<([u8; 32], Vec<u8>)>;

pub(crate) enum Command {
    SetPeers(Vec<PeerConfig>, oneshot::Sender<()>),
    SetStun(Vec<SocketAddr>),
    SetRelay(Option<RelayOut>),
    /// A datagram the relay delivered from the peer with this public key.
    RelayRecv([u8; 32], Vec<u8>),
    SetFilter(Vec<FilterRule>, oneshot::Sender<()>),
    /// The other profiles' prefixes (`core::crossnet`).
    SetCrossNet(crate::core::CrossNet),
    DeniedFlows(oneshot::Sender<Vec<DeniedFlow>>),
    /// At most this many accepted-flow summaries; the rest stay queued in the filter.
    FlowSummaries(usize, oneshot::Sender<Vec<FlowSummary>>),
    PeerStats(oneshot::Sender<Vec<crate::core::PeerStats>>),
    /// Behave as after a wake from sleep (`zmesh debug wake`, for tests).
    SimulateWake,
    Counters(oneshot::Sender<Counters>),
    Ping {
        dst: IpAddr,
        id: u16,
        seq: u16,
        reply: oneshot::Sender<anyhow::Result<Duration>>,
    },
    Shutdown(oneshot::Sender<()>),
}

struct Inner {
    tx: Mutex<mpsc::Sender<Command>>,
    wake: OwnedFd,
    local: SocketAddr,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    ping_id: u16,
    ping_seq: AtomicU16,
    reflexive: watch::Receiver<Vec<SocketAddr>>,
    net: watch::Receiver<NetChange>,
}

/// Handle to a running data plane. Cheap to clone; all clones drive the same loop.
#[derive(Clone)]
pub struct DataPlane {
    inner: Arc<Inner>,
}

impl DataPlane {
    /// Creates the TUN (with offloads when possible), sets addresses and routes, binds the
    /// UDP socket and starts the packet loop. Needs CAP_NET_ADMIN.
    pub async fn start(cfg: DataPlaneConfig) -> anyhow::Result<DataPlane> {
        if cfg.mtu < 1280 {
            bail!("mtu {} is below the IPv6 minimum of 1280", cfg.mtu);
        }
        let tun = tun::Tun::open(&cfg.tun_name)?;
        tun.configure(
            cfg.mtu,
            cfg.overlay_v4,
            cfg.overlay_v6,
            cfg.network_v4,
            cfg.network_v6,
        )?;
        let udp = udp::Udp::bind(cfg.listen_port)?;
        let local = udp.local_addr();
        // SAFETY: eventfd(2) with valid flags; the result is checked before use.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error()).context("eventfd");
        }
        // SAFETY: efd is a fresh descriptor we own.
        let wake = unsafe { OwnedFd::from_raw_fd(efd) };
        let wake_loop = wake.try_clone().context("dup eventfd")?;
        let (tx, rx) = mpsc::channel();
        tracing::info!(
            tun = %tun.name, %local, vnet = tun.vnet, gso_gro = ?udp.offloads(),
            public_key = %cfg.private_key.public_key(), "data plane up"
        );
        // The core takes all its randomness from this generator; production seeds it
        // from the OS (simulations pass a fixed seed to replay runs).
        let rng = <rand::rngs::StdRng as rand::SeedableRng>::from_entropy();
        let node =
            crate::core::Node::new(cfg.private_key.clone(), cfg.overlay_v4, cfg.overlay_v6, rng);
        let (reflexive_tx, reflexive) = watch::channel(Vec::new());
        let (net_tx, net) = watch::channel(NetChange::default());
        let watch = netwatch::NetWatch::new(&tun.name, std::time::Instant::now());
        let w = worker::Worker::new(
            node,
            tun,
            udp,
            rx,
            wake_loop,
            cfg.mtu,
            worker::Watches {
                reflexive: reflexive_tx,
                netwatch: watch,
                net: net_tx,
            },
        );
        let thread = std::thread::Builder::new()
            .name("zmesh-dataplane".into())
            .spawn(move || w.run())
            .context("spawn data plane thread")?;
        Ok(DataPlane {
            inner: Arc::new(Inner {
                tx: Mutex::new(tx),
                wake,
                local,
                thread: Mutex::new(Some(thread)),
                ping_id: rand::random(),
                ping_seq: AtomicU16::new(0),
                reflexive,
                net,
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    fn send(&self, c: Command) -> anyhow::Result<()> {
        let tx = self
            .inner
            .tx
            .lock()
            .map_err(|_| anyhow!("data plane lock poisoned"))?;
        tx.send(c).map_err(|_| anyhow!("data plane stopped"))?;
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.inner.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        Ok(())
    }

    /// Sets the desired peers; unchanged peers keep their sessions.
    pub async fn set_peers(&self, peers: Vec<PeerConfig>) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::SetPeers(peers, tx))?;
        rx.await.map_err(|_| anyhow!("data plane stopped"))
    }

    /// STUN servers to learn our public (server-reflexive) addresses from, queried from
    /// the WireGuard socket. The answers arrive on [`reflexive`](Self::reflexive).
    pub fn set_stun_servers(&self, servers: Vec<SocketAddr>) -> anyhow::Result<()> {
        self.send(Command::SetStun(servers))
    }

    /// Our server-reflexive addresses, updated as STUN answers change.
    pub fn reflexive(&self) -> watch::Receiver<Vec<SocketAddr>> {
        self.inner.reflexive.clone()
    }

    /// Network changes and wake-ups, as the packet loop noticed them (after it told
    /// the core).
    pub fn net_changes(&self) -> watch::Receiver<NetChange> {
        self.inner.net.clone()
    }

    /// Test hook: the data plane behaves as after a wake from sleep (new handshakes
    /// with active peers, STUN and probes now, and the control stream and relay
    /// reconnect), so a namespace test need not suspend the machine.
    pub fn simulate_wake(&self) -> anyhow::Result<()> {
        self.send(Command::SimulateWake)
    }

    /// Connects (`Some`) or disconnects (`None`) the relay: peers without a working
    /// direct path are reached through it.
    pub fn set_relay(&self, out: Option<RelayOut>) -> anyhow::Result<()> {
        self.send(Command::SetRelay(out))
    }

    /// Feeds a datagram the relay delivered from peer `src` (its public key) into the
    /// data plane, as if it came from that peer's relay endpoint.
    pub fn relay_deliver(&self, src: [u8; 32], data: Vec<u8>) -> anyhow::Result<()> {
        self.send(Command::RelayRecv(src, data))
    }

    /// Replaces the inbound filter (the `filter` of this device's peer map). Until the
    /// first call nothing new is accepted inbound; replies to our own flows always pass.
    pub async fn set_filter(&self, rules: Vec<FilterRule>) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::SetFilter(rules, tx))?;
        rx.await.map_err(|_| anyhow!("data plane stopped"))
    }

    /// Sets the prefixes of the other profiles' networks: inbound packets to them and
    /// TUN packets from their overlays are dropped (`drop_cross_network`).
    pub fn set_crossnet(&self, c: crate::core::CrossNet) -> anyhow::Result<()> {
        self.send(Command::SetCrossNet(c))
    }

    /// Takes the denied inbound flows recorded since the last call (rate-limited per
    /// source and bounded in the filter, so this never grows without limit).
    pub async fn denied_flows(&self) -> Vec<DeniedFlow> {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::DeniedFlows(tx)).is_err() {
            return vec![];
        }
        rx.await.unwrap_or_default()
    }

    /// Takes at most `max` summaries of accepted flows (the rest wait for the next call;
    /// the filter's queue is bounded, so an absent caller costs a bounded amount).
    pub async fn flow_summaries(&self, max: usize) -> Vec<FlowSummary> {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::FlowSummaries(max, tx)).is_err() {
            return vec![];
        }
        rx.await.unwrap_or_default()
    }

    pub async fn peer_stats(&self) -> Vec<PeerStats> {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::PeerStats(tx)).is_err() {
            return vec![];
        }
        let now = SystemTime::now();
        let mono = std::time::Instant::now();
        rx.await
            .unwrap_or_default()
            .into_iter()
            .map(|p| PeerStats {
                device_id: p.device_id,
                name: p.name,
                public_key: p.public_key,
                endpoint: p.endpoint,
                path: p.path,
                rtt: p.rtt,
                last_rx: p.last_rx,
                path_changed: p
                    .path_changed
                    .and_then(|t| now.checked_sub(mono.saturating_duration_since(t))),
                last_handshake: p.last_handshake_age.and_then(|a| now.checked_sub(a)),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
            })
            .collect()
    }

    /// Data-plane counters, the policy filter's included (`drop_policy`, `filter`).
    pub async fn counters(&self) -> Counters {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Counters(tx)).is_err() {
            return Counters::default();
        }
        rx.await.unwrap_or_default()
    }

    /// ICMP echo through the tunnel from our overlay address; returns the round-trip time.
    pub async fn ping(&self, dst: IpAddr, timeout: Duration) -> anyhow::Result<Duration> {
        let (tx, rx) = oneshot::channel();
        let seq = self.inner.ping_seq.fetch_add(1, Ordering::Relaxed);
        self.send(Command::Ping {
            dst,
            id: self.inner.ping_id,
            seq,
            reply: tx,
        })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => bail!("data plane stopped"),
            Err(_) => bail!("no reply from {dst} within {timeout:?}"),
        }
    }

    /// Stops the loop and deletes the TUN device (with its addresses and routes).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        let handle = self
            .inner
            .thread
            .lock()
            .map_err(|_| anyhow!("lock poisoned"))?
            .take();
        if let Some(h) = handle {
            tokio::task::spawn_blocking(move || h.join())
                .await
                .context("join data plane thread")?
                .map_err(|_| anyhow!("data plane thread panicked"))?;
        }
        Ok(())
    }
}
