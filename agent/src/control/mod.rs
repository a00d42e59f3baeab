//! Control client: enrollment over HTTPS and the long-lived control stream (WebSocket
//! over TLS the agent sets up itself, so the console is verified by pin or CA file).
//!
//! The stream task verifies every peer map and delta with the console signing key,
//! caches them in the state dir, hands the result (peers and inbound filter) to the
//! data plane, reports endpoints, health and signed flows (denied inbound packets and
//! summaries of accepted connections, see `reports`), and reconnects with jittered
//! backoff until stopped or revoked. A device whose key expired keeps no peers and asks
//! again slowly (its user signs in again, or an admin renews the key).

mod apply;
pub use apply::{apply_map, RouteState};
pub mod backoff;
pub mod endpoints;
pub mod enroll;
pub mod login;
pub mod map;
pub mod nat;
mod reports;
pub mod routes;
pub use reports::Reporter;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header::AUTHORIZATION, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use zmesh_shared::peermap::PeerMap;
use zmesh_shared::wire::{ClientMsg, PeerHealth, ServerMsg, STREAM_PATH};
use zmesh_shared::PROTOCOL_VERSION;

use self::backoff::Backoff;
use self::map::{DeltaOutcome, MapState};
use self::tls::{client_config, Trust};
use crate::io::DataPlane;
use crate::statedir::{Enrollment, StateDir};

const HEALTH_EVERY: Duration = Duration::from_secs(30);
/// How often route carriers are re-chosen by path liveness (failover between routers).
const ROUTE_CHECK_EVERY: Duration = Duration::from_secs(1);
const ENDPOINTS_CHECK_EVERY: Duration = Duration::from_secs(10);
const WS_PING_EVERY: Duration = Duration::from_secs(15);
/// Denied inbound flows are reported at most this often (and at most
/// `reports::MAX_DENIED_PER_REPORT` at a time), on top of the filter's per-source limit.
const DENIED_REPORT_EVERY: Duration = Duration::from_secs(2);
/// How often summaries of accepted flows are sent (one batch of at most
/// `MAX_FLOWS_PER_BATCH`; the rest wait in the filter's bounded queue).
const ACCEPTED_REPORT_EVERY: Duration = Duration::from_secs(5);
/// No frame at all for this long (our pings go unanswered): the link is dead.
const IDLE_LIMIT: Duration = Duration::from_secs(50);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Url(#[from] enroll::EnrollError),
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("connect timed out")]
    Timeout,
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    #[error("console credential rejected (HTTP {0})")]
    Unauthorized(u16),
    #[error("no message from the console for {0:?}")]
    Idle(Duration),
}

/// What the daemon reads for `zmesh status` while the stream task runs.
#[derive(Default)]
pub struct Shared {
    connected: AtomicBool,
    map: Mutex<Option<PeerMap>>,
    /// Name of the relay we are connected to, if any.
    relay: Mutex<Option<String>>,
    /// When this device's key expires, as the console said on connecting (`None`:
    /// not told yet, `Some(None)`: never).
    key_expiry: Mutex<Option<Option<i64>>>,
    /// The console said the key expired, and no map came since.
    expired: AtomicBool,
    /// Routes and exit node: preferences, choice, host configuration.
    routing: Mutex<RouteState>,
    /// The names the resolver answers, rebuilt on every map and delta.
    names: tokio::sync::watch::Sender<Arc<crate::dns::Names>>,
    /// When a map or delta was last applied (Unix ms; 0: never), for the map age metric.
    map_applied_ms: AtomicI64,
    /// Counts applied maps and deltas (the daemon re-checks its profiles on a change).
    map_seq: watch::Sender<u64>,
}

impl Shared {
    pub fn new(map: Option<PeerMap>) -> Arc<Self> {
        let names = map
            .as_ref()
            .map(crate::dns::Names::from_map)
            .unwrap_or_default();
        Arc::new(Shared {
            names: tokio::sync::watch::Sender::new(Arc::new(names)),
            connected: AtomicBool::new(false),
            map: Mutex::new(map),
            relay: Mutex::new(None),
            key_expiry: Mutex::new(None),
            expired: AtomicBool::new(false),
            routing: Mutex::new(RouteState::new(routes::RoutePrefs::default())),
            map_applied_ms: AtomicI64::new(0),
            map_seq: watch::Sender::new(0),
        })
    }
    /// Sets the route preferences, the underlay addresses to keep off an exit node,
    /// and the host configuration to drive.
    pub fn init_routing(
        &self,
        prefs: routes::RoutePrefs,
        keep: Vec<IpAddr>,
        net: crate::io::netcfg::NetCfg,
    ) {
        let mut r = self.routing.lock().unwrap_or_else(|e| e.into_inner());
        r.prefs = prefs;
        r.keep = keep;
        r.net = Some(net);
    }
    pub fn route_prefs(&self) -> routes::RoutePrefs {
        self.routing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .prefs
            .clone()
    }
    pub fn set_route_prefs(&self, p: routes::RoutePrefs) {
        self.routing.lock().unwrap_or_else(|e| e.into_inner()).prefs = p;
    }
    pub fn route_selection(&self) -> routes::Selection {
        self.routing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .selection
            .clone()
    }
    /// Adds underlay addresses an exit node must not swallow (relays, STUN servers).
    pub fn keep_off_tunnel(&self, addrs: impl IntoIterator<Item = IpAddr>) {
        let mut r = self.routing.lock().unwrap_or_else(|e| e.into_inner());
        for a in addrs {
            if !r.keep.contains(&a) {
                r.keep.push(a);
            }
        }
    }
    /// Undoes the host configuration (tunnels going down).
    pub fn teardown_host(&self) {
        if let Some(mut n) = self
            .routing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .net
            .take()
        {
            n.teardown();
        }
    }
    pub fn key_expiry(&self) -> Option<Option<i64>> {
        *self.key_expiry.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    pub fn map(&self) -> Option<PeerMap> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// When a map or delta was last applied (Unix ms), if ever.
    pub fn map_applied_ms(&self) -> Option<i64> {
        Some(self.map_applied_ms.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }
    pub fn relay(&self) -> Option<String> {
        self.relay.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub(crate) fn set_relay(&self, name: Option<String>) {
        *self.relay.lock().unwrap_or_else(|e| e.into_inner()) = name;
    }
    /// The names of the current map, updated with it.
    pub fn names(&self) -> tokio::sync::watch::Receiver<Arc<crate::dns::Names>> {
        self.names.subscribe()
    }
    /// Ticks after every applied map or delta.
    pub fn map_changes(&self) -> watch::Receiver<u64> {
        self.map_seq.subscribe()
    }
    fn set_map(&self, m: PeerMap) {
        let names = crate::dns::Names::from_map(&m);
        *self.map.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
        self.map_seq.send_modify(|n| *n += 1);
        self.map_applied_ms
            .store(zmesh_shared::time::now_ms(), Ordering::Relaxed);
        self.names.send_if_modified(|n| {
            let changed = **n != names;
            if changed {
                *n = Arc::new(names);
            }
            changed
        });
    }
}

/// Events the stream task raises to the daemon.
#[derive(Debug)]
pub enum ControlEvent {
    Revoked {
        reason: String,
    },
    /// The console says the device's key expired (the stream keeps retrying, slowly).
    Expired,
    /// A map came again after an expiry (an admin renewed it, or the user signed in).
    Renewed,
}

/// What the console says when it closes the stream of a device whose key expired.
pub const EXPIRED_REASON: &str = "key expired";
/// Retries of an expired device's stream: soon at first (an admin may renew the key),
/// then rarely, so long-expired devices cost the console little.
const EXPIRED_RETRY_MIN: Duration = Duration::from_secs(5);
const EXPIRED_RETRY_MAX: Duration = Duration::from_secs(300);

pub struct ControlCtx {
    pub enrollment: Enrollment,
    pub state: StateDir,
    pub dp: DataPlane,
    pub tun_name: String,
    pub shared: Arc<Shared>,
    pub events: mpsc::UnboundedSender<ControlEvent>,
    /// The console's latest NAT settings, for the relay task.
    pub nat: watch::Sender<Option<nat::NatSettings>>,
    /// Signs this device's flow reports (numbering them).
    pub reporter: Arc<Mutex<reports::Reporter>>,
    /// Ticks when `zmesh up` changed the route preferences (in `shared`).
    pub routes_changed: watch::Receiver<u64>,
}

enum SessionEnd {
    Stopped,
    Closed,
    Revoked(String),
    /// The host woke from sleep or lost the address the stream ran from: connect
    /// again at once (and get a full map: the console may have changed it meanwhile).
    NetworkChanged,
}

/// Runs the control stream until `stop` turns true or the device is revoked.
pub async fn run(ctx: ControlCtx, mut st: MapState, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::default();
    let mut expired_backoff = Backoff::new(EXPIRED_RETRY_MIN, EXPIRED_RETRY_MAX, 0.2);
    loop {
        if *stop.borrow() {
            return;
        }
        let mut established = false;
        let end = session(&ctx, &mut st, &mut stop, &mut established).await;
        ctx.shared.connected.store(false, Ordering::Relaxed);
        match end {
            Ok(SessionEnd::Stopped) => return,
            Ok(SessionEnd::NetworkChanged) => {
                backoff.reset();
                continue;
            }
            Ok(SessionEnd::Revoked(reason)) if reason == EXPIRED_REASON => {
                // Not the end: the user signs in again (`zmesh up --reauth`) or an admin
                // renews the key; until then no peers, and a slow retry.
                if !ctx.shared.expired.swap(true, Ordering::Relaxed) {
                    expired_backoff.reset();
                    *ctx.shared.map.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    ctx.shared
                        .names
                        .send_replace(Arc::new(crate::dns::Names::default()));
                    tracing::warn!(
                        "the device's key expired: no peers until its user signs in again \
                         (`zmesh up --reauth`) or an admin renews it"
                    );
                    if let Err(e) = ctx.dp.set_peers(vec![]).await {
                        tracing::error!(error = %e, "data plane refused the empty peer set");
                    }
                    apply::clear_routes(&ctx.shared);
                    let _ = ctx.events.send(ControlEvent::Expired);
                }
                let wait = expired_backoff.next_delay();
                tracing::info!(
                    retry_in_s = wait.as_secs(),
                    "asking the console again later"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            Ok(SessionEnd::Revoked(reason)) => {
                tracing::warn!(%reason, "console revoked this device");
                let _ = ctx.events.send(ControlEvent::Revoked { reason });
                return;
            }
            Err(ControlError::Unauthorized(code)) => {
                let reason = format!("console rejected the device credential (HTTP {code})");
                tracing::warn!(%reason, "treating as revoked");
                let _ = ctx.events.send(ControlEvent::Revoked { reason });
                return;
            }
            Ok(SessionEnd::Closed) => tracing::info!("control stream closed"),
            Err(e) => tracing::warn!(error = %e, "control stream failed"),
        }
        if established {
            backoff.reset();
        }
        let wait = backoff.next_delay();
        tracing::debug!(?wait, "reconnecting after backoff");
        // A new network (or a wake) is a better moment to try than the backoff's.
        let mut net = ctx.dp.net_changes();
        net.mark_unchanged();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = net.changed() => if r.is_ok() {
                tracing::info!("network changed: reconnecting the control stream now");
                backoff.reset();
            },
            _ = stop.changed() => return,
        }
    }
}

type Ws = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

async fn connect(enr: &Enrollment) -> Result<Ws, ControlError> {
    let base = enroll::parse_console_url(&enr.console)?;
    let mut url = base
        .join(STREAM_PATH)
        .map_err(|_| enroll::EnrollError::BadUrl(enr.console.clone()))?;
    url.set_scheme("wss")
        .map_err(|_| enroll::EnrollError::BadUrl(enr.console.clone()))?;
    let port = url.port_or_known_default().unwrap_or(443);
    let (addr_host, server_name): (String, ServerName<'static>) = match url.host() {
        Some(url::Host::Ipv4(ip)) => (ip.to_string(), ServerName::IpAddress(IpAddr::V4(ip).into())),
        Some(url::Host::Ipv6(ip)) => (ip.to_string(), ServerName::IpAddress(IpAddr::V6(ip).into())),
        Some(url::Host::Domain(d)) => (
            d.to_string(),
            ServerName::try_from(d.to_string())
                .map_err(|_| enroll::EnrollError::BadUrl(enr.console.clone()))?,
        ),
        None => return Err(enroll::EnrollError::BadUrl(enr.console.clone()).into()),
    };
    let trust = Trust::from_parts(enr.pin, enr.ca_pem.as_deref())?;
    let tls = TlsConnector::from(Arc::new(client_config(&trust, &[b"http/1.1"])?));
    let fut = async {
        let tcp = TcpStream::connect((addr_host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        let tls_stream = tls.connect(server_name, tcp).await?;
        let mut req = url.as_str().into_client_request()?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", enr.credential.expose()))
            .map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
        req.headers_mut().insert(AUTHORIZATION, bearer);
        match tokio_tungstenite::client_async(req, tls_stream).await {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(resp)) if matches!(resp.status().as_u16(), 401 | 403) => {
                Err(ControlError::Unauthorized(resp.status().as_u16()))
            }
            Err(e) => Err(e.into()),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| ControlError::Timeout)?
}

async fn send(ws: &mut Ws, msg: &ClientMsg) -> Result<(), ControlError> {
    let text = serde_json::to_string(msg).expect("client messages serialize");
    ws.send(Message::text(text)).await?;
    Ok(())
}

fn overlay_ips(e: &Enrollment) -> Vec<IpAddr> {
    vec![IpAddr::V4(e.overlay_v4), IpAddr::V6(e.overlay_v6)]
}

/// Host candidates first (a peer on the same network reaches us best there), then the
/// server-reflexive addresses STUN told us.
fn my_endpoints(ctx: &ControlCtx) -> Vec<SocketAddr> {
    let mut v = endpoints::current(
        &ctx.tun_name,
        &overlay_ips(&ctx.enrollment),
        ctx.dp.local_addr().port(),
    );
    for a in ctx.dp.reflexive().borrow().iter() {
        if !v.contains(a) {
            v.push(*a);
        }
    }
    v
}

/// Whether some interface of this host still has `ip`.
pub(crate) fn host_has_addr(ip: IpAddr) -> bool {
    endpoints::interface_addrs()
        .map(|v| v.iter().any(|(_, a)| *a == ip))
        .unwrap_or(true)
}

async fn health(dp: &DataPlane) -> Vec<PeerHealth> {
    dp.peer_stats()
        .await
        .into_iter()
        .map(|s| PeerHealth {
            device_id: s.device_id,
            path: crate::ipc::PeerPath::from(s.path).as_str().to_string(),
            last_handshake_ms: s
                .last_handshake
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64),
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
        })
        .collect()
}

async fn session(
    ctx: &ControlCtx,
    st: &mut MapState,
    stop: &mut watch::Receiver<bool>,
    established: &mut bool,
) -> Result<SessionEnd, ControlError> {
    let mut net = ctx.dp.net_changes();
    net.mark_unchanged();
    let mut ws = tokio::select! {
        r = connect(&ctx.enrollment) => r?,
        _ = stop.changed() => return Ok(SessionEnd::Stopped),
    };
    // The address this stream leaves from: when it disappears, so does the stream.
    let local_ip = ws.get_ref().get_ref().0.local_addr().ok().map(|a| a.ip());
    tracing::info!(console = %ctx.enrollment.console, "control stream connected");
    *established = true;
    ctx.shared.connected.store(true, Ordering::Relaxed);
    send(
        &mut ws,
        &ClientMsg::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            have_version: st.version(),
        },
    )
    .await?;
    let key = ctx
        .reporter
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .public_key();
    send(&mut ws, &ClientMsg::ReportKey { key }).await?;
    let mut eps = my_endpoints(ctx);
    send(
        &mut ws,
        &ClientMsg::Endpoints {
            endpoints: eps.clone(),
        },
    )
    .await?;
    send(&mut ws, &routes_msg(&ctx.shared)).await?;
    let mut routes_changed = ctx.routes_changed.clone();
    routes_changed.mark_unchanged();

    let start = tokio::time::Instant::now();
    let mut route_tick = tokio::time::interval_at(start + ROUTE_CHECK_EVERY, ROUTE_CHECK_EVERY);
    let mut health_tick = tokio::time::interval_at(start + HEALTH_EVERY, HEALTH_EVERY);
    let mut eps_tick =
        tokio::time::interval_at(start + ENDPOINTS_CHECK_EVERY, ENDPOINTS_CHECK_EVERY);
    let mut ping_tick = tokio::time::interval_at(start + WS_PING_EVERY, WS_PING_EVERY);
    let mut denied_tick =
        tokio::time::interval_at(start + DENIED_REPORT_EVERY, DENIED_REPORT_EVERY);
    let mut accepted_tick =
        tokio::time::interval_at(start + ACCEPTED_REPORT_EVERY, ACCEPTED_REPORT_EVERY);
    let mut last_rx = Instant::now();
    let mut reflexive = ctx.dp.reflexive();
    loop {
        tokio::select! {
            r = reflexive.changed() => {
                if r.is_ok() {
                    let now = my_endpoints(ctx);
                    if now != eps {
                        tracing::info!(endpoints = ?now, "endpoints changed (STUN)");
                        send(&mut ws, &ClientMsg::Endpoints { endpoints: now.clone() }).await?;
                        eps = now;
                    }
                } else {
                    // The data plane is gone; the daemon stops us soon.
                    reflexive = ctx.dp.reflexive();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                return Ok(SessionEnd::Stopped);
            }
            r = net.changed() => {
                if r.is_err() {
                    net = ctx.dp.net_changes();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                let change = *net.borrow_and_update();
                let gone = local_ip.is_some_and(|ip| !host_has_addr(ip));
                if change.wake || gone {
                    tracing::info!(wake = change.wake, local_gone = gone, "network changed: reconnecting the control stream");
                    let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
                    return Ok(SessionEnd::NetworkChanged);
                }
                let now = my_endpoints(ctx);
                if now != eps {
                    tracing::info!(endpoints = ?now, "endpoints changed (network change)");
                    send(&mut ws, &ClientMsg::Endpoints { endpoints: now.clone() }).await?;
                    eps = now;
                }
            }
            msg = ws.next() => {
                last_rx = Instant::now();
                let text = match msg {
                    None | Some(Ok(Message::Close(_))) => return Ok(SessionEnd::Closed),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                };
                let msg: ServerMsg = match serde_json::from_str(text.as_str()) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!(error = %e, "skipping a server message this agent does not understand");
                        continue;
                    }
                };
                if let Some(end) = on_server_msg(ctx, st, &mut ws, msg).await? {
                    return Ok(end);
                }
            }
            r = routes_changed.changed() => {
                if r.is_ok() {
                    send(&mut ws, &routes_msg(&ctx.shared)).await?;
                    if let Some(m) = st.map() {
                        apply_map(&ctx.dp, &ctx.shared, m).await;
                    }
                }
            }
            _ = route_tick.tick() => {
                apply::reselect(&ctx.dp, &ctx.shared).await;
            }
            _ = health_tick.tick() => {
                send(&mut ws, &ClientMsg::Health { peers: health(&ctx.dp).await }).await?;
            }
            _ = denied_tick.tick() => {
                let flows = reports::denied(&ctx.dp, st.map()).await;
                if !flows.is_empty() {
                    let flows = ctx.reporter.lock().unwrap_or_else(|e| e.into_inner()).sign(flows);
                    send(&mut ws, &ClientMsg::SignedFlows { flows }).await?;
                }
            }
            _ = accepted_tick.tick() => {
                let flows = reports::accepted(&ctx.dp, st.map()).await;
                if !flows.is_empty() {
                    tracing::debug!(n = flows.len(), "reporting accepted flows");
                    let flows = ctx.reporter.lock().unwrap_or_else(|e| e.into_inner()).sign(flows);
                    send(&mut ws, &ClientMsg::SignedFlows { flows }).await?;
                }
            }
            _ = eps_tick.tick() => {
                let now = my_endpoints(ctx);
                if now != eps {
                    tracing::info!(endpoints = ?now, "endpoints changed");
                    send(&mut ws, &ClientMsg::Endpoints { endpoints: now.clone() }).await?;
                    eps = now;
                }
            }
            _ = ping_tick.tick() => {
                if last_rx.elapsed() > IDLE_LIMIT {
                    return Err(ControlError::Idle(IDLE_LIMIT));
                }
                ws.send(Message::Ping(Vec::new().into())).await?;
            }
        }
    }
}

async fn on_server_msg(
    ctx: &ControlCtx,
    st: &mut MapState,
    ws: &mut Ws,
    msg: ServerMsg,
) -> Result<Option<SessionEnd>, ControlError> {
    match msg {
        ServerMsg::Hello {
            protocol,
            device_id,
            key_expires_at_ms,
            ..
        } => {
            *ctx.shared
                .key_expiry
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(key_expires_at_ms);
            if protocol != PROTOCOL_VERSION {
                tracing::warn!(
                    protocol,
                    ours = PROTOCOL_VERSION,
                    "console speaks another protocol version"
                );
            }
            if device_id != ctx.enrollment.device_id {
                tracing::warn!(%device_id, "console greeted a different device id");
            }
        }
        ServerMsg::PeerMap { map } => match st.on_full(map) {
            Ok(()) => {
                let was = ctx.shared.expired.swap(false, Ordering::Relaxed);
                if was {
                    tracing::info!("the console sends peers again: the key is valid");
                }
                // (also when the expiry was remembered from before a restart)
                if was || ctx.enrollment.expired {
                    let _ = ctx.events.send(ControlEvent::Renewed);
                }
                persist(ctx, st);
                if let Some(m) = st.map() {
                    apply_map(&ctx.dp, &ctx.shared, m).await;
                    send(ws, &ClientMsg::Applied { version: m.version }).await?;
                }
            }
            Err(e) => tracing::error!(error = %e, "rejected a peer map from the console"),
        },
        ServerMsg::PeerDelta { delta } => match st.on_delta(delta) {
            Ok(DeltaOutcome::Applied { compact }) => {
                persist(ctx, st);
                if let Some(m) = st.map() {
                    apply_map(&ctx.dp, &ctx.shared, m).await;
                    send(ws, &ClientMsg::Applied { version: m.version }).await?;
                }
                if compact {
                    tracing::debug!("delta cache is long; asking for a full map");
                    send(ws, &ClientMsg::Resync).await?;
                }
            }
            Ok(DeltaOutcome::Stale) => {}
            Ok(DeltaOutcome::Gap) => {
                tracing::info!(have = ?st.version(), "peer delta does not chain; resyncing");
                send(ws, &ClientMsg::Resync).await?;
            }
            Err(e) => {
                tracing::error!(error = %e, "rejected a peer delta; resyncing");
                send(ws, &ClientMsg::Resync).await?;
            }
        },
        ServerMsg::Revoked { reason } => return Ok(Some(SessionEnd::Revoked(reason))),
        ServerMsg::Pong { .. } => {}
        ServerMsg::NatConfig {
            stun,
            relays,
            relay_token,
        } => {
            let cached = crate::statedir::CachedNat {
                stun: stun.clone(),
                relays: relays.clone(),
                relay_token: relay_token.clone(),
            };
            if let Err(e) = ctx.state.save_nat(&cached) {
                tracing::warn!(error = %e, "cannot cache the NAT settings");
            }
            let console = nat::console_addr(&ctx.enrollment.console).await;
            let s = nat::settings(&stun, &relays, relay_token, console);
            tracing::debug!(stun = ?s.stun, relays = s.relays.len(), "NAT settings from the console");
            if let Err(e) = ctx.dp.set_stun_servers(s.stun.clone()) {
                tracing::warn!(error = %e, "cannot set STUN servers");
            }
            ctx.shared.keep_off_tunnel(
                s.stun
                    .iter()
                    .map(|a| a.ip())
                    .chain(s.relays.iter().map(|r| r.addr.ip())),
            );
            ctx.nat.send_replace(Some(s));
        }
    }
    Ok(None)
}

/// What this device offers to carry, as the console is told it.
fn routes_msg(shared: &Shared) -> ClientMsg {
    let (advertise, exit_node) = shared.route_prefs().advertised();
    ClientMsg::Routes {
        advertise,
        exit_node,
    }
}

fn persist(ctx: &ControlCtx, st: &MapState) {
    if let Some(c) = st.cache() {
        if let Err(e) = ctx.state.save_cache(c) {
            tracing::error!(error = %e, "cannot write the peer map cache");
        }
    }
}
