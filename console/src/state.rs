//! Shared state of the HTTP layer: the store, the default network, the peer-map
//! signing key, the change bus and the snapshot cache. Cheap to clone.

use std::sync::Arc;
use std::time::Duration;

use zmesh_shared::{CertFingerprint, NetworkId, SigningKey};

use crate::bus::{Bus, Change, SnapshotCache};
use crate::store::{Store, StoreError};

#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub struct Inner {
    pub store: Store,
    /// The network admins and enrollment keys operate on (one per console for now).
    pub network_id: NetworkId,
    pub signing_key: SigningKey,
    /// Put into enrollment keys so agents can pin the console certificate.
    pub cert_pin: Option<CertFingerprint>,
    pub bus: Bus,
    pub snapshots: SnapshotCache,
    /// How often streams ping agents; a stream silent for 3 intervals is dropped.
    pub ping_interval: Duration,
    /// STUN servers and relays agents are told about; `None`: none.
    pub nat: Option<crate::nat::NatAdvert>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl AppState {
    /// Resolves (creating if needed) the default network.
    pub async fn new(
        store: Store,
        signing_key: SigningKey,
        cert_pin: Option<CertFingerprint>,
        bus: Bus,
    ) -> Result<Self, StoreError> {
        let net = store.default_network().await?;
        Ok(AppState {
            inner: Arc::new(Inner {
                store,
                network_id: net.id,
                signing_key,
                cert_pin,
                bus,
                snapshots: SnapshotCache::default(),
                ping_interval: Duration::from_secs(15),
                nat: None,
            }),
        })
    }

    /// Same state with another ping interval (tests use a short one).
    pub fn with_ping_interval(self, d: Duration) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.ping_interval = d;
                AppState {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => AppState { inner },
        }
    }

    /// Same state telling agents about STUN servers and relays.
    pub fn with_nat(self, nat: crate::nat::NatAdvert) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.nat = (!nat.is_empty()).then_some(nat);
                AppState {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => {
                tracing::error!("state already shared; NAT settings not applied");
                AppState { inner }
            }
        }
    }

    /// Publishes the network's current revision after a committed mutation.
    pub async fn publish_network(&self, network_id: NetworkId) {
        match self.store.get_network(network_id).await {
            Ok(n) => self.bus.publish(Change::Network {
                network_id,
                revision: n.revision,
            }),
            Err(e) => {
                tracing::error!(error = %e, %network_id, "could not read revision to publish a change")
            }
        }
    }
}
