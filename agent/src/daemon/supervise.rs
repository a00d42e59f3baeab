//! Applying [`profiles::plan`]: at daemon start, at `up`, on every map change (a
//! profile's network turning exclusive, its ranges changing) and every few seconds,
//! the daemon decides which profiles run, takes down the ones that may not (refused:
//! marked down; held: brought back by themselves once allowed), and hands each data
//! plane the prefixes of the other running networks (`core::crossnet`), so traffic
//! never crosses from one network into another.

use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tokio::sync::mpsc;
use zmesh_shared::peermap::PeerMap;

use super::profiles::{self, Block, Reason, Standing, Verdict, View};
use super::{Daemon, Prof, Profiles, Running};
use crate::control::{ControlEvent, Shared};
use crate::core::CrossNet;
use crate::statedir::Enrollment;

/// How often the supervisor looks again without being woken (route selection
/// changes, held profiles).
const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// Why a profile does not run, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Blocked {
    /// Held: comes back by itself. Refused: down until `zmesh up --profile NAME`.
    pub held: bool,
    pub reason: String,
}

/// What a running profile was admitted with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Admitted {
    v4: Ipv4Net,
    v6: Ipv6Net,
    /// Whether its network was exclusive then; `None`: no map yet.
    exclusive: Option<bool>,
}

impl Admitted {
    pub(super) fn of(r: &Running) -> Admitted {
        let map = r.shared.map();
        let (v4, v6) = ranges(&r.enr, map.as_ref());
        Admitted {
            v4,
            v6,
            exclusive: map.map(|m| exclusive(&m).is_some()),
        }
    }
}

/// A profile's overlay ranges: its map's, else its enrollment's.
fn ranges(enr: &Enrollment, map: Option<&PeerMap>) -> (Ipv4Net, Ipv6Net) {
    map.map_or((enr.network_v4, enr.network_v6), |m| {
        (m.me.network_v4, m.me.network_v6)
    })
}

/// The network's name when its map says it is exclusive.
fn exclusive(m: &PeerMap) -> Option<String> {
    m.network
        .as_ref()
        .filter(|n| n.exclusive)
        .map(|n| n.name.clone())
}

/// Runs until aborted: re-plans when woken (a map changed, a profile went down) and
/// every [`RECHECK_EVERY`].
pub(super) async fn run(d: Arc<Daemon>) {
    loop {
        tokio::select! {
            _ = d.recheck.notified() => {}
            _ = tokio::time::sleep(RECHECK_EVERY) => {}
        }
        let mut g = d.profiles.lock().await;
        d.reconcile(&mut g, false).await;
    }
}

impl Daemon {
    /// The control stream's events for profile `name`, tagged with it; also wakes the
    /// supervisor on every applied map.
    pub(super) fn profile_events(
        &self,
        name: &str,
        shared: &Arc<Shared>,
    ) -> mpsc::UnboundedSender<ControlEvent> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (all, n) = (self.events.clone(), name.to_string());
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if all.send((n.clone(), ev)).is_err() {
                    return;
                }
            }
        });
        let mut maps = shared.map_changes();
        let recheck = self.recheck.clone();
        tokio::spawn(async move {
            while maps.changed().await.is_ok() {
                recheck.notify_one();
            }
        });
        tx
    }

    /// The view of one enrolled profile for the plan; `None` if it is no candidate
    /// (down, revoked, or a start failed and nobody asked again).
    fn view(&self, g: &Profiles, p: &Prof, enr: &Enrollment, starting: bool) -> Option<View> {
        let slot = g.get(&p.name);
        let (map, standing) = match slot.and_then(|s| s.running.as_ref()) {
            Some(r) => {
                let map = r.shared.map();
                let (v4, v6) = ranges(&r.enr, map.as_ref());
                let excl = map.as_ref().and_then(exclusive);
                let changed = match slot.and_then(|s| s.admitted.as_ref()) {
                    None => false,
                    Some(a) => {
                        (a.v4, a.v6) != (v4, v6) || (a.exclusive.is_none() && excl.is_some())
                    }
                };
                let st = if changed {
                    Standing::Changed
                } else {
                    Standing::Incumbent
                };
                (map, st)
            }
            None if starting => (cached_map(p, enr), Standing::Starting),
            None if enr.revoked || enr.down => return None,
            None if slot
                .and_then(|s| s.blocked.as_ref())
                .is_some_and(|b| !b.held) =>
            {
                return None
            }
            None => (cached_map(p, enr), Standing::Waiting),
        };
        let (v4, v6) = ranges(enr, map.as_ref());
        let (v4, v6) = match slot.and_then(|s| s.running.as_ref()) {
            Some(r) => ranges(&r.enr, map.as_ref()),
            None => (v4, v6),
        };
        Some(View {
            name: p.name.clone(),
            standing,
            v4,
            v6,
            exclusive: map.as_ref().and_then(exclusive),
        })
    }

    /// The enrolled profiles: `default` (if enrolled) and the others, with their
    /// enrollments.
    fn enrolled(&self) -> Vec<(Prof, Enrollment)> {
        std::iter::once(profiles::DEFAULT.to_string())
            .chain(profiles::others(&self.state))
            .filter_map(|n| {
                let p = self.prof(&n);
                match p.state.load_enrollment() {
                    Ok(Some(e)) => Some((p, e)),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::error!(profile = %n, error = %e, "cannot read the enrollment");
                        None
                    }
                }
            })
            .collect()
    }

    /// Whether profile `p` may come up now beside the running ones (`Err`: the
    /// message for the user). Marks it refused in `g` when not.
    pub(super) async fn admit(
        &self,
        g: &mut Profiles,
        p: &Prof,
        enr: &Enrollment,
    ) -> Result<(), String> {
        let mut views: Vec<View> = Vec::new();
        for (q, e) in self.enrolled() {
            if q.name == p.name {
                continue;
            }
            if g.get(&q.name).is_some_and(|s| s.running.is_some()) {
                views.extend(self.view(g, &q, &e, false));
            }
        }
        views.extend(self.view(g, p, enr, true));
        let verdict = profiles::plan(&views)
            .into_iter()
            .find(|(n, _)| *n == p.name)
            .map(|(_, v)| v)
            .unwrap_or(Verdict::Run);
        match verdict {
            Verdict::Run => Ok(()),
            Verdict::Refuse(b) | Verdict::Hold(b) => {
                let reason = Reason {
                    profile: &p.name,
                    block: &b,
                }
                .to_string();
                tracing::warn!(profile = %p.name, %reason, "profile refused");
                g.entry(p.name.clone()).or_default().blocked = Some(Blocked {
                    held: false,
                    reason: reason.clone(),
                });
                Err(reason)
            }
        }
    }

    /// Applies the plan: takes down what may not run, brings up held profiles that
    /// may (and at `start`, every profile that was up), then updates every data
    /// plane's view of the other networks.
    pub(super) async fn reconcile(self: &Arc<Self>, g: &mut Profiles, start: bool) {
        let enrolled = self.enrolled();
        let views: Vec<View> = enrolled
            .iter()
            .filter_map(|(p, e)| self.view(g, p, e, false))
            .collect();
        for (name, verdict) in profiles::plan(&views) {
            let Some((p, enr)) = enrolled.iter().find(|(p, _)| p.name == name) else {
                continue;
            };
            let slot = g.entry(name.clone()).or_default();
            match verdict {
                Verdict::Run => {
                    if let Some(r) = &slot.running {
                        // keep what it runs with now as its admitted state
                        let a = Admitted::of(r);
                        if slot.admitted.as_ref() != Some(&a) {
                            slot.admitted = Some(a);
                        }
                        continue;
                    }
                    let was_held = slot.blocked.take().is_some();
                    match self.start_tunnels(p, enr.clone()).await {
                        Ok(r) => {
                            if was_held {
                                tracing::info!(profile = %name, "profile no longer held: up again");
                            }
                            let slot = g.entry(name.clone()).or_default();
                            slot.admitted = Some(Admitted::of(&r));
                            slot.running = Some(r);
                        }
                        Err(e) => {
                            let reason = format!("cannot bring tunnels up: {e:#}");
                            tracing::error!(profile = %name, error = %reason, "profile not started");
                            g.entry(name.clone()).or_default().blocked = Some(Blocked {
                                held: false,
                                reason,
                            });
                        }
                    }
                }
                Verdict::Refuse(b) => self.block(g, p, enr, &b, false).await,
                Verdict::Hold(b) => self.block(g, p, enr, &b, true).await,
            }
        }
        if start {
            for (p, e) in &enrolled {
                if e.revoked || e.down || e.expired {
                    tracing::info!(profile = %p.name, revoked = e.revoked, down = e.down, expired = e.expired, "enrolled; tunnels stay down");
                }
            }
        }
        self.update_crossnet(g);
    }

    /// Takes a profile down (if it runs) because of `b`; a refused one is marked down.
    async fn block(&self, g: &mut Profiles, p: &Prof, enr: &Enrollment, b: &Block, held: bool) {
        let reason = Reason {
            profile: &p.name,
            block: b,
        }
        .to_string();
        let slot = g.entry(p.name.clone()).or_default();
        let new = Blocked { held, reason };
        if slot.blocked.as_ref() != Some(&new) {
            tracing::warn!(profile = %p.name, reason = %new.reason, held, "profile taken down");
        }
        slot.blocked = Some(new);
        slot.admitted = None;
        if let Some(r) = slot.running.take() {
            Self::shutdown(r).await;
            if p.name == profiles::DEFAULT {
                super::restore_host_dns(&self.state);
            }
        }
        if !held && !enr.down {
            let mut e = enr.clone();
            e.down = true;
            if let Err(e) = p.state.save_enrollment(&e) {
                tracing::error!(profile = %p.name, error = %e, "cannot mark the profile down");
            }
        }
    }

    /// Gives every running data plane the prefixes of the other running profiles.
    pub(super) fn update_crossnet(&self, g: &mut Profiles) {
        let nets: Vec<(String, Own)> = g
            .iter()
            .filter_map(|(n, s)| s.running.as_ref().map(|r| (n.clone(), Own::of(r))))
            .collect();
        for (name, slot) in g.iter_mut() {
            let Some(r) = slot.running.as_mut() else {
                continue;
            };
            let mut c = CrossNet::default();
            for (other, o) in &nets {
                if other == name {
                    c.local.extend(o.overlay.iter().chain(&o.routes).copied());
                    c.local.extend(o.offered.iter().copied());
                } else {
                    c.foreign_dst
                        .extend(o.overlay.iter().chain(&o.routes).copied());
                    c.foreign_src.extend(o.overlay.iter().copied());
                }
            }
            if c.foreign_dst.is_empty() {
                c = CrossNet::default();
            }
            if c != r.crossnet {
                tracing::info!(profile = %name, foreign = ?c.foreign_dst, "prefixes of the other networks");
                if let Err(e) = r.dp.set_crossnet(c.clone()) {
                    tracing::error!(profile = %name, error = %e, "cannot update the data plane");
                    continue;
                }
                r.crossnet = c;
            }
        }
    }
}

/// One running profile's prefixes.
struct Own {
    /// Its overlay ranges.
    overlay: Vec<IpNet>,
    /// Routes it installed: subnet routes it uses, and the default routes with an
    /// exit node.
    routes: Vec<IpNet>,
    /// Routes it offers that the console approved (it forwards into them).
    offered: Vec<IpNet>,
}

impl Own {
    fn of(r: &Running) -> Own {
        let map = r.shared.map();
        let (v4, v6) = ranges(&r.enr, map.as_ref());
        let sel = r.shared.route_selection();
        let mut routes: Vec<IpNet> = sel.prefixes().into_iter().collect();
        if sel.exit.is_some() {
            routes.push("0.0.0.0/0".parse().expect("prefix"));
            routes.push("::/0".parse().expect("prefix"));
        }
        Own {
            overlay: vec![IpNet::V4(v4), IpNet::V6(v6)],
            routes,
            offered: map.map(|m| m.me.approved_routes).unwrap_or_default(),
        }
    }
}

/// A profile's cached map, if it verifies.
fn cached_map(p: &Prof, enr: &Enrollment) -> Option<PeerMap> {
    p.state
        .load_cache(&enr.signing_key)
        .ok()
        .flatten()
        .map(|(_, m)| m)
}
