//! Change fan-out from committed mutations to the agent streams.
//!
//! Handlers publish a [`Change`] after their transaction committed; every stream task
//! holds a broadcast receiver and reacts to changes of its own network. Streams then
//! read the network snapshot through [`SnapshotCache`], so N streams woken by one
//! change cause one database read and one policy compilation, not N.
//!
//! A [`Bus`] can also carry a remote leg ([`RemoteBus`]): on PostgreSQL each published
//! change is sent with `NOTIFY zmesh_changes` and notifications from other replicas
//! are fed into the local broadcast, so agents connected to any replica see changes
//! made through any other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use zmesh_shared::{DeviceId, NetworkId};

use crate::store::{NetworkSnapshot, Store, StoreError};

/// Channel name used for NOTIFY/LISTEN on PostgreSQL.
pub const PG_CHANNEL: &str = "zmesh_changes";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// Something peers can see changed; `revision` is the network revision after it.
    Network {
        network_id: NetworkId,
        revision: u64,
    },
    /// The device's credential is dead (revoked or deleted): its stream must close.
    DeviceRevoked { device_id: DeviceId, reason: String },
    /// A device's agent connected (or said Hello again): its online state, last-seen
    /// time or agent version changed. Nothing peers see; web pages watching the device
    /// list refresh on it.
    DeviceSeen {
        network_id: NetworkId,
        device_id: DeviceId,
    },
}

impl Change {
    /// The network the change is about, when it names one.
    pub fn network(&self) -> Option<NetworkId> {
        match self {
            Change::Network { network_id, .. } | Change::DeviceSeen { network_id, .. } => {
                Some(*network_id)
            }
            Change::DeviceRevoked { .. } => None,
        }
    }
}

/// Sends a change to other replicas. Implemented by the PostgreSQL NOTIFY leg.
pub trait RemoteBus: Send + Sync + 'static {
    fn send(&self, change: &Change);
}

#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Change>,
    remote: Option<Arc<dyn RemoteBus>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("receivers", &self.tx.receiver_count())
            .field("remote", &self.remote.is_some())
            .finish()
    }
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    /// Capacity bounds memory; a stream that lags behind re-reads the latest state.
    pub const CAPACITY: usize = 1024;

    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(Self::CAPACITY);
        Bus { tx, remote: None }
    }

    pub fn with_remote(mut self, remote: Arc<dyn RemoteBus>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// Publishes locally and, when configured, to the other replicas.
    pub fn publish(&self, change: Change) {
        if let Some(r) = &self.remote {
            r.send(&change);
        }
        self.publish_local(change);
    }

    /// Publishes to this replica only (used for changes that came from other replicas).
    pub fn publish_local(&self, change: Change) {
        tracing::debug!(?change, "publish change");
        // No receivers is fine: no agent is connected.
        let _ = self.tx.send(change);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }
}

pub use crate::domain::view::{NetworkView, QuickDelta};

/// The latest view of one network; the async lock makes concurrent readers wait for
/// one database read (and one compilation) instead of each doing their own.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<NetworkView>>>>;

/// One snapshot per network, refreshed when a newer revision is asked for.
#[derive(Default)]
pub struct SnapshotCache {
    slots: Mutex<HashMap<NetworkId, Slot>>,
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotCache")
    }
}

impl SnapshotCache {
    /// A snapshot of `net` at `min_revision` or newer. Concurrent callers wait on the
    /// first one's read and then share its result.
    pub async fn get(
        &self,
        store: &Store,
        net: NetworkId,
        min_revision: u64,
    ) -> Result<Arc<NetworkSnapshot>, StoreError> {
        Ok(self.view(store, net, min_revision).await?.snapshot.clone())
    }

    /// The snapshot at `min_revision` or newer with its policy compiled.
    pub async fn view(
        &self,
        store: &Store,
        net: NetworkId,
        min_revision: u64,
    ) -> Result<Arc<NetworkView>, StoreError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(net).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some(v) = guard.as_ref() {
            if v.snapshot.network.revision >= min_revision {
                return Ok(v.clone());
            }
        }
        let snapshot = Arc::new(store.network_snapshot(net).await?);
        let now = zmesh_shared::time::now_ms();
        let quick = guard.as_ref().and_then(|old| {
            let peers = crate::domain::peermap::quick_changes(
                &old.snapshot,
                old.built_at_ms,
                &snapshot,
                now,
            )?;
            Some((
                old.compiled.clone(),
                QuickDelta {
                    from_revision: old.revision(),
                    peers,
                },
            ))
        });
        let (compiled, quick) = match quick {
            // Same policy over the same inventory: the old compilation holds.
            Some((c, q)) => (c, Some(q)),
            None => {
                let s = snapshot.clone();
                // Large policies take milliseconds to compile: keep that off the async workers.
                let c = tokio::task::spawn_blocking(move || {
                    crate::domain::policy::compile_snapshot(&s)
                })
                .await
                .map_err(|e| StoreError::corrupt("policy (compilation failed)", e))?;
                (Arc::new(c), None)
            }
        };
        let prev = guard.clone();
        let fresh = Arc::new(NetworkView::new(
            snapshot,
            compiled,
            now,
            quick,
            prev.as_deref(),
        ));
        *guard = Some(fresh.clone());
        Ok(fresh)
    }
}

/// PostgreSQL leg: NOTIFY on publish, LISTEN in a background task.
pub mod pg {
    use super::*;
    use sqlx::postgres::PgListener;

    #[derive(Serialize, Deserialize)]
    struct Envelope {
        origin: String,
        change: Change,
    }

    pub struct PgNotify {
        // A native pool: the Any driver cannot decode pg_notify's `void` result.
        pool: sqlx::PgPool,
        origin: String,
    }

    impl RemoteBus for PgNotify {
        fn send(&self, change: &Change) {
            let payload = match serde_json::to_string(&Envelope {
                origin: self.origin.clone(),
                change: change.clone(),
            }) {
                Ok(p) => p,
                Err(_) => return,
            };
            let pool = self.pool.clone();
            tokio::spawn(async move {
                let r = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(PG_CHANNEL)
                    .bind(payload)
                    .execute(&pool)
                    .await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "NOTIFY of a change failed; other replicas will catch up on their next change");
                }
            });
        }
    }

    /// Wires `bus` to PostgreSQL: returns the bus with its NOTIFY leg and starts the
    /// LISTEN task, which reconnects on failure.
    pub async fn attach(bus: Bus, database_url: &str) -> Result<Bus, sqlx::Error> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(database_url)
            .await?;
        let origin = uuid::Uuid::new_v4().to_string();
        let mut listener = PgListener::connect(database_url).await?;
        listener.listen(PG_CHANNEL).await?;
        let local = bus.clone();
        let me = origin.clone();
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(n) => match serde_json::from_str::<Envelope>(n.payload()) {
                        Ok(env) if env.origin != me => local.publish_local(env.change),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "ignoring malformed change notification")
                        }
                    },
                    Err(e) => {
                        // PgListener reconnects by itself on the next recv; pause to avoid a hot loop.
                        tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(bus.with_remote(Arc::new(PgNotify { pool, origin })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_sees_each_change() {
        let bus = Bus::new();
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        let c = Change::Network {
            network_id: NetworkId::new(),
            revision: 3,
        };
        bus.publish(c.clone());
        assert_eq!(a.recv().await.unwrap(), c);
        assert_eq!(b.recv().await.unwrap(), c);
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Change>(&j).unwrap(), c);
    }
}
