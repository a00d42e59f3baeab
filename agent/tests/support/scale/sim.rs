//! Simulated agents, many per process: each enrolls with its own x25519 key through the
//! agent's real enrollment request, holds one pinned-TLS WebSocket stream, applies maps
//! and deltas with the agent's own [`MapState`] (signature checks, version chaining,
//! resync on a gap), acknowledges each with `ClientMsg::Applied` as the real agent does,
//! and reconnects with the real jittered [`Backoff`]. No data plane, no reports: what a
//! console sees of a fleet. A sim agent keeps only its `MapState`, a few counters and
//! its task (about the real agent's control-plane memory, nothing copied).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use zmesh_agent::control::backoff::Backoff;
use zmesh_agent::control::enroll::{enroll, EnrollParams};
use zmesh_agent::control::map::{DeltaOutcome, MapState};
use zmesh_agent::control::tls::{client_config, Trust};
use zmesh_shared::enroll_key::EnrollKey;
use zmesh_shared::peermap::PeerMap;
use zmesh_shared::wire::{ClientMsg, ServerMsg, STREAM_PATH};
use zmesh_shared::{DeviceId, Secret, SigningPublicKey, WgPrivateKey, PROTOCOL_VERSION};

type Ws = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// A stream that shows nothing for this long is dropped (the console pings far more often).
const IDLE_LIMIT: Duration = Duration::from_secs(90);
/// TCP + TLS + WebSocket upgrade, as the real agent bounds it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What all sim agents share: where the console is and how it is trusted, the clock,
/// the current measurement and the stop signal.
pub struct Ctx {
    addr: SocketAddr,
    tls: TlsConnector,
    pub epoch: Instant,
    probe: RwLock<Option<Arc<Probe>>>,
    /// Connection attempts after a lost stream, ms since `epoch` (the reconnect herd).
    pub attempts: Mutex<Vec<u32>>,
    stop: watch::Sender<bool>,
    /// Bounds first connections in flight, as a fleet rollout staggers its devices.
    initial: Semaphore,
}

impl Ctx {
    pub fn new(
        addr: SocketAddr,
        pin: zmesh_shared::CertFingerprint,
        ramp: usize,
    ) -> anyhow::Result<Arc<Ctx>> {
        let tls = client_config(&Trust::Pin(pin), &[b"http/1.1"])?;
        Ok(Arc::new(Ctx {
            addr,
            tls: TlsConnector::from(Arc::new(tls)),
            epoch: Instant::now(),
            probe: RwLock::new(None),
            attempts: Mutex::new(Vec::new()),
            stop: watch::channel(false).0,
            initial: Semaphore::new(ramp.max(1)),
        }))
    }

    pub fn now_ms(&self) -> u32 {
        self.epoch.elapsed().as_millis() as u32
    }

    /// Starts timing a change: from now until each agent's map satisfies `check`.
    pub fn probe(
        &self,
        n: usize,
        check: impl Fn(&PeerMap) -> bool + Send + Sync + 'static,
    ) -> Arc<Probe> {
        let p = Arc::new(Probe {
            start: Instant::now(),
            check: Box::new(check),
            done_us: (0..n).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicUsize::new(0),
        });
        *self.probe.write().unwrap() = Some(p.clone());
        p
    }

    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Opens a stream as the device with `credential` (`rcvbuf`: a tiny receive buffer,
    /// for agents that stop reading).
    async fn connect(&self, credential: &Secret, rcvbuf: Option<u32>) -> anyhow::Result<Ws> {
        let fut = async {
            let sock = TcpSocket::new_v4()?;
            if let Some(n) = rcvbuf {
                sock.set_recv_buffer_size(n)?;
            }
            let tcp = sock.connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::IpAddress(self.addr.ip().into());
            let tls = self.tls.connect(name, tcp).await?;
            let mut req = format!("wss://{}{STREAM_PATH}", self.addr).into_client_request()?;
            req.headers_mut().insert(
                "authorization",
                format!("Bearer {}", credential.expose()).parse()?,
            );
            // small buffers: 10,000 streams with tungstenite's 128 KiB default would cost GBs
            let cfg = WebSocketConfig::default()
                .read_buffer_size(16 * 1024)
                .write_buffer_size(0);
            let (ws, _) = tokio_tungstenite::client_async_with_config(req, tls, Some(cfg)).await?;
            anyhow::Ok(ws)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, fut)
            .await
            .map_err(|_| anyhow::anyhow!("connect timed out"))?
    }
}

/// One measurement: when each agent's map first satisfied the check, relative to start.
pub struct Probe {
    pub start: Instant,
    check: Box<dyn Fn(&PeerMap) -> bool + Send + Sync>,
    /// Per agent: microseconds + 1 (0: not yet).
    done_us: Vec<AtomicU64>,
    count: AtomicUsize,
}

impl Probe {
    fn observe(&self, idx: usize, map: &PeerMap) {
        let slot = &self.done_us[idx];
        if slot.load(Relaxed) == 0 && (self.check)(map) {
            let us = self.start.elapsed().as_micros() as u64 + 1;
            if slot.compare_exchange(0, us, Relaxed, Relaxed).is_ok() {
                self.count.fetch_add(1, Relaxed);
            }
        }
    }

    /// Waits (bounded) until every agent `want` selects is done; returns the times in
    /// ms of those done and how many of them never were.
    pub async fn wait(&self, want: &[usize], timeout: Duration) -> (Vec<f64>, usize) {
        let deadline = Instant::now() + timeout;
        loop {
            let missing = want
                .iter()
                .filter(|&&i| self.done_us[i].load(Relaxed) == 0)
                .count();
            if missing == 0 || Instant::now() >= deadline {
                let times = want
                    .iter()
                    .filter_map(|&i| match self.done_us[i].load(Relaxed) {
                        0 => None,
                        us => Some((us - 1) as f64 / 1000.0),
                    })
                    .collect();
                return (times, missing);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// One enrolled device.
pub struct Device {
    pub id: DeviceId,
    pub credential: Secret,
    pub signing_key: SigningPublicKey,
}

/// Enrolls `n` devices through `POST /agent/v1/enroll` (the agent's own request, TLS
/// pinned by the key's fingerprint), `concurrency` at a time, each with its own key.
pub async fn enroll_many(
    url: &str,
    key: &str,
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Device>> {
    let key: EnrollKey = key.parse().context("enrollment key")?;
    let trust = Trust::Pin(key.pin.context("the enrollment key carries no pin")?);
    let (trust, secret) = (&trust, &key.secret);
    let results: Vec<anyhow::Result<Device>> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            // the private key would stay on the device; a sim device needs only the public one
            let public_key = WgPrivateKey::generate().public_key();
            let r = enroll(EnrollParams {
                console: url,
                trust,
                secret,
                public_key,
                name: Some(format!("{prefix}{i:05}")),
            })
            .await
            .with_context(|| format!("enrolling {prefix}{i:05}"))?;
            Ok(Device {
                id: r.device_id,
                credential: r.credential,
                signing_key: r.signing_key,
            })
        })
        .buffered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

/// A simulated agent: its device, its map, and counters the harness reads.
pub struct Agent {
    pub idx: usize,
    pub dev: Device,
    pub state: Mutex<MapState>,
    /// Endpoints it reports (empty: none sent). Set to make it roam.
    pub endpoints: watch::Sender<Vec<SocketAddr>>,
    pub connected: AtomicBool,
    pub revoked: AtomicBool,
    /// Maps and deltas applied, and `Applied` acknowledgements sent.
    pub applied: AtomicU32,
    pub acked: AtomicU32,
    pub last_acked: AtomicU64,
    pub resyncs: AtomicU32,
    /// ms since the epoch: last full map applied, last stream lost.
    pub synced_ms: AtomicU32,
    pub dropped_ms: AtomicU32,
}

impl Agent {
    pub fn new(idx: usize, dev: Device) -> Arc<Agent> {
        let state = MapState::new(dev.signing_key, dev.id);
        Arc::new(Agent {
            idx,
            dev,
            state: Mutex::new(state),
            endpoints: watch::channel(Vec::new()).0,
            connected: AtomicBool::new(false),
            revoked: AtomicBool::new(false),
            applied: AtomicU32::new(0),
            acked: AtomicU32::new(0),
            last_acked: AtomicU64::new(0),
            resyncs: AtomicU32::new(0),
            synced_ms: AtomicU32::new(0),
            dropped_ms: AtomicU32::new(0),
        })
    }

    pub fn map(&self) -> Option<PeerMap> {
        self.state.lock().unwrap().map().cloned()
    }

    pub fn version(&self) -> Option<u64> {
        self.state.lock().unwrap().version()
    }
}

enum End {
    Lost,
    Revoked,
    Stopped,
}

/// The agent's life: connect, run the stream, on loss wait the real backoff and again.
pub async fn run_agent(ctx: Arc<Ctx>, a: Arc<Agent>) {
    let mut backoff = Backoff::default();
    let mut stop = ctx.stop.subscribe();
    let mut first = true;
    loop {
        if *stop.borrow() {
            return;
        }
        if !first {
            let mut v = ctx.attempts.lock().unwrap();
            if v.len() < 1_000_000 {
                v.push(ctx.now_ms());
            }
        }
        let permit = if first {
            ctx.initial.acquire().await.ok()
        } else {
            None
        };
        let mut established = false;
        let end = session(&ctx, &a, &mut stop, permit, &mut established).await;
        first = false;
        if a.connected.swap(false, Relaxed) {
            a.dropped_ms.store(ctx.now_ms(), Relaxed);
        }
        match end {
            End::Revoked => {
                a.revoked.store(true, Relaxed);
                return;
            }
            End::Stopped => return,
            End::Lost => {}
        }
        if established {
            backoff.reset();
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn send(ws: &mut Ws, m: &ClientMsg) -> Result<(), ()> {
    let text = serde_json::to_string(m).map_err(|_| ())?;
    ws.send(Message::text(text)).await.map_err(|_| ())
}

async fn session(
    ctx: &Ctx,
    a: &Agent,
    stop: &mut watch::Receiver<bool>,
    mut permit: Option<tokio::sync::SemaphorePermit<'_>>,
    established: &mut bool,
) -> End {
    let mut ws = tokio::select! {
        r = ctx.connect(&a.dev.credential, None) => match r {
            Ok(ws) => ws,
            Err(_) => return End::Lost,
        },
        _ = stop.changed() => return End::Stopped,
    };
    *established = true;
    let hello = ClientMsg::Hello {
        protocol: PROTOCOL_VERSION,
        agent_version: "bench-scale".into(),
        have_version: a.version(),
    };
    if send(&mut ws, &hello).await.is_err() {
        return End::Lost;
    }
    let mut eps = a.endpoints.subscribe();
    // like the real agent, endpoints are told again on every new stream
    let now: Vec<SocketAddr> = eps.borrow_and_update().clone();
    if !now.is_empty()
        && send(&mut ws, &ClientMsg::Endpoints { endpoints: now })
            .await
            .is_err()
    {
        return End::Lost;
    }
    loop {
        tokio::select! {
            msg = tokio::time::timeout(IDLE_LIMIT, ws.next()) => {
                let text = match msg {
                    Ok(Some(Ok(Message::Text(t)))) => t,
                    Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => return End::Lost,
                    Ok(Some(Ok(_))) => continue,
                };
                let Ok(msg) = serde_json::from_str::<ServerMsg>(text.as_str()) else { continue };
                drop(text);
                match on_msg(ctx, a, &mut ws, msg).await {
                    Ok(Some(end)) => return end,
                    Ok(None) => {}
                    Err(()) => return End::Lost,
                }
                if permit.is_some() && a.connected.load(Relaxed) {
                    permit = None;
                }
            }
            r = eps.changed() => {
                if r.is_err() { return End::Stopped; }
                let now: Vec<SocketAddr> = eps.borrow_and_update().clone();
                if send(&mut ws, &ClientMsg::Endpoints { endpoints: now }).await.is_err() {
                    return End::Lost;
                }
            }
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                return End::Stopped;
            }
        }
    }
}

/// Applies one server message as the real agent's control loop does (`on_server_msg`).
async fn on_msg(ctx: &Ctx, a: &Agent, ws: &mut Ws, msg: ServerMsg) -> Result<Option<End>, ()> {
    let probe = ctx.probe.read().unwrap().clone();
    let (ack, resync) = match msg {
        ServerMsg::PeerMap { map } => {
            let mut st = a.state.lock().unwrap();
            match st.on_full(map) {
                Ok(()) => {
                    let m = st.map().expect("a map after on_full");
                    if let Some(p) = &probe {
                        p.observe(a.idx, m);
                    }
                    a.synced_ms.store(ctx.now_ms(), Relaxed);
                    a.connected.store(true, Relaxed);
                    (Some(m.version), false)
                }
                Err(_) => (None, false),
            }
        }
        ServerMsg::PeerDelta { delta } => {
            let mut st = a.state.lock().unwrap();
            match st.on_delta(delta) {
                Ok(DeltaOutcome::Applied { compact }) => {
                    let m = st.map().expect("a map after a delta");
                    if let Some(p) = &probe {
                        p.observe(a.idx, m);
                    }
                    (Some(m.version), compact)
                }
                Ok(DeltaOutcome::Stale) => (None, false),
                Ok(DeltaOutcome::Gap) | Err(_) => (None, true),
            }
        }
        ServerMsg::Revoked { .. } => return Ok(Some(End::Revoked)),
        _ => (None, false),
    };
    if let Some(version) = ack {
        a.applied.fetch_add(1, Relaxed);
        send(ws, &ClientMsg::Applied { version }).await?;
        a.acked.fetch_add(1, Relaxed);
        a.last_acked.store(version, Relaxed);
    }
    if resync {
        a.resyncs.fetch_add(1, Relaxed);
        send(ws, &ClientMsg::Resync).await?;
    }
    Ok(None)
}

/// A stuck agent: connects with a tiny receive buffer, says Hello, then never reads
/// again; the stream stays open until the run stops.
pub async fn run_stuck(ctx: Arc<Ctx>, dev: Device) -> anyhow::Result<()> {
    let mut stop = ctx.stop.subscribe();
    let mut ws = ctx.connect(&dev.credential, Some(4096)).await?;
    let hello = ClientMsg::Hello {
        protocol: PROTOCOL_VERSION,
        agent_version: "bench-scale-stuck".into(),
        have_version: None,
    };
    send(&mut ws, &hello)
        .await
        .map_err(|_| anyhow::anyhow!("hello"))?;
    let _ = stop.changed().await;
    drop(ws);
    Ok(())
}

/// The map a fresh stream gets for `dev` (the console's from-scratch rebuild), checked
/// against the pinned signing key.
pub async fn fresh_map(ctx: &Ctx, dev: &Device) -> anyhow::Result<PeerMap> {
    let mut ws = ctx.connect(&dev.credential, None).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Ok(ServerMsg::PeerMap { map }) = serde_json::from_str(t.as_str()) {
                    break Ok(map.verify(&dev.signing_key)?);
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(_) => break Err(anyhow::anyhow!("stream closed before the map")),
            Err(_) => bail!("no map within 30 s"),
        }
    };
    let _ = ws.close(None).await;
    r
}
