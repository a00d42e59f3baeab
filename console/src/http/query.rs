//! Query-string parsing shared by the API and the web pages: times, text parameters,
//! unknown-parameter checks and the audit event filter.

use std::collections::HashMap;

use zmesh_shared::DeviceId;

use super::error::ApiError;
use super::state::AppState;
use crate::store::EventFilter;

/// Unix milliseconds or an RFC 3339 time (`2024-05-01T00:00:00Z`, `2024-05-01`).
pub fn parse_time(field: &str, s: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    let t = humantime::parse_rfc3339_weak(&full)
        .map_err(|_| ApiError::invalid(field, "expected Unix milliseconds or an RFC 3339 time"))?;
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ApiError::invalid(field, "before 1970"))?;
    i64::try_from(d.as_millis()).map_err(|_| ApiError::invalid(field, "too far in the future"))
}

pub fn known(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    for k in q.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::invalid(k.clone(), "unknown query parameter"));
        }
    }
    Ok(())
}

pub fn text_param(q: &HashMap<String, String>, k: &str) -> Result<Option<String>, ApiError> {
    match q.get(k) {
        None => Ok(None),
        Some(v) if v.is_empty() || v.len() > 256 || v.chars().any(char::is_control) => {
            Err(ApiError::invalid(k, "1 to 256 printable characters"))
        }
        Some(v) => Ok(Some(v.clone())),
    }
}

pub async fn event_filter(
    state: &AppState,
    q: &HashMap<String, String>,
) -> Result<EventFilter, ApiError> {
    let device = match text_param(q, "device")? {
        None => None,
        Some(d) => Some(match d.parse::<DeviceId>() {
            Ok(id) => id.to_string(),
            Err(_) => crate::service::devices::find(state, &d)
                .await?
                .id
                .to_string(),
        }),
    };
    Ok(EventFilter {
        since_ms: q.get("since").map(|s| parse_time("since", s)).transpose()?,
        until_ms: q.get("until").map(|s| parse_time("until", s)).transpose()?,
        actor: text_param(q, "actor")?,
        device,
        action: text_param(q, "action")?,
    })
}
