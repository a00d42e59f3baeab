//! The key-expiry sweeper: once a second, devices whose key has expired are noted
//! (`device.expired` in the audit log, a new network revision) and the change is
//! published, so every peer drops the device within about a second and the device's
//! own stream is closed with "key expired".
//!
//! Started by `zmesh-console serve`, so every console that serves agents sweeps; with several
//! replicas each claims a given expiry at most once (see
//! [`crate::store::Store::note_expired_devices`]).

use std::time::Duration;

use zmesh_shared::time::now_ms;

use super::Core;
use crate::store::AuditCtx;

const EVERY: Duration = Duration::from_secs(1);
/// Devices claimed per transaction, so a mass expiry does not hold the write lock long.
const BATCH: i64 = 500;

/// Runs until the task is dropped or aborted.
pub async fn run(state: Core) {
    let store = state.store.acting(AuditCtx::system());
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A bounded number of batches per tick; the rest waits for the next tick.
        for _ in 0..20 {
            match store.note_expired_devices(now_ms(), BATCH).await {
                Ok(nets) if nets.is_empty() => break,
                Ok(nets) => {
                    for n in nets {
                        tracing::info!(network = %n, "device key expired; peers told");
                        state.publish_network(n).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "key expiry sweep failed; retrying");
                    break;
                }
            }
        }
    }
}
