//! The relay: forwards already-encrypted WireGuard datagrams between devices that cannot
//! reach each other directly, over TLS/TCP so it also works where UDP is blocked.
//!
//! It runs inside the console, on the HTTPS port through an HTTP upgrade (`upgrade`,
//! on by default) and on its own TLS/TCP port with `serve --relay-listen`, or alone
//! (`zmesh-console relay`); either way it needs only the console's public signing key: devices present a relay
//! token the console signed and prove they hold the WireGuard key it names (see
//! `zmesh_shared::relay`). Forwarding is only between devices of the same network, each
//! connection is rate-limited (token bucket on bytes), and a connection ends when its
//! token expires. The relay never holds keys that could decrypt what it forwards. Small
//! datagrams (handshakes) for a device not connected yet are kept for a few seconds
//! (see `hold`), so two agents coming up together do not wait out WireGuard's retry.
//! Connections still authenticating are limited per source address (see `admit`).

mod admit;
pub mod cli;
mod hold;
pub mod metrics;
pub mod upgrade;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use rand::RngCore;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio_rustls::TlsAcceptor;
use zmesh_shared::relay::{auth_proof, verify_token, Frame, RelayClaims, RelayToken};
use zmesh_shared::time::now_ms;
use zmesh_shared::{DeviceId, NetworkId, SigningPublicKey};

/// Time a client has to authenticate after connecting.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued towards one client before new ones are dropped (like a full UDP buffer).
const QUEUE: usize = 512;
const READ_CHUNK: usize = 64 * 1024;

#[derive(Clone)]
pub struct RelayConfig {
    /// Public key the console signs relay tokens with.
    pub console_key: SigningPublicKey,
    /// Sustained forwarding rate per connection, and the burst it may save up.
    pub rate_bytes_per_sec: u64,
    pub burst_bytes: u64,
    /// Test hook: receives a copy of every payload forwarded.
    pub tap: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// Extra check after a valid token: may this device use the relay now? The relay
    /// inside the console asks its database, so a revoked device is refused even with
    /// an unexpired token. A standalone relay has no such check (short token lifetime).
    pub authorize: Option<Authorize>,
}

/// See [`RelayConfig::authorize`].
pub type Authorize = Arc<dyn Fn(DeviceId) -> BoxFuture<'static, bool> + Send + Sync>;

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("console_key", &self.console_key)
            .field("rate_bytes_per_sec", &self.rate_bytes_per_sec)
            .finish()
    }
}

impl RelayConfig {
    pub fn new(console_key: SigningPublicKey) -> Self {
        RelayConfig {
            console_key,
            rate_bytes_per_sec: 12_500_000,
            burst_bytes: 2_000_000,
            tap: None,
            authorize: None,
        }
    }
}

/// Counters for logs and tests.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub auth_ok: AtomicU64,
    pub auth_failed: AtomicU64,
    pub forwarded: AtomicU64,
    /// Payload bytes of the datagrams counted in `forwarded`.
    pub forwarded_bytes: AtomicU64,
    pub drop_unknown_dst: AtomicU64,
    pub drop_rate: AtomicU64,
    pub drop_queue_full: AtomicU64,
    /// Small datagrams kept for a destination not connected yet (see `hold`).
    pub held: AtomicU64,
    /// Held datagrams delivered when their destination connected.
    pub held_delivered: AtomicU64,
    /// Connections refused because their source (or the relay) had too many still
    /// authenticating (see `admit`).
    pub refused_busy: AtomicU64,
}

type Key = (NetworkId, [u8; 32]);

struct Client {
    conn: u64,
    tx: mpsc::Sender<Frame>,
    device: DeviceId,
    /// Wakes the connection's task to end it (device revoked).
    kick: Arc<Notify>,
}

pub struct Relay {
    cfg: RelayConfig,
    clients: Mutex<HashMap<Key, Client>>,
    held: Mutex<hold::Held<Key>>,
    pending: Arc<admit::Pending>,
    next_conn: AtomicU64,
    pub stats: RelayStats,
}

impl Relay {
    pub fn new(cfg: RelayConfig) -> Arc<Relay> {
        Arc::new(Relay {
            cfg,
            clients: Mutex::new(HashMap::new()),
            held: Mutex::new(hold::Held::default()),
            pending: Arc::default(),
            next_conn: AtomicU64::new(1),
            stats: RelayStats::default(),
        })
    }

    /// Devices connected now.
    pub fn connected(&self) -> usize {
        self.clients.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Connections still authenticating now.
    pub fn authenticating(&self) -> u32 {
        self.pending.waiting()
    }

    /// A slot for a new, unauthenticated connection from `ip` (see `admit`); `None`
    /// (and counted) when its source already has too many.
    pub fn admit(&self, ip: std::net::IpAddr) -> Option<admit::Admission> {
        let a = self.pending.admit(ip);
        if a.is_none() {
            self.stats.refused_busy.fetch_add(1, Ordering::Relaxed);
        }
        a
    }

    /// Ends the connections of `device` (it was revoked or deleted). Returns how many.
    pub fn kick_device(&self, device: DeviceId) -> usize {
        let Ok(mut c) = self.clients.lock() else {
            return 0;
        };
        let mut n = 0;
        c.retain(|_, cl| {
            if cl.device == device {
                cl.kick.notify_one();
                n += 1;
                false
            } else {
                true
            }
        });
        n
    }

    fn forward(&self, net: NetworkId, src: [u8; 32], dst: [u8; 32], data: Vec<u8>) {
        let tx = match self.clients.lock() {
            Ok(c) => c.get(&(net, dst)).map(|c| c.tx.clone()),
            Err(_) => None,
        };
        let Some(tx) = tx else {
            let kept = self
                .held
                .lock()
                .is_ok_and(|mut h| h.push((net, dst), src, data, Instant::now()));
            let stat = if kept {
                &self.stats.held
            } else {
                &self.stats.drop_unknown_dst
            };
            stat.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if let Some(tap) = &self.cfg.tap {
            let _ = tap.send(data.clone());
        }
        let len = data.len() as u64;
        match tx.try_send(Frame::Recv { src, data }) {
            Ok(()) => {
                self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                self.stats.forwarded_bytes.fetch_add(len, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.drop_queue_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Accepts TLS connections on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    relay: Arc<Relay>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "relay accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(admission) = relay.admit(peer.ip()) else {
            tracing::debug!(%peer, "relay: too many connections authenticating from this address");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let relay = Arc::clone(&relay);
        tasks.spawn(async move {
            let tls = match tokio::time::timeout(AUTH_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                _ => {
                    tracing::debug!(%peer, "relay TLS handshake failed");
                    return;
                }
            };
            if let Err(e) = handle(tls, relay, Some(admission)).await {
                tracing::debug!(%peer, error = %e, "relay connection ended");
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    tasks.shutdown().await;
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Proto(String),
    #[error("authentication failed: {0}")]
    Auth(&'static str),
}

struct Reader<R> {
    r: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    async fn next(&mut self) -> Result<Option<Frame>, ConnError> {
        loop {
            match Frame::decode(&self.buf) {
                Ok(Some((f, used))) => {
                    self.buf.drain(..used);
                    return Ok(Some(f));
                }
                Ok(None) => {}
                Err(e) => return Err(ConnError::Proto(e.to_string())),
            }
            // A local buffer keeps this cancel-safe (it runs inside `select!`).
            let mut tmp = [0u8; 16384];
            let n = self.r.read(&mut tmp).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> std::io::Result<()> {
    let mut b = Vec::with_capacity(64);
    f.encode(&mut b);
    w.write_all(&b).await?;
    w.flush().await
}

/// Challenge-response on a fresh connection; returns who it is.
async fn authenticate<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    rd: &mut Reader<R>,
    wr: &mut W,
    console_key: &SigningPublicKey,
) -> Result<RelayClaims, ConnError> {
    let Some(Frame::Hello { token }) = rd.next().await? else {
        return Err(ConnError::Auth("expected hello"));
    };
    let token: RelayToken =
        serde_json::from_slice(&token).map_err(|_| ConnError::Auth("token is not JSON"))?;
    let claims = verify_token(&token, console_key, now_ms() as u64)
        .map_err(|_| ConnError::Auth("token invalid or expired"))?;
    let eph = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
    let eph_pub = x25519_dalek::PublicKey::from(&eph);
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    write_frame(
        wr,
        &Frame::Challenge {
            key: *eph_pub.as_bytes(),
            nonce,
        },
    )
    .await?;
    let Some(Frame::Auth { proof }) = rd.next().await? else {
        return Err(ConnError::Auth("expected auth"));
    };
    let device = claims.public_key.to_x25519();
    let shared = eph.diffie_hellman(&device);
    if !shared.was_contributory() {
        return Err(ConnError::Auth("weak key"));
    }
    let want = auth_proof(
        shared.as_bytes(),
        &nonce,
        eph_pub.as_bytes(),
        claims.public_key.as_bytes(),
    );
    // Constant-time compare: the proof is a secret-derived value.
    let diff = want
        .iter()
        .zip(proof.iter())
        .fold(0u8, |a, (x, y)| a | (x ^ y));
    if diff != 0 {
        return Err(ConnError::Auth("wrong proof"));
    }
    Ok(claims)
}

async fn authorized(relay: &Relay, device: DeviceId) -> bool {
    match &relay.cfg.authorize {
        Some(f) => f(device).await,
        None => true,
    }
}

/// Runs one relay connection: authentication first (nothing is forwarded before it
/// succeeds), then forwarding until the client leaves, its token expires or it is
/// revoked. `admission` is the connection's slot among those still authenticating;
/// it is given back when authentication ends.
async fn handle<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    relay: Arc<Relay>,
    admission: Option<admit::Admission>,
) -> Result<(), ConnError> {
    let (r, mut w) = tokio::io::split(stream);
    let mut rd = Reader { r, buf: vec![] };
    let auth = tokio::time::timeout(
        AUTH_TIMEOUT,
        authenticate(&mut rd, &mut w, &relay.cfg.console_key),
    )
    .await;
    drop(admission);
    let claims = match auth {
        Ok(Ok(c)) if authorized(&relay, c.device_id).await => c,
        Ok(Ok(_)) => {
            relay.stats.auth_failed.fetch_add(1, Ordering::Relaxed);
            let e = ConnError::Auth("device is not active");
            let _ = write_frame(
                &mut w,
                &Frame::Error {
                    message: e.to_string(),
                },
            )
            .await;
            return Err(e);
        }
        Ok(Err(e)) => {
            relay.stats.auth_failed.fetch_add(1, Ordering::Relaxed);
            let _ = write_frame(
                &mut w,
                &Frame::Error {
                    message: e.to_string(),
                },
            )
            .await;
            return Err(e);
        }
        Err(_) => {
            relay.stats.auth_failed.fetch_add(1, Ordering::Relaxed);
            return Err(ConnError::Auth("timeout"));
        }
    };
    relay.stats.auth_ok.fetch_add(1, Ordering::Relaxed);
    let me = *claims.public_key.as_bytes();
    let net = claims.network_id;
    let conn = relay.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Frame>(QUEUE);
    // A device that reconnects replaces its older connection.
    let kick = Arc::new(Notify::new());
    if let Ok(mut c) = relay.clients.lock() {
        c.insert(
            (net, me),
            Client {
                conn,
                tx: tx.clone(),
                device: claims.device_id,
                kick: Arc::clone(&kick),
            },
        );
    }
    tracing::info!(device = %claims.device_id, key = %claims.public_key.short(), "relay client authenticated");
    write_frame(&mut w, &Frame::Ready).await?;
    // What peers sent while this device was on its way here (their handshakes).
    let waiting = relay
        .held
        .lock()
        .map(|mut h| h.take(&(net, me), Instant::now()))
        .unwrap_or_default();
    for (src, data) in waiting {
        if tx.try_send(Frame::Recv { src, data }).is_ok() {
            relay.stats.held_delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
    let writer = tokio::spawn(async move {
        let mut b = Vec::with_capacity(READ_CHUNK);
        while let Some(f) = rx.recv().await {
            b.clear();
            f.encode(&mut b);
            // Batch what is already queued into one write.
            while b.len() < READ_CHUNK {
                match rx.try_recv() {
                    Ok(f) => f.encode(&mut b),
                    Err(_) => break,
                }
            }
            if w.write_all(&b).await.is_err() || w.flush().await.is_err() {
                break;
            }
        }
    });
    let expires_in = Duration::from_millis(claims.expires_at_ms.saturating_sub(now_ms() as u64));
    let deadline = tokio::time::sleep(expires_in);
    tokio::pin!(deadline);
    let (rate, burst) = (
        relay.cfg.rate_bytes_per_sec as f64,
        relay.cfg.burst_bytes as f64,
    );
    let mut tokens = burst;
    let mut last = Instant::now();
    let result = loop {
        let f = tokio::select! {
            f = rd.next() => f,
            _ = &mut deadline => {
                let _ = tx.try_send(Frame::Error { message: "relay token expired".into() });
                break Ok(());
            }
            _ = kick.notified() => {
                let _ = tx.try_send(Frame::Error { message: "device revoked".into() });
                tracing::info!(device = %claims.device_id, "relay dropped a revoked device");
                break Ok(());
            }
        };
        match f {
            Ok(Some(Frame::Send { dst, data })) => {
                let now = Instant::now();
                tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(burst);
                last = now;
                let cost = data.len() as f64 + 32.0;
                if tokens < cost {
                    relay.stats.drop_rate.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                tokens -= cost;
                if dst != me {
                    relay.forward(net, me, dst, data);
                }
            }
            Ok(Some(Frame::Ping { nonce })) => {
                let _ = tx.try_send(Frame::Pong { nonce });
            }
            Ok(Some(_)) => break Err(ConnError::Proto("unexpected frame".into())),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    if let Ok(mut c) = relay.clients.lock() {
        if c.get(&(net, me)).is_some_and(|cl| cl.conn == conn) {
            c.remove(&(net, me));
        }
    }
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    tracing::info!(device = %claims.device_id, "relay client gone");
    result
}
