//! Admission of relay connections that have not authenticated yet.
//!
//! The built-in relay sits on the console's HTTPS port, so anyone who can reach the
//! API can open relay upgrades. An unauthenticated connection costs a task, a buffer
//! and up to `AUTH_TIMEOUT` of waiting; these limits bound what a flood of them can
//! hold: at most [`PER_SOURCE`] waiting connections from one address (one /64 for IPv6,
//! which one host usually owns whole) and [`TOTAL`] in all. Authenticated
//! connections do not count: a slot is given back as soon as authentication ends,
//! whichever way. Many devices behind one NAT authenticate within a round trip or two,
//! so they rarely hold more than a few slots at once; one that is refused retries with
//! its backoff.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Unauthenticated connections one source address may hold.
pub const PER_SOURCE: u32 = 32;
/// Unauthenticated connections in all.
pub const TOTAL: u32 = 1024;

#[derive(Debug, Default)]
pub struct Pending {
    inner: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    by_source: HashMap<IpAddr, u32>,
    total: u32,
}

/// One admitted, not yet authenticated connection; its slot is given back on drop.
#[derive(Debug)]
pub struct Admission {
    pending: Arc<Pending>,
    source: IpAddr,
}

/// The unit the per-source limit counts: the address, or its /64 for IPv6.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Pending {
    /// A slot for a new connection from `ip`, or `None` when its source or the relay
    /// is at the limit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admission> {
        let source = source_of(ip);
        let mut c = self.inner.lock().ok()?;
        let mine = c.by_source.get(&source).copied().unwrap_or(0);
        if mine >= PER_SOURCE || c.total >= TOTAL {
            return None;
        }
        c.by_source.insert(source, mine + 1);
        c.total += 1;
        Some(Admission {
            pending: Arc::clone(self),
            source,
        })
    }

    /// Connections waiting to authenticate now.
    pub fn waiting(&self) -> u32 {
        self.inner.lock().map(|c| c.total).unwrap_or(0)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let Ok(mut c) = self.pending.inner.lock() else {
            return;
        };
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                c.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_source_and_total_limits_and_slots_come_back() {
        let p = Arc::new(Pending::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<_> = (0..PER_SOURCE).map(|_| p.admit(a).unwrap()).collect();
        assert!(p.admit(a).is_none(), "source at its limit");
        assert!(
            p.admit("192.0.2.2".parse().unwrap()).is_some(),
            "others still get in"
        );
        drop(held);
        assert_eq!(p.waiting(), 0);
        assert!(p.admit(a).is_some(), "slots come back on drop");
        // one /64 is one source; the mapped form of an IPv4 address is that address
        let v6: Vec<_> = (0..PER_SOURCE)
            .map(|i| {
                p.admit(format!("2001:db8::{i:x}").parse().unwrap())
                    .unwrap()
            })
            .collect();
        assert!(p.admit("2001:db8::ffff:1".parse().unwrap()).is_none());
        assert!(p.admit("2001:db8:0:1::1".parse().unwrap()).is_some());
        drop(v6);
        let mut all = vec![];
        for i in 0..TOTAL * 2 {
            if let Some(g) = p.admit(IpAddr::from([10, 0, (i >> 8) as u8, i as u8])) {
                all.push(g);
            }
        }
        assert_eq!(all.len() as u32, TOTAL, "bounded in all");
        assert!(p.admit("::ffff:10.0.0.0".parse().unwrap()).is_none());
    }
}
