//! The agent process (`zmesh daemon`): owns the state dir, the data plane and the
//! control stream, and answers the CLI on the control socket. Tunnels come up at
//! start from the signed cache when the device is enrolled and was not taken down,
//! so a restart while the console is unreachable keeps the mesh working.

mod login;
mod metrics;
mod metrics_http;
mod status;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;
use zmesh_shared::enroll_key::EnrollKey;
use zmesh_shared::wire::EnrollResponse;
use zmesh_shared::{CertFingerprint, Secret};

use crate::config::DaemonConfig;
use crate::control::enroll::{enroll, EnrollParams};
use crate::control::map::MapState;
use crate::control::tls::Trust;
use crate::control::{self, ControlCtx, ControlEvent, Shared};
use crate::io::netcfg::NetCfg;
use crate::io::{DataPlane, DataPlaneConfig};
use crate::ipc::{self, NamedRelay, NatInfo, PeerPath, PingResult, Reply, Request, Response};
use crate::prefs::{check_routes, RouteFlags};
use crate::statedir::{Enrollment, StateDir, StateError};

/// Tunnels plus the control stream feeding them.
struct Running {
    dp: DataPlane,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    relay_task: JoinHandle<()>,
    /// The resolver and the host's DNS configuration (none if it could not start).
    dns_task: Option<JoinHandle<()>>,
    nat: watch::Receiver<Option<crate::control::nat::NatSettings>>,
    /// Tells the stream task the route preferences changed.
    routes_tx: watch::Sender<u64>,
}

pub struct Daemon {
    cfg: DaemonConfig,
    state: StateDir,
    running: Mutex<Option<Running>>,
    events: mpsc::UnboundedSender<ControlEvent>,
    /// The enrollment by login that `up` started and `login_wait` finishes.
    login: Mutex<Option<login::LoginInProgress>>,
}

#[derive(Debug, thiserror::Error)]
enum UpError {
    #[error(
        "not enrolled: run `zmesh up --console URL --fingerprint SHA256` and sign in, \
         or `zmesh up --console URL --enroll-key KEY`"
    )]
    NotEnrolled,
    #[error(
        "--fingerprint does not match the certificate pin in the enrollment key; \
         leave it out (the key's pin is used)"
    )]
    PinMismatch,
    #[error("--console is required to enroll")]
    NoConsole,
    #[error("this device was revoked by the console; run `zmesh logout` and enroll again")]
    Revoked,
    #[error(
        "this device's key expired: run `zmesh up --reauth` and sign in again (a device \
         enrolled with a key comes back by itself once an admin renews its expiry)"
    )]
    Expired,
    #[error("--reauth signs in again with this device's enrollment: leave out --enroll-key")]
    ReauthWithKey,
    #[error("enrollment key: {0}")]
    Key(#[from] zmesh_shared::enroll_key::EnrollKeyError),
}

fn ok(message: impl Into<String>) -> Response {
    Response::Ok {
        result: Reply::Done {
            message: message.into(),
        },
    }
}

fn err(e: impl std::fmt::Display) -> Response {
    Response::Error {
        message: e.to_string(),
    }
}

impl Daemon {
    async fn handle(self: &Arc<Self>, req: Request) -> Response {
        tracing::debug!(request = ?req, "control request");
        match req {
            Request::Up {
                console,
                enroll_key,
                name,
                ca_pem,
                fingerprint,
                reauth,
                routes,
            } => match if reauth {
                if enroll_key.is_some() {
                    Err(UpError::ReauthWithKey.into())
                } else {
                    self.reauth_start().await
                }
            } else {
                self.up(console, enroll_key, name, ca_pem, fingerprint, routes)
                    .await
            } {
                Ok(result) => Response::Ok { result },
                Err(e) => err(format!("{e:#}")),
            },
            Request::LoginWait => match self.login_wait().await {
                Ok(m) => ok(m),
                Err(e) => err(format!("{e:#}")),
            },
            Request::Down => {
                let had = self.stop_tunnels().await;
                if let Err(e) = self.update_enrollment(|e| e.down = true) {
                    return err(e);
                }
                ok(if had {
                    "tunnels down"
                } else {
                    "tunnels were already down"
                })
            }
            Request::Logout => {
                self.stop_tunnels().await;
                match self.state.forget() {
                    Ok(()) => ok("logged out: key, enrollment and peer cache removed"),
                    Err(e) => err(e),
                }
            }
            Request::Status => Response::Ok {
                result: Reply::Status(Box::new(self.status().await)),
            },
            Request::Metrics { openmetrics } => Response::Ok {
                result: Reply::Metrics {
                    text: self.metrics_text(openmetrics).await.0,
                },
            },
            Request::Nat => match self.nat_info().await {
                Ok(n) => Response::Ok {
                    result: Reply::Nat(n),
                },
                Err(e) => err(format!("{e:#}")),
            },
            Request::Ping { peer, timeout_ms } => match self.ping(&peer, timeout_ms).await {
                Ok(p) => Response::Ok {
                    result: Reply::Pong(p),
                },
                Err(e) => err(format!("{e:#}")),
            },
            Request::DebugWake => {
                let g = self.running.lock().await;
                match g.as_ref().map(|r| r.dp.simulate_wake()) {
                    Some(Ok(())) => Response::Ok {
                        result: Reply::Done {
                            message: "the data plane behaves as after a wake from sleep".into(),
                        },
                    },
                    Some(Err(e)) => err(format!("{e:#}")),
                    None => err("tunnels are down: run `zmesh up`"),
                }
            }
        }
    }

    fn update_enrollment(&self, f: impl FnOnce(&mut Enrollment)) -> Result<(), StateError> {
        if let Some(mut e) = self.state.load_enrollment()? {
            f(&mut e);
            self.state.save_enrollment(&e)?;
        }
        Ok(())
    }

    async fn up(
        self: &Arc<Self>,
        console: Option<String>,
        enroll_key: Option<Secret>,
        name: Option<String>,
        ca_pem: Option<String>,
        fingerprint: Option<CertFingerprint>,
        routes: RouteFlags,
    ) -> anyhow::Result<Reply> {
        let mut running = self.running.lock().await;
        let existing = self.state.load_enrollment()?;
        let (enr, note) = match (existing, enroll_key) {
            (None, None) => {
                // Enrollment by login: the user signs in; `login_wait` finishes it.
                drop(running);
                let console = console.ok_or(UpError::NotEnrolled)?;
                return self.login_start(console, name, ca_pem, fingerprint).await;
            }
            (None, Some(key)) => {
                let console = console.ok_or(UpError::NoConsole)?;
                let key: EnrollKey = key.expose().parse().map_err(UpError::Key)?;
                if fingerprint.is_some_and(|f| Some(f) != key.pin) {
                    return Err(UpError::PinMismatch.into());
                }
                let trust = Trust::from_parts(key.pin, ca_pem.as_deref())?;
                let private = self.state.load_or_create_private_key()?;
                let resp = enroll(EnrollParams {
                    console: &console,
                    trust: &trust,
                    secret: &key.secret,
                    public_key: private.public_key(),
                    name,
                })
                .await?;
                self.save_new_enrollment(&console, key.pin, ca_pem, resp)?
            }
            (Some(e), _) if e.revoked => return Err(UpError::Revoked.into()),
            (Some(e), _) if e.expired && running.is_some() => return Err(UpError::Expired.into()),
            (Some(e), _) if e.expired => (
                e,
                " (its key had expired: if it still has, sign in again with `zmesh up --reauth`)",
            ),
            (Some(e), key) => (
                e,
                if key.is_some() {
                    " (already enrolled; enrollment key not used)"
                } else {
                    ""
                },
            ),
        };
        let enr = self.apply_route_flags(enr, &routes, running.as_ref())?;
        let message = self.bring_up(&mut running, enr, note).await?;
        Ok(Reply::Done { message })
    }

    /// Checks and saves `up`'s route flags; a running stream re-advertises and
    /// re-applies at once. Bad flags change nothing.
    fn apply_route_flags(
        &self,
        mut enr: Enrollment,
        flags: &RouteFlags,
        running: Option<&Running>,
    ) -> anyhow::Result<Enrollment> {
        if *flags == RouteFlags::default() {
            return Ok(enr);
        }
        let prefs = enr.routes.merged(flags);
        check_routes(
            &prefs.advertise_routes,
            &[enr.network_v4.into(), enr.network_v6.into()],
        )?;
        if let Some(name) = flags.exit_node.as_deref().filter(|n| !n.trim().is_empty()) {
            let map = running.and_then(|r| r.shared.map()).or_else(|| {
                self.state
                    .load_cache(&enr.signing_key)
                    .ok()
                    .flatten()
                    .map(|(_, m)| m)
            });
            let map = map.ok_or_else(|| {
                anyhow::anyhow!(
                    "no peer map yet: bring the device up first, then choose an exit node"
                )
            })?;
            crate::control::routes::find_exit(&map, name.trim())?;
        }
        if prefs != enr.routes {
            enr.routes = prefs.clone();
            self.state.save_enrollment(&enr)?;
            if let Some(r) = running {
                r.shared.set_route_prefs(prefs);
                r.routes_tx.send_modify(|n| *n += 1);
            }
        }
        Ok(enr)
    }

    /// Saves what the console answered an enrollment (by key or by login) as this
    /// device's enrollment; returns it with a note for the user.
    fn save_new_enrollment(
        &self,
        console: &str,
        pin: Option<CertFingerprint>,
        ca_pem: Option<String>,
        resp: EnrollResponse,
    ) -> anyhow::Result<(Enrollment, &'static str)> {
        tracing::info!(device_id = %resp.device_id, name = %resp.name, overlay_v4 = %resp.overlay_v4, state = resp.state.as_str(), "enrolled");
        let e = Enrollment {
            routes: Default::default(),
            console: console.trim().trim_end_matches('/').to_string(),
            pin,
            ca_pem,
            device_id: resp.device_id,
            network_id: resp.network_id,
            name: resp.name.clone(),
            credential: resp.credential.clone(),
            overlay_v4: resp.overlay_v4,
            overlay_v6: resp.overlay_v6,
            network_v4: resp.network_v4,
            network_v6: resp.network_v6,
            signing_key: resp.signing_key,
            revoked: false,
            down: false,
            expired: false,
        };
        self.state.save_enrollment(&e)?;
        let pending = resp.state == zmesh_shared::wire::DeviceState::Pending;
        Ok((
            e,
            if pending {
                " (pending approval: no peers until an admin approves)"
            } else {
                ""
            },
        ))
    }

    /// Clears a `down` mark and starts the tunnels unless they run; the user's message.
    async fn bring_up(
        self: &Arc<Self>,
        running: &mut Option<Running>,
        mut enr: Enrollment,
        note: &str,
    ) -> anyhow::Result<String> {
        if enr.down {
            enr.down = false;
            self.state.save_enrollment(&enr)?;
        }
        if running.is_some() {
            return Ok(format!(
                "{} ({}) is already up{note}",
                enr.name, enr.overlay_v4
            ));
        }
        *running = Some(self.start_tunnels(enr.clone()).await?);
        Ok(format!(
            "{} ({}, {}) is up{note}",
            enr.name, enr.overlay_v4, enr.overlay_v6
        ))
    }

    /// Starts the data plane, restores the cached map, and spawns the control stream.
    async fn start_tunnels(self: &Arc<Self>, enr: Enrollment) -> anyhow::Result<Running> {
        let private_key = self.state.load_private_key()?.ok_or_else(|| {
            anyhow::anyhow!(
                "enrolled but {} is missing",
                self.state.path("private.key").display()
            )
        })?;
        let dp = DataPlane::start(DataPlaneConfig {
            tun_name: self.cfg.tun_name.clone(),
            private_key: private_key.clone(),
            overlay_v4: enr.overlay_v4,
            overlay_v6: enr.overlay_v6,
            network_v4: enr.network_v4,
            network_v6: enr.network_v6,
            listen_port: self.cfg.listen_port,
            mtu: self.cfg.mtu,
        })
        .await?;
        tracing::info!(tun = %self.cfg.tun_name, udp = %dp.local_addr(), "data plane started");
        let mut st = MapState::new(enr.signing_key, enr.device_id);
        let shared = Shared::new(None);
        let keep: Vec<std::net::IpAddr> = crate::control::nat::console_ip(&enr.console)
            .await
            .into_iter()
            .collect();
        shared.init_routing(
            enr.routes.clone(),
            keep,
            NetCfg::new(&self.cfg.tun_name, self.state.root()),
        );
        match self.state.load_cache(&enr.signing_key) {
            Ok(Some((cache, map))) => {
                tracing::info!(
                    version = map.version,
                    peers = map.peers.len(),
                    "restoring peers from the signed cache"
                );
                control::apply_map(&dp, &shared, &map).await;
                st = st.with_cache(cache, map);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "refusing the peer map cache; waiting for the console")
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        let cached_nat = self.cached_nat(&enr, &dp).await;
        if let Some(s) = &cached_nat {
            shared.keep_off_tunnel(
                s.stun
                    .iter()
                    .map(|a| a.ip())
                    .chain(s.relays.iter().map(|r| r.addr.ip())),
            );
        }
        let (nat_tx, nat_rx) = watch::channel(cached_nat);
        let (routes_tx, routes_changed) = watch::channel(0u64);
        let relay_task = tokio::spawn(
            crate::control::nat::RelayTask {
                enrollment: enr.clone(),
                key: private_key,
                dp: dp.clone(),
                shared: shared.clone(),
                settings: nat_rx.clone(),
                stop: stop_rx.clone(),
            }
            .run(),
        );
        let ctx = ControlCtx {
            enrollment: enr.clone(),
            state: self.state.clone(),
            dp: dp.clone(),
            tun_name: self.cfg.tun_name.clone(),
            shared: shared.clone(),
            events: self.events.clone(),
            nat: nat_tx,
            reporter: Arc::new(std::sync::Mutex::new(control::Reporter::new(
                self.state.load_or_create_report_key()?,
                enr.device_id,
                zmesh_shared::time::now_ms(),
            ))),
            routes_changed,
        };
        let dns_task = match crate::dns::start(crate::dns::DnsParams {
            tun: self.cfg.tun_name.clone(),
            network_v4: enr.network_v4,
            host_dns: self.cfg.host_dns,
            state_dir: self.cfg.state_dir.clone(),
            names: shared.names(),
            stop: stop_rx.clone(),
        })
        .await
        {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "resolver not started: zmesh names will not resolve");
                None
            }
        };
        let task = tokio::spawn(control::run(ctx, st, stop_rx));
        Ok(Running {
            dp,
            shared,
            stop,
            task,
            relay_task,
            dns_task,
            nat: nat_rx,
            routes_tx,
        })
    }

    /// The NAT settings the console sent last time, applied before the console answers
    /// (or while it is down), so relayed peers come back after a restart too.
    async fn cached_nat(
        &self,
        enr: &Enrollment,
        dp: &DataPlane,
    ) -> Option<crate::control::nat::NatSettings> {
        let c = match self.state.load_nat() {
            Ok(c) => c?,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the NAT settings cache");
                return None;
            }
        };
        let console = crate::control::nat::console_addr(&enr.console).await;
        let s = crate::control::nat::settings(&c.stun, &c.relays, c.relay_token, console);
        tracing::info!(
            stun = s.stun.len(),
            relays = s.relays.len(),
            "NAT settings from the cache"
        );
        if let Err(e) = dp.set_stun_servers(s.stun.clone()) {
            tracing::warn!(error = %e, "cannot set STUN servers");
        }
        Some(s)
    }

    /// STUN servers and relays as the daemon uses them (for `zmesh netcheck`).
    async fn nat_info(&self) -> anyhow::Result<NatInfo> {
        let running = self.running.lock().await;
        let r = running.as_ref().ok_or_else(|| {
            anyhow::anyhow!("tunnels are down: run `zmesh up` first, or pass --stun")
        })?;
        let s = r.nat.borrow().clone().ok_or_else(|| {
            anyhow::anyhow!("the console has not sent its STUN servers yet; pass --stun")
        })?;
        Ok(NatInfo {
            stun: s.stun,
            relays: s
                .relays
                .into_iter()
                .map(|r| NamedRelay {
                    name: r.name,
                    addr: r.addr,
                })
                .collect(),
        })
    }

    /// Stops the stream and removes the tunnels; false if nothing was running.
    async fn stop_tunnels(&self) -> bool {
        let Some(r) = self.running.lock().await.take() else {
            return false;
        };
        Self::shutdown(r).await;
        restore_host_dns(&self.state);
        true
    }

    /// Stops the stream, the relay task and the resolver and removes the tunnels.
    async fn shutdown(r: Running) {
        let _ = r.stop.send(true);
        r.shared.teardown_host();
        for task in [r.task, r.relay_task].into_iter().chain(r.dns_task) {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        if let Err(e) = r.dp.shutdown().await {
            tracing::error!(error = %e, "data plane shutdown failed");
        }
        tracing::info!("tunnels down");
    }

    /// Remembers (for `zmesh status` and `zmesh up`) whether the key has expired.
    fn mark_expired(&self, expired: bool) {
        let r = match self.state.load_enrollment() {
            Ok(Some(mut e)) if e.expired != expired => {
                e.expired = expired;
                self.state.save_enrollment(&e)
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot record the key expiry in the enrollment");
        }
    }

    async fn on_revoked(&self, reason: String) {
        tracing::warn!(%reason, "device revoked: removing tunnels, not reconnecting");
        self.stop_tunnels().await;
        if let Err(e) = self.update_enrollment(|e| e.revoked = true) {
            tracing::error!(error = %e, "cannot mark the enrollment revoked");
        }
        // The cached map describes a mesh this device is no longer part of.
        let _ = std::fs::remove_file(self.state.path(crate::statedir::PEERMAP_FILE));
        let _ = std::fs::remove_file(self.state.path(crate::statedir::NAT_FILE));
    }

    async fn ping(&self, peer: &str, timeout_ms: u64) -> anyhow::Result<PingResult> {
        let (dp, map, relay) = {
            let g = self.running.lock().await;
            let r = g
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("tunnels are down: run `zmesh up`"))?;
            (r.dp.clone(), r.shared.map(), r.shared.relay())
        };
        let found = map.as_ref().and_then(|m| {
            m.peers.iter().find(|p| {
                p.name.eq_ignore_ascii_case(peer)
                    || peer.parse::<IpAddr>().is_ok_and(|ip| {
                        ip == IpAddr::V4(p.overlay_v4) || ip == IpAddr::V6(p.overlay_v6)
                    })
            })
        });
        let (ip, name, dev) = match (found, peer.parse::<IpAddr>()) {
            (Some(p), Ok(ip)) => (ip, p.name.clone(), Some(p.device_id)),
            (Some(p), Err(_)) => (IpAddr::V4(p.overlay_v4), p.name.clone(), Some(p.device_id)),
            (None, Ok(ip)) => (ip, ip.to_string(), None),
            (None, Err(_)) => anyhow::bail!("no peer named {peer:?} in the peer map"),
        };
        let timeout = Duration::from_millis(timeout_ms.clamp(100, 60_000));
        let rtt = dp.ping(ip, timeout).await?;
        let stats = dp.peer_stats().await;
        let st = stats.iter().find(|s| Some(s.device_id) == dev);
        Ok(PingResult {
            peer: name,
            ip,
            rtt_us: rtt.as_micros() as u64,
            path: st.map_or(PeerPath::Unknown, |s| PeerPath::from(s.path)),
            endpoint: st.and_then(|s| s.endpoint),
            via: st.and_then(|s| match s.path {
                crate::core::PathKind::Relay => Some(relay.unwrap_or_else(|| "relay".into())),
                _ => s.endpoint.map(|e| e.to_string()),
            }),
            path_rtt_ms: st.and_then(|s| s.rtt).map(|d| d.as_secs_f64() * 1000.0),
            path_since: st.and_then(|s| s.path_changed).map(status::rfc3339_ms),
        })
    }
}

/// Puts back the resolv.conf the resolver replaced, if it did.
fn restore_host_dns(state: &StateDir) {
    if let Err(e) = crate::dns::host::restore(state.root()) {
        tracing::error!(error = %e, "cannot restore the original resolver configuration");
    }
}

/// Runs the daemon until SIGINT/SIGTERM.
pub async fn run(cfg: DaemonConfig) -> anyhow::Result<()> {
    let state = StateDir::new(&cfg.state_dir);
    state.ensure()?;
    // A daemon that died (crash, kill -9) may have left routing rules, NAT or changed
    // forwarding settings behind: put the host back before anything else.
    NetCfg::cleanup_stale(state.root());
    // a crash left the host pointed at a resolver that is gone: undo that first
    restore_host_dns(&state);
    let listener = ipc::bind(&state.socket_path())?;
    tracing::info!(socket = %state.socket_path().display(), tun = %cfg.tun_name, "zmesh daemon listening");
    let metrics_listener = match cfg.metrics_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("binding the metrics endpoint to {addr}: {e}"))?;
            tracing::info!(addr = %l.local_addr()?, "metrics on http://{}/metrics", l.local_addr()?);
            Some(l)
        }
        None => None,
    };
    let (events, mut events_rx) = mpsc::unbounded_channel();
    let d = Arc::new(Daemon {
        cfg,
        state: state.clone(),
        running: Mutex::new(None),
        events,
        login: Mutex::new(None),
    });

    match state.load_enrollment() {
        Ok(Some(e)) if !e.revoked && !e.down => {
            let mut g = d.running.lock().await;
            match d.start_tunnels(e).await {
                Ok(r) => *g = Some(r),
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "cannot bring tunnels up at start")
                }
            }
        }
        Ok(Some(e)) => tracing::info!(
            revoked = e.revoked,
            down = e.down,
            expired = e.expired,
            "enrolled; tunnels stay down"
        ),
        Ok(None) => tracing::info!("not enrolled yet; waiting for `zmesh up`"),
        Err(e) => tracing::error!(error = %e, "cannot read the enrollment"),
    }

    let de = d.clone();
    tokio::spawn(async move {
        while let Some(ev) = events_rx.recv().await {
            match ev {
                ControlEvent::Revoked { reason } => de.on_revoked(reason).await,
                ControlEvent::Expired => de.mark_expired(true),
                ControlEvent::Renewed => de.mark_expired(false),
            }
        }
    });

    let metrics_task = metrics_listener.map(|l| tokio::spawn(metrics_http::serve(l, d.clone())));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            acc = listener.accept() => {
                let (stream, _) = match acc {
                    Ok(a) => a,
                    Err(e) => { tracing::warn!(error = %e, "control socket accept failed"); continue; }
                };
                let d = d.clone();
                tokio::spawn(async move {
                    if let Err(e) = ipc::serve_conn(stream, |req| { let d = d.clone(); async move { d.handle(req).await } }).await {
                        tracing::debug!(error = %e, "control connection ended");
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    tracing::info!("shutting down");
    if let Some(t) = metrics_task {
        t.abort();
    }
    d.stop_tunnels().await;
    let _ = std::fs::remove_file(state.socket_path());
    Ok(())
}
