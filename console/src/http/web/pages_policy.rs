//! The access policy page: a visual editor (rules as cards; groups, tags and hosts as
//! tables; pickers fed by the real devices, users, groups and tags) and the JSON editor
//! over the same draft, one click apart, beside one validation and reachability-diff
//! panel, "check access" and the version history.
//!
//! The draft is always the text in the JSON editor. A visual edit is sent with it to
//! `POST /api/v1/policy/edit`, which splices the text (comments and order kept) and
//! answers the new text or the reason it refuses; the page then validates the draft
//! with `POST /api/v1/policy/diff` exactly as typing in the JSON editor does, and
//! "Apply" is `PUT /api/v1/policy`. So both views go through the same validation, diff
//! and save, and cannot disagree.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use axum::response::Response;
use axum::Extension;

use super::html::{esc, page, time};
use crate::http::error::ApiError;
use crate::http::scope::Scoped;
use crate::http::session::WebUser;

pub async fn policy(
    Scoped(state): Scoped,
    Extension(user): Extension<WebUser>,
) -> Result<Response, ApiError> {
    let current = state.store.current_policy(state.network_id).await?;
    let history = state.store.policy_history(state.network_id).await?;
    let devices = state.store.list_devices(state.network_id).await?;
    let users = state.store.list_users().await?;
    let admin = user.is_admin();
    let mut rows = String::new();
    for v in &history {
        let rollback = if admin && v.version != current.version {
            format!("<button data-api=\"/api/v1/policy/rollback\" data-method=\"POST\" data-body='{{\"version\": {n}}}' data-confirm=\"Make version {n} the policy in force again?\" class=\"small\" id=\"rollback-{n}\">Roll back to this</button>", n = v.version)
        } else if v.version == current.version {
            "<span class=\"badge online\">in force</span>".into()
        } else {
            String::new()
        };
        let _ = write!(
            rows,
            "<tr><td>{n}</td><td class=\"nowrap\">{when}</td><td>{who}</td><td>{sum}</td><td><a href=\"/api/v1/policy/versions/{n}\">text</a></td><td>{rollback}</td></tr>",
            n = v.version,
            when = time(v.created_at_ms),
            who = esc(&v.author),
            sum = esc(&v.summary),
        );
    }
    let names: String = devices
        .iter()
        .map(|d| format!("<option value=\"{}\">", esc(&d.name)))
        .collect();
    // What a rule side or a group may name, besides the policy's own groups, tags and
    // hosts (the script adds those from the draft): devices and people.
    let mut people: BTreeSet<String> = users
        .iter()
        .filter_map(|u| u.email.as_ref().map(|e| format!("user:{e}")))
        .collect();
    people.extend(
        devices
            .iter()
            .filter(|d| d.owner.starts_with("user:"))
            .map(|d| d.owner.clone()),
    );
    let mut known: String = ["*", "autogroup:member", "autogroup:self"]
        .iter()
        .map(|s| format!("<option value=\"{s}\">"))
        .collect();
    for p in &people {
        let _ = write!(known, "<option value=\"{}\">", esc(p));
    }
    let (readonly, apply) = if admin {
        (
            "",
            "<button type=\"button\" id=\"policy-apply\" disabled>Apply policy</button>",
        )
    } else {
        ("readonly", "")
    };
    let rule_form = if admin { RULE_FORM } else { "" };
    let body = format!(
        r#"<p class="muted">In force: version <b id="policy-version">{ver}</b> by {author}, {when}. {summary}</p>
<div class="tabs" role="tablist"><button type="button" class="tab active" id="tab-visual" data-view="visual">Visual editor</button><button type="button" class="tab" id="tab-json" data-view="json">JSON</button></div>
<datalist id="device-names">{names}</datalist><datalist id="policy-known">{known}{names}</datalist><datalist id="policy-names"></datalist>
<div class="editor-wrap" id="policy-editor" data-base="{ver}" data-admin="{admin}">
<div class="left">
<div id="policy-visual" class="visual">
<p class="form-error" id="visual-error"></p>
<div class="section-head"><h3>Rules</h3><span class="muted small">Default deny: only what a rule allows passes.</span></div>
<div id="visual-rules"></div>{rule_form}
<h3>Groups</h3><table id="visual-groups" class="compact"><thead><tr><th>Group</th><th>Members</th><th></th></tr></thead><tbody></tbody></table>
<h3>Tags</h3><table id="visual-tags" class="compact"><thead><tr><th>Tag</th><th>May be assigned by</th><th></th></tr></thead><tbody></tbody></table>
<h3>Hosts</h3><table id="visual-hosts" class="compact"><thead><tr><th>Name</th><th>Address or prefix</th><th></th></tr></thead><tbody></tbody></table>
<p class="muted small" id="visual-tests"></p>
</div>
<div id="policy-json" class="editor hidden"><pre class="gutter" id="policy-gutter" aria-hidden="true"></pre>
<textarea id="policy-text" spellcheck="false" {readonly}>{text}</textarea></div>
</div>
<div class="side"><h3>Validation</h3><p id="policy-status" class="muted">unchanged</p>
<ul id="policy-errors" class="errors"></ul>
<h3>Reachability diff</h3><p id="policy-diff-summary" class="muted">edit the policy to see what changes</p>
<ul id="policy-rules-diff" class="diff"></ul>
<ul id="policy-diff" class="diff"></ul>{apply}<p class="form-error" id="flash"></p></div></div>
<form data-api="/api/v1/policy/check" data-method="POST" data-done="check:#check-result" class="card" id="check-form">
<h2>Check access</h2>
<div class="row"><label>From <input name="src" list="device-names" required id="check-src"></label>
<label>To <input name="dst" list="device-names" required id="check-dst"></label>
<label>Protocol <select name="proto"><option>tcp</option><option>udp</option><option>icmp</option><option>any</option></select></label>
<label>Port <input name="port" data-type="int" data-optional size="6" placeholder="22"></label>
<button type="submit" id="check-submit">Check</button></div>
<p id="check-result"></p><p class="form-error"></p></form>
<h2>History</h2><table id="policy-history"><thead><tr><th>Version</th><th>Saved</th><th>By</th><th>Summary</th><th></th><th></th></tr></thead>
<tbody>{rows}</tbody></table>"#,
        ver = current.version,
        author = esc(&current.author),
        when = time(current.created_at_ms),
        summary = esc(&current.summary),
        text = esc(&current.text),
    );
    Ok(page(&user, "policy", "Access policy", &body))
}

/// The add/edit rule form (admins only). Sources and destinations are chip lists with
/// suggestions; the ports apply to every destination that does not name its own.
const RULE_FORM: &str = r#"<div class="card" id="rule-form">
<h3 id="rule-form-title">Add a rule</h3>
<div class="grid2">
<div><label>Who (sources)</label><div class="chips" id="rule-src"></div>
<div class="row"><input id="rule-src-input" list="policy-names" placeholder="group:eng, user:…, a device"><button type="button" class="small" id="rule-src-add">Add</button></div></div>
<div><label>What (destinations)</label><div class="chips" id="rule-dst"></div>
<div class="row"><input id="rule-dst-input" list="policy-names" placeholder="tag:db, a device, a host"><button type="button" class="small" id="rule-dst-add">Add</button></div></div>
</div>
<div class="row"><label>Ports <input id="rule-ports" value="*" size="14" placeholder="* or 22,443 or 8000-8099"></label>
<label>Protocol <select id="rule-proto"><option>tcp</option><option>udp</option><option>icmp</option><option selected>any</option></select></label>
<label class="grow">Description <input id="rule-desc" maxlength="200" placeholder="what this rule is for"></label></div>
<div class="row"><button type="button" id="rule-save">Add rule</button><button type="button" class="danger hidden" id="rule-cancel">Cancel</button></div>
</div>"#;
