//! The agent process (`zmesh daemon`): owns the state dir, the data planes and the
//! control streams, and answers the CLI on the control socket. Each profile (one
//! enrollment, see [`profiles`]) has its own data plane, stream, relay client and
//! resolver; tunnels come up at start from the signed cache for every profile that is
//! enrolled and was not taken down, so a restart while a console is unreachable keeps
//! the mesh working. Which profiles may run together is [`supervise`]'s job.

mod login;
use login::LoginArgs;
mod metrics;
mod metrics_http;
mod ping;
pub mod profiles;
mod status;
mod supervise;
mod tunnels;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;
use zmesh_shared::enroll_key::EnrollKey;
use zmesh_shared::wire::EnrollResponse;
use zmesh_shared::{CertFingerprint, Secret};

use crate::config::DaemonConfig;
use crate::control::enroll::{enroll, EnrollParams};
use crate::control::tls::Trust;
use crate::control::{ControlEvent, Shared};
use crate::io::netcfg::NetCfg;
use crate::io::DataPlane;
use crate::ipc::{self, Reply, Request, Response};
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
                network,
            } => {
                let r = async {
                    let p = self.prof_arg(profile.as_deref())?;
                    if reauth {
                        if enroll_key.is_some() {
                            return Err(UpError::ReauthWithKey.into());
                        }
                        self.reauth_start(&p).await
                    } else {
                        let login = LoginArgs { name, network };
                        self.up(&p, console, enroll_key, login, ca_pem, fingerprint, routes)
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
        login: LoginArgs,
        ca_pem: Option<String>,
        fingerprint: Option<CertFingerprint>,
        routes: RouteFlags,
    ) -> anyhow::Result<Reply> {
        let LoginArgs { name, network } = login;
        let mut g = self.profiles.lock().await;
        let existing = p.state.load_enrollment()?;
        let running = g.get(&p.name).is_some_and(|s| s.running.is_some());
        let (enr, note) = match (existing, enroll_key) {
            (None, None) => {
                // Enrollment by login: the user signs in; `login_wait` finishes it.
                drop(g);
                let console = console.ok_or(UpError::NotEnrolled)?;
                return self
                    .login_start(p, console, LoginArgs { name, network }, ca_pem, fingerprint)
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
