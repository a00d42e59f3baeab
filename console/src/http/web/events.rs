//! `GET /ui/events`: server-sent events that keep the live pages (overview, devices)
//! current without polling. The stream listens to the change bus and sends one
//! `change` event when something of this console's network changed (a device enrolled,
//! approved, renamed, revoked or deleted, or an agent connected); the page's script
//! then re-reads the page once and swaps its live parts. Bursts are coalesced: at most
//! one event per [`DEBOUNCE`], so a thousand enrollments cost a few re-reads, not a
//! thousand. A comment line every [`KEEP_ALIVE`] keeps proxies from closing the stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use zmesh_shared::NetworkId;

use crate::bus::Change;
use crate::http::state::AppState;

/// Changes arriving within this time after the first one go out as one event.
pub const DEBOUNCE: Duration = Duration::from_millis(250);
/// How often an idle stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Whether a change concerns the pages of `net`.
fn relevant(c: &Change, net: NetworkId) -> bool {
    match c {
        Change::DeviceRevoked { .. } => true,
        other => other.network() == Some(net),
    }
}

/// Waits for the next relevant change (or a lag, after which the page must re-read
/// anyway), then swallows what follows within [`DEBOUNCE`]. `None`: the bus is gone.
async fn next_batch(rx: &mut Receiver<Change>, net: NetworkId) -> Option<u64> {
    loop {
        match rx.recv().await {
            Ok(c) if relevant(&c, net) => break,
            Ok(_) => continue,
            Err(RecvError::Lagged(_)) => break,
            Err(RecvError::Closed) => return None,
        }
    }
    let mut n = 1u64;
    let deadline = tokio::time::sleep(DEBOUNCE);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return Some(n),
            r = rx.recv() => match r {
                Ok(c) if relevant(&c, net) => n += 1,
                Ok(_) => {}
                Err(RecvError::Lagged(k)) => n += k,
                Err(RecvError::Closed) => return Some(n),
            },
        }
    }
}

pub async fn events(State(state): State<AppState>) -> Response {
    let rx = state.bus.subscribe();
    let net = state.network_id;
    let stream = futures_util::stream::unfold(rx, move |mut rx| async move {
        let n = next_batch(&mut rx, net).await?;
        let ev = Event::default().event("change").data(n.to_string());
        Some((Ok::<_, Infallible>(ev), rx))
    });
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use zmesh_shared::DeviceId;

    #[tokio::test]
    async fn bursts_are_coalesced_and_other_networks_ignored() {
        let bus = crate::bus::Bus::new();
        let mut rx = bus.subscribe();
        let net = NetworkId::new();
        bus.publish(Change::Network {
            network_id: NetworkId::new(),
            revision: 1,
        });
        for revision in 1..=5 {
            bus.publish(Change::Network {
                network_id: net,
                revision,
            });
        }
        bus.publish(Change::DeviceSeen {
            network_id: net,
            device_id: DeviceId::new(),
        });
        assert_eq!(next_batch(&mut rx, net).await, Some(6));
        let none = tokio::time::timeout(Duration::from_millis(50), next_batch(&mut rx, net)).await;
        assert!(none.is_err(), "no further event without a change");
    }
}
