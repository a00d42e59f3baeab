//! `GET /agent/v1/stream`: one WebSocket per connected agent.
//!
//! The device credential is checked before the upgrade (401 otherwise). Then the
//! console sends `Hello` and the signed full map, and from there on a signed delta
//! whenever the network changes in a way this device can see. The task keeps the view
//! (shared, see [`crate::view`]) whose map its agent has, not the map itself, so every
//! delta chains from what the agent actually has at no memory cost per stream.
//! Revocation or deletion sends `Revoked` and closes. The server pings every
//! `ping_interval`; a connection silent for three intervals is dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;
use zmesh_shared::peermap::Signed;
use zmesh_shared::secret::hash_secret;
use zmesh_shared::time::now_ms;
use zmesh_shared::wire::{ClientMsg, DeviceState, ServerMsg};
use zmesh_shared::{DeviceId, NetworkId, WgPublicKey, PROTOCOL_VERSION};

use crate::bus::{Change, NetworkView};
use crate::domain::view::Step;
use crate::http::principal::bearer;
use crate::http::{ApiError, AppState, Source};
use crate::service::audit::record_refusal;
use crate::service::{access, agents, routes};
use crate::store::{AuditCtx, DeviceRow, StoreError};

/// Most endpoints one agent may report.
const MAX_ENDPOINTS: usize = 16;
/// Most unparsable frames tolerated before the stream is closed.
const MAX_BAD_FRAMES: u32 = 32;
/// Read chunk per stream. tungstenite's default (128 KiB) is zero-filled on every read
/// and stays resident: 1.25 GiB and a memset per agent message at 10,000 streams
/// (scripts/bench-scale.sh). Larger frames still arrive whole (the buffer grows for them).
const READ_BUFFER: usize = 8 * 1024;
/// WebSocket close codes (application range 4000-4999).
const CLOSE_REVOKED: u16 = 4001;
const CLOSE_PROTOCOL: u16 = 4002;
/// How long one frame may wait for a slow agent before its stream is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn stream(
    State(state): State<AppState>,
    Source(source): Source,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let device = match authenticate(&state, &headers).await {
        Ok(d) => d,
        Err(e) => {
            if matches!(e, ApiError::Unauthorized { .. }) {
                let d = serde_json::json!({"reason": e.to_string(), "path": zmesh_shared::wire::STREAM_PATH});
                record_refusal(
                    &state.store,
                    AuditCtx::new("anonymous", source),
                    "auth.failed",
                    d,
                )
                .await;
            }
            return e.into_response();
        }
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return ApiError::bad_request(
                "websocket_required",
                "this endpoint needs a WebSocket upgrade",
            )
            .into_response()
        }
    };
    tracing::info!(device = %device.id, name = %device.name, "agent stream connected");
    ws.max_message_size(256 * 1024)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| async move {
            let id = device.id;
            // changes the agent makes (endpoints) are recorded as the device's
            // ... inside the device's own network: the services it calls (hello,
            // endpoints, routes, flow reports) act there, as do its audit events
            let ctx = AuditCtx::new(format!("device:{id}"), source).in_network(device.network_id);
            let _connected = state.metrics.stream_connected();
            let state = state.in_network(device.network_id);
            Stream {
                ctx,
                state,
                device_id: id,
                network_id: device.network_id,
                public_key: device.public_key,
                key_expires_at_ms: device.key_expires_at_ms,
                socket,
                sent: None,
                nat_sent: false,
                acked: 0,
                refused: Refusals::default(),
            }
            .run()
            .await;
            tracing::info!(device = %id, "agent stream closed");
        })
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<DeviceRow, ApiError> {
    let cred = bearer(headers)?;
    state
        .store
        .device_by_credential(&hash_secret(cred))
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized("unauthorized", "unknown or revoked device credential")
        })
}

/// The view whose map the agent has, and the version it knows that map by (older than
/// the view's revision when later changes did not concern it).
struct Sent {
    view: Arc<NetworkView>,
    version: u64,
}

/// Why a stream ended; only for the log.
#[derive(Debug)]
enum End {
    Closed,
    Revoked,
    Dead,
    SendFailed,
    /// The agent read nothing for [`SEND_TIMEOUT`].
    Stuck,
    Store(StoreError),
    Protocol,
}

impl From<StoreError> for End {
    fn from(e: StoreError) -> Self {
        End::Store(e)
    }
}

impl From<crate::service::ServiceError> for End {
    fn from(e: crate::service::ServiceError) -> Self {
        match e {
            crate::service::ServiceError::Store(e) => End::Store(e),
            other => End::Store(StoreError::Invalid {
                field: "stream",
                reason: other.to_string(),
            }),
        }
    }
}

struct Stream {
    state: AppState,
    /// The store handle that records this device as the actor.
    /// Changes the agent makes (endpoints) are recorded as the device's.
    ctx: AuditCtx,
    device_id: DeviceId,
    network_id: NetworkId,
    public_key: WgPublicKey,
    /// The device's key expiry when it connected (told in Hello, for `zmesh status`).
    key_expires_at_ms: Option<i64>,
    socket: WebSocket,
    /// The view whose map the agent has (sent in full or reached through deltas).
    sent: Option<Sent>,
    /// A `NatConfig` (with a relay token) went out on this stream.
    nat_sent: bool,
    /// The newest map version the agent acknowledged on this stream.
    acked: u64,
    /// Flow records refused since the last `access.rejected` event of this stream.
    refused: Refusals,
}

/// Refused flow reports are audited at most once per [`REFUSAL_AUDIT_EVERY`] per
/// stream, with the count, so a misbehaving agent cannot flood the audit log.
#[derive(Default)]
struct Refusals {
    count: u64,
    reason: Option<&'static str>,
    last_audit: Option<Instant>,
}

const REFUSAL_AUDIT_EVERY: Duration = Duration::from_secs(60);

impl Stream {
    async fn run(mut self) {
        let end = self.run_inner().await;
        // Refusals not yet audited are not lost with the stream.
        if let (n @ 1.., Some(reason)) = (self.refused.count, self.refused.reason) {
            access::audit_refusals(&self.state, &self.ctx, self.device_id, reason, n).await;
        }
        match end {
            End::Store(e) => {
                if matches!(e, StoreError::Db(_) | StoreError::Migrate(_)) {
                    self.state.metrics.db_error("stream");
                }
                tracing::error!(device = %self.device_id, error = %e, "agent stream failed")
            }
            other => {
                tracing::debug!(device = %self.device_id, reason = ?other, "agent stream ended")
            }
        }
    }

    async fn run_inner(&mut self) -> End {
        // Subscribe before the first read so no change between read and loop is missed.
        let mut changes = self.state.bus.subscribe();
        let _ = self
            .state
            .store
            .touch_device(self.device_id, now_ms())
            .await;
        let hello = ServerMsg::Hello {
            protocol: PROTOCOL_VERSION,
            device_id: self.device_id,
            server_time_ms: now_ms(),
            key_expires_at_ms: self.key_expires_at_ms,
        };
        if let Err(e) = self.send(&hello).await {
            return e;
        }
        if let Err(e) = self.send_full().await {
            return e;
        }
        if let Err(e) = self.send_nat().await {
            return e;
        }
        let refresh = self
            .state
            .nat
            .as_ref()
            .map_or(Duration::from_secs(3600), |n| n.refresh_every());
        let mut nat_tick = tokio::time::interval_at(tokio::time::Instant::now() + refresh, refresh);
        let interval = self.state.ping_interval;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let mut last_heard = Instant::now();
        let mut bad_frames = 0u32;
        loop {
            tokio::select! {
                msg = self.socket.recv() => {
                    let msg = match msg {
                        Some(Ok(m)) => m,
                        Some(Err(_)) | None => return End::Closed,
                    };
                    last_heard = Instant::now();
                    let r = match msg {
                        Message::Text(t) => match serde_json::from_str::<ClientMsg>(t.as_str()) {
                            Ok(m) => self.on_client(m).await,
                            Err(e) => {
                                bad_frames += 1;
                                tracing::debug!(device = %self.device_id, error = %e, "unparsable frame from agent");
                                if bad_frames > MAX_BAD_FRAMES { Err(End::Protocol) } else { Ok(()) }
                            }
                        },
                        Message::Close(_) => Err(End::Closed),
                        // Pings are answered by the WebSocket layer; pongs only prove liveness.
                        _ => Ok(()),
                    };
                    if let Err(e) = r {
                        return e;
                    }
                }
                change = changes.recv() => {
                    let r = match change {
                        Ok(Change::Network { network_id, revision }) if network_id == self.network_id => {
                            if self.sent.as_ref().is_none_or(|v| revision > v.view.revision()) {
                                match self.send_update(revision).await {
                                    // A pending device that was just approved gets its token now.
                                    Ok(()) => self.send_nat().await,
                                    e => e,
                                }
                            } else {
                                Ok(())
                            }
                        }
                        Ok(Change::DeviceRevoked { device_id, reason }) if device_id == self.device_id => {
                            Err(self.revoke(&reason).await)
                        }
                        Ok(_) => Ok(()),
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(device = %self.device_id, missed = n, "stream lagged behind changes; catching up");
                            match self.state.store.get_network(self.network_id).await {
                                Ok(net) => self.send_update(net.revision).await,
                                Err(e) => Err(e.into()),
                            }
                        }
                        Err(RecvError::Closed) => Err(End::Closed),
                    };
                    if let Err(e) = r {
                        return e;
                    }
                }
                _ = nat_tick.tick() => {
                    self.nat_sent = false;
                    if let Err(e) = self.send_nat().await {
                        return e;
                    }
                }
                _ = ticker.tick() => {
                    if last_heard.elapsed() > interval * 3 {
                        return End::Dead;
                    }
                    if let Err(e) = self.send_frame(Message::Ping(Default::default())).await {
                        return e;
                    }
                }
            }
        }
    }

    async fn on_client(&mut self, m: ClientMsg) -> Result<(), End> {
        match m {
            ClientMsg::Hello {
                protocol,
                agent_version,
                have_version,
            } => {
                tracing::debug!(device = %self.device_id, %agent_version, ?have_version, "agent hello");
                if protocol != PROTOCOL_VERSION {
                    let _ = self
                        .socket
                        .send(Message::Close(Some(CloseFrame {
                            code: CLOSE_PROTOCOL,
                            reason: "unsupported protocol".into(),
                        })))
                        .await;
                    return Err(End::Protocol);
                }
                Ok(agents::hello(&self.state, self.device_id, &agent_version).await?)
            }
            ClientMsg::Endpoints { mut endpoints } => {
                endpoints.truncate(MAX_ENDPOINTS);
                agents::set_endpoints(
                    &self.state,
                    &self.ctx,
                    self.device_id,
                    self.network_id,
                    &endpoints,
                )
                .await?;
                Ok(())
            }
            ClientMsg::Health { .. } => Ok(agents::touch(&self.state, self.device_id).await?),
            ClientMsg::ReportKey { key } => {
                access::register_key(&self.state, &self.ctx, self.device_id, &key).await?;
                Ok(())
            }
            ClientMsg::Routes {
                advertise,
                exit_node,
            } => {
                // A refused set is logged and audited by the service; the stream goes on
                // (the agent keeps its tunnels, its routes just carry nothing).
                routes::advertise(
                    &self.state,
                    &self.ctx,
                    self.device_id,
                    self.network_id,
                    &advertise,
                    exit_node,
                )
                .await?;
                Ok(())
            }
            ClientMsg::SignedFlows { flows } => {
                let n = flows.len().min(zmesh_shared::wire::MAX_FLOWS_PER_BATCH);
                let intake = access::ingest(&self.state, self.device_id, &flows[..n]).await?;
                if let Some(reason) = intake.reason {
                    self.refuse(reason, intake.refused as u64).await;
                }
                Ok(())
            }
            // Unsigned reports (an agent from before the access log) are not evidence.
            ClientMsg::Flows { flows } => {
                self.refuse("unsigned", flows.len() as u64).await;
                Ok(())
            }
            ClientMsg::Resync => self.send_full().await,
            ClientMsg::Applied { version } => {
                // Only what this stream sent counts: an agent cannot claim a later map.
                let sent = self.sent.as_ref().map_or(0, |s| s.version);
                if version > self.acked && version <= sent {
                    self.acked = version;
                    tracing::trace!(device = %self.device_id, version, "agent applied map");
                    self.state
                        .rollouts
                        .ack(self.network_id, self.device_id, version);
                }
                Ok(())
            }
            ClientMsg::Ping { nonce } => self.send(&ServerMsg::Pong { nonce }).await,
        }
    }

    /// Counts refused flow records; audits the count when the last event of this
    /// stream is older than [`REFUSAL_AUDIT_EVERY`] (and at the first refusal).
    async fn refuse(&mut self, reason: &'static str, count: u64) {
        let r = &mut self.refused;
        r.count += count;
        r.reason = Some(reason);
        if r.last_audit
            .is_some_and(|t| t.elapsed() < REFUSAL_AUDIT_EVERY)
        {
            return;
        }
        r.last_audit = Some(Instant::now());
        let n = std::mem::take(&mut r.count);
        access::audit_refusals(&self.state, &self.ctx, self.device_id, reason, n).await;
    }

    /// STUN servers, relays and a fresh relay token, once per refresh period, and only
    /// while the device is active (pending devices have no peers to relay to; revoked
    /// ones have no stream).
    async fn send_nat(&mut self) -> Result<(), End> {
        if self.nat_sent {
            return Ok(());
        }
        let active = self
            .sent
            .as_ref()
            .is_some_and(|v| v.view.state_of(self.device_id) == Some(DeviceState::Active));
        let Some(nat) = self.state.nat.as_ref().filter(|_| active) else {
            return Ok(());
        };
        let msg = nat.message(
            &self.state.signing_key,
            self.network_id,
            self.device_id,
            self.public_key,
            now_ms(),
        );
        self.send(&msg).await?;
        self.nat_sent = true;
        tracing::debug!(device = %self.device_id, "sent NAT config and relay token");
        Ok(())
    }

    async fn send(&mut self, m: &ServerMsg) -> Result<(), End> {
        let text = serde_json::to_string(m).map_err(|_| End::Protocol)?;
        let len = text.len();
        self.send_frame(Message::Text(text.into())).await?;
        self.state.metrics.stream_sent(m, len);
        Ok(())
    }

    /// Sends one frame, giving the agent [`SEND_TIMEOUT`] to take it. A stream whose
    /// agent reads nothing is dropped rather than waited for: it holds at most one
    /// message and the view it was at, and its agent catches up with one full map when
    /// it reconnects. Changes meanwhile coalesce (the stream always moves to the latest
    /// view), so a slow agent costs no queue.
    async fn send_frame(&mut self, frame: Message) -> Result<(), End> {
        match tokio::time::timeout(SEND_TIMEOUT, self.socket.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::SendFailed),
            Err(_) => {
                tracing::info!(device = %self.device_id, "agent does not read its stream; dropping it");
                Err(End::Stuck)
            }
        }
    }

    /// The shared view of the network at `min_revision` or newer. (Borrows only the
    /// state: a `&self` held across an await would need the socket to be `Sync`.)
    async fn view(&mut self, min_revision: u64) -> Result<Arc<NetworkView>, End> {
        let state = &self.state;
        Ok(state
            .snapshots
            .view(&state.store, self.network_id, min_revision)
            .await?)
    }

    async fn send_full(&mut self) -> Result<(), End> {
        let net = self.state.store.get_network(self.network_id).await?;
        let view = self.view(net.revision).await?;
        let Some(map) = view.map(self.device_id) else {
            let reason = view.gone_reason(self.device_id);
            return Err(self.revoke(reason).await);
        };
        self.send(&ServerMsg::PeerMap {
            map: Signed::sign(&map, &self.state.signing_key),
        })
        .await?;
        self.sent = Some(Sent {
            view,
            version: map.version,
        });
        Ok(())
    }

    async fn send_update(&mut self, revision: u64) -> Result<(), End> {
        let view = self.view(revision).await?;
        let Some(sent) = &self.sent else {
            return self.send_full().await;
        };
        if Arc::ptr_eq(&sent.view, &view) {
            return Ok(());
        }
        match view.step(&sent.view, self.device_id, sent.version) {
            Step::Same => {
                // the agent's map is also the new view's map, at its old version
                let version = sent.version;
                self.sent = Some(Sent { view, version });
            }
            Step::Delta(delta) => {
                self.send(&ServerMsg::PeerDelta {
                    delta: Signed::sign(&*delta, &self.state.signing_key),
                })
                .await?;
                self.sent = Some(Sent {
                    view,
                    version: delta.version,
                });
            }
            Step::Gone(reason) => return Err(self.revoke(reason).await),
        }
        Ok(())
    }

    async fn revoke(&mut self, reason: &str) -> End {
        tracing::info!(device = %self.device_id, reason, "closing stream of revoked device");
        let _ = self
            .send(&ServerMsg::Revoked {
                reason: reason.to_string(),
            })
            .await;
        let _ = self
            .send_frame(Message::Close(Some(CloseFrame {
                code: CLOSE_REVOKED,
                reason: reason.to_string().into(),
            })))
            .await;
        // Finish the close handshake: read (and drop) what the agent sent meanwhile until
        // its Close, for at most 2 s. Dropping a socket with unread data makes the kernel
        // reset it, and a reset destroys the Revoked frame before the agent reads it.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(m)) = self.socket.recv().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
        End::Revoked
    }
}
