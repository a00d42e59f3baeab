//! Deterministic in-process simulation of the data-plane core: several `Node`s joined by
//! an in-memory network (a queue of datagrams between virtual socket addresses) and a
//! virtual clock the test advances. No sockets, no TUN, no threads.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rand::rngs::StdRng;
use rand::SeedableRng;
use zmesh_agent::core::{packet, Event, Node, PeerConfig};
use zmesh_shared::policy::{FilterRule, PortRange, Proto};
use zmesh_shared::{DeviceId, WgPrivateKey};

/// Accepts everything from anyone (what the built-in default policy compiles to).
fn allow_all() -> Vec<FilterRule> {
    vec![FilterRule {
        dst: Vec::new(),
        src: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
        proto: Proto::Any,
        ports: vec![PortRange::ALL],
        rule: 0,
    }]
}

/// A node with an allow-all inbound filter: these tests are about the tunnel, not
/// the policy (a bare `Node::new` accepts no new inbound flow; see the policy tests).
fn open_node(key: WgPrivateKey, v4: Ipv4Addr, v6: Ipv6Addr) -> Node {
    let seed = u64::from(u32::from(v4));
    let mut n = Node::new(key, v4, v6, StdRng::seed_from_u64(seed));
    n.set_filter(allow_all());
    n
}

struct SimNode {
    node: Node,
    addr: SocketAddr,
    key: WgPrivateKey,
    id: DeviceId,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    /// Packets the node wrote to its TUN.
    tun: Vec<Vec<u8>>,
    events: Vec<Event>,
    /// Answer echo requests like a kernel would.
    auto_reply_ping: bool,
}

struct Datagram {
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

struct Sim {
    nodes: Vec<SimNode>,
    net: VecDeque<Datagram>,
    /// Every datagram ever delivered, for replay tests.
    seen: Vec<Datagram>,
    now: Instant,
    /// Delay added to the clock per delivered datagram (a crude link latency).
    hop: Duration,
}

impl Sim {
    fn new(n: usize) -> Sim {
        let now = Instant::now();
        let nodes = (0..n)
            .map(|i| {
                let key = WgPrivateKey::generate();
                let v4 = Ipv4Addr::new(100, 64, 0, i as u8 + 1);
                let v6 = Ipv6Addr::new(0xfd7a, 0, 0, 0, 0, 0, 0, i as u16 + 1);
                SimNode {
                    node: open_node(key.clone(), v4, v6),
                    addr: SocketAddr::from(([192, 0, 2, i as u8 + 1], 51820)),
                    key,
                    id: DeviceId::new(),
                    v4,
                    v6,
                    tun: vec![],
                    events: vec![],
                    auto_reply_ping: true,
                }
            })
            .collect();
        Sim {
            nodes,
            net: VecDeque::new(),
            seen: vec![],
            now,
            hop: Duration::from_millis(1),
        }
    }

    /// Full mesh: every node knows every other node.
    fn full_mesh(n: usize) -> Sim {
        let mut s = Sim::new(n);
        for i in 0..n {
            let peers = (0..n).filter(|j| *j != i).map(|j| s.config_of(j)).collect();
            let now = s.now;
            s.nodes[i].node.set_peers(peers, now);
        }
        s
    }

    fn config_of(&self, j: usize) -> PeerConfig {
        let n = &self.nodes[j];
        PeerConfig {
            device_id: n.id,
            name: format!("node{j}"),
            public_key: n.key.public_key(),
            allowed_ips: vec![IpNet::from(IpAddr::V4(n.v4)), IpNet::from(IpAddr::V6(n.v6))],
            endpoints: vec![n.addr],
            persistent_keepalive: None,
        }
    }

    /// Node `i` reads `pkt` from its TUN.
    fn send_ip(&mut self, i: usize, pkt: &[u8]) {
        let mut out = vec![0u8; pkt.len() + 200];
        let now = self.now;
        let n = &mut self.nodes[i];
        if let Some((to, len)) = n.node.handle_tun_packet(pkt, &mut out, now) {
            self.net.push_back(Datagram {
                from: n.addr,
                to,
                data: out[..len].to_vec(),
            });
        }
    }

    /// Injects a raw datagram as if sent from `from`.
    fn inject(&mut self, from: SocketAddr, to: usize, data: Vec<u8>) {
        let to = self.nodes[to].addr;
        self.net.push_back(Datagram { from, to, data });
    }

    /// Delivers datagrams until the network is quiet (bounded).
    fn run(&mut self) {
        for _ in 0..10_000 {
            for n in &mut self.nodes {
                while let Some(t) = n.node.poll_transmit() {
                    self.net.push_back(Datagram {
                        from: n.addr,
                        to: t.dst,
                        data: t.payload,
                    });
                }
                while let Some(e) = n.node.poll_event() {
                    n.events.push(e);
                }
            }
            let Some(d) = self.net.pop_front() else {
                return;
            };
            self.now += self.hop;
            let now = self.now;
            let mut out = vec![0u8; d.data.len().max(200)];
            let mut replies = vec![];
            if let Some(n) = self.nodes.iter_mut().find(|n| n.addr == d.to) {
                if let Some(len) = n.node.handle_datagram(d.from, &d.data, &mut out, now) {
                    let mut pkt = out[..len].to_vec();
                    n.tun.push(pkt.clone());
                    if n.auto_reply_ping && packet::echo_request_to_reply(&mut pkt) {
                        replies.push(pkt);
                    }
                }
                let idx = self.nodes.iter().position(|n| n.addr == d.to).unwrap();
                for r in replies {
                    self.send_ip(idx, &r);
                }
            }
            self.seen.push(d);
        }
        panic!("network did not settle within 10000 deliveries");
    }

    fn node(&mut self, i: usize) -> &mut SimNode {
        &mut self.nodes[i]
    }

    fn handshakes(&self, i: usize) -> u64 {
        self.nodes[i].node.counters().handshakes
    }
}

/// A minimal IPv4/UDP packet (checksums are irrelevant to the core).
fn udp4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    packet::fix_ipv4_header_checksum(&mut p[..20]);
    p[20..22].copy_from_slice(&1234u16.to_be_bytes());
    p[22..24].copy_from_slice(&5678u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// A minimal IPv4/TCP segment with the given flags (0x02 SYN, 0x12 SYN-ACK, 0x10 ACK).
fn tcp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    packet::fix_ipv4_header_checksum(&mut p[..20]);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = flags;
    p
}

fn udp6(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 48 + payload.len()];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[44..46].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[48..].copy_from_slice(payload);
    p
}

/// Brings up the session between node 0 and node 1 with one packet each way.
fn established() -> Sim {
    let mut s = Sim::full_mesh(2);
    let (a, b) = (s.nodes[0].v4, s.nodes[1].v4);
    s.send_ip(0, &udp4(a, b, b"hello"));
    s.run();
    s.send_ip(1, &udp4(b, a, b"back"));
    s.run();
    s
}

#[test]
fn handshake_completes_and_packets_flow_both_ways() {
    let mut s = Sim::full_mesh(2);
    let (a, b) = (s.nodes[0].v4, s.nodes[1].v4);
    let p1 = udp4(a, b, b"queued behind the handshake");
    s.send_ip(0, &p1);
    s.run();
    assert_eq!(
        s.nodes[1].tun,
        vec![p1],
        "queued packet delivered after the handshake"
    );
    assert_eq!((s.handshakes(0), s.handshakes(1)), (1, 1));
    for i in 0..2 {
        let other_key = s.nodes[1 - i].key.public_key();
        assert!(
            s.nodes[i].events.iter().any(
                |e| matches!(e, Event::HandshakeCompleted { public_key, .. } if *public_key == other_key)
            ),
            "node {i} reports the handshake"
        );
    }
    let p2 = udp4(b, a, b"reply");
    s.send_ip(1, &p2);
    s.run();
    assert_eq!(s.nodes[0].tun, vec![p2]);
    let (a6, b6) = (s.nodes[0].v6, s.nodes[1].v6);
    let p3 = udp6(a6, b6, b"over ipv6");
    s.send_ip(0, &p3);
    s.run();
    assert_eq!(s.nodes[1].tun.last(), Some(&p3));
    let st = s.node(0).node.peer_stats();
    assert_eq!(st.len(), 1);
    assert!(st[0].last_handshake_age.is_some());
    assert!(st[0].tx_bytes > 0 && st[0].rx_bytes > 0);
    assert_eq!(st[0].endpoint, Some(s.nodes[1].addr));
    assert_eq!(s.nodes[1].node.counters().rx_packets, 2);
    assert_eq!(s.nodes[1].node.counters().total_drops(), 0);
}

#[test]
fn spoofed_source_is_dropped_and_counted() {
    let mut s = established();
    let b = s.nodes[1].v4;
    let before = s.nodes[1].tun.len();
    // Node 0 encrypts a packet claiming to come from an address it does not own.
    s.send_ip(0, &udp4(Ipv4Addr::new(100, 64, 0, 99), b, b"spoof"));
    // ... or from node 2's address space, also not in its allowed IPs.
    s.send_ip(0, &udp4(Ipv4Addr::new(10, 0, 0, 1), b, b"spoof"));
    s.run();
    assert_eq!(s.nodes[1].tun.len(), before, "nothing reached the TUN");
    assert_eq!(s.nodes[1].node.counters().drop_bad_source, 2);
}

#[test]
fn no_route_is_counted_on_send() {
    let mut s = established();
    let a = s.nodes[0].v4;
    s.send_ip(0, &udp4(a, Ipv4Addr::new(100, 64, 9, 9), b"x"));
    assert!(s.net.is_empty());
    assert_eq!(s.nodes[0].node.counters().drop_no_route, 1);
    s.send_ip(0, &[0x45, 0, 0]);
    assert_eq!(s.nodes[0].node.counters().drop_tun_invalid, 1);
}

#[test]
fn removed_peer_is_refused() {
    let mut s = established();
    let (a, b) = (s.nodes[0].v4, s.nodes[1].v4);
    let now = s.now;
    s.node(1).node.set_peers(vec![], now);
    let before = s.nodes[1].tun.len();
    s.send_ip(0, &udp4(a, b, b"after removal"));
    s.run();
    assert_eq!(s.nodes[1].tun.len(), before);
    assert_eq!(s.nodes[1].node.counters().drop_unknown_index, 1);
    // A fresh handshake from the removed key is refused too.
    let cfg = s.config_of(1);
    let fresh_key = s.nodes[0].key.clone();
    s.nodes[0].node = open_node(fresh_key, a, s.nodes[0].v6);
    s.node(0).node.set_peers(vec![cfg], now);
    s.send_ip(0, &udp4(a, b, b"new handshake"));
    s.run();
    assert_eq!(s.nodes[1].node.counters().drop_unknown_key, 1);
    assert_eq!(s.nodes[1].tun.len(), before);
    // Node 1's own outbound traffic to the removed peer has no route.
    s.send_ip(1, &udp4(b, a, b"x"));
    assert_eq!(s.nodes[1].node.counters().drop_no_route, 1);
}

#[test]
fn garbage_truncated_and_replayed_datagrams_are_dropped_and_counted() {
    let mut s = established();
    let from = s.nodes[0].addr;
    let data_msg = s
        .seen
        .iter()
        .rev()
        .find(|d| d.to == s.nodes[1].addr && d.data[0] == 4)
        .unwrap();
    let data_msg = data_msg.data.clone();
    let delivered = s.nodes[1].tun.len();

    s.inject(from, 1, b"not wireguard at all".to_vec());
    s.inject(from, 1, vec![]);
    s.inject(from, 1, data_msg[..20].to_vec()); // truncated below the minimum data size
    s.inject(from, 1, data_msg[..data_msg.len() - 1].to_vec()); // cut tag, counter already seen
    s.inject(from, 1, data_msg.clone()); // replay
    let mut flipped = data_msg.clone();
    *flipped.last_mut().unwrap() ^= 1;
    flipped[8] = flipped[8].wrapping_add(100); // fresh counter, broken tag
    s.inject(from, 1, flipped);
    s.inject(from, 1, vec![0u8; 70_000]); // oversize
    s.run();

    let c = s.nodes[1].node.counters().clone();
    assert_eq!(s.nodes[1].tun.len(), delivered, "nothing reached the TUN");
    assert_eq!(c.drop_garbage, 3, "{c:?}"); // text, empty, 20-byte data message
    assert_eq!(c.drop_replay, 2, "{c:?}"); // replay, and the cut one (its counter was used)
    assert_eq!(c.drop_decrypt_failed, 1, "{c:?}"); // fresh counter, broken tag
    assert_eq!(c.drop_oversize, 1, "{c:?}");
    // a replayed handshake initiation is refused as well
    let init = s
        .seen
        .iter()
        .find(|d| d.data.len() == 148 && d.data[0] == 1)
        .unwrap()
        .data
        .clone();
    s.inject(from, 1, init);
    s.run();
    assert_eq!(s.nodes[1].node.counters().drop_handshake_failed, 1);
    assert_eq!(s.handshakes(1), 1, "no new session from a replay");
}

#[test]
fn set_peers_with_unchanged_peer_keeps_the_session() {
    let mut s = established();
    let (a, b) = (s.nodes[0].v4, s.nodes[1].v4);
    assert_eq!((s.handshakes(0), s.handshakes(1)), (1, 1));
    let now = s.now;
    let mut cfg = s.config_of(1);
    cfg.name = "renamed".into();
    cfg.allowed_ips.push("10.9.0.0/16".parse().unwrap());
    s.node(0).node.set_peers(vec![cfg], now);
    let n0 = s.nodes[0].tun.len();
    s.send_ip(0, &udp4(a, b, b"same session"));
    s.send_ip(1, &udp4(b, a, b"same session back"));
    s.run();
    assert_eq!(s.nodes[0].tun.len(), n0 + 1);
    assert_eq!(
        (s.handshakes(0), s.handshakes(1)),
        (1, 1),
        "no new handshake"
    );
    assert_eq!(s.nodes[0].node.peer_stats()[0].name, "renamed");
    // A changed key is a different peer: the old session is gone, a new handshake runs.
    let new_key = WgPrivateKey::generate();
    s.nodes[1].key = new_key.clone();
    s.nodes[1].node = open_node(new_key, b, s.nodes[1].v6);
    let now = s.now;
    let (c0, c1) = (s.config_of(0), s.config_of(1));
    s.node(1).node.set_peers(vec![c0], now);
    s.node(0).node.set_peers(vec![c1], now);
    s.send_ip(0, &udp4(a, b, b"new key"));
    s.run();
    assert_eq!(s.handshakes(0), 2);
    assert_eq!(s.nodes[1].tun.last().unwrap(), &udp4(a, b, b"new key"));
}

#[test]
fn ping_reply_surfaces_as_rtt_event_and_not_on_the_tun() {
    let mut s = established();
    s.hop = Duration::from_millis(5);
    let b = IpAddr::V4(s.nodes[1].v4);
    let now = s.now;
    let tun0 = s.nodes[0].tun.len();
    s.node(0).node.send_ping(b, 77, 1, now).unwrap();
    s.run();
    let rtt = s.nodes[0].events.iter().find_map(|e| match e {
        Event::PingReply {
            from,
            id: 77,
            seq: 1,
            rtt,
            ..
        } if *from == b => Some(*rtt),
        _ => None,
    });
    assert_eq!(rtt, Some(Duration::from_millis(10)), "two hops of 5 ms");
    assert_eq!(s.nodes[0].tun.len(), tun0, "the reply is intercepted");
    // IPv6 too, and errors for targets nobody routes
    let b6 = IpAddr::V6(s.nodes[1].v6);
    s.node(0).node.send_ping(b6, 78, 1, now).unwrap();
    s.run();
    assert!(s.nodes[0]
        .events
        .iter()
        .any(|e| matches!(e, Event::PingReply { id: 78, .. })));
    assert!(s
        .node(0)
        .node
        .send_ping("100.64.7.7".parse().unwrap(), 1, 1, now)
        .is_err());
}

#[test]
fn three_nodes_route_by_allowed_ips_and_roam() {
    let mut s = Sim::full_mesh(3);
    let v: Vec<Ipv4Addr> = s.nodes.iter().map(|n| n.v4).collect();
    for (i, j) in [(0, 1), (0, 2), (1, 2), (2, 0)] {
        let p = udp4(v[i], v[j], format!("{i}->{j}").as_bytes());
        s.send_ip(i, &p);
        s.run();
        assert_eq!(s.nodes[j].tun.last(), Some(&p), "{i}->{j}");
    }
    assert_eq!(s.nodes[0].tun.len(), 1);
    // Node 2 moves to a new address; node 0 follows after one authenticated packet.
    let new_addr: SocketAddr = "198.51.100.7:4000".parse().unwrap();
    s.nodes[2].addr = new_addr;
    s.send_ip(2, &udp4(v[2], v[0], b"from the new place"));
    s.run();
    let ep = s.nodes[0]
        .node
        .peer_stats()
        .into_iter()
        .find(|p| p.name == "node2")
        .unwrap()
        .endpoint;
    assert_eq!(ep, Some(new_addr));
    assert!(s.nodes[0]
        .events
        .iter()
        .any(|e| matches!(e, Event::EndpointChanged { endpoint, .. } if *endpoint == new_addr)));
    let p = udp4(v[0], v[2], b"to the new place");
    s.send_ip(0, &p);
    s.run();
    assert_eq!(s.nodes[2].tun.last(), Some(&p));
}

#[test]
fn timers_run_without_panicking_and_schedule_themselves() {
    let mut s = established();
    let t0 = s.nodes[0]
        .node
        .poll_timeout()
        .expect("timer armed once peers exist");
    for k in 0..20 {
        let now = t0 + Duration::from_millis(250 * k);
        s.node(0).node.handle_timeout(now);
        assert!(s.nodes[0].node.poll_timeout().unwrap() > now);
    }
    s.run();
}

/// The receiver decides: a node whose filter is empty (no policy yet, or a map
/// without a filter) drops every new inbound flow, counts it and reports it, while
/// replies to flows it opened itself pass; a rule passes exactly what it names.
#[test]
fn inbound_policy_default_deny_rules_and_replies() {
    let mut s = Sim::full_mesh(2);
    let (a, b) = (s.nodes[0].v4, s.nodes[1].v4);
    let now = s.now;
    // node 1: nothing accepted; node 0: tcp/22 from node 1 only
    s.node(1).node.set_filter(vec![]);
    s.node(0).node.set_filter(vec![FilterRule {
        dst: Vec::new(),
        src: vec![IpNet::from(IpAddr::V4(b))],
        proto: Proto::Tcp,
        ports: vec![PortRange::one(22)],
        rule: 3,
    }]);
    // 0 -> 1 udp: the handshake completes, the packet is dropped by node 1's filter
    s.send_ip(0, &udp4(a, b, b"denied"));
    s.run();
    assert_eq!(s.handshakes(1), 1);
    assert!(
        s.nodes[1].tun.is_empty(),
        "denied packet never reaches the TUN"
    );
    let c1 = s.nodes[1].node.all_counters();
    assert_eq!(
        (c1.drop_policy, c1.filter.dropped_no_rule),
        (1, 1),
        "{c1:?}"
    );
    let d = s.node(1).node.poll_denied().expect("denied flow recorded");
    assert_eq!(
        (d.src, d.dst, d.proto, d.dst_port),
        (IpAddr::V4(a), IpAddr::V4(b), 17, 5678)
    );
    assert!(s.node(1).node.poll_denied().is_none());
    // 1 -> 0 tcp/22: accepted by rule 3 on node 0; its SYN-ACK is a reply for node 1
    s.send_ip(1, &tcp4(b, a, 40000, 22, 0x02));
    s.run();
    assert_eq!(s.nodes[0].tun.len(), 1);
    s.send_ip(0, &tcp4(a, b, 22, 40000, 0x12));
    s.run();
    assert_eq!(s.nodes[1].tun.len(), 1, "reply to node 1's own flow passes");
    // 1 -> 0 tcp/80 and 0 -> 1 tcp/22 (no flow of node 1's): both dropped
    s.send_ip(1, &tcp4(b, a, 40001, 80, 0x02));
    s.send_ip(0, &tcp4(a, b, 40002, 22, 0x02));
    s.run();
    assert_eq!((s.nodes[0].tun.len(), s.nodes[1].tun.len()), (1, 1));
    let (c0, c1) = (
        s.nodes[0].node.all_counters(),
        s.nodes[1].node.all_counters(),
    );
    assert_eq!((c0.filter.accepted_rule, c0.drop_policy), (1, 1), "{c0:?}");
    assert_eq!((c1.filter.accepted_reply, c1.drop_policy), (1, 2), "{c1:?}");
    assert_eq!(c1.total_drops(), 2);
    // a new policy applies to the next packet
    s.node(1).node.set_filter(allow_all());
    s.send_ip(0, &udp4(a, b, b"now allowed"));
    s.run();
    assert_eq!(s.nodes[1].tun.len(), 2);
    s.node(1).node.set_filter(vec![]);
    s.send_ip(0, &udp4(a, b, b"denied again"));
    s.run();
    assert_eq!(s.nodes[1].tun.len(), 2);
    let _ = now;
}
