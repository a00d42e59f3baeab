//! `GET /ui/events`: server-sent events that keep the live pages (overview, devices)
//! current without polling. The stream listens to the change bus and sends one
//! `change` event when something of this console's network changed (a device enrolled,
//! approved, renamed, revoked or deleted, or an agent connected); the page's script
//! then re-reads the page once and swaps its live parts. Bursts are coalesced: at most
//! one event per [`DEBOUNCE`], so a thousand enrollments cost a few re-reads, not a
//! thousand. A comment line every [`KEEP_ALIVE`] keeps proxies from closing the stream.
//!
//! Going offline is not an event: it is a device's silence outlasting three pings. So the
//! stream also wakes when the first online device would fall silent, re-reads who is
//! online, and sends a `change` when someone went offline (a device heard from in the
//! meantime only moves the next wake-up).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use zmesh_shared::time::now_ms;
use zmesh_shared::{DeviceId, NetworkId};

use crate::bus::Change;
use crate::domain::presence::online_and_next_expiry;
use crate::http::scope::Scoped;
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

/// Who is online now and when the first of them would go offline (ms since the epoch).
/// A store error leaves the offline push out until the next change (logged).
async fn presence(state: &AppState) -> (BTreeSet<DeviceId>, Option<i64>) {
    match state.store.list_devices(state.network_id).await {
        Ok(devs) => online_and_next_expiry(
            devs.iter().map(|d| (d.id, d.last_seen_ms)),
            state.ping_interval,
            now_ms(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "live pages: cannot read device presence");
            (BTreeSet::new(), None)
        }
    }
}

/// The next event for a page: a batch of bus changes, or devices gone offline.
async fn next_event(
    state: &AppState,
    rx: &mut Receiver<Change>,
    online: &mut BTreeSet<DeviceId>,
    wake: &mut Option<i64>,
) -> Option<u64> {
    loop {
        let sleep = match *wake {
            Some(t) => Duration::from_millis((t - now_ms()).max(0) as u64),
            None => Duration::from_secs(24 * 3600),
        };
        let n = tokio::select! {
            n = next_batch(rx, state.network_id) => n?,
            _ = tokio::time::sleep(sleep) => {
                let (now_online, next) = presence(state).await;
                let gone = online.difference(&now_online).count() as u64;
                *online = now_online;
                *wake = next;
                if gone == 0 {
                    continue;
                }
                gone
            }
        };
        (*online, *wake) = presence(state).await;
        return Some(n);
    }
}

pub async fn events(Scoped(state): Scoped) -> Response {
    let rx = state.bus.subscribe();
    let (online, wake) = presence(&state).await;
    let stream = futures_util::stream::unfold(
        (state, rx, online, wake),
        |(state, mut rx, mut online, mut wake)| async move {
            let n = next_event(&state, &mut rx, &mut online, &mut wake).await?;
            let ev = Event::default().event("change").data(n.to_string());
            Some((Ok::<_, Infallible>(ev), (state, rx, online, wake)))
        },
    );
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
