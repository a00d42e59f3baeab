//! `zmesh netcheck` building blocks: our mapped address as several STUN servers see it
//! (from one socket, so differing answers mean an endpoint-dependent NAT), UDP
//! reachability, and latency to each relay. Blocking and bounded in time; meant for a
//! one-shot diagnostic, not the data path (which learns the same from its own socket in
//! the sans-IO core).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use zmesh_shared::stun;

use crate::core::NatMapping;

#[derive(Debug, thiserror::Error)]
pub enum NetcheckError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("no STUN answer from {0} within {1:?}")]
    Timeout(SocketAddr, Duration),
}

/// One Binding request/response with `server` from `sock` (retried every 250 ms).
pub fn stun_query(
    sock: &UdpSocket,
    server: SocketAddr,
    timeout: Duration,
) -> Result<(SocketAddr, Duration), NetcheckError> {
    let deadline = Instant::now() + timeout;
    let tid: stun::TransactionId = rand::random();
    let req = stun::binding_request(tid);
    let mut buf = [0u8; 1024];
    let t0 = Instant::now();
    while Instant::now() < deadline {
        sock.send_to(&req, server)?;
        let retry = (Instant::now() + Duration::from_millis(250)).min(deadline);
        loop {
            let left = retry.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))?;
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == server => {
                    if let Ok(stun::Message::BindingSuccess { tid: t, mapped }) =
                        stun::decode(&buf[..n])
                    {
                        if t == tid {
                            return Ok((mapped, t0.elapsed()));
                        }
                    }
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Err(NetcheckError::Timeout(server, timeout))
}

#[derive(Debug, Clone)]
pub struct StunResult {
    pub server: SocketAddr,
    pub mapped: Option<SocketAddr>,
    pub rtt: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct UdpReport {
    pub local: SocketAddr,
    /// At least one STUN server answered.
    pub udp: bool,
    pub results: Vec<StunResult>,
    pub mapping: NatMapping,
}

/// Asks every server from one fresh socket bound to `bind`.
pub fn check_udp(
    bind: SocketAddr,
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<UdpReport, NetcheckError> {
    let sock = UdpSocket::bind(bind)?;
    let local = sock.local_addr()?;
    let results: Vec<StunResult> = servers
        .iter()
        .map(|s| match stun_query(&sock, *s, timeout) {
            Ok((m, rtt)) => StunResult {
                server: *s,
                mapped: Some(m),
                rtt: Some(rtt),
            },
            Err(_) => StunResult {
                server: *s,
                mapped: None,
                rtt: None,
            },
        })
        .collect();
    let answers: Vec<SocketAddr> = results.iter().filter_map(|r| r.mapped).collect();
    let mapping = match answers.as_slice() {
        [] | [_] => NatMapping::Unknown,
        [a, rest @ ..] if rest.iter().all(|b| b == a) => NatMapping::EndpointIndependent,
        _ => NatMapping::EndpointDependent,
    };
    Ok(UdpReport {
        local,
        udp: !answers.is_empty(),
        results,
        mapping,
    })
}

/// `zmesh netcheck`: prints the report; exit code 1 when UDP is unusable.
pub async fn run_cli(
    stun: Vec<SocketAddr>,
    relays: Vec<(String, SocketAddr)>,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let bind: SocketAddr = if stun.iter().all(|s| s.is_ipv6()) {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let r = tokio::task::spawn_blocking(move || check_udp(bind, &stun, timeout)).await??;
    println!("UDP: {}", if r.udp { "yes" } else { "no (blocked?)" });
    for s in &r.results {
        match (s.mapped, s.rtt) {
            (Some(m), Some(rtt)) => println!(
                "  stun {}: mapped {m} ({:.1} ms)",
                s.server,
                rtt.as_secs_f64() * 1000.0
            ),
            _ => println!("  stun {}: no answer", s.server),
        }
    }
    println!("mapping: {}", r.mapping.as_str());
    let addrs: Vec<SocketAddr> = relays.iter().map(|(_, a)| *a).collect();
    let lat = crate::io::relay::relay_latencies(&addrs, timeout).await;
    let nearest = crate::io::relay::nearest(&lat);
    for (i, ((name, a), l)) in relays.iter().zip(&lat).enumerate() {
        let mark = if Some(i) == nearest { " (nearest)" } else { "" };
        let label = if name == &a.to_string() {
            a.to_string()
        } else {
            format!("{name} {a}")
        };
        match l {
            Some(l) => println!("  relay {label}: {:.1} ms{mark}", l.as_secs_f64() * 1000.0),
            None => println!("  relay {label}: unreachable"),
        }
    }
    Ok(if r.udp { 0 } else { 1 })
}
