//! Signing checkpoints of the chain head: every N events or T seconds while serving,
//! at shutdown, and on demand. Several replicas may race to sign the same head; the
//! store keeps the first and ignores the rest.
//!
//! The access log's chain is anchored here too: every T seconds (and before a
//! shutdown or on-demand checkpoint) its head goes into the audit log as an
//! `access.checkpoint` event, which the next signed checkpoint then covers.

use std::time::{Duration, Instant};

use zmesh_shared::audit::Checkpoint;
use zmesh_shared::time::now_ms;
use zmesh_shared::SigningKey;

use crate::store::{Store, StoreError};

/// How often the background task looks at the head.
const POLL: Duration = Duration::from_secs(1);

/// Signs the current head unless it is empty or already checkpointed. Returns the new
/// checkpoint, if one was made.
pub async fn create(
    store: &Store,
    key: &SigningKey,
    kind: &str,
) -> Result<Option<Checkpoint>, StoreError> {
    if kind != "periodic" {
        store.anchor_access_head().await?;
    }
    let head = store.audit_head().await?;
    if head.seq == 0 {
        return Ok(None);
    }
    let last = latest_seq(store).await?;
    if last >= Some(head.seq) {
        return Ok(None);
    }
    let c = Checkpoint::sign(head.seq, &head.hash, now_ms(), key);
    Ok(store.insert_checkpoint(&c, kind).await?.then_some(c))
}

async fn latest_seq(store: &Store) -> Result<Option<u64>, StoreError> {
    let mut latest = store.list_checkpoints().await?.last().map(|c| c.seq);
    if let Some(a) = store.audit_anchor().await? {
        latest = latest.max(Some(a.seq));
    }
    Ok(latest)
}

/// Runs until `stop` resolves, then signs a final checkpoint.
pub async fn run(
    state: crate::service::Core,
    every_events: u64,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let (store, key) = (&state.store, &state.signing_key);
    let mut stop = std::pin::pin!(stop);
    let mut last_at = Instant::now();
    let mut last_anchor = Instant::now();
    let mut ticker = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticker.tick() => {}
        }
        if last_anchor.elapsed() >= interval {
            last_anchor = Instant::now();
            match store.anchor_access_head().await {
                Ok(Some(seq)) => tracing::debug!(seq, "access log anchored in the audit log"),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "could not anchor the access log"),
            }
        }
        let due = async {
            let head = store.audit_head().await?;
            let last = latest_seq(store).await?.unwrap_or(0);
            let pending = head.seq.saturating_sub(last);
            Ok::<bool, StoreError>(
                pending >= every_events || (pending > 0 && last_at.elapsed() >= interval),
            )
        };
        match due.await {
            Ok(true) => match create(store, key, "periodic").await {
                Ok(c) => {
                    last_at = Instant::now();
                    if let Some(c) = c {
                        tracing::debug!(seq = c.seq, "audit checkpoint signed");
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not sign an audit checkpoint"),
            },
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the audit head"),
        }
    }
    match create(store, key, "shutdown").await {
        Ok(Some(c)) => tracing::info!(seq = c.seq, "audit checkpoint signed at shutdown"),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "could not sign the shutdown audit checkpoint"),
    }
}
