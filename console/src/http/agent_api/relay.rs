//! `GET /agent/v1/relay`: the built-in relay on the console's HTTPS port.
//!
//! An HTTP/1.1 upgrade (`Connection: Upgrade`, `Upgrade: zmesh-relay`), as Tailscale's
//! DERP does on 443: after `101 Switching Protocols` the relay protocol
//! (`zmesh_shared::relay`) runs on the same TLS connection, so devices get a relay
//! wherever they reach the console, also through firewalls that pass only HTTPS. A
//! plain upgrade rather than a WebSocket: the relay protocol is already framed, and
//! WebSocket framing would add a second frame layer and the client's masking of every
//! byte for nothing (agents pin the console's certificate, so no middlebox that would
//! only pass WebSockets can sit in between anyway).
//!
//! No credential is checked here: the relay checks its own (a console-signed relay
//! token and proof of the WireGuard key it names) on the upgraded stream before it
//! forwards anything, which costs a signature check and no database lookup, so a
//! flood of bogus upgrades does not reach the database. Connections still
//! authenticating are limited per source address (429 beyond that).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use zmesh_shared::wire::RELAY_UPGRADE;

use crate::http::{ApiError, AppState};

/// How long the switch to the upgraded connection may take.
const UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `headers` ask for the relay upgrade: `Upgrade: zmesh-relay` and an
/// `upgrade` token in `Connection` (both case-insensitive, as HTTP says).
fn wants_relay(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(RELAY_UPGRADE));
    let connection = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    upgrade && connection
}

pub async fn relay(State(state): State<AppState>, mut req: Request) -> Response {
    let Some(door) = state.relay.clone() else {
        return ApiError::NotFound {
            what: "built-in relay",
        }
        .into_response();
    };
    if !wants_relay(req.headers()) {
        return ApiError::bad_request(
            "not_an_upgrade",
            "expected Connection: Upgrade and Upgrade: zmesh-relay",
        )
        .into_response();
    }
    // Present on HTTP/1.1 connections served with upgrades (not on HTTP/2).
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::bad_request("not_an_upgrade", "this connection cannot be upgraded")
            .into_response();
    };
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let ip = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.ip());
    let Some(ticket) = (door.0)(ip) else {
        tracing::debug!(
            ?peer,
            "relay upgrade refused: too many still authenticating"
        );
        return ApiError::TooMany {
            code: "relay_busy",
            message: "too many relay connections from this address are still \
                      authenticating; retry later"
                .into(),
        }
        .into_response();
    };
    tokio::spawn(async move {
        // The 101 goes out right after this returns; a client that never lets it
        // finish gives its slot back here.
        match tokio::time::timeout(UPGRADE_TIMEOUT, on_upgrade).await {
            Ok(Ok(io)) => ticket(io).await,
            Ok(Err(e)) => tracing::debug!(?peer, error = %e, "relay upgrade failed"),
            Err(_) => tracing::debug!(?peer, "relay upgrade timed out"),
        }
    });
    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    res.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(RELAY_UPGRADE));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_upgrade_headers() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            m
        };
        assert!(wants_relay(&h(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "ZMESH-relay")
        ])));
        assert!(!wants_relay(&h(&[("upgrade", "zmesh-relay")])));
        assert!(!wants_relay(&h(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(!wants_relay(&h(&[])));
    }
}
