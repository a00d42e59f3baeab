//! The only code that changes the console's state. One function per use case (enroll a
//! device, revoke it, set the policy, create a key, a user, a token, ...): each runs one
//! store transaction that writes the change, its audit event and, when peers can see
//! it, the network revision bump; then it publishes the change on the bus. Every HTTP
//! surface (REST API, agent API, web pages) and the admin CLI call these, so a change
//! has one implementation whatever door it came through.
//!
//! Reads that need no write (lists, lookups) go straight to the store. Errors are one
//! [`ServiceError`]; the HTTP layer maps it to a status.

pub mod access;
pub mod agents;
pub mod audit;
pub mod devices;
pub mod dns;
pub mod enroll;
pub mod enroll_keys;
mod error;
pub mod expiry;
pub mod idp_refresh;
pub mod login;
pub mod networks;
pub mod policy;
pub mod rollouts;
pub mod routes;
pub mod sessions;
pub mod sso;
pub mod tokens;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use zmesh_shared::{NetworkId, SigningKey};

use crate::bus::{Bus, Change, SnapshotCache};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

pub use crate::store::AuditCtx;
pub use error::ServiceError;

/// What every use case needs: the store, the network it acts in, the peer-map signing
/// key, the change bus, the per-network view cache and the metrics. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Core {
    inner: Arc<CoreInner>,
    /// The network this core acts in: the first network ("default") for the core
    /// `serve` makes, another for the copies [`Core::in_network`] makes per request.
    pub network_id: NetworkId,
}

#[derive(Debug)]
pub struct CoreInner {
    pub store: Store,
    /// The first network ("default"), where a request names no other.
    pub default_network_id: NetworkId,
    pub signing_key: SigningKey,
    pub bus: Bus,
    pub snapshots: SnapshotCache,
    /// How long the key of a device enrolled (or re-authenticated) by login lasts before
    /// its user must sign in again; `None`: forever. Key-enrolled devices do not expire
    /// unless an admin sets an expiry.
    pub device_key_lifetime: Option<Duration>,
    /// Where published revisions and agents' acknowledgements are noted
    /// ([`rollouts::run`] records them).
    pub rollouts: rollouts::Rollouts,
    /// The console's Prometheus metrics (one registry per core, so per process).
    pub metrics: Arc<Metrics>,
}

impl std::ops::Deref for Core {
    type Target = CoreInner;
    fn deref(&self) -> &CoreInner {
        &self.inner
    }
}

impl Core {
    /// Resolves (creating if needed) the default network.
    pub async fn new(store: Store, signing_key: SigningKey, bus: Bus) -> Result<Self, StoreError> {
        let net = store.default_network().await?;
        Ok(Core {
            inner: Arc::new(CoreInner {
                store,
                default_network_id: net.id,
                signing_key,
                bus,
                snapshots: SnapshotCache::default(),
                device_key_lifetime: Some(login::DEFAULT_KEY_LIFETIME),
                rollouts: rollouts::Rollouts::default(),
                metrics: Arc::new(Metrics::new()),
            }),
            network_id: net.id,
        })
    }

    /// The same core acting in another network (cheap: shares everything else).
    pub fn in_network(&self, network_id: NetworkId) -> Core {
        Core {
            inner: self.inner.clone(),
            network_id,
        }
    }

    /// Same core with another key lifetime for devices enrolled by login (`None`: keys
    /// never expire). Only before the core is shared (at start-up); otherwise unchanged.
    pub fn with_device_key_lifetime(self, d: Option<Duration>) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.device_key_lifetime = d;
                Core {
                    inner: Arc::new(inner),
                    network_id: self.network_id,
                }
            }
            Err(inner) => {
                tracing::error!("core already shared; device key lifetime not applied");
                Core {
                    inner,
                    network_id: self.network_id,
                }
            }
        }
    }

    /// Same core counting into `metrics` (made once by `serve` at start-up, before the
    /// STUN responder that counts into it too). Only before the core is shared.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.metrics = metrics;
                Core {
                    inner: Arc::new(inner),
                    network_id: self.network_id,
                }
            }
            Err(inner) => {
                tracing::error!("core already shared; metrics registry not replaced");
                Core {
                    inner,
                    network_id: self.network_id,
                }
            }
        }
    }

    /// Publishes the network's current revision after a committed mutation (an admin's,
    /// the system's: its rollout gets a `change.applied` audit event).
    pub async fn publish_network(&self, network_id: NetworkId) {
        self.publish(network_id, true).await
    }

    /// Publishes a change a device made to itself (its endpoints): tracked like any
    /// other, but not audited again when applied (roaming is frequent).
    pub async fn publish_device_change(&self, network_id: NetworkId) {
        self.publish(network_id, false).await
    }

    /// Records the time from a change to one connected agent's acknowledgement.
    pub(crate) fn metrics_observe_applied(&self, ms: i64) {
        self.metrics
            .observe_change_applied(ms.max(0) as f64 / 1000.0);
    }

    /// Publishes `revision` of the network, known from the transaction that made it.
    pub fn publish_revision(&self, network_id: NetworkId, revision: u64) {
        self.bus.publish(Change::Network {
            network_id,
            revision,
        });
        self.rollouts.note(network_id, revision, true);
    }

    async fn publish(&self, network_id: NetworkId, audited: bool) {
        match self.store.get_network(network_id).await {
            Ok(n) => {
                self.bus.publish(Change::Network {
                    network_id,
                    revision: n.revision,
                });
                self.rollouts.note(network_id, n.revision, audited);
            }
            Err(e) => {
                tracing::error!(error = %e, %network_id, "could not read revision to publish a change")
            }
        }
    }
}
