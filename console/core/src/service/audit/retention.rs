//! Retention: events and access records older than the configured age are deleted, and
//! a checkpoint signed over the newest deleted event is left as the anchor the rest of
//! the chain verifies from. The pruning itself is recorded as an `audit.prune` event.

use std::time::Duration;

use zmesh_shared::audit::Checkpoint;
use zmesh_shared::time::now_ms;
use zmesh_shared::SigningKey;

use crate::store::{Store, StoreError};

/// How often the serve loop prunes.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What one pruning removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub through_seq: u64,
    pub events: u64,
    /// Access records deleted.
    pub flows: u64,
}

/// Prunes everything older than `retention`; `None` when nothing was old enough.
pub async fn prune(
    store: &Store,
    key: &SigningKey,
    retention: Duration,
) -> Result<Option<Pruned>, StoreError> {
    let cutoff = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    // The access log first (its cut is recorded by an `access.prune` event of its own).
    let flows = store.prune_access(cutoff).await?;
    let Some(cut) = store.audit_cut_before(cutoff).await? else {
        return Ok(None);
    };
    let anchor = Checkpoint::sign(cut.seq, &cut.hash, now_ms(), key);
    let (events, _legacy) = store.prune_audit(&anchor, cutoff).await?;
    tracing::info!(
        through_seq = cut.seq,
        events,
        access_records = flows,
        "audit log pruned"
    );
    Ok(Some(Pruned {
        through_seq: cut.seq,
        events,
        flows,
    }))
}

/// Prunes at start and then every [`PRUNE_EVERY`] until `stop` resolves.
pub async fn run(
    state: crate::service::Core,
    retention: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let mut ticker = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = prune(&state.store, &state.signing_key, retention).await {
            // another replica may have pruned the same range first
            tracing::warn!(error = %e, "audit pruning failed");
        }
    }
}
