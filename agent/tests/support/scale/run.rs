//! One scale run: start the console(s), set a policy under which every change reaches
//! every agent, enroll and connect the fleet, time a policy change, a revocation and a
//! roaming device from the call to each agent's apply, optionally keep some streams
//! stuck or SIGKILL a replica under load, then compare every agent's delta-built map
//! with the full map a fresh stream gets and check its acknowledgements.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;

use super::procs::{Api, Console, Haproxy};
use super::report::{quantile, Failover, Report, Scenario, Stuck};
use super::sim::{self, Agent, Ctx};

#[derive(Debug, Clone)]
pub struct Opts {
    pub agents: usize,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// A PostgreSQL database URL to use; without it a temporary server is started.
    pub database: Option<String>,
    pub replicas: usize,
    pub kill_one: bool,
    /// Devices every agent sees; 0: a full mesh (every agent sees every other).
    pub hubs: usize,
    pub stuck: usize,
    /// Changes made while the stuck streams stay stuck.
    pub stuck_changes: usize,
    /// Repetitions of each timed change.
    pub rounds: usize,
    /// Maps compared with a fresh stream's (0: every agent's).
    pub verify_sample: usize,
    /// First connections in flight at once.
    pub ramp: usize,
    pub enroll_concurrency: usize,
    pub console_bin: PathBuf,
    /// fsync on for a temporary PostgreSQL (honest figures), off for tests.
    pub durable: bool,
}

fn policy(hubs: usize, ports: &str) -> String {
    if hubs == 0 {
        // everyone sees everyone; the ports are in every device's inbound filter
        format!(
            r#"{{"version": 1, "tag_owners": {{"tag:bench": [], "tag:hub": []}},
  "rules": [{{"src": ["tag:bench"], "dst": ["tag:bench:{ports}"], "proto": "tcp"}}]}}"#
        )
    } else {
        // every device sees the hubs, hubs see everyone; the ports are in every
        // device's filter (hubs carry tag:bench too)
        format!(
            r#"{{"version": 1, "tag_owners": {{"tag:bench": [], "tag:hub": []}},
  "rules": [{{"src": ["tag:bench"], "dst": ["tag:hub:22"], "proto": "tcp"}},
            {{"src": ["tag:hub"], "dst": ["tag:bench:{ports}"], "proto": "tcp"}}]}}"#
        )
    }
}

/// Sum of the live consoles' RSS.
fn rss(consoles: &[Console]) -> u64 {
    consoles.iter().map(|c| c.rss_kb()).sum()
}

fn cpu(consoles: &[Console], last: &mut [f64]) -> f64 {
    for (c, l) in consoles.iter().zip(last.iter_mut()) {
        let now = c.cpu_seconds();
        if now > 0.0 {
            *l = now;
        }
    }
    last.iter().sum()
}

/// Waits up to `timeout` for `cond`, polling every 20 ms.
async fn until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

pub async fn run(o: Opts) -> anyhow::Result<Report> {
    if o.replicas == 2 && o.backend != "postgres" {
        bail!("two replicas need --backend postgres");
    }
    if o.agents < 4 || o.hubs >= o.agents || o.rounds >= o.agents / 2 {
        bail!("need at least 4 agents, fewer hubs than agents, few rounds");
    }
    if o.hubs > 0 && o.rounds + 1 >= o.hubs {
        bail!("each round revokes a hub: need more hubs than rounds + 1");
    }
    let nofile = super::raise_nofile(65_536);
    let dir = tempfile::Builder::new().prefix("zmscale-").tempdir()?;
    let mut rep = Report {
        agents: o.agents,
        backend: o.backend.clone(),
        replicas: o.replicas,
        topology: if o.hubs == 0 {
            "full mesh (every agent sees every agent)".into()
        } else {
            format!(
                "{} hubs (every agent sees the hubs, hubs see every agent)",
                o.hubs
            )
        },
        nofile,
        ..Report::default()
    };

    // --- the console(s) ---------------------------------------------------------------
    let mut _pg = None;
    let db = match (o.backend.as_str(), &o.database) {
        ("sqlite", _) => None,
        ("postgres", Some(url)) => Some(url.clone()),
        ("postgres", None) => {
            // on a plain thread: its readiness check runs a runtime of its own
            let durable = o.durable;
            let s = std::thread::spawn(move || super::pg::PgServer::start(durable))
                .join()
                .map_err(|_| anyhow::anyhow!("PostgreSQL harness panicked"))?
                .map_err(anyhow::Error::msg)?;
            let db = s.create_db().await.map_err(anyhow::Error::msg)?;
            let url = db.url.clone();
            _pg = Some((s, db));
            Some(url)
        }
        (b, _) => bail!("unknown backend {b:?} (sqlite or postgres)"),
    };
    let mut consoles = vec![Console::start(
        &o.console_bin,
        "console-a",
        &dir.path().join("a"),
        db.as_deref(),
        dir.path(),
    )?];
    if o.replicas == 2 {
        super::procs::clone_identity(&dir.path().join("a"), &dir.path().join("b"))?;
        consoles.push(Console::start(
            &o.console_bin,
            "console-b",
            &dir.path().join("b"),
            db.as_deref(),
            dir.path(),
        )?);
    }
    let _haproxy;
    let entry = if o.replicas == 2 {
        let addrs: Vec<_> = consoles.iter().map(|c| c.addr).collect();
        let h = Haproxy::start(&addrs, dir.path())?;
        let a = h.addr;
        _haproxy = Some(h);
        a
    } else {
        _haproxy = None;
        consoles[0].addr
    };
    let pin = consoles[0].pin()?;
    let token = consoles[0].admin_token()?;
    let api = Api::new(entry, pin, &token)?;
    let url = format!("https://{entry}");
    let mut cpu_last = vec![0.0; consoles.len()];

    let mut ports = vec!["22".to_string()];
    let mut policy_version = api.set_policy(&policy(o.hubs, &ports.join(","))).await?;
    let bench_key = api.enroll_key(&["bench"]).await?;
    let hub_key = api.enroll_key(&["bench", "hub"]).await?;

    // --- enrollment ---------------------------------------------------------------------
    eprintln!("bench-scale: enrolling");
    let t = Instant::now();
    let c = o.enroll_concurrency;
    let mut devs = sim::enroll_many(&url, &hub_key, "hub", o.hubs, c).await?;
    devs.extend(sim::enroll_many(&url, &bench_key, "b", o.agents - o.hubs, c).await?);
    let stuck_devs = sim::enroll_many(&url, &bench_key, "stuck", o.stuck, c).await?;
    rep.enroll_s = t.elapsed().as_secs_f64();
    rep.enrolled = devs.len() + stuck_devs.len();
    let cpu_enrolled = cpu(&consoles, &mut cpu_last);
    rep.console_cpu.push(("enrollment".into(), cpu_enrolled));

    // --- the fleet connects --------------------------------------------------------------
    eprintln!("bench-scale: connecting the fleet");
    let n = o.agents;
    let everyone = n + o.stuck - 1;
    let hubs = o.hubs;
    let ctx = Ctx::new(entry, pin, o.ramp)?;
    let agents: Vec<Arc<Agent>> = devs
        .into_iter()
        .enumerate()
        .map(|(i, d)| Agent::new(i, d))
        .collect();
    rep.rss_before_kb = rss(&consoles);
    let full = ctx.probe(n, move |m| {
        m.peers.len() == everyone || (hubs > 0 && m.peers.len() == hubs)
    });
    let tasks: Vec<_> = agents
        .iter()
        .map(|a| tokio::spawn(sim::run_agent(ctx.clone(), a.clone())))
        .collect();
    let all: Vec<usize> = (0..n).collect();
    let (times, missing) = full
        .wait(&all, Duration::from_secs(120 + n as u64 / 20))
        .await;
    rep.connect_s = super::report::max(&times) / 1000.0;
    rep.connect_missing = missing;
    let stuck_tasks: Vec<_> = stuck_devs
        .into_iter()
        .map(|d| tokio::spawn(sim::run_stuck(ctx.clone(), d)))
        .collect();
    // let the stuck streams get their map (which they never read) before measuring
    tokio::time::sleep(Duration::from_secs(if o.stuck > 0 { 3 } else { 1 })).await;
    rep.rss_connected_kb = rss(&consoles);
    rep.streams = n + o.stuck;
    let c0 = cpu(&consoles, &mut cpu_last);
    rep.console_cpu.push(("connect".into(), c0 - cpu_enrolled));
    let change_wait = Duration::from_secs(60 + n as u64 / 100);

    // --- a policy change -------------------------------------------------------------------
    eprintln!("bench-scale: timing changes");
    let c1 = cpu(&consoles, &mut cpu_last);
    let mut sc = Scenario {
        name: "policy change (port added)".into(),
        rounds: o.rounds,
        ..Default::default()
    };
    for r in 0..o.rounds {
        ports.push((1000 + r).to_string());
        let want = policy_version + 1;
        let p = ctx.probe(n, move |m| m.policy_version.is_some_and(|v| v >= want));
        policy_version = api.set_policy(&policy(o.hubs, &ports.join(","))).await?;
        sc.call_ms = sc.call_ms.max(p.start.elapsed().as_secs_f64() * 1000.0);
        let (t, miss) = p.wait(&live(&agents), change_wait).await;
        sc.samples.extend(t);
        sc.missing += miss;
    }
    rep.scenarios.push(sc);

    // --- a revocation ----------------------------------------------------------------------
    let mut sc = Scenario {
        name: "device revoked".into(),
        rounds: o.rounds,
        ..Default::default()
    };
    for r in 0..o.rounds {
        // a device every agent sees: with hubs, a hub (the others see no one else)
        let victim = &agents[if o.hubs > 0 {
            o.hubs - 1 - r
        } else {
            n - 1 - r
        }];
        let vid = victim.dev.id;
        let p = ctx.probe(n, move |m| m.peer(&vid).is_none());
        api.revoke(vid).await?;
        sc.call_ms = sc.call_ms.max(p.start.elapsed().as_secs_f64() * 1000.0);
        until(Duration::from_secs(10), || victim.revoked.load(Relaxed)).await;
        let want: Vec<usize> = live(&agents)
            .into_iter()
            .filter(|&i| i != victim.idx)
            .collect();
        let (t, miss) = p.wait(&want, change_wait).await;
        sc.samples.extend(t);
        sc.missing += miss;
    }
    rep.scenarios.push(sc);

    // --- a device roams ----------------------------------------------------------------------
    let roamer = agents[0].clone();
    let mut sc = Scenario {
        name: "device roams (new endpoint)".into(),
        rounds: o.rounds,
        ..Default::default()
    };
    for r in 0..o.rounds {
        let (t, miss) = roam(&ctx, &agents, &roamer, 20_000 + r as u16, change_wait).await;
        sc.samples.extend(t);
        sc.missing += miss;
    }
    rep.scenarios.push(sc);
    let c2 = cpu(&consoles, &mut cpu_last);
    rep.console_cpu
        .push((format!("{} changes", 3 * o.rounds), c2 - c1));

    // --- stuck streams under many changes -------------------------------------------------
    eprintln!("bench-scale: stuck streams");
    if o.stuck > 0 {
        let mut s = Stuck {
            stuck: o.stuck,
            changes: o.stuck_changes,
            ..Default::default()
        };
        for r in 0..o.stuck_changes {
            let (t, miss) = roam(
                &ctx,
                &agents,
                &roamer,
                30_000 + r as u16,
                Duration::from_secs(10),
            )
            .await;
            s.p99_ms.push(quantile(&t, 0.99));
            s.missing += miss;
            s.rss_kb.push(rss(&consoles));
        }
        rep.stuck = Some(s);
        let c3 = cpu(&consoles, &mut cpu_last);
        rep.console_cpu.push((
            format!("{} changes with stuck streams", o.stuck_changes),
            c3 - c2,
        ));
    }

    // --- one replica killed under load ----------------------------------------------------
    eprintln!("bench-scale: failover");
    let mut survivor_api = api.clone();
    if o.replicas == 2 && o.kill_one {
        let c4 = cpu(&consoles, &mut cpu_last);
        // load: the roaming device keeps moving while the replica dies
        let load_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = {
            let (roamer, stop) = (roamer.clone(), load_stop.clone());
            tokio::spawn(async move {
                let mut port = 40_000u16;
                while !stop.load(Relaxed) && port < 60_000 {
                    port += 1;
                    roamer
                        .endpoints
                        .send_replace(vec![([198, 51, 100, 7], port).into()]);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let killed = consoles.remove(0);
        let kill_ms = ctx.now_ms();
        let mut killed = killed;
        killed.kill();
        // the dead replica's CPU stays in the sums (at the end, where no console reads it)
        let dead = cpu_last.remove(0);
        cpu_last.push(dead);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let back = |a: &Agent| {
            a.revoked.load(Relaxed)
                || (a.connected.load(Relaxed)
                    && (a.dropped_ms.load(Relaxed) < kill_ms
                        || a.synced_ms.load(Relaxed) > a.dropped_ms.load(Relaxed)))
        };
        until(Duration::from_secs(180), || agents.iter().all(|a| back(a))).await;
        load_stop.store(true, Relaxed);
        let _ = load.await;
        let mut f = Failover::default();
        for a in &agents {
            if a.revoked.load(Relaxed) || a.dropped_ms.load(Relaxed) < kill_ms {
                continue;
            }
            f.affected += 1;
            if back(a) {
                f.reconnect_s
                    .push((a.synced_ms.load(Relaxed) - kill_ms) as f64 / 1000.0);
            } else {
                f.not_reconnected += 1;
            }
        }
        f.attempts_ms = ctx
            .attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|&&t| t >= kill_ms)
            .map(|t| t - kill_ms)
            .collect();
        rep.failover = Some(f);
        drop(killed);
        let c5 = cpu(&consoles, &mut cpu_last);
        rep.console_cpu
            .push(("failover (survivor)".into(), c5 - c4));

        // a change made on the survivor reaches everyone
        survivor_api = Api::new(consoles[0].addr, pin, &token)?;
        ports.push("2000".into());
        let want = policy_version + 1;
        let p = ctx.probe(n, move |m| m.policy_version.is_some_and(|v| v >= want));
        policy_version = survivor_api
            .set_policy(&policy(o.hubs, &ports.join(",")))
            .await?;
        let mut sc = Scenario {
            name: "policy change on the survivor".into(),
            rounds: 1,
            ..Default::default()
        };
        sc.call_ms = p.start.elapsed().as_secs_f64() * 1000.0;
        let (t, miss) = p.wait(&live(&agents), change_wait).await;
        sc.samples = t;
        sc.missing = miss;
        rep.scenarios.push(sc);
    }
    let _ = (policy_version, survivor_api);

    // --- every map against a rebuild; every map acknowledged ---------------------------------
    eprintln!("bench-scale: rebuild check");
    // quiet first: the last change is applied everywhere (waited above)
    let live_idx = live(&agents);
    let step = if o.verify_sample == 0 || o.verify_sample >= live_idx.len() {
        1
    } else {
        live_idx.len() / o.verify_sample
    };
    let sample: Vec<Arc<Agent>> = live_idx
        .iter()
        .step_by(step)
        .map(|&i| agents[i].clone())
        .collect();
    let results: Vec<anyhow::Result<(bool, bool)>> = futures_util::stream::iter(sample)
        .map(|a| {
            let ctx = ctx.clone();
            async move {
                let fresh = sim::fresh_map(&ctx, &a.dev).await?;
                let mine = a.map().context("agent has no map")?;
                Ok(compare(mine, fresh))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        rep.verified += 1;
        match r {
            Ok((same, version_same)) => {
                rep.stale += usize::from(!same);
                rep.version_only += usize::from(same && !version_same);
            }
            Err(e) => {
                rep.verify_errors += 1;
                eprintln!("rebuild check: {e:#}");
            }
        }
    }
    for i in live(&agents) {
        let a = &agents[i];
        let (applied, acked) = (a.applied.load(Relaxed), a.acked.load(Relaxed));
        rep.acks += u64::from(acked);
        rep.resyncs += u64::from(a.resyncs.load(Relaxed));
        // an ack can die with its stream (the replica was killed); the map sent on the
        // new stream is then acknowledged instead, so the last one must be
        rep.acks_lost += u64::from(applied.saturating_sub(acked));
        if applied == 0 || Some(a.last_acked.load(Relaxed)) != a.version() {
            rep.ack_mismatch += 1;
        }
    }

    rep.rss_peak_kb = consoles.iter().map(|c| c.peak_rss_kb()).max().unwrap_or(0);
    rep.sim_rss_kb = super::procs::status_kb(std::process::id(), "VmRSS:");
    let total = cpu(&consoles, &mut cpu_last);
    rep.console_cpu.push(("whole run".into(), total));

    // --- stop everything we started -----------------------------------------------------------
    ctx.stop();
    for t in tasks.into_iter().chain(stuck_tasks.into_iter().map(|t| {
        tokio::spawn(async move {
            let _ = t.await;
        })
    })) {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    drop(consoles);
    Ok(rep)
}

/// Agents still enrolled.
fn live(agents: &[Arc<Agent>]) -> Vec<usize> {
    agents
        .iter()
        .filter(|a| !a.revoked.load(Relaxed))
        .map(|a| a.idx)
        .collect()
}

/// The roaming agent reports a new endpoint; times every other agent seeing it.
async fn roam(
    ctx: &Ctx,
    agents: &[Arc<Agent>],
    roamer: &Agent,
    port: u16,
    timeout: Duration,
) -> (Vec<f64>, usize) {
    let eps: Vec<std::net::SocketAddr> = vec![([198, 51, 100, 1], port).into()];
    let (rid, want_eps) = (roamer.dev.id, eps.clone());
    let p = ctx.probe(agents.len(), move |m| {
        m.peer(&rid).is_some_and(|p| p.endpoints == want_eps)
    });
    roamer.endpoints.send_replace(eps);
    let want: Vec<usize> = live(agents)
        .into_iter()
        .filter(|&i| i != roamer.idx)
        .collect();
    p.wait(&want, timeout).await
}

/// (same content, same version): maps compared without their issue time; the version
/// alone may lag when the last changes did not concern the device (not stale).
fn compare(
    mut mine: zmesh_shared::peermap::PeerMap,
    mut fresh: zmesh_shared::peermap::PeerMap,
) -> (bool, bool) {
    let version_same = mine.version == fresh.version;
    mine.issued_at_ms = 0;
    fresh.issued_at_ms = 0;
    mine.version = 0;
    fresh.version = 0;
    (mine == fresh, version_same)
}
