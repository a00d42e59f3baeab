//! The changes page: each change published to the agents (newest first) with how far
//! it reached them — `applied by N of M connected peers`, p50/p99/max latency from the
//! change to each acknowledgement — and the devices that have not applied it yet
//! (connected but silent ones first: they are the ones to look at). Read-only.

use std::fmt::Write as _;

use axum::response::Response;
use axum::Extension;

use super::html::{esc, page, time};
use crate::http::error::ApiError;
use crate::http::scope::Scoped;
use crate::http::session::WebUser;
use crate::service::rollouts::recent;

/// Changes the page lists.
const SHOWN: u32 = 50;

pub async fn changes(
    Scoped(state): Scoped,
    Extension(user): Extension<WebUser>,
) -> Result<Response, ApiError> {
    let (revision, all) = recent(&state, SHOWN).await?;
    let mut rows = String::new();
    for r in &all {
        let state_badge = if r.finished {
            if r.figures.applied == r.figures.connected {
                "<span class=\"badge online\">applied</span>"
            } else {
                "<span class=\"badge offline\">incomplete</span>"
            }
        } else {
            "<span class=\"badge\">in progress</span>"
        };
        let mut pending = String::new();
        let (silent, offline): (Vec<_>, Vec<_>) = r.pending.iter().partition(|p| p.connected);
        for (label, list) in [("not applied", silent), ("offline", offline)] {
            if list.is_empty() {
                continue;
            }
            let names: Vec<String> = list
                .iter()
                .map(|p| {
                    format!(
                        "<a href=\"/ui/devices/{}\">{}</a>",
                        p.device_id,
                        esc(&p.name)
                    )
                })
                .collect();
            let _ = write!(pending, "<div>{label}: {}</div>", names.join(", "));
        }
        if r.pending_total > r.pending.len() {
            let _ = write!(
                pending,
                "<div class=\"muted\">and {} more</div>",
                r.pending_total - r.pending.len()
            );
        }
        let ms = |v: Option<i64>| v.map_or("–".to_string(), |v| format!("{v} ms"));
        let _ = write!(
            rows,
            "<tr data-revision=\"{rev}\"><td class=\"mono\">{rev}</td><td>{when}</td>\
             <td>{badge}</td><td data-sort=\"{applied}\">{applied} / {connected}</td>\
             <td>{p50}</td><td>{p99}</td><td>{max}</td><td>{off}</td><td>{pending}</td></tr>",
            rev = r.revision,
            when = time(r.made_at_ms),
            badge = state_badge,
            applied = r.figures.applied,
            connected = r.figures.connected,
            p50 = ms(r.figures.p50_ms),
            p99 = ms(r.figures.p99_ms),
            max = ms(r.figures.max_ms),
            off = if r.figures.offline > 0 {
                format!("{} of {}", r.figures.offline_applied, r.figures.offline)
            } else {
                "–".into()
            },
        );
    }
    let empty = if all.is_empty() {
        "<p class=\"muted\" id=\"changes-empty\">No change has been published since the console \
         started tracking them.</p>"
    } else {
        ""
    };
    let body = format!(
        r#"<p class="muted">Network revision {revision}. Every change that alters what some device
sees (a policy, a revocation, a device that moved) is tracked until each connected device
it concerns acknowledges that its data plane enforces it; devices that were offline apply it
when they come back. Latencies run from the change to each acknowledgement. Also:
<code>zmesh-console changes list</code>, <code>GET /api/v1/changes</code>.</p>
<table id="changes" class="sortable"><thead><tr><th>Revision</th><th>Published</th>
<th>State</th><th>Applied / connected</th><th>p50</th><th>p99</th><th>max</th>
<th>Offline, applied since</th><th>Pending</th></tr></thead>
<tbody id="changes-body" data-live>{rows}</tbody></table>
{empty}"#
    );
    Ok(page(&user, "changes", "Changes", &body))
}
