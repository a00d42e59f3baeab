//! Datagrams for a device that is not connected to the relay yet, kept a few seconds.
//!
//! Two agents that come up together reach the relay a few hundred milliseconds apart.
//! The first one's WireGuard handshake initiation would find nobody and be dropped, and
//! WireGuard sends the next one only after its 5 s retry timer: 5 s before the first
//! packet over the relay. Holding small datagrams (handshake messages and probes; data
//! packets are useless before a handshake anyway) until the destination connects makes
//! that a few hundred milliseconds. Bounded in age, per destination and in total, so a
//! device cannot make the relay hoard memory by sending to keys that never come.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long a held datagram stays deliverable (within WireGuard's 5 s retry window,
/// so a late initiation still completes rather than racing its successor).
pub const HOLD_FOR: Duration = Duration::from_secs(3);
/// Largest datagram held: a handshake initiation is 148 bytes.
pub const MAX_LEN: usize = 256;
const PER_DESTINATION: usize = 4;
const MAX_DESTINATIONS: usize = 1024;

type Datagram = ([u8; 32], Vec<u8>);

/// Held datagrams per destination key `K`. Sans-IO: the caller passes the time.
#[derive(Debug)]
pub struct Held<K> {
    by_dst: HashMap<K, VecDeque<(Instant, Datagram)>>,
}

impl<K: std::hash::Hash + Eq + Clone> Default for Held<K> {
    fn default() -> Self {
        Held {
            by_dst: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Held<K> {
    /// Keeps `data` from `src` for `dst`; false when it was not kept (too large, or
    /// the limits are reached).
    pub fn push(&mut self, dst: K, src: [u8; 32], data: Vec<u8>, now: Instant) -> bool {
        if data.len() > MAX_LEN {
            return false;
        }
        if !self.by_dst.contains_key(&dst) && self.by_dst.len() >= MAX_DESTINATIONS {
            self.expire(now);
            if self.by_dst.len() >= MAX_DESTINATIONS {
                return false;
            }
        }
        let q = self.by_dst.entry(dst).or_default();
        while q
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > HOLD_FOR)
        {
            q.pop_front();
        }
        if q.len() >= PER_DESTINATION {
            // the newest handshake is the one worth delivering
            q.pop_front();
        }
        q.push_back((now, (src, data)));
        true
    }

    /// What is still deliverable to `dst`, oldest first; forgets the rest.
    pub fn take(&mut self, dst: &K, now: Instant) -> Vec<Datagram> {
        self.by_dst
            .remove(dst)
            .map(|q| {
                q.into_iter()
                    .filter(|(t, _)| now.duration_since(*t) <= HOLD_FOR)
                    .map(|(_, d)| d)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn expire(&mut self, now: Instant) {
        self.by_dst.retain(|_, q| {
            q.retain(|(t, _)| now.duration_since(*t) <= HOLD_FOR);
            !q.is_empty()
        });
    }

    #[cfg(test)]
    fn destinations(&self) -> usize {
        self.by_dst.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_small_recent_datagrams_within_bounds() {
        let t0 = Instant::now();
        let mut h: Held<u32> = Held::default();
        assert!(
            !h.push(1, [1; 32], vec![0; MAX_LEN + 1], t0),
            "data packets are not held"
        );
        for i in 0..6u8 {
            assert!(h.push(1, [i; 32], vec![i], t0 + Duration::from_millis(i as u64)));
        }
        // only the newest four, oldest first
        let got = h.take(&1, t0 + Duration::from_secs(1));
        assert_eq!(
            got.iter().map(|(_, d)| d[0]).collect::<Vec<_>>(),
            vec![2, 3, 4, 5]
        );
        assert!(h.take(&1, t0).is_empty(), "taken once");
        // too old
        h.push(2, [9; 32], vec![9], t0);
        assert!(h
            .take(&2, t0 + HOLD_FOR + Duration::from_millis(1))
            .is_empty());
        // bounded number of destinations; expired ones make room
        for d in 0..MAX_DESTINATIONS as u32 {
            assert!(h.push(100 + d, [0; 32], vec![1], t0));
        }
        assert!(!h.push(5, [0; 32], vec![1], t0 + Duration::from_secs(1)));
        assert!(h.push(5, [0; 32], vec![1], t0 + HOLD_FOR + Duration::from_secs(1)));
        assert_eq!(h.destinations(), 1);
    }
}
