//! Shared state of the HTTP layer: the service [`Core`] (store, network, signing key,
//! bus, view cache) plus what only HTTP needs (the certificate pin put into enrollment
//! keys, the stream ping interval, NAT settings for agents, the built-in relay's door).
//! Cheap to clone.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use zmesh_shared::{CertFingerprint, SigningKey};

use crate::bus::Bus;
use crate::domain::nat::NatAdvert;
use crate::infra::oidc::Oidc;
use crate::service::Core;
use crate::store::{Store, StoreError};

#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
pub struct Inner {
    /// What the service functions take; its fields (`store`, `network_id`, `bus`, ...)
    /// are reachable through `AppState` too.
    pub core: Core,
    /// Put into enrollment keys so agents can pin the console certificate.
    pub cert_pin: Option<CertFingerprint>,
    /// How often streams ping agents; a stream silent for 3 intervals is dropped.
    pub ping_interval: Duration,
    /// STUN servers and relays agents are told about; `None`: none.
    pub nat: Option<NatAdvert>,
    /// Single sign-on through an OpenID Provider; `None`: off.
    pub oidc: Option<Arc<Oidc>>,
    /// `--public-url`: what links the console hands out start with; `None`: the host
    /// the client addressed.
    pub public_url: Option<String>,
    /// The built-in relay behind `GET /agent/v1/relay`; `None`: not served here.
    pub relay: Option<RelayDoor>,
}

/// Runs the relay protocol on one upgraded connection; holds the connection's slot
/// among those still authenticating.
pub type RelayTicket = Box<dyn FnOnce(hyper::upgrade::Upgraded) -> BoxFuture<'static, ()> + Send>;

/// The built-in relay as the HTTP layer sees it: given the client's address, a ticket
/// to serve its upgraded connection, or `None` when that address has too many
/// connections still authenticating. Made by `crate::relay::upgrade` (the relay ranks
/// above this layer, so `server` brings it in).
#[derive(Clone)]
pub struct RelayDoor(pub Arc<dyn Fn(IpAddr) -> Option<RelayTicket> + Send + Sync>);

impl std::fmt::Debug for RelayDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayDoor")
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl std::ops::Deref for Inner {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl AppState {
    /// The same state acting in another network (see `http::scope`).
    pub fn in_network(&self, network_id: zmesh_shared::NetworkId) -> AppState {
        if network_id == self.core.network_id {
            return self.clone();
        }
        let mut inner = Inner::clone(&self.inner);
        inner.core = self.core.in_network(network_id);
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// Resolves (creating if needed) the default network.
    pub async fn new(
        store: Store,
        signing_key: SigningKey,
        cert_pin: Option<CertFingerprint>,
        bus: Bus,
    ) -> Result<Self, StoreError> {
        Ok(AppState {
            inner: Arc::new(Inner {
                core: Core::new(store, signing_key, bus).await?,
                cert_pin,
                ping_interval: Duration::from_secs(15),
                nat: None,
                oidc: None,
                public_url: None,
                relay: None,
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

    /// Same state with another key lifetime for devices enrolled by login (`None`:
    /// never expires); before the state is shared.
    pub fn with_device_key_lifetime(self, d: Option<Duration>) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.core = inner.core.with_device_key_lifetime(d);
                AppState {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => {
                tracing::error!("state already shared; device key lifetime not applied");
                AppState { inner }
            }
        }
    }

    /// Same state counting into `metrics` (see [`Core::with_metrics`]); before the state
    /// is shared.
    pub fn with_metrics(self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.core = inner.core.with_metrics(metrics);
                AppState {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => {
                tracing::error!("state already shared; metrics registry not replaced");
                AppState { inner }
            }
        }
    }

    /// Same state with the console's public URL.
    pub fn with_public_url(self, url: Option<String>) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.public_url = url;
                AppState {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => AppState { inner },
        }
    }

    /// Same state with single sign-on.
    pub fn with_oidc(self, oidc: Oidc) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.oidc = Some(Arc::new(oidc));
                AppState {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => {
                tracing::error!("state already shared; single sign-on not enabled");
                AppState { inner }
            }
        }
    }

    /// Same state telling agents about STUN servers and relays.
    pub fn with_nat(self, nat: NatAdvert) -> Self {
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

    /// Same state serving the built-in relay on the HTTPS port.
    pub fn with_relay(self, door: RelayDoor) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.relay = Some(door);
                AppState {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => {
                tracing::error!("state already shared; built-in relay not served");
                AppState { inner }
            }
        }
    }
}
