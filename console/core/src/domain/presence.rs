//! Whether a device is online and how long ago it was seen: the one definition the
//! web pages, the API (`online` in the device list) and the CLI's `devices list` share,
//! so they always show the same values.

use std::time::Duration;

use zmesh_shared::DeviceId;

/// Heard from within three stream pings (a stream silent for longer is dropped).
pub fn is_online(last_seen_ms: Option<i64>, ping_interval: Duration, now_ms: i64) -> bool {
    let window = (ping_interval.as_millis() as i64).saturating_mul(3);
    last_seen_ms.is_some_and(|t| now_ms - t <= window)
}

/// The devices online at `now_ms`, and when the first of them goes offline if nothing
/// is heard from it (ms), so pages watching the list can be told of that moment too:
/// going offline is the passing of time, not an event anyone publishes.
pub fn online_and_next_expiry<I>(
    devices: I,
    ping_interval: Duration,
    now_ms: i64,
) -> (std::collections::BTreeSet<DeviceId>, Option<i64>)
where
    I: IntoIterator<Item = (DeviceId, Option<i64>)>,
{
    let window = (ping_interval.as_millis() as i64).saturating_mul(3);
    let mut online = std::collections::BTreeSet::new();
    let mut next = None::<i64>;
    for (id, seen) in devices {
        if is_online(seen, ping_interval, now_ms) {
            online.insert(id);
            let t = seen.unwrap_or(now_ms) + window + 1;
            next = Some(next.map_or(t, |n| n.min(t)));
        }
    }
    (online, next)
}

/// `5 s ago`, `3 min ago`, `2 h ago`, `4 d ago`, or `never`.
pub fn ago(ms: Option<i64>, now_ms: i64) -> String {
    let Some(ms) = ms else {
        return "never".into();
    };
    let s = (now_ms - ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_within_three_pings() {
        let p = Duration::from_secs(15);
        assert!(is_online(Some(1_000), p, 46_000));
        assert!(!is_online(Some(1_000), p, 46_001));
        assert!(!is_online(None, p, 0));
        assert_eq!(ago(Some(1_000), 5_500), "4 s ago");
        assert_eq!(ago(Some(0), 7_200_000), "2 h ago");
    }

    #[test]
    fn next_expiry_is_the_first_online_device_to_fall_silent() {
        let p = Duration::from_secs(1);
        let (a, b, c) = (DeviceId::new(), DeviceId::new(), DeviceId::new());
        let (on, next) =
            online_and_next_expiry([(a, Some(10_000)), (b, Some(9_000)), (c, None)], p, 11_000);
        assert_eq!(on.len(), 2);
        assert_eq!(next, Some(12_001), "b falls silent first");
        let (on, next) = online_and_next_expiry([(a, Some(0)), (c, None)], p, 11_000);
        assert!(on.is_empty());
        assert_eq!(next, None, "nothing left to wait for");
    }
}
