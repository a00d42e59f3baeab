//! Path choice for one peer: which of its candidate addresses (or the relay) to send to.
//!
//! The peer's candidates (interface addresses and STUN-mapped addresses it reported,
//! plus addresses it was seen sending from) are probed all at once in short bursts; a
//! candidate that answers is a working direct path with a measured RTT. The lowest-RTT
//! live path is used; a working path is only replaced by one clearly faster, so the choice
//! does not flap. The chosen path gets a keepalive probe every few seconds; if it stops
//! answering it is dropped, the relay takes over and bursts resume from time to time.
//!
//! Sans-IO: the caller passes `now`, sends the pings [`PathState::poll`] asks for and
//! feeds back pongs and authenticated traffic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Spacing of probes inside a burst, and how long a burst lasts.
const BURST_INTERVAL: Duration = Duration::from_millis(500);
const BURST_LEN: Duration = Duration::from_secs(5);
/// Keepalive probe on the chosen direct path.
const KEEPALIVE: Duration = Duration::from_secs(2);
/// A path with no answer for this long is dead.
const DEAD_AFTER: Duration = Duration::from_millis(6500);
/// Without a direct path: new burst this often.
const REPROBE_NO_DIRECT: Duration = Duration::from_secs(20);
/// ... but every 2 s for the first minute after a direct path died: the path is likely to
/// come back (a blocked port reopened, a Wi-Fi roam finished), and every second on the
/// relay is a second of its extra latency.
const REPROBE_AFTER_LOSS: Duration = Duration::from_secs(2);
const RECENTLY_LOST: Duration = Duration::from_secs(60);
/// With a direct path: probe every candidate this often, to find a faster one.
const REPROBE_DIRECT: Duration = Duration::from_secs(60);
/// A path that missed a keepalive while another answers is replaced at once.
const STALE: Duration = Duration::from_millis(3500);
/// A probe of the chosen path still unanswered after this many smoothed RTTs (and at
/// least `MISS_WAIT_MIN`) counts as missed: when another path answers meanwhile, the
/// chosen one is replaced without waiting for `STALE` (the peer moved to another
/// network, or ours changed). The floor absorbs Wi-Fi jitter on short paths.
const MISS_RTTS: u32 = 4;
const MISS_WAIT_MIN: Duration = Duration::from_millis(150);
/// Before leaving a direct path for the relay a probe must stay unanswered longer: a
/// loaded machine answers late at times, and the relay adds latency for everyone.
const FALLBACK_WAIT_MIN: Duration = Duration::from_millis(1_000);
/// A new path must beat the current RTT by this factor to replace it.
const SWITCH_FACTOR: f64 = 0.75;
/// Bounds on remembered state.
const MAX_CANDIDATES: usize = 16;
const MAX_LEARNED: usize = 4;
const MAX_OUTSTANDING: usize = 64;
const PING_TTL: Duration = Duration::from_secs(5);

/// Where packets for a peer go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    Direct(SocketAddr),
    Relay,
    /// No path confirmed yet (configured endpoints are tried in order).
    Unknown,
}

#[derive(Debug, Clone)]
struct Cand {
    addr: SocketAddr,
    rtt: Option<Duration>,
    last_rx: Option<Instant>,
    /// Learned from traffic rather than reported by the peer.
    learned: bool,
}

#[derive(Debug)]
pub struct PathState {
    cands: Vec<Cand>,
    relay: Option<SocketAddr>,
    selected: Option<SocketAddr>,
    outstanding: HashMap<u64, (SocketAddr, Instant)>,
    burst_until: Option<Instant>,
    next_probe: Option<Instant>,
    next_full: Option<Instant>,
    next_tx: u64,
    /// When the last chosen direct path died.
    lost_at: Option<Instant>,
}

impl PathState {
    pub fn new(tx_seed: u64) -> Self {
        PathState {
            cands: vec![],
            relay: None,
            selected: None,
            outstanding: HashMap::new(),
            burst_until: None,
            next_probe: None,
            next_full: None,
            next_tx: tx_seed,
            lost_at: None,
        }
    }

    /// The peer's reported candidates. Stats of known ones are kept; learned ones stay.
    pub fn set_candidates(&mut self, addrs: &[SocketAddr], now: Instant) {
        let mut next: Vec<Cand> = vec![];
        for a in addrs.iter().take(MAX_CANDIDATES) {
            if next.iter().any(|c| c.addr == *a) {
                continue;
            }
            let old = self.cands.iter().find(|c| c.addr == *a);
            next.push(Cand {
                addr: *a,
                rtt: old.and_then(|c| c.rtt),
                last_rx: old.and_then(|c| c.last_rx),
                learned: false,
            });
        }
        let changed = next.len() != self.cands.iter().filter(|c| !c.learned).count()
            || next
                .iter()
                .any(|n| !self.cands.iter().any(|c| c.addr == n.addr && !c.learned));
        for c in &self.cands {
            if c.learned && !next.iter().any(|n| n.addr == c.addr) {
                next.push(c.clone());
            }
        }
        self.cands = next;
        if self
            .selected
            .is_some_and(|s| !self.cands.iter().any(|c| c.addr == s))
        {
            self.selected = None;
        }
        if changed {
            self.probe_now(now);
        }
    }

    /// The relay endpoint for this peer, when a relay is available.
    pub fn set_relay(&mut self, relay: Option<SocketAddr>) {
        self.relay = relay;
    }

    /// Start a burst of probes to every candidate now (new candidates, or told to).
    pub fn probe_now(&mut self, now: Instant) {
        self.burst_until = Some(now + BURST_LEN);
        self.next_probe = Some(now);
    }

    pub fn kind(&self) -> PathKind {
        match (self.selected, self.relay) {
            (Some(a), _) => PathKind::Direct(a),
            (None, Some(_)) => PathKind::Relay,
            _ => PathKind::Unknown,
        }
    }

    /// Where to send: the chosen direct path, else the relay; `None` = undecided.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.selected.or(self.relay)
    }

    pub fn rtt(&self) -> Option<Duration> {
        let s = self.selected?;
        self.cands.iter().find(|c| c.addr == s)?.rtt
    }

    /// When the chosen direct path last carried an answer (probe pong or traffic).
    pub fn last_rx(&self) -> Option<Instant> {
        let s = self.selected?;
        self.cands.iter().find(|c| c.addr == s)?.last_rx
    }

    pub fn has_live_direct(&self) -> bool {
        self.selected.is_some()
    }

    pub fn is_candidate(&self, a: SocketAddr) -> bool {
        self.cands.iter().any(|c| c.addr == a)
    }

    /// Pings due now, as (destination, transaction id). Also expires a dead path.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<(SocketAddr, u64)>) {
        self.outstanding
            .retain(|_, (_, sent)| now.saturating_duration_since(*sent) < PING_TTL);
        self.expire(now);
        if self.cands.is_empty() {
            return;
        }
        if self.next_probe.is_none_or(|t| now < t) {
            return;
        }
        let bursting = self.burst_until.is_some_and(|t| now < t);
        let full_due = self.next_full.is_none_or(|t| now >= t);
        let targets: Vec<SocketAddr> = if bursting || full_due {
            if full_due && !bursting {
                // A short burst makes hole punching work even if the first packets are
                // dropped by the peer's NAT.
                self.burst_until = Some(now + BURST_INTERVAL * 3);
            }
            let lost_recently = self
                .lost_at
                .is_some_and(|t| now.saturating_duration_since(t) < RECENTLY_LOST);
            self.next_full = Some(
                now + if self.selected.is_some() {
                    REPROBE_DIRECT
                } else if lost_recently {
                    REPROBE_AFTER_LOSS
                } else {
                    REPROBE_NO_DIRECT
                },
            );
            self.cands.iter().map(|c| c.addr).collect()
        } else {
            self.selected.into_iter().collect()
        };
        let still_bursting = self.burst_until.is_some_and(|t| now < t);
        self.next_probe = Some(
            now + if still_bursting {
                BURST_INTERVAL
            } else if self.selected.is_some() {
                KEEPALIVE
            } else {
                self.next_full
                    .map_or(REPROBE_NO_DIRECT, |t| t.saturating_duration_since(now))
            },
        );
        for dst in targets {
            if self.outstanding.len() >= MAX_OUTSTANDING {
                break;
            }
            let tx = self.next_tx;
            self.next_tx = self.next_tx.wrapping_add(1);
            self.outstanding.insert(tx, (dst, now));
            out.push((dst, tx));
        }
    }

    /// When [`poll`](Self::poll) next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sel = self
            .selected
            .and_then(|s| self.cands.iter().find(|c| c.addr == s));
        // when the newest probe of the chosen path counts as missed
        let miss = sel.and_then(|c| {
            let wait = c.rtt.map_or(FALLBACK_WAIT_MIN, |r| {
                (r * MISS_RTTS).max(FALLBACK_WAIT_MIN)
            });
            self.outstanding
                .values()
                .filter(|(dst, sent)| *dst == c.addr && c.last_rx.is_none_or(|rx| *sent > rx))
                .map(|(_, sent)| *sent + wait + Duration::from_millis(1))
                .min()
        });
        let dead = sel.and_then(|c| c.last_rx).map(|t| t + DEAD_AFTER);
        let dead = match (dead, miss) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (self.next_probe, dead) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A pong for `tx` came from `from`. Returns true if the chosen path changed.
    pub fn on_pong(&mut self, from: SocketAddr, tx: u64, now: Instant) -> bool {
        let Some((dst, sent)) = self.outstanding.remove(&tx) else {
            return false;
        };
        if dst != from {
            return false;
        }
        let sample = now.saturating_duration_since(sent);
        if let Some(c) = self.cands.iter_mut().find(|c| c.addr == from) {
            c.rtt = Some(match c.rtt {
                // Smoothed like TCP's SRTT (1/8 gain).
                Some(r) => (r * 7 + sample) / 8,
                None => sample,
            });
            c.last_rx = Some(now);
        }
        self.reselect(now)
    }

    /// An authenticated ping or WireGuard packet came from `from` (not the relay): the
    /// peer is there. Unknown addresses become learned candidates and get probed.
    /// Returns true if probes are due now (a new address to try: call
    /// [`poll`](Self::poll) soon, a peer that just moved is waiting for our answer).
    pub fn on_rx_direct(&mut self, from: SocketAddr, now: Instant) -> bool {
        match self.cands.iter_mut().find(|c| c.addr == from) {
            Some(c) => {
                c.last_rx = Some(now);
                false
            }
            None => {
                if self.cands.iter().filter(|c| c.learned).count() >= MAX_LEARNED {
                    // Forget the oldest learned address to make room.
                    if let Some(i) = self.cands.iter().position(|c| c.learned) {
                        self.cands.remove(i);
                    }
                }
                if self.cands.len() >= MAX_CANDIDATES {
                    return false;
                }
                self.cands.push(Cand {
                    addr: from,
                    rtt: None,
                    last_rx: None,
                    learned: true,
                });
                // Ask at once: a pong proves the path in both directions.
                self.next_probe = Some(now);
                self.burst_until =
                    Some(self.burst_until.map_or(now, |t| t.max(now)) + BURST_INTERVAL * 2);
                true
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let Some(s) = self.selected else { return };
        if self.reselect(now) && self.selected.is_some() {
            return; // moved to another working path
        }
        let alive = self
            .cands
            .iter()
            .find(|c| c.addr == s)
            .and_then(|c| c.last_rx)
            .is_some_and(|t| now.saturating_duration_since(t) < DEAD_AFTER);
        if !alive {
            tracing::debug!(path = %s, "direct path stopped answering");
            self.selected = None;
            self.lost_at = Some(now);
            self.reselect(now);
            if self.selected.is_none() {
                self.probe_now(now);
            }
        }
    }

    /// Whether a probe to `c` sent after its last answer has gone unanswered for longer
    /// than its RTT allows.
    fn missed(&self, c: &Cand, now: Instant) -> bool {
        self.missed_for(c, now, MISS_WAIT_MIN)
    }

    /// [`Self::missed`] with at least `min` of waiting.
    fn missed_for(&self, c: &Cand, now: Instant, min: Duration) -> bool {
        let wait = c.rtt.map_or(min, |r| (r * MISS_RTTS).max(min));
        self.outstanding.values().any(|(dst, sent)| {
            *dst == c.addr
                && c.last_rx.is_none_or(|rx| *sent > rx)
                && now.saturating_duration_since(*sent) > wait
        })
    }

    fn reselect(&mut self, now: Instant) -> bool {
        let live = |c: &&Cand| {
            c.rtt.is_some()
                && c.last_rx
                    .is_some_and(|t| now.saturating_duration_since(t) < DEAD_AFTER)
        };
        let best = self
            .cands
            .iter()
            .filter(live)
            .min_by_key(|c| c.rtt)
            .map(|c| (c.addr, c.rtt));
        let cur = self
            .selected
            .and_then(|s| self.cands.iter().find(|c| c.addr == s))
            .filter(|c| live(c))
            .map(|c| (c.addr, c.rtt));
        let fresh = |c: &&Cand| {
            c.last_rx
                .is_some_and(|t| now.saturating_duration_since(t) < STALE)
        };
        let cur_fresh = self
            .selected
            .and_then(|s| self.cands.iter().find(|c| c.addr == s))
            .is_some_and(|c| fresh(&c) && !self.missed(c, now));
        let best_fresh = self
            .cands
            .iter()
            .filter(live)
            .filter(fresh)
            .filter(|c| !self.missed(c, now))
            .min_by_key(|c| c.rtt)
            .map(|c| c.addr);
        // The chosen path missed a probe and no other direct path answers: go to the
        // relay now rather than after DEAD_AFTER (TCP inside the tunnel backs off
        // meanwhile); a pong on the old path brings it back at once.
        let cur_missed = self
            .selected
            .and_then(|s| self.cands.iter().find(|c| c.addr == s))
            .is_some_and(|c| self.missed_for(c, now, FALLBACK_WAIT_MIN));
        if cur_missed && best_fresh.is_none() && self.relay.is_some() {
            tracing::debug!("direct path missed a probe; using the relay meanwhile");
            self.selected = None;
            self.lost_at = Some(now);
            self.probe_now(now);
            return true;
        }
        let pick = match (cur, best) {
            (Some(_), Some(_)) if !cur_fresh && best_fresh.is_some() => best_fresh,
            (Some((ca, Some(cr))), Some((ba, Some(br)))) => {
                if br.as_secs_f64() < cr.as_secs_f64() * SWITCH_FACTOR {
                    Some(ba)
                } else {
                    Some(ca)
                }
            }
            (Some((ca, _)), _) => Some(ca),
            (None, _) => self
                .cands
                .iter()
                .filter(live)
                .filter(|c| !self.missed(c, now))
                .min_by_key(|c| c.rtt)
                .map(|c| c.addr),
        };
        let changed = pick != self.selected;
        self.selected = pick;
        if changed && pick.is_some() {
            self.next_probe = Some(now + KEEPALIVE);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lowest_rtt_wins_and_dead_path_falls_back_to_relay() {
        let t0 = Instant::now();
        let mut p = PathState::new(1);
        p.set_relay(Some(a("[100::1]:1")));
        p.set_candidates(&[a("192.0.2.1:1"), a("10.0.0.1:1")], t0);
        assert_eq!(p.kind(), PathKind::Relay);
        let mut out = vec![];
        p.poll(t0, &mut out);
        assert_eq!(out.len(), 2);
        // the public candidate answers (40 ms); the LAN one's first answer is lost
        assert!(p.on_pong(out[0].0, out[0].1, t0 + Duration::from_millis(40)));
        assert_eq!(p.kind(), PathKind::Direct(a("192.0.2.1:1")));
        // next round (still within the burst): the LAN path answers in 1 ms, takes over
        let t1 = t0 + Duration::from_millis(40) + KEEPALIVE;
        out.clear();
        p.poll(t1, &mut out);
        let lan = out.iter().find(|(d, _)| *d == a("10.0.0.1:1")).unwrap();
        assert!(p.on_pong(lan.0, lan.1, t1 + Duration::from_millis(1)));
        assert_eq!(p.kind(), PathKind::Direct(a("10.0.0.1:1")));
        assert_eq!(p.rtt(), Some(Duration::from_millis(1)));
        // a pong from the wrong address or for an unknown tx is ignored
        assert!(!p.on_pong(a("192.0.2.9:9"), 999, t0));
        // silence: the path dies and the relay takes over
        let later = t1 + DEAD_AFTER + Duration::from_secs(1);
        out.clear();
        p.poll(later, &mut out);
        assert_eq!(p.kind(), PathKind::Relay);
        assert!(!out.is_empty(), "a dead path starts a new burst");
    }

    #[test]
    fn an_unanswered_probe_moves_to_the_relay_within_about_a_second_and_back() {
        let t0 = Instant::now();
        let mut p = PathState::new(1);
        p.set_relay(Some(a("[100::1]:1")));
        p.set_candidates(&[a("192.0.2.1:1")], t0);
        let mut out = vec![];
        let mut t = t0;
        // answer everything for 8 s: direct, keepalives only after the burst
        while t < t0 + Duration::from_secs(8) {
            out.clear();
            p.poll(t, &mut out);
            for (d, tx) in out.clone() {
                p.on_pong(d, tx, t + Duration::from_millis(10));
            }
            t += Duration::from_millis(100);
        }
        assert_eq!(p.kind(), PathKind::Direct(a("192.0.2.1:1")));
        // the path goes dark: no more answers
        let dark = t;
        while p.kind() != PathKind::Relay && t < dark + DEAD_AFTER {
            out.clear();
            p.poll(t, &mut out);
            t = p.poll_timeout().unwrap().max(t + Duration::from_millis(1));
        }
        assert_eq!(p.kind(), PathKind::Relay);
        // the next keepalive was due within 2 s, then 1 s of waiting
        let took = t - dark;
        assert!(
            took <= KEEPALIVE + FALLBACK_WAIT_MIN + Duration::from_millis(200),
            "{took:?}"
        );
        // probes go out at once; the first answer brings the direct path back
        out.clear();
        p.poll(t, &mut out);
        assert!(!out.is_empty());
        let (d, tx) = out[0];
        assert!(p.on_pong(d, tx, t + Duration::from_millis(10)));
        assert_eq!(p.kind(), PathKind::Direct(a("192.0.2.1:1")));
    }

    #[test]
    fn after_a_direct_path_dies_it_is_probed_every_2_s_for_a_minute() {
        let t0 = Instant::now();
        let mut p = PathState::new(1);
        p.set_relay(Some(a("[100::1]:1")));
        p.set_candidates(&[a("192.0.2.1:1")], t0);
        let mut out = vec![];
        p.poll(t0, &mut out);
        assert!(p.on_pong(out[0].0, out[0].1, t0 + Duration::from_millis(20)));
        assert_eq!(p.kind(), PathKind::Direct(a("192.0.2.1:1")));
        // silence: dead after DEAD_AFTER, then on the relay
        let dead = t0 + DEAD_AFTER + Duration::from_secs(1);
        let step = Duration::from_millis(100);
        let mut t = t0 + Duration::from_millis(20);
        let mut sent_at = vec![];
        while t < dead + Duration::from_secs(90) {
            out.clear();
            p.poll(t, &mut out);
            if t >= dead && !out.is_empty() {
                sent_at.push(t);
            }
            t += step;
        }
        assert_eq!(p.kind(), PathKind::Relay);
        let gaps: Vec<Duration> = sent_at.windows(2).map(|w| w[1] - w[0]).collect();
        let first_minute = sent_at
            .iter()
            .take_while(|s| **s < dead + RECENTLY_LOST)
            .count();
        let worst = gaps[..first_minute - 1].iter().max().unwrap();
        assert!(
            *worst <= REPROBE_AFTER_LOSS + step,
            "gap {worst:?} in the first minute"
        );
        // later, back to the slow rounds (each round is a short burst)
        let later = gaps[first_minute - 1..].iter().max().unwrap();
        assert!(*later >= REPROBE_NO_DIRECT - step, "{gaps:?}");
    }

    #[test]
    fn a_path_that_misses_a_probe_while_another_answers_is_replaced_at_once() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = PathState::new(1);
        p.set_relay(Some(a("[100::1]:1")));
        let (old, new) = (a("192.0.2.1:1"), a("198.51.100.1:1"));
        p.set_candidates(&[old], t0);
        let mut out = vec![];
        p.poll(t0, &mut out);
        assert!(p.on_pong(old, out[0].1, t0 + ms(10)));
        assert_eq!(p.kind(), PathKind::Direct(old));
        // the peer moved: its packets come from a new address, which is probed at once
        let t1 = t0 + ms(500);
        assert!(p.on_rx_direct(new, t1));
        out.clear();
        p.poll(t1, &mut out);
        assert_eq!(out.len(), 2, "both the old and the new address are probed");
        let pong = out.iter().find(|(d, _)| *d == new).unwrap().1;
        assert!(
            !p.on_pong(new, pong, t1 + ms(12)),
            "the old path is not late yet"
        );
        out.clear();
        p.poll(t1 + ms(100), &mut out);
        assert_eq!(p.kind(), PathKind::Direct(old), "4 RTTs, 150 ms at least");
        p.poll(t1 + ms(200), &mut out);
        assert_eq!(
            p.kind(),
            PathKind::Direct(new),
            "replaced long before STALE"
        );
    }

    #[test]
    fn learned_addresses_are_bounded() {
        let t0 = Instant::now();
        let mut p = PathState::new(1);
        for i in 0..100u16 {
            p.on_rx_direct(SocketAddr::from(([192, 0, 2, 1], i)), t0);
        }
        assert!(p.cands.len() <= MAX_LEARNED);
        let mut out = vec![];
        for i in 0..100 {
            p.poll(t0 + Duration::from_millis(600 * i), &mut out);
        }
        assert!(p.outstanding.len() <= MAX_OUTSTANDING);
    }
}
