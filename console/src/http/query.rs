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

/// The audit event filter of a query string; `network`: only events recorded inside
/// this network (already resolved by the caller), whose device names `device` is in.
pub async fn event_filter(
    state: &AppState,
    q: &HashMap<String, String>,
    network: Option<zmesh_shared::NetworkId>,
) -> Result<EventFilter, ApiError> {
    let state = &match network {
        Some(n) => state.in_network(n),
        None => state.clone(),
    };
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
        network: network.map(|n| n.to_string()),
    })
}

/// The access log filter of `GET /api/v1/flows` and `GET /api/v1/audit/access`:
/// `since`, `until`, `device` (id or name), `user` (email or username: that user's
/// devices), `verdict`, `one_sided`. Returns the filter and the user as given.
pub async fn access_filter(
    state: &AppState,
    q: &HashMap<String, String>,
) -> Result<(crate::store::AccessFilter, Option<String>), ApiError> {
    use zmesh_shared::wire::FlowVerdict;
    let mut devices: Option<Vec<DeviceId>> = match text_param(q, "device")? {
        None => None,
        Some(d) => Some(vec![match d.parse::<DeviceId>() {
            Ok(id) => id,
            Err(_) => crate::service::devices::find(state, &d).await?.id,
        }]),
    };
    let user = text_param(q, "user")?;
    if let Some(u) = &user {
        let owned = state
            .store
            .user_device_ids(u)
            .await?
            .ok_or_else(|| ApiError::invalid("user", "no user with this email or name"))?;
        devices = Some(match devices {
            // both given: that device, if the user owns it
            Some(d) => d.into_iter().filter(|d| owned.contains(d)).collect(),
            None => owned,
        });
    }
    let verdict = match q.get("verdict") {
        None => None,
        Some(v) => Some(
            FlowVerdict::parse(v)
                .ok_or_else(|| ApiError::invalid("verdict", "accepted or denied"))?,
        ),
    };
    let one_sided_only = match q.get("one_sided").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid("one_sided", "true or false")),
    };
    let f = crate::store::AccessFilter {
        since_ms: q.get("since").map(|s| parse_time("since", s)).transpose()?,
        until_ms: q.get("until").map(|s| parse_time("until", s)).transpose()?,
        devices,
        verdict,
        one_sided_only,
    };
    Ok((f, user))
}
