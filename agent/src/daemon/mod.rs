//! The agent process (`zmesh daemon`): owns the state dir, the data planes and the
//! control streams, and answers the CLI on the control socket. Each profile (one
//! enrollment, see [`profiles`]) has its own data plane, stream, relay client and
//! resolver; tunnels come up at start from the signed cache for every profile that is
//! enrolled and was not taken down, so a restart while a console is unreachable keeps
//! the mesh working. Which profiles may run together is [`supervise`]'s job.

mod login;
mod metrics;
mod metrics_http;
pub mod profiles;
mod status;
mod supervise;

use std::collections::BTreeMap;
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

/// One profile's tunnels plus the control stream feeding them.
struct Running {
    /// The enrollment it was started with (ranges, routes).
    enr: Enrollment,
    /// The other networks' prefixes last given to the data plane.
    crossnet: crate::core::CrossNet,
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

/// A profile as the daemon keeps it.
#[derive(Default)]
struct Slot {
    running: Option<Running>,
    /// Why it does not run, for `status` (refused or held, see `profiles::plan`).
    blocked: Option<supervise::Blocked>,
    /// What it was admitted with, to notice when its map changes that.
    admitted: Option<supervise::Admitted>,
}

/// Every profile the daemon has dealt with, by name.
type Profiles = BTreeMap<String, Slot>;

/// Where a profile's files and devices are.
#[derive(Debug, Clone)]
struct Prof {
    name: String,
    state: StateDir,
    tun: String,
}

pub struct Daemon {
    cfg: DaemonConfig,
    /// The state directory (the `default` profile's; others under `profiles/`).
    state: StateDir,
    profiles: Mutex<Profiles>,
    events: mpsc::UnboundedSender<(String, ControlEvent)>,
    /// Wakes the supervisor (a map changed, a profile went down).
    recheck: Arc<tokio::sync::Notify>,
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
    #[error("no profile named {0:?} is enrolled (see `zmesh status`)")]
    NoProfile(String),
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
    /// Where profile `name` (validated) keeps its files and which TUN it uses.
    fn prof(&self, name: &str) -> Prof {
        Prof {
            name: name.to_string(),
            state: profiles::state_dir(&self.state, name),
            tun: profiles::tun_name(&self.cfg.tun_name, name),
        }
    }

    /// The profile a request names, validated.
    fn prof_arg(&self, name: Option<&str>) -> anyhow::Result<Prof> {
        Ok(self.prof(&profiles::resolve(name)?))
    }

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
                profile,
            } => {
                let r = async {
                    let p = self.prof_arg(profile.as_deref())?;
                    if reauth {
                        if enroll_key.is_some() {
                            return Err(UpError::ReauthWithKey.into());
                        }
                        self.reauth_start(&p).await
                    } else {
                        self.up(&p, console, enroll_key, name, ca_pem, fingerprint, routes)
                            .await
                    }
                }
                .await;
                match r {
                    Ok(result) => Response::Ok { result },
                    Err(e) => err(format!("{e:#}")),
                }
            }
            Request::LoginWait => match self.login_wait().await {
                Ok(m) => ok(m),
                Err(e) => err(format!("{e:#}")),
            },
            Request::Down { profile } => match self.down(profile.as_deref()).await {
                Ok(m) => ok(m),
                Err(e) => err(format!("{e:#}")),
            },
            Request::Logout { profile } => {
                let p = match self.prof_arg(profile.as_deref()) {
                    Ok(p) => p,
                    Err(e) => return err(format!("{e:#}")),
                };
                self.stop_tunnels(&p.name).await;
                let r = p.state.forget();
                if p.name != profiles::DEFAULT && r.is_ok() {
                    let _ = std::fs::remove_dir_all(p.state.root());
                }
                self.profiles.lock().await.remove(&p.name);
                self.recheck.notify_one();
                match r {
                    Ok(()) if p.name == profiles::DEFAULT => {
                        ok("logged out: key, enrollment and peer cache removed")
                    }
                    Ok(()) => ok(format!(
                        "profile {}: logged out: key, enrollment and peer cache removed",
                        p.name
                    )),
                    Err(e) => err(e),
                }
            }
            Request::Status { profile } => match self.status_reply(profile.as_deref()).await {
                Ok(s) => Response::Ok {
                    result: Reply::Status(Box::new(s)),
                },
                Err(e) => err(format!("{e:#}")),
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
            Request::Ping {
                peer,
                timeout_ms,
                profile,
            } => match self.ping(profile.as_deref(), &peer, timeout_ms).await {
                Ok(p) => Response::Ok {
                    result: Reply::Pong(p),
                },
                Err(e) => err(format!("{e:#}")),
            },
            Request::DebugWake => {
                let g = self.profiles.lock().await;
                let mut n = 0;
                for r in g.values().filter_map(|s| s.running.as_ref()) {
                    if let Err(e) = r.dp.simulate_wake() {
                        return err(format!("{e:#}"));
                    }
                    n += 1;
                }
                if n == 0 {
                    err("tunnels are down: run `zmesh up`")
                } else {
                    ok("the data plane behaves as after a wake from sleep")
                }
            }
        }
    }

    /// `zmesh down [--profile NAME]`: stops the tunnels and remembers it.
    async fn down(&self, profile: Option<&str>) -> anyhow::Result<String> {
        let p = self.prof_arg(profile)?;
        let had = self.stop_tunnels(&p.name).await;
        let enrolled = p.state.load_enrollment()?.is_some();
        self.update_enrollment(&p, |e| e.down = true)?;
        if let Some(s) = self.profiles.lock().await.get_mut(&p.name) {
            s.blocked = None;
        }
        // held profiles may come back now
        self.recheck.notify_one();
        if !enrolled && p.name != profiles::DEFAULT {
            return Err(UpError::NoProfile(p.name).into());
        }
        let what = if p.name == profiles::DEFAULT {
            "tunnels".to_string()
        } else {
            format!("profile {}: tunnels", p.name)
        };
        Ok(if had {
            format!("{what} down")
        } else {
            format!("{what} were already down")
        })
    }

    fn update_enrollment(
        &self,
        p: &Prof,
        f: impl FnOnce(&mut Enrollment),
    ) -> Result<(), StateError> {
        if let Some(mut e) = p.state.load_enrollment()? {
            f(&mut e);
            p.state.save_enrollment(&e)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn up(
        self: &Arc<Self>,
        p: &Prof,
        console: Option<String>,
        enroll_key: Option<Secret>,
        name: Option<String>,
        ca_pem: Option<String>,
        fingerprint: Option<CertFingerprint>,
        routes: RouteFlags,
    ) -> anyhow::Result<Reply> {
        let mut g = self.profiles.lock().await;
        let existing = p.state.load_enrollment()?;
        let running = g.get(&p.name).is_some_and(|s| s.running.is_some());
        let (enr, note) = match (existing, enroll_key) {
            (None, None) => {
                // Enrollment by login: the user signs in; `login_wait` finishes it.
                drop(g);
                let console = console.ok_or(UpError::NotEnrolled)?;
                return self
                    .login_start(p, console, name, ca_pem, fingerprint)
                    .await;
            }
            (None, Some(key)) => {
                let console = console.ok_or(UpError::NoConsole)?;
                let key: EnrollKey = key.expose().parse().map_err(UpError::Key)?;
                if fingerprint.is_some_and(|f| Some(f) != key.pin) {
                    return Err(UpError::PinMismatch.into());
                }
                let trust = Trust::from_parts(key.pin, ca_pem.as_deref())?;
                let private = p.state.load_or_create_private_key()?;
                let resp = enroll(EnrollParams {
                    console: &console,
                    trust: &trust,
                    secret: &key.secret,
                    public_key: private.public_key(),
                    name,
                })
                .await?;
                self.save_new_enrollment(p, &console, key.pin, ca_pem, resp)?
            }
            (Some(e), _) if e.revoked => return Err(UpError::Revoked.into()),
            (Some(e), _) if e.expired && running => return Err(UpError::Expired.into()),
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
        let run = g.get(&p.name).and_then(|s| s.running.as_ref());
        let enr = self.apply_route_flags(p, enr, &routes, run)?;
        let message = self.bring_up(&mut g, p, enr, note).await?;
        Ok(Reply::Done { message })
    }

    /// Checks and saves `up`'s route flags; a running stream re-advertises and
    /// re-applies at once. Bad flags change nothing.
    fn apply_route_flags(
        &self,
        p: &Prof,
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
                p.state
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
            p.state.save_enrollment(&enr)?;
            if let Some(r) = running {
                r.shared.set_route_prefs(prefs);
                r.routes_tx.send_modify(|n| *n += 1);
            }
        }
        Ok(enr)
    }

    /// Saves what the console answered an enrollment (by key or by login) as the
    /// profile's enrollment; returns it with a note for the user.
    fn save_new_enrollment(
        &self,
        p: &Prof,
        console: &str,
        pin: Option<CertFingerprint>,
        ca_pem: Option<String>,
        resp: EnrollResponse,
    ) -> anyhow::Result<(Enrollment, &'static str)> {
        tracing::info!(profile = %p.name, device_id = %resp.device_id, name = %resp.name, overlay_v4 = %resp.overlay_v4, state = resp.state.as_str(), "enrolled");
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
        p.state.save_enrollment(&e)?;
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

    /// Clears a `down` mark and starts the profile's tunnels unless they run or the
    /// other profiles forbid it (overlapping ranges, an exclusive network: then the
    /// profile stays enrolled but down, and the error says why); the user's message.
    async fn bring_up(
        self: &Arc<Self>,
        g: &mut Profiles,
        p: &Prof,
        mut enr: Enrollment,
        note: &str,
    ) -> anyhow::Result<String> {
        let tag = if p.name == profiles::DEFAULT {
            String::new()
        } else {
            format!("profile {}: ", p.name)
        };
        if g.get(&p.name).is_some_and(|s| s.running.is_some()) {
            if enr.down {
                enr.down = false;
                p.state.save_enrollment(&enr)?;
            }
            return Ok(format!(
                "{tag}{} ({}) is already up{note}",
                enr.name, enr.overlay_v4
            ));
        }
        if let Err(reason) = self.admit(g, p, &enr).await {
            if !enr.down {
                enr.down = true;
                p.state.save_enrollment(&enr)?;
            }
            anyhow::bail!("{reason}");
        }
        if enr.down {
            enr.down = false;
            p.state.save_enrollment(&enr)?;
        }
        let r = self.start_tunnels(p, enr.clone()).await?;
        let slot = g.entry(p.name.clone()).or_default();
        slot.admitted = Some(supervise::Admitted::of(&r));
        slot.running = Some(r);
        slot.blocked = None;
        self.update_crossnet(g);
        Ok(format!(
            "{tag}{} ({}, {}) is up{note}",
            enr.name, enr.overlay_v4, enr.overlay_v6
        ))
    }

    /// Starts the data plane, restores the cached map, and spawns the control stream.
    async fn start_tunnels(self: &Arc<Self>, p: &Prof, enr: Enrollment) -> anyhow::Result<Running> {
        let private_key = p.state.load_private_key()?.ok_or_else(|| {
            anyhow::anyhow!(
                "enrolled but {} is missing",
                p.state.path("private.key").display()
            )
        })?;
        let default = p.name == profiles::DEFAULT;
        let dp = DataPlane::start(DataPlaneConfig {
            tun_name: p.tun.clone(),
            private_key: private_key.clone(),
            overlay_v4: enr.overlay_v4,
            overlay_v6: enr.overlay_v6,
            network_v4: enr.network_v4,
            network_v6: enr.network_v6,
            // the other profiles take an ephemeral port
            listen_port: if default { self.cfg.listen_port } else { 0 },
            mtu: self.cfg.mtu,
        })
        .await?;
        tracing::info!(profile = %p.name, tun = %p.tun, udp = %dp.local_addr(), "data plane started");
        let mut st = MapState::new(enr.signing_key, enr.device_id);
        let shared = Shared::new(None);
        let keep: Vec<std::net::IpAddr> = crate::control::nat::console_ip(&enr.console)
            .await
            .into_iter()
            .collect();
        shared.init_routing(
            enr.routes.clone(),
            keep,
            NetCfg::new(&p.tun, p.state.root()),
        );
        match p.state.load_cache(&enr.signing_key) {
            Ok(Some((cache, map))) => {
                tracing::info!(
                    profile = %p.name,
                    version = map.version,
                    peers = map.peers.len(),
                    "restoring peers from the signed cache"
                );
                control::apply_map(&dp, &shared, &map).await;
                st = st.with_cache(cache, map);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(profile = %p.name, error = %e, "refusing the peer map cache; waiting for the console")
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        let cached_nat = self.cached_nat(p, &enr, &dp).await;
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
            state: p.state.clone(),
            dp: dp.clone(),
            tun_name: p.tun.clone(),
            shared: shared.clone(),
            events: self.profile_events(&p.name, &shared),
            nat: nat_tx,
            reporter: Arc::new(std::sync::Mutex::new(control::Reporter::new(
                p.state.load_or_create_report_key()?,
                enr.device_id,
                zmesh_shared::time::now_ms(),
            ))),
            routes_changed,
        };
        let dns_task = match crate::dns::start(crate::dns::DnsParams {
            tun: p.tun.clone(),
            network_v4: enr.network_v4,
            host_dns: if default {
                self.cfg.host_dns
            } else {
                crate::dns::host::for_other_profile(self.cfg.host_dns)
            },
            state_dir: self.cfg.state_dir.clone(),
            names: shared.names(),
            stop: stop_rx.clone(),
        })
        .await
        {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(profile = %p.name, error = %e, "resolver not started: zmesh names will not resolve");
                None
            }
        };
        let task = tokio::spawn(control::run(ctx, st, stop_rx));
        Ok(Running {
            enr,
            crossnet: Default::default(),
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
        p: &Prof,
        enr: &Enrollment,
        dp: &DataPlane,
    ) -> Option<crate::control::nat::NatSettings> {
        let c = match p.state.load_nat() {
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

    /// STUN servers and relays as the daemon uses them (for `zmesh netcheck`): the
    /// default profile's, or the first running profile's.
    async fn nat_info(&self) -> anyhow::Result<NatInfo> {
        let g = self.profiles.lock().await;
        let r = g
            .get(profiles::DEFAULT)
            .and_then(|s| s.running.as_ref())
            .or_else(|| g.values().find_map(|s| s.running.as_ref()))
            .ok_or_else(|| {
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

    /// Stops a profile's stream and removes its tunnels; false if nothing was running.
    async fn stop_tunnels(&self, name: &str) -> bool {
        let mut g = self.profiles.lock().await;
        let Some(r) = g.get_mut(name).and_then(|s| s.running.take()) else {
            return false;
        };
        Self::shutdown(r).await;
        if name == profiles::DEFAULT {
            restore_host_dns(&self.state);
        }
        self.update_crossnet(&mut g);
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
    fn mark_expired(&self, p: &Prof, expired: bool) {
        let r = match p.state.load_enrollment() {
            Ok(Some(mut e)) if e.expired != expired => {
                e.expired = expired;
                p.state.save_enrollment(&e)
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot record the key expiry in the enrollment");
        }
    }

    async fn on_revoked(&self, p: &Prof, reason: String) {
        tracing::warn!(profile = %p.name, %reason, "device revoked: removing tunnels, not reconnecting");
        self.stop_tunnels(&p.name).await;
        if let Err(e) = self.update_enrollment(p, |e| e.revoked = true) {
            tracing::error!(error = %e, "cannot mark the enrollment revoked");
        }
        // The cached map describes a mesh this device is no longer part of.
        let _ = std::fs::remove_file(p.state.path(crate::statedir::PEERMAP_FILE));
        let _ = std::fs::remove_file(p.state.path(crate::statedir::NAT_FILE));
        self.recheck.notify_one();
    }

    /// Pings `peer` (a name or an overlay address) in the profile named, or else in
    /// the one running profile whose map has that peer.
    async fn ping(
        &self,
        profile: Option<&str>,
        peer: &str,
        timeout_ms: u64,
    ) -> anyhow::Result<PingResult> {
        let want = profile.map(|p| profiles::resolve(Some(p))).transpose()?;
        let (dp, map, relay) = {
            let g = self.profiles.lock().await;
            let running: Vec<(&String, &Running)> = g
                .iter()
                .filter_map(|(n, s)| s.running.as_ref().map(|r| (n, r)))
                .filter(|(n, _)| want.as_ref().is_none_or(|w| w == *n))
                .collect();
            let pick = match (&want, running.as_slice()) {
                (Some(w), []) => {
                    anyhow::bail!("profile {w}: tunnels are down: run `zmesh up --profile {w}`")
                }
                (None, []) => anyhow::bail!("tunnels are down: run `zmesh up`"),
                (_, [one]) => one.1,
                (Some(_), [first, ..]) => first.1,
                (None, many) => {
                    let has: Vec<&(&String, &Running)> = many
                        .iter()
                        .filter(|(_, r)| {
                            r.shared
                                .map()
                                .is_some_and(|m| find_peer(&m, peer).is_some())
                        })
                        .collect();
                    match has.as_slice() {
                        [one] => one.1,
                        [] => {
                            many.iter()
                                .find(|(n, _)| n.as_str() == profiles::DEFAULT)
                                .unwrap_or(&many[0])
                                .1
                        }
                        several => anyhow::bail!(
                            "{peer:?} is a peer in several profiles ({}): pass --profile NAME",
                            several
                                .iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }
                }
            };
            (pick.dp.clone(), pick.shared.map(), pick.shared.relay())
        };
        let found = map.as_ref().and_then(|m| find_peer(m, peer));
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

/// The peer of `map` named `peer` (case-insensitive) or owning that overlay address.
fn find_peer<'a>(
    map: &'a zmesh_shared::peermap::PeerMap,
    peer: &str,
) -> Option<&'a zmesh_shared::peermap::Peer> {
    map.peers.iter().find(|p| {
        p.name.eq_ignore_ascii_case(peer)
            || peer
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip == IpAddr::V4(p.overlay_v4) || ip == IpAddr::V6(p.overlay_v6))
    })
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
    for name in profiles::others(&state) {
        NetCfg::cleanup_stale(profiles::state_dir(&state, &name).root());
    }
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
        profiles: Mutex::new(Profiles::new()),
        events,
        recheck: Arc::new(tokio::sync::Notify::new()),
        login: Mutex::new(None),
    });

    // Every profile that was up comes up again, as far as the rules allow.
    {
        let mut g = d.profiles.lock().await;
        d.reconcile(&mut g, true).await;
    }

    let de = d.clone();
    tokio::spawn(async move {
        while let Some((name, ev)) = events_rx.recv().await {
            let p = de.prof(&name);
            match ev {
                ControlEvent::Revoked { reason } => de.on_revoked(&p, reason).await,
                ControlEvent::Expired => de.mark_expired(&p, true),
                ControlEvent::Renewed => de.mark_expired(&p, false),
            }
        }
    });
    let supervisor = tokio::spawn(supervise::run(d.clone()));

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
    supervisor.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    let names: Vec<String> = d.profiles.lock().await.keys().cloned().collect();
    for n in names {
        d.stop_tunnels(&n).await;
    }
    let _ = std::fs::remove_file(state.socket_path());
    Ok(())
}
