//! Pages about people and what they did: the audit log (actors and targets with their
//! names, each event's before/after in a collapsed block) and users & tokens.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use serde_json::Value;
use zmesh_shared::time::now_ms;

use super::html::{esc, opt_time, page, time, url_enc};
use super::names::Names;
use crate::http::error::ApiError;
use crate::http::session::WebUser;
use crate::http::state::AppState;

/// An event's before/after: a one-line summary that opens to both, pretty-printed.
fn detail_html(before: Option<&Value>, after: Option<&Value>) -> String {
    let Some(first) = after.or(before) else {
        return String::new();
    };
    let summary: String = first.to_string().chars().take(120).collect();
    let mut parts = String::new();
    for (label, v) in [("before", before), ("after", after)] {
        if let Some(v) = v {
            let pretty = serde_json::to_string_pretty(v).unwrap_or_default();
            let _ = write!(parts, "<h4>{label}</h4><pre>{}</pre>", esc(&pretty));
        }
    }
    format!(
        "<details class=\"small\"><summary class=\"mono\">{}</summary>{parts}</details>",
        esc(&summary)
    )
}

const AUDIT_FIELDS: &[&str] = &["since", "until", "actor", "action", "device"];
/// The page shows matches among this many newest events; exports have everything.
const AUDIT_SCAN: u64 = 5000;
const AUDIT_SHOW: usize = 200;

pub async fn audit(
    State(state): State<AppState>,
    Extension(user): Extension<WebUser>,
    Query(mut q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    q.retain(|k, v| AUDIT_FIELDS.contains(&k.as_str()) && !v.trim().is_empty());
    for v in q.values_mut() {
        *v = v.trim().to_string();
    }
    let mut notice = String::new();
    // a user scoped to a network sees its events only
    let filter = match crate::http::query::event_filter(&state, &q, user.user.network_id).await {
        Ok(f) => f,
        Err(e) => {
            let _ = write!(
                notice,
                "<p class=\"error\" id=\"filter-error\">{}</p>",
                esc(&e.to_string())
            );
            q.clear();
            crate::store::EventFilter::default()
        }
    };
    let head = state.store.audit_head().await?;
    let events = state
        .store
        .audit_events_page(
            head.seq.saturating_sub(AUDIT_SCAN),
            head.seq,
            &filter,
            AUDIT_SCAN as u32,
        )
        .await?;
    let mut names = Names::load(&state).await?;
    for e in &events {
        let removed = e.action == "device.delete";
        if let (true, Some(id), Some(name)) = (
            removed,
            e.target.as_deref().and_then(|t| t.strip_prefix("device:")),
            e.before.as_ref().and_then(|b| b["name"].as_str()),
        ) {
            names.note_removed(id, name);
        }
    }
    let mut rows = String::new();
    for e in events.iter().rev().take(AUDIT_SHOW) {
        let _ = write!(
            rows,
            "<tr><td class=\"num\">{seq}</td><td class=\"nowrap\">{when}</td><td>{actor}</td><td><b>{action}</b></td><td>{target}</td><td>{src}</td><td>{detail}</td></tr>",
            seq = e.seq,
            when = time(e.time_ms),
            actor = names.reference(&e.actor),
            action = esc(&e.action),
            target = e.target.as_deref().map(|t| names.reference(t)).unwrap_or_default(),
            src = esc(e.source_addr.as_deref().unwrap_or("")),
            detail = detail_html(e.before.as_ref(), e.after.as_ref()),
        );
    }
    let report =
        crate::service::audit::verify::verify_store(&state.store, &state.signing_key.public_key())
            .await;
    let verdict = match report {
        Ok(r) if r.ok => format!(
            "<div class=\"verify ok\" id=\"chain-status\" data-ok=\"true\">Chain verified: {} events, {} signed checkpoints, {} events after the newest checkpoint.{}</div>",
            r.verified,
            r.checkpoints,
            r.unsigned_tail,
            r.access
                .as_ref()
                .map(|a| format!(
                    " Access log verified: {} records, {} after the newest anchor.",
                    a.verified, a.unanchored_tail
                ))
                .unwrap_or_default()
        ),
        // the audit chain holds, the access log (checked after it) does not
        Ok(r) if r.access.as_ref().is_some_and(|a| !a.ok) => {
            let a = r.access.as_ref().expect("checked");
            format!(
                "<div class=\"verify bad\" id=\"chain-status\" data-ok=\"false\">Audit chain verified ({} events), but the access log does NOT verify at record {}: {}</div>",
                r.verified,
                a.first_bad_seq.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
                esc(a.error.as_deref().unwrap_or("unknown"))
            )
        }
        Ok(r) => format!(
            "<div class=\"verify bad\" id=\"chain-status\" data-ok=\"false\">Chain BROKEN at event {}: {}</div>",
            r.first_bad_seq.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
            esc(r.error.as_deref().unwrap_or("unknown"))
        ),
        Err(e) => format!(
            "<div class=\"verify bad\" id=\"chain-status\" data-ok=\"false\">Verification failed: {}</div>",
            esc(&e.to_string())
        ),
    };
    let qs: String = AUDIT_FIELDS
        .iter()
        .filter_map(|k| q.get(*k).map(|v| format!("&{k}={}", url_enc(v))))
        .collect();
    let val = |k: &str| esc(q.get(k).map(String::as_str).unwrap_or(""));
    let body = format!(
        r#"{verdict}{notice}
<form method="get" action="/ui/audit" class="search" id="audit-filter">
<input name="since" value="{since}" placeholder="since (2024-05-01)">
<input name="until" value="{until}" placeholder="until">
<input name="actor" value="{actor}" placeholder="actor (user:alice)">
<input name="action" value="{action}" placeholder="action (device. or auth.signin)">
<input name="device" value="{device}" placeholder="device">
<button type="submit">Filter</button></form>
<p>Export: <a href="/api/v1/audit/events?format=csv{qs}" id="export-csv" download="zmesh-audit.csv">CSV</a> ·
<a href="/api/v1/audit/events?format=jsonl{qs}" id="export-jsonl" download="zmesh-audit.jsonl">JSONL</a> ·
<a href="/api/v1/audit/events?format=cef{qs}" download="zmesh-audit.cef">CEF</a>
<span class="muted">(exports carry the chain fields and checkpoints; verify them offline with <code>zmesh-console audit verify --file</code>)</span></p>
<p class="muted">Newest {shown} matching events of the latest {scan} (head: event {head}).</p>
<table id="audit-events"><thead><tr><th>#</th><th>Time</th><th>Actor</th><th>Action</th><th>Target</th><th>From</th><th>Detail</th></tr></thead>
<tbody>{rows}</tbody></table>"#,
        since = val("since"),
        until = val("until"),
        actor = val("actor"),
        action = val("action"),
        device = val("device"),
        shown = events.len().min(AUDIT_SHOW),
        scan = AUDIT_SCAN,
        head = head.seq,
    );
    Ok(page(&user, "audit", "Audit log", &body))
}

pub async fn users(
    State(state): State<AppState>,
    Extension(user): Extension<WebUser>,
) -> Result<Response, ApiError> {
    let now = now_ms();
    let users = state.store.list_users().await?;
    let tokens = state.store.list_tokens_with_owner().await?;
    let mut urows = String::new();
    for u in &users {
        let me = u.id == user.user.id;
        let other_role = match u.role {
            crate::store::Role::Admin => "auditor",
            crate::store::Role::Auditor | crate::store::Role::Member => "admin",
        };
        let api = format!("/api/v1/users/{}", u.id);
        let toggle = if u.disabled_at_ms.is_some() {
            format!("<button data-api=\"{api}\" data-method=\"PATCH\" data-body='{{\"disabled\": false}}' class=\"small\">Enable</button>")
        } else {
            format!("<button data-api=\"{api}\" data-method=\"PATCH\" data-body='{{\"disabled\": true}}' data-confirm=\"Disable {n}? Their sessions end and their tokens are revoked.\" class=\"small danger\">Disable</button>", n = esc(&u.username))
        };
        let _ = write!(
            urows,
            r#"<tr data-user="{name}"><td>{name}{me}</td><td><span class="role role-{role}">{role}</span></td><td>{state}</td><td>{last}</td><td>{created}</td>
<td><button data-api="{api}" data-method="PATCH" data-body='{{"role": "{other_role}"}}' data-confirm="Make {name} {other_role}?" class="small">Make {other_role}</button>
{toggle}
<form data-api="{api}" data-method="PATCH" data-done="reload" class="inline"><input name="password" type="password" placeholder="new password" autocomplete="new-password" required size="14"><button type="submit" class="small">Set password</button><span class="form-error"></span></form>
<button data-api="{api}" data-method="DELETE" data-confirm="Delete {name}?" class="small danger">Delete</button></td></tr>"#,
            name = esc(&u.username),
            me = if me {
                " <span class=\"muted\">(you)</span>"
            } else {
                ""
            },
            role = u.role.as_str(),
            state = if u.disabled_at_ms.is_some() {
                "disabled"
            } else {
                "active"
            },
            last = opt_time(u.last_sign_in_ms, "never"),
            created = time(u.created_at_ms),
        );
    }
    let mut trows = String::new();
    for t in tokens.iter().rev() {
        let status = if t.token.revoked_at_ms.is_some() {
            "revoked"
        } else if t.token.expires_at_ms.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "live"
        };
        let revoke = if status == "live" {
            format!("<button data-api=\"/api/v1/tokens/{}/revoke\" data-method=\"POST\" data-confirm=\"Revoke this token?\" class=\"small danger\">Revoke</button>", t.token.id)
        } else {
            String::new()
        };
        let _ = write!(
            trows,
            "<tr><td>{name}</td><td>{owner}</td><td><span class=\"role role-{role}\">{role}</span></td><td>{status}</td><td>{created}</td><td>{exp}</td><td>{revoke}</td></tr>",
            name = esc(&t.token.name),
            owner = esc(t.owner.as_deref().unwrap_or("— (service token)")),
            role = t.token.role.as_str(),
            created = time(t.token.created_at_ms),
            exp = opt_time(t.token.expires_at_ms, "never"),
        );
    }
    let body = format!(
        r##"<h2>Users</h2><table id="users"><thead><tr><th>User</th><th>Role</th><th>State</th><th>Last sign-in</th><th>Created</th><th></th></tr></thead>
<tbody>{urows}</tbody></table><p class="form-error" id="flash"></p>
<form data-api="/api/v1/users" data-method="POST" data-done="reload" class="card" id="create-user-form"><h3>New user</h3>
<div class="row"><label>Username <input name="username" required></label>
<label>Password <input name="password" type="password" autocomplete="new-password" required></label>
<label>Role <select name="role"><option>auditor</option><option>admin</option></select></label>
<button type="submit">Create user</button></div><p class="form-error"></p></form>
<h2>API tokens</h2>
<form data-api="/api/v1/users/{me}/tokens" data-method="POST" data-done="token:#new-token" class="card" id="create-token-form">
<h3>New personal token (acts as you, with your role)</h3>
<div class="row"><label>Name <input name="name" required placeholder="laptop CLI"></label>
<label>Valid for <input name="ttl_seconds" data-type="duration" value="30d" placeholder="30d, 24h, 2w or seconds"></label>
<button type="submit" id="create-token">Create token</button></div><p class="form-error"></p>
<div id="new-token" class="hidden"><p>Token — shown only now:</p><pre class="mono" id="new-token-text"></pre>
<button type="button" data-copy="#new-token-text">Copy</button></div></form>
<table id="tokens"><thead><tr><th>Name</th><th>Owner</th><th>Role</th><th>Status</th><th>Created</th><th>Expires</th><th></th></tr></thead>
<tbody>{trows}</tbody></table>"##,
        me = user.user.id,
    );
    Ok(page(&user, "users", "Users & tokens", &body))
}
