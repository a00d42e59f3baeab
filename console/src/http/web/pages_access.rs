//! The access log page (`/ui/access`): the newest flow records the devices reported
//! and signed, filtered by a plain GET form (time window, device or user, verdict,
//! one-sided only), paged backwards by sequence number, with devices and owners shown
//! by name, and export links (`/api/v1/audit/access`) carrying the same filters. It
//! only reads; a bad filter value answers 422 with the field named.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use zmesh_shared::wire::FlowVerdict;
use zmesh_shared::DeviceId;

use super::html::{esc, page, time, url_enc};
use super::names::Names;
use crate::http::error::ApiError;
use crate::http::query::{parse_time, text_param};
use crate::http::session::WebUser;
use crate::http::state::AppState;
use crate::store::{AccessFilter, AccessRow};

/// The filters, in the order of the form and of the export links.
const FILTERS: &[&str] = &["since", "until", "device", "user", "verdict", "one_sided"];
/// Records per page.
pub const PAGE: usize = 500;

/// The form's values (trimmed, empty ones dropped), the filter they make and the page
/// start (`before`, a sequence number).
struct Parsed {
    filter: AccessFilter,
    before: Option<u64>,
}

fn parse(q: &HashMap<String, String>, names: &Names) -> Result<Parsed, ApiError> {
    let device = match text_param(q, "device")? {
        None => None,
        // an id is taken as is: the device may have been removed since
        Some(d) => Some(match d.parse::<DeviceId>() {
            Ok(id) => id,
            Err(_) => names
                .devices
                .values()
                .find(|x| x.name.eq_ignore_ascii_case(&d))
                .map(|x| x.id)
                .ok_or_else(|| ApiError::invalid("device", format!("no device {d:?}")))?,
        }),
    };
    let user = match text_param(q, "user")? {
        None => None,
        Some(u) => Some(
            names
                .devices_of(&u)
                .ok_or_else(|| ApiError::invalid("user", format!("no user {u:?}")))?,
        ),
    };
    let devices = match (device, user) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "user",
                "filter by a device or by a user, not both",
            ))
        }
        (Some(d), None) => Some(vec![d]),
        (None, u) => u,
    };
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
    let before = match q.get("before") {
        None => None,
        Some(b) => Some(
            b.parse::<u64>()
                .map_err(|_| ApiError::invalid("before", "an access record sequence number"))?,
        ),
    };
    let since_ms = q.get("since").map(|s| parse_time("since", s)).transpose()?;
    let until_ms = q.get("until").map(|s| parse_time("until", s)).transpose()?;
    if let (Some(s), Some(u)) = (since_ms, until_ms) {
        if u <= s {
            return Err(ApiError::invalid("until", "must be after since"));
        }
    }
    Ok(Parsed {
        filter: AccessFilter {
            since_ms,
            until_ms,
            devices,
            verdict,
            one_sided_only,
        },
        before,
    })
}

/// `1.5 KiB` for a byte count.
pub fn bytes(n: u64) -> String {
    const UNITS: &[&str] = &["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// `12.3k` for a count.
pub fn count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

pub fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        n => format!("ip proto {n}"),
    }
}

fn row_html(out: &mut String, r: &AccessRow, names: &Names) {
    let e = &r.entry;
    let f = &e.signed.record;
    let service = if matches!(f.proto, 6 | 17) {
        format!(
            "<span title=\"source port {}\">{}/{}</span>",
            f.src_port,
            proto_name(f.proto),
            f.dst_port
        )
    } else {
        proto_name(f.proto)
    };
    let traffic = |b: u64, p: u64| {
        format!(
            "<span title=\"{b} bytes, {p} packets\">{} · {} pkt</span>",
            bytes(b),
            count(p)
        )
    };
    let rule = match (&f.rule, f.policy_version) {
        (Some(r), Some(v)) => format!("{} <span class=\"muted\">v{v}</span>", esc(r)),
        (Some(r), None) => esc(r),
        (None, Some(v)) => format!("<span class=\"muted\">no rule · v{v}</span>"),
        (None, None) => "<span class=\"muted\">—</span>".into(),
    };
    let ends = if r.one_sided {
        "<span class=\"badge one-sided\" title=\"the other end reported no such flow\">one-sided</span>"
    } else {
        "<span class=\"badge both-ends\">both</span>"
    };
    let _ = write!(
        out,
        "<tr data-seq=\"{seq}\" data-verdict=\"{verdict}\"><td class=\"num\">{seq}</td>\
         <td class=\"nowrap\" title=\"first seen {first}, last seen {last}, received {recv}\">{first}</td>\
         <td>{src}<br>{src_owner}</td><td>{dst}<br>{dst_owner}</td><td class=\"nowrap\">{service}</td>\
         <td class=\"nowrap\">→ {fwd}<br>← {back}</td>\
         <td><span class=\"badge verdict-{verdict}\">{verdict}</span></td><td>{rule}</td><td>{ends}</td><td>{reporter}</td></tr>",
        seq = e.seq,
        verdict = f.verdict.as_str(),
        first = time(f.first_seen_ms),
        last = time(f.last_seen_ms),
        recv = time(e.received_at_ms),
        src = names.device(f.src_device),
        src_owner = names.owner_of(f.src_device),
        dst = names.device(f.dst_device),
        dst_owner = names.owner_of(f.dst_device),
        fwd = traffic(f.bytes, f.packets),
        back = traffic(f.bytes_back, f.packets_back),
        reporter = names.device(e.reporter),
    );
}

pub async fn access(
    State(state): State<AppState>,
    Extension(user): Extension<WebUser>,
    Query(mut q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    q.retain(|k, v| (FILTERS.contains(&k.as_str()) || k == "before") && !v.trim().is_empty());
    for v in q.values_mut() {
        *v = v.trim().to_string();
    }
    let names = Names::load(&state).await?;
    let (rows, notice, status) = match parse(&q, &names) {
        Ok(p) => {
            let rows = state
                .store
                .list_access_newest(&p.filter, p.before, PAGE as u32 + 1)
                .await?;
            (rows, String::new(), StatusCode::OK)
        }
        Err(e) => {
            let (status, msg) = match &e {
                ApiError::Invalid {
                    field: Some(f),
                    message,
                    ..
                } => (StatusCode::UNPROCESSABLE_ENTITY, format!("{f}: {message}")),
                ApiError::Invalid { message, .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, message.clone())
                }
                _ => return Err(e),
            };
            let notice = format!(
                "<p class=\"error\" id=\"filter-error\">Filter not applied — {}</p>",
                esc(&msg)
            );
            (vec![], notice, status)
        }
    };
    let more = rows.len() > PAGE;
    let mut trs = String::new();
    for r in rows.iter().take(PAGE) {
        row_html(&mut trs, r, &names);
    }
    let qs: String = FILTERS
        .iter()
        .filter_map(|k| q.get(*k).map(|v| format!("&{k}={}", url_enc(v))))
        .collect();
    let next = match rows.get(PAGE - 1) {
        Some(last) if more => format!(
            "<p><a href=\"/ui/access?before={}{qs}\" id=\"next-page\">Older records →</a></p>",
            last.entry.seq
        ),
        _ => String::new(),
    };
    let val = |k: &str| esc(q.get(k).map(String::as_str).unwrap_or(""));
    let sel = |v: &str| {
        if q.get("verdict").map(String::as_str) == Some(v) {
            " selected"
        } else {
            ""
        }
    };
    let checked = if q.get("one_sided").map(String::as_str) == Some("true") {
        " checked"
    } else {
        ""
    };
    let device_names: String = names
        .devices
        .values()
        .map(|d| format!("<option value=\"{}\">", esc(&d.name)))
        .collect();
    let shown = rows.len().min(PAGE);
    let from = if q.contains_key("before") {
        "older than the previous page"
    } else {
        "newest first"
    };
    let body = format!(
        r#"{notice}<p class="muted">What the devices reported and signed about each flow through the mesh: both ends report, so a flow only one end reported is flagged <span class="badge one-sided">one-sided</span>. Times are UTC.</p>
<form method="get" action="/ui/access" class="search" id="access-filter">
<input name="since" value="{since}" placeholder="since (2024-05-01)" id="f-since">
<input name="until" value="{until}" placeholder="until" id="f-until">
<datalist id="device-names">{device_names}</datalist>
<input name="device" value="{device}" placeholder="device (name or id)" list="device-names" id="f-device">
<input name="user" value="{user_f}" placeholder="or user (email)" id="f-user">
<select name="verdict" id="f-verdict"><option value="">any verdict</option><option value="accepted"{acc}>accepted</option><option value="denied"{den}>denied</option></select>
<label class="check"><input type="checkbox" name="one_sided" value="true" id="f-one-sided"{checked}> one-sided only</label>
<button type="submit" id="access-apply">Filter</button> <a href="/ui/access" class="small">clear</a></form>
<p>Export these records: <a href="/api/v1/audit/access?format=csv{qs}" id="export-csv" download="zmesh-access.csv">CSV</a> ·
<a href="/api/v1/audit/access?format=jsonl{qs}" id="export-jsonl" download="zmesh-access.jsonl">JSONL</a> ·
<a href="/api/v1/audit/access?format=cef{qs}" id="export-cef" download="zmesh-access.cef">CEF</a>
<span class="muted">(exports carry the devices' signatures and the chain; verify them offline with <code>zmesh-console audit verify --file</code>)</span></p>
<p class="muted" id="access-count">{shown} matching records, {from}{cap}.</p>
<table id="access-records"><thead><tr><th>#</th><th>First seen</th><th>Source</th><th>Destination</th><th>Service</th><th>Traffic (→ sent, ← back)</th><th>Verdict</th><th>Rule · policy</th><th>Ends</th><th>Reported by</th></tr></thead>
<tbody>{trs}</tbody></table>{next}"#,
        since = val("since"),
        until = val("until"),
        device = val("device"),
        user_f = val("user"),
        acc = sel("accepted"),
        den = sel("denied"),
        cap = if more {
            format!(" (the page shows {PAGE})")
        } else {
            String::new()
        },
    );
    let mut r = page(&user, "access", "Access log", &body);
    *r.status_mut() = status;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(count(42), "42");
        assert_eq!(count(12_345), "12.3k");
        assert_eq!(count(2_000_000), "2.0M");
        assert_eq!(proto_name(6), "tcp");
        assert_eq!(proto_name(47), "ip proto 47");
    }
}
