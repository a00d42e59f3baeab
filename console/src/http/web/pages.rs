//! Pages about the inventory: overview, devices (list, search, one device) and
//! enrollment keys. Controls that change something are rendered for admins only and
//! call the REST API through `app.js` (`data-api` attributes).

use std::fmt::Write as _;

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use zmesh_shared::time::now_ms;
use zmesh_shared::wire::DeviceState;

use super::html::{ago, esc, opt_time, page, time};
use crate::http::error::ApiError;
use crate::http::scope::Scoped;
use crate::http::session::WebUser;
use crate::http::state::AppState;
use crate::store::{DeviceRow, EnrollKeyRow};

/// Whether the device's agent was heard from within three stream pings.
fn online(state: &AppState, d: &DeviceRow, now: i64) -> bool {
    crate::service::devices::is_online(d, state.ping_interval, now)
}

/// Peers reach a device directly when it has reported endpoints; otherwise only
/// through a relay.
fn path_of(d: &DeviceRow) -> &'static str {
    path_if_online(d, true)
}

fn path_if_online(d: &DeviceRow, on: bool) -> &'static str {
    if !on {
        return "—";
    }
    if d.endpoints.is_empty() {
        "relayed"
    } else {
        "direct"
    }
}

fn state_badge(s: DeviceState) -> String {
    let s = s.as_str();
    format!("<span class=\"badge state-{s}\">{s}</span>")
}

fn tags_html(tags: &[String]) -> String {
    tags.iter()
        .map(|t| format!("<span class=\"tag\">{}</span>", esc(t)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The agent version the device reported, `agentless`, or `—` before its first Hello.
fn agent_cell(d: &DeviceRow) -> String {
    match (&d.agent_version, d.agentless) {
        (Some(v), _) => esc(v),
        (None, true) => "agentless".into(),
        (None, false) => "—".into(),
    }
}

/// The last-seen cell: relative time, the absolute one on hover, milliseconds to sort by.
fn seen_cell(d: &DeviceRow, now: i64) -> String {
    format!(
        "<td title=\"{abs}\" data-sort=\"{ms}\">{rel}</td>",
        abs = opt_time(d.last_seen_ms, "never"),
        ms = d.last_seen_ms.unwrap_or(0),
        rel = ago(d.last_seen_ms, now),
    )
}

fn online_badge(on: bool) -> &'static str {
    if on {
        "<span class=\"badge online\">online</span>"
    } else {
        "<span class=\"badge offline\">offline</span>"
    }
}

pub async fn overview(
    Scoped(state): Scoped,
    Extension(user): Extension<WebUser>,
) -> Result<Response, ApiError> {
    let now = now_ms();
    let devices = state.store.list_devices(state.network_id).await?;
    let net = state.store.get_network(state.network_id).await?;
    let count = |f: &dyn Fn(&DeviceRow) -> bool| devices.iter().filter(|d| f(d)).count();
    let on = count(&|d| online(&state, d, now));
    let active = count(&|d| d.state == DeviceState::Active);
    let pending = count(&|d| d.state == DeviceState::Pending);
    let direct = count(&|d| online(&state, d, now) && path_of(d) == "direct");
    let mut rows = String::new();
    let mut sorted: Vec<&DeviceRow> = devices.iter().collect();
    sorted.sort_by_key(|d| std::cmp::Reverse(d.last_seen_ms.unwrap_or(0)));
    for d in sorted.iter().take(20) {
        let _ = write!(
            rows,
            "<tr data-device=\"{name}\"><td><a href=\"/ui/devices/{id}\">{name}</a></td><td>{st}</td>\
             <td class=\"mono\">{v4}</td><td class=\"mono\">{v6}</td><td>{os}</td><td>{agent}</td>\
             <td>{owner}</td><td>{on}</td><td>{path}</td>{seen}</tr>",
            id = d.id,
            name = esc(&d.name),
            st = state_badge(d.state),
            v4 = d.overlay_v4,
            v6 = d.overlay_v6,
            os = esc(d.os.as_deref().unwrap_or("—")),
            agent = agent_cell(d),
            owner = esc(&d.owner),
            on = online_badge(online(&state, d, now)),
            path = path_if_online(d, online(&state, d, now)),
            seen = seen_cell(d, now),
        );
    }
    let body = format!(
        r#"<section class="stats" id="overview-stats" data-live>
<div class="stat"><b id="stat-online">{on}</b><span>online</span></div>
<div class="stat"><b id="stat-total">{total}</b><span>devices</span></div>
<div class="stat"><b>{active}</b><span>active</span></div>
<div class="stat"><b id="stat-pending">{pending}</b><span>pending approval</span></div>
<div class="stat"><b>{direct}/{on}</b><span>online direct / relayed {relayed}</span></div>
</section>
<p class="muted" id="overview-network" data-live>Network <b>{netname}</b> · {v4} · {v6} · revision {rev}</p>
<h2>Recently seen</h2>
<table id="overview-devices" class="sortable"><thead><tr><th>Device</th><th>State</th><th>IPv4</th><th>IPv6</th>
<th>OS</th><th>Agent</th><th>Owner</th><th>Status</th><th>Path</th><th>Last seen</th></tr></thead>
<tbody id="overview-devices-body" data-live>{rows}</tbody></table>"#,
        total = devices.len(),
        relayed = on - direct,
        netname = esc(&net.name),
        v4 = net.prefix_v4,
        v6 = net.prefix_v6,
        rev = net.revision,
    );
    Ok(page(&user, "overview", "Overview", &body))
}

#[derive(Deserialize, Default)]
pub struct DeviceQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
}

fn matches(d: &DeviceRow, q: &str) -> bool {
    if q.is_empty() {
        return true;
    }
    let q = q.to_lowercase();
    d.name.to_lowercase().contains(&q)
        || d.tags.iter().any(|t| t.to_lowercase().contains(&q))
        || d.overlay_v4.to_string().contains(&q)
        || d.overlay_v6.to_string().contains(&q)
        || d.hostname
            .as_deref()
            .is_some_and(|h| h.to_lowercase().contains(&q))
        || d.os
            .as_deref()
            .is_some_and(|h| h.to_lowercase().contains(&q))
        || d.id.to_string().contains(&q)
}

pub async fn devices(
    Scoped(state): Scoped,
    Extension(user): Extension<WebUser>,
    Query(q): Query<DeviceQuery>,
) -> Result<Response, ApiError> {
    let now = now_ms();
    let all = state.store.list_devices(state.network_id).await?;
    let shown: Vec<&DeviceRow> = all
        .iter()
        .filter(|d| matches(d, q.q.trim()))
        .filter(|d| q.state.is_empty() || d.state.as_str() == q.state)
        .collect();
    let mut rows = String::new();
    for d in &shown {
        let mut actions = String::new();
        if user.is_admin() {
            if d.state == DeviceState::Pending {
                let _ = write!(actions, "<button data-api=\"/api/v1/devices/{}/approve\" data-method=\"POST\" class=\"small\" id=\"approve-{}\">Approve</button> ", d.id, esc(&d.name));
            }
            if d.state != DeviceState::Revoked {
                let _ = write!(actions, "<button data-api=\"/api/v1/devices/{}/revoke\" data-method=\"POST\" data-confirm=\"Revoke {}? Its credential dies at once.\" class=\"small danger\">Revoke</button>", d.id, esc(&d.name));
            }
        }
        let _ = write!(
            rows,
            "<tr data-device=\"{name}\"><td><a href=\"/ui/devices/{id}\">{name}</a>{agentless}</td><td>{st}</td>\
             <td>{tags}</td><td class=\"mono\">{v4}</td><td class=\"mono\">{v6}</td><td>{os}</td>\
             <td>{agent}</td><td>{owner}</td><td>{on}</td><td>{path}</td>\
             {seen}<td data-sort=\"{exp_sort}\">{exp}</td><td>{actions}</td></tr>",
            id = d.id,
            name = esc(&d.name),
            agentless = if d.agentless { " <span class=\"tag\">agentless</span>" } else { "" },
            st = state_badge(d.state),
            tags = tags_html(&d.tags),
            v4 = d.overlay_v4,
            v6 = d.overlay_v6,
            os = esc(d.os.as_deref().unwrap_or("—")),
            agent = agent_cell(d),
            owner = esc(&d.owner),
            on = online_badge(online(&state, d, now)),
            path = path_if_online(d, online(&state, d, now)),
            seen = seen_cell(d, now),
            exp_sort = d.key_expires_at_ms.unwrap_or(i64::MAX),
            exp = opt_time(d.key_expires_at_ms, "never"),
        );
    }
    let sel = |s: &str| if q.state == s { " selected" } else { "" };
    let add = if user.is_admin() {
        r#"<details class="card"><summary>Add an agentless device (stock WireGuard)</summary>
<form data-api="/api/v1/devices" data-method="POST" data-done="reload" id="add-device-form">
<label>Name <input name="name" required></label>
<label>WireGuard public key <input name="public_key" required class="mono"></label>
<label>Tags <input name="tags" data-type="list" placeholder="tag:server, tag:db"></label>
<button type="submit">Add device</button><p class="form-error"></p></form></details>"#
    } else {
        ""
    };
    let body = format!(
        r#"<form method="get" action="/ui/devices" class="search" id="device-search">
<input name="q" value="{q}" placeholder="Search name, tag, address, host, OS" id="device-q">
<select name="state"><option value="">any state</option><option value="pending"{p}>pending</option>
<option value="active"{a}>active</option><option value="revoked"{r}>revoked</option></select>
<button type="submit">Search</button></form>
<p class="muted" id="device-count" data-live>{n} of {total} devices</p>
<table id="devices" class="sortable"><thead><tr><th>Name</th><th>State</th><th>Tags</th><th>IPv4</th><th>IPv6</th>
<th>OS</th><th>Agent</th><th>Owner</th><th>Status</th><th>Path</th>
<th>Last seen</th><th>Key expires</th><th class="nosort"></th></tr></thead><tbody id="devices-body" data-live>{rows}</tbody></table>
<p class="form-error" id="flash"></p>
{add}"#,
        q = esc(&q.q),
        p = sel("pending"),
        a = sel("active"),
        r = sel("revoked"),
        n = shown.len(),
        total = all.len(),
    );
    Ok(page(&user, "devices", "Devices", &body))
}

pub async fn device(
    Scoped(state): Scoped,
    Extension(user): Extension<WebUser>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let now = now_ms();
    let d = match crate::service::devices::find(&state, &id).await {
        Ok(d) => d,
        Err(crate::service::ServiceError::Store(crate::store::StoreError::NotFound { .. }))
        | Err(crate::service::ServiceError::NotFound { .. }) => {
            return Ok(super::html::error_page(
                &user,
                StatusCode::NOT_FOUND,
                "No such device.",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let eps: Vec<String> = d.endpoints.iter().map(|e| e.to_string()).collect();
    let mut info = String::new();
    for (k, v) in [
        ("ID", format!("<span class=\"mono\">{}</span>", d.id)),
        ("State", state_badge(d.state)),
        (
            "Status",
            format!(
                "{} · {}",
                online_badge(online(&state, &d, now)),
                path_of(&d)
            ),
        ),
        (
            "Last seen",
            format!(
                "{} ({})",
                ago(d.last_seen_ms, now),
                opt_time(d.last_seen_ms, "never")
            ),
        ),
        (
            "Overlay",
            format!(
                "<span class=\"mono\">{} · {}</span>",
                d.overlay_v4, d.overlay_v6
            ),
        ),
        (
            "Public key",
            format!("<span class=\"mono\">{}</span>", d.public_key),
        ),
        ("Tags", tags_html(&d.tags)),
        ("Owner", esc(&d.owner)),
        (
            "Hostname / OS",
            format!(
                "{} / {}",
                esc(d.hostname.as_deref().unwrap_or("-")),
                esc(d.os.as_deref().unwrap_or("-"))
            ),
        ),
        ("Agent version", agent_cell(&d)),
        ("Endpoints", esc(&eps.join(", "))),
        ("Key expires", opt_time(d.key_expires_at_ms, "never")),
        ("Created", time(d.created_at_ms)),
        (
            "Kind",
            if d.agentless {
                "agentless (stock WireGuard)".into()
            } else {
                "zmesh agent".to_string()
            },
        ),
    ] {
        let _ = write!(info, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    let wg = if d.agentless {
        format!("<p><a href=\"/api/v1/devices/{}/wireguard-config\" download=\"{}.conf\" id=\"wg-export\">Download WireGuard configuration</a></p>", d.id, esc(&d.name))
    } else {
        String::new()
    };
    let mut forms = String::new();
    if user.is_admin() && d.state != DeviceState::Revoked {
        let api = format!("/api/v1/devices/{}", d.id);
        let exp = d
            .key_expires_at_ms
            .map(|ms| time(ms).trim_end_matches(" UTC").replace(' ', "T")[..16].to_string())
            .unwrap_or_default();
        let _ = write!(
            forms,
            r#"<div class="grid2">
<form data-api="{api}" data-method="PATCH" data-done="reload" class="card" id="rename-form"><h3>Rename</h3>
<label>Name <input name="name" value="{name}" required></label><button type="submit">Rename</button><p class="form-error"></p></form>
<form data-api="{api}" data-method="PATCH" data-done="reload" class="card" id="tags-form"><h3>Tags</h3>
<label>Tags (comma separated) <input name="tags" data-type="list" value="{tags}"></label><button type="submit">Save tags</button><p class="form-error"></p></form>
<form data-api="{api}" data-method="PATCH" data-done="reload" class="card" id="expiry-form"><h3>Key expiry</h3>
<label>Expires (UTC; empty: never) <input name="key_expires_at_ms" type="datetime-local" data-type="datetime" value="{exp}"></label>
<button type="submit">Save expiry</button><p class="form-error"></p></form>
<div class="card"><h3>State</h3>{approve}
<button data-api="{api}/revoke" data-method="POST" data-confirm="Revoke {name}? Its credential dies at once." class="danger" id="revoke">Revoke</button>
<button data-api="{api}" data-method="DELETE" data-confirm="Delete {name}?" data-done="redirect:/ui/devices" class="danger">Delete</button>
<p class="form-error" id="flash"></p></div></div>"#,
            name = esc(&d.name),
            tags = esc(&d.tags.join(", ")),
            approve = if d.state == DeviceState::Pending {
                format!("<button data-api=\"{api}/approve\" data-method=\"POST\" id=\"approve\">Approve</button> ")
            } else {
                String::new()
            },
        );
    }
    let body = format!(
        "<p><a href=\"/ui/devices\">← all devices</a></p><table class=\"kv\" id=\"device-info\">{info}</table>{wg}{forms}"
    );
    Ok(page(&user, "devices", &d.name, &body))
}

fn key_status(k: &EnrollKeyRow, now: i64) -> &'static str {
    if k.revoked_at_ms.is_some() {
        "revoked"
    } else if k.expires_at_ms.is_some_and(|e| e <= now) {
        "expired"
    } else if !k.reusable && k.used_count > 0 {
        "used"
    } else {
        "usable"
    }
}

pub async fn keys(
    Scoped(state): Scoped,
    Extension(user): Extension<WebUser>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let now = now_ms();
    let keys = state.store.list_enroll_keys(state.network_id).await?;
    let mut rows = String::new();
    for k in keys.iter().rev() {
        let status = key_status(k, now);
        let revoke = if user.is_admin() && status == "usable" {
            format!("<button data-api=\"/api/v1/enroll-keys/{}/revoke\" data-method=\"POST\" data-confirm=\"Revoke this key? Devices enrolled with it stay.\" class=\"small danger\">Revoke</button>", k.id)
        } else {
            String::new()
        };
        let _ = write!(
            rows,
            "<tr><td class=\"mono\">{id}</td><td>{desc}</td><td><span class=\"badge key-{status}\">{status}</span></td>\
             <td>{kind}{pre}</td><td>{tags}</td><td>{used}</td><td>{exp}</td><td>{by}</td><td>{revoke}</td></tr>",
            id = k.id,
            desc = esc(k.description.as_deref().unwrap_or("")),
            kind = if k.reusable { "reusable" } else { "one-off" },
            pre = if k.preapproved { ", pre-approved" } else { "" },
            tags = tags_html(&k.tags),
            used = k.used_count,
            exp = opt_time(k.expires_at_ms, "never"),
            by = esc(&k.created_by),
        );
    }
    // The URL agents should use: the one this browser reached the console at.
    let host =
        crate::http::session::request_host(&headers, &uri).unwrap_or_else(|| "CONSOLE-HOST".into());
    let console_url = format!("https://{host}");
    let create = if user.is_admin() {
        format!(
            r##"<form data-api="/api/v1/enroll-keys" data-method="POST" data-done="show:#new-key" class="card" id="create-key-form">
<h2>New enrollment key</h2>
<label>Description <input name="description" data-optional placeholder="laptops of the ops team"></label>
<label>Tags <input name="tags" data-type="list" placeholder="tag:server"></label>
<label>Valid for <input name="ttl_seconds" data-type="duration" value="24h" placeholder="24h, 30d, 2w or seconds"></label>
<label class="check"><input type="checkbox" name="reusable" data-type="bool"> reusable</label>
<label class="check"><input type="checkbox" name="preapproved" data-type="bool" checked> devices are approved at once</label>
<button type="submit" id="create-key">Create key</button><p class="form-error"></p></form>
<div id="new-key" class="card hidden" data-console="{url}"><h3>Key created — shown only now</h3>
<p>Run on the device:</p><pre id="up-command" class="mono"></pre>
<button type="button" data-copy="#up-command" id="copy-command">Copy command</button>
<p class="muted">The key text is not stored; it cannot be shown again. <a href="/ui/keys">Refresh the list</a></p></div>"##,
            url = esc(&console_url)
        )
    } else {
        String::new()
    };
    let body = format!(
        r#"{create}<h2>Keys</h2><table id="keys"><thead><tr><th>ID</th><th>Description</th><th>Status</th><th>Kind</th>
<th>Tags</th><th>Used</th><th>Expires</th><th>Created by</th><th></th></tr></thead><tbody>{rows}</tbody></table>
<p class="form-error" id="flash"></p>"#
    );
    Ok(page(&user, "keys", "Enrollment keys", &body))
}
