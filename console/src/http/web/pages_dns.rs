//! The Names page: the network's DNS suffix, admins' extra records and split-DNS
//! domains. It only reads; its forms and buttons call `/api/v1/dns` through `app.js`
//! (rendered for admins only).

use std::fmt::Write as _;

use axum::response::Response;
use axum::Extension;

use super::html::{esc, page, url_enc};
use crate::http::error::ApiError;
use crate::http::scope::Scoped;
use crate::http::session::WebUser;

pub async fn dns(
    Scoped(state): Scoped,
    Extension(user): Extension<WebUser>,
) -> Result<Response, ApiError> {
    let s = crate::service::dns::get(&state).await?;
    let net = state.store.get_network(state.network_id).await?;
    let resolver = zmesh_shared::peermap::resolver_v4(net.prefix_v4);
    let devices = state.store.list_devices(state.network_id).await?;
    let admin = user.is_admin();
    let suffix = esc(&s.suffix);
    let mut names = String::new();
    for d in &devices {
        let _ = write!(
            names,
            "<tr><td>{n}</td><td class=\"mono\">{n}.{suffix}</td><td class=\"mono\">{v4}</td><td class=\"mono\">{v6}</td></tr>",
            n = esc(&d.name),
            v4 = d.overlay_v4,
            v6 = d.overlay_v6,
        );
    }
    let mut records = String::new();
    for r in &s.records {
        let remove = if admin {
            format!(
                "<button data-api=\"/api/v1/dns/records/{}\" data-method=\"DELETE\" data-confirm=\"Remove every record of {n}?\" class=\"small danger\">Remove</button>",
                url_enc(&r.name),
                n = esc(&r.name)
            )
        } else {
            String::new()
        };
        let _ = write!(
            records,
            "<tr><td class=\"mono\">{}.{suffix}</td><td class=\"mono\">{}</td><td>{remove}</td></tr>",
            esc(&r.name),
            r.ip
        );
    }
    let mut split = String::new();
    for e in &s.split {
        let remove = if admin {
            format!(
                "<button data-api=\"/api/v1/dns/split/{}\" data-method=\"DELETE\" data-confirm=\"Stop answering {d} through the mesh?\" class=\"small danger\">Remove</button>",
                url_enc(&e.domain),
                d = esc(&e.domain)
            )
        } else {
            String::new()
        };
        let rs: Vec<String> = e.resolvers.iter().map(|r| r.to_string()).collect();
        let _ = write!(
            split,
            "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{remove}</td></tr>",
            esc(&e.domain),
            esc(&rs.join(", "))
        );
    }
    let forms = |html: &str| {
        if admin {
            html.to_string()
        } else {
            String::new()
        }
    };
    let body = format!(
        r#"<p class="muted">Every device answers as <b>NAME.SUFFIX</b> at its agent's resolver, {resolver} (the overlay's first address); other names go to the host's own resolvers.</p>
<p>Suffix: <b class="mono" id="dns-suffix">{suffix}</b>{default}</p>
{suffix_form}
<h2>Devices</h2><table id="dns-devices"><thead><tr><th>Device</th><th>Name</th><th>A</th><th>AAAA</th></tr></thead><tbody>{names}</tbody></table>
<h2>Extra records</h2><table id="dns-records"><thead><tr><th>Name</th><th>Address</th><th></th></tr></thead><tbody>{records}</tbody></table>
{record_form}
<h2>Split DNS</h2><p class="muted">Names under these domains go to resolvers reachable through the mesh.</p>
<table id="dns-split"><thead><tr><th>Domain</th><th>Resolvers</th><th></th></tr></thead><tbody>{split}</tbody></table>
{split_form}<p class="form-error" id="flash"></p>"#,
        default = if s.default { " (default)" } else { "" },
        suffix_form = forms(
            r#"<form data-api="/api/v1/dns" data-method="PUT" data-done="reload" class="card" id="dns-suffix-form"><div class="row"><label>New suffix <input name="suffix" required placeholder="corp.example" id="dns-suffix-input"></label><button type="submit">Set suffix</button></div><p class="form-error"></p></form>"#
        ),
        record_form = forms(
            r#"<form data-api="/api/v1/dns/records" data-method="POST" data-done="reload" class="card" id="dns-record-form"><div class="row"><label>Name <input name="name" required placeholder="wiki" size="16"></label><label>Address <input name="ip" required placeholder="100.64.9.9" size="20"></label><button type="submit">Add record</button></div><p class="form-error"></p></form>"#
        ),
        split_form = forms(
            r#"<form data-api="/api/v1/dns/split/{domain}" data-method="PUT" data-done="reload" class="card" id="dns-split-form"><div class="row"><label>Domain <input name="domain" required placeholder="corp.internal" size="20"></label><label>Resolvers <input name="resolvers" data-type="list" required placeholder="100.64.0.7" size="24"></label><button type="submit">Set split domain</button></div><p class="form-error"></p></form>"#
        ),
    );
    Ok(page(&user, "dns", "Names (DNS)", &body))
}
