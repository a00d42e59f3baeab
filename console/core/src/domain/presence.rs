//! Whether a device is online and how long ago it was seen: the one definition the
//! web pages, the API (`online` in the device list) and the CLI's `devices list` share,
//! so they always show the same values.

use std::time::Duration;

/// Heard from within three stream pings (a stream silent for longer is dropped).
pub fn is_online(last_seen_ms: Option<i64>, ping_interval: Duration, now_ms: i64) -> bool {
    let window = (ping_interval.as_millis() as i64).saturating_mul(3);
    last_seen_ms.is_some_and(|t| now_ms - t <= window)
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
}
