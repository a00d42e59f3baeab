//! The console side of the tamper-evident audit log: signed checkpoints, verification
//! (of the database and of an export file), streamed exports (JSON Lines, CSV, CEF),
//! retention pruning behind a signed anchor, and SIEM forwarding over syslog.
//!
//! The chain itself (hashing, checkpoint signatures, the streaming verifier) is pure
//! code in `zmesh_shared::audit`; events are appended by the store in the same
//! transaction as the change they record (`store/audit.rs`).

pub mod checkpoint;
pub mod export;
pub mod retention;
pub mod syslog;
pub mod verify;

use std::time::Duration;

/// Audit settings of `zmesh-console serve`, validated once.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Sign a checkpoint once this many events were appended since the last one...
    pub checkpoint_every_events: u64,
    /// ...or this much time passed with new events.
    pub checkpoint_interval: Duration,
    /// Events (and flow records) older than this are pruned; `None` keeps everything.
    pub retention: Option<Duration>,
    /// Forward every event to a syslog receiver.
    pub syslog: Option<syslog::SyslogTarget>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_every_events: 1000,
            checkpoint_interval: Duration::from_secs(60),
            retention: None,
            syslog: None,
        }
    }
}

/// Starts the checkpoint, retention and forwarding tasks of `serve`; they end when
/// `stop` turns true (the checkpoint task signs a last checkpoint first).
pub fn spawn_tasks(
    state: &crate::state::AppState,
    cfg: &AuditConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = vec![tokio::spawn(checkpoint::run(
        state.clone(),
        cfg.checkpoint_every_events,
        cfg.checkpoint_interval,
        stopped(stop.clone()),
    ))];
    if let Some(r) = cfg.retention {
        tasks.push(tokio::spawn(retention::run(
            state.clone(),
            r,
            stopped(stop.clone()),
        )));
    }
    if let Some(t) = cfg.syslog.clone() {
        tasks.push(tokio::spawn(syslog::run(
            state.store.clone(),
            t,
            stopped(stop),
        )));
    }
    tasks
}
