//! NAT traversal wiring of the daemon: applies the console's `NatConfig` (STUN servers
//! for the data plane, relays plus a relay token) and keeps one relay connection open,
//! to the nearest relay, for peers without a direct path.
//!
//! The connection is kept warm, whether or not a peer needs it now, as Tailscale keeps
//! its home DERP connection: a relay can only deliver to a device that is connected to
//! it, and a device cannot know that a peer behind a symmetric NAT is about to send to
//! it, so a device that connected only on demand would be unreachable until something
//! told it to come. Warm, the first packet to any peer goes through the relay at once
//! (the path state sends over the relay until a direct path answers a probe, then
//! moves), and the cost is one idle TLS connection with a ping every 15 s.
//!
//! The relay connection is a TLS/TCP stream (see `io::relay`), so it also works where
//! UDP is blocked; the console's built-in relay is on its HTTPS port (an HTTP upgrade,
//! `RelayInfo::https_upgrade`), so it works wherever the console does. Datagrams the packet loop addresses to a relay endpoint arrive here
//! on a channel and go out on the stream; datagrams the relay delivers are handed back
//! to the loop. A fresh token (the console sends one at half the lifetime) makes the
//! task open a new connection, which the relay lets replace the old one.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::sync::{mpsc, watch};
use zmesh_shared::relay::RelayToken;
use zmesh_shared::wire::RelayInfo;
use zmesh_shared::WgPrivateKey;

use super::tls::{client_config, Trust};
use super::Shared;
use crate::io::relay::{self, RelayEvent};
use crate::io::DataPlane;
use crate::statedir::Enrollment;

/// Datagrams queued towards the relay before the packet loop drops new ones.
const RELAY_QUEUE: usize = 1024;
const RELAY_PING_EVERY: Duration = Duration::from_secs(15);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The console's NAT settings with "the console's host" already resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct NatSettings {
    pub stun: Vec<SocketAddr>,
    pub relays: Vec<RelayInfo>,
    pub token: Option<RelayToken>,
}

/// The console's HTTPS address: its host as an IP and the URL's port (where the
/// built-in relay is).
pub async fn console_addr(console_url: &str) -> Option<SocketAddr> {
    let u = super::enroll::parse_console_url(console_url).ok()?;
    let port = u.port_or_known_default()?;
    Some(SocketAddr::new(console_ip(console_url).await?, port))
}

/// The console's host as an IP (resolved once per message: it may be a DNS name).
pub async fn console_ip(console_url: &str) -> Option<IpAddr> {
    let u = super::enroll::parse_console_url(console_url).ok()?;
    match u.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(d) => tokio::net::lookup_host((d, 0))
            .await
            .ok()?
            .next()
            .map(|a| a.ip()),
    }
}

/// Replaces an unspecified IP (the console's own STUN responder or relay, advertised by
/// its listen address) with the console's host.
pub fn resolve(a: SocketAddr, console: Option<IpAddr>) -> Option<SocketAddr> {
    if a.ip().is_unspecified() {
        console.map(|ip| SocketAddr::new(ip, a.port()))
    } else {
        Some(a)
    }
}

/// The console's settings as the agent uses them: "the console's host" resolved to
/// `console` (its HTTPS address), and a relay on the console's HTTPS port given that
/// address (a relay with an unusable upgrade path is left out).
pub fn settings(
    stun: &[SocketAddr],
    relays: &[RelayInfo],
    token: Option<RelayToken>,
    console: Option<SocketAddr>,
) -> NatSettings {
    let ip = console.map(|c| c.ip());
    NatSettings {
        stun: stun.iter().filter_map(|a| resolve(*a, ip)).collect(),
        relays: relays
            .iter()
            .filter_map(|r| {
                let addr = match &r.https_upgrade {
                    Some(p) if RelayInfo::valid_upgrade_path(p) => console?,
                    Some(_) => return None,
                    None => resolve(r.addr, ip)?,
                };
                Some(RelayInfo { addr, ..r.clone() })
            })
            .collect(),
        token,
    }
}

/// `Host` header for the console's HTTPS port: the enrollment URL's host and port.
fn console_authority(console_url: &str) -> Option<String> {
    let u = super::enroll::parse_console_url(console_url).ok()?;
    let host = u.host_str()?;
    Some(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

/// Everything the relay task needs; it runs until `stop` turns true.
pub struct RelayTask {
    pub enrollment: Enrollment,
    pub key: WgPrivateKey,
    pub dp: DataPlane,
    pub shared: Arc<Shared>,
    pub settings: watch::Receiver<Option<NatSettings>>,
    pub stop: watch::Receiver<bool>,
}

enum ConnEnd {
    Stop,
    /// New token or relay list: connect again.
    Renew,
    Lost(String),
}

impl RelayTask {
    fn tls_for(
        &self,
        r: &RelayInfo,
    ) -> anyhow::Result<(Arc<rustls::ClientConfig>, ServerName<'static>)> {
        let trust = match r.cert_sha256 {
            Some(fp) => Trust::Pin(fp),
            None => Trust::from_parts(self.enrollment.pin, self.enrollment.ca_pem.as_deref())?,
        };
        let cfg = Arc::new(client_config(&trust, &[])?);
        // The built-in relay shares the console's certificate, so it is checked
        // against the console's name; others by IP (a pin ignores names anyway).
        let name = match (
            r.cert_sha256,
            super::enroll::parse_console_url(&self.enrollment.console),
        ) {
            (None, Ok(u)) => match u.host() {
                Some(url::Host::Domain(d)) => ServerName::try_from(d.to_string())?,
                _ => ServerName::IpAddress(r.addr.ip().into()),
            },
            _ => ServerName::IpAddress(r.addr.ip().into()),
        };
        Ok((cfg, name))
    }

    pub async fn run(mut self) {
        let mut retry = RETRY_MIN;
        loop {
            if *self.stop.borrow() {
                break;
            }
            let cur = self.settings.borrow_and_update().clone();
            let usable = cur.filter(|s| s.token.is_some() && !s.relays.is_empty());
            let end = match usable {
                None => {
                    // No relay (any more): peers without a direct path are unreachable.
                    let _ = self.dp.set_relay(None);
                    self.shared.set_relay(None);
                    tokio::select! {
                        r = self.settings.changed() => if r.is_err() { ConnEnd::Stop } else { ConnEnd::Renew },
                        _ = self.stop.changed() => ConnEnd::Stop,
                    }
                }
                Some(s) => self.connect_and_pump(&s).await,
            };
            match end {
                ConnEnd::Stop => break,
                ConnEnd::Renew => retry = RETRY_MIN,
                ConnEnd::Lost(why) => {
                    tracing::warn!(reason = %why, ?retry, "relay connection lost; retrying");
                    let _ = self.dp.set_relay(None);
                    self.shared.set_relay(None);
                    // A new network is a better moment to try again than the backoff's.
                    let mut net = self.dp.net_changes();
                    net.mark_unchanged();
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = self.stop.changed() => break,
                        r = self.settings.changed() => if r.is_err() { break },
                        r = net.changed() => if r.is_ok() { retry = RETRY_MIN / 2 },
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
        let _ = self.dp.set_relay(None);
        self.shared.set_relay(None);
    }

    async fn connect_and_pump(&mut self, s: &NatSettings) -> ConnEnd {
        let Some(token) = s.token.as_ref() else {
            return ConnEnd::Lost("no relay token".into());
        };
        let addrs: Vec<SocketAddr> = s.relays.iter().map(|r| r.addr).collect();
        let lat = relay::relay_latencies(&addrs, PROBE_TIMEOUT).await;
        let Some(i) = relay::nearest(&lat) else {
            return ConnEnd::Lost("no relay reachable".into());
        };
        let info = &s.relays[i];
        let (tls, name) = match self.tls_for(info) {
            Ok(x) => x,
            Err(e) => return ConnEnd::Lost(format!("TLS setup for relay {}: {e:#}", info.name)),
        };
        let host = console_authority(&self.enrollment.console).unwrap_or_default();
        let upgrade = info
            .https_upgrade
            .as_deref()
            .map(|path| relay::Upgrade { host: &host, path });
        let (mut tx, mut rx) =
            match relay::connect_via(info.addr, name, tls, upgrade, token, &self.key).await {
                Ok(c) => c,
                Err(e) => {
                    return ConnEnd::Lost(format!("relay {} ({}): {e}", info.name, info.addr))
                }
            };
        let via = if upgrade.is_some() { "https" } else { "tls" };
        tracing::info!(relay = %info.name, addr = %info.addr, via, rtt = ?lat[i], "relay connected");
        let (out_tx, mut out_rx) = mpsc::channel(RELAY_QUEUE);
        if self.dp.set_relay(Some(out_tx)).is_err() {
            return ConnEnd::Stop;
        }
        self.shared.set_relay(Some(info.name.clone()));
        let mut ping = tokio::time::interval(RELAY_PING_EVERY);
        let mut nonce = 0u64;
        let mut net = self.dp.net_changes();
        net.mark_unchanged();
        loop {
            tokio::select! {
                _ = self.stop.changed() => return ConnEnd::Stop,
                r = net.changed() => {
                    if r.is_err() {
                        return ConnEnd::Stop;
                    }
                    // After a sleep the relay may long have dropped us; a connection
                    // from an address the host no longer has is dead. Either way the
                    // relayed peers need a new one now, not after TCP gives up.
                    let wake = net.borrow_and_update().wake;
                    let gone = tx.local_addr().is_some_and(|a| !super::host_has_addr(a.ip()));
                    if wake || gone {
                        tracing::info!(wake, local_gone = gone, "network changed: reconnecting the relay");
                        return ConnEnd::Renew;
                    }
                }
                r = self.settings.changed() => {
                    if r.is_err() {
                        return ConnEnd::Stop;
                    }
                    let new = self.settings.borrow().clone();
                    if new.as_ref() != Some(s) {
                        tracing::debug!("new relay token or relay list; reconnecting");
                        return ConnEnd::Renew;
                    }
                }
                d = out_rx.recv() => {
                    let Some((dst, data)) = d else { return ConnEnd::Stop };
                    if let Err(e) = tx.send(dst, &data).await {
                        return ConnEnd::Lost(e.to_string());
                    }
                }
                ev = rx.recv() => match ev {
                    Ok(Some(RelayEvent::Datagram { src, data })) => {
                        if self.dp.relay_deliver(src, data).is_err() {
                            return ConnEnd::Stop;
                        }
                    }
                    Ok(Some(RelayEvent::Pong { .. })) => {}
                    Ok(Some(RelayEvent::Closing(why))) => return ConnEnd::Lost(why),
                    Ok(None) => return ConnEnd::Lost("relay closed the connection".into()),
                    Err(e) => return ConnEnd::Lost(e.to_string()),
                },
                _ = ping.tick() => {
                    nonce += 1;
                    if let Err(e) = tx.ping(nonce).await {
                        return ConnEnd::Lost(e.to_string());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_means_the_console() {
        let c: SocketAddr = "198.51.100.7:8443".parse().unwrap();
        let s = settings(
            &[
                "0.0.0.0:3478".parse().unwrap(),
                "192.0.2.1:3478".parse().unwrap(),
            ],
            &[RelayInfo {
                name: "console".into(),
                addr: "[::]:8445".parse().unwrap(),
                cert_sha256: None,
                https_upgrade: None,
            }],
            None,
            Some(c),
        );
        assert_eq!(
            s.stun,
            vec![
                "198.51.100.7:3478".parse().unwrap(),
                "192.0.2.1:3478".parse().unwrap()
            ]
        );
        assert_eq!(s.relays[0].addr, "198.51.100.7:8445".parse().unwrap());
        // the relay on the console's HTTPS port is at the console's address; one with
        // a path that could inject header lines is left out
        let https = |p: &str| RelayInfo {
            name: "console".into(),
            addr: "0.0.0.0:0".parse().unwrap(),
            cert_sha256: None,
            https_upgrade: Some(p.into()),
        };
        let s = settings(
            &[],
            &[https("/agent/v1/relay"), https("/x\r\nEvil: 1")],
            None,
            Some(c),
        );
        assert_eq!(s.relays.len(), 1);
        assert_eq!(s.relays[0].addr, c);
        assert_eq!(
            console_authority("https://console.example:8443/").as_deref(),
            Some("console.example:8443")
        );
        assert_eq!(
            console_authority("https://[2001:db8::1]/").as_deref(),
            Some("[2001:db8::1]")
        );
        let s = settings(&["0.0.0.0:3478".parse().unwrap()], &[], None, None);
        assert!(s.stun.is_empty());
    }
}
