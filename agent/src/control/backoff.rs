//! Reconnect pacing: exponential backoff from 0.5 s doubling to 30 s, each wait
//! jittered by ±30 % so a console restart is not met by every agent at once.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30), 0.3)
    }
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, jitter: f64) -> Self {
        Backoff {
            min,
            max,
            jitter: jitter.clamp(0.0, 1.0),
            next: min,
        }
    }

    /// The wait before the next attempt; each call doubles the base (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let f = 1.0 + rand::thread_rng().gen_range(-self.jitter..=self.jitter);
        base.mul_f64(f)
    }

    /// After a connection that worked, start again from the minimum.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_bounds_and_grow() {
        for _ in 0..50 {
            let mut b = Backoff::default();
            let first = b.next_delay();
            assert!(
                first >= Duration::from_millis(350) && first <= Duration::from_millis(650),
                "{first:?}"
            );
            let mut last = first;
            for _ in 0..20 {
                last = b.next_delay();
                assert!(last <= Duration::from_secs(39), "{last:?}");
                assert!(last >= Duration::from_millis(350), "{last:?}");
            }
            // saturated at 30 s ± 30 %
            assert!(last >= Duration::from_secs(21), "{last:?}");
            b.reset();
            assert!(b.next_delay() <= Duration::from_millis(650));
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            seen.insert(Backoff::default().next_delay().as_micros());
        }
        assert!(seen.len() > 5, "jitter should vary the delay");
    }
}
