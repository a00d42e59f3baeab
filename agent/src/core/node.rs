//! The `Node`: all peers of this device, the hot paths (TUN packet -> datagram,
//! datagram -> TUN packet), timers and the built-in ping.
//!
//! Inbound datagrams are matched to a peer without trying every `Tunn`: handshake
//! initiations by the static key they carry (decrypted with ours, after the MAC check),
//! everything else by the receiver index, whose upper 24 bits are the index we gave the
//! peer's `Tunn`. The decrypted packet's source must lie in that peer's allowed IPs,
//! and the packet must then pass the inbound policy filter (`crate::filter`): a rule
//! of this device's compiled policy, or a reply to a flow this device opened (every
//! packet sent through the tunnel is tracked). A new node accepts no new inbound flow
//! until [`Node::set_filter`] gives it rules.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use rand::rngs::StdRng;
use rand::Rng;
use x25519_dalek::{PublicKey, StaticSecret};
use zmesh_shared::policy::FilterRule;
use zmesh_shared::WgPrivateKey;

use super::crossnet::CrossNet;
use super::nat::{is_relay_endpoint, relay_endpoint, StunState};
use super::packet;
use super::peer::{Peer, RouteTable};
use super::probe::{self, ProbeKey};
use super::{CoreError, Counters, Event, PeerConfig, PeerStats, Transmit};
use crate::filter::{DeniedFlow, Filter, FlowSummary};
use crate::ip::Pkt;

/// Bytes a data message adds to an IP packet (type, index, counter, tag).
pub const OVERHEAD: usize = 32;
/// Smallest `out` buffer the hot paths accept (a handshake initiation is 148 bytes).
pub const MIN_OUT_BUF: usize = 148;
/// How often per-peer timers run.
const TICK: Duration = Duration::from_millis(250);
/// Handshake messages per second before cookies are demanded. Each handshake message is
/// checked twice (once here to find the peer, once inside `Tunn`), hence the doubling.
const HANDSHAKE_RATE_LIMIT: u64 = 2 * 100;
/// A ping without reply is forgotten after this long.
const PING_TTL: Duration = Duration::from_secs(30);
/// Largest IP packet (the IPv4/IPv6 length fields are 16 bits).
const MAX_IP_PACKET: usize = 65535;
/// Upper bound on queued packets flushed after one handshake (boringtun queues 256).
const MAX_FLUSH: usize = 300;
/// Receiver indexes are 24 bits wide.
const INDEX_MASK: u32 = 0x00ff_ffff;

/// A map whose iteration order is the same in every run (fixed SipHash keys), for keys
/// the node chooses itself (receiver indexes): the order of transmits from timers and
/// path probing follows it. Not for keys a peer controls (HashDoS): the filter keeps
/// randomly keyed maps, which decide no transmit's content or order.
pub(crate) type FixedMap<K, V> = HashMap<K, V, BuildHasherDefault<std::hash::DefaultHasher>>;

enum Kind {
    Init,
    Response,
    Other,
}

pub struct Node {
    secret: StaticSecret,
    public: PublicKey,
    own_v4: Ipv4Addr,
    own_v6: Ipv6Addr,
    peers: FixedMap<u32, Peer>,
    by_key: FixedMap<[u8; 32], u32>,
    routes: RouteTable,
    next_index: u32,
    rate_limiter: Arc<RateLimiter>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: Counters,
    /// Outstanding pings: (target, id, seq) -> sent at.
    pings: HashMap<(IpAddr, u16, u16), Instant>,
    next_tick: Option<Instant>,
    scratch: Vec<u8>,
    /// Inbound policy filter with conntrack of our own flows. Starts empty: nothing
    /// new is accepted until a policy arrives (replies to our own flows always pass).
    filter: Filter,
    stun: StunState,
    /// A relay connection exists: peers without a direct path go through it.
    relay: bool,
    /// Reused buffer for the pings `PathState::poll` asks for.
    pings_due: Vec<(SocketAddr, u64)>,
    /// The latest `now` the timers saw, to stamp path changes that come from calls
    /// without a clock (the relay coming and going).
    last_now: Option<Instant>,
    /// Every random value the node chooses (STUN transaction ids, probe nonces) comes
    /// from here, so a simulation with the same seed and inputs replays the same packets.
    rng: StdRng,
    /// Prefixes of the other profiles' networks (see [`super::crossnet`]); empty with one.
    crossnet: CrossNet,
}

impl Node {
    /// A node with no peers and no inbound rules. All of zmesh's own randomness (STUN
    /// transaction ids, probe nonces) is drawn from `rng`; production seeds it from the
    /// OS ([`crate::io`] does), simulations from a fixed seed.
    ///
    /// Not covered, because boringtun 0.7 offers no way to inject randomness or time:
    /// `Tunn` draws its handshake ephemeral keys from `OsRng` and stamps initiations with
    /// the system clock (so handshake messages, the session keys they derive and thus
    /// every data message's ciphertext differ between runs), and `RateLimiter::new`
    /// draws its cookie secrets from `OsRng` (cookie replies). `Tunn::new` takes the
    /// receiver index, which the node allocates deterministically, so message types,
    /// lengths, indexes and counters do replay; so does everything zmesh builds itself
    /// (probes, STUN requests, the order of all transmits), as long as boringtun's own
    /// real-time timers (5 s handshake retry, keepalives) do not fire mid-simulation.
    pub fn new(
        private_key: WgPrivateKey,
        own_v4: Ipv4Addr,
        own_v6: Ipv6Addr,
        mut rng: StdRng,
    ) -> Self {
        let secret = private_key.to_x25519();
        let public = PublicKey::from(&secret);
        Node {
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            secret,
            public,
            own_v4,
            own_v6,
            peers: FixedMap::default(),
            by_key: FixedMap::default(),
            routes: RouteTable::default(),
            next_index: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            pings: HashMap::new(),
            next_tick: None,
            scratch: vec![0u8; 2048],
            filter: {
                let mut f = Filter::new(Vec::new());
                f.set_own_addrs(vec![IpAddr::V4(own_v4), IpAddr::V6(own_v6)]);
                f
            },
            stun: StunState::new(rng.gen()),
            relay: false,
            pings_due: vec![],
            last_now: None,
            rng,
            crossnet: CrossNet::default(),
        }
    }

    /// Sets the desired peer set. Peers whose key and keepalive are unchanged keep their
    /// `Tunn` (and so their session); a changed key is a different peer (new `Tunn`, new
    /// receiver index); peers not listed are dropped with their sessions.
    pub fn set_peers(&mut self, peers: Vec<PeerConfig>, now: Instant) {
        let mut old = std::mem::take(&mut self.peers);
        self.by_key.clear();
        for cfg in peers {
            let key = cfg.public_key.0;
            if key == *self.public.as_bytes() || self.by_key.contains_key(&key) {
                tracing::warn!(peer = %cfg.public_key, "ignoring duplicate peer or our own key");
                continue;
            }
            let reuse = old
                .iter()
                .find(|(_, p)| p.config.public_key.0 == key)
                .map(|(i, _)| *i)
                .filter(|i| old[i].config.persistent_keepalive == cfg.persistent_keepalive);
            let mut peer = match reuse.and_then(|i| old.remove(&i)) {
                Some(mut p) => {
                    p.update_config(cfg);
                    p
                }
                None => {
                    let index = self.alloc_index(&old);
                    tracing::debug!(peer = %cfg.public_key, index, "new peer");
                    let tunn = Tunn::new(
                        self.secret.clone(),
                        PublicKey::from(key),
                        None,
                        cfg.persistent_keepalive,
                        index,
                        Some(Arc::clone(&self.rate_limiter)),
                    );
                    let mut p = Peer::new(index, cfg, tunn);
                    p.probe_key = ProbeKey::derive(&self.secret, &PublicKey::from(key)).ok();
                    p
                }
            };
            peer.path
                .set_relay(self.relay.then(|| relay_endpoint(&key)));
            peer.path.set_candidates(&peer.config.endpoints, now);
            apply_path(&mut peer, &mut self.events, &mut self.transmits, Some(now));
            self.by_key.insert(key, peer.index);
            self.peers.insert(peer.index, peer);
        }
        for p in old.values() {
            tracing::debug!(peer = %p.config.public_key, "peer removed");
        }
        self.routes.rebuild(self.peers.values());
        if self.next_tick.is_none() {
            self.next_tick = Some(now);
        }
    }

    fn alloc_index(&mut self, old: &FixedMap<u32, Peer>) -> u32 {
        // Indexes are not reused soon, so a stale session of a removed peer never maps to
        // a new one; 2^24 peers changes are far away, but wrap safely anyway.
        loop {
            let i = self.next_index & INDEX_MASK;
            self.next_index = self.next_index.wrapping_add(1);
            if i != 0 && !self.peers.contains_key(&i) && !old.contains_key(&i) {
                return i;
            }
        }
    }

    /// Hot path, outbound: routes `pkt` (an IP packet read from the TUN) by destination
    /// and encrypts it into `out`. `Some((endpoint, len))`: send `out[..len]` there.
    /// Without a session the packet is queued and a handshake initiation is returned.
    pub fn handle_tun_packet(
        &mut self,
        pkt: &[u8],
        out: &mut [u8],
        now: Instant,
    ) -> Option<(SocketAddr, usize)> {
        let Some(dst) = packet::dst_addr(pkt) else {
            self.counters.drop_tun_invalid += 1;
            return None;
        };
        if pkt.len() > MAX_IP_PACKET || out.len() < (pkt.len() + OVERHEAD).max(MIN_OUT_BUF) {
            self.counters.drop_oversize += 1;
            return None;
        }
        // Forwarded here by the kernel from another profile's tunnel: never leaves.
        if !self.crossnet.is_empty() {
            match crate::ip::parse_ip(pkt) {
                None => {
                    self.counters.drop_tun_invalid += 1;
                    return None;
                }
                Some(ip) if self.crossnet.blocks_src(ip.src) => {
                    self.counters.drop_cross_network += 1;
                    tracing::trace!(src = %ip.src, %dst, "source in another network");
                    return None;
                }
                Some(_) => {}
            }
        }
        let Some(idx) = self.routes.lookup(dst) else {
            self.counters.drop_no_route += 1;
            tracing::trace!(%dst, "no route");
            return None;
        };
        let peer = self.peers.get_mut(&idx)?;
        let Some(ep) = peer.endpoint else {
            self.counters.drop_no_endpoint += 1;
            return None;
        };
        // Track the flow so the peer's replies pass our inbound filter.
        self.filter.outbound(pkt, now);
        match peer.tunn.encapsulate(pkt, out) {
            TunnResult::WriteToNetwork(b) => {
                match b.first() {
                    Some(&4) => self.counters.sent(ep, b.len()),
                    Some(&1) => peer.awaiting_handshake = true,
                    _ => {}
                }
                Some((ep, b.len()))
            }
            TunnResult::Err(e) => {
                tracing::trace!(?e, "encapsulate failed");
                None
            }
            _ => None,
        }
    }

    /// Hot path, inbound: authenticates and decrypts a datagram from `from` into `out`.
    /// `Some(len)`: write `out[..len]` to the TUN. Handshake replies and queued packets
    /// go to [`poll_transmit`](Self::poll_transmit).
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        out: &mut [u8],
        now: Instant,
    ) -> Option<usize> {
        self.handle_datagram_parsed(from, data, out, now)
            .map(|(len, _)| len)
    }

    /// [`handle_datagram`](Self::handle_datagram) that also returns the parse of the
    /// packet in `out[..len]` (by [`crate::ip`], done once here for the source check,
    /// the ping, the filter and then the I/O layer's coalescer).
    pub fn handle_datagram_parsed(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        out: &mut [u8],
        now: Instant,
    ) -> Option<(usize, Pkt)> {
        if data.len() > MAX_IP_PACKET + OVERHEAD || out.len() < data.len().max(MIN_OUT_BUF) {
            self.counters.drop_oversize += 1;
            return None;
        }
        if probe::is_probe(data) {
            self.handle_probe(from, data, now);
            return None;
        }
        // STUN only from our servers: a WireGuard message could carry the cookie by chance.
        if self.stun.is_server(from) && zmesh_shared::stun::is_stun(data) {
            if self.stun.on_response(from, data) {
                self.events.push_back(Event::ReflexiveChanged {
                    addrs: self.stun.reflexive(),
                    mapping: self.stun.mapping(),
                });
            }
            return None;
        }
        let parsed = match Tunn::parse_incoming_packet(data) {
            Ok(p) => p,
            Err(_) => {
                self.counters.drop_garbage += 1;
                return None;
            }
        };
        let (idx, kind) = match parsed {
            Packet::HandshakeInit(ref init) => {
                // MAC and load check before the costly DH of identifying the sender.
                match self.rate_limiter.verify_packet(Some(from.ip()), data, out) {
                    Ok(_) => {}
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        self.counters.cookie_replies += 1;
                        self.transmits.push_back(Transmit {
                            dst: from,
                            payload: cookie.to_vec(),
                        });
                        return None;
                    }
                    Err(_) => {
                        self.counters.drop_garbage += 1;
                        return None;
                    }
                }
                let Ok(half) = parse_handshake_anon(&self.secret, &self.public, init) else {
                    self.counters.drop_handshake_failed += 1;
                    return None;
                };
                let Some(idx) = self.by_key.get(&half.peer_static_public) else {
                    self.counters.drop_unknown_key += 1;
                    tracing::debug!(%from, "handshake from unknown key");
                    return None;
                };
                (*idx, Kind::Init)
            }
            Packet::HandshakeResponse(ref r) => (r.receiver_idx >> 8, Kind::Response),
            Packet::PacketCookieReply(ref c) => (c.receiver_idx >> 8, Kind::Other),
            Packet::PacketData(ref d) => (d.receiver_idx >> 8, Kind::Other),
        };
        let Some(peer) = self.peers.get_mut(&idx) else {
            self.counters.drop_unknown_index += 1;
            tracing::trace!(%from, idx, "unknown receiver index");
            return None;
        };
        let (len, src) = match peer.tunn.decapsulate(Some(from.ip()), data, out) {
            TunnResult::WriteToTunnelV4(b, a) => (b.len(), IpAddr::V4(a)),
            TunnResult::WriteToTunnelV6(b, a) => (b.len(), IpAddr::V6(a)),
            TunnResult::WriteToNetwork(b) => {
                self.transmits.push_back(Transmit {
                    dst: from,
                    payload: b.to_vec(),
                });
                if note_rx(peer, from, now, &mut self.events) {
                    self.next_tick = Some(now);
                }
                if matches!(kind, Kind::Init | Kind::Response) {
                    peer.awaiting_handshake = false;
                    self.counters.handshakes += 1;
                    tracing::debug!(peer = %peer.config.public_key, %from, "handshake completed");
                    self.events.push_back(Event::HandshakeCompleted {
                        device_id: peer.config.device_id,
                        public_key: peer.config.public_key,
                        endpoint: from,
                    });
                }
                // Packets that waited for this handshake go out now.
                for _ in 0..MAX_FLUSH {
                    match peer.tunn.decapsulate(None, &[], out) {
                        TunnResult::WriteToNetwork(b) => {
                            self.counters.sent(from, b.len());
                            self.transmits.push_back(Transmit {
                                dst: from,
                                payload: b.to_vec(),
                            })
                        }
                        _ => break,
                    }
                }
                return None;
            }
            TunnResult::Done => {
                // Keepalive or cookie: authenticated, so the sender is where it says.
                if note_rx(peer, from, now, &mut self.events) {
                    self.next_tick = Some(now);
                }
                return None;
            }
            TunnResult::Err(e) => {
                let c = &mut self.counters;
                match e {
                    WireGuardError::InvalidAeadTag => c.drop_decrypt_failed += 1,
                    WireGuardError::InvalidCounter | WireGuardError::DuplicateCounter => {
                        c.drop_replay += 1
                    }
                    WireGuardError::NoCurrentSession | WireGuardError::WrongIndex => {
                        c.drop_no_session += 1
                    }
                    WireGuardError::InvalidMac
                    | WireGuardError::InvalidPacket
                    | WireGuardError::IncorrectPacketLength
                    | WireGuardError::WrongPacketType => c.drop_garbage += 1,
                    _ => c.drop_handshake_failed += 1,
                }
                tracing::trace!(?e, %from, "datagram dropped");
                return None;
            }
        };
        // Cryptokey routing: the peer may only speak for its own allowed IPs.
        if !peer.allows(src) {
            self.counters.drop_bad_source += 1;
            tracing::trace!(%src, peer = %peer.config.public_key, "source outside allowed IPs");
            return None;
        }
        if note_rx(peer, from, now, &mut self.events) {
            self.next_tick = Some(now);
        }
        let pkt = &out[..len];
        let Some(ip) = packet::parse_ip(pkt) else {
            self.counters.drop_bad_inner += 1;
            return None;
        };
        // Another profile's network is not reachable through this one.
        if !self.crossnet.is_empty() && self.crossnet.blocks_dst(ip.dst) {
            self.counters.drop_cross_network += 1;
            tracing::trace!(dst = %ip.dst, "destination in another network");
            return None;
        }
        if let Some(r) = packet::echo_reply(pkt, &ip) {
            if let Some(sent) = self.pings.remove(&(r.src, r.id, r.seq)) {
                if r.dst == IpAddr::V4(self.own_v4) || r.dst == IpAddr::V6(self.own_v6) {
                    self.events.push_back(Event::PingReply {
                        device_id: peer.config.device_id,
                        from: r.src,
                        id: r.id,
                        seq: r.seq,
                        rtt: now.saturating_duration_since(sent),
                    });
                    return None;
                }
            }
        }
        // Default deny on the receiving side: the policy, or a reply to our own flow.
        let parsed = crate::ip::parse_transport(pkt, &ip);
        let verdict = self.filter.inbound_parsed(pkt, parsed.as_ref(), now);
        let (true, Some(parsed)) = (verdict.accepted(), parsed) else {
            self.counters.drop_policy += 1;
            tracing::trace!(?verdict, peer = %peer.config.public_key, "inbound packet denied by policy");
            return None;
        };
        self.counters.received(from, data.len());
        Some((len, parsed))
    }

    /// Runs per-peer timers (handshake retries, keepalives, rekeys) when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.next_tick {
            Some(t) if now >= t => {}
            _ => return,
        }
        self.next_tick = Some(now + TICK);
        self.last_now = Some(self.last_now.map_or(now, |t| t.max(now)));
        // Our limiter is shared by all Tunns, so they do not reset it themselves.
        self.rate_limiter.reset_count();
        for peer in self.peers.values_mut() {
            match peer.tunn.update_timers(&mut self.scratch) {
                TunnResult::WriteToNetwork(b) => {
                    if b.first() == Some(&1) {
                        peer.awaiting_handshake = true;
                        peer.rotate_endpoint();
                    }
                    if let Some(ep) = peer.endpoint {
                        self.transmits.push_back(Transmit {
                            dst: ep,
                            payload: b.to_vec(),
                        });
                    }
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                TunnResult::Err(e) => tracing::trace!(?e, "timer error"),
                _ => {}
            }
        }
        self.pings
            .retain(|_, sent| now.saturating_duration_since(*sent) < PING_TTL);
        self.poll_paths(now);
        let mut stun_out = vec![];
        self.stun.poll(now, &mut stun_out);
        for (dst, payload) in stun_out {
            self.transmits.push_back(Transmit { dst, payload });
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Sends an ICMP echo request from our overlay address to `dst` through the tunnel.
    /// The reply surfaces as [`Event::PingReply`] and is not written to the TUN.
    pub fn send_ping(
        &mut self,
        dst: IpAddr,
        id: u16,
        seq: u16,
        now: Instant,
    ) -> Result<(), CoreError> {
        let src = match dst {
            IpAddr::V4(_) => IpAddr::V4(self.own_v4),
            IpAddr::V6(_) => IpAddr::V6(self.own_v6),
        };
        let idx = self.routes.lookup(dst).ok_or(CoreError::NoRoute(dst))?;
        let peer = self.peers.get(&idx).ok_or(CoreError::NoRoute(dst))?;
        if peer.endpoint.is_none() {
            return Err(CoreError::NoEndpoint(peer.config.device_id));
        }
        let mut pkt = [0u8; 64];
        let n = packet::build_echo_request(src, dst, id, seq, b"zmesh-ping", &mut pkt)
            .ok_or(CoreError::BadPingTarget(dst))?;
        let mut out = [0u8; 256];
        self.pings.insert((dst, id, seq), now);
        // None here means "queued behind a handshake in progress", which is fine.
        if let Some((ep, len)) = self.handle_tun_packet(&pkt[..n], &mut out, now) {
            self.transmits.push_back(Transmit {
                dst: ep,
                payload: out[..len].to_vec(),
            });
        }
        Ok(())
    }

    pub fn peer_stats(&self) -> Vec<PeerStats> {
        let mut v: Vec<PeerStats> = self
            .peers
            .values()
            .map(|p| {
                let (age, tx, rx, _, _) = p.tunn.stats();
                PeerStats {
                    device_id: p.config.device_id,
                    name: p.config.name.clone(),
                    public_key: p.config.public_key,
                    endpoint: p.endpoint,
                    last_handshake_age: age,
                    rx_bytes: rx as u64,
                    tx_bytes: tx as u64,
                    path: p.path.kind(),
                    rtt: p.path.rtt(),
                    last_rx: p.path.last_rx(),
                    path_changed: p.path_changed,
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.device_id.cmp(&b.device_id)));
        v
    }

    /// STUN servers to learn our mapped addresses from (at least two to tell the NAT's
    /// mapping behaviour). Answers arrive as [`Event::ReflexiveChanged`].
    pub fn set_stun_servers(&mut self, servers: Vec<SocketAddr>, now: Instant) {
        self.stun.set_servers(servers, now);
        if self.next_tick.is_none() {
            self.next_tick = Some(now);
        }
    }

    /// Our server-reflexive addresses and the NAT mapping behaviour seen so far.
    pub fn reflexive(&self) -> (Vec<SocketAddr>, super::NatMapping) {
        (self.stun.reflexive(), self.stun.mapping())
    }

    /// Whether a relay is connected; peers without a working direct path use it.
    pub fn set_relay_available(&mut self, on: bool) {
        if self.relay == on {
            return;
        }
        self.relay = on;
        for peer in self.peers.values_mut() {
            let key = peer.config.public_key.0;
            peer.path.set_relay(on.then(|| relay_endpoint(&key)));
            apply_path(peer, &mut self.events, &mut self.transmits, self.last_now);
        }
    }

    /// Probe every candidate of every peer now (the console said so, or our own
    /// addresses changed).
    pub fn probe_now(&mut self, now: Instant) {
        for peer in self.peers.values_mut() {
            peer.path.probe_now(now);
        }
        self.next_tick = Some(now);
    }

    /// The host's network changed (an address, link or default route came or went; the
    /// I/O layer watches rtnetlink and debounces). Our mapped addresses are asked for
    /// again at once (the old ones may belong to a network we left), and every peer's
    /// candidates are probed in a burst: a path through the old network misses its
    /// probes and is replaced by one that answers (see `path`), and the peer learns
    /// our new address from the probes themselves, before the console passes it on.
    pub fn handle_network_change(&mut self, now: Instant) {
        tracing::debug!(
            peers = self.peers.len(),
            "network changed: STUN and probes now"
        );
        self.stun.restart(now);
        self.probe_now(now);
    }

    /// The host woke from sleep (the boot-time clock ran ahead of the monotonic one).
    /// Everything a network change does, plus a new handshake with every peer that had
    /// a session: while we slept the peer may have dropped our session (WireGuard
    /// rejects a session after 180 s) or restarted, and boringtun's timers, which run
    /// on the monotonic clock, did not see the time pass, so they would keep sending
    /// on the dead session until their own retry (about 15 s later).
    pub fn handle_wake(&mut self, now: Instant) {
        self.handle_network_change(now);
        let mut buf = [0u8; MIN_OUT_BUF];
        let mut n = 0usize;
        for peer in self.peers.values_mut() {
            let had_session = peer.tunn.time_since_last_handshake().is_some();
            if !had_session && !peer.awaiting_handshake {
                continue;
            }
            let Some(ep) = peer.endpoint else { continue };
            if let TunnResult::WriteToNetwork(b) =
                peer.tunn.format_handshake_initiation(&mut buf, true)
            {
                peer.awaiting_handshake = true;
                n += 1;
                self.transmits.push_back(Transmit {
                    dst: ep,
                    payload: b.to_vec(),
                });
            }
        }
        tracing::debug!(handshakes = n, "woke up: new handshakes with active peers");
    }

    fn handle_probe(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        let Some(peer) = probe::sender(data)
            .ok()
            .and_then(|k| self.by_key.get(&k))
            .and_then(|i| self.peers.get_mut(i))
        else {
            self.counters.drop_probe += 1;
            return;
        };
        let Some(p) = peer
            .probe_key
            .as_ref()
            .and_then(|k| probe::open(k, data).ok())
        else {
            self.counters.drop_probe += 1;
            return;
        };
        if is_relay_endpoint(from) {
            return; // probes measure direct paths only
        }
        self.counters.probes_rx += 1;
        match p.kind {
            probe::Kind::Ping => {
                let pong = probe::Probe {
                    kind: probe::Kind::Pong,
                    tx: p.tx,
                    observed: Some(from),
                };
                if let Some(k) = &peer.probe_key {
                    self.transmits.push_back(Transmit {
                        dst: from,
                        payload: probe::seal(k, self.public.as_bytes(), &pong, self.rng.gen()),
                    });
                }
                tracing::trace!(%from, "probe ping");
                peer.path.on_rx_direct(from, now);
                self.next_tick = Some(self.next_tick.map_or(now, |t| t.min(now)));
            }
            probe::Kind::Pong => {
                tracing::trace!(%from, "probe pong");
                if peer.path.on_pong(from, p.tx, now) {
                    apply_path(peer, &mut self.events, &mut self.transmits, Some(now));
                }
            }
        }
    }

    fn poll_paths(&mut self, now: Instant) {
        let me = *self.public.as_bytes();
        for peer in self.peers.values_mut() {
            let before = peer.path.kind();
            self.pings_due.clear();
            peer.path.poll(now, &mut self.pings_due);
            if peer.path.kind() != before {
                apply_path(peer, &mut self.events, &mut self.transmits, Some(now));
            }
            let Some(k) = &peer.probe_key else { continue };
            for (dst, tx) in self.pings_due.drain(..) {
                let ping = probe::Probe {
                    kind: probe::Kind::Ping,
                    tx,
                    observed: None,
                };
                self.transmits.push_back(Transmit {
                    dst,
                    payload: probe::seal(k, &me, &ping, self.rng.gen()),
                });
            }
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The node's counters with the filter's folded in (`filter`).
    pub fn all_counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.filter = self.filter.counters();
        c
    }

    /// Sets the other profiles' prefixes (empty: this is the only network).
    pub fn set_crossnet(&mut self, c: CrossNet) {
        self.crossnet = c;
    }

    /// Replaces the inbound filter rules; tracked flows are kept, so replies to flows
    /// opened before the change still pass.
    pub fn set_filter(&mut self, rules: Vec<FilterRule>) {
        self.filter.set_rules(rules);
    }

    /// The next rate-limited record of a denied inbound flow, for the audit log.
    pub fn poll_denied(&mut self) -> Option<DeniedFlow> {
        self.filter.poll_denied()
    }

    /// The next summary of an accepted flow (see [`Filter::poll_flow_summary`]).
    pub fn poll_flow_summary(&mut self, now: Instant) -> Option<FlowSummary> {
        self.filter.poll_flow_summary(now)
    }

    pub fn public_key(&self) -> zmesh_shared::WgPublicKey {
        zmesh_shared::WgPublicKey(*self.public.as_bytes())
    }

    pub fn overlay_addrs(&self) -> (Ipv4Addr, Ipv6Addr) {
        (self.own_v4, self.own_v6)
    }
}

/// Points the peer's endpoint at what its path state chose (if it chose anything).
/// A handshake waiting for an answer is sent again at once on the new path, instead of
/// after the 5 s retry timer (the old path is the likely reason it got no answer).
fn apply_path(
    peer: &mut Peer,
    events: &mut VecDeque<Event>,
    transmits: &mut VecDeque<Transmit>,
    now: Option<Instant>,
) {
    let Some(ep) = peer.path.endpoint() else {
        return;
    };
    if peer.endpoint != Some(ep) || !peer.confirmed {
        peer.confirmed = true;
        if peer.endpoint != Some(ep) {
            peer.path_changed = now.or(peer.path_changed);
        }
        peer.endpoint = Some(ep);
        if peer.awaiting_handshake {
            let mut buf = [0u8; MIN_OUT_BUF];
            if let TunnResult::WriteToNetwork(b) =
                peer.tunn.format_handshake_initiation(&mut buf, true)
            {
                transmits.push_back(Transmit {
                    dst: ep,
                    payload: b.to_vec(),
                });
            }
        }
        tracing::debug!(peer = %peer.config.public_key, path = ?peer.path.kind(), "path changed");
        events.push_back(Event::EndpointChanged {
            device_id: peer.config.device_id,
            endpoint: ep,
        });
        events.push_back(Event::PathChanged {
            device_id: peer.config.device_id,
            path: peer.path.kind(),
            rtt: peer.path.rtt(),
        });
    }
}

/// An authenticated WireGuard message came from `from`. Classic roaming (follow the
/// sender), except that a working direct path is not given up for the relay or for
/// another address until probing says so.
/// Returns true if the peer's path wants probing now (it sent from a new address).
fn note_rx(peer: &mut Peer, from: SocketAddr, now: Instant, events: &mut VecDeque<Event>) -> bool {
    let probe = !is_relay_endpoint(from) && peer.path.on_rx_direct(from, now);
    if peer.path.has_live_direct() && peer.endpoint != Some(from) {
        return probe;
    }
    if peer.roam(from) {
        peer.path_changed = Some(now);
        let device_id = peer.config.device_id;
        events.push_back(Event::EndpointChanged {
            device_id,
            endpoint: from,
        });
    }
    probe
}
