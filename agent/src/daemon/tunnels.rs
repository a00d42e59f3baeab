//! Bringing one profile's tunnels up: its data plane (TUN, UDP socket), the peers
//! from the signed cache, the cached NAT settings, the relay task, the resolver and
//! the control stream; and what `zmesh netcheck` asks of the running ones.

use std::sync::Arc;

use tokio::sync::watch;

use super::{profiles, Daemon, Prof, Running};
use crate::control::map::MapState;
use crate::control::{self, ControlCtx, Shared};
use crate::io::netcfg::NetCfg;
use crate::io::{DataPlane, DataPlaneConfig};
use crate::ipc::{NamedRelay, NatInfo};
use crate::statedir::Enrollment;

impl Daemon {
    /// Starts the data plane, restores the cached map, and spawns the control stream.
    pub(super) async fn start_tunnels(
        self: &Arc<Self>,
        p: &Prof,
        enr: Enrollment,
    ) -> anyhow::Result<Running> {
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
    pub(super) async fn cached_nat(
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
    pub(super) async fn nat_info(&self) -> anyhow::Result<NatInfo> {
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
}
