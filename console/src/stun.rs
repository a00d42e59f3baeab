//! The console's STUN responder (RFC 8489 Binding, plus classic RFC 3489 requests from
//! old clients): tells each sender the address and port its datagram came from, which is
//! how agents learn their NAT's public mapping.
//!
//! One UDP socket, one task. Each source IP gets a token bucket so the responder cannot
//! be used to flood a spoofed victim (the answer is about as large as the request, so
//! there is no amplification beyond that); anything that is not a well-formed Binding
//! request is dropped silently.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use zmesh_shared::stun;

/// Requests per second one source IP may make, and the burst it may save up.
const RATE_PER_SEC: f64 = 20.0;
const BURST: f64 = 40.0;
/// Sources tracked at once; when full, idle buckets are forgotten first.
const MAX_SOURCES: usize = 8192;
/// Largest datagram we look at; Binding requests are tiny.
const MAX_DATAGRAM: usize = 548;
const SOFTWARE: &str = "zmesh-console";
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_CHANGE_REQUEST: u16 = 0x0003;

/// Per-source token buckets.
pub struct RateLimiter {
    buckets: HashMap<IpAddr, (f64, Instant)>,
    rate: f64,
    burst: f64,
    max_sources: usize,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64, max_sources: usize) -> Self {
        RateLimiter {
            buckets: HashMap::new(),
            rate,
            burst,
            max_sources,
        }
    }

    /// True if `ip` may have one more answer now.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.max_sources {
            let (rate, burst) = (self.rate, self.burst);
            // A bucket that has refilled completely carries no information.
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            if self.buckets.len() >= self.max_sources {
                return false;
            }
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.rate)
            .min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The answer to datagram `req` from `from`, or `None` when it gets no answer
/// (not a Binding request, malformed, or asking for a changed address we do not have).
pub fn answer(req: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    if stun::is_stun(req) {
        return match stun::decode(req) {
            Ok(stun::Message::BindingRequest { tid }) if change_flags(req) == Some(0) => {
                Some(stun::binding_success(tid, from, SOFTWARE))
            }
            _ => None,
        };
    }
    legacy_answer(req, from)
}

/// RFC 3489 requests have no magic cookie and a 16-byte transaction ID; they get
/// MAPPED-ADDRESS only (old clients reject attributes they do not know).
fn legacy_answer(req: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    if req.len() < stun::HEADER_LEN || req[0..2] != [0, 1] || change_flags(req) != Some(0) {
        return None;
    }
    let IpAddr::V4(ip) = from.ip() else {
        return None; // RFC 3489 is IPv4-only
    };
    let mut m = Vec::with_capacity(32);
    m.extend_from_slice(&[0x01, 0x01, 0, 12]);
    m.extend_from_slice(&req[4..20]);
    m.extend_from_slice(&ATTR_MAPPED_ADDRESS.to_be_bytes());
    m.extend_from_slice(&8u16.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m.extend_from_slice(&from.port().to_be_bytes());
    m.extend_from_slice(&ip.octets());
    Some(m)
}

/// Walks the attributes: `Some(flags)` of CHANGE-REQUEST (0 when absent), `None` when
/// the attribute list is malformed.
fn change_flags(req: &[u8]) -> Option<u32> {
    let len = u16::from_be_bytes([req[2], req[3]]) as usize;
    if len % 4 != 0 || stun::HEADER_LEN + len != req.len() {
        return None;
    }
    let mut off = stun::HEADER_LEN;
    let mut flags = 0;
    while off < req.len() {
        let hdr = req.get(off..off + 4)?;
        let at = u16::from_be_bytes([hdr[0], hdr[1]]);
        let alen = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
        let v = req.get(off + 4..off + 4 + alen)?;
        if at == ATTR_CHANGE_REQUEST {
            let b: [u8; 4] = v.try_into().ok()?;
            flags = u32::from_be_bytes(b) & 0x6;
        }
        off += 4 + alen.next_multiple_of(4);
    }
    Some(flags)
}

/// Binds the responder's socket (so bind errors surface at startup).
pub async fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(addr).await
}

/// Answers Binding requests on `sock` until the task is dropped.
pub async fn run(sock: UdpSocket) {
    run_counted(sock, None).await
}

/// [`run`], counting requests in the console's metrics.
pub async fn run_counted(sock: UdpSocket, counters: Option<crate::metrics::StunCounters>) {
    let mut limiter = RateLimiter::new(RATE_PER_SEC, BURST, MAX_SOURCES);
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut warned = Instant::now() - Duration::from_secs(60);
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors from earlier sends surface here; they are not fatal.
                tracing::trace!(error = %e, "STUN receive error");
                continue;
            }
        };
        if n > MAX_DATAGRAM {
            continue;
        }
        let Some(resp) = answer(&buf[..n], from) else {
            tracing::trace!(%from, len = n, "not a Binding request, dropped");
            if let Some(c) = &counters {
                c.ignored();
            }
            continue;
        };
        let now = Instant::now();
        if !limiter.allow(from.ip(), now) {
            if let Some(c) = &counters {
                c.rate_limited();
            }
            if now.duration_since(warned) > Duration::from_secs(10) {
                warned = now;
                tracing::warn!(src = %from.ip(), "STUN requests over the rate limit, dropping");
            }
            continue;
        }
        if let Some(c) = &counters {
            c.answered();
        }
        if let Err(e) = sock.send_to(&resp, from).await {
            tracing::trace!(%from, error = %e, "STUN answer not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_and_legacy_requests() {
        let from: SocketAddr = "192.0.2.9:4242".parse().unwrap();
        let tid = [3u8; 12];
        let resp = answer(&stun::binding_request(tid), from).unwrap();
        assert_eq!(
            stun::decode(&resp).unwrap(),
            stun::Message::BindingSuccess { tid, mapped: from }
        );
        // What Debian's `stun` client (RFC 3489) sends: CHANGE-REQUEST 0, then 4, then 2.
        let legacy =
            hex::decode("000100080148702c2993a678253d8a32a267ff160003000400000000").unwrap();
        let r = answer(&legacy, from).unwrap();
        assert_eq!(&r[4..20], &legacy[4..20]);
        assert_eq!(
            &r[20..],
            &hex::decode("0001000800011092c0000209").unwrap()[..]
        );
        let change_ip =
            hex::decode("000100080263944a224ac318175fe023a359ba790003000400000004").unwrap();
        assert!(answer(&change_ip, from).is_none());
    }

    #[test]
    fn garbage_is_dropped_without_panic() {
        let from: SocketAddr = "192.0.2.9:4242".parse().unwrap();
        let good = stun::binding_request([9; 12]);
        for cut in 0..good.len() {
            if cut != good.len() {
                assert!(answer(&good[..cut], from).is_none());
            }
        }
        let mut x = 0x9e37_79b9u32;
        for i in 0..20_000 {
            let mut m = if i % 2 == 0 {
                good.clone()
            } else {
                vec![0, 1, 0, 8]
            };
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let pos = (x as usize) % (m.len() + 1);
                if pos < m.len() && x & 1 == 0 {
                    m[pos] = (x >> 8) as u8;
                } else {
                    m.push((x >> 16) as u8);
                }
            }
            let _ = answer(&m, from);
        }
    }

    #[test]
    fn rate_limit_per_source() {
        let mut l = RateLimiter::new(10.0, 5.0, 2);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!((0..10).filter(|_| l.allow(a, t0)).count(), 5);
        assert!(l.allow(b, t0));
        // table full of busy sources: a newcomer waits
        assert!(!l.allow(c, t0));
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.allow(a, t1));
        // after a long pause the idle buckets are forgotten
        assert!(l.allow(c, t0 + Duration::from_secs(10)));
    }
}
