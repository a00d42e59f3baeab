//! Noticing at once that the host's network changed or that the host slept, so the
//! packet loop can tell the core (`Node::handle_network_change`, `Node::handle_wake`)
//! instead of waiting for path and STUN timers to find out.
//!
//! Network changes come from rtnetlink (Linux): the loop's `poll(2)` also waits on a
//! netlink socket subscribed to link, address and route notifications. Messages are
//! parsed by `netlink-packet-route` (not by hand); those about the TUN device itself,
//! loopback, and routes other than default routes in the main table are ignored (the
//! agent's own route changes must not look like a new network). A burst of events (a
//! link going down takes its addresses and routes with it) is reported once, after
//! `DEBOUNCE` of quiet, or `MAX_DELAY` after its first event at the latest.
//!
//! Sleep: CLOCK_MONOTONIC stops while the machine is suspended, CLOCK_BOOTTIME does
//! not, so their difference grows by the time slept. It is checked every
//! `CLOCK_CHECK_EVERY`; growth beyond `SLEEP_MIN` is a wake-up.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Quiet time that ends a burst of netlink events.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// A burst that never quiets is still reported this soon after it began.
const MAX_DELAY: Duration = Duration::from_secs(1);
const CLOCK_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Growth of BOOTTIME - MONOTONIC that counts as a sleep (a check that merely ran late,
/// e.g. on a loaded machine, moves both clocks alike and never adds to the gap).
const SLEEP_MIN: Duration = Duration::from_secs(2);
/// Receive buffer for one netlink datagram (a burst may hold several messages).
const NL_BUF: usize = 64 * 1024;

/// What changed, once debounced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// An address, link or default route came or went.
    Network,
    /// The host slept for about this long.
    Wake { slept: Duration },
}

pub(crate) struct NetWatch {
    sock: Option<Socket>,
    tun_index: u32,
    buf: Vec<u8>,
    /// (first, latest) relevant event of the burst not reported yet.
    burst: Option<(Instant, Instant)>,
    /// BOOTTIME - MONOTONIC at the last check.
    clock_gap: Option<Duration>,
    next_clock_check: Instant,
}

impl NetWatch {
    /// Subscribes to rtnetlink. Without it (no netlink in a sandbox) the watch still
    /// detects sleep, and paths and STUN still notice changes by their timers.
    pub fn new(tun_name: &str, now: Instant) -> Self {
        let sock = match subscribe() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no rtnetlink: network changes are noticed by timers only");
                None
            }
        };
        NetWatch {
            sock,
            tun_index: if_index(tun_name),
            buf: vec![0u8; NL_BUF],
            burst: None,
            clock_gap: clock_gap(),
            next_clock_check: now + CLOCK_CHECK_EVERY,
        }
    }

    /// The netlink socket to wait on (-1, which `poll` ignores, without one).
    pub fn fd(&self) -> RawFd {
        self.sock.as_ref().map_or(-1, |s| s.as_raw_fd())
    }

    /// Reads every pending notification and notes the relevant ones.
    pub fn on_readable(&mut self, now: Instant) {
        let Some(sock) = &self.sock else { return };
        let mut seen = false;
        for _ in 0..64 {
            let mut b = &mut self.buf[..];
            let n = match sock.recv(&mut b, libc::MSG_DONTWAIT) {
                Ok(n) => n.min(NL_BUF),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ENOBUFS: notifications were lost, so something did change.
                    tracing::debug!(error = %e, "rtnetlink receive failed");
                    seen = true;
                    break;
                }
            };
            seen |= relevant(&self.buf[..n], self.tun_index);
        }
        if seen {
            self.note(now);
        }
    }

    fn note(&mut self, now: Instant) {
        let first = self.burst.map_or(now, |(f, _)| f);
        self.burst = Some((first, now));
    }

    /// A test hook (`zmesh debug wake`): behave as after a sleep.
    pub fn inject_wake(&mut self) -> Change {
        self.burst = None;
        Change::Wake {
            slept: Duration::ZERO,
        }
    }

    /// When [`poll`](Self::poll) next has something to decide.
    pub fn poll_timeout(&self) -> Instant {
        let burst = self
            .burst
            .map(|(first, last)| (last + DEBOUNCE).min(first + MAX_DELAY));
        burst.map_or(self.next_clock_check, |b| b.min(self.next_clock_check))
    }

    /// A debounced change, if one is due. A wake-up also covers a pending burst (the
    /// network usually changes while a laptop sleeps).
    pub fn poll(&mut self, now: Instant) -> Option<Change> {
        if now >= self.next_clock_check {
            self.next_clock_check = now + CLOCK_CHECK_EVERY;
            let gap = clock_gap();
            if let Some(slept) = slept(self.clock_gap, gap) {
                self.clock_gap = gap;
                self.burst = None;
                return Some(Change::Wake { slept });
            }
            self.clock_gap = gap.or(self.clock_gap);
        }
        let (first, last) = self.burst?;
        if now >= last + DEBOUNCE || now >= first + MAX_DELAY {
            self.burst = None;
            return Some(Change::Network);
        }
        None
    }
}

fn subscribe() -> std::io::Result<Socket> {
    let mut s = Socket::new(NETLINK_ROUTE)?;
    let groups = libc::RTMGRP_LINK
        | libc::RTMGRP_IPV4_IFADDR
        | libc::RTMGRP_IPV6_IFADDR
        | libc::RTMGRP_IPV4_ROUTE
        | libc::RTMGRP_IPV6_ROUTE;
    s.bind(&SocketAddr::new(0, groups as u32))?;
    s.set_non_blocking(true)?;
    Ok(s)
}

fn if_index(name: &str) -> u32 {
    let Ok(c) = std::ffi::CString::new(name) else {
        return 0;
    };
    // SAFETY: c is a valid NUL-terminated string; if_nametoindex only reads it.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Whether a netlink datagram (one or more messages) says the underlay changed.
fn relevant(mut data: &[u8], tun_index: u32) -> bool {
    let mut any = false;
    for _ in 0..256 {
        if data.len() < 16 {
            break;
        }
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < 16 || len > data.len() {
            break;
        }
        let msg = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[..len]) {
            Ok(m) => m,
            Err(e) => {
                tracing::trace!(error = %e, "unparsed rtnetlink message");
                data = &data[len.next_multiple_of(4).min(data.len())..];
                continue;
            }
        };
        if let NetlinkPayload::InnerMessage(m) = msg.payload {
            if let Some(why) = underlay_change(&m, tun_index) {
                tracing::debug!(event = why, "rtnetlink: underlay changed");
                any = true;
            }
        }
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    any
}

/// Loopback's interface index.
const LO_INDEX: u32 = 1;

fn underlay_change(m: &RouteNetlinkMessage, tun_index: u32) -> Option<&'static str> {
    let ours = |i: u32| i == tun_index || i == LO_INDEX;
    match m {
        RouteNetlinkMessage::NewLink(l) if !ours(l.header.index) => Some("link"),
        RouteNetlinkMessage::DelLink(l) if !ours(l.header.index) => Some("link removed"),
        RouteNetlinkMessage::NewAddress(a) if !ours(a.header.index) => Some("address added"),
        RouteNetlinkMessage::DelAddress(a) if !ours(a.header.index) => Some("address removed"),
        RouteNetlinkMessage::NewRoute(r) if is_default_route(r, tun_index) => {
            Some("default route added")
        }
        RouteNetlinkMessage::DelRoute(r) if is_default_route(r, tun_index) => {
            Some("default route removed")
        }
        _ => None,
    }
}

/// A default route of the main table that does not lead into our own TUN (an exit
/// node's routes live in their own table, see `netcfg`).
fn is_default_route(r: &RouteMessage, tun_index: u32) -> bool {
    if r.header.destination_prefix_length != 0 {
        return false;
    }
    let mut table = u32::from(r.header.table);
    let mut oif = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    table == u32::from(RouteHeader::RT_TABLE_MAIN) && oif != Some(tun_index)
}

/// BOOTTIME - MONOTONIC: the total time this machine has been suspended.
fn clock_gap() -> Option<Duration> {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into a live local.
        (unsafe { libc::clock_gettime(clock, &mut ts) } == 0)
            .then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    };
    // Monotonic first: a preemption between the reads can only shrink the gap.
    let mono = read(libc::CLOCK_MONOTONIC)?;
    let boot = read(libc::CLOCK_BOOTTIME)?;
    boot.checked_sub(mono).or(Some(Duration::ZERO))
}

/// How long the host slept between two readings of the clock gap, if it did.
fn slept(before: Option<Duration>, now: Option<Duration>) -> Option<Duration> {
    let d = now?.checked_sub(before?)?;
    (d >= SLEEP_MIN).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_is_a_growing_clock_gap() {
        let s = |x| Some(Duration::from_millis(x));
        assert_eq!(slept(s(100), s(100)), None);
        assert_eq!(slept(s(100), s(1900)), None, "under SLEEP_MIN");
        assert_eq!(slept(s(100), s(300_100)), Some(Duration::from_secs(300)));
        assert_eq!(slept(s(500), s(100)), None, "never negative");
        assert_eq!(slept(None, s(9_000)), None);
        assert!(clock_gap().is_some());
    }

    #[test]
    fn bursts_are_debounced() {
        let t0 = Instant::now();
        let mut w = NetWatch {
            sock: None,
            tun_index: 0,
            buf: vec![],
            burst: None,
            clock_gap: clock_gap(),
            next_clock_check: t0 + Duration::from_secs(3600),
        };
        w.note(t0);
        w.note(t0 + Duration::from_millis(100));
        assert_eq!(w.poll(t0 + Duration::from_millis(200)), None);
        assert_eq!(w.poll_timeout(), t0 + Duration::from_millis(250));
        assert_eq!(
            w.poll(t0 + Duration::from_millis(250)),
            Some(Change::Network)
        );
        assert_eq!(w.poll(t0 + Duration::from_millis(900)), None);
        // events every 100 ms: reported at MAX_DELAY anyway
        let t1 = t0 + Duration::from_secs(10);
        let mut got = None;
        for i in 0..20 {
            let t = t1 + Duration::from_millis(100 * i);
            w.note(t);
            if let Some(c) = w.poll(t) {
                got = Some((i, c));
                break;
            }
        }
        assert_eq!(got, Some((10, Change::Network)));
    }

    #[test]
    fn own_routes_and_non_default_routes_are_ignored() {
        let mut r = RouteMessage::default();
        r.header.table = RouteHeader::RT_TABLE_MAIN;
        r.attributes.push(RouteAttribute::Oif(7));
        assert!(is_default_route(&r, 9));
        assert!(!is_default_route(&r, 7), "a default route into our TUN");
        r.header.destination_prefix_length = 10;
        assert!(!is_default_route(&r, 9), "a subnet route");
        r.header.destination_prefix_length = 0;
        r.attributes.push(RouteAttribute::Table(52));
        assert!(!is_default_route(&r, 9), "another table");
    }
}
