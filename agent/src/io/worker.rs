//! The packet loop: one thread that owns the `Node`, the TUN and the UDP socket, waits in
//! `poll(2)` on both plus an eventfd for control commands, and moves packets in batches.
//!
//! Outbound: each TUN read (possibly a 64 KB TSO super-packet) is cut into segments that
//! are encrypted straight into `sendmmsg` slots; runs of equal-size datagrams to one peer
//! leave as single UDP GSO messages. Inbound: `recvmmsg` with UDP GRO, each datagram
//! decrypted into the TUN write buffer behind a `virtio_net_hdr`, and consecutive TCP
//! segments of one flow coalesced into one GSO write (see `coalesce`).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::coalesce::Coalescer;
use super::netwatch::{Change, NetWatch};
use super::offload::{split_tun_read, VnetHdr, VNET_HDR_LEN};
use super::tun::Tun;
use super::udp::{RecvBatch, SendBatch, Udp, RECV_BUF};
use super::{Command, NetChange, RelayOut};
use crate::core::{is_relay_endpoint, relay_endpoint, relay_key_prefix, Event, Node};
use crate::core::{MIN_OUT_BUF, OVERHEAD};

/// Datagram slots per `sendmmsg` batch (two 64 KB super-packets of 1420-byte segments).
const SEND_SLOTS: usize = 128;
/// Messages per `recvmmsg` (each up to 64 KB with GRO).
const RECV_MSGS: usize = 16;
/// Reads/receives per wake-up before yielding to the other direction.
const TUN_READS_PER_ROUND: usize = 16;
const UDP_BATCHES_PER_ROUND: usize = 4;
const TUN_BUF: usize = 65536 + VNET_HDR_LEN + 256;

type PingReply = oneshot::Sender<anyhow::Result<Duration>>;

pub(crate) struct Worker {
    node: Node,
    tun: Tun,
    udp: Udp,
    rx: mpsc::Receiver<Command>,
    wake: OwnedFd,
    tunbuf: Vec<u8>,
    segbuf: Vec<u8>,
    send: SendBatch,
    recv: RecvBatch,
    coalescer: Coalescer,
    pings: HashMap<(IpAddr, u16, u16), PingReply>,
    stop: Option<Option<oneshot::Sender<()>>>,
    relay: Relay,
    reflexive: watch::Sender<Vec<std::net::SocketAddr>>,
    netwatch: NetWatch,
    net: watch::Sender<NetChange>,
}

/// What the loop watches and reports besides packets: our mapped addresses (from the
/// core's STUN) and changes of the host's network.
pub(crate) struct Watches {
    pub reflexive: watch::Sender<Vec<std::net::SocketAddr>>,
    pub netwatch: NetWatch,
    pub net: watch::Sender<NetChange>,
}

/// The relay side of the loop: datagrams for relay endpoints (100::/64, see
/// `core::relay_endpoint`) leave through `out`, addressed by the peer's full key.
#[derive(Default)]
struct Relay {
    out: Option<RelayOut>,
    keys: HashMap<[u8; 8], [u8; 32]>,
}

impl Relay {
    fn send(&self, dst: std::net::SocketAddr, data: &[u8]) {
        let Some(key) = relay_key_prefix(dst).and_then(|p| self.keys.get(&p)) else {
            return;
        };
        match &self.out {
            Some(out) => {
                if out.try_send((*key, data.to_vec())).is_err() {
                    tracing::trace!("relay queue full or closed; datagram dropped");
                }
            }
            None => tracing::trace!("no relay connection; datagram dropped"),
        }
    }
}

impl Worker {
    pub fn new(
        node: Node,
        tun: Tun,
        udp: Udp,
        rx: mpsc::Receiver<Command>,
        wake: OwnedFd,
        mtu: u16,
        watches: Watches,
    ) -> Self {
        let Watches {
            reflexive,
            netwatch,
            net,
        } = watches;
        let stride = (usize::from(mtu) + OVERHEAD)
            .max(MIN_OUT_BUF)
            .next_multiple_of(64);
        let vnet = tun.vnet;
        Worker {
            node,
            tun,
            udp,
            rx,
            wake,
            tunbuf: vec![0u8; TUN_BUF],
            segbuf: vec![0u8; 65536],
            send: SendBatch::new(SEND_SLOTS, stride),
            recv: RecvBatch::new(RECV_MSGS),
            coalescer: Coalescer::new(vnet),
            pings: HashMap::new(),
            stop: None,
            relay: Relay::default(),
            reflexive,
            netwatch,
            net,
        }
    }

    pub fn run(mut self) {
        while self.stop.is_none() {
            let now = Instant::now();
            let wait = self
                .node
                .poll_timeout()
                .map(|t| t.saturating_duration_since(now))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1))
                .min(self.netwatch.poll_timeout().saturating_duration_since(now));
            let mut fds = [
                libc::pollfd {
                    fd: self.tun.raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.udp.raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.netwatch.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ms = wait.as_millis().min(1000) as libc::c_int;
            // Rounded up, so a deadline a fraction of a millisecond away is not polled
            // in a busy loop.
            let ms = if wait.as_micros() % 1000 != 0 {
                ms + 1
            } else {
                ms
            };
            // SAFETY: fds is a live array of four pollfd (a negative fd is ignored).
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 4, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "poll failed, data plane stops");
                    break;
                }
                continue;
            }
            if fds[2].revents != 0 || r == 0 {
                let mut v = 0u64;
                // SAFETY: reads 8 bytes into a live u64 (eventfd counter reset).
                unsafe { libc::read(self.wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
                self.commands();
            }
            if fds[0].revents != 0 {
                self.pump_tun();
            }
            if fds[1].revents != 0 {
                self.pump_udp();
            }
            if fds[3].revents != 0 {
                self.netwatch.on_readable(Instant::now());
            }
            if let Some(c) = self.netwatch.poll(Instant::now()) {
                self.network_changed(c);
            }
            self.timers();
        }
        let reply = self.stop.take().flatten();
        tracing::info!(tun = %self.tun.name, "data plane stopped");
        drop(self); // closes the TUN, which deletes the device and its routes
        if let Some(r) = reply {
            let _ = r.send(());
        }
    }

    fn commands(&mut self) {
        loop {
            let c = match self.rx.try_recv() {
                Ok(c) => c,
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.stop = Some(None);
                    return;
                }
            };
            let now = Instant::now();
            match c {
                Command::SetPeers(p, tx) => {
                    self.relay.keys = p
                        .iter()
                        .map(|c| {
                            let k = c.public_key.0;
                            let mut pre = [0u8; 8];
                            pre.copy_from_slice(&k[..8]);
                            (pre, k)
                        })
                        .collect();
                    self.node.set_peers(p, now);
                    let _ = tx.send(());
                    self.flush_control();
                }
                Command::SetStun(servers) => {
                    self.node.set_stun_servers(servers, now);
                    self.flush_control();
                }
                Command::SetRelay(out) => {
                    self.node.set_relay_available(out.is_some());
                    self.relay.out = out;
                    self.flush_control();
                }
                Command::RelayRecv(src, data) => {
                    let from = relay_endpoint(&src);
                    let Worker {
                        node,
                        tun,
                        coalescer,
                        ..
                    } = self;
                    let out = coalescer.slot();
                    if let Some((len, ip)) = node.handle_datagram_parsed(from, &data, out, now) {
                        coalescer.commit(len, &ip, tun);
                    }
                    coalescer.flush(tun);
                    self.flush_control();
                }
                Command::SetFilter(rules, tx) => {
                    self.node.set_filter(rules);
                    let _ = tx.send(());
                }
                Command::SetCrossNet(c) => {
                    tracing::debug!(?c, "prefixes of other networks");
                    self.node.set_crossnet(c);
                }
                Command::DeniedFlows(tx) => {
                    let mut v = Vec::new();
                    while let Some(d) = self.node.poll_denied() {
                        v.push(d);
                    }
                    let _ = tx.send(v);
                }
                Command::FlowSummaries(max, tx) => {
                    let now = Instant::now();
                    let mut v = Vec::new();
                    while v.len() < max {
                        let Some(s) = self.node.poll_flow_summary(now) else {
                            break;
                        };
                        v.push(s);
                    }
                    let _ = tx.send(v);
                }
                Command::PeerStats(tx) => {
                    let _ = tx.send(self.node.peer_stats());
                }
                Command::SimulateWake => {
                    let c = self.netwatch.inject_wake();
                    self.network_changed(c);
                }
                Command::Counters(tx) => {
                    let _ = tx.send(self.node.all_counters());
                }
                Command::Ping {
                    dst,
                    id,
                    seq,
                    reply,
                } => match self.node.send_ping(dst, id, seq, now) {
                    Ok(()) => {
                        self.pings.insert((dst, id, seq), reply);
                        self.flush_control();
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                },
                Command::Shutdown(tx) => {
                    self.stop = Some(Some(tx));
                    return;
                }
            }
        }
    }

    /// Tells the core (STUN, probes, and after a sleep new handshakes), sends what it
    /// queued, then tells the control stream and the relay client. The UDP socket is
    /// bound to the wildcard address (`udp::Udp::bind`), so it survives any change of
    /// the host's addresses and is never rebound.
    fn network_changed(&mut self, c: Change) {
        let now = Instant::now();
        let wake = match c {
            Change::Network => {
                tracing::info!("network changed: probing peers and asking STUN again");
                self.node.handle_network_change(now);
                false
            }
            Change::Wake { slept } => {
                tracing::info!(
                    slept_s = slept.as_secs(),
                    "woke from sleep: new handshakes with active peers"
                );
                self.node.handle_wake(now);
                true
            }
        };
        self.flush_control();
        self.net.send_modify(|n| {
            n.seq += 1;
            n.wake = wake;
        });
    }

    /// TUN -> encrypt -> UDP.
    fn pump_tun(&mut self) {
        let Worker {
            node,
            tun,
            udp,
            tunbuf,
            segbuf,
            send,
            relay,
            ..
        } = self;
        for _ in 0..TUN_READS_PER_ROUND {
            let n = match tun.read(tunbuf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "TUN read failed");
                    break;
                }
            };
            let now = Instant::now();
            let mut handle = |p: &[u8]| {
                if send.is_full() {
                    send.flush(udp);
                }
                if let Some((dst, len)) = node.handle_tun_packet(p, send.slot(), now) {
                    if is_relay_endpoint(dst) {
                        relay.send(dst, &send.slot()[..len]);
                    } else {
                        send.commit(dst, len);
                    }
                }
            };
            if tun.vnet {
                let Some(hdr) = VnetHdr::parse(&tunbuf[..n]) else {
                    continue;
                };
                if let Err(e) =
                    split_tun_read(&hdr, &mut tunbuf[VNET_HDR_LEN..n], segbuf, &mut handle)
                {
                    tracing::trace!(error = %e, "TUN packet dropped");
                }
            } else {
                handle(&tunbuf[..n]);
            }
        }
        send.flush(udp);
        self.flush_control();
    }

    /// UDP -> decrypt -> TUN.
    fn pump_udp(&mut self) {
        for _ in 0..UDP_BATCHES_PER_ROUND {
            let n = match self.udp.recv_batch(&mut self.recv) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive failed");
                    break;
                }
            };
            let now = Instant::now();
            let Worker {
                node,
                tun,
                recv,
                coalescer,
                ..
            } = self;
            for i in 0..n {
                let Some((from, data, seg)) = recv.get(i) else {
                    continue;
                };
                for d in data.chunks(seg) {
                    let out = coalescer.slot();
                    if let Some((len, ip)) = node.handle_datagram_parsed(from, d, out, now) {
                        coalescer.commit(len, &ip, tun);
                    }
                }
            }
            coalescer.flush(tun);
            self.flush_control();
            if n < RECV_MSGS {
                break;
            }
        }
        const { assert!(RECV_BUF >= 65536) };
    }

    fn timers(&mut self) {
        let now = Instant::now();
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
            self.flush_control();
            self.pings.retain(|_, tx| !tx.is_closed());
        }
    }

    /// Sends what the core queued (handshakes, keepalives) and dispatches its events.
    fn flush_control(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            if is_relay_endpoint(t.dst) {
                self.relay.send(t.dst, &t.payload);
            } else if let Err(e) = self.udp.send_to(&t.payload, t.dst) {
                tracing::debug!(dst = %t.dst, error = %e, "control datagram not sent");
            }
        }
        while let Some(e) = self.node.poll_event() {
            match e {
                Event::PingReply {
                    from, id, seq, rtt, ..
                } => {
                    if let Some(tx) = self.pings.remove(&(from, id, seq)) {
                        let _ = tx.send(Ok(rtt));
                    }
                }
                Event::HandshakeCompleted {
                    public_key,
                    endpoint,
                    ..
                } => {
                    tracing::info!(peer = %public_key.short(), %endpoint, "handshake completed");
                }
                Event::EndpointChanged {
                    device_id,
                    endpoint,
                } => {
                    tracing::debug!(%device_id, %endpoint, "peer endpoint changed");
                }
                Event::PathChanged {
                    device_id,
                    path,
                    rtt,
                } => {
                    tracing::info!(%device_id, ?path, ?rtt, "peer path changed");
                }
                Event::ReflexiveChanged { addrs, mapping } => {
                    tracing::info!(
                        ?addrs,
                        mapping = mapping.as_str(),
                        "mapped addresses changed"
                    );
                    self.reflexive.send_replace(addrs);
                }
            }
        }
    }
}
