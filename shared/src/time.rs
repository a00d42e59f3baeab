//! Wall-clock timestamps on the wire and in the store: milliseconds since the Unix
//! epoch as `i64`, which both SQLite and PostgreSQL store natively.

/// Milliseconds since the Unix epoch. Only edges (console handlers, agent shell)
/// read the clock; pure code takes a `UnixMillis` as input.
pub type UnixMillis = i64;

pub fn now_ms() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
