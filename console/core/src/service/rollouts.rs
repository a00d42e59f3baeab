//! Every change acknowledged: which devices a published change reached and how fast.
//!
//! [`Core::publish_network`] notes each revision it publishes. The tracker compares the
//! network's view at that revision with the one before (the same views the streams
//! send from, so this costs no extra database read or compilation), keeps the devices
//! whose map changed as the rollout's targets (connected or not, by the presence rule),
//! and writes them in one transaction. Agents acknowledge each map version once their
//! data plane enforces it (`ClientMsg::Applied`); streams hand those to the ack writer,
//! which records them in batches (the time recorded is when the acknowledgement
//! arrived, so batching does not inflate the figures). When every connected target
//! applied the change, or after [`WAIT`], the rollout is finished: its latencies go to
//! the metrics, and an admin change (not a device's own endpoint change) gets a
//! `change.applied` audit event with the final figures. Devices that were offline stay
//! pending and are marked applied when they come back and acknowledge.
//!
//! The tracker runs on the replica where the change was made; acknowledgements reach
//! the database from whichever replica the agent is connected to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use zmesh_shared::time::now_ms;
use zmesh_shared::{DeviceId, NetworkId};

use super::Core;
use crate::bus::NetworkView;
use crate::domain::presence::is_online;
use crate::domain::rollout;
use crate::store::{Ack, AuditChange, AuditCtx, NewTarget, Store};

/// How long a rollout waits for its connected targets before its figures are final.
pub const WAIT: Duration = Duration::from_secs(60);
/// How often open rollouts are checked.
const TICK: Duration = Duration::from_millis(200);
/// How long acknowledgements gather before they are written together.
const ACK_BATCH: Duration = Duration::from_millis(100);
/// Most acknowledgements waiting to be written; beyond it they are dropped (the device's
/// next acknowledgement covers every version before it).
const ACK_QUEUE: usize = 65_536;
const NOTE_QUEUE: usize = 4_096;
/// Rollouts of devices' own endpoint changes are kept this long; admin changes for
/// [`KEEP_AUDITED`].
const KEEP_ROAMS: Duration = Duration::from_secs(3_600);
const KEEP_AUDITED: Duration = Duration::from_secs(30 * 86_400);

struct Note {
    network: NetworkId,
    revision: u64,
    at_ms: i64,
    audited: bool,
}

/// The tracker's handle in [`Core`]: where publications and acknowledgements are noted.
#[derive(Debug)]
pub struct Rollouts {
    notes: mpsc::Sender<Note>,
    acks: mpsc::Sender<(NetworkId, Ack)>,
    receivers: Mutex<Option<Receivers>>,
    /// Online window (3 stream pings), ms: who counts as connected.
    online_ms: AtomicI64,
}

struct Receivers {
    notes: mpsc::Receiver<Note>,
    acks: mpsc::Receiver<(NetworkId, Ack)>,
}

impl std::fmt::Debug for Receivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receivers")
    }
}

impl Default for Rollouts {
    fn default() -> Self {
        let (notes, n_rx) = mpsc::channel(NOTE_QUEUE);
        let (acks, a_rx) = mpsc::channel(ACK_QUEUE);
        Rollouts {
            notes,
            acks,
            receivers: Mutex::new(Some(Receivers {
                notes: n_rx,
                acks: a_rx,
            })),
            online_ms: AtomicI64::new(45_000),
        }
    }
}

impl Rollouts {
    /// Notes that `revision` of `network` was published (`audited`: an admin change).
    pub fn note(&self, network: NetworkId, revision: u64, audited: bool) {
        let n = Note {
            network,
            revision,
            at_ms: now_ms(),
            audited,
        };
        if self.notes.try_send(n).is_err() {
            tracing::debug!(%network, revision, "rollout tracker busy or not running; change not tracked");
        }
    }

    /// An agent's acknowledgement, as its stream received it.
    pub fn ack(&self, network: NetworkId, device_id: DeviceId, version: u64) {
        let a = Ack {
            device_id,
            version,
            at_ms: now_ms(),
        };
        if self.acks.try_send((network, a)).is_err() {
            tracing::debug!(%device_id, version, "acknowledgement queue full; the next one covers it");
        }
    }
}

/// Runs the tracker and the acknowledgement writer until aborted (the server does when
/// it stops). `ping_interval`: the streams' (three of them without a word is offline).
pub async fn run(core: Core, ping_interval: Duration) {
    let Some(rx) = core
        .rollouts
        .receivers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        tracing::warn!("rollout tracker already running");
        return;
    };
    core.rollouts
        .online_ms
        .store(ping_interval.as_millis() as i64 * 3, Ordering::Relaxed);
    let writer = write_acks(core.store.clone(), rx.acks);
    let tracker = track(core, rx.notes, ping_interval);
    tokio::join!(writer, tracker);
}

async fn write_acks(store: Store, mut rx: mpsc::Receiver<(NetworkId, Ack)>) {
    while let Some(first) = rx.recv().await {
        tokio::time::sleep(ACK_BATCH).await;
        let mut by_net: HashMap<NetworkId, Vec<Ack>> = HashMap::new();
        by_net.entry(first.0).or_default().push(first.1);
        while let Ok((net, a)) = rx.try_recv() {
            by_net.entry(net).or_default().push(a);
        }
        for (net, acks) in by_net {
            if let Err(e) = store.record_acks(net, &acks).await {
                tracing::warn!(error = %e, count = acks.len(), "could not record acknowledgements");
            }
        }
    }
}

/// A rollout waiting for its connected targets.
struct Open {
    network: NetworkId,
    revision: u64,
    audited: bool,
    deadline_ms: i64,
}

async fn track(core: Core, mut notes: mpsc::Receiver<Note>, ping_interval: Duration) {
    // the view each network was at when last tracked: what the next change is diffed from
    let mut prev: HashMap<NetworkId, Arc<NetworkView>> = HashMap::new();
    // every network's view now (a network created later is noted when it is created)
    let nets = match core.store.network_revisions().await {
        Ok(n) => n.into_iter().map(|(id, _)| id).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "could not list networks; tracking the first one");
            vec![core.network_id]
        }
    };
    for net in nets {
        if let Ok(v) = core.snapshots.view(&core.store, net, 0).await {
            prev.insert(net, v);
        }
    }
    let mut open: Vec<Open> = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = notes.recv() => {
                let Some(n) = n else { return };
                // changes published together are one rollout
                let mut batch: HashMap<NetworkId, Note> = HashMap::new();
                merge(&mut batch, n);
                while let Ok(n) = notes.try_recv() {
                    merge(&mut batch, n);
                }
                for n in batch.into_values() {
                    match start(&core, &mut prev, &n, ping_interval).await {
                        Ok(Some(o)) => open.push(o),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, revision = n.revision, "could not track a change"),
                    }
                }
            }
            _ = tick.tick(), if !open.is_empty() => {
                let now = now_ms();
                let mut still = Vec::with_capacity(open.len());
                for o in open.drain(..) {
                    match progress(&core, &o, now).await {
                        Ok(true) => {}
                        Ok(false) => still.push(o),
                        Err(e) => {
                            tracing::warn!(error = %e, revision = o.revision, "could not check a rollout");
                            if now < o.deadline_ms { still.push(o) }
                        }
                    }
                }
                open = still;
            }
        }
    }
}

fn merge(batch: &mut HashMap<NetworkId, Note>, n: Note) {
    match batch.get_mut(&n.network) {
        Some(b) => {
            b.revision = b.revision.max(n.revision);
            b.at_ms = b.at_ms.min(n.at_ms);
            b.audited |= n.audited;
        }
        None => {
            batch.insert(n.network, n);
        }
    }
}

/// Records the rollout of the views since the last tracked one; `Some` when it has
/// connected targets to wait for.
async fn start(
    core: &Core,
    prev: &mut HashMap<NetworkId, Arc<NetworkView>>,
    n: &Note,
    ping_interval: Duration,
) -> Result<Option<Open>, super::ServiceError> {
    let view = core
        .snapshots
        .view(&core.store, n.network, n.revision)
        .await?;
    let Some(old) = prev.get(&n.network).cloned() else {
        prev.insert(n.network, view);
        return Ok(None);
    };
    if view.revision() <= old.revision() {
        return Ok(None);
    }
    prev.insert(n.network, view.clone());
    let now = now_ms();
    let targets: Vec<NewTarget> = view
        .snapshot
        .devices
        .iter()
        .filter(|d| view.changes_for(&old, d.id) == Some(true))
        .map(|d| NewTarget {
            device_id: d.id,
            connected: is_online(d.last_seen_ms, ping_interval, now),
        })
        .collect();
    let revision = view.revision();
    let created = core
        .store
        .create_rollout(n.network, revision, n.at_ms, n.audited, &targets)
        .await?;
    if !created {
        return Ok(None);
    }
    core.store.reconcile_rollout(n.network, revision).await?;
    let o = Open {
        network: n.network,
        revision,
        // a change that altered no device's map reached no one: nothing to report
        audited: n.audited && !targets.is_empty(),
        deadline_ms: n.at_ms + WAIT.as_millis() as i64,
    };
    tracing::debug!(revision, targets = targets.len(), "tracking change");
    if targets.iter().any(|t| t.connected) {
        Ok(Some(o))
    } else {
        finish(core, &o, now).await?;
        Ok(None)
    }
}

/// Checks an open rollout; finishes it (true) when complete or past its deadline.
async fn progress(core: &Core, o: &Open, now: i64) -> Result<bool, super::ServiceError> {
    core.store.reconcile_rollout(o.network, o.revision).await?;
    let (connected, applied) = core.store.rollout_progress(o.network, o.revision).await?;
    if applied < connected && now < o.deadline_ms {
        return Ok(false);
    }
    finish(core, o, now).await?;
    Ok(true)
}

async fn finish(core: &Core, o: &Open, now: i64) -> Result<(), super::ServiceError> {
    let store = &core.store;
    store.finish_rollout(o.network, o.revision, now).await?;
    let Some(row) = store.rollout_at_or_after(o.network, o.revision).await? else {
        return Ok(());
    };
    let targets = store.rollout_targets(o.network, o.revision).await?;
    for t in targets.iter().filter(|t| t.connected) {
        if let Some(a) = t.applied_at_ms {
            core.metrics_observe_applied((a - row.made_at_ms).max(0));
        }
    }
    let report = rollout::report(&row, &targets);
    tracing::info!(revision = o.revision, summary = %report.summary, "change applied");
    if o.audited {
        let pending: Vec<&str> = report
            .pending
            .iter()
            .take(50)
            .map(|p| p.name.as_str())
            .collect();
        let after = serde_json::json!({
            "revision": o.revision,
            "summary": report.summary,
            "figures": report.figures,
            "pending": pending,
            "pending_total": report.pending.len(),
        });
        store
            .acting(AuditCtx::system())
            .record_event(
                AuditChange::new("change.applied", format!("revision:{}", o.revision))
                    .after(&after),
            )
            .await?;
    }
    let keep_roams = now - KEEP_ROAMS.as_millis() as i64;
    let keep_audited = now - KEEP_AUDITED.as_millis() as i64;
    store
        .prune_rollouts(o.network, keep_roams, keep_audited)
        .await?;
    Ok(())
}

/// Most pending devices a report lists (`pending_total` counts them all).
const MAX_PENDING_LISTED: usize = 100;

/// The report of a stored rollout, its pending list cut to [`MAX_PENDING_LISTED`].
async fn report_of(
    core: &Core,
    row: &crate::store::RolloutRow,
) -> Result<rollout::Report, super::ServiceError> {
    let targets = core
        .store
        .rollout_targets(core.network_id, row.revision)
        .await?;
    let mut r = rollout::report(row, &targets);
    r.pending.truncate(MAX_PENDING_LISTED);
    Ok(r)
}

/// The rollout that carried the change published at `revision` (the first at or after
/// it); `None` while it is not recorded yet.
pub async fn report(
    core: &Core,
    revision: u64,
) -> Result<Option<rollout::Report>, super::ServiceError> {
    match core
        .store
        .rollout_at_or_after(core.network_id, revision)
        .await?
    {
        Some(row) => Ok(Some(report_of(core, &row).await?)),
        None => Ok(None),
    }
}

/// The network's current revision and its newest rollouts, newest first.
pub async fn recent(
    core: &Core,
    limit: u32,
) -> Result<(u64, Vec<rollout::Report>), super::ServiceError> {
    let net = core.store.get_network(core.network_id).await?;
    let mut out = vec![];
    for row in core.store.recent_rollouts(core.network_id, limit).await? {
        out.push(report_of(core, &row).await?);
    }
    Ok((net.revision, out))
}
