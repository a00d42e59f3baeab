//! The routes page: every route a device advertises (subnets behind subnet routers,
//! exit-node offers), whether it is approved and by whom, and whether its device is
//! online. Admins get Approve / Unapprove buttons, which call the REST API through
//! `app.js` (`data-api`); the page itself only reads.

use std::fmt::Write as _;

use axum::response::Response;
use axum::Extension;
use zmesh_shared::time::now_ms;

use super::html::{esc, page, time};
use crate::http::error::ApiError;
use crate::http::scope::Scoped;
use crate::http::session::WebUser;
use crate::service::routes::{list, RouteStatus};

fn actions(r: &RouteStatus) -> String {
    // device ids and canonical prefixes need no quoting inside the JSON body
    let body = format!(
        "{{\"device\": \"{}\", \"prefix\": \"{}\"}}",
        r.route.device_id, r.route.prefix
    );
    let id =
        format!("{}-{}", esc(&r.route.device_name), r.route.prefix).replace(['/', ':', '.'], "_");
    if r.approved {
        format!(
            "<button data-api=\"/api/v1/routes/unapprove\" data-method=\"POST\" data-body='{body}' \
             data-confirm=\"Stop routing {p} through {n}?\" class=\"small danger\" id=\"unapprove-{id}\">Unapprove</button>",
            p = r.route.prefix,
            n = esc(&r.route.device_name),
        )
    } else {
        format!(
            "<button data-api=\"/api/v1/routes/approve\" data-method=\"POST\" data-body='{body}' \
             class=\"small\" id=\"approve-{id}\">Approve</button>"
        )
    }
}

pub async fn routes(
    Scoped(state): Scoped,
    Extension(user): Extension<WebUser>,
) -> Result<Response, ApiError> {
    let all = list(&state, state.ping_interval, now_ms()).await?;
    let mut rows = String::new();
    for r in &all {
        let status = match (&r.route.approved_by, r.route.approved_at_ms) {
            (Some(by), Some(at)) => format!(
                "<span class=\"badge online\">approved</span> by {} {}",
                esc(by),
                time(at)
            ),
            _ => "<span class=\"badge offline\">awaiting approval</span>".into(),
        };
        let _ = write!(
            rows,
            "<tr data-route=\"{name} {prefix}\"><td><a href=\"/ui/devices/{id}\">{name}</a></td>\
             <td class=\"mono\">{prefix}</td><td>{kind}</td><td>{status}</td><td>{adv}</td>\
             <td>{on}</td><td>{act}</td></tr>",
            id = r.route.device_id,
            name = esc(&r.route.device_name),
            prefix = r.route.prefix,
            kind = if r.exit_node { "exit node" } else { "subnet" },
            adv = time(r.route.advertised_at_ms),
            on = if r.online {
                "<span class=\"badge online\">online</span>"
            } else {
                "<span class=\"badge offline\">offline</span>"
            },
            act = if user.is_admin() {
                actions(r)
            } else {
                String::new()
            },
        );
    }
    let empty = if all.is_empty() {
        "<p class=\"muted\" id=\"routes-empty\">No device advertises a route. On a subnet router: \
         <code>zmesh up --advertise-routes 10.1.0.0/24</code>; on an exit node: \
         <code>zmesh up --advertise-exit-node</code>.</p>"
    } else {
        ""
    };
    let body = format!(
        r#"<p class="muted">A route carries traffic only once approved (by an admin, here or with
<code>zmesh-console routes approve</code>; or by the policy's <code>auto_approvers</code>), and
then only for the sources a policy rule gives its prefix (or <code>autogroup:internet</code> for
exit nodes); <code>*</code> opens no route.</p>
<table id="routes" class="sortable"><thead><tr><th>Device</th><th>Prefix</th><th>Kind</th>
<th>Approval</th><th>Advertised</th><th>Device status</th><th class="nosort"></th></tr></thead>
<tbody id="routes-body" data-live>{rows}</tbody></table>
{empty}
<p class="form-error" id="flash"></p>"#
    );
    Ok(page(&user, "routes", "Routes", &body))
}
