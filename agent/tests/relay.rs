//! The relay end to end on loopback: the console's relay server over real TLS/TCP, the
//! agent's relay client, and two data-plane cores whose WireGuard datagrams go through it.
//! Shows that it refuses unauthenticated clients, forwards only inside one network, is
//! rate-limited, and never sees the plaintext of what it forwards.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rustls::pki_types::ServerName;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use zmesh_agent::core::{relay_endpoint, relay_key_prefix, Node, PathKind, PeerConfig};
use zmesh_agent::io::relay::{connect, RelayClientError, RelayEvent, RelayReceiver, RelaySender};
use zmesh_console::infra::config::TlsSource;
use zmesh_console::relay::{Relay, RelayConfig};
use zmesh_shared::relay::{RelayClaims, RelayToken, TOKEN_PURPOSE};
use zmesh_shared::time::now_ms;
use zmesh_shared::{DeviceId, NetworkId, SigningKey, WgPrivateKey};

const MARKER: &[u8] = b"ZMESH-PLAINTEXT-MARKER-7f3a";

struct Env {
    addr: SocketAddr,
    client_tls: Arc<rustls::ClientConfig>,
    console: SigningKey,
    relay: Arc<Relay>,
    _dir: tempfile::TempDir,
}

async fn start(rate: Option<(u64, u64)>) -> (Env, mpsc::UnboundedReceiver<Vec<u8>>) {
    start_with(rate, None).await
}

async fn start_with(
    rate: Option<(u64, u64)>,
    authorize: Option<zmesh_console::relay::Authorize>,
) -> (Env, mpsc::UnboundedReceiver<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let id = zmesh_console::infra::tls::load_or_create(
        dir.path(),
        &TlsSource::SelfSigned { extra_sans: vec![] },
    )
    .unwrap();
    let server_tls = zmesh_console::infra::tls::server_config(&id).unwrap();
    let client_tls =
        Arc::new(zmesh_console::infra::tls_client::pinned_client_config(id.fingerprint).unwrap());
    let console = SigningKey::generate();
    let (tap_tx, tap_rx) = mpsc::unbounded_channel();
    let mut cfg = RelayConfig::new(console.public_key());
    cfg.tap = Some(tap_tx);
    cfg.authorize = authorize;
    if let Some((r, b)) = rate {
        cfg.rate_bytes_per_sec = r;
        cfg.burst_bytes = b;
    }
    let relay = Relay::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(zmesh_console::relay::serve(
        listener,
        server_tls,
        Arc::clone(&relay),
        std::future::pending(),
    ));
    (
        Env {
            addr,
            client_tls,
            console,
            relay,
            _dir: dir,
        },
        tap_rx,
    )
}

fn token(signer: &SigningKey, net: NetworkId, key: &WgPrivateKey, ttl_ms: i64) -> RelayToken {
    token_for(signer, net, DeviceId::new(), key, ttl_ms)
}

fn token_for(
    signer: &SigningKey,
    net: NetworkId,
    device_id: DeviceId,
    key: &WgPrivateKey,
    ttl_ms: i64,
) -> RelayToken {
    RelayToken::sign(
        &RelayClaims {
            purpose: TOKEN_PURPOSE.into(),
            network_id: net,
            device_id,
            public_key: key.public_key(),
            expires_at_ms: (now_ms() + ttl_ms) as u64,
        },
        signer,
    )
}

impl Env {
    async fn join(
        &self,
        net: NetworkId,
        key: &WgPrivateKey,
    ) -> Result<(RelaySender, RelayReceiver), RelayClientError> {
        let t = token(&self.console, net, key, 60_000);
        self.join_with(&t, key).await
    }

    async fn join_with(
        &self,
        t: &RelayToken,
        key: &WgPrivateKey,
    ) -> Result<(RelaySender, RelayReceiver), RelayClientError> {
        connect(
            self.addr,
            ServerName::try_from("zmesh-relay").unwrap(),
            Arc::clone(&self.client_tls),
            t,
            key,
        )
        .await
    }
}

fn udp4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    zmesh_agent::core::packet::fix_ipv4_header_checksum(&mut p[..20]);
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

struct Dev {
    node: Node,
    key: WgPrivateKey,
    v4: Ipv4Addr,
    tx: RelaySender,
    rx: RelayReceiver,
    got: Vec<Vec<u8>>,
}

fn node_for(key: &WgPrivateKey, i: u8) -> (Node, Ipv4Addr) {
    let v4 = Ipv4Addr::new(100, 64, 0, i);
    let mut n = Node::new(
        key.clone(),
        v4,
        Ipv6Addr::new(0xfd7a, 0, 0, 0, 0, 0, 0, i as u16),
        StdRng::seed_from_u64(u64::from(i)),
    );
    n.set_relay_available(true);
    // The relay is under test, not the policy: accept every inbound packet.
    n.set_filter(vec![zmesh_shared::policy::FilterRule {
        dst: Vec::new(),
        src: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
        proto: zmesh_shared::policy::Proto::Any,
        ports: vec![zmesh_shared::policy::PortRange::ALL],
        rule: 0,
    }]);
    (n, v4)
}

fn peer_cfg(key: &WgPrivateKey, v4: Ipv4Addr) -> PeerConfig {
    PeerConfig {
        device_id: DeviceId::new(),
        name: "p".into(),
        public_key: key.public_key(),
        allowed_ips: vec![IpNet::from(IpAddr::V4(v4))],
        endpoints: vec![],
        persistent_keepalive: None,
    }
}

/// Sends what `d` queued (through the relay) and feeds what the relay delivered.
async fn pump(devs: &mut [Dev], keys: &[[u8; 32]], rounds: usize) {
    for _ in 0..rounds {
        for d in devs.iter_mut() {
            let now = Instant::now();
            d.node.handle_timeout(now);
            while let Some(t) = d.node.poll_transmit() {
                let Some(prefix) = relay_key_prefix(t.dst) else {
                    continue;
                };
                let dst = keys.iter().find(|k| k[..8] == prefix).unwrap();
                d.tx.send(*dst, &t.payload).await.unwrap();
            }
        }
        for d in devs.iter_mut() {
            while let Ok(Ok(Some(ev))) =
                tokio::time::timeout(Duration::from_millis(30), d.rx.recv()).await
            {
                let RelayEvent::Datagram { src, data } = ev else {
                    continue;
                };
                let mut out = vec![0u8; 2048];
                if let Some(n) =
                    d.node
                        .handle_datagram(relay_endpoint(&src), &data, &mut out, Instant::now())
                {
                    d.got.push(out[..n].to_vec());
                }
            }
        }
    }
}

#[tokio::test]
async fn relay_carries_wireguard_between_devices_and_never_sees_plaintext() {
    let (env, mut tap) = start(None).await;
    let net = NetworkId::new();
    let (ka, kb) = (WgPrivateKey::generate(), WgPrivateKey::generate());
    let (mut na, va) = node_for(&ka, 1);
    let (mut nb, vb) = node_for(&kb, 2);
    let now = Instant::now();
    na.set_peers(vec![peer_cfg(&kb, vb)], now);
    nb.set_peers(vec![peer_cfg(&ka, va)], now);
    assert_eq!(na.peer_stats()[0].path, PathKind::Relay);
    let (ta, ra) = env.join(net, &ka).await.unwrap();
    let (tb, rb) = env.join(net, &kb).await.unwrap();
    let mut devs = vec![
        Dev {
            node: na,
            key: ka,
            v4: va,
            tx: ta,
            rx: ra,
            got: vec![],
        },
        Dev {
            node: nb,
            key: kb,
            v4: vb,
            tx: tb,
            rx: rb,
            got: vec![],
        },
    ];
    let keys = [
        *devs[0].key.public_key().as_bytes(),
        *devs[1].key.public_key().as_bytes(),
    ];
    // A -> B: the first packet waits for the handshake, which goes through the relay too.
    let mut out = vec![0u8; 2048];
    let pkt = udp4(devs[0].v4, devs[1].v4, MARKER);
    for _ in 0..3 {
        let now = Instant::now();
        if let Some((dst, n)) = devs[0].node.handle_tun_packet(&pkt, &mut out, now) {
            let prefix = relay_key_prefix(dst).expect("sent to the relay");
            assert_eq!(prefix, keys[1][..8]);
            devs[0].tx.send(keys[1], &out[..n]).await.unwrap();
        }
        pump(&mut devs, &keys, 3).await;
    }
    assert!(
        devs[1]
            .got
            .iter()
            .any(|p| p.windows(MARKER.len()).any(|w| w == MARKER)),
        "B never received the marker: A {:?} B {:?} got {}",
        devs[0].node.counters(),
        devs[1].node.counters(),
        devs[1].got.len()
    );
    // Everything the relay forwarded, as it saw it after TLS: no marker in any of it.
    let mut forwarded = 0;
    while let Ok(p) = tap.try_recv() {
        forwarded += 1;
        assert!(
            !p.windows(MARKER.len()).any(|w| w == MARKER),
            "relay saw plaintext"
        );
    }
    assert!(
        forwarded >= 3,
        "handshake and data went through the relay ({forwarded})"
    );
    assert_eq!(env.relay.stats.auth_ok.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn relay_refuses_unauthenticated_and_forwards_only_within_a_network() {
    let (env, _tap) = start(None).await;
    let net = NetworkId::new();
    let key = WgPrivateKey::generate();
    // token signed by someone else
    let forged = token(&SigningKey::generate(), net, &key, 60_000);
    assert!(matches!(
        env.join_with(&forged, &key).await,
        Err(RelayClientError::Refused(_))
    ));
    // expired token
    let old = token(&env.console, net, &key, -1);
    assert!(matches!(
        env.join_with(&old, &key).await,
        Err(RelayClientError::Refused(_))
    ));
    // a valid token, but we do not hold the key it names
    let stolen = token(&env.console, net, &key, 60_000);
    let other = WgPrivateKey::generate();
    assert!(matches!(
        env.join_with(&stolen, &other).await,
        Err(RelayClientError::Refused(_))
    ));
    assert_eq!(env.relay.stats.auth_failed.load(Ordering::Relaxed), 3);
    assert_eq!(env.relay.connected(), 0);

    // a device of another network cannot reach ours
    let (ka, kb, kc) = (
        WgPrivateKey::generate(),
        WgPrivateKey::generate(),
        WgPrivateKey::generate(),
    );
    let (mut ta, _ra) = env.join(net, &ka).await.unwrap();
    let (_tb, mut rb) = env.join(net, &kb).await.unwrap();
    let (mut tc, _rc) = env.join(NetworkId::new(), &kc).await.unwrap();
    tc.send(*kb.public_key().as_bytes(), b"from another network")
        .await
        .unwrap();
    ta.send(*kb.public_key().as_bytes(), b"same network")
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), rb.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ev,
        Some(RelayEvent::Datagram {
            src: *ka.public_key().as_bytes(),
            data: b"same network".to_vec()
        })
    );
    assert!(tokio::time::timeout(Duration::from_millis(300), rb.recv())
        .await
        .is_err());
    // the other network's datagram is held for a device of that network, never ours
    assert!(env.relay.stats.held.load(Ordering::Relaxed) >= 1);
}

/// A handshake sent through the relay before its destination has connected is handed
/// over when the destination connects (within a few seconds), not lost to WireGuard's
/// 5 s retry; large datagrams and old ones are not kept.
#[tokio::test]
async fn relay_holds_a_handshake_until_the_destination_connects() {
    let (env, _tap) = start(None).await;
    let net = NetworkId::new();
    let (ka, kb) = (WgPrivateKey::generate(), WgPrivateKey::generate());
    let (mut ta, _ra) = env.join(net, &ka).await.unwrap();
    let b = *kb.public_key().as_bytes();
    ta.send(b, b"handshake initiation").await.unwrap();
    ta.send(b, &[7u8; 1200]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.relay.stats.held.load(Ordering::Relaxed) < 1
        || env.relay.stats.drop_unknown_dst.load(Ordering::Relaxed) < 1
    {
        assert!(
            Instant::now() < deadline,
            "the relay neither held nor dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    let (_tb, mut rb) = env.join(net, &kb).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(2), rb.recv())
        .await
        .expect("the held handshake never came")
        .unwrap();
    assert_eq!(
        ev,
        Some(RelayEvent::Datagram {
            src: *ka.public_key().as_bytes(),
            data: b"handshake initiation".to_vec()
        })
    );
    eprintln!(
        "held handshake delivered {:?} after connecting",
        t.elapsed()
    );
    // the 1200-byte datagram was not kept
    assert!(tokio::time::timeout(Duration::from_millis(300), rb.recv())
        .await
        .is_err());
    assert_eq!(env.relay.stats.held_delivered.load(Ordering::Relaxed), 1);
}

/// The console's relay asks the database whether a device is still active (here: a
/// deny set) and drops a connected device the moment it is revoked.
#[tokio::test]
async fn relay_refuses_and_drops_revoked_devices() {
    let revoked = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let r = Arc::clone(&revoked);
    let authorize: zmesh_console::relay::Authorize = Arc::new(move |d: DeviceId| {
        let ok = !r.lock().unwrap().contains(&d);
        Box::pin(async move { ok })
    });
    let (env, _tap) = start_with(None, Some(authorize)).await;
    let net = NetworkId::new();
    let (gone, live) = (DeviceId::new(), DeviceId::new());
    revoked.lock().unwrap().insert(gone);
    let kg = WgPrivateKey::generate();
    let t = token_for(&env.console, net, gone, &kg, 60_000);
    assert!(matches!(
        env.join_with(&t, &kg).await,
        Err(RelayClientError::Refused(m)) if m.contains("not active")
    ));
    let kl = WgPrivateKey::generate();
    let t = token_for(&env.console, net, live, &kl, 60_000);
    let (_tx, mut rx) = env.join_with(&t, &kl).await.unwrap();
    assert_eq!(env.relay.connected(), 1);
    assert_eq!(env.relay.kick_device(live), 1);
    let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the relay tells the device why")
        .unwrap();
    assert_eq!(ev, Some(RelayEvent::Closing("device revoked".into())));
    let end = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the relay closes the connection");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    assert_eq!(env.relay.connected(), 0);
}

#[tokio::test]
async fn relay_rate_limits_each_connection() {
    let (env, _tap) = start(Some((20_000, 20_000))).await;
    let net = NetworkId::new();
    let (ka, kb) = (WgPrivateKey::generate(), WgPrivateKey::generate());
    let (mut ta, _ra) = env.join(net, &ka).await.unwrap();
    let (_tb, _rb) = env.join(net, &kb).await.unwrap();
    for _ in 0..200 {
        ta.send(*kb.public_key().as_bytes(), &[0u8; 1000])
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let s = &env.relay.stats;
    while s.forwarded.load(Ordering::Relaxed) + s.drop_rate.load(Ordering::Relaxed) < 200 {
        assert!(Instant::now() < deadline, "relay did not process the burst");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fwd = s.forwarded.load(Ordering::Relaxed);
    assert!(fwd < 40, "{fwd} of 200 forwarded past a 20 kB/s limit");
    assert!(s.drop_rate.load(Ordering::Relaxed) > 150);
}

/// Kills the capture process on drop, also when the test fails.
struct Capture(Child);
impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn packet_capture_on_the_relay_host_has_no_plaintext() {
    let have = Command::new("sh")
        .args(["-c", "command -v tcpdump"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let root = unsafe { libc::geteuid() } == 0;
    if !have || !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: tcpdump and root are required"
        );
        eprintln!("skipping: needs tcpdump and root");
        return;
    }
    let (env, _tap) = start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("relay.pcap");
    let cap = Capture(
        Command::new("tcpdump")
            .args(["-i", "lo", "-U", "-s", "0", "-w"])
            .arg(&pcap)
            .arg(format!("tcp port {}", env.addr.port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // tcpdump needs a moment before it captures
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pcap.exists() {
        assert!(Instant::now() < deadline, "tcpdump did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let net = NetworkId::new();
    let (ka, kb) = (WgPrivateKey::generate(), WgPrivateKey::generate());
    let (mut ta, _ra) = env.join(net, &ka).await.unwrap();
    let (_tb, mut rb) = env.join(net, &kb).await.unwrap();
    // Even a datagram that is not WireGuard-encrypted is hidden on the wire by TLS.
    for _ in 0..5 {
        ta.send(*kb.public_key().as_bytes(), MARKER).await.unwrap();
    }
    for _ in 0..5 {
        let ev = tokio::time::timeout(Duration::from_secs(5), rb.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(ev, Some(RelayEvent::Datagram { .. })));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(cap);
    let bytes = std::fs::read(&pcap).unwrap();
    assert!(
        bytes.len() > 1000,
        "capture is empty ({} bytes)",
        bytes.len()
    );
    assert!(
        !bytes.windows(MARKER.len()).any(|w| w == MARKER),
        "plaintext marker on the wire"
    );
}
