//! Fuzz target: the agent core (`zmesh_agent::core::Node`) receiving arbitrary UDP
//! datagrams, in every state a real peer can bring it to.
//!
//! The node under test, B, has two peers with fixed keys: A, which is a real `Node`
//! in this process (so handshakes complete and authentic data, probes and STUN answers
//! reach the code behind the cryptography), and C, which exists only as a key. The
//! input is a script of operations: raw datagrams from chosen addresses, IP packets A
//! tunnels to B (any bytes: the inner packet parser and the policy filter see them),
//! packets B tunnels to A, mutated and replayed captures of A's datagrams, authentic
//! probes, STUN answers, pings, clock steps and relay switches. The node must never
//! panic, and every packet it hands to the TUN must come from the allowed IPs of A (the
//! only peer that can encrypt to it).

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use zmesh_agent::core::probe::{self, ProbeKey};
use zmesh_agent::core::{relay_endpoint, Node, PeerConfig, SeedableRng, StdRng};
use zmesh_shared::policy::{FilterRule, PortRange, Proto};
use zmesh_shared::{stun, DeviceId, WgPrivateKey};

const A_V4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const B_V4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const C_V4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 3);
const A_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const B_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
const C_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);

/// Operations per input, datagrams per pump: bounds the work of one run.
const MAX_OPS: usize = 48;
const MAX_PUMP: usize = 64;
/// Captured datagrams of A kept for replay and mutation.
const MAX_SEEN: usize = 64;
/// Largest raw datagram an operation makes (the node's own limit is tested too).
const MAX_RAW: usize = 4096;

struct Fixed {
    a: WgPrivateKey,
    b: WgPrivateKey,
    c: WgPrivateKey,
    /// A's probe key with B.
    ab: ProbeKey,
    a_addr: SocketAddr,
    /// A second endpoint of A nobody answers at (a dead candidate path).
    a_alt: SocketAddr,
    b_addr: SocketAddr,
    c_addr: SocketAddr,
    stun: [SocketAddr; 2],
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let (a, b) = (
            WgPrivateKey::from_bytes([0xA1; 32]),
            WgPrivateKey::from_bytes([0xB2; 32]),
        );
        let ab = ProbeKey::derive(&a.to_x25519(), &b.public_key().to_x25519()).unwrap();
        Fixed {
            a,
            b,
            c: WgPrivateKey::from_bytes([0xC3; 32]),
            ab,
            a_addr: "198.51.100.1:51820".parse().unwrap(),
            a_alt: "[2001:db8::a]:51820".parse().unwrap(),
            b_addr: "203.0.113.2:51820".parse().unwrap(),
            c_addr: "198.51.100.3:41641".parse().unwrap(),
            stun: [
                "192.0.2.10:3478".parse().unwrap(),
                "192.0.2.11:3478".parse().unwrap(),
            ],
        }
    })
}

fn id(n: u128) -> DeviceId {
    format!("dev_{n:032x}").parse().unwrap()
}

fn peer(
    key: &WgPrivateKey,
    n: u128,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    eps: Vec<SocketAddr>,
) -> PeerConfig {
    PeerConfig {
        device_id: id(n),
        name: format!("d{n}"),
        public_key: key.public_key(),
        allowed_ips: vec![IpNet::from(IpAddr::V4(v4)), IpNet::from(IpAddr::V6(v6))],
        endpoints: eps,
        persistent_keepalive: (n == 3).then_some(25),
    }
}

/// Reads the script; past the end every read is zero (so every input is a script).
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        (u64::from(self.u16()) << 48)
            | u64::from(self.u16()) << 32
            | u64::from(self.u16()) << 16
            | u64::from(self.u16())
    }
    fn bytes(&mut self, max: usize) -> &[u8] {
        let n = (self.u16() as usize).min(max).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
    /// One of the addresses that matter, or one made up by the input.
    fn addr(&mut self, f: &Fixed) -> SocketAddr {
        match self.u8() % 9 {
            0 => f.a_addr,
            1 => f.c_addr,
            2 => f.stun[0],
            3 => f.stun[1],
            4 => relay_endpoint(&f.a.public_key().0),
            5 => relay_endpoint(&f.c.public_key().0),
            6 => f.a_alt,
            7 => SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(self.u16() as u32 * 65537)),
                self.u16(),
            ),
            _ => SocketAddr::new(IpAddr::V6(Ipv6Addr::from(self.u64() as u128)), self.u16()),
        }
    }
}

struct World {
    a: Node,
    b: Node,
    now: Instant,
    /// Datagrams A sent to B, for replays.
    seen: Vec<(SocketAddr, Vec<u8>)>,
    /// STUN requests B sent: (server, transaction id).
    stun_reqs: Vec<(SocketAddr, stun::TransactionId)>,
    out: Vec<u8>,
}

impl World {
    fn new() -> World {
        let f = fixed();
        let now = Instant::now();
        // Fixed seeds: a crash input replays exactly (STUN ids, probe nonces).
        let mut b = Node::new(f.b.clone(), B_V4, B_V6, StdRng::seed_from_u64(2));
        b.set_peers(
            vec![
                peer(&f.a, 1, A_V4, A_V6, vec![f.a_addr, f.a_alt]),
                peer(&f.c, 3, C_V4, C_V6, vec![f.c_addr]),
            ],
            now,
        );
        // Some inbound flows are allowed and some denied, so both verdicts are reached.
        b.set_filter(vec![
            FilterRule { dst: Vec::new(),
                src: vec![IpNet::from(IpAddr::V4(A_V4)), IpNet::from(IpAddr::V6(A_V6))],
                proto: Proto::Tcp,
                ports: vec![PortRange::one(22)],
                rule: 0,
            },
            FilterRule { dst: Vec::new(),
                src: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
                proto: Proto::Icmp,
                ports: vec![PortRange::ALL],
                rule: 1,
            },
        ]);
        b.set_stun_servers(f.stun.to_vec(), now);
        let mut a = Node::new(f.a.clone(), A_V4, A_V6, StdRng::seed_from_u64(1));
        a.set_peers(vec![peer(&f.b, 2, B_V4, B_V6, vec![f.b_addr])], now);
        a.set_filter(vec![FilterRule { dst: Vec::new(),
            src: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            proto: Proto::Any,
            ports: vec![PortRange::ALL],
            rule: 0,
        }]);
        World {
            a,
            b,
            now,
            seen: vec![],
            stun_reqs: vec![],
            out: vec![0u8; 70_000],
        }
    }

    /// B receives `data` from `from`; what it hands to the TUN is checked.
    fn deliver_b(&mut self, from: SocketAddr, data: &[u8]) {
        let Some(len) = self.b.handle_datagram(from, data, &mut self.out, self.now) else {
            return;
        };
        assert!(len <= self.out.len());
        // Only A can encrypt to B, and B must only accept A's own addresses from it.
        let src = match self.out.first().map(|v| v >> 4) {
            Some(4) if len >= 20 => IpAddr::V4(Ipv4Addr::new(
                self.out[12],
                self.out[13],
                self.out[14],
                self.out[15],
            )),
            Some(6) if len >= 40 => {
                let o: [u8; 16] = self.out[8..24].try_into().unwrap();
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => panic!(
                "B accepted a packet that is not IP: {:02x?}",
                &self.out[..len.min(64)]
            ),
        };
        assert!(
            src == IpAddr::V4(A_V4) || src == IpAddr::V6(A_V6),
            "B accepted a packet from {src}"
        );
    }

    /// A receives `data` from B.
    fn deliver_a(&mut self, from: SocketAddr, data: &[u8]) {
        let _ = self.a.handle_datagram(from, data, &mut self.out, self.now);
    }

    /// Routes a datagram one node sent, as the network and the relay would.
    fn route_from_b(&mut self, dst: SocketAddr, payload: Vec<u8>) {
        let f = fixed();
        if dst == f.a_addr {
            self.deliver_a(f.b_addr, &payload);
        } else if dst == relay_endpoint(&f.a.public_key().0) {
            self.deliver_a(relay_endpoint(&f.b.public_key().0), &payload);
        } else if f.stun.contains(&dst) {
            if let Ok(stun::Message::BindingRequest { tid }) = stun::decode(&payload) {
                if self.stun_reqs.len() < MAX_SEEN {
                    self.stun_reqs.push((dst, tid));
                }
            }
        }
    }

    fn route_from_a(&mut self, dst: SocketAddr, payload: Vec<u8>) {
        let f = fixed();
        let from = if dst == f.b_addr {
            f.a_addr
        } else if dst == relay_endpoint(&f.b.public_key().0) {
            relay_endpoint(&f.a.public_key().0)
        } else {
            return;
        };
        self.deliver_b(from, &payload);
        if self.seen.len() < MAX_SEEN {
            self.seen.push((from, payload));
        }
    }

    /// Delivers what both nodes queued until quiet (bounded).
    fn pump(&mut self) {
        for _ in 0..MAX_PUMP {
            if let Some(t) = self.b.poll_transmit() {
                self.route_from_b(t.dst, t.payload);
            } else if let Some(t) = self.a.poll_transmit() {
                self.route_from_a(t.dst, t.payload);
            } else {
                break;
            }
        }
        self.drain();
    }

    fn drain(&mut self) {
        while self.b.poll_event().is_some() {}
        while self.a.poll_event().is_some() {}
        while self.b.poll_denied().is_some() {}
        while self.b.poll_flow_summary(self.now).is_some() {}
    }

    fn tick(&mut self, step: Duration) {
        self.now += step;
        self.b.handle_timeout(self.now);
        self.a.handle_timeout(self.now);
        self.pump();
    }

    fn op(&mut self, s: &mut Script) {
        let f = fixed();
        match s.u8() % 11 {
            0 => {
                let from = s.addr(f);
                let data = s.bytes(MAX_RAW).to_vec();
                self.deliver_b(from, &data);
            }
            1 => {
                let pkt = s.bytes(MAX_RAW).to_vec();
                let mut out = vec![0u8; pkt.len() + 200];
                if let Some((dst, len)) = self.a.handle_tun_packet(&pkt, &mut out, self.now) {
                    self.route_from_a(dst, out[..len].to_vec());
                }
                self.pump();
            }
            2 => self.pump(),
            3 => self.tick(Duration::from_millis(u64::from(s.u8()) * 50)),
            4 => {
                if self.seen.is_empty() {
                    return;
                }
                let (mut from, mut d) = self.seen[s.u8() as usize % self.seen.len()].clone();
                if !d.is_empty() {
                    let at = s.u16() as usize % d.len();
                    d[at] ^= s.u8();
                }
                if s.u8() & 1 == 1 {
                    from = s.addr(f);
                }
                self.deliver_b(from, &d);
            }
            5 => {
                if self.stun_reqs.is_empty() {
                    return;
                }
                let (srv, tid) = self.stun_reqs[s.u8() as usize % self.stun_reqs.len()];
                let d = if s.u8() & 1 == 0 {
                    let mapped = if s.u8() & 1 == 0 {
                        SocketAddr::new(
                            IpAddr::V4(Ipv4Addr::from(
                                u32::from(s.u16()) << 16 | u32::from(s.u16()),
                            )),
                            s.u16(),
                        )
                    } else {
                        SocketAddr::new(IpAddr::V6(Ipv6Addr::from(s.u64() as u128)), s.u16())
                    };
                    stun::binding_success(tid, mapped, "fuzz")
                } else {
                    // Any bytes, with the transaction id of a real request in place.
                    let mut d = s.bytes(MAX_RAW).to_vec();
                    if d.len() >= stun::HEADER_LEN {
                        d[4..8].copy_from_slice(&stun::MAGIC_COOKIE.to_be_bytes());
                        d[8..20].copy_from_slice(&tid);
                    }
                    d
                };
                self.deliver_b(srv, &d);
            }
            6 => {
                let kind = if s.u8() & 1 == 0 {
                    probe::Kind::Ping
                } else {
                    probe::Kind::Pong
                };
                let observed = match s.u8() % 3 {
                    0 => None,
                    1 => Some(f.b_addr),
                    _ => Some(s.addr(f)),
                };
                let p = probe::Probe {
                    kind,
                    tx: s.u64(),
                    observed,
                };
                let mut nonce = [0u8; 12];
                nonce[..8].copy_from_slice(&s.u64().to_be_bytes());
                let d = probe::seal(&f.ab, &f.a.public_key().0, &p, nonce);
                let from = s.addr(f);
                self.deliver_b(from, &d);
                self.pump();
            }
            7 => {
                let pkt = s.bytes(MAX_RAW).to_vec();
                let mut out = vec![0u8; pkt.len() + 200];
                if let Some((dst, len)) = self.b.handle_tun_packet(&pkt, &mut out, self.now) {
                    self.route_from_b(dst, out[..len].to_vec());
                }
                self.pump();
            }
            8 => {
                let dst = match s.u8() % 4 {
                    0 => IpAddr::V4(A_V4),
                    1 => IpAddr::V6(A_V6),
                    2 => IpAddr::V4(C_V4),
                    _ => IpAddr::V4(Ipv4Addr::from(u32::from(s.u16()))),
                };
                let (id, seq) = (s.u16(), s.u16());
                let _ = self.b.send_ping(dst, id, seq, self.now);
                self.pump();
            }
            9 => {
                self.b.set_relay_available(s.u8() & 1 == 1);
                self.b.probe_now(self.now);
                self.pump();
            }
            _ => {
                if let Some((from, d)) = self.seen.last().cloned() {
                    self.deliver_b(from, &d);
                }
            }
        }
        self.drain();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut w = World::new();
    w.tick(Duration::ZERO);
    let mut s = Script(data);
    for _ in 0..MAX_OPS {
        if s.done() {
            break;
        }
        w.op(&mut s);
    }
    let _ = w.b.peer_stats();
    let _ = w.b.all_counters();
});
