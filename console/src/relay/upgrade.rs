//! The relay behind the console's HTTPS port: turns a [`Relay`] into the
//! [`RelayDoor`] the HTTP layer's `GET /agent/v1/relay` hands upgraded connections to
//! (see `http::agent_api::relay`). The connection then runs exactly as one on the
//! relay's own TLS/TCP port: same authentication, same limits, same relay instance,
//! so devices on either door reach each other.

use std::sync::Arc;

use hyper_util::rt::TokioIo;

use super::{handle, Relay};
use crate::http::{RelayDoor, RelayTicket};

pub fn door(relay: Arc<Relay>) -> RelayDoor {
    RelayDoor(Arc::new(move |ip| {
        let admission = relay.admit(ip)?;
        let relay = Arc::clone(&relay);
        let ticket: RelayTicket = Box::new(move |io| {
            Box::pin(async move {
                if let Err(e) = handle(TokioIo::new(io), relay, Some(admission)).await {
                    tracing::debug!(%ip, error = %e, "relay connection (HTTPS) ended");
                }
            })
        });
        Some(ticket)
    }))
}
